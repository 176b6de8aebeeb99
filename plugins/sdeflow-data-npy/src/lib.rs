//! A user's `.npy` array as data: row j is `array[j]`, optionally scaled.
//!
//! # Formula
//! For an array A of shape [n, s₁, …, s_k] (f32 or f64, either byte order, C order), row j is
//! x_j = scale · A[j] + shift, of shape [s₁, …, s_k] ([n] arrays give rows of shape [1]). The
//! held-out rows are a fixed pseudo-random fraction of the n, the same for every seed (the
//! kernel's `Holdout::Fraction`, docs/math.md §10). A declared `range` (and `levels`) is checked
//! on every value after scaling.
//!
//! # Parameters
//! - `path`: the `.npy` file (relative to the working directory). Required.
//! - `scale`: finite, non-zero. Default 1.0.
//! - `shift`: finite. Default 0.0.
//! - `heldout`: the fraction held out, in [0, 1). Default 0.1.
//! - `range`: `Some([lo, hi])`: bounds every value lies in after scaling (needed for `levels`).
//!   Default `None`.
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

use std::path::{Path, PathBuf};

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
    /// Declared bounds `[lo, hi]` of the scaled values (a list: RON reads `Some([lo, hi])`).
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
            return Err(invalid(
                "path",
                "give the .npy file to read: `npy(path: \"data.npy\")`",
            ));
        }
        if !(p.scale.is_finite() && p.scale != 0.0 && p.shift.is_finite()) {
            return Err(invalid(
                "scale",
                format!(
                    "scale {} and shift {} must be finite, scale non-zero",
                    p.scale, p.shift
                ),
            ));
        }
        let range = match p.range.as_deref() {
            None => None,
            Some(&[lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((lo, hi)),
            Some(other) => {
                return Err(invalid(
                    "range",
                    format!("{other:?} is not [lo, hi], finite with lo < hi"),
                ));
            }
        };
        match (p.levels, range) {
            (Some(l), _) if l < 2 => {
                return Err(invalid("levels", format!("{l} levels: need at least 2")));
            }
            (Some(_), None) => {
                return Err(invalid("levels", "levels need a `range: Some([lo, hi])`"));
            }
            _ => {}
        }
        let path = PathBuf::from(&p.path);
        let (shape, raw) = read(&path)?;
        let d: usize = shape[1..].iter().product();
        let at = |i: usize| (i / d.max(1), i % d.max(1));
        let levels = p
            .levels
            .zip(range)
            .map(|(levels, (lo, hi))| Levels { levels, lo, hi });
        let mut values = Vec::with_capacity(raw.len());
        for (i, v) in raw.into_iter().enumerate() {
            let (row, col) = at(i);
            if !v.is_finite() {
                return Err(invalid(
                    "path",
                    format!(
                        "{}: row {row}, column {col} is {v}; the data must be finite",
                        path.display()
                    ),
                ));
            }
            let x = p.scale * v + p.shift;
            if let Some((lo, hi)) = range
                && !(lo..=hi).contains(&x)
            {
                return Err(invalid(
                    "range",
                    format!(
                        "{}: row {row}, column {col} is {x} after scaling, outside [{lo}, {hi}]",
                        path.display()
                    ),
                ));
            }
            if let Some(l) = levels
                && (x - l.value(l.level(x))).abs() > 1e-9 * (l.hi - l.lo)
            {
                return Err(invalid(
                    "levels",
                    format!(
                        "{}: row {row}, column {col} is {x}, not one of the {} levels on [{}, {}]",
                        path.display(),
                        l.levels,
                        l.lo,
                        l.hi
                    ),
                ));
            }
            values.push(x);
        }
        let row_shape = if shape.len() == 1 {
            vec![1]
        } else {
            shape[1..].to_vec()
        };
        Ok(Self {
            shape: row_shape,
            values,
            p,
        })
    }
}

/// The shape and the values (as f64) of the `.npy` file at `path`.
fn read(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let bad = |what: String| invalid("path", format!("{}: {what}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if let Some(claimed) = claimed_elements(&bytes)
        && claimed.is_none_or(|n| n > bytes.len() as u64)
    {
        return Err(bad(format!(
            "truncated: the header's shape claims more values than the file's {} bytes hold",
            bytes.len()
        )));
    }
    let mut rest: &[u8] = &bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| bad(format!("not a .npy file: {e}")))?;
    if header.order() == npyz::Order::Fortran {
        return Err(bad(
            "the array is in Fortran order; save it in C order (numpy.ascontiguousarray)".into(),
        ));
    }
    let descr = match header.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => format!("{other:?}"),
    };
    let width = match descr.as_str() {
        "<f4" | ">f4" => 4,
        "<f8" | ">f8" => 8,
        _ => {
            return Err(bad(format!(
                "dtype `{descr}` is not supported; save the array as float32 or float64"
            )));
        }
    };
    let shape: Vec<usize> = header.shape().iter().map(|&s| s as usize).collect();
    if shape.is_empty() || shape[0] < 2 || shape.contains(&0) {
        return Err(bad(format!(
            "shape {shape:?}: need an array of at least 2 rows, none of its axes empty"
        )));
    }
    let need = header
        .len()
        .checked_mul(width)
        .filter(|n| *n <= usize::MAX as u64)
        .map(|n| n as usize);
    match need {
        Some(n) if n == rest.len() => {}
        Some(n) if n > rest.len() => {
            return Err(bad(format!(
                "truncated: the header says {shape:?} ({n} bytes of data), the file has {} after its header",
                rest.len()
            )));
        }
        Some(n) => {
            return Err(bad(format!(
                "{} bytes after the data the header describes ({n} bytes): the file is not one array",
                rest.len() - n
            )));
        }
        None => return Err(bad(format!("shape {shape:?} is larger than any file"))),
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

/// The element count the header's `'shape'` claims (`Some(None)`: it overflows u64), read
/// before the header is parsed in full so that a hostile shape cannot overflow the parser's
/// arithmetic; `None` when the header is not readable this way (the full parser then reports
/// it).
fn claimed_elements(bytes: &[u8]) -> Option<Option<u64>> {
    let (len, start): (usize, usize) = match bytes.get(6)? {
        1 => (
            u16::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?]) as usize,
            10,
        ),
        2 | 3 => (
            u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize,
            12,
        ),
        _ => return None,
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let after = &header[header.find("'shape'")?..];
    let tuple = &after[after.find('(')? + 1..after.find(')')?];
    let mut n = Some(1u64);
    for dim in tuple.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dim: u64 = dim.parse().ok()?;
        n = n.and_then(|n| n.checked_mul(dim));
    }
    Some(n)
}

impl DataSource for NpyData {
    fn sample_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }

    fn extent(&self) -> Extent {
        Extent::Stored {
            rows: (self.values.len() / self.shape.iter().product::<usize>()) as u64,
            heldout: Holdout::Fraction(self.p.heldout),
        }
    }

    fn range(&self) -> Option<(f64, f64)> {
        match self.p.range.as_deref() {
            Some(&[lo, hi]) => Some((lo, hi)),
            _ => None,
        }
    }

    fn levels(&self) -> Option<u32> {
        self.p.levels
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let d = out.len();
        match at {
            RowRef::Stored(j) if (j as usize + 1) * d <= self.values.len() => {
                out.copy_from_slice(&self.values[j as usize * d..(j as usize + 1) * d]);
                Ok(None)
            }
            other => Err(Error::Msg(format!("npy {}: no row {other:?}", self.p.path))),
        }
    }
}

/// The bytes of a version 1.0 `.npy` file: `descr` (`<f8`, …), the order, the shape and the
/// raw data (for fixtures and tests).
pub fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let dims = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
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
