//! `sample`: run the pipeline, write samples as `.npy`, a PNG of 2-D samples beside exact
//! data, and a JSON summary with the metrics against the exact law when the model knows it.

use std::{fmt, path::PathBuf, sync::Arc, time::Instant};

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use sdeflow_conformance::sw2::{REFERENCE_SEED, reference_and_floor};
use sdeflow_kernel::{Config, Error, Result, TimeCoefs, io::write_atomic, pipeline::Progress};
use serde::Serialize;

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
    /// Samples drawn.
    pub samples: usize,
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: String,
    /// Sampling wall time in seconds.
    pub wall_seconds: f64,
    /// Samples per second.
    pub samples_per_second: f64,
    /// The trained weights sampled with, for a network.
    pub checkpoint: Option<String>,
    /// Against the exact law: the oracle's, or the data's.
    pub exact: Option<ExactMetrics>,
    /// For 2-D data without an exact law: against its held-out rows.
    pub heldout: Option<HeldoutMetrics>,
    /// Files written.
    pub files: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.checkpoint {
            writeln!(f, "weights from {c}")?;
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
                "sliced W2 {:.4} (exact-sample floor {:.4} ± {:.4}; threshold {:.4}): {}",
                m.sliced_w2,
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
                "sliced W2 against held-out data {:.4} (training-data floor {:.4} ± {:.4}, {:.2}× its mean)",
                m.sliced_w2,
                m.sliced_w2_floor_mean,
                m.sliced_w2_floor_sd,
                m.sliced_w2 / m.sliced_w2_floor_mean
            )?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        Ok(())
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

fn moments(rows: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = (rows.len() / d) as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.chunks(d).map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let cov = (0..d)
        .map(|a| {
            (0..d)
                .map(|b| {
                    rows.chunks(d)
                        .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                        .sum::<f64>()
                        / (n - 1.0)
                })
                .collect()
        })
        .collect();
    (mean, cov)
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

/// The first state of a run from `latents` (`[samples, ...]` at T), checked against the run.
fn latent_state(
    config: &Config,
    pipeline: &sdeflow_kernel::Pipeline,
    path: &std::path::Path,
) -> Result<sdeflow_kernel::State> {
    let bad = |why: String| Error::invalid("latents", path.display().to_string(), why);
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
    pipeline.start_state(x, 0)
}

/// Runs the config's sampling job on `device` and writes its outputs; a network samples with
/// the weights of its checkpoint ([`crate::train::load_for_sampling`]).
pub fn sample(config: &Config, device: Device, out: Option<PathBuf>) -> Result<Summary> {
    let dir = output_dir(config, out);
    let checkpoint = crate::train::load_for_sampling(config, &dir)?;
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
    let pipeline = config.builder(device.clone()).progress(progress).build()?;
    let schedule = pipeline.discretization();
    let adaptive = pipeline.solver().adaptive();
    let schedule_text = match adaptive {
        Some(a) => a.to_string(),
        None => format!("{} steps, {} grid", schedule.steps, schedule.grid),
    };
    if adaptive.is_some() {
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} sampling [{bar:40}] {pos}/{len} samples done {elapsed_precise}",
            )
            .map_err(|e| Error::Msg(e.to_string()))?
            .progress_chars("=> "),
        );
    }
    let start = Instant::now();
    let first = match &config.latents {
        None => pipeline.prior_state(0, config.samples)?,
        Some(path) => latent_state(config, &pipeline, path)?,
    };
    let x_start = first.x.clone();
    let result = pipeline.run(first)?;
    let wall = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let x = result.state.x.to_device(&Device::Cpu)?;
    let n = config.samples;
    let d = x.elem_count() / n;
    let host = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mut files = Vec::new();
    if config.outputs.npy {
        let path = dir.join("samples.npy");
        write_atomic(&path, |tmp| Ok(x.write_npy(tmp)?))?;
        files.push(path.display().to_string());
    }

    if config.outputs.trajectory {
        let mut frames = vec![x_start.to_device(&Device::Cpu)?];
        for (_, x) in &result.trajectory {
            frames.push(x.to_device(&Device::Cpu)?);
        }
        let stacked = Tensor::stack(&frames, 0)?;
        let path = dir.join("trajectory.npy");
        write_atomic(&path, |tmp| Ok(stacked.write_npy(tmp)?))?;
        files.push(path.display().to_string());
        if d == 2 {
            let host_frames = frames
                .iter()
                .map(|f| Ok(f.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?))
                .collect::<Result<Vec<_>>>()?;
            let path = dir.join("trajectory.png");
            let title = format!(
                "{} · {} · {}: paths of the first samples",
                config.solver.name, config.sde.name, schedule_text
            );
            crate::plot::paths(&path, &host_frames, &title)?;
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
            let (mean, cov) = moments(&host, d);
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
            let (sw, floor) = reference_and_floor(&target, n)?;
            let sliced_w2 = sw.distance(&host)?;
            exact_rows = Some(("exact p(t_ε)", target.sample(REFERENCE_SEED, 0, n)));
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
        && n >= 2
        && let Some(data) = &config.data
    {
        let (sw, floor, rows) = crate::train::heldout_reference(&data.plugin, config.seed, n)?;
        heldout = Some(HeldoutMetrics {
            sliced_w2: sw.distance(&host)?,
            sliced_w2_floor_mean: floor.mean,
            sliced_w2_floor_sd: floor.sd,
        });
        exact_rows = Some(("held-out data", rows));
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
        steps: match &result.rows {
            Some(r) => r.accepted.iter().copied().max().unwrap_or(0) as usize,
            None => schedule.steps,
        },
        schedule: schedule_text.clone(),
        nfe: result.nfe,
        nfe_per_sample: result
            .rows
            .as_ref()
            .map(sdeflow_kernel::RowStats::nfe_spread),
        samples: n,
        seed: config.seed,
        device: device_name(&device),
        wall_seconds: wall,
        samples_per_second: n as f64 / wall,
        checkpoint: checkpoint.map(|p| p.display().to_string()),
        exact,
        heldout,
        files,
    };
    if config.outputs.json {
        let path = dir.join("summary.json");
        summary.files.push(path.display().to_string());
        let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
        write_atomic(&path, |tmp| {
            std::fs::write(tmp, &text).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })?;
    }
    Ok(summary)
}
