//! Image samples judged without a pretrained network: a k-nearest-neighbour classifier on the
//! real training images labels each sample (does a sample drawn for class c look like a c?),
//! the distance from each sample to its nearest training image beside the same for held-out
//! images (memorisation shows as samples much closer than held-out images are), and
//! class-conditional pixel sliced W2 (how a guidance scale is chosen).

use candle_core::{Device, Tensor};
use sdeflow_conformance::sw2::{Floor, SlicedW2};
use sdeflow_kernel::{Error, Result};
use serde::Serialize;

/// The neighbours the classifier votes with.
pub const KNN: usize = 5;

/// Query rows per distance block (a block's distances are `QUERY_BLOCK × m` values).
const QUERY_BLOCK: usize = 256;

/// The majority label among `neighbours` (nearest first); a tie goes to the tied label whose
/// nearest member is nearest.
pub fn vote(neighbours: &[(f64, usize)], labels: &[u32]) -> u32 {
    let mut counts: Vec<(u32, usize, usize)> = Vec::new();
    for (rank, &(_, j)) in neighbours.iter().enumerate() {
        let y = labels[j];
        match counts.iter_mut().find(|(l, _, _)| *l == y) {
            Some(c) => c.1 += 1,
            None => counts.push((y, 1, rank)),
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map_or(0, |c| c.0)
}

/// A labelled reference: the real training images a sample is compared with, with what
/// nearest-neighbour searches need of them computed once.
#[derive(Debug, Clone)]
pub struct Reference {
    rows: Vec<f64>,
    labels: Vec<u32>,
    d: usize,
    /// The images as a `[d, m]` f64 matrix on the CPU (for q·r by one product per block).
    transposed: Tensor,
    /// ‖r‖² of each image.
    squared: Vec<f64>,
}

/// Each query's [`KNN`] nearest reference images, as (distance, index), nearest first.
pub type Neighbours = Vec<Vec<(f64, usize)>>;

/// How well labelled samples look like their classes.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// The share of samples the k-NN classifier labels with the class they were drawn for.
    pub overall: f64,
    /// The same per class drawn: (class, accuracy, samples).
    pub per_class: Vec<(u32, f64, usize)>,
}

/// The mean distance from each query to its nearest reference image.
pub fn mean_nearest(neighbours: &Neighbours) -> f64 {
    neighbours.iter().map(|v| v[0].0).sum::<f64>() / neighbours.len().max(1) as f64
}

impl Reference {
    /// The images `rows` (row-major, `d` values each) with their `labels`.
    pub fn new(rows: Vec<f64>, labels: Vec<u32>, d: usize) -> Result<Self> {
        let m = rows.len() / d.max(1);
        if m == 0 || d == 0 || labels.len() != m {
            return Err(Error::Msg(format!(
                "a reference of {m} images of {d} values needs one label each, not {}",
                labels.len()
            )));
        }
        let r = Tensor::from_slice(&rows, (m, d), &Device::Cpu)?;
        Ok(Self {
            squared: r.sqr()?.sum(1)?.to_vec1::<f64>()?,
            transposed: r.t()?.contiguous()?,
            rows,
            labels,
            d,
        })
    }

    /// Values per image.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// For each row of `queries` (row-major, `d` columns), the [`KNN`] nearest images in
    /// Euclidean distance, nearest first (ties by index): the squared distances
    /// ‖q‖² + ‖r‖² − 2 q·r blockwise, one matrix product per block, in f64.
    pub fn neighbours(&self, queries: &[f64]) -> Result<Neighbours> {
        let d = self.d;
        let k = KNN.min(self.squared.len());
        let mut out = Vec::with_capacity(queries.len() / d);
        for block in queries.chunks(QUERY_BLOCK * d) {
            let q = Tensor::from_slice(block, (block.len() / d, d), &Device::Cpu)?;
            let q_sq = q.sqr()?.sum(1)?.to_vec1::<f64>()?;
            let dots = q.matmul(&self.transposed)?.to_vec2::<f64>()?;
            for (row, qs) in dots.iter().zip(&q_sq) {
                let mut dist: Vec<(f64, usize)> = row
                    .iter()
                    .zip(&self.squared)
                    .enumerate()
                    .map(|(j, (dot, rs))| ((qs + rs - 2.0 * dot).max(0.0), j))
                    .collect();
                let cmp =
                    |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if k < dist.len() {
                    dist.select_nth_unstable_by(k - 1, cmp);
                    dist.truncate(k);
                }
                dist.sort_unstable_by(cmp);
                out.push(dist.into_iter().map(|(s, j)| (s.sqrt(), j)).collect());
            }
        }
        Ok(out)
    }

    /// The k-NN accuracy of samples drawn for `wanted` (one label each), from their
    /// [`neighbours`](Self::neighbours).
    pub fn accuracy(&self, neighbours: &Neighbours, wanted: &[u32]) -> Accuracy {
        let mut classes: Vec<u32> = wanted.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let mut per = vec![(0usize, 0usize); classes.len()];
        let mut right = 0;
        for (nb, &y) in neighbours.iter().zip(wanted) {
            let ok = vote(nb, &self.labels) == y;
            right += usize::from(ok);
            let c = classes.binary_search(&y).unwrap_or(0);
            per[c].0 += usize::from(ok);
            per[c].1 += 1;
        }
        Accuracy {
            overall: right as f64 / wanted.len().max(1) as f64,
            per_class: classes
                .iter()
                .zip(&per)
                .map(|(&c, &(ok, n))| (c, ok as f64 / n.max(1) as f64, n))
                .collect(),
        }
    }

    /// Class-conditional pixel sliced W2 for samples drawn for `wanted`: per class c a
    /// reference of m training images of c, m the same for every class — at most the samples
    /// drawn for each class and a third of each class's training images — and its floor: the
    /// same statistic for further disjoint sets of m training images of each class.
    pub fn class_metric(&self, wanted: &[u32]) -> Result<ClassMetric> {
        let d = self.d;
        let mut classes: Vec<u32> = wanted.to_vec();
        classes.sort_unstable();
        classes.dedup();
        let real: Vec<Vec<f64>> = classes
            .iter()
            .map(|&c| rows_of(&self.rows, &self.labels, d, c))
            .collect();
        let m = classes
            .iter()
            .zip(&real)
            .map(|(&c, r)| {
                let drawn = wanted.iter().filter(|&&y| y == c).count();
                drawn.min(r.len() / d / 3)
            })
            .min()
            .unwrap_or(0);
        if m < 2 {
            return Err(Error::Msg(
                "class-conditional sliced W2 needs at least 2 samples and 6 training images of each class drawn; draw more samples (guidance `search_samples`) or fewer classes".into(),
            ));
        }
        let sws: Vec<SlicedW2> = real.iter().map(|r| SlicedW2::new(&r[..m * d], d)).collect();
        let sets = real
            .iter()
            .map(|r| r.len() / d / m)
            .min()
            .unwrap_or(0)
            .min(11);
        let values = (1..sets)
            .map(|j| {
                let mut total = 0.0;
                for (sw, r) in sws.iter().zip(&real) {
                    total += sw.distance(&r[j * m * d..(j + 1) * m * d])?;
                }
                Ok(total / classes.len() as f64)
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(ClassMetric {
            classes,
            m,
            d,
            sws,
            floor: Floor::of(&values),
        })
    }
}

/// The rows of `values` (row-major, `d` columns) labelled `c`.
fn rows_of(values: &[f64], labels: &[u32], d: usize, c: u32) -> Vec<f64> {
    values
        .chunks(d)
        .zip(labels)
        .filter(|(_, l)| **l == c)
        .flat_map(|(r, _)| r.iter().copied())
        .collect()
}

/// Class-conditional pixel sliced W2 ([`Reference::class_metric`]).
#[derive(Debug, Clone)]
pub struct ClassMetric {
    classes: Vec<u32>,
    /// Images per class in each set.
    pub m: usize,
    d: usize,
    sws: Vec<SlicedW2>,
    /// The statistic between disjoint sets of real images of each class.
    pub floor: Floor,
}

impl ClassMetric {
    /// The mean over classes of the sliced W2 between the first m samples drawn for class c
    /// (`wanted`) and the m reference images of c.
    pub fn distance(&self, samples: &[f64], wanted: &[u32]) -> Result<f64> {
        let (d, m) = (self.d, self.m);
        let mut total = 0.0;
        for (&c, sw) in self.classes.iter().zip(&self.sws) {
            let drawn = rows_of(samples, wanted, d, c);
            if drawn.len() < m * d {
                return Err(Error::Msg(format!(
                    "class {c}: {} samples, {m} needed",
                    drawn.len() / d
                )));
            }
            total += sw.distance(&drawn[..m * d])?;
        }
        Ok(total / self.classes.len() as f64)
    }
}

/// Reorders `values` (row-major images of `d` values, drawn for `labels`) into a grid with a
/// line per class of `classes`, `per_class` images each (fewer when a class has fewer), for
/// [`crate::plot::image_grid`] with `per_class` columns; classes without samples leave a
/// blank line.
pub fn by_class(
    values: &[f64],
    labels: &[u32],
    d: usize,
    classes: &[u32],
    per_class: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(classes.len() * per_class * d);
    for &c in classes {
        let mut taken = 0;
        for (row, _) in values.chunks(d).zip(labels).filter(|(_, l)| **l == c) {
            if taken == per_class {
                break;
            }
            out.extend_from_slice(row);
            taken += 1;
        }
        // A short line is padded with blank (NaN) tiles so the next class starts a new line.
        out.extend(std::iter::repeat_n(f64::NAN, (per_class - taken) * d));
    }
    out
}

/// Frames `[steps + 1][n · d]` of x̂₀ for `rows` of the samples, as a strip: a line per row,
/// at most `columns` frames from first to last (evenly spaced, the last included).
pub fn strip(frames: &[Vec<f64>], rows: &[usize], d: usize, columns: usize) -> Vec<f64> {
    let f = frames.len();
    let cols = columns.min(f).max(1);
    let picks: Vec<usize> = (0..cols)
        .map(|j| {
            if cols == 1 {
                f - 1
            } else {
                j * (f - 1) / (cols - 1)
            }
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len() * cols * d);
    for &r in rows {
        for &j in &picks {
            out.extend_from_slice(&frames[j][r * d..(r + 1) * d]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_the_closest_rows_in_order() -> Result<()> {
        let reference = vec![0.0, 0.0, 3.0, 0.0, 1.0, 1.0, 10.0, 10.0, 5.0, 5.0, 6.0, 6.0];
        let r = Reference::new(reference, vec![0; 6], 2)?;
        let got = r.neighbours(&[0.9, 0.9, 9.0, 9.0])?;
        assert_eq!(got[0].len(), KNN);
        assert_eq!(got[0][0].1, 2);
        assert_eq!(got[0][1].1, 0);
        assert!((got[0][0].0 - (0.02f64).sqrt()).abs() < 1e-12);
        assert_eq!(got[1][0].1, 3);
        assert!((mean_nearest(&got) - ((0.02f64).sqrt() + 2.0f64.sqrt()) / 2.0).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn a_vote_takes_the_majority_and_breaks_ties_by_the_nearest() {
        let labels = [1, 2, 2, 1, 3];
        assert_eq!(vote(&[(0.1, 0), (0.2, 1), (0.3, 2)], &labels), 2);
        assert_eq!(vote(&[(0.1, 1), (0.2, 0), (0.3, 3), (0.4, 2)], &labels), 2);
        assert_eq!(vote(&[(0.1, 0), (0.2, 1), (0.3, 3), (0.4, 2)], &labels), 1);
    }

    #[test]
    fn accuracy_counts_samples_that_look_like_their_class() -> Result<()> {
        // Class 0 near the origin, class 1 near (10, 10).
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..10 {
            let e = i as f64 * 0.01;
            rows.extend([e, -e, 10.0 + e, 10.0 - e]);
            labels.extend([0, 1]);
        }
        let r = Reference::new(rows, labels, 2)?;
        let samples = [0.1, 0.1, 9.9, 9.9, 10.0, 10.0, 0.0, 0.2];
        let acc = r.accuracy(&r.neighbours(&samples)?, &[0, 1, 1, 1]);
        assert!((acc.overall - 0.75).abs() < 1e-12);
        assert_eq!(acc.per_class, vec![(0, 1.0, 1), (1, 2.0 / 3.0, 3)]);
        Ok(())
    }

    #[test]
    fn a_grid_by_class_puts_each_class_on_its_own_line() {
        let values = [1.0, 2.0, 3.0, 4.0];
        let grid = by_class(&values, &[1, 0, 1, 0], 1, &[0, 1], 3);
        assert_eq!(grid[..2], [2.0, 4.0]);
        assert!(grid[2].is_nan());
        assert_eq!(grid[3..5], [1.0, 3.0]);
    }

    #[test]
    fn a_strip_spans_first_to_last_frame() {
        let frames: Vec<Vec<f64>> = (0..5).map(|f| vec![f as f64, 10.0 + f as f64]).collect();
        assert_eq!(strip(&frames, &[1], 1, 3), vec![10.0, 12.0, 14.0]);
        assert_eq!(strip(&frames, &[0, 1], 1, 2), vec![0.0, 4.0, 10.0, 14.0]);
    }
}
