//! Data: what a model learns from and is evaluated on ([`DataSource`], the sixth plugin kind),
//! and [`Data`], which every part of sdeflow reads it through.
//!
//! A source is one of two extents ([`Extent`]):
//! - **stored** rows (an array, a file, an embedded dataset): row j of the source is fixed, and
//!   a fixed subset of them is held out ([`Holdout`]), the same for every seed and run;
//! - **unbounded** draws from a law (the 2-D toys, a mixture): row i of a split is drawn from
//!   the kernel's noise source on the [`Data`](Stream::Data) stream, keyed by (seed, split, i)
//!   ([`RowNoise`]), so the two splits are independent draws.
//!
//! [`Data::batch`] gives rows `first..first + n` of a split for a seed. Row i is a pure
//! function of (seed, split, i): the same for any batch size, shard or thread count. Stored
//! rows are read in epochs: row i is stored row `split[π_e(i mod m)]` with m the split's size,
//! e = ⌊i / m⌋ and π_e a permutation of 0..m keyed by (seed, split, e) (a cycle-walking Feistel
//! network, [`permute`]), so each epoch visits every row of the split once, in its own order.

use std::{fmt::Debug, sync::Arc};

use candle_core::{DType, Device, Tensor};
use rand_philox::splitmix64;
use rayon::prelude::*;

use crate::{
    Error, Result,
    mixture::{GaussianMixture, Marginal},
    noise::{RowNoise, Stream, philox_step_key},
};

/// The two splits of every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// What a model is trained on.
    Train,
    /// What it is evaluated on (held-out loss, likelihood); never trained on.
    Heldout,
}

impl Split {
    /// Both splits, train first.
    pub const BOTH: [Split; 2] = [Split::Train, Split::Heldout];

    /// `train` or `heldout`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Heldout => 1,
        }
    }
}

/// Which rows a stored source holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    /// The last n stored rows (a test file of their own: MNIST's `t10k`).
    Last(u64),
    /// round(f · rows) rows chosen by a fixed permutation, the same for every seed and run
    /// (f in [0, 1); the train split keeps at least one row).
    Fraction(f64),
}

/// How many rows a source has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extent {
    /// Draws without end from a law, one per (seed, split, index).
    Unbounded,
    /// `rows` stored rows, `heldout` of them held out.
    Stored {
        /// The number of stored rows.
        rows: u64,
        /// Which of them are held out.
        heldout: Holdout,
    },
}

/// Which row a source is asked for.
#[derive(Debug, Clone, Copy)]
pub enum RowRef<'a> {
    /// Stored row `j` (0-based, below the source's `rows`).
    Stored(u64),
    /// A fresh draw, from these draws of the kernel's source.
    Draw(&'a RowNoise),
}

/// The exact first and second moments of a source's law (row-major covariance over the
/// flattened sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// E[x].
    pub mean: Vec<f64>,
    /// Cov[x], d × d.
    pub covariance: Vec<Vec<f64>>,
}

/// Integer data: `levels` values `lo + (hi − lo) k / (levels − 1)`, k = 0 … levels − 1, with
/// `(lo, hi)` the source's [`range`](DataSource::range). Bits per dimension need them (MATH.md
/// §9): uniform dequantization spreads level k over the cell `lo + (hi − lo)(k + [0, 1))/levels`,
/// so the offset per dimension is log₂(levels / (hi − lo)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// The number of levels L ≥ 2.
    pub levels: u32,
    /// The value of level 0.
    pub lo: f64,
    /// The value of level L − 1.
    pub hi: f64,
}

impl Levels {
    /// The value of level `k`.
    pub fn value(&self, k: u32) -> f64 {
        self.lo + (self.hi - self.lo) * f64::from(k) / f64::from(self.levels - 1)
    }

    /// The level nearest `x` (clamped to 0 … L − 1).
    pub fn level(&self, x: f64) -> u32 {
        let k = ((x - self.lo) / (self.hi - self.lo) * f64::from(self.levels - 1)).round();
        k.clamp(0.0, f64::from(self.levels - 1)) as u32
    }

    /// The bits-per-dimension offset log₂(L / (hi − lo)) of uniformly dequantized data: 7 for 256
    /// levels on [−1, 1], log₂(17/2) for 17.
    pub fn bits_offset(&self) -> f64 {
        (f64::from(self.levels) / (self.hi - self.lo)).log2()
    }
}

/// A data plugin: the rows a model learns from, with what bits per dimension and metrics need.
pub trait DataSource: Send + Sync + Debug {
    /// The shape of one row (`[2]` for 2-D toys, `[1, 8, 8]` for 8 × 8 grey images).
    fn sample_shape(&self) -> Vec<usize>;

    /// Stored rows or unbounded draws.
    fn extent(&self) -> Extent;

    /// The number of classes when rows carry labels (0 … classes − 1), else `None`.
    fn classes(&self) -> Option<usize> {
        None
    }

    /// Bounds (lo, hi) every value lies in, when the data has them.
    fn range(&self) -> Option<(f64, f64)> {
        None
    }

    /// The number of levels of integer data (with [`range`](Self::range), [`Levels`]).
    fn levels(&self) -> Option<u32> {
        None
    }

    /// The exact law, when it is a Gaussian mixture (an oracle reads it: MATH.md §7).
    fn exact_law(&self) -> Option<&GaussianMixture> {
        None
    }

    /// The law's exact mean and covariance, when known (conformance checks rows against them).
    fn moments(&self) -> Option<Moments> {
        self.exact_law().map(|law| Moments {
            mean: law.mean(),
            covariance: law.covariance(),
        })
    }

    /// Writes the row `at` to `out` (the flattened sample, C order) and returns its label
    /// (`Some` exactly when [`classes`](Self::classes) is).
    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>>;
}

/// Rows of a split: values row-major over the flattened sample, and labels when the source has
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The shape of one row.
    pub shape: Vec<usize>,
    /// n × d values.
    pub values: Vec<f64>,
    /// n labels.
    pub labels: Option<Vec<u32>>,
}

impl Batch {
    /// The number of rows.
    pub fn len(&self) -> usize {
        let d: usize = self.shape.iter().product();
        self.values.len() / d.max(1)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values as an `[n, shape...]` tensor in `dtype` on `device`, and the labels as `[n]`
    /// u32.
    pub fn tensors(&self, dtype: DType, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let mut dims = vec![self.len()];
        dims.extend(&self.shape);
        let x = Tensor::from_slice(&self.values, dims, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let labels = match &self.labels {
            Some(l) => Some(Tensor::from_slice(l, l.len(), device)?),
            None => None,
        };
        Ok((x, labels))
    }
}

/// A data source with its splits: what a config's `data:` builds, and what training,
/// likelihood and conformance read rows through ([module docs](self)).
#[derive(Debug, Clone)]
pub struct Data {
    source: Arc<dyn DataSource>,
    /// The stored rows of the train and held-out splits, ascending (stored sources only).
    splits: Option<[Arc<[u64]>; 2]>,
}

/// The key of the held-out selection: fixed, so the split never depends on a seed.
const HOLDOUT_KEY: u64 = 0x5eed_da7a_0000_0001;
/// Rows drawn or copied per parallel task.
const ROWS_PER_TASK: usize = 256;

impl Data {
    /// `source` with its splits; an error if its extent or shape cannot give rows.
    pub fn new(source: Arc<dyn DataSource>) -> Result<Self> {
        let shape = source.sample_shape();
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::Msg(format!(
                "a data source's rows must have a non-empty shape, got {shape:?}"
            )));
        }
        if source.levels().is_some_and(|l| l < 2)
            || (source.levels().is_some() && source.range().is_none())
        {
            return Err(Error::Msg(
                "integer data needs at least 2 levels and a range".into(),
            ));
        }
        let splits = match source.extent() {
            Extent::Unbounded => None,
            Extent::Stored { rows, heldout } => Some(split_rows(rows, heldout)?),
        };
        Ok(Self { source, splits })
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn DataSource> {
        &self.source
    }

    /// The shape of one row.
    pub fn sample_shape(&self) -> Vec<usize> {
        self.source.sample_shape()
    }

    /// The number of values in one row.
    pub fn dim(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// The rows of `split` (`None`: unbounded).
    pub fn len(&self, split: Split) -> Option<u64> {
        self.stored(split).map(|s| s.len() as u64)
    }

    /// The stored rows that make up `split`, ascending (`None`: unbounded).
    pub fn stored(&self, split: Split) -> Option<&[u64]> {
        self.splits.as_ref().map(|s| &*s[split.tag() as usize])
    }

    /// The levels of integer data.
    pub fn levels(&self) -> Option<Levels> {
        let (lo, hi) = self.source.range()?;
        self.source.levels().map(|levels| Levels { levels, lo, hi })
    }

    /// Which source row row `index` of `split` is for `seed`: the stored row (epochs of a
    /// seeded permutation), or the draws of an unbounded source's row.
    fn locate(&self, split: Split, seed: u64, index: u64) -> Located {
        match self.stored(split) {
            Some(rows) => {
                let m = rows.len() as u64;
                let (epoch, pos) = (index / m, index % m);
                let key = philox_step_key(seed, Stream::Data, 1 << 63 | epoch << 1 | split.tag());
                Located::Stored(
                    rows[permute(pos, m, u64::from(key[0]) | u64::from(key[1]) << 32) as usize],
                )
            }
            None => Located::Draw(RowNoise::new(
                philox_step_key(seed, Stream::Data, split.tag()),
                index,
            )),
        }
    }

    /// Rows `first..first + n` of `split` for `seed` (the module docs say which rows these
    /// are). An empty split, a label that contradicts the source's classes or a row of the wrong
    /// length is an error.
    pub fn batch(&self, split: Split, seed: u64, first: u64, n: usize) -> Result<Batch> {
        if self.len(split) == Some(0) {
            return Err(Error::Msg(format!(
                "the {} split of this data is empty",
                split.name()
            )));
        }
        let d = self.dim();
        let classes = self.source.classes();
        let mut values = vec![0.0; n * d];
        let mut labels = vec![0u32; n];
        values
            .par_chunks_mut(ROWS_PER_TASK * d)
            .zip(labels.par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .try_for_each(|(task, (vals, labs))| -> Result<()> {
                for (r, (row, label)) in vals.chunks_mut(d).zip(labs).enumerate() {
                    let index = first + (task * ROWS_PER_TASK + r) as u64;
                    let got = match self.locate(split, seed, index) {
                        Located::Stored(j) => self.source.row(RowRef::Stored(j), row)?,
                        Located::Draw(noise) => self.source.row(RowRef::Draw(&noise), row)?,
                    };
                    *label = match (got, classes) {
                        (Some(l), Some(c)) if (l as usize) < c => l,
                        (None, None) => 0,
                        (got, _) => {
                            return Err(Error::Msg(format!(
                                "row {index} of the {} split has label {got:?}, but the source declares {} classes",
                                split.name(),
                                classes.map_or("no".into(), |c| c.to_string())
                            )));
                        }
                    };
                }
                Ok(())
            })?;
        Ok(Batch {
            shape: self.sample_shape(),
            values,
            labels: classes.map(|_| labels),
        })
    }
}

enum Located {
    Stored(u64),
    Draw(RowNoise),
}

/// The stored rows of the train and held-out splits.
fn split_rows(rows: u64, heldout: Holdout) -> Result<[Arc<[u64]>; 2]> {
    let n_held = match heldout {
        Holdout::Last(h) => h,
        Holdout::Fraction(f) if (0.0..1.0).contains(&f) => (f * rows as f64).round() as u64,
        Holdout::Fraction(f) => {
            return Err(Error::Msg(format!(
                "a held-out fraction must be in [0, 1), got {f}"
            )));
        }
    };
    if n_held >= rows {
        return Err(Error::Msg(format!(
            "{rows} stored rows leave none to train on after holding out {n_held}"
        )));
    }
    let held = |j: u64| match heldout {
        Holdout::Last(h) => j >= rows - h,
        Holdout::Fraction(_) => permute(j, rows, HOLDOUT_KEY) < n_held,
    };
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for j in 0..rows {
        if held(j) {
            test.push(j);
        } else {
            train.push(j);
        }
    }
    Ok([train.into(), test.into()])
}

/// A permutation of 0..n keyed by `key`: `permute(·, n, key)` is a bijection of 0..n, a
/// balanced 4-round Feistel network on the smallest even number of bits covering n, walked
/// until it lands below n (Black & Rogaway 2002, "cycle walking"). Costs O(1) per index, with
/// no table.
pub fn permute(index: u64, n: u64, key: u64) -> u64 {
    debug_assert!(index < n);
    if n <= 1 {
        return index;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = index;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = splitmix64(key ^ splitmix64(r ^ round << 56)) & mask;
            (l, r) = (r, l ^ f);
        }
        x = l << half | r;
        if x < n {
            return x;
        }
    }
}

/// A Gaussian mixture as data: unbounded exact draws of p₀, with its law (the `gmm` plugin,
/// and the data of an oracle built in code). Row i is the mixture's draw from its row's noise
/// ([`Marginal::draw`]); with `labels`, its component is its class.
#[derive(Debug, Clone)]
pub struct MixtureData {
    law: GaussianMixture,
    p0: Marginal,
    labels: bool,
}

impl MixtureData {
    /// The mixture `law` as data; `labels` makes each row's component its class.
    pub fn new(law: GaussianMixture, labels: bool) -> Result<Self> {
        let p0 = law.marginal(1.0, 0.0)?;
        Ok(Self { law, p0, labels })
    }
}

impl DataSource for MixtureData {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.law.dim()]
    }

    fn extent(&self) -> Extent {
        Extent::Unbounded
    }

    fn classes(&self) -> Option<usize> {
        self.labels.then(|| self.law.components())
    }

    fn exact_law(&self) -> Option<&GaussianMixture> {
        Some(&self.law)
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        match at {
            RowRef::Draw(noise) => {
                let k = self.p0.draw(noise, out);
                Ok(self.labels.then_some(k as u32))
            }
            RowRef::Stored(j) => Err(Error::Msg(format!(
                "a mixture has no stored rows (asked for row {j})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection_for_every_small_n() {
        for n in [1u64, 2, 3, 7, 16, 17, 100, 1797, 4097] {
            for key in [0u64, 1, 0xdead_beef] {
                let mut seen = vec![false; n as usize];
                for i in 0..n {
                    let j = permute(i, n, key);
                    assert!(j < n && !seen[j as usize], "n {n} key {key}");
                    seen[j as usize] = true;
                }
            }
        }
        // Keys give different orders.
        let a: Vec<u64> = (0..100).map(|i| permute(i, 100, 1)).collect();
        let b: Vec<u64> = (0..100).map(|i| permute(i, 100, 2)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn splits_partition_the_stored_rows() -> Result<()> {
        let [train, held] = split_rows(1797, Holdout::Fraction(0.1))?;
        assert_eq!(held.len(), 180);
        assert_eq!(train.len() + held.len(), 1797);
        assert!(train.iter().all(|j| held.binary_search(j).is_err()));
        let [train, held] = split_rows(70, Holdout::Last(10))?;
        assert_eq!(
            (&*held, train.len()),
            (&(60..70).collect::<Vec<_>>()[..], 60)
        );
        assert!(split_rows(5, Holdout::Last(5)).is_err());
        assert!(split_rows(5, Holdout::Fraction(1.0)).is_err());
        Ok(())
    }

    #[test]
    fn levels_map_codes_to_values_and_back() {
        let l = Levels {
            levels: 17,
            lo: -1.0,
            hi: 1.0,
        };
        assert_eq!((l.value(0), l.value(8), l.value(16)), (-1.0, 0.0, 1.0));
        assert!((0..17).all(|k| l.level(l.value(k)) == k));
        // MATH.md §9: 7 bits for 256 levels on [−1, 1].
        let bytes = Levels {
            levels: 256,
            lo: -1.0,
            hi: 1.0,
        };
        assert!((bytes.bits_offset() - 7.0).abs() < 1e-15);
    }
}
