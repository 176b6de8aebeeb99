//! Sharding over any job runner: `sample --shard i/n` and `nll --shard i/n` draw a slice of
//! the run's rows, and `merge` joins the slices into the files of the unsharded run, byte for
//! byte. Every random draw is a pure function of (seed, sample, draw), and the model's chunks
//! are padded to a fixed size, so sample i's bytes do not depend on the shard it lands in.
//!
//! A shard writes into `<out>/shards/<job>-<i>-of-<n>/`, `<out>` being the run's output
//! directory (where its checkpoints are): its rows' files, then `shard.json` (a [`Manifest`])
//! last, so a shard folder without one is unfinished. `merge` finds the shards of each job in
//! `<out>/shards/`, checks that they are one run's — every index from 0 to n − 1 once, the same
//! config text, seed, device kind and weights, the rows the split gives each — and writes the
//! joined outputs into `<out>`.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
};

use candle_core::Device;
use sdeflow_kernel::{Config, Error, Result, io::write_atomic};
use serde::{Deserialize, Serialize};

/// The job name of `sample`'s shards.
pub const SAMPLE: &str = "sample";
/// The job name of `nll`'s shards.
pub const NLL: &str = "nll";
/// The folder under the output directory that holds the shards.
pub const SHARDS: &str = "shards";
/// A shard's manifest, written last.
pub const MANIFEST: &str = "shard.json";

/// Shard `index` of `count` (`--shard i/n`, 0 ≤ i < n: Slurm's `SLURM_ARRAY_TASK_ID`,
/// Kubernetes' `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// i.
    pub index: usize,
    /// n.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a shard: write i/n with 0 ≤ i < n, e.g. 0/8 … 7/8 for eight shards"
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The rows of `total` this shard draws: whole blocks of `align` rows (the model's chunk,
    /// so no shard pads more than the unsharded run), split as evenly as blocks allow.
    pub fn rows(self, total: usize, align: usize) -> Range<usize> {
        let align = align.max(1);
        let blocks = total.div_ceil(align) as u128;
        let at = |k: usize| {
            let block = (k as u128 * blocks / self.count as u128) as usize;
            block.saturating_mul(align).min(total)
        };
        at(self.index)..at(self.index + 1)
    }

    /// Where this shard of `job` writes, under the run's output directory `dir`.
    pub fn folder(self, dir: &Path, job: &str) -> PathBuf {
        dir.join(SHARDS)
            .join(format!("{job}-{}-of-{}", self.index, self.count))
    }
}

/// What a `sample` shard measured that its rows do not say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleShard {
    /// Batched model calls (the most of any piece).
    pub nfe: u64,
    /// An adaptive run's cost per sample.
    pub spread: Option<crate::sample::Spread>,
    /// The guidance scale sampled at.
    pub guidance: Option<f64>,
    /// How it was chosen (the same on every shard).
    pub search: Option<crate::sample::Search>,
    /// The times of `trajectory.npy`'s frames, when the shard wrote one.
    pub trajectory_times: Option<Vec<f64>>,
}

/// What an `nll` shard measured beyond its rows' files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NllShard {
    /// Batched model calls of its likelihood solve.
    pub nfe: u64,
    /// An adaptive solve's cost per row.
    pub spread: Option<crate::sample::Spread>,
    /// The variational bound's wall time, seconds.
    pub bound_seconds: Option<f64>,
}

/// A shard's `shard.json`: which run and rows it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `sample` or `nll`.
    pub job: String,
    /// Which shard.
    pub shard: Shard,
    /// Its rows: the first …
    pub first: usize,
    /// … and how many.
    pub rows: usize,
    /// The run's rows.
    pub total: usize,
    /// The config file, as named.
    pub config: String,
    /// The hash of its text (the seed is in it).
    pub config_hash: String,
    /// The seed.
    pub seed: u64,
    /// The device kind it ran on (`cpu`, `cuda`, `metal`): bytes agree only within one.
    pub device: String,
    /// A hash of the weights file sampled with, for a network.
    pub weights: Option<String>,
    /// The sdeflow version that wrote it.
    pub version: String,
    /// Its wall time, seconds.
    pub wall_seconds: f64,
    /// `sample`'s part.
    pub sample: Option<SampleShard>,
    /// `nll`'s part.
    pub nll: Option<NllShard>,
}

/// The device kind of `device`: `cpu`, `cuda` or `metal`.
fn device_kind(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu",
        candle_core::DeviceLocation::Cuda { .. } => "cuda",
        candle_core::DeviceLocation::Metal { .. } => "metal",
    }
    .into()
}

/// The hash of a weights file (the first 16 bytes of its SHA-256, in hex).
pub fn file_hash(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Manifest {
    /// The manifest of `shard` of `config`'s `job`, holding `rows` of `total`, run on `device`
    /// with the weights in `weights` (a network's checkpoint file).
    pub fn new(
        config: &Config,
        job: &str,
        shard: Shard,
        (rows, total): (Range<usize>, usize),
        device: &Device,
        weights: Option<&Path>,
    ) -> Result<Self> {
        Ok(Self {
            job: job.into(),
            shard,
            first: rows.start,
            rows: rows.len(),
            total,
            config: config.file.clone(),
            config_hash: config.hash.clone(),
            seed: config.seed,
            device: device_kind(device),
            weights: weights.map(file_hash).transpose()?,
            version: env!("CARGO_PKG_VERSION").into(),
            wall_seconds: 0.0,
            sample: None,
            nll: None,
        })
    }
}

/// Readies a shard's folder: created, writable, and without the manifest of an earlier
/// attempt (a shard is finished only once its new manifest is written).
pub fn begin(folder: &Path) -> Result<()> {
    sdeflow_kernel::io::ensure_writable_dir(folder)?;
    let manifest = folder.join(MANIFEST);
    match std::fs::remove_file(&manifest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: manifest,
            source,
        }),
    }
}

/// What a shard reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its manifest.
    pub manifest: Manifest,
    /// Files written.
    pub files: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "{} shard {}: rows {}–{} of {} ({} rows) in {:.2} s; `sdeflow merge {}` joins the shards once all {} are done",
            m.job,
            m.shard,
            m.first,
            m.first + m.rows,
            m.total,
            m.rows,
            m.wall_seconds,
            m.config,
            m.shard.count
        )?;
        if m.rows == 0 {
            writeln!(
                f,
                "(no rows: the run has fewer whole model chunks than shards; this shard only marks its place)"
            )?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        Ok(())
    }
}

/// Writes the shard's manifest, last: the shard is done.
pub fn finish(folder: &Path, manifest: &Manifest, mut files: Vec<String>) -> Result<Report> {
    let path = folder.join(MANIFEST);
    let text = serde_json::to_string_pretty(manifest).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&path, |tmp| {
        std::fs::write(tmp, &text).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })?;
    files.push(path.display().to_string());
    Ok(Report {
        manifest: manifest.clone(),
        files,
    })
}

/// The error for a shard that is not part of the run being merged.
pub fn mismatch(folder: &Path, why: String) -> Error {
    Error::file(
        folder,
        format!("is not a shard of this run: {why}; run it again, or remove it"),
    )
}

/// The folders of `job`'s shards (finished or not) in `root`, sorted.
fn folders(root: &Path, job: &str) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("{job}-");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    folders.sort();
    Ok(folders)
}

/// Whether `dir` holds shards of `job` (finished or not).
pub fn present(dir: &Path, job: &str) -> bool {
    folders(&dir.join(SHARDS), job).is_ok_and(|f| !f.is_empty())
}

/// The shards of `config`'s `job` under `dir/shards`, in index order, checked to be one run's:
/// every index of one split once, each finished, of the same config text (and seed), device
/// kind and `weights`, holding the rows [`Shard::rows`] gives it of `total` (`None`: the
/// first shard's) in blocks of `align`. Each problem is an error naming the folder and what to
/// do.
pub fn collect(
    config: &Config,
    dir: &Path,
    job: &str,
    total: Option<usize>,
    align: usize,
    device: &Device,
    weights: Option<&Path>,
) -> Result<Vec<(PathBuf, Manifest)>> {
    let root = dir.join(SHARDS);
    let run_again = |i: usize, n: usize| {
        format!(
            "`sdeflow {job} {} --shard {i}/{n}{}`",
            config.file,
            if dir == crate::sample::output_dir(config, None) {
                String::new()
            } else {
                format!(" --out {}", dir.display())
            }
        )
    };
    let folders = folders(&root, job).map_err(|source| Error::Io {
        path: root.clone(),
        source,
    })?;
    if folders.is_empty() {
        return Err(Error::invalid(
            "merge",
            "shards",
            format!(
                "{} holds no shards of `{job}`; draw them with {} for each i",
                root.display(),
                run_again(0, 4).replace("0/4", "i/n")
            ),
        ));
    }
    let weights = weights.map(file_hash).transpose()?;
    let mut shards: Vec<(PathBuf, Manifest)> = Vec::with_capacity(folders.len());
    for folder in folders {
        let path = folder.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::file(
                    &folder,
                    "is an unfinished shard (it has no shard.json): wait for it, or run it again",
                ));
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("is not a shard manifest: {e}")))?;
        if m.job != job {
            return Err(mismatch(&folder, format!("a `{}` shard", m.job)));
        }
        if m.seed != config.seed {
            return Err(mismatch(
                &folder,
                format!(
                    "drawn with seed {}, and {} says {}",
                    m.seed, config.file, config.seed
                ),
            ));
        }
        if m.config_hash != config.hash {
            return Err(mismatch(
                &folder,
                format!(
                    "drawn from another config ({}, text hash {}; {} hashes to {})",
                    m.config, m.config_hash, config.file, config.hash
                ),
            ));
        }
        if m.device != device_kind(device) {
            return Err(mismatch(
                &folder,
                format!(
                    "drawn on {}, the merge runs on {} (bytes agree only on one kind of device; pass --device)",
                    m.device,
                    device_kind(device)
                ),
            ));
        }
        if m.weights != weights {
            return Err(mismatch(
                &folder,
                "drawn with other weights than the checkpoint the merge reads (the network was trained on since)".into(),
            ));
        }
        if let Some((other, o)) = shards.iter().find(|(_, o)| o.shard.count != m.shard.count) {
            return Err(Error::invalid(
                "merge",
                "shards",
                format!(
                    "{} holds shards of two splits: {} is one of {}, {} one of {}; remove the stale split's folders",
                    root.display(),
                    other.display(),
                    o.shard.count,
                    folder.display(),
                    m.shard.count
                ),
            ));
        }
        if let Some((other, _)) = shards.iter().find(|(_, o)| o.shard.index == m.shard.index) {
            return Err(Error::file(
                &folder,
                format!(
                    "duplicates shard {}, which {} holds already; remove one",
                    m.shard,
                    other.display()
                ),
            ));
        }
        let total = total.unwrap_or_else(|| shards.first().map_or(m.total, |(_, f)| f.total));
        let want = m.shard.rows(total, align);
        if m.total != total || m.first != want.start || m.rows != want.len() {
            return Err(mismatch(
                &folder,
                format!(
                    "it holds rows {}–{} of {}, and shard {} of this run is rows {}–{} of {total}",
                    m.first,
                    m.first + m.rows,
                    m.total,
                    m.shard,
                    want.start,
                    want.end
                ),
            ));
        }
        shards.push((folder, m));
    }
    let count = shards[0].1.shard.count;
    let missing: Vec<usize> = (0..count)
        .filter(|i| !shards.iter().any(|(_, m)| m.shard.index == *i))
        .collect();
    if let Some(&first) = missing.first() {
        let list: Vec<String> = missing.iter().take(16).map(ToString::to_string).collect();
        return Err(Error::invalid(
            "merge",
            "shards",
            format!(
                "{} lacks {} of the {count} shards of `{job}` (shard {}{}); draw them, e.g. {}",
                root.display(),
                missing.len(),
                list.join(", "),
                if missing.len() > 16 { ", …" } else { "" },
                run_again(first, count)
            ),
        ));
    }
    shards.sort_by_key(|(_, m)| m.shard.index);
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_rows_into_aligned_blocks() {
        assert_eq!("3/8".parse::<Shard>(), Ok(Shard { index: 3, count: 8 }));
        for bad in ["8/8", "1/0", "a/2", "3", "-1/2", ""] {
            let e = bad.parse::<Shard>().expect_err(bad);
            assert!(e.contains("0 ≤ i < n"), "{e}");
        }
        // Every row once, in order, blocks of 1024 whole.
        for (total, count, align) in [(10_000, 3, 1024), (5, 4, 1024), (7, 7, 1), (0, 2, 8)] {
            let mut next = 0;
            for index in 0..count {
                let r = Shard { index, count }.rows(total, align);
                assert_eq!(r.start, next, "{total} {count} {align}");
                assert!(r.start.is_multiple_of(align) || r.start == total);
                next = r.end;
            }
            assert_eq!(next, total);
        }
        let sizes: Vec<usize> = (0..3)
            .map(|index| Shard { index, count: 3 }.rows(10_000, 1024).len())
            .collect();
        assert_eq!(sizes, vec![3072, 3072, 3856]);
    }
}
