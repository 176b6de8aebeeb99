//! A user's `.npy` array as data: row j is `array[j]`, optionally scaled.
//!
//! # Formula
//! For an array A of shape [n, s₁, …, s_k] (f32 or f64, either byte order, C order), row j is
//! x_j = scale · A[j] + shift, of shape [s₁, …, s_k] ([n] arrays give rows of shape [1]). The
//! held-out rows are a fixed pseudo-random fraction of the n, the same for every seed (the
//! kernel's `Holdout::Fraction`, docs/math.md §10). A declared `range` (and `levels`) is checked
//! on every value after scaling; with `levels`, a value within 10⁻⁴ of a level spacing of a
//! level (f32 rounding) is read as that level exactly.
//!
//! # Parameters
//! - `path`: the `.npy` file (relative to the working directory). Required.
//! - `scale`: finite, non-zero. Default 1.0.
//! - `shift`: finite. Default 0.0.
//! - `heldout`: the fraction held out, in [0, 1). Default 0.1.
//! - `range`: `Some([lo, hi])`: bounds every value lies in after scaling (needed for `levels`;
//!   a list, since sdeflow's RON reads `Some((lo, hi))` as two arguments). Default `None`.
//! - `levels`: `Some(L)`: the data is integer, L ≥ 2 levels lo + (hi − lo) k/(L − 1) (bits per
//!   dimension need them). Default `None`.
//!
//! # Claims
//! Rows of the array's shape without its first axis, n stored; finite (a NaN or infinite value
//! is an error naming the row and column); inside the declared range and on the declared
//! levels; a file that is not a readable f32/f64 C-order `.npy` of at least two rows is an
//! error naming the file and what is wrong, before anything is allocated for its data.
//!
//! # References
//! NumPy Enhancement Proposal 1, "A simple file format for NumPy arrays" (the `.npy` format,
//! versions 1.0–3.0).

use std::path::Path;

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Holdout, Levels, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The file and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The `.npy` file.
    pub path: String,
    /// Multiplies every value.
    pub scale: f64,
    /// Added after scaling.
    pub shift: f64,
    /// The fraction of rows held out.
    pub heldout: f64,
    /// Declared bounds `[lo, hi]` of the scaled values.
    pub range: Option<Vec<f64>>,
    /// Declared number of integer levels on `range`.
    pub levels: Option<u32>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            path: String::new(),
            scale: 1.0,
            shift: 0.0,
            heldout: 0.1,
            range: None,
            levels: None,
        }
    }
}

/// The array, scaled, in memory.
#[derive(Debug, Clone)]
pub struct NpyData {
    shape: Vec<usize>,
    rows: usize,
    range: Option<(f64, f64)>,
    values: Vec<f64>,
    p: Params,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::invalid("npy", field, reason)
}

impl NpyData {
    /// Reads and checks the file `p.path` names.
    pub fn new(p: Params) -> Result<Self> {
        if p.path.is_empty() {
            let how = "give the .npy file to read: `npy(path: \"data.npy\")`";
            return Err(invalid("path", how));
        }
        if !(p.scale.is_finite() && p.scale != 0.0 && p.shift.is_finite()) {
            let why = format!(
                "scale {} and shift {} must be finite, scale non-zero",
                p.scale, p.shift
            );
            return Err(invalid("scale", why));
        }
        if !(0.0..1.0).contains(&p.heldout) {
            return Err(invalid(
                "heldout",
                format!("{} is not a fraction in [0, 1)", p.heldout),
            ));
        }
        let range = match p.range.as_deref() {
            None => None,
            Some(&[lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((lo, hi)),
            Some(other) => {
                let why = format!("{other:?} is not [lo, hi], finite with lo < hi");
                return Err(invalid("range", why));
            }
        };
        let levels = match (range, p.levels) {
            (_, Some(l)) if l < 2 => {
                return Err(invalid("levels", format!("{l}: need at least 2")));
            }
            (None, Some(_)) => {
                return Err(invalid("levels", "levels need `range: Some([lo, hi])`"));
            }
            (Some((lo, hi)), Some(levels)) => Some(Levels { levels, lo, hi }),
            _ => None,
        };
        let path = Path::new(&p.path);
        let (shape, mut values) = read(path)?;
        let (rows, d) = (shape[0], values.len() / shape[0]);
        for (i, v) in values.iter_mut().enumerate() {
            let at = |field: &str, x: f64, what: String| {
                let (row, col) = (i / d, i % d);
                invalid(
                    field,
                    format!("{}: row {row}, column {col} is {x}{what}", path.display()),
                )
            };
            if !v.is_finite() {
                return Err(at("path", *v, "; the data must be finite".into()));
            }
            let mut x = p.scale * *v + p.shift;
            if let Some(l) = levels {
                let on = l.value(l.level(x));
                if (x - on).abs() > 1e-4 * (l.hi - l.lo) / f64::from(l.levels - 1) {
                    let what = format!(" after scaling, not one of the {} levels", l.levels);
                    return Err(at("levels", x, format!("{what} on [{}, {}]", l.lo, l.hi)));
                }
                x = on;
            }
            if let Some((lo, hi)) = range
                && !(lo..=hi).contains(&x)
            {
                return Err(at(
                    "range",
                    x,
                    format!(" after scaling, outside [{lo}, {hi}]"),
                ));
            }
            *v = x;
        }
        let shape = if shape.len() == 1 {
            vec![1]
        } else {
            shape[1..].to_vec()
        };
        Ok(Self {
            shape,
            rows,
            range,
            values,
            p,
        })
    }
}

/// The shape and the values (as f64) of the `.npy` file at `path`.
fn read(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let bad = |what: String| invalid("path", format!("{}: {what}", path.display()));
    // The bytes, and up to twice as many in f64 values.
    let bytes = sdeflow_kernel::io::read_bounded(path, 3).map_err(|e| match e {
        sdeflow_kernel::Error::File { problem, .. } => bad(problem),
        sdeflow_kernel::Error::Io { source, .. } => bad(format!("cannot read: {source}")),
        other => bad(format!("cannot read: {other}")),
    })?;
    // npyz allocates the length the preamble claims and multiplies the shape unchecked: check
    // both against the file first.
    let (start, text) = sdeflow_kernel::io::npy_header(&bytes)
        .ok_or_else(|| bad("not a .npy file (a version 1–3 preamble and header)".into()))?;
    let data_len = bytes.len() - start - text.len();
    let text = String::from_utf8_lossy(text);
    let no_shape =
        || bad("not a .npy file: the header has no shape (write it with numpy.save)".into());
    let (dims, claimed) = sdeflow_kernel::io::npy_claimed_shape(&text).ok_or_else(no_shape)?;
    if claimed.is_none_or(|n| n > data_len as u64) {
        let has = format!("the file has {data_len} bytes of data");
        return Err(bad(format!(
            "truncated: the header says shape ({dims}), more values than {has}"
        )));
    }
    let mut rest: &[u8] = &bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| bad(format!("not a .npy file: {e}")))?;
    let descr = match header.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => format!("{other:?}"),
    };
    let width = match descr.as_str() {
        "<f4" | ">f4" => 4usize,
        "<f8" | ">f8" => 8,
        _ => {
            let valid = "valid: <f4, >f4, <f8, >f8 (save the array as float32 or float64)";
            return Err(bad(format!("dtype `{descr}` is not supported; {valid}")));
        }
    };
    if header.order() == npyz::Order::Fortran {
        let fix = "save it in C order: np.save(path, np.ascontiguousarray(a))";
        return Err(bad(format!("the array is in Fortran order; {fix}")));
    }
    let shape: Vec<usize> = header.shape().iter().map(|&s| s as usize).collect();
    if shape.is_empty() || shape[0] < 2 || shape.contains(&0) {
        let need = "need an array of at least 2 rows, none of its axes empty";
        return Err(bad(format!("shape {shape:?}: {need}")));
    }
    let need = shape
        .iter()
        .try_fold(width, |n: usize, &s| n.checked_mul(s))
        .unwrap_or(usize::MAX);
    if need != rest.len() {
        let (what, has) = (format!("{need} bytes of data"), rest.len());
        return Err(bad(if need > has {
            format!("truncated: the header says {shape:?} ({what}), the file has {has}")
        } else {
            format!(
                "the header says {shape:?} ({what}), the file has {has}: extra bytes after the data"
            )
        }));
    }
    let file = npyz::NpyFile::with_header(header, rest);
    let values = if width == 4 {
        file.into_vec::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect())
    } else {
        file.into_vec::<f64>()
    };
    Ok((
        shape,
        values.map_err(|e| bad(format!("cannot read the data: {e}")))?,
    ))
}

impl DataSource for NpyData {
    fn sample_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn extent(&self) -> Extent {
        Extent::Stored {
            rows: self.rows as u64,
            heldout: Holdout::Fraction(self.p.heldout),
        }
    }

    fn range(&self) -> Option<(f64, f64)> {
        self.range
    }

    fn levels(&self) -> Option<u32> {
        self.p.levels
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let d = self.values.len() / self.rows;
        match at {
            RowRef::Stored(j) if j < self.rows as u64 && out.len() == d => {
                out.copy_from_slice(&self.values[j as usize * d..][..d]);
                Ok(None)
            }
            other => Err(Error::Msg(format!(
                "npy {}: no row {other:?} of {d} values",
                self.p.path
            ))),
        }
    }
}

/// The bytes of a version 1.0 `.npy` file: `descr` (`<f8`, …), the order, the shape and the
/// raw data (for fixtures and tests).
pub fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: String = shape.iter().map(|s| format!("{s}, ")).collect();
    let dims = if shape.len() == 1 {
        dims.trim_end()
    } else {
        dims.trim_end_matches(", ")
    };
    let py = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {py}, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to 64 bytes, ending in '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Writes a 64 × 3 f64 array into `dir` and returns the parameters that read it (conformance
/// runs the plugin on it).
pub fn write_fixture(dir: &Path) -> Result<String> {
    let data: Vec<u8> = (0..64 * 3)
        .flat_map(|i| ((i as f64 * 0.37).sin() * 2.0).to_le_bytes())
        .collect();
    let path = dir.join("fixture.npy");
    std::fs::write(&path, npy_bytes("<f8", false, &[64, 3], &data)).map_err(|source| {
        Error::Io {
            path: path.clone(),
            source,
        }
    })?;
    Ok(format!(
        "(path: {:?}, range: Some([-2.0, 2.0]))",
        path.display().to_string()
    ))
}

register_data!(
    "npy",
    "a user's .npy array (f32 or f64, any shape), optionally scaled",
    Params,
    NpyData::new,
    fixture: write_fixture,
);
