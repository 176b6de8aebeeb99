//! `nll`: the negative log-likelihood −log p_{t_ε}(x) of data rows through the probability-flow
//! ODE ([`sdeflow_kernel::likelihood`]), for a trained network (read from its checkpoint) or
//! the oracle. Writes `nll.npy` (nats per row), `latents.npy` (x(T), the PF-ODE's encoding),
//! `nll.png` (a histogram) and `nll-summary.json` (beside `sample`'s `summary.json`).
//!
//! Integer data (a source with levels) is dequantized — level k spread uniformly over its cell
//! lo + (hi − lo)(k + u)/L, u from the kernel's noise — and reported in bits per dimension with
//! the levels' offset log₂(L/(hi − lo)) (MATH.md §9). Data with an exact law also gets the
//! exact NLL of the same rows under p_{t_ε}.

use std::{fmt, path::PathBuf, time::Instant};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Config, Error, GridKind, Result,
    config::{DEFAULT_NLL_SOLVER, DEFAULT_NLL_STEPS, NllSpec, NllSplit},
    data::Split,
    io::write_atomic,
    likelihood::Trace,
    noise::{Stream, philox_key, uniform_f64},
};
use serde::Serialize;

use crate::sample::{device_name, output_dir};

/// What `nll` reports and writes as `nll-summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct NllSummary {
    /// The config file.
    pub config: String,
    /// The model and what it predicts.
    pub model: String,
    /// Its target.
    pub param: String,
    /// The SDE.
    pub sde: String,
    /// The solver integrating forward.
    pub solver: String,
    /// Its steps: "200 uniform steps", or "adaptive, rtol …, atol …".
    pub schedule: String,
    /// The trace: exact or Hutchinson.
    pub trace: String,
    /// Where the rows came from.
    pub rows_from: String,
    /// Rows evaluated.
    pub rows: usize,
    /// Dimensions per row.
    pub dim: usize,
    /// Mean NLL, nats per row.
    pub nll: f64,
    /// Its standard error over the rows.
    pub nll_se_rows: f64,
    /// The root-mean-square of the rows' standard errors over Hutchinson's probes, divided by
    /// √rows: the probes' share of the mean's error (`None`: exact trace or one probe).
    pub nll_se_probes: Option<f64>,
    /// Mean NLL per dimension, nats.
    pub nats_per_dim: f64,
    /// Bits per dimension of dequantized integer data (with the levels' offset).
    pub bits_per_dim: Option<f64>,
    /// The exact mean NLL of the same rows under the data's law at t_ε, when it has one.
    pub exact_nll: Option<f64>,
    /// The mean continuous-time variational bound on the reverse SDE's NLL (Song et al. 2021,
    /// Theorem 1), nats per row, its standard error over rows and time samples, and its bits
    /// per dimension for dequantized integer data (`None`: `bound: None`).
    pub bound: Option<BoundSummary>,
    /// Model evaluations (batched calls; on a grid, every row's).
    pub nfe: u64,
    /// An adaptive solve's NFE per row: mean, min and max.
    pub nfe_per_row: Option<(f64, u64, u64)>,
    /// Device.
    pub device: String,
    /// Wall time, seconds.
    pub wall_seconds: f64,
    /// Files written.
    pub files: Vec<String>,
}

/// The variational bound's line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct BoundSummary {
    /// Mean bound, nats per row.
    pub nats: f64,
    /// Its standard error (over rows, and within each row over its time samples).
    pub se: f64,
    /// Bits per dimension of dequantized integer data (with the levels' offset).
    pub bits_per_dim: Option<f64>,
    /// Stratified time samples per row.
    pub samples: usize,
    /// Wall time, seconds.
    pub wall_seconds: f64,
}

impl fmt::Display for NllSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "nll of {} {} with {} ({}, {}, {} NFE{}, {} trace) in {:.2} s",
            self.rows,
            self.rows_from,
            self.model,
            self.solver,
            self.schedule,
            self.nfe,
            self.nfe_per_row
                .map_or(String::new(), |(mean, lo, hi)| format!(
                    " (per row: mean {mean:.1}, {lo}…{hi})"
                )),
            self.trace,
            self.wall_seconds
        )?;
        write!(
            f,
            "NLL {:.4} ± {:.4} nats ({:.4} nats/dim",
            self.nll, self.nll_se_rows, self.nats_per_dim
        )?;
        if let Some(b) = self.bits_per_dim {
            write!(f, ", {b:.4} bits/dim")?;
        }
        write!(f, ")")?;
        if let Some(p) = self.nll_se_probes {
            write!(f, "; probes' standard error {p:.4}")?;
        }
        if let Some(e) = self.exact_nll {
            write!(f, "; the exact law's NLL of the same rows {e:.4}")?;
        }
        writeln!(f)?;
        if let Some(b) = &self.bound {
            write!(
                f,
                "variational bound on the reverse SDE's NLL (Song et al. 2021, Thm 1; {} times per row, {:.2} s): {:.4} ± {:.4} nats",
                b.samples, b.wall_seconds, b.nats, b.se
            )?;
            if let Some(bits) = b.bits_per_dim {
                write!(f, " ({bits:.4} bits/dim)")?;
            }
            writeln!(f)?;
        }
        for file in &self.files {
            writeln!(f, "wrote {file}")?;
        }
        Ok(())
    }
}

fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs the config's `nll` job on `device`.
pub fn nll(config: &Config, device: Device, out: Option<PathBuf>) -> Result<NllSummary> {
    let spec: NllSpec = config.nll.clone().unwrap_or_default();
    if spec.rows == 0 {
        return Err(Error::invalid("nll", "rows", "must be at least 1"));
    }
    let dir = output_dir(config, out);
    sdeflow_kernel::io::ensure_writable_dir(&dir)?;
    crate::train::load_for_sampling(config, &dir)?;
    // The rows, on the host in f64, and their shape.
    let (mut values, shape, rows_from, levels) = match &spec.npy {
        Some(path) => {
            sdeflow_kernel::io::check_npy(path)?;
            let t = Tensor::read_npy(path).map_err(|e| {
                Error::invalid(
                    "nll",
                    "npy",
                    format!("{}: cannot read a .npy array: {e}", path.display()),
                )
            })?;
            let shape = t.dims().to_vec();
            let values = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            (values, shape, format!("rows of {}", path.display()), None)
        }
        None => {
            let Some(data) = &config.data else {
                return Err(Error::invalid(
                    "nll",
                    "data",
                    format!(
                        "{} names no `data:` and `nll:` no `npy:`; name the rows to evaluate",
                        config.file
                    ),
                ));
            };
            let split = match spec.split {
                NllSplit::Heldout => Split::Heldout,
                NllSplit::Train => Split::Train,
            };
            let batch = data.plugin.batch(split, config.seed, 0, spec.rows)?;
            let mut shape = vec![batch.len()];
            shape.extend(batch.shape.iter().copied());
            (
                batch.values,
                shape,
                format!("{} rows of {}", split.name(), data.name),
                data.plugin.levels(),
            )
        }
    };
    let n = shape[0];
    let dim: usize = shape[1..].iter().product();
    let model_shape = config.model.plugin.sample_shape();
    if shape[1..] != model_shape[..] {
        return Err(Error::invalid(
            "nll",
            "rows",
            format!(
                "the rows have shape {:?} but `{}` takes {model_shape:?}",
                &shape[1..],
                config.model.name
            ),
        ));
    }
    let dequantized = match levels {
        Some(l) if spec.dequantize => {
            let key = philox_key(config.seed, Stream::Dequantize);
            let cell = (l.hi - l.lo) / f64::from(l.levels);
            for (i, v) in values.iter_mut().enumerate() {
                let k = f64::from(l.level(*v));
                let (row, col) = ((i / dim) as u64, (i % dim) as u64);
                *v = l.lo + cell * (k + uniform_f64(key, row, col));
            }
            Some(l)
        }
        _ => None,
    };
    let x = Tensor::from_vec(values.clone(), shape.clone(), &Device::Cpu)?;

    let registry = sdeflow_plugins::registry()?;
    let solver = match &spec.solver {
        Some(s) => (s.name, s.plugin.clone()),
        None => (
            DEFAULT_NLL_SOLVER,
            registry.solver(DEFAULT_NLL_SOLVER, "()")?,
        ),
    };
    let mut builder = config
        .builder(device.clone())
        .solver(solver.1.clone())
        .solver_discretization()
        .denoise_final(false)
        .capture_trajectory(false);
    if solver.1.adaptive().is_none() {
        builder = builder
            .steps(spec.steps.unwrap_or(DEFAULT_NLL_STEPS))
            .grid(spec.grid.unwrap_or(GridKind::Uniform));
    }
    let pipeline = builder.build()?;
    let start = Instant::now();
    let out = pipeline.log_likelihood(&x, 0, spec.trace)?;
    let wall = start.elapsed().as_secs_f64();
    let bound = match spec.bound {
        None => None,
        Some(k) => {
            let start = Instant::now();
            let b = pipeline.variational_bound(&x, 0, k)?;
            let nats = b.value.iter().sum::<f64>() / n as f64;
            // Between rows, and each row's own Monte Carlo error.
            let var_rows = b.value.iter().map(|v| (v - nats).powi(2)).sum::<f64>()
                / (n.max(2) - 1) as f64
                / n as f64;
            let var_own = b.se.iter().map(|v| v * v).sum::<f64>() / (n * n) as f64;
            Some(BoundSummary {
                nats,
                se: var_rows.max(var_own).sqrt(),
                bits_per_dim: dequantized
                    .map(|l| nats / (dim as f64 * std::f64::consts::LN_2) + l.bits_offset()),
                samples: k,
                wall_seconds: start.elapsed().as_secs_f64(),
            })
        }
    };
    let nll: Vec<f64> = out.log_p.iter().map(|l| -l).collect();
    let mean = nll.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let se_probes = out
        .probe_se
        .as_ref()
        .map(|se| (se.iter().map(|s| s * s).sum::<f64>() / n as f64).sqrt() / (n as f64).sqrt());
    let exact_nll = match (
        &spec.npy,
        config
            .data
            .as_ref()
            .and_then(|d| d.plugin.source().exact_law()),
    ) {
        (None, Some(law)) if dequantized.is_none() => {
            let c = pipeline.sde().coefs(pipeline.sde().t_eps());
            let m = law.marginal(c.alpha, c.sigma)?;
            Some(-m.eval(&values).iter().map(|e| e.log_prob).sum::<f64>() / n as f64)
        }
        _ => None,
    };

    let mut files = Vec::new();
    let npy = dir.join("nll.npy");
    let nll_t = Tensor::from_vec(nll.clone(), n, &Device::Cpu)?;
    write_atomic(&npy, |tmp| Ok(nll_t.write_npy(tmp)?))?;
    files.push(npy.display().to_string());
    if spec.latents {
        let path = dir.join("latents.npy");
        let latent = out.latent.to_device(&Device::Cpu)?;
        write_atomic(&path, |tmp| Ok(latent.write_npy(tmp)?))?;
        files.push(path.display().to_string());
    }
    let png = dir.join("nll.png");
    let mut marks = vec![("mean", mean)];
    if let Some(e) = exact_nll {
        marks.push(("exact law's mean", e));
    }
    crate::plot::histogram(
        &png,
        &nll,
        &marks,
        "−log p(x), nats",
        &format!(
            "NLL of {rows_from} · {} · {}",
            config.model.name, config.sde.name
        ),
    )?;
    files.push(png.display().to_string());
    let trace = match spec.trace {
        Trace::Exact => "exact".to_string(),
        Trace::Hutchinson { probes, dist } => format!("Hutchinson ({probes} {dist:?} probes)"),
    };
    let mut summary = NllSummary {
        config: config.file.clone(),
        model: config.model.name.to_string(),
        param: config.target_name().to_string(),
        sde: config.sde.name.to_string(),
        solver: solver.0.to_string(),
        schedule: match solver.1.adaptive() {
            Some(a) => a.to_string(),
            None => format!(
                "{} {} steps",
                pipeline.discretization().steps,
                pipeline.discretization().grid
            ),
        },
        trace,
        rows_from,
        rows: n,
        dim,
        nll: mean,
        nll_se_rows: sd / (n as f64).sqrt(),
        nll_se_probes: se_probes,
        nats_per_dim: mean / dim as f64,
        bits_per_dim: dequantized
            .map(|l| mean / (dim as f64 * std::f64::consts::LN_2) + l.bits_offset()),
        exact_nll,
        bound,
        nfe: out.nfe,
        nfe_per_row: out.rows.as_ref().map(sdeflow_kernel::RowStats::nfe_spread),
        device: device_name(&device),
        wall_seconds: wall,
        files,
    };
    let path = dir.join("nll-summary.json");
    summary.files.push(path.display().to_string());
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&path, |tmp| std::fs::write(tmp, &text).map_err(io(tmp)))?;
    Ok(summary)
}
