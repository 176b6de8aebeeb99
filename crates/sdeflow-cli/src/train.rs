//! `train`: fit the config's network to its data by denoising score matching, as `train:`
//! says, with evaluation, metrics, plots and crash-safe checkpoints in the output directory:
//! - `metrics.jsonl`: one JSON object per logged step (`step`, `loss` — the mean training loss
//!   since the previous line — `grad_norm`, `lr`, `steps_per_second`; on evaluation steps also
//!   `heldout_loss`, `sliced_w2`, its floor and the mode shares), for any plotting tool;
//! - `loss.png`: the training and held-out losses;
//! - `train-samples.png`: the last evaluation's samples beside the data (2-D);
//! - `checkpoints/`: [`sdeflow_train::checkpoint`]'s folders and `latest`;
//! - `train-summary.json`: the final evaluation and the run's speed.
//!
//! A run whose output directory holds checkpoints of the same config continues from the
//! latest (its final weights are those of an uninterrupted run); `--resume` insists on one,
//! `--fresh` removes them first. Checkpoints of another config are an error, never
//! overwritten.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use sdeflow_conformance::sw2::{FLOOR_SETS, Floor, SlicedW2, reference_and_floor};
use sdeflow_kernel::{
    Config, Denoiser, Error, ModelContext, Pipeline, Result, TrainSpec,
    config::Weights,
    data::Split,
    io::{fault_point, load_trained, write_atomic},
    mixture::Marginal,
};
use sdeflow_train::{
    Trainer,
    checkpoint::{self, Manifest},
};
use serde::{Deserialize, Serialize};

use crate::sample::{device_name, output_dir, target_coefs};

/// What to do with checkpoints already in the output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Continue them if they are this config's, start when there are none.
    #[default]
    Auto,
    /// Continue them; none is an error.
    Require,
    /// Remove them and start afresh.
    Fresh,
}

/// The checkpoint root of a run writing to `dir`.
pub fn checkpoint_root(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}

/// One evaluation, with the first EMA's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The DSM loss on the held-out rows (the same rows and draws at every evaluation).
    pub heldout_loss: f64,
    /// The exact model's loss on the same rows and draws, when the data has an exact law: the
    /// irreducible part, so `heldout_loss − heldout_loss_exact` is what is left to learn.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub heldout_loss_exact: Option<f64>,
    /// Sliced W2 of fresh samples against the exact law (or held-out data).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sliced_w2: Option<f64>,
    /// The mean SW2 of sets of exact (or training) rows against the same reference.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sliced_w2_floor_mean: Option<f64>,
    /// Their standard deviation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sliced_w2_floor_sd: Option<f64>,
    /// Each mixture component's share of the samples (most probable component per sample).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode_shares: Option<Vec<f64>>,
    /// max_k |share_k / weight_k − 1|.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub worst_mode_deviation: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLine {
    /// The step just taken.
    pub step: u64,
    /// The mean training loss over the steps since the previous line.
    pub loss: f64,
    /// The global gradient norm of this step (before clipping).
    pub grad_norm: f64,
    /// The learning rate of this step.
    pub lr: f64,
    /// Steps per second since the previous line.
    pub steps_per_second: f64,
    /// The evaluation, on evaluation steps.
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub eval: Option<Evaluation>,
}

/// What `train` reports and writes as `train-summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// The config file.
    pub config: String,
    /// The model, what it predicts, the SDE, the weighting and the data.
    pub model: String,
    /// The parameterization.
    pub param: String,
    /// The SDE of the loss.
    pub sde: String,
    /// The weighting.
    pub weighting: String,
    /// The data.
    pub data: String,
    /// Steps of the run.
    pub steps: u64,
    /// Rows per step.
    pub batch: usize,
    /// The step the run continued from (0: a fresh start).
    pub resumed_from: u64,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Wall time of this invocation's steps and evaluations.
    pub wall_seconds: f64,
    /// Training steps per second (evaluations excluded).
    pub steps_per_second: f64,
    /// The final evaluation.
    pub last: Option<Evaluation>,
    /// The sample count of the SW2 evaluations.
    pub eval_samples: usize,
    /// This process's rank and the world's size, in a data-parallel run (rank 0 evaluates and
    /// writes; every rank steps on its slice of each batch).
    pub ranks: Option<(usize, usize)>,
    /// Files written.
    pub files: Vec<String>,
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((rank, world)) = self.ranks {
            writeln!(
                f,
                "rank {rank} of {world}: each step's batch split over the ranks, gradients summed over NCCL{}",
                if rank == 0 {
                    ""
                } else {
                    "; rank 0 evaluates and writes"
                }
            )?;
        }
        let from = if self.resumed_from > 0 {
            format!(", resumed at step {}", self.resumed_from)
        } else {
            String::new()
        };
        writeln!(
            f,
            "trained {} ({}) on {} with {} × {}: {} steps of {} rows{from} in {:.1} s ({:.1} steps/s)",
            self.model,
            self.param,
            self.data,
            self.sde,
            self.weighting,
            self.steps,
            self.batch,
            self.wall_seconds,
            self.steps_per_second
        )?;
        if let Some(e) = &self.last {
            write!(f, "held-out loss {:.4}", e.heldout_loss)?;
            if let Some(exact) = e.heldout_loss_exact {
                write!(f, " (the exact model's {exact:.4})")?;
            }
            if let (Some(sw), Some(m), Some(sd)) =
                (e.sliced_w2, e.sliced_w2_floor_mean, e.sliced_w2_floor_sd)
            {
                write!(
                    f,
                    "; sliced W2 of {} EMA samples {sw:.4} (floor {m:.4} ± {sd:.4}, {:.2}× its mean)",
                    self.eval_samples,
                    sw / m
                )?;
            }
            if let Some(w) = e.worst_mode_deviation {
                write!(f, "; mode shares within {:.0}% of their weights", 100.0 * w)?;
            }
            writeln!(f)?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        Ok(())
    }
}

/// What SW2 and the mode shares are measured against, computed once per run.
struct Reference {
    sw: SlicedW2,
    floor: Floor,
    /// The exact law at the samples' time, for mode shares and the PNG.
    law: Option<Marginal>,
    rows: Vec<f64>,
    n: usize,
}

fn reference(
    config: &Config,
    pipeline: &Pipeline,
    trainer: &Trainer,
    n: usize,
) -> Result<Option<Reference>> {
    if n < 2 {
        return Ok(None);
    }
    let data = trainer.data();
    let d = data.dim();
    if let Some(law) = data.source().exact_law() {
        let c = target_coefs(pipeline);
        let target = law.marginal(c.alpha, c.sigma)?;
        let (sw, floor) = reference_and_floor(&target, n)?;
        let rows = target.sample(sdeflow_conformance::sw2::REFERENCE_SEED, 0, n);
        return Ok(Some(Reference {
            sw,
            floor,
            law: Some(target),
            rows,
            n,
        }));
    }
    if d != 2 {
        return Ok(None);
    }
    let (sw, floor, rows) = heldout_reference(data, config.seed, n)?;
    Ok(Some(Reference {
        sw,
        floor,
        law: None,
        rows,
        n,
    }))
}

/// For data without an exact law: `n` held-out rows as the SW2 reference, and the floor from
/// 20 sets of `n` training rows against them.
pub fn heldout_reference(
    data: &sdeflow_kernel::Data,
    seed: u64,
    n: usize,
) -> Result<(SlicedW2, Floor, Vec<f64>)> {
    let rows = data.batch(Split::Heldout, seed, 0, n)?.values;
    let sw = SlicedW2::new(&rows, data.dim());
    let vals = (0..FLOOR_SETS as u64)
        .map(|k| sw.distance(&data.batch(Split::Train, seed, k * n as u64, n)?.values))
        .collect::<Result<Vec<f64>>>()?;
    Ok((sw, Floor::of(&vals), rows))
}

/// Each component's share of `samples` under `law`, and the worst relative deviation from
/// its weight.
pub fn mode_shares(law: &Marginal, samples: &[f64]) -> (Vec<f64>, f64) {
    let weights = law.weights();
    let assigned = law.assign(samples);
    let mut counts = vec![0usize; weights.len()];
    for k in &assigned {
        counts[*k] += 1;
    }
    let n = assigned.len().max(1) as f64;
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
    let worst = shares
        .iter()
        .zip(&weights)
        .map(|(s, w)| (s / w - 1.0).abs())
        .fold(0.0, f64::max);
    (shares, worst)
}

/// The exact model's held-out loss on the rows and draws every evaluation uses, for data with
/// an exact law (the `gmm_oracle` plugin reading it).
fn exact_loss(config: &Config, trainer: &Trainer, spec: &TrainSpec) -> Result<Option<f64>> {
    let data = trainer.data();
    if data.source().exact_law().is_none() {
        return Ok(None);
    }
    let registry = sdeflow_plugins::registry()?;
    if registry.models.get("gmm_oracle").is_err() {
        return Ok(None);
    }
    let device = trainer.device().clone();
    let ctx = ModelContext::new(device, config.dtype.dtype()).with_data(data.clone());
    let oracle = registry.model("gmm_oracle", "()", &ctx)?;
    let exact = Denoiser::of(oracle, config.chunk_rows, None)?;
    Ok(Some(trainer.loss_with(
        &exact,
        Split::Heldout,
        spec.eval.rows,
        0,
    )?))
}

fn evaluate(
    trainer: &Trainer,
    spec: &TrainSpec,
    pipeline: &Pipeline,
    reference: Option<&Reference>,
    heldout_loss_exact: Option<f64>,
) -> Result<(Evaluation, Option<Vec<f64>>)> {
    let ema = trainer.emas()[0].weights();
    trainer.with_weights(ema, || {
        let heldout_loss = trainer.loss_on(Split::Heldout, spec.eval.rows, 0)?;
        let mut eval = Evaluation {
            heldout_loss,
            heldout_loss_exact,
            sliced_w2: None,
            sliced_w2_floor_mean: None,
            sliced_w2_floor_sd: None,
            mode_shares: None,
            worst_mode_deviation: None,
        };
        let Some(r) = reference else {
            return Ok((eval, None));
        };
        let out = pipeline.run(pipeline.prior_state(0, r.n)?)?;
        let samples = out
            .state
            .x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        eval.sliced_w2 = Some(r.sw.distance(&samples)?);
        eval.sliced_w2_floor_mean = Some(r.floor.mean);
        eval.sliced_w2_floor_sd = Some(r.floor.sd);
        if let Some(law) = &r.law {
            let (shares, worst) = mode_shares(law, &samples);
            eval.mode_shares = Some(shares);
            eval.worst_mode_deviation = Some(worst);
        }
        Ok((eval, Some(samples)))
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The metric lines of an earlier invocation up to `step` (a line a crash cut short, or one
/// past the checkpoint, is dropped: the resumed run writes those steps again).
fn earlier_metrics(path: &Path, step: u64) -> Result<Vec<MetricLine>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<MetricLine>(l).ok())
            .filter(|m| m.step <= step)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

fn write_lines(path: &Path, lines: &[MetricLine]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l).map_err(|e| Error::Msg(e.to_string()))?);
        text.push('\n');
    }
    write_atomic(path, |tmp| std::fs::write(tmp, &text).map_err(io(tmp)))
}

/// A run's summary before it has measured anything: what it trains, on what, from where.
fn summary_of(
    config: &Config,
    spec: &TrainSpec,
    device: &Device,
    resumed_from: u64,
) -> TrainSummary {
    let name = |e: Option<&'static str>| e.unwrap_or_default().to_string();
    TrainSummary {
        config: config.file.clone(),
        model: config.model.name.to_string(),
        param: name(config.param.as_ref().map(|p| p.name)),
        sde: config.sde.name.to_string(),
        weighting: name(config.weighting.as_ref().map(|w| w.name)),
        data: name(config.data.as_ref().map(|d| d.name)),
        steps: spec.steps,
        batch: spec.batch,
        resumed_from,
        seed: config.seed,
        device: device_name(device),
        wall_seconds: 0.0,
        steps_per_second: 0.0,
        last: None,
        eval_samples: 0,
        ranks: None,
        files: Vec::new(),
    }
}

/// The data-parallel rank this process is, from the launcher's environment
/// ([`Launch::from_env`](sdeflow_train::parallel::Launch::from_env): torchrun's or Slurm's
/// variables), with the device it trains on (`cuda:LOCAL_RANK`, or the one GPU it sees) and the NCCL communicator
/// that sums the ranks' gradients; `None` for a plain process.
fn join_launch(
    device: Device,
) -> Result<(
    Device,
    Option<std::sync::Arc<dyn sdeflow_train::parallel::Reduce>>,
)> {
    let Some(launch) = sdeflow_train::parallel::Launch::from_env(|k| std::env::var(k).ok())? else {
        return Ok((device, None));
    };
    tracing::info!(
        rank = launch.rank,
        world = launch.world,
        local_rank = launch.local_rank,
        "data-parallel launch"
    );
    #[cfg(feature = "nccl")]
    {
        let device = match device {
            Device::Cuda(_) => Device::new_cuda(launch.gpu)?,
            other => other,
        };
        let nccl = sdeflow_train::parallel::Nccl::join(&launch, &device)?;
        Ok((device, Some(std::sync::Arc::new(nccl))))
    }
    #[cfg(not(feature = "nccl"))]
    {
        if launch.world == 1 {
            return Ok((device, None));
        }
        Err(Error::invalid(
            "train",
            "WORLD_SIZE",
            format!(
                "this process is rank {} of {}, but this sdeflow was built without NCCL: build it with `cargo build --release -p sdeflow-cli --features nccl` for data-parallel training on GPUs",
                launch.rank, launch.world
            ),
        ))
    }
}

/// Runs the config's training job on `device`; returns its summary. Launched as one rank of
/// several (torchrun, `srun`; built with the `nccl` feature), it trains its slice of every
/// batch on `cuda:LOCAL_RANK`; rank 0 alone evaluates and writes.
pub fn train(
    config: &Config,
    device: Device,
    out: Option<PathBuf>,
    resume: Resume,
) -> Result<TrainSummary> {
    let spec = config.train.clone().unwrap_or_default();
    let Some(data) = &config.data else {
        return Err(Error::invalid(
            "train",
            "data",
            format!(
                "{} names no `data:` to train on; add one, e.g. `data: moons()`",
                config.file
            ),
        ));
    };
    if config.model.plugin.target().is_some() || config.model.plugin.varmap().is_none() {
        return Err(Error::invalid(
            "train",
            "model",
            format!(
                "`{}` has nothing to train (it is exact); train a network, e.g. `model: mlp()` with `param: eps()`",
                config.model.name
            ),
        ));
    }
    let (Some(param), Some(weighting)) = (&config.param, &config.weighting) else {
        return Err(Error::invalid(
            "train",
            "param",
            "a network trains in the target `param:` names",
        ));
    };
    let dir = output_dir(config, out);
    sdeflow_kernel::io::ensure_writable_dir(&dir)?;
    let root = checkpoint_root(&dir);
    let metrics_path = dir.join("metrics.jsonl");
    let (device, reduce) = join_launch(device)?;
    let lead = reduce.as_ref().is_none_or(|r| r.rank() == 0);
    let mut trainer = Trainer::new(
        config.model.plugin.clone(),
        param.plugin.clone(),
        config.sde.plugin.clone(),
        weighting.plugin.clone(),
        data.plugin.clone(),
        spec.clone(),
        config.seed,
        (config.dtype.dtype(), device.clone()),
    )?;
    if let Some(r) = reduce {
        trainer = trainer.with_reduce(r)?;
    }
    let manifest = |step| Manifest {
        step,
        seed: config.seed,
        config_hash: config.hash.clone(),
        target: param.name.to_string(),
        emas: spec.ema.len(),
    };

    if resume == Resume::Fresh && root.exists() && lead {
        std::fs::remove_dir_all(&root).map_err(io(&root))?;
    }
    // The other ranks of a fresh run do not read what rank 0 is removing.
    let latest = if resume == Resume::Fresh && !lead {
        None
    } else {
        checkpoint::latest(&root)?
    };
    let resumed_from = match latest {
        Some((ckpt, m)) => {
            if m.config_hash != config.hash || m.seed != config.seed {
                return Err(Error::invalid(
                    "train",
                    "--resume",
                    format!(
                        "{} holds a run of another config or seed (config {}, seed {}; this one {}, seed {}); pass --fresh to discard it, or --out another directory",
                        root.display(),
                        m.config_hash,
                        m.seed,
                        config.hash,
                        config.seed
                    ),
                ));
            }
            checkpoint::restore(&ckpt, &mut trainer)?;
            tracing::info!(step = m.step, dir = %ckpt.display(), "resumed");
            m.step
        }
        None if resume == Resume::Require => {
            return Err(Error::invalid(
                "train",
                "--resume",
                format!("{} holds no checkpoint to resume", root.display()),
            ));
        }
        None => 0,
    };
    trainer.check_ranks_agree()?;
    if !lead {
        // Rank 1 … W − 1 of a data-parallel run: the steps only (rank 0 evaluates, logs and
        // checkpoints, with the same weights).
        let start = Instant::now();
        for _ in resumed_from + 1..=spec.steps {
            trainer.step()?;
        }
        let wall = start.elapsed().as_secs_f64();
        let (rank, world) = trainer.rank();
        tracing::info!(rank, world, "trained its slices of the batches");
        return Ok(TrainSummary {
            wall_seconds: wall,
            steps_per_second: (spec.steps - resumed_from) as f64 / wall.max(1e-9),
            ranks: Some((rank, world)),
            ..summary_of(config, &spec, &device, resumed_from)
        });
    }
    let mut lines = earlier_metrics(&metrics_path, resumed_from)?;
    write_lines(&metrics_path, &lines)?;
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(io(&metrics_path))?;

    let mut builder = config.builder(device.clone());
    if let Some(steps) = spec.eval.steps {
        builder = builder.steps(steps);
    }
    let pipeline = builder.build()?;
    let reference = reference(config, &pipeline, &trainer, spec.eval.samples)?;
    let loss_floor = exact_loss(config, &trainer, &spec)?;

    let bar = ProgressBar::new(spec.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} training [{bar:30}] {pos}/{len} steps · loss {msg} · {per_sec} · eta {eta}",
        )
        .map_err(|e| Error::Msg(e.to_string()))?
        .progress_chars("=> "),
    );
    bar.set_position(resumed_from);
    let start = Instant::now();
    let mut train_seconds = 0.0;
    let (mut sum, mut count, mut since) = (0.0, 0u64, Instant::now());
    let mut last_eval = None;
    let mut last_samples = None;
    let every = |k: u64, n: u64| k > 0 && n.is_multiple_of(k);
    for n in resumed_from + 1..=spec.steps {
        let t0 = Instant::now();
        let report = trainer.step()?;
        train_seconds += t0.elapsed().as_secs_f64();
        fault_point(&format!("train: step {n} taken"));
        sum += report.loss;
        count += 1;
        bar.set_position(n);
        let last = n == spec.steps;
        let eval_now = last || every(spec.eval.every, n);
        if eval_now || every(spec.log_every, n) {
            let eval = if eval_now {
                let (e, samples) =
                    evaluate(&trainer, &spec, &pipeline, reference.as_ref(), loss_floor)?;
                tracing::info!(step = n, heldout = e.heldout_loss, sliced_w2 = ?e.sliced_w2, "evaluated");
                last_samples = samples;
                Some(e)
            } else {
                None
            };
            let line = MetricLine {
                step: n,
                loss: sum / count as f64,
                grad_norm: report.grad_norm,
                lr: report.lr,
                steps_per_second: count as f64 / since.elapsed().as_secs_f64().max(1e-9),
                eval: eval.clone(),
            };
            bar.set_message(format!("{:.4}", line.loss));
            let text = serde_json::to_string(&line).map_err(|e| Error::Msg(e.to_string()))?;
            writeln!(metrics, "{text}").map_err(io(&metrics_path))?;
            metrics.flush().map_err(io(&metrics_path))?;
            lines.push(line);
            (sum, count, since) = (0.0, 0, Instant::now());
            if eval.is_some() {
                last_eval = eval;
            }
        }
        if last || every(spec.checkpoint.every, n) {
            metrics.sync_all().map_err(io(&metrics_path))?;
            checkpoint::save(&root, &trainer, &manifest(n), spec.checkpoint.keep)?;
            tracing::info!(step = n, "checkpointed");
        }
    }
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let ran = spec.steps - resumed_from;

    let mut files = vec![metrics_path.display().to_string()];
    let train_curve = lines.iter().map(|l| (l.step as f64, l.loss)).collect();
    let heldout_curve = lines
        .iter()
        .filter_map(|l| l.eval.as_ref().map(|e| (l.step as f64, e.heldout_loss)))
        .collect();
    let png = dir.join("loss.png");
    crate::plot::curves(
        &png,
        &[
            crate::plot::Curve {
                name: "training loss",
                points: train_curve,
                markers: false,
            },
            crate::plot::Curve {
                name: "held-out loss (EMA)",
                points: heldout_curve,
                markers: true,
            },
        ],
        "step",
        &format!(
            "{} ({}) on {} · {} × {}",
            config.model.name, param.name, data.name, config.sde.name, weighting.name
        ),
    )?;
    files.push(png.display().to_string());
    if let (Some(samples), Some(r)) = (&last_samples, &reference)
        && trainer.data().dim() == 2
    {
        let png = dir.join("train-samples.png");
        crate::plot::scatter_beside(
            &png,
            samples,
            Some((
                if r.law.is_some() {
                    "exact p(t_ε)"
                } else {
                    "held-out data"
                },
                &r.rows,
            )),
            &format!("EMA samples after {} steps", spec.steps),
        )?;
        files.push(png.display().to_string());
    }
    files.push(root.display().to_string());
    let mut summary = TrainSummary {
        wall_seconds: wall,
        steps_per_second: ran as f64 / train_seconds.max(1e-9),
        last: last_eval.or_else(|| lines.iter().rev().find_map(|l| l.eval.clone())),
        eval_samples: reference.as_ref().map_or(0, |r| r.n),
        ranks: match trainer.rank() {
            (_, 1) => None,
            r => Some(r),
        },
        files,
        ..summary_of(config, &spec, &device, resumed_from)
    };
    let path = dir.join("train-summary.json");
    summary.files.push(path.display().to_string());
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&path, |tmp| std::fs::write(tmp, &text).map_err(io(tmp)))?;
    Ok(summary)
}

/// Loads the trained network a `sample` (or `nll`) job reads into the config's model: the
/// config's `checkpoint:` (default: the run's own `checkpoints/`, latest step, first EMA).
/// A model with nothing to load (an exact one) is left as it is; a trainable one without a
/// checkpoint is an error that says how to make one.
pub fn load_for_sampling(config: &Config, dir: &Path) -> Result<Option<PathBuf>> {
    let Some(vm) = config.model.plugin.varmap() else {
        return Ok(None);
    };
    if config.model.plugin.target().is_some() {
        return Ok(None);
    }
    let chosen = config.checkpoint.clone().unwrap_or_default();
    let root = chosen.dir.clone().unwrap_or_else(|| checkpoint_root(dir));
    let folder = match chosen.step {
        Some(step) => root.join(format!("step-{step:08}")),
        None => match checkpoint::latest(&root)? {
            Some((folder, _)) => folder,
            None => {
                return Err(Error::invalid(
                    "sample",
                    "checkpoint",
                    format!(
                        "`{}` is a network and {} holds no checkpoint; train it first (`sdeflow train {}`) or name one with `checkpoint: (dir: \"…\")`",
                        config.model.name,
                        root.display(),
                        config.file
                    ),
                ));
            }
        },
    };
    let file = folder.join(match chosen.weights {
        Weights::Ema => checkpoint::ema_file(0),
        Weights::Model => "model.safetensors".into(),
    });
    if !file.exists() {
        return Err(Error::Io {
            path: file.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such checkpoint file"),
        });
    }
    load_trained(vm, config.target_name(), &file)?;
    Ok(Some(file))
}
