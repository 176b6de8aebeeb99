//! Files written atomically: a checkpoint is never left half-written.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use crate::{Error, Result};

/// Reads the whole regular file at `path`, after checking that it is one (a device such as
/// `/dev/zero` would never end) and that `expansion` times its size (what the caller will
/// hold: the bytes and, say, their f64 values) fits in the memory available
/// ([`Budget`](crate::resources::Budget)). Errors name the file and say the estimate.
pub fn read_bounded(path: &Path, expansion: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::file(path, "not a regular file; name a file of data"));
    }
    let mut e = crate::resources::Estimate::new();
    e.add(
        "the file and its values",
        u128::from(meta.len()),
        u128::from(expansion.max(1)),
    );
    e.ensure("use a smaller file, or a machine with more memory", |why| {
        Error::file(path, why)
    })?;
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The text of the header's `shape` and the number of values it claims (`Some(None)`: more
/// than u64 holds). A decoy `'shape': (…)` inside a string cannot hide the real one: every
/// match counts, the largest claim wins, and one that does not read is `None`.
pub fn npy_claimed_shape(header: &str) -> Option<(&str, Option<u64>)> {
    let mut found: Option<(&str, Option<u64>)> = None;
    for key in ["'shape'", "\"shape\""] {
        for (i, _) in header.match_indices(key) {
            let Some(rest) = header[i + key.len()..].trim_start().strip_prefix(':') else {
                continue;
            };
            let rest = rest.trim_start();
            let close = [('(', ')'), ('[', ']')]
                .into_iter()
                .find(|&(o, _)| rest.starts_with(o))?
                .1;
            let dims = &rest[1..rest.find(close)?];
            let mut n = Some(1u64);
            for dim in dims.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let dim: u64 = dim
                    .trim_end_matches(['L', 'l'])
                    .replace('_', "")
                    .parse()
                    .ok()?;
                n = n.and_then(|n| n.checked_mul(dim));
            }
            if found.is_none_or(|(_, m)| m.is_some_and(|m| n.is_none_or(|n| n > m))) {
                found = Some((dims, n));
            }
        }
    }
    found
}

/// The header of the `.npy` bytes `bytes`: where it starts (after the version 1–3 preamble)
/// and its text, or `None` when the preamble is not a `.npy` one or claims more than `bytes`
/// holds (a reader that trusted the claimed length would allocate it).
pub fn npy_header(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let le = |r: std::ops::Range<usize>| -> Option<usize> {
        Some(
            bytes
                .get(r)?
                .iter()
                .rev()
                .fold(0, |n, &b| n << 8 | usize::from(b)),
        )
    };
    let (start, len): (usize, _) = match (bytes.starts_with(b"\x93NUMPY"), bytes.get(6)) {
        (true, Some(1)) => (10, le(8..10)),
        (true, Some(2 | 3)) => (12, le(8..12)),
        _ => return None,
    };
    let len = len?;
    Some((start, bytes.get(start..start.checked_add(len)?)?))
}

/// Checks a `.npy` file before candle reads it (candle allocates what the header claims):
/// a regular file whose header's shape and dtype need no more bytes than the file holds, and
/// whose values fit in the memory available. Errors name the file.
pub fn check_npy(path: &Path) -> Result<()> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::file(path, "not a regular file; name a .npy file"));
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut head))
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let (start, text) = npy_header(&head)
        .ok_or_else(|| Error::file(path, "not a .npy file (a version 1–3 preamble and header)"))?;
    let text = String::from_utf8_lossy(text);
    let width = [
        "<f4", "<f8", "<f2", "<i4", "<i8", "<u4", "|u1", "<i2", "|i1", "<u8",
    ]
    .iter()
    .find(|d| text.contains(*d))
    .and_then(|d| d[2..].parse::<u64>().ok())
    .ok_or_else(|| Error::file(path, format!("unsupported dtype in the header {text:?}")))?;
    let (_, count) = npy_claimed_shape(&text)
        .ok_or_else(|| Error::file(path, "the header has no shape (write it with numpy.save)"))?;
    let data = meta.len().saturating_sub((start + text.len()) as u64);
    match count.and_then(|c| c.checked_mul(width)) {
        Some(need) if need <= data => {
            let mut e = crate::resources::Estimate::new();
            e.add("its values", u128::from(need), 3);
            e.ensure("use a smaller array", |why| Error::file(path, why))
        }
        need => Err(Error::file(
            path,
            format!(
                "truncated: its header claims {} bytes of data, the file holds {data}",
                need.map_or("more than 2⁶⁴".into(), |n| n.to_string())
            ),
        )),
    }
}

/// Makes sure `dir` is a directory this process can write (creating it), before a run
/// spends time on outputs it could not keep: an error names the directory and says to pick
/// another with `--out`.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    let bad = |e: std::io::Error| {
        Error::file(
            dir,
            format!("cannot write the output directory ({e}); pick another with `--out DIR`"),
        )
    };
    std::fs::create_dir_all(dir).map_err(bad)?;
    let probe = dir.join(format!(".sdeflow-probe{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(bad)?;
    std::fs::remove_file(&probe).map_err(bad)
}

/// Runs `write` on a temporary file beside `path`, flushes it to the disk (fsync), renames it
/// into place and flushes the directory, so that a crash at any instant leaves either the old
/// file or the whole new one, and a completed call survives a power loss.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tmp.set_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = write(&tmp)
        .and_then(|()| {
            // A crash here leaves a torn temporary file: cut it to half before aborting.
            fault_point_then(&format!("write {name}: temporary written"), || {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&tmp) {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = f.set_len(len / 2);
                }
            });
            sync_file(&tmp)
        })
        .and_then(|()| {
            fault_point(&format!("write {name}: synced"));
            std::fs::rename(&tmp, path).map_err(io)
        })
        .and_then(|()| {
            fault_point(&format!("write {name}: renamed"));
            sync_dir(path.parent())
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The environment variable of the fault hook ([`fault_point`]).
pub const FAULT_ENV: &str = "SDEFLOW_FAULT";

/// A deterministic crash for kill tests. Code that must survive a crash at any instant calls
/// this at each point between its durable effects (every [`write_atomic`] has three; a
/// training run one per step and around each checkpoint). With `SDEFLOW_FAULT=n` the process
/// aborts, as a kill would, at the n-th point it reaches (counting from 1); with
/// `SDEFLOW_FAULT=list` each point prints `fault point N: NAME` to stderr; unset, it costs one
/// relaxed atomic load.
pub fn fault_point(name: &str) {
    fault_point_then(name, || {});
}

/// [`fault_point`], running `before_abort` (to leave a torn file, say) when it aborts.
pub fn fault_point_then(name: &str, before_abort: impl FnOnce()) {
    use std::sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    };
    enum Mode {
        Off,
        List,
        At(u64),
    }
    static MODE: OnceLock<Mode> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let mode = MODE.get_or_init(|| match std::env::var(FAULT_ENV).as_deref() {
        Ok("list") => Mode::List,
        Ok(n) => n.trim().parse().map(Mode::At).unwrap_or(Mode::Off),
        Err(_) => Mode::Off,
    });
    match mode {
        Mode::Off => {}
        Mode::List => {
            let n = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("fault point {n}: {name}");
        }
        Mode::At(at) => {
            let n = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
            if n == *at {
                before_abort();
                eprintln!("fault injected at point {n}: {name}");
                std::process::abort();
            }
        }
    }
}

/// Flushes the file at `path` to the disk.
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Flushes a directory's entries (a rename into it) to the disk; `None` or `""` is the
/// working directory. Where a directory cannot be opened for syncing (not Unix), nothing is
/// done.
pub fn sync_dir(dir: Option<&Path>) -> Result<()> {
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all().or_else(|e| {
            // Some file systems refuse to sync a directory handle; the rename stands.
            if e.kind() == std::io::ErrorKind::InvalidInput
                || e.kind() == std::io::ErrorKind::Unsupported
            {
                Ok(())
            } else {
                Err(Error::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        }),
        Err(_) => Ok(()),
    }
}

/// Saves a `VarMap` as safetensors, atomically.
pub fn save_varmap_atomic(vm: &VarMap, path: &Path) -> Result<()> {
    write_atomic(path, |tmp| Ok(vm.save(tmp)?))
}

/// Loads every variable of `vm` from the safetensors file at `path`, all or nothing: each
/// variable must be in the file with its shape (its values converted to the variable's dtype
/// and device); a missing or misshapen one is an error naming it and the file, and then no
/// variable has changed. Entries the model does not have are ignored. The variables are set
/// in place (they are shared), so a model behind an `Arc` loads without `Arc::get_mut`.
pub fn load_varmap(vm: &VarMap, path: &Path) -> Result<()> {
    let file = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::file(path, format!("cannot read safetensors: {e}")))?;
    let vars = vm
        .data()
        .lock()
        .map_err(|_| Error::Msg("the model's variables are poisoned by a panic".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut staged = Vec::with_capacity(names.len());
    for name in names {
        let var = &vars[name];
        let Some(value) = file.get(name) else {
            return Err(Error::file(
                path,
                format!(
                    "no variable `{name}` (the model has {} variables; the file has {})",
                    vars.len(),
                    file.len()
                ),
            ));
        };
        if value.dims() != var.dims() {
            return Err(Error::file(
                path,
                format!(
                    "`{name}` has shape {:?} but the model's is {:?}",
                    value.dims(),
                    var.dims()
                ),
            ));
        }
        if !crate::ops::all_finite(value)? {
            return Err(Error::file(
                path,
                format!(
                    "`{name}` holds NaN or infinite values: the weights of a diverged run; read an earlier checkpoint (`checkpoint: (step: …)`)"
                ),
            ));
        }
        staged.push((var, value.to_dtype(var.dtype())?.to_device(var.device())?));
    }
    for (var, value) in staged {
        var.set(&value)?;
    }
    Ok(())
}

/// The safetensors metadata key under which sdeflow records the target a network was trained
/// to predict (the registered name of its parameterization, `eps`, `v`, `edm`, …).
pub const TARGET_KEY: &str = "sdeflow.target";

/// Saves a trained network's variables as safetensors with the `target` it learned recorded in
/// the file's metadata, atomically: a checkpoint says what its network predicts.
pub fn save_trained(vm: &VarMap, target: &str, path: &Path) -> Result<()> {
    let tensors: Vec<(String, candle_core::Tensor)> = {
        let vars = vm
            .data()
            .lock()
            .map_err(|_| Error::Msg("the model's variables are poisoned by a panic".into()))?;
        vars.iter()
            .map(|(k, var)| (k.clone(), var.as_tensor().clone()))
            .collect()
    };
    save_tensors(path, tensors, Some(target))
}

/// Saves named tensors as safetensors, sorted by name, atomically; with `target`, recorded in
/// the metadata as [`save_trained`] does (weights), without it plain (optimizer moments).
pub fn save_tensors(
    path: &Path,
    mut tensors: Vec<(String, candle_core::Tensor)>,
    target: Option<&str>,
) -> Result<()> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta =
        target.map(|t| std::collections::HashMap::from([(TARGET_KEY.to_string(), t.to_string())]));
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (k, t)), meta, tmp)
            .map_err(|e| Error::file(path, format!("cannot write safetensors: {e}")))
    })
}

/// The target recorded in a safetensors file by [`save_trained`], if any.
pub fn recorded_target(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("cannot read safetensors: {e}")))?;
    Ok(meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(TARGET_KEY).cloned()))
}

/// Loads a trained network saved by [`save_trained`] into `vm` ([`load_varmap`]: all or
/// nothing), after checking that it was trained to predict `target`: a network read in another
/// target than it learned would sample garbage silently, so a mismatch, or a file that records
/// no target, is an error naming the file and both targets.
pub fn load_trained(vm: &VarMap, target: &str, path: &Path) -> Result<()> {
    match recorded_target(path)? {
        Some(t) if t == target => load_varmap(vm, path),
        Some(t) => Err(Error::file(
            path,
            format!(
                "the network was trained to predict `{t}()`, but it is read as `{target}()`; write `param: {t}()`"
            ),
        )),
        None => Err(Error::file(
            path,
            format!(
                "records no target (`{TARGET_KEY}` metadata): it was not written by sdeflow's save_trained, so what the network predicts is unknown"
            ),
        )),
    }
}

/// A `.npy` array of `[rows, ...]` written piece by piece, so that a file larger than memory
/// can be produced in bounded memory: the header (shape and dtype) first, then each piece's
/// rows in order. f32 or f64, little-endian, C order; the bytes are those of candle's
/// `Tensor::write_npy` of the whole array (the same header, padded to 16 bytes).
pub struct NpyRows {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    dtype: candle_core::DType,
    left: u64,
}

impl NpyRows {
    /// Creates `path` for an array of `shape` (its first dimension the row count) in `dtype`
    /// (f32 or f64).
    pub fn create(path: &Path, shape: &[usize], dtype: candle_core::DType) -> Result<Self> {
        use std::io::Write;
        let descr = match dtype {
            candle_core::DType::F32 => "f4",
            candle_core::DType::F64 => "f8",
            other => {
                return Err(Error::file(
                    path,
                    format!("cannot stream {other:?} rows; f32 or f64"),
                ));
            }
        };
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let dims: String = shape.iter().map(|d| format!("{d},")).collect();
        let mut header =
            format!("{{'descr': '<{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
        // Magic (6), version (2), length (2), header and its newline: a multiple of 16.
        let pad = (16 - (6 + 2 + 2 + header.len() + 1) % 16) % 16;
        header.extend(std::iter::repeat_n(' ', pad));
        header.push('\n');
        let len = u16::try_from(header.len()).map_err(|_| {
            Error::file(path, format!("shape {shape:?} too long for a .npy header"))
        })?;
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        file.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
        file.write_all(&len.to_le_bytes()).map_err(io)?;
        file.write_all(header.as_bytes()).map_err(io)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            dtype,
            left: shape.iter().map(|&d| d as u64).product(),
        })
    }

    /// Appends the rows of `x` (converted to the file's dtype; its values in order).
    pub fn push(&mut self, x: &candle_core::Tensor) -> Result<()> {
        use std::io::Write;
        let count = x.elem_count() as u64;
        if count > self.left {
            return Err(Error::Shape(format!(
                "{}: {count} more values than the header's shape holds",
                self.path.display()
            )));
        }
        self.left -= count;
        let x = x.flatten_all()?.to_dtype(self.dtype)?;
        let bytes: Vec<u8> = match self.dtype {
            candle_core::DType::F32 => x
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            _ => x
                .to_vec1::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        self.file.write_all(&bytes).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Ends the file; an error if fewer rows were pushed than its shape says.
    pub fn finish(mut self) -> Result<()> {
        use std::io::Write;
        if self.left != 0 {
            return Err(Error::Shape(format!(
                "{}: {} values short of the header's shape",
                self.path.display(),
                self.left
            )));
        }
        self.file.flush().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// A `.npy` array of `[rows, ...]` read piece by piece (the reader of [`NpyRows`]' files, and
/// of candle's): f32 or f64, little-endian, C order. The header is checked against the file's
/// size first ([`check_npy`]), so a lying header allocates nothing.
pub struct NpyReader {
    file: std::io::BufReader<std::fs::File>,
    path: PathBuf,
    shape: Vec<usize>,
    dtype: candle_core::DType,
    left: usize,
}

impl NpyReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self> {
        use std::io::{Read, Seek};
        check_npy(path)?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut head = Vec::new();
        (&mut file)
            .take(1 << 16)
            .read_to_end(&mut head)
            .map_err(io)?;
        let (start, text) = npy_header(&head).ok_or_else(|| {
            Error::file(path, "not a .npy file (a version 1–3 preamble and header)")
        })?;
        let text = String::from_utf8_lossy(text).into_owned();
        let dtype = if text.contains("'<f4'") {
            candle_core::DType::F32
        } else if text.contains("'<f8'") {
            candle_core::DType::F64
        } else {
            return Err(Error::file(
                path,
                format!("holds neither little-endian f32 nor f64 values: {text:?}"),
            ));
        };
        if text.contains("True") {
            return Err(Error::file(
                path,
                "is in Fortran order; write it in C order",
            ));
        }
        let (dims, _) = npy_claimed_shape(&text).ok_or_else(|| {
            Error::file(path, "the header has no shape (write it with numpy.save)")
        })?;
        let shape = dims
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.trim_end_matches(['L', 'l'])
                    .replace('_', "")
                    .parse::<usize>()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::file(
                    path,
                    format!("a dimension of its shape ({dims}) does not read: {e}"),
                )
            })?;
        if shape.is_empty() {
            return Err(Error::file(path, "holds a scalar, not rows"));
        }
        file.seek(std::io::SeekFrom::Start((start + text.len()) as u64))
            .map_err(io)?;
        Ok(Self {
            file: std::io::BufReader::new(file),
            path: path.to_path_buf(),
            left: shape[0],
            shape,
            dtype,
        })
    }

    /// The array's shape (its first dimension the rows).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its values' type.
    pub fn dtype(&self) -> candle_core::DType {
        self.dtype
    }

    /// The next `rows` rows (fewer at the end), on the CPU.
    pub fn read_rows(&mut self, rows: usize) -> Result<candle_core::Tensor> {
        use std::io::Read;
        let rows = rows.min(self.left);
        let per_row: usize = self.shape[1..].iter().product();
        let mut bytes = vec![0u8; rows * per_row * self.dtype.size_in_bytes()];
        self.file
            .read_exact(&mut bytes)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        self.left -= rows;
        let mut shape = self.shape.clone();
        shape[0] = rows;
        Ok(candle_core::Tensor::from_raw_buffer(
            &bytes,
            self.dtype,
            &shape,
            &candle_core::Device::Cpu,
        )?)
    }
}

#[cfg(test)]
mod npy_tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// Streamed in pieces, the file is byte for byte candle's `write_npy` of the whole array.
    #[test]
    fn streamed_rows_are_candles_npy_bytes() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("sdeflow-npyrows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Msg(e.to_string()))?;
        for (dtype, shape) in [
            (DType::F32, vec![7, 3]),
            (DType::F64, vec![5, 2, 2]),
            (DType::F32, vec![1000, 1]),
        ] {
            let n: usize = shape.iter().product();
            let x = Tensor::arange(0u32, n as u32, &Device::Cpu)?
                .to_dtype(dtype)?
                .affine(0.37, -1.5)?
                .reshape(shape.as_slice())?;
            let whole = dir.join("whole.npy");
            x.write_npy(&whole)?;
            let streamed = dir.join("streamed.npy");
            let mut w = NpyRows::create(&streamed, &shape, dtype)?;
            w.push(&x.narrow(0, 0, 2)?)?;
            w.push(&x.narrow(0, 2, shape[0] - 2)?)?;
            w.finish()?;
            let read = |p: &Path| std::fs::read(p).map_err(|e| Error::Msg(e.to_string()));
            assert_eq!(read(&whole)?, read(&streamed)?, "{dtype:?} {shape:?}");
            // Read back in pieces, the rows are the array's.
            let mut r = NpyReader::open(&streamed)?;
            assert_eq!((r.shape(), r.dtype()), (shape.as_slice(), dtype));
            let (a, b) = (r.read_rows(3)?, r.read_rows(usize::MAX)?);
            assert_eq!(b.dim(0)?, shape[0] - 3);
            let back = Tensor::cat(&[a, b], 0)?;
            let flat = |t: &Tensor| -> Result<Vec<f64>> {
                Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            };
            assert_eq!(flat(&back)?, flat(&x)?);
        }
        let mut short = NpyRows::create(&dir.join("short.npy"), &[3, 2], DType::F32)?;
        short.push(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?)?;
        assert!(short.finish().is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
