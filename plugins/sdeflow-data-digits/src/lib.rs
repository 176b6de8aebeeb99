//! The 1,797 UCI 8 × 8 handwritten digits with their labels, as 17-level grey images on
//! [−1, 1] (the set scikit-learn's `load_digits` serves), embedded in the binary through
//! smartcore's `datasets` feature: no download, no file.
//!
//! # Formula
//! Row j is image j of the set, a [1, 8, 8] array of counts k ∈ {0, …, 16} (the pixels of a
//! 4 × 4 block of the original 32 × 32 bitmap that are set) mapped to x = 2k/16 − 1, so the
//! 17 levels are −1, −7/8, …, 1; its label is the digit 0 … 9. Bits per dimension of this data
//! take the offset log₂(17/2) ≈ 3.0875 (docs/math.md §10). The held-out rows are a fixed
//! pseudo-random fraction of the set, the same for every seed (the kernel's `Holdout::Fraction`).
//!
//! # Parameters
//! - `heldout`: the fraction held out, in [0, 1). Default 0.1 (180 of the 1,797 rows).
//!
//! # Claims
//! Rows of shape [1, 8, 8] with labels 0 … 9; 1,797 stored rows; every value on the 17-level
//! grid of [−1, 1]; train and held-out disjoint, covering the set, independent of the seed.
//!
//! # References
//! Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
//! Repository, 1998 (doi:10.24432/C50P49); scikit-learn's `sklearn.datasets.load_digits`.

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Holdout, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The held-out fraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The fraction of the rows held out.
    pub heldout: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { heldout: 0.1 }
    }
}

/// Rows in the set.
pub const ROWS: usize = 1797;
/// Pixels per image.
pub const PIXELS: usize = 64;
/// The largest count (16: levels 0 … 16).
pub const MAX_COUNT: u32 = 16;

/// The digits: counts and labels as loaded.
#[derive(Debug, Clone)]
pub struct Digits {
    counts: Vec<u8>,
    labels: Vec<u8>,
    heldout: f64,
}

impl Digits {
    /// Loads the embedded set and checks it: 1,797 rows of 64 integer counts 0 … 16 and labels
    /// 0 … 9.
    pub fn new(p: Params) -> Result<Self> {
        if !(0.0..1.0).contains(&p.heldout) {
            return Err(Error::invalid(
                "digits",
                "heldout",
                format!("{} is not a fraction in [0, 1)", p.heldout),
            ));
        }
        let set = smartcore::dataset::digits::load_dataset();
        let bad = |what: String| Error::Msg(format!("digits: the embedded set is damaged: {what}"));
        if set.num_samples != ROWS || set.num_features != PIXELS || set.data.len() != ROWS * PIXELS
        {
            return Err(bad(format!(
                "{} rows of {} pixels, expected {ROWS} of {PIXELS}",
                set.num_samples, set.num_features
            )));
        }
        let as_int = |v: f32, max: u32, what: &str| -> Result<u8> {
            if v.fract() == 0.0 && (0.0..=max as f32).contains(&v) {
                Ok(v as u8)
            } else {
                Err(bad(format!("{what} {v} is not an integer in 0..={max}")))
            }
        };
        let counts = set
            .data
            .iter()
            .map(|&v| as_int(v, MAX_COUNT, "pixel"))
            .collect::<Result<Vec<u8>>>()?;
        let labels = set
            .target
            .iter()
            .map(|&v| as_int(v, 9, "label"))
            .collect::<Result<Vec<u8>>>()?;
        if labels.len() != ROWS {
            return Err(bad(format!("{} labels for {ROWS} rows", labels.len())));
        }
        Ok(Self {
            counts,
            labels,
            heldout: p.heldout,
        })
    }

    /// Image `j`'s counts (0 … 16), row-major.
    pub fn counts(&self, j: usize) -> &[u8] {
        &self.counts[j * PIXELS..(j + 1) * PIXELS]
    }
}

impl DataSource for Digits {
    fn sample_shape(&self) -> Vec<usize> {
        vec![1, 8, 8]
    }

    fn extent(&self) -> Extent {
        Extent::Stored {
            rows: ROWS as u64,
            heldout: Holdout::Fraction(self.heldout),
        }
    }

    fn classes(&self) -> Option<usize> {
        Some(10)
    }

    fn range(&self) -> Option<(f64, f64)> {
        Some((-1.0, 1.0))
    }

    fn levels(&self) -> Option<u32> {
        Some(MAX_COUNT + 1)
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let j = match at {
            RowRef::Stored(j) if (j as usize) < ROWS => j as usize,
            RowRef::Stored(j) => {
                return Err(Error::Msg(format!("digits has {ROWS} rows, not row {j}")));
            }
            RowRef::Draw(_) => return Err(Error::Msg("digits is stored rows, not draws".into())),
        };
        for (x, &k) in out.iter_mut().zip(self.counts(j)) {
            *x = 2.0 * f64::from(k) / f64::from(MAX_COUNT) - 1.0;
        }
        Ok(Some(u32::from(self.labels[j])))
    }
}

register_data!(
    "digits",
    "the 1,797 UCI 8x8 handwritten digits with labels, 17 levels on [-1, 1] (embedded)",
    Params,
    Digits::new,
);
