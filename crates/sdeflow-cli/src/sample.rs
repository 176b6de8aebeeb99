//! `sample`: run the pipeline, write samples as `.npy`, a PNG of 2-D samples beside exact
//! data, and a JSON summary with the metrics against the exact law when the model knows it.

use std::{fmt, path::PathBuf, sync::Arc, time::Instant};

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use sdeflow_conformance::sw2::{REFERENCE_SEED, reference_and_floor};
use sdeflow_kernel::{
    Config, Error, Result, Split, TimeCoefs,
    io::{NpyRows, write_atomic},
    pipeline::Progress,
};
use serde::{Deserialize, Serialize};

/// Metrics against the exact law at t_ε.
#[derive(Debug, Clone, Serialize)]
pub struct ExactMetrics {
    /// ‖sample mean − exact mean‖.
    pub mean_error: f64,
    /// ‖sample covariance − exact covariance‖_F.
    pub covariance_error: f64,
    /// Sliced W2 against a reference set of exact samples of the same size.
    pub sliced_w2: f64,
    /// Mean SW2 of 20 independent exact sets against the same reference.
    pub sliced_w2_floor_mean: f64,
    /// Their standard deviation.
    pub sliced_w2_floor_sd: f64,
    /// Whether SW2 ≤ floor mean + 3 sd.
    pub within_floor: bool,
    /// Each mixture component's share of the samples (most probable component per sample).
    pub mode_shares: Vec<f64>,
    /// The components' weights.
    pub mode_weights: Vec<f64>,
    /// max_k |share_k / weight_k − 1|.
    pub worst_mode_deviation: f64,
}

/// Metrics against held-out data, for 2-D data without an exact law.
#[derive(Debug, Clone, Serialize)]
pub struct HeldoutMetrics {
    /// Sliced W2 against as many held-out rows as samples.
    pub sliced_w2: f64,
    /// Mean SW2 of 20 sets of training rows against the same held-out rows.
    pub sliced_w2_floor_mean: f64,
    /// Their standard deviation.
    pub sliced_w2_floor_sd: f64,
}

/// What `sample` reports and writes as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The config file.
    pub config: String,
    /// Plugin names.
    pub sde: String,
    /// Parameterization.
    pub param: String,
    /// Model.
    pub model: String,
    /// Solver.
    pub solver: String,
    /// Grid (`adaptive` for a solver that chooses each sample's steps).
    pub grid: String,
    /// Steps (an adaptive solver's: the most any sample took).
    pub steps: usize,
    /// The steps in words: "100 steps, uniform grid", or "adaptive, rtol …, atol …".
    pub schedule: String,
    /// Model evaluations (batched calls; on a grid, every sample's).
    pub nfe: u64,
    /// An adaptive run's NFE per sample: mean, min and max.
    pub nfe_per_sample: Option<(f64, u64, u64)>,
    /// Samples drawn (every one is in `samples.npy`).
    pub samples: usize,
    /// Samples holding NaN or infinities (only with `outputs: (keep_non_finite: true)`;
    /// otherwise the run stops at the step that makes one).
    pub non_finite_samples: usize,
    /// The first rows that the sliced W2, the mode shares, the image metrics and the plots
    /// read (all of them up to 20,000; the mean and covariance errors read every row).
    pub metric_rows: usize,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Sampling wall time in seconds.
    pub wall_seconds: f64,
    /// Samples per second.
    pub samples_per_second: f64,
    /// The shards (`--shard i/n`) the run was merged from (`sdeflow merge`); its wall time is
    /// the longest shard's.
    pub shards: Option<usize>,
    /// The trained weights sampled with, for a network.
    pub checkpoint: Option<String>,
    /// Against the exact law: the oracle's, or the data's.
    pub exact: Option<ExactMetrics>,
    /// For 2-D data without an exact law: against its held-out rows.
    pub heldout: Option<HeldoutMetrics>,
    /// The guidance scale w of a conditional model's samples.
    pub guidance: Option<f64>,
    /// The classes drawn, in turn (empty: unconditional).
    pub classes: Vec<u32>,
    /// For images of stored, labelled data: quality without a pretrained network.
    pub images: Option<ImageMetrics>,
    /// Files written.
    pub files: Vec<String>,
}

/// One candidate guidance scale, scored on the selection seed's samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuidanceTrial {
    /// w.
    pub scale: f64,
    /// Mean over classes of the pixel sliced W2 between the samples of a class and as many
    /// training images of it (the criterion: lowest wins).
    pub class_sliced_w2: f64,
    /// The k-NN accuracy of the same samples.
    pub accuracy: f64,
}

/// Image samples against the real images.
#[derive(Debug, Clone, Serialize)]
pub struct ImageMetrics {
    /// k of the k-NN classifier (on the training images).
    pub knn: usize,
    /// The classifier's accuracy on the samples (labelled with the class they were drawn for).
    pub accuracy: Option<crate::images::Accuracy>,
    /// The same for samples of the same seed and classes at w = 0 (when w ≠ 0).
    pub accuracy_unguided: Option<crate::images::Accuracy>,
    /// Mean distance from a sample to its nearest training image.
    pub nearest_train_distance: f64,
    /// Mean distance from a held-out image to its nearest training image (samples much
    /// closer than this are memorised).
    pub heldout_nearest_train_distance: f64,
    /// Pixel sliced W2 between the first `sliced_w2_rows` samples and as many held-out images.
    pub sliced_w2: f64,
    /// Mean SW2 of 20 sets of training images against the same held-out images (the floor).
    pub sliced_w2_floor_mean: f64,
    /// Their standard deviation.
    pub sliced_w2_floor_sd: f64,
    /// Rows in each SW2 set.
    pub sliced_w2_rows: usize,
    /// How the scale was chosen, when it was searched.
    pub search: Option<Search>,
}

/// A guidance-scale search: the candidates on the seed after the config's, and the floor of
/// the criterion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Search {
    /// The candidates, in the config's order.
    pub trials: Vec<GuidanceTrial>,
    /// The seed of their samples.
    pub seed: u64,
    /// Images per class in each sliced W2 set.
    pub rows_per_class: usize,
    /// The class-conditional sliced W2 between disjoint sets of real images: mean …
    pub floor_mean: f64,
    /// … and standard deviation (a candidate within mean + 3 sd is as close as real images).
    pub floor_sd: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.checkpoint {
            writeln!(f, "weights from {c}")?;
        }
        if let Some(k) = self.shards {
            writeln!(
                f,
                "merged from {k} shards (the time is the longest shard's)"
            )?;
        }
        writeln!(
            f,
            "sampled {} × {} with {} on {} ({}, {} NFE{}) in {:.2} s ({:.0} samples/s)",
            self.samples,
            self.model,
            self.solver,
            self.sde,
            self.schedule,
            self.nfe,
            self.nfe_per_sample
                .map_or(String::new(), |(mean, lo, hi)| format!(
                    "; per sample mean {mean:.1}, {lo}…{hi}"
                )),
            self.wall_seconds,
            self.samples_per_second
        )?;
        if let Some(m) = &self.exact {
            writeln!(
                f,
                "mean error {:.4e}, covariance error {:.4e}",
                m.mean_error, m.covariance_error
            )?;
            writeln!(
                f,
                "sliced W2 {:.4}{} (exact-sample floor {:.4} ± {:.4}; threshold {:.4}): {}",
                m.sliced_w2,
                self.first_rows(),
                m.sliced_w2_floor_mean,
                m.sliced_w2_floor_sd,
                m.sliced_w2_floor_mean + 3.0 * m.sliced_w2_floor_sd,
                if m.within_floor {
                    "within the floor"
                } else {
                    "ABOVE the floor"
                }
            )?;
            writeln!(
                f,
                "mode shares within {:.1}% of their weights ({} modes)",
                100.0 * m.worst_mode_deviation,
                m.mode_weights.len()
            )?;
        }
        if let Some(m) = &self.heldout {
            writeln!(
                f,
                "sliced W2 against held-out data {:.4}{} (training-data floor {:.4} ± {:.4}, {:.2}× its mean)",
                m.sliced_w2,
                self.first_rows(),
                m.sliced_w2_floor_mean,
                m.sliced_w2_floor_sd,
                m.sliced_w2 / m.sliced_w2_floor_mean
            )?;
        }
        if let Some(m) = &self.images {
            if let Some(search) = &m.search {
                let tried: Vec<String> = search
                    .trials
                    .iter()
                    .map(|t| {
                        format!(
                            "{} ({:.3}, {:.1}%)",
                            t.scale,
                            t.class_sliced_w2,
                            100.0 * t.accuracy
                        )
                    })
                    .collect();
                writeln!(
                    f,
                    "guidance scale {} chosen on seed {}'s samples: the best {}-NN accuracy with class-conditional pixel sliced W2 within the floor of real images ({:.3} ± {:.3}, {} per class) or 3 sd of the lowest: {}",
                    self.guidance.unwrap_or(0.0),
                    search.seed,
                    m.knn,
                    search.floor_mean,
                    search.floor_sd,
                    search.rows_per_class,
                    tried.join(", ")
                )?;
            }
            if let Some(a) = &m.accuracy {
                let worst = a
                    .per_class
                    .iter()
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .map_or(String::new(), |(c, v, _)| {
                        format!("; worst class {c} {:.1}%", 100.0 * v)
                    });
                writeln!(
                    f,
                    "{}-NN accuracy of samples for their class {:.1}% at w = {}{worst}{}",
                    m.knn,
                    100.0 * a.overall,
                    self.guidance.unwrap_or(0.0),
                    m.accuracy_unguided
                        .as_ref()
                        .map_or(String::new(), |u| format!(
                            "; unguided (w = 0) {:.1}%",
                            100.0 * u.overall
                        ))
                )?;
            }
            writeln!(
                f,
                "nearest training image: {:.3} from a sample, {:.3} from a held-out image (mean; {:.2}×)",
                m.nearest_train_distance,
                m.heldout_nearest_train_distance,
                m.nearest_train_distance / m.heldout_nearest_train_distance
            )?;
            writeln!(
                f,
                "pixel sliced W2 against {} held-out images {:.4} (floor: training images {:.4} ± {:.4}, {:.2}× its mean)",
                m.sliced_w2_rows,
                m.sliced_w2,
                m.sliced_w2_floor_mean,
                m.sliced_w2_floor_sd,
                m.sliced_w2 / m.sliced_w2_floor_mean
            )?;
        }
        if self.non_finite_samples > 0 {
            writeln!(
                f,
                "{} samples hold NaN or infinities (kept, as `keep_non_finite` asks; the mean and covariance leave them out)",
                self.non_finite_samples
            )?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        Ok(())
    }
}

impl Summary {
    /// " of the first N samples" when the metrics read fewer rows than were drawn.
    fn first_rows(&self) -> String {
        if self.metric_rows < self.samples {
            format!(" of the first {} samples", self.metric_rows)
        } else {
            String::new()
        }
    }
}

/// The device's command-line name.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The output directory: `--out`, else the config's, else `out/<config stem>`.
pub fn output_dir(config: &Config, cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| config.outputs.dir.clone())
        .unwrap_or_else(|| {
            let stem = std::path::Path::new(&config.file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            PathBuf::from("out").join(stem.unwrap_or_else(|| "default".into()))
        })
}

/// The image metrics' row cap: about 64 MiB of f64 rows.
const METRIC_BYTES: usize = 64 << 20;

/// What the pieces of a run add up to: the first rows (for metrics and plots), the moments of
/// all rows, the cost, and the steps of a run of one piece (its trajectory: the times and the
/// states, the first the start).
struct Drawn {
    d: usize,
    cap: usize,
    kept: Vec<f64>,
    count: usize,
    non_finite: usize,
    sum: Vec<f64>,
    outer: Vec<f64>,
    nfe: u64,
    spread: Option<Spread>,
    trajectory: Option<(Vec<f64>, Vec<Tensor>)>,
}

/// An adaptive run's cost per sample, summed up so that shards join exactly: the NFE's sum,
/// least and most, the most accepted steps, over `rows` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    /// Samples.
    pub rows: u64,
    /// Their NFE, summed.
    pub sum: u64,
    /// The least NFE of a sample.
    pub min: u64,
    /// The most.
    pub max: u64,
    /// The most steps a sample took.
    pub accepted_max: u64,
}

impl Spread {
    /// The spread of an adaptive run's rows.
    pub fn of(r: &sdeflow_kernel::RowStats) -> Self {
        let (_, min, max) = r.nfe_spread();
        Self {
            rows: r.nfe.len() as u64,
            sum: r.nfe.iter().sum(),
            min,
            max,
            accepted_max: r.accepted.iter().copied().max().map_or(0, u64::from),
        }
    }

    /// Two parts' spread (`None`: a grid run's).
    pub fn join(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) if a.rows > 0 && b.rows > 0 => Some(Self {
                rows: a.rows + b.rows,
                sum: a.sum + b.sum,
                min: a.min.min(b.min),
                max: a.max.max(b.max),
                accepted_max: a.accepted_max.max(b.accepted_max),
            }),
            (Some(a), Some(b)) => Some(if a.rows > 0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Mean, least and most NFE per sample ([`RowStats::nfe_spread`](sdeflow_kernel::RowStats::nfe_spread)).
    pub fn nfe_spread(&self) -> (f64, u64, u64) {
        (
            self.sum as f64 / self.rows.max(1) as f64,
            self.min,
            self.max,
        )
    }
}

impl Drawn {
    fn new(n: usize, d: usize) -> Self {
        let d = d.max(1);
        Self {
            d,
            cap: n
                .min(sdeflow_kernel::config::METRIC_ROWS)
                .min((METRIC_BYTES / (8 * d)).max(2)),
            kept: Vec::new(),
            count: 0,
            non_finite: 0,
            sum: vec![0.0; d],
            outer: vec![0.0; d * d],
            nfe: 0,
            spread: None,
            trajectory: None,
        }
    }

    /// Adds the next samples `x` (on the CPU).
    fn add_rows(&mut self, x: &Tensor) -> Result<()> {
        let host = sdeflow_kernel::ops::host_f64(x)?;
        let d = self.d;
        for row in host.chunks(d) {
            if row.iter().any(|v| !v.is_finite()) {
                // Kept (the user asked), but left out of the moments.
                self.non_finite += 1;
                continue;
            }
            self.count += 1;
            for a in 0..d {
                self.sum[a] += row[a];
                for b in a..d {
                    self.outer[a * d + b] += row[a] * row[b];
                }
            }
        }
        let room = (self.cap * d).saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&host[..room.min(host.len())]);
        Ok(())
    }

    /// The mean and (unbiased) covariance of every row.
    fn moments(&self) -> (Vec<f64>, Vec<Vec<f64>>) {
        let (d, n) = (self.d, self.count as f64);
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let cov = (0..d)
            .map(|a| {
                (0..d)
                    .map(|b| {
                        let (i, j) = (a.min(b), a.max(b));
                        (self.outer[i * d + j] - n * mean[i] * mean[j]) / (n - 1.0)
                    })
                    .collect()
            })
            .collect();
        (mean, cov)
    }
}

/// The time whose exact law the samples follow: t_ε, or t = 0 after the final denoising step.
pub fn target_coefs(pipeline: &sdeflow_kernel::Pipeline) -> TimeCoefs {
    let sde = pipeline.sde();
    if pipeline.denoises_final() {
        TimeCoefs {
            t: 0.0,
            alpha: 1.0,
            sigma: 0.0,
            ..sde.coefs(sde.t_eps())
        }
    } else {
        sde.coefs(sde.t_eps())
    }
}

/// The states at T a run starts from, from `latents` (`[samples, ...]`), checked against the
/// run.
fn latent_rows(
    config: &Config,
    pipeline: &sdeflow_kernel::Pipeline,
    path: &std::path::Path,
) -> Result<Tensor> {
    let bad = |why: String| Error::invalid("latents", path.display().to_string(), why);
    sdeflow_kernel::io::check_npy(path)?;
    let x = Tensor::read_npy(path).map_err(|e| bad(format!("cannot read a .npy array: {e}")))?;
    let shape = pipeline.model().sample_shape();
    let mut want = vec![config.samples];
    want.extend(&shape);
    if x.dims() != want.as_slice() {
        return Err(bad(format!(
            "has shape {:?}, but the run draws {} samples of shape {shape:?}: {want:?}; set `samples: {}` to decode every row",
            x.dims(),
            config.samples,
            x.dims().first().copied().unwrap_or(0)
        )));
    }
    if !sdeflow_kernel::ops::all_finite(&x)? {
        return Err(bad("holds values that are not finite".into()));
    }
    Ok(x)
}

/// Runs the config's sampling job on `device` and writes its outputs; a network samples with
/// the weights of its checkpoint ([`crate::train::load_for_sampling`]).
pub fn sample(config: &Config, device: Device, out: Option<PathBuf>) -> Result<Summary> {
    sample_in_pieces(config, device, out, config.sample_piece_rows())
}

/// [`sample`], drawing and writing `piece` rows at a time (a multiple of the config's
/// `chunk_rows` keeps every byte that of one run; [`Config::sample_piece_rows`] is one).
pub fn sample_in_pieces(
    config: &Config,
    device: Device,
    out: Option<PathBuf>,
    piece: usize,
) -> Result<Summary> {
    let dir = output_dir(config, out);
    sdeflow_kernel::io::ensure_writable_dir(&dir)?;
    let run = Run::prepare(config, device, &dir, None)?;
    let start = Instant::now();
    let n = config.samples;
    let drawn = run.draw(config, 0..n, piece.max(1), n <= piece.max(1), &dir)?;
    let wall = start.elapsed().as_secs_f64();
    let files = if config.outputs.npy {
        vec![dir.join("samples.npy").display().to_string()]
    } else {
        Vec::new()
    };
    run.finish(config, drawn, &dir, (wall, None), files)
}

/// One shard of [`sample`] (`--shard i/n`): the rows [`Shard::rows`](crate::shard::Shard::rows)
/// gives it, drawn as the unsharded run draws them (sample i's bytes never depend on the shard
/// it lands in), into `<out>/shards/sample-i-of-n/`: `samples.npy`, `trajectory.npy` when the
/// run keeps one, and `shard.json` last. `sdeflow merge` joins the shards.
pub fn sample_shard(
    config: &Config,
    device: Device,
    out: Option<PathBuf>,
    shard: crate::shard::Shard,
) -> Result<crate::shard::Report> {
    let dir = output_dir(config, out);
    let folder = shard.folder(&dir, crate::shard::SAMPLE);
    crate::shard::begin(&folder)?;
    let run = Run::prepare(config, device.clone(), &dir, None)?;
    let n = config.samples;
    let piece = config.sample_piece_rows();
    let rows = shard.rows(n, config.chunk_rows.unwrap_or(1));
    let start = Instant::now();
    let drawn = run.draw(config, rows.clone(), piece, n <= piece, &folder)?;
    let wall = start.elapsed().as_secs_f64();
    let mut files = vec![folder.join("samples.npy").display().to_string()];
    let trajectory_times = match &drawn.trajectory {
        Some((times, frames)) if config.outputs.trajectory => {
            let path = folder.join("trajectory.npy");
            let stacked = Tensor::stack(frames, 0)?;
            write_atomic(&path, |tmp| Ok(stacked.write_npy(tmp)?))?;
            files.push(path.display().to_string());
            Some(times.clone())
        }
        _ => None,
    };
    let mut manifest = crate::shard::Manifest::new(
        config,
        crate::shard::SAMPLE,
        shard,
        (rows, n),
        &device,
        run.checkpoint.as_deref(),
    )?;
    manifest.wall_seconds = wall;
    manifest.sample = Some(crate::shard::SampleShard {
        nfe: drawn.nfe,
        spread: drawn.spread,
        guidance: run.scale,
        search: run.trials.clone(),
        trajectory_times,
    });
    crate::shard::finish(&folder, &manifest, files)
}

/// Joins the shards of `sample` in `dir` (checked: [`crate::shard::collect`]) into the
/// outputs of the unsharded run: `samples.npy` byte for byte, `trajectory.npy`, and the
/// summary, its metrics computed from the joined rows as the unsharded run computes them.
pub fn merge(config: &Config, device: Device, dir: &std::path::Path) -> Result<Summary> {
    let run_weights = crate::train::load_for_sampling(config, dir)?;
    let shards = crate::shard::collect(
        config,
        dir,
        crate::shard::SAMPLE,
        Some(config.samples),
        config.chunk_rows.unwrap_or(1),
        &device,
        run_weights.as_deref(),
    )?;
    let first = shards[0]
        .1
        .sample
        .clone()
        .ok_or_else(|| Error::file(&shards[0].0, "is not a `sample` shard's manifest"))?;
    for (folder, m) in &shards[1..] {
        let s = m
            .sample
            .as_ref()
            .ok_or_else(|| Error::file(folder, "is not a `sample` shard's manifest"))?;
        if s.guidance.map(f64::to_bits) != first.guidance.map(f64::to_bits) {
            return Err(crate::shard::mismatch(
                folder,
                format!(
                    "sampled at guidance scale {:?}, the first shard at {:?}",
                    s.guidance, first.guidance
                ),
            ));
        }
    }
    let run = Run::prepare(
        config,
        device,
        dir,
        Some((first.guidance, first.search.clone())),
    )?;
    let n = config.samples;
    let shape = run.pipeline.model().sample_shape();
    let mut drawn = Drawn::new(n, shape.iter().product());
    let wall = shards
        .iter()
        .map(|(_, m)| m.wall_seconds)
        .fold(0.0, f64::max);
    let mut files = Vec::new();
    let mut join = |sink: &mut dyn FnMut(&Tensor) -> Result<()>| -> Result<()> {
        for (folder, m) in &shards {
            let path = folder.join("samples.npy");
            let mut reader = sdeflow_kernel::io::NpyReader::open(&path)?;
            let mut want = vec![m.rows];
            want.extend(&shape);
            if reader.shape() != want.as_slice() || reader.dtype() != run.pipeline.dtype() {
                return Err(crate::shard::mismatch(
                    folder,
                    format!(
                        "its samples.npy holds {:?} {:?}, not the {want:?} {:?} of its rows",
                        reader.shape(),
                        reader.dtype(),
                        run.pipeline.dtype()
                    ),
                ));
            }
            let per_piece = config.sample_piece_rows();
            let mut left = m.rows;
            while left > 0 {
                let x = reader.read_rows(per_piece.min(left))?;
                left -= x.dim(0)?;
                sink(&x)?;
                drawn.add_rows(&x)?;
            }
            let s = m.sample.as_ref().expect("checked above");
            drawn.nfe = drawn.nfe.max(s.nfe);
            drawn.spread = Spread::join(drawn.spread, s.spread);
        }
        Ok(())
    };
    if config.outputs.npy {
        let path = dir.join("samples.npy");
        let mut full = vec![n];
        full.extend(&shape);
        write_atomic(&path, |tmp| {
            let mut file = NpyRows::create(tmp, &full, run.pipeline.dtype())?;
            join(&mut |x| file.push(x))?;
            file.finish()
        })?;
        files.push(path.display().to_string());
    } else {
        join(&mut |_| Ok(()))?;
    }
    // The trajectory of a run drawn in one piece: every shard's frames, side by side.
    if n <= config.sample_piece_rows() && config.outputs.trajectory {
        let mut times = None;
        let mut parts = Vec::new();
        for (folder, m) in &shards {
            let s = m.sample.as_ref().expect("checked above");
            let Some(t) = &s.trajectory_times else {
                parts.clear();
                break;
            };
            if times.get_or_insert_with(|| t.clone()) != t {
                return Err(crate::shard::mismatch(
                    folder,
                    "its trajectory has other times".into(),
                ));
            }
            let path = folder.join("trajectory.npy");
            sdeflow_kernel::io::check_npy(&path)?;
            parts.push(Tensor::read_npy(&path).map_err(|e| Error::file(&path, e.to_string()))?);
        }
        if let (Some(times), false) = (times, parts.is_empty()) {
            let all = Tensor::cat(&parts, 1)?;
            let frames = (0..all.dim(0)?)
                .map(|f| all.get(f))
                .collect::<candle_core::Result<Vec<_>>>()?;
            drawn.trajectory = Some((times, frames));
        }
    }
    run.finish(config, drawn, dir, (wall, Some(shards.len())), files)
}

/// A prepared sampling run: the pipeline with its weights and guidance scale, and what its
/// metrics compare with.
struct Run {
    pipeline: sdeflow_kernel::Pipeline,
    device: Device,
    spec: Option<sdeflow_kernel::config::GuidanceSpec>,
    classes: Option<usize>,
    reference: Option<crate::images::Reference>,
    scale: Option<f64>,
    trials: Option<Search>,
    schedule_text: String,
    latents: Option<Tensor>,
    checkpoint: Option<PathBuf>,
    bar: ProgressBar,
}

impl Run {
    /// Loads the weights (from `dir`'s checkpoints, or the config's), chooses the guidance
    /// scale (or takes `chosen`: a merge takes its shards') and builds the pipeline.
    fn prepare(
        config: &Config,
        device: Device,
        dir: &std::path::Path,
        chosen: Option<(Option<f64>, Option<Search>)>,
    ) -> Result<Self> {
        let checkpoint = crate::train::load_for_sampling(config, dir)?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} sampling [{bar:40}] {pos}/{len} steps {elapsed_precise} (eta {eta})",
            )
            .map_err(|e| Error::Msg(e.to_string()))?
            .progress_chars("=> "),
        );
        let progress = {
            let bar = bar.clone();
            Progress(Arc::new(move |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }))
        };
        let spec = config
            .guidance_spec()
            .filter(|g| g.classes != sdeflow_kernel::config::Classes::None);
        let classes = config.model.plugin.classes();
        let reference = image_reference(config)?;
        let (scale, trials) = match chosen {
            Some(c) => c,
            None => choose_scale(config, &device, spec.as_ref(), reference.as_ref())?,
        };
        let pipeline = config
            .builder(device.clone())
            .guidance(scale)
            .progress(progress)
            .build()?;
        let schedule = pipeline.discretization();
        let adaptive = pipeline.solver().adaptive();
        let schedule_text = match adaptive {
            Some(a) => a.to_string(),
            None => format!("{} steps, {} grid", schedule.steps, schedule.grid),
        };
        if adaptive.is_some() {
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} sampling {prefix}[{bar:40}] {pos}/{len} samples done {elapsed_precise}",
                )
                .map_err(|e| Error::Msg(e.to_string()))?
                .progress_chars("=> "),
            );
        }
        let latents = match &config.latents {
            Some(path) => Some(latent_rows(config, &pipeline, path)?),
            None => None,
        };
        Ok(Self {
            pipeline,
            device,
            spec,
            classes,
            reference,
            scale,
            trials,
            schedule_text,
            latents,
            checkpoint,
            bar,
        })
    }

    /// Draws the samples `rows` of the run, `piece` rows at a time (each a multiple of the
    /// model's chunks, so the bytes are those of one run), streaming them to
    /// `folder/samples.npy` when the config writes it or the run is a shard: memory does not
    /// grow with `samples`. `trajectory`: keep the steps (a run of one piece).
    fn draw(
        &self,
        config: &Config,
        rows: std::ops::Range<usize>,
        piece: usize,
        trajectory: bool,
        folder: &std::path::Path,
    ) -> Result<Drawn> {
        let (n, count) = (config.samples, rows.len());
        let shape = self.pipeline.model().sample_shape();
        let mut drawn = Drawn::new(count, shape.iter().product());
        let mut draw = |sink: &mut dyn FnMut(&Tensor) -> Result<()>| -> Result<()> {
            let pieces = count.div_ceil(piece);
            for p in 0..pieces {
                let (offset, len) = (rows.start + p * piece, piece.min(count - p * piece));
                if pieces > 1 || count < n {
                    self.bar
                        .set_prefix(format!("rows {}–{} of {n} ", offset + 1, offset + len));
                }
                let mut state = match &self.latents {
                    None => self.pipeline.prior_state(offset as u64, len)?,
                    Some(x) => self
                        .pipeline
                        .start_state(x.narrow(0, offset, len)?, offset as u64)?,
                };
                if let (Some(g), Some(k)) = (&self.spec, self.classes) {
                    state = state.with_cond(g.labels(offset as u64, len, k, &self.device)?)?;
                }
                let x_start = (trajectory && pieces == 1).then(|| state.x.clone());
                let result = self.pipeline.run(state)?;
                let x = result.state.x.to_device(&Device::Cpu)?;
                sink(&x)?;
                drawn.add_rows(&x)?;
                drawn.nfe = drawn.nfe.max(result.nfe);
                drawn.spread = Spread::join(drawn.spread, result.rows.as_ref().map(Spread::of));
                if let Some(x_start) = x_start {
                    let mut times = vec![self.pipeline.times()[0]];
                    let mut frames = vec![x_start.to_device(&Device::Cpu)?];
                    for (t, x) in &result.trajectory {
                        times.push(*t);
                        frames.push(x.to_device(&Device::Cpu)?);
                    }
                    drawn.trajectory = Some((times, frames));
                }
            }
            Ok(())
        };
        if config.outputs.npy || count < n {
            let path = folder.join("samples.npy");
            let mut full = vec![count];
            full.extend(&shape);
            write_atomic(&path, |tmp| {
                let mut file = NpyRows::create(tmp, &full, self.pipeline.dtype())?;
                draw(&mut |x| file.push(x))?;
                file.finish()
            })?;
        } else {
            draw(&mut |_| Ok(()))?;
        }
        self.bar.finish_and_clear();
        Ok(drawn)
    }

    /// The metrics, plots and summary of the run's samples `drawn` (all `samples` of the
    /// config), written to `dir`; `wall`: the sampling time, and the shards it was merged from.
    fn finish(
        self,
        config: &Config,
        mut drawn: Drawn,
        dir: &std::path::Path,
        (wall, shards): (f64, Option<usize>),
        mut files: Vec<String>,
    ) -> Result<Summary> {
        let Self {
            pipeline,
            device,
            spec,
            classes,
            reference,
            scale,
            trials,
            schedule_text,
            checkpoint,
            ..
        } = self;
        let n = config.samples;
        let schedule = pipeline.discretization();
        let adaptive = pipeline.solver().adaptive();
        let shape = pipeline.model().sample_shape();
        let d = drawn.d;
        let image = shape.len() >= 2;
        // Metrics and plots read the first rows (all of them up to METRIC_ROWS).
        let host = std::mem::take(&mut drawn.kept);
        let kept = host.len() / d.max(1);
        let wanted: Option<Vec<u32>> = match (&spec, classes) {
            (Some(g), Some(k)) => Some((0..kept as u64).map(|i| g.label(i, k)).collect()),
            _ => None,
        };
        let display_range = config
            .data
            .as_ref()
            .and_then(|data| data.plugin.source().range())
            .unwrap_or((-1.0, 1.0));
        let (result_nfe, spread) = (drawn.nfe, drawn.spread);

        if config.outputs.trajectory
            && let Some((times, frames)) = &drawn.trajectory
        {
            let stacked = Tensor::stack(frames, 0)?;
            let path = dir.join("trajectory.npy");
            write_atomic(&path, |tmp| Ok(stacked.write_npy(tmp)?))?;
            files.push(path.display().to_string());
            if d == 2 {
                let host_frames = frames
                    .iter()
                    .map(sdeflow_kernel::ops::host_f64)
                    .collect::<Result<Vec<_>>>()?;
                let path = dir.join("trajectory.png");
                let title = format!(
                    "{} · {} · {}: paths of the first samples",
                    config.solver.name, config.sde.name, schedule_text
                );
                crate::plot::paths(&path, &host_frames, &title)?;
                files.push(path.display().to_string());
            }
            if image {
                // x̂₀ over the steps for the first sample of each class (or the first samples).
                let rows: Vec<usize> = match (&wanted, &spec, classes) {
                    (Some(y), Some(g), Some(k)) => g
                        .drawn(k)
                        .iter()
                        .filter_map(|c| y.iter().position(|l| l == c))
                        .take(10)
                        .collect(),
                    _ => (0..n.min(8)).collect(),
                };
                let ids = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    &Device::Cpu,
                )?;
                let cond = wanted
                    .as_ref()
                    .map(|y| {
                        let picked: Vec<u32> = rows.iter().map(|&r| y[r]).collect();
                        Tensor::from_vec(picked, rows.len(), &device)
                    })
                    .transpose()?;
                let mut strip_frames = Vec::with_capacity(frames.len());
                for (&t, frame) in times.iter().zip(frames) {
                    let part = frame.index_select(&ids, 0)?;
                    let x0 =
                        pipeline.denoised(&part, t.max(pipeline.sde().t_eps()), cond.as_ref())?;
                    strip_frames.push(sdeflow_kernel::ops::host_f64(&x0)?);
                }
                let all: Vec<usize> = (0..rows.len()).collect();
                let columns = (crate::plot::GRID_ROWS / rows.len().max(1)).clamp(2, 8);
                let values = crate::images::strip(&strip_frames, &all, d, columns);
                let path = dir.join("trajectory.png");
                crate::plot::image_grid(&path, &values, &shape, display_range, columns)?;
                files.push(path.display().to_string());
            }
        }

        let c = target_coefs(&pipeline);
        let mut exact_rows = None;
        let law = pipeline.model().exact_law().or_else(|| {
            config
                .data
                .as_ref()
                .and_then(|data| data.plugin.source().exact_law())
        });
        let exact = match law {
            Some(law) if law.dim() == d => {
                let target = law.marginal(c.alpha, c.sigma)?;
                let (mean, cov) = drawn.moments();
                let exact_mean: Vec<f64> = law.mean().iter().map(|m| c.alpha * m).collect();
                let exact_cov = law.covariance();
                let mean_error = mean
                    .iter()
                    .zip(&exact_mean)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let mut cov_sq = 0.0;
                for a in 0..d {
                    for b in 0..d {
                        let e = c.alpha * c.alpha * exact_cov[a][b]
                            + if a == b { c.sigma * c.sigma } else { 0.0 };
                        cov_sq += (cov[a][b] - e).powi(2);
                    }
                }
                let (sw, floor) = reference_and_floor(&target, kept)?;
                let sliced_w2 = sw.distance(&host)?;
                exact_rows = Some(("exact p(t_ε)", target.sample(REFERENCE_SEED, 0, kept)));
                let (mode_shares, worst_mode_deviation) = crate::train::mode_shares(&target, &host);
                Some(ExactMetrics {
                    mode_shares,
                    mode_weights: target.weights(),
                    worst_mode_deviation,
                    mean_error,
                    covariance_error: cov_sq.sqrt(),
                    sliced_w2,
                    sliced_w2_floor_mean: floor.mean,
                    sliced_w2_floor_sd: floor.sd,
                    within_floor: sliced_w2 <= floor.threshold(),
                })
            }
            Some(law) => {
                return Err(Error::invalid(
                    "model",
                    "sample shape",
                    format!(
                        "the model makes {d}-dimensional samples but its exact law is {}-dimensional",
                        law.dim()
                    ),
                ));
            }
            None => None,
        };

        let mut heldout = None;
        if exact.is_none()
            && d == 2
            && kept >= 2
            && let Some(data) = &config.data
        {
            let (sw, floor, rows) =
                crate::train::heldout_reference(&data.plugin, config.seed, kept)?;
            heldout = Some(HeldoutMetrics {
                sliced_w2: sw.distance(&host)?,
                sliced_w2_floor_mean: floor.mean,
                sliced_w2_floor_sd: floor.sd,
            });
            exact_rows = Some(("held-out data", rows));
        }

        let images = match &reference {
            Some(r) if r.dim() == d => Some(image_metrics(
                config,
                &device,
                r,
                (&host, wanted.as_deref()),
                (
                    scale,
                    wanted
                        .clone()
                        .map(|y| Tensor::from_vec(y, kept, &device))
                        .transpose()?
                        .as_ref(),
                ),
                trials,
            )?),
            _ => None,
        };
        if config.outputs.png && image {
            let path = dir.join("samples.png");
            match (&wanted, &spec, classes) {
                (Some(y), Some(g), Some(k)) => {
                    let drawn = g.drawn(k);
                    let per = (crate::plot::GRID_ROWS / drawn.len().max(1)).clamp(1, 8);
                    let values = crate::images::by_class(&host, y, d, &drawn, per);
                    crate::plot::image_grid(&path, &values, &shape, display_range, per)?;
                }
                _ => crate::plot::image_grid(&path, &host, &shape, display_range, 8)?,
            }
            files.push(path.display().to_string());
        }
        if config.outputs.png && d == 2 {
            let path = dir.join("samples.png");
            let title = format!(
                "{} · {} · {}",
                config.solver.name, config.sde.name, schedule_text
            );
            crate::plot::scatter_beside(
                &path,
                &host,
                exact_rows
                    .as_ref()
                    .map(|(name, rows)| (*name, rows.as_slice())),
                &title,
            )?;
            files.push(path.display().to_string());
        }

        let mut summary = Summary {
            config: config.file.clone(),
            sde: config.sde.name.to_string(),
            param: config.target_name().to_string(),
            model: config.model.name.to_string(),
            solver: config.solver.name.to_string(),
            grid: if adaptive.is_some() {
                "adaptive".into()
            } else {
                schedule.grid.to_string()
            },
            steps: match &spread {
                Some(s) => s.accepted_max as usize,
                None => schedule.steps,
            },
            schedule: schedule_text.clone(),
            nfe: result_nfe,
            nfe_per_sample: spread.map(|s| s.nfe_spread()),
            samples: n,
            metric_rows: kept,
            non_finite_samples: drawn.non_finite,
            seed: config.seed,
            device: device_name(&device),
            wall_seconds: wall,
            samples_per_second: n as f64 / wall,
            shards,
            checkpoint: checkpoint.map(|p| p.display().to_string()),
            exact,
            heldout,
            guidance: scale,
            classes: match (&spec, classes) {
                (Some(g), Some(k)) => g.drawn(k),
                _ => Vec::new(),
            },
            images,
            files,
        };
        if config.outputs.json {
            let path = dir.join("summary.json");
            summary.files.push(path.display().to_string());
            let text =
                serde_json::to_string_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
            write_atomic(&path, |tmp| {
                std::fs::write(tmp, &text).map_err(|source| Error::Io {
                    path: tmp.to_path_buf(),
                    source,
                })
            })?;
        }
        Ok(summary)
    }
}

/// The training images and labels of stored, labelled image data (what samples are judged
/// against), or `None`.
fn image_reference(config: &Config) -> Result<Option<crate::images::Reference>> {
    let Some(data) = &config.data else {
        return Ok(None);
    };
    let data = &data.plugin;
    let (Some(m), Some(_)) = (data.len(Split::Train), data.source().classes()) else {
        return Ok(None);
    };
    if data.sample_shape().len() < 2 {
        return Ok(None);
    }
    let batch = data.batch(Split::Train, config.seed, 0, m as usize)?;
    crate::images::Reference::new(batch.values, batch.labels.unwrap_or_default(), data.dim())
        .map(Some)
}

/// The guidance scale to sample with: the config's, or the candidate of `guidance.search`
/// chosen on samples of the next seed — the one whose k-NN accuracy is highest among those
/// whose class-conditional pixel sliced W2 to the training images is within the floor of real
/// images, or within the statistic's noise (3 floor sd) of the lowest when none is.
fn choose_scale(
    config: &Config,
    device: &Device,
    spec: Option<&sdeflow_kernel::config::GuidanceSpec>,
    reference: Option<&crate::images::Reference>,
) -> Result<(Option<f64>, Option<Search>)> {
    let (Some(g), Some(k)) = (spec, config.model.plugin.classes()) else {
        return Ok((None, None));
    };
    if g.search.is_empty() {
        return Ok((Some(g.scale), None));
    }
    let Some(r) = reference else {
        return Err(Error::invalid(
            "guidance",
            "search",
            "choosing a scale compares samples with the training images of their class: the data must be stored, labelled images (digits(), idx(...))",
        ));
    };
    let n = g.search_samples;
    let labels = g.labels(0, n, k, device)?;
    let wanted = labels.to_vec1::<u32>()?;
    let metric = r.class_metric(&wanted)?;
    let mut trials = Vec::with_capacity(g.search.len());
    for &w in &g.search {
        let p = config
            .builder(device.clone())
            .guidance(Some(w))
            .seed(config.seed.wrapping_add(1))
            .capture_trajectory(false)
            .build()?;
        let out = p.run(p.prior_state(0, n)?.with_cond(labels.clone())?)?;
        let xs = sdeflow_kernel::ops::host_f64(&out.state.x)?;
        let trial = GuidanceTrial {
            scale: w,
            class_sliced_w2: metric.distance(&xs, &wanted)?,
            accuracy: r.accuracy(&r.neighbours(&xs)?, &wanted).overall,
        };
        tracing::info!(
            scale = w,
            class_sliced_w2 = trial.class_sliced_w2,
            accuracy = trial.accuracy,
            "guidance candidate"
        );
        trials.push(trial);
    }
    // The most accurate scale among those whose samples are as close to their class's images
    // as real images are (within the floor), or, when none is, as close as the closest one up
    // to the statistic's noise (3 sd of the floor): candidates the metric cannot tell apart.
    let lowest = trials
        .iter()
        .map(|t| t.class_sliced_w2)
        .fold(f64::INFINITY, f64::min);
    let threshold = metric.floor.threshold().max(lowest + 3.0 * metric.floor.sd);
    let best = trials
        .iter()
        .filter(|t| t.class_sliced_w2 <= threshold)
        .max_by(|a, b| {
            a.accuracy
                .total_cmp(&b.accuracy)
                .then(b.scale.total_cmp(&a.scale))
        })
        .map(|t| t.scale);
    let search = Search {
        trials,
        seed: config.seed.wrapping_add(1),
        rows_per_class: metric.m,
        floor_mean: metric.floor.mean,
        floor_sd: metric.floor.sd,
    };
    Ok((best, Some(search)))
}

/// The image metrics of `samples` (drawn for `wanted`, at `scale` with `labels`).
fn image_metrics(
    config: &Config,
    device: &Device,
    r: &crate::images::Reference,
    (samples, wanted): (&[f64], Option<&[u32]>),
    (scale, labels): (Option<f64>, Option<&Tensor>),
    search: Option<Search>,
) -> Result<ImageMetrics> {
    let d = r.dim();
    let n = samples.len() / d;
    let data = &config
        .data
        .as_ref()
        .ok_or_else(|| Error::Msg("image metrics need the config's data".into()))?
        .plugin;
    let neighbours = r.neighbours(samples)?;
    let accuracy = wanted.map(|y| r.accuracy(&neighbours, y));
    let accuracy_unguided = match (wanted, labels, scale) {
        (Some(y), Some(labels), Some(w)) if w != 0.0 => {
            let p = config
                .builder(device.clone())
                .guidance(Some(0.0))
                .capture_trajectory(false)
                .build()?;
            let out = p.run(p.prior_state(0, n)?.with_cond(labels.clone())?)?;
            let xs = sdeflow_kernel::ops::host_f64(&out.state.x)?;
            Some(r.accuracy(&r.neighbours(&xs)?, y))
        }
        _ => None,
    };
    let held = data.len(Split::Heldout).unwrap_or(0) as usize;
    let heldout_rows = data.batch(Split::Heldout, config.seed, 0, held)?.values;
    let m = n.min(held);
    if m < 2 {
        return Err(Error::Msg(format!(
            "image metrics need at least 2 samples and 2 held-out images, not {n} and {held}"
        )));
    }
    let (sw, floor, _) = crate::train::heldout_reference(data, config.seed, m)?;
    Ok(ImageMetrics {
        knn: crate::images::KNN,
        accuracy,
        accuracy_unguided,
        nearest_train_distance: crate::images::mean_nearest(&neighbours),
        heldout_nearest_train_distance: crate::images::mean_nearest(&r.neighbours(&heldout_rows)?),
        sliced_w2: sw.distance(&samples[..m * d])?,
        sliced_w2_floor_mean: floor.mean,
        sliced_w2_floor_sd: floor.sd,
        sliced_w2_rows: m,
        search,
    })
}
