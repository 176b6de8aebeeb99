//! Data-source contracts (issue "data sources"): rows have the declared shape and labels and
//! are finite; row i is the same bits for batch sizes 1, 7 and 1,000, across reruns and across
//! shards; the train and held-out splits are disjoint, cover the stored rows, do not depend on
//! the seed, and each epoch of a split visits each of its rows once; values lie inside the
//! declared range (and on the declared levels); where the law's moments are known, the mean and
//! covariance of 20,000 rows lie within 4 standard errors of them.
//!
//! A plugin whose defaults need files (a user's array) is run on the fixture it registers.

use std::{collections::HashMap, path::PathBuf};

use sdeflow_kernel::{
    Data, Error, Registry, Result, Split,
    data::{Batch, RowRef},
};

use crate::report::{Report, num};

/// Rows of the shape, invariance and disjointness checks.
const ROWS: usize = 1000;
/// Rows of the moment check.
const MOMENT_ROWS: usize = 20_000;
/// Standard errors the moments may be off by.
const SE_BOUND: f64 = 4.0;
/// The seeds rows are drawn with.
const SEED: u64 = 5;
const OTHER_SEED: u64 = 6;

/// The parameters `name` is checked with: its fixture's, written into a fresh directory (kept
/// until the process ends, then removed by `Fixture`'s drop), or `()`.
struct FixtureDir(Option<PathBuf>);

impl Drop for FixtureDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn params(registry: &Registry, name: &str) -> Result<(String, FixtureDir)> {
    let plugin = registry.data.get(name)?;
    match plugin.info.fixture {
        None => Ok(("()".into(), FixtureDir(None))),
        Some(write) => {
            let dir = std::env::temp_dir().join(format!(
                "sdeflow-conformance-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let guard = FixtureDir(Some(dir.clone()));
            Ok((write(&dir)?, guard))
        }
    }
}

/// Runs the data contracts for the registered data plugin `name`.
pub fn check(report: &mut Report, registry: &Registry, name: &str) {
    let plugin = format!("data/{name}");
    let (params, _dir) = match params(registry, name) {
        Ok(p) => p,
        Err(e) => return report.error(&plugin, "writes its fixture", e),
    };
    let build = || registry.data(name, &params);
    let (data, again) = match (build(), build()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return report.error(&plugin, format!("builds with {params}"), e);
        }
    };
    let rows = |d: &Data, split, seed, first, n| d.batch(split, seed, first, n);
    let train = match rows(&data, Split::Train, SEED, 0, ROWS) {
        Ok(b) => b,
        Err(e) => return report.error(&plugin, "draws 1,000 train rows", e),
    };
    let held = match rows(&data, Split::Heldout, SEED, 0, ROWS) {
        Ok(b) => b,
        Err(e) => return report.error(&plugin, "draws 1,000 held-out rows", e),
    };
    shapes(report, &plugin, &data, &[&train, &held]);
    invariance(report, &plugin, &data, &again, &train);
    splits(report, &plugin, &data, &again, &train, &held);
    range(report, &plugin, &data, &[&train, &held]);
    moments(report, &plugin, &data);
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn shapes(report: &mut Report, plugin: &str, data: &Data, batches: &[&Batch]) {
    let d = data.dim();
    let classes = data.source().classes();
    let shape_ok = batches
        .iter()
        .all(|b| b.shape == data.sample_shape() && b.values.len() == ROWS * d);
    let labels_ok = batches.iter().all(|b| match (&b.labels, classes) {
        (Some(l), Some(c)) => l.len() == ROWS && l.iter().all(|&k| (k as usize) < c),
        (None, None) => true,
        _ => false,
    });
    report.push(
        plugin,
        "rows have the declared shape and labels (1,000 per split)",
        format!("{:?}", data.sample_shape()),
        format!(
            "{:?}, {}",
            data.sample_shape(),
            classes.map_or("no labels".into(), |c| format!("labels < {c}"))
        ),
        "exact",
        shape_ok && labels_ok,
        "a row's length or a label contradicts sample_shape() or classes()",
    );
    let bad = batches
        .iter()
        .flat_map(|b| b.values.iter())
        .filter(|v| !v.is_finite())
        .count();
    report.push(
        plugin,
        "finite",
        format!("{bad} non-finite"),
        "0 non-finite",
        "exact",
        bad == 0,
        "a row holds NaN or ±inf",
    );
}

/// Rows 0..1,000 drawn at once, in batches of 7, one by one, as two shards, and from a second
/// build: the same bits.
fn invariance(report: &mut Report, plugin: &str, data: &Data, again: &Data, whole: &Batch) {
    let check = "row i identical for batch sizes 1, 7, 1,000, across shards and reruns";
    let pieces = |size: usize, from: &Data| -> Result<Batch> {
        let mut out = Batch {
            shape: whole.shape.clone(),
            values: Vec::new(),
            labels: whole.labels.as_ref().map(|_| Vec::new()),
        };
        let mut first = 0;
        while first < ROWS {
            let n = size.min(ROWS - first);
            let b = from.batch(Split::Train, SEED, first as u64, n)?;
            out.values.extend(b.values);
            if let (Some(all), Some(l)) = (&mut out.labels, b.labels) {
                all.extend(l);
            }
            first += n;
        }
        Ok(out)
    };
    let got: Result<Vec<Batch>> = [(1, data), (7, data), (ROWS / 2, data), (ROWS, again)]
        .into_iter()
        .map(|(size, from)| pieces(size, from))
        .collect();
    match got {
        Ok(batches) => {
            let want = (bits(&whole.values), &whole.labels);
            let differ = batches
                .iter()
                .filter(|b| (bits(&b.values), &b.labels) != want)
                .count();
            report.push(
                plugin,
                check,
                format!("{differ} of 4 differ"),
                "0 differ",
                "bitwise",
                differ == 0,
                "a row depends on its batch, shard or build: key it by (seed, split, index) alone",
            );
        }
        Err(e) => report.error(plugin, check, e),
    }
}

/// A row's bits with its label, for set comparisons.
fn row_keys(b: &Batch) -> Vec<(Vec<u64>, Option<u32>)> {
    let d = b.values.len() / b.len().max(1);
    b.values
        .chunks(d.max(1))
        .enumerate()
        .map(|(i, r)| (bits(r), b.labels.as_ref().map(|l| l[i])))
        .collect()
}

fn splits(
    report: &mut Report,
    plugin: &str,
    data: &Data,
    again: &Data,
    train: &Batch,
    held: &Batch,
) {
    let check = "train and held-out disjoint and stable";
    match (data.stored(Split::Train), data.stored(Split::Heldout)) {
        (Some(tr), Some(he)) => {
            let total = tr.len() + he.len();
            let mut all: Vec<u64> = tr.iter().chain(he).copied().collect();
            all.sort_unstable();
            let partition = all.iter().copied().eq(0..total as u64);
            let stable =
                again.stored(Split::Train) == Some(tr) && again.stored(Split::Heldout) == Some(he);
            report.push(
                plugin,
                check,
                format!(
                    "{} train + {} held out of {total} stored",
                    tr.len(),
                    he.len()
                ),
                "a partition of the stored rows, the same on every build",
                "exact",
                partition && stable && !tr.is_empty(),
                "the splits overlap, miss a row, or change between builds",
            );
            epochs(report, plugin, data);
        }
        (None, None) => {
            let train_rows: std::collections::HashSet<_> = row_keys(train).into_iter().collect();
            let shared = row_keys(held)
                .iter()
                .filter(|r| train_rows.contains(*r))
                .count();
            let stable = again
                .batch(Split::Heldout, SEED, 0, ROWS)
                .map(|b| bits(&b.values) == bits(&held.values));
            let other = data
                .batch(Split::Train, OTHER_SEED, 0, ROWS)
                .map(|b| bits(&b.values) != bits(&train.values));
            match (stable, other) {
                (Ok(stable), Ok(other)) => report.push(
                    plugin,
                    check,
                    format!("{shared} of 1,000 held-out rows among the train rows"),
                    "0, held-out rows the same on every build, another seed other rows",
                    "exact",
                    shared == 0 && stable && other,
                    "the splits share draws, or a build or seed does not fix the rows",
                ),
                (Err(e), _) | (_, Err(e)) => report.error(plugin, check, e),
            }
        }
        _ => report.error(plugin, check, "one split is stored and the other is not"),
    }
}

/// Each epoch of each split visits every stored row of the split exactly once, in an order
/// that depends on the seed (checked on splits of at most 20,000 rows).
fn epochs(report: &mut Report, plugin: &str, data: &Data) {
    let check = "each epoch visits each row of its split once (two seeds, two epochs)";
    let run = || -> Result<(usize, usize, bool)> {
        let (mut checked, mut wrong, mut reordered) = (0, 0, false);
        for split in Split::BOTH {
            let stored = data.stored(split).unwrap_or(&[]);
            let m = stored.len();
            if m == 0 || m > MOMENT_ROWS {
                continue;
            }
            let d = data.dim();
            let mut direct: HashMap<(Vec<u64>, Option<u32>), i64> = HashMap::new();
            let mut buf = vec![0.0; d];
            for &j in stored {
                let label = data.source().row(RowRef::Stored(j), &mut buf)?;
                *direct.entry((bits(&buf), label)).or_default() += 1;
            }
            let mut orders = Vec::new();
            for (seed, epoch) in [(SEED, 0u64), (SEED, 1), (OTHER_SEED, 0)] {
                let b = data.batch(split, seed, epoch * m as u64, m)?;
                let mut count = direct.clone();
                for key in row_keys(&b) {
                    *count.entry(key).or_default() -= 1;
                }
                wrong += count.values().filter(|c| **c != 0).count();
                orders.push(bits(&b.values));
                checked += 1;
            }
            reordered |= m > 2 && orders[0] != orders[1] && orders[0] != orders[2];
        }
        Ok((checked, wrong, reordered))
    };
    match run() {
        Ok((0, _, _)) => {}
        Ok((checked, wrong, reordered)) => report.push(
            plugin,
            check,
            format!("{wrong} rows miscounted in {checked} epochs"),
            "0, each epoch in its own order",
            "exact",
            wrong == 0 && reordered,
            "an epoch repeats or skips rows, or its order ignores the seed and epoch",
        ),
        Err(e) => report.error(plugin, check, e),
    }
}

fn range(report: &mut Report, plugin: &str, data: &Data, batches: &[&Batch]) {
    let Some((lo, hi)) = data.source().range() else {
        return;
    };
    let values = || batches.iter().flat_map(|b| b.values.iter().copied());
    let outside = values().filter(|v| !(lo..=hi).contains(v)).count();
    report.push(
        plugin,
        "values inside the declared range",
        format!("{outside} outside"),
        format!("all in [{lo}, {hi}]"),
        "exact",
        outside == 0,
        "a value lies outside range()",
    );
    if let Some(levels) = data.levels() {
        let tol = 1e-12 * (hi - lo);
        let off = values()
            .filter(|&v| (v - levels.value(levels.level(v))).abs() > tol)
            .count();
        report.push(
            plugin,
            "values on the declared levels",
            format!("{off} off the grid"),
            format!("{} levels on [{lo}, {hi}]", levels.levels),
            format!("≤ {tol:e}"),
            off == 0,
            "a value is not lo + (hi − lo) k/(L − 1)",
        );
    }
}

/// The mean and covariance of 20,000 train rows against the law's, entry by entry, in units of
/// the entry's standard error (`testing::moments_deviation`).
fn moments(report: &mut Report, plugin: &str, data: &Data) {
    let Some(law) = data.source().moments() else {
        return;
    };
    let check = "mean and covariance of 20,000 rows match the law's";
    let rows = match data.batch(Split::Train, SEED, 0, MOMENT_ROWS) {
        Ok(b) => b.values,
        Err(e) => return report.error(plugin, check, e),
    };
    let d = data.dim();
    if law.mean.len() != d || law.covariance.len() != d {
        return report.error(plugin, check, "moments() has the wrong dimension");
    }
    let (worst, at) = sdeflow_kernel::testing::moments_deviation(&rows, d, &law);
    report.push(
        plugin,
        check,
        format!("{} standard errors (worst: {at})", num(worst)),
        "0",
        format!("≤ {SE_BOUND}"),
        worst <= SE_BOUND,
        "the rows' law differs from moments()",
    );
}
