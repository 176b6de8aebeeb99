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
    /// Wall time, seconds (merged from shards: the longest shard's).
    pub wall_seconds: f64,
    /// The shards (`--shard i/n`) the run was merged from (`sdeflow merge`).
    pub shards: Option<usize>,
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
        if let Some(k) = self.shards {
            writeln!(
                f,
                "merged from {k} shards (the time is the longest shard's)"
            )?;
        }
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

/// The rows an `nll` run evaluates, before dequantization: their values on the host in f64,
/// their shape (rows first), where they came from, and their levels when they are integers.
struct Rows {
    values: Vec<f64>,
    shape: Vec<usize>,
    from: String,
    levels: Option<sdeflow_kernel::data::Levels>,
}

fn rows(config: &Config, spec: &NllSpec) -> Result<Rows> {
    match &spec.npy {
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
            if shape.is_empty() {
                return Err(Error::invalid(
                    "nll",
                    "npy",
                    format!("{} holds a scalar, not rows", path.display()),
                ));
            }
            let values = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok(Rows {
                values,
                shape,
                from: format!("rows of {}", path.display()),
                levels: None,
            })
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
            Ok(Rows {
                values: batch.values,
                shape,
                from: format!("{} rows of {}", split.name(), data.name),
                levels: data.plugin.levels(),
            })
        }
    }
}

/// The `nll` run of a config: its spec, solver and pipeline.
struct Setup {
    spec: NllSpec,
    solver: &'static str,
    adaptive: Option<String>,
    pipeline: sdeflow_kernel::Pipeline,
    /// The weights file read, for a network.
    weights: Option<PathBuf>,
}

fn setup(config: &Config, device: &Device, dir: &std::path::Path) -> Result<Setup> {
    let spec: NllSpec = config.nll.clone().unwrap_or_default();
    if spec.rows == 0 {
        return Err(Error::invalid("nll", "rows", "must be at least 1"));
    }
    let weights = crate::train::load_for_sampling(config, dir)?;
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
    Ok(Setup {
        adaptive: solver.1.adaptive().map(|a| a.to_string()),
        solver: solver.0,
        pipeline: builder.build()?,
        spec,
        weights,
    })
}

/// What an `nll` run measured per row (the summary is a function of these, in row order, so
/// shards joined give the unsharded run's numbers bit for bit).
#[derive(Debug, Default)]
struct PerRow {
    /// −log p(x), nats.
    nll: Vec<f64>,
    /// Hutchinson's standard error per row.
    probe_se: Option<Vec<f64>>,
    /// The variational bound per row, and its standard error.
    bound: Option<(Vec<f64>, Vec<f64>)>,
    /// log p of the exact law at t_ε.
    exact: Option<Vec<f64>>,
}

impl PerRow {
    const KEYS: [&'static str; 5] = ["nll", "probe_se", "bound", "bound_se", "exact_log_p"];

    fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let vec = |v: &Vec<f64>| Tensor::from_vec(v.clone(), v.len(), &Device::Cpu);
        let mut out = vec![(Self::KEYS[0].to_string(), vec(&self.nll)?)];
        if let Some(p) = &self.probe_se {
            out.push((Self::KEYS[1].into(), vec(p)?));
        }
        if let Some((b, se)) = &self.bound {
            out.push((Self::KEYS[2].into(), vec(b)?));
            out.push((Self::KEYS[3].into(), vec(se)?));
        }
        if let Some(e) = &self.exact {
            out.push((Self::KEYS[4].into(), vec(e)?));
        }
        Ok(out)
    }

    /// Appends a shard's rows, read from its `rows.safetensors`.
    fn extend_from(&mut self, path: &std::path::Path, first: bool, rows: usize) -> Result<()> {
        let bytes = sdeflow_kernel::io::read_bounded(path, 1)?;
        let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("cannot read safetensors: {e}")))?;
        let get = |k: &str| -> Result<Option<Vec<f64>>> {
            t.get(k)
                .map(|v| -> Result<Vec<f64>> {
                    let v = v.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                    if v.len() != rows {
                        return Err(Error::file(
                            path,
                            format!("`{k}` holds {} rows, the shard {rows}", v.len()),
                        ));
                    }
                    Ok(v)
                })
                .transpose()
        };
        let same = |mine: bool, theirs: bool, k: &str| {
            if first || mine == theirs {
                Ok(())
            } else {
                Err(crate::shard::mismatch(
                    path.parent().unwrap_or(path),
                    format!("`{k}` is in some shards' rows and not in others'"),
                ))
            }
        };
        let nll = get("nll")?.ok_or_else(|| Error::file(path, "holds no `nll`"))?;
        self.nll.extend(nll);
        let (probe, bound, bound_se, exact) = (
            get("probe_se")?,
            get("bound")?,
            get("bound_se")?,
            get("exact_log_p")?,
        );
        same(self.probe_se.is_some(), probe.is_some(), "probe_se")?;
        same(self.bound.is_some(), bound.is_some(), "bound")?;
        same(self.exact.is_some(), exact.is_some(), "exact_log_p")?;
        if let Some(p) = probe {
            self.probe_se.get_or_insert_with(Vec::new).extend(p);
        }
        if let (Some(b), Some(se)) = (bound, bound_se) {
            let (vb, vse) = self.bound.get_or_insert_with(Default::default);
            vb.extend(b);
            vse.extend(se);
        }
        if let Some(e) = exact {
            self.exact.get_or_insert_with(Vec::new).extend(e);
        }
        Ok(())
    }
}

/// What a run (or a shard) evaluated: per row, the latents, the cost and the wall times.
struct Evaluated {
    per_row: PerRow,
    latent: Tensor,
    nfe: u64,
    spread: Option<crate::sample::Spread>,
    wall: f64,
    bound_wall: Option<f64>,
}

/// Evaluates rows `range` of `rows` (dequantizing integers with draws keyed by each row's
/// index in the run).
fn evaluate(
    config: &Config,
    setup: &Setup,
    rows: &Rows,
    range: std::ops::Range<usize>,
) -> Result<Evaluated> {
    let spec = &setup.spec;
    let dim: usize = rows.shape[1..].iter().product();
    let mut values = rows.values[range.start * dim..range.end * dim].to_vec();
    let mut shape = rows.shape.clone();
    shape[0] = range.len();
    if let (Some(l), true) = (rows.levels, spec.dequantize) {
        let key = philox_key(config.seed, Stream::Dequantize);
        let cell = (l.hi - l.lo) / f64::from(l.levels);
        for (i, v) in values.iter_mut().enumerate() {
            let k = f64::from(l.level(*v));
            let (row, col) = ((range.start + i / dim) as u64, (i % dim) as u64);
            *v = l.lo + cell * (k + uniform_f64(key, row, col));
        }
    }
    let pipeline = &setup.pipeline;
    let exact = match (
        &spec.npy,
        config
            .data
            .as_ref()
            .and_then(|d| d.plugin.source().exact_law()),
    ) {
        (None, Some(law)) if !(rows.levels.is_some() && spec.dequantize) => {
            let c = pipeline.sde().coefs(pipeline.sde().t_eps());
            let m = law.marginal(c.alpha, c.sigma)?;
            Some(m.eval(&values).iter().map(|e| e.log_prob).collect())
        }
        _ => None,
    };
    if range.is_empty() {
        // A shard the split left no rows (fewer whole chunks than shards).
        let mut latent_shape = vec![0];
        latent_shape.extend(&config.model.plugin.sample_shape());
        return Ok(Evaluated {
            per_row: PerRow {
                nll: Vec::new(),
                probe_se: matches!(spec.trace, Trace::Hutchinson { probes, .. } if probes > 1)
                    .then(Vec::new),
                bound: spec.bound.map(|_| (Vec::new(), Vec::new())),
                exact,
            },
            latent: Tensor::zeros(latent_shape, setup.pipeline.dtype(), &Device::Cpu)?,
            nfe: 0,
            spread: None,
            wall: 0.0,
            bound_wall: None,
        });
    }
    let x = Tensor::from_vec(values, shape, &Device::Cpu)?;
    let offset = range.start as u64;
    let start = Instant::now();
    let out = pipeline.log_likelihood(&x, offset, spec.trace)?;
    let wall = start.elapsed().as_secs_f64();
    let (bound, bound_wall) = match spec.bound {
        None => (None, None),
        Some(k) => {
            let start = Instant::now();
            let b = pipeline.variational_bound(&x, offset, k)?;
            (Some((b.value, b.se)), Some(start.elapsed().as_secs_f64()))
        }
    };
    Ok(Evaluated {
        per_row: PerRow {
            nll: out.log_p.iter().map(|l| -l).collect(),
            probe_se: out.probe_se,
            bound,
            exact,
        },
        latent: out.latent.to_device(&Device::Cpu)?,
        nfe: out.nfe,
        spread: out.rows.as_ref().map(crate::sample::Spread::of),
        wall,
        bound_wall,
    })
}

/// Runs the config's `nll` job on `device`.
pub fn nll(config: &Config, device: Device, out: Option<PathBuf>) -> Result<NllSummary> {
    let dir = output_dir(config, out);
    sdeflow_kernel::io::ensure_writable_dir(&dir)?;
    let setup = setup(config, &device, &dir)?;
    let rows = rows(config, &setup.spec)?;
    check_shape(config, &rows.shape)?;
    let n = rows.shape[0];
    let e = evaluate(config, &setup, &rows, 0..n)?;
    let mut files = Vec::new();
    let npy = dir.join("nll.npy");
    let nll_t = Tensor::from_vec(e.per_row.nll.clone(), n, &Device::Cpu)?;
    write_atomic(&npy, |tmp| Ok(nll_t.write_npy(tmp)?))?;
    files.push(npy.display().to_string());
    if setup.spec.latents {
        let path = dir.join("latents.npy");
        write_atomic(&path, |tmp| Ok(e.latent.write_npy(tmp)?))?;
        files.push(path.display().to_string());
    }
    let measured = Measured {
        rows: n,
        dim: rows.shape[1..].iter().product(),
        from: rows.from,
        levels: rows.levels.filter(|_| setup.spec.dequantize),
        nfe: e.nfe,
        spread: e.spread,
        wall: e.wall,
        bound_wall: e.bound_wall,
        shards: None,
    };
    summarize(config, &setup, &e.per_row, measured, &device, &dir, files)
}

/// One shard of [`nll`] (`--shard i/n`): its rows, into `<out>/shards/nll-i-of-n/`: `nll.npy`,
/// `latents.npy`, `rows.safetensors` (each row's standard errors, bound and exact log p) and
/// `shard.json` last.
pub fn nll_shard(
    config: &Config,
    device: Device,
    out: Option<PathBuf>,
    shard: crate::shard::Shard,
) -> Result<crate::shard::Report> {
    let dir = output_dir(config, out);
    let folder = shard.folder(&dir, crate::shard::NLL);
    crate::shard::begin(&folder)?;
    let setup = setup(config, &device, &dir)?;
    let rows = rows(config, &setup.spec)?;
    check_shape(config, &rows.shape)?;
    let n = rows.shape[0];
    let range = shard.rows(n, config.chunk_rows.unwrap_or(1));
    let e = evaluate(config, &setup, &rows, range.clone())?;
    let mut files = Vec::new();
    let npy = folder.join("nll.npy");
    let nll_t = Tensor::from_vec(e.per_row.nll.clone(), range.len(), &Device::Cpu)?;
    write_atomic(&npy, |tmp| Ok(nll_t.write_npy(tmp)?))?;
    files.push(npy.display().to_string());
    if setup.spec.latents {
        let path = folder.join("latents.npy");
        write_atomic(&path, |tmp| Ok(e.latent.write_npy(tmp)?))?;
        files.push(path.display().to_string());
    }
    let path = folder.join("rows.safetensors");
    sdeflow_kernel::io::save_tensors(&path, e.per_row.tensors()?, None)?;
    files.push(path.display().to_string());
    let mut manifest = crate::shard::Manifest::new(
        config,
        crate::shard::NLL,
        shard,
        (range, n),
        &device,
        setup.weights.as_deref(),
    )?;
    manifest.wall_seconds = e.wall;
    manifest.nll = Some(crate::shard::NllShard {
        nfe: e.nfe,
        spread: e.spread,
        bound_seconds: e.bound_wall,
    });
    crate::shard::finish(&folder, &manifest, files)
}

/// Joins the shards of `nll` in `dir` into the unsharded run's `nll.npy`, `latents.npy`
/// (byte for byte), `nll.png` and summary.
pub fn merge(config: &Config, device: Device, dir: &std::path::Path) -> Result<NllSummary> {
    let setup = setup(config, &device, dir)?;
    let shards = crate::shard::collect(
        config,
        dir,
        crate::shard::NLL,
        None,
        config.chunk_rows.unwrap_or(1),
        &device,
        setup.weights.as_deref(),
    )?;
    let n = shards[0].1.total;
    let mut per_row = PerRow::default();
    let (mut nfe, mut spread, mut wall, mut bound_wall) = (0u64, None, 0.0f64, None::<f64>);
    let mut latents: Option<(Vec<usize>, DType)> = None;
    for (k, (folder, m)) in shards.iter().enumerate() {
        let part = m
            .nll
            .as_ref()
            .ok_or_else(|| Error::file(folder, "is not an `nll` shard's manifest"))?;
        per_row.extend_from(&folder.join("rows.safetensors"), k == 0, m.rows)?;
        nfe = nfe.max(part.nfe);
        spread = crate::sample::Spread::join(spread, part.spread);
        wall = wall.max(m.wall_seconds);
        bound_wall = match (bound_wall, part.bound_seconds) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if setup.spec.latents {
            let r = sdeflow_kernel::io::NpyReader::open(&folder.join("latents.npy"))?;
            let (shape, dtype) = (r.shape()[1..].to_vec(), r.dtype());
            if latents.get_or_insert_with(|| (shape.clone(), dtype)) != &(shape, dtype) {
                return Err(crate::shard::mismatch(
                    folder,
                    "its latents.npy has another row shape or dtype".into(),
                ));
            }
        }
    }
    let mut files = Vec::new();
    let npy = dir.join("nll.npy");
    let nll_t = Tensor::from_vec(per_row.nll.clone(), n, &Device::Cpu)?;
    write_atomic(&npy, |tmp| Ok(nll_t.write_npy(tmp)?))?;
    files.push(npy.display().to_string());
    if let Some((row_shape, dtype)) = &latents {
        let path = dir.join("latents.npy");
        let mut full = vec![n];
        full.extend(row_shape);
        write_atomic(&path, |tmp| {
            let mut file = sdeflow_kernel::io::NpyRows::create(tmp, &full, *dtype)?;
            for (folder, m) in &shards {
                let mut r = sdeflow_kernel::io::NpyReader::open(&folder.join("latents.npy"))?;
                if r.shape()[0] != m.rows {
                    return Err(crate::shard::mismatch(
                        folder,
                        format!(
                            "its latents.npy holds {} rows, not {}",
                            r.shape()[0],
                            m.rows
                        ),
                    ));
                }
                let mut left = m.rows;
                while left > 0 {
                    let x = r.read_rows(4096.min(left))?;
                    left -= x.dim(0)?;
                    file.push(&x)?;
                }
            }
            file.finish()
        })?;
        files.push(path.display().to_string());
    }
    let rows_from = match &setup.spec.npy {
        Some(path) => format!("rows of {}", path.display()),
        None => {
            let data = config
                .data
                .as_ref()
                .ok_or_else(|| Error::invalid("nll", "data", "the config names no data"))?;
            let split = match setup.spec.split {
                NllSplit::Heldout => Split::Heldout,
                NllSplit::Train => Split::Train,
            };
            format!("{} rows of {}", split.name(), data.name)
        }
    };
    let levels = match (&setup.spec.npy, &config.data) {
        (None, Some(data)) if setup.spec.dequantize => data.plugin.levels(),
        _ => None,
    };
    let measured = Measured {
        rows: n,
        dim: config.model.plugin.sample_shape().iter().product(),
        from: rows_from,
        levels,
        nfe,
        spread,
        wall,
        bound_wall,
        shards: Some(shards.len()),
    };
    summarize(config, &setup, &per_row, measured, &device, dir, files)
}

fn check_shape(config: &Config, shape: &[usize]) -> Result<()> {
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
    Ok(())
}

/// What a run measured beside its rows.
struct Measured {
    rows: usize,
    dim: usize,
    from: String,
    levels: Option<sdeflow_kernel::data::Levels>,
    nfe: u64,
    spread: Option<crate::sample::Spread>,
    wall: f64,
    bound_wall: Option<f64>,
    shards: Option<usize>,
}

/// The summary of `per_row` (all the run's rows, in order), with the histogram and the JSON
/// written to `dir`.
fn summarize(
    config: &Config,
    setup: &Setup,
    per_row: &PerRow,
    m: Measured,
    device: &Device,
    dir: &std::path::Path,
    mut files: Vec<String>,
) -> Result<NllSummary> {
    let spec = &setup.spec;
    let (n, dim) = (m.rows, m.dim);
    let nll = &per_row.nll;
    let bound = match (&per_row.bound, spec.bound) {
        (Some((value, se)), Some(k)) => {
            let nats = value.iter().sum::<f64>() / n as f64;
            // Between rows, and each row's own Monte Carlo error.
            let var_rows = value.iter().map(|v| (v - nats).powi(2)).sum::<f64>()
                / (n.max(2) - 1) as f64
                / n as f64;
            let var_own = se.iter().map(|v| v * v).sum::<f64>() / (n * n) as f64;
            Some(BoundSummary {
                nats,
                se: var_rows.max(var_own).sqrt(),
                bits_per_dim: m
                    .levels
                    .map(|l| nats / (dim as f64 * std::f64::consts::LN_2) + l.bits_offset()),
                samples: k,
                wall_seconds: m.bound_wall.unwrap_or(0.0),
            })
        }
        _ => None,
    };
    let mean = nll.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let se_probes = per_row
        .probe_se
        .as_ref()
        .map(|se| (se.iter().map(|s| s * s).sum::<f64>() / n as f64).sqrt() / (n as f64).sqrt());
    let exact_nll = per_row
        .exact
        .as_ref()
        .map(|e| -e.iter().sum::<f64>() / n as f64);

    let png = dir.join("nll.png");
    let mut marks = vec![("mean", mean)];
    if let Some(e) = exact_nll {
        marks.push(("exact law's mean", e));
    }
    crate::plot::histogram(
        &png,
        nll,
        &marks,
        "−log p(x), nats",
        &format!(
            "NLL of {} · {} · {}",
            m.from, config.model.name, config.sde.name
        ),
    )?;
    files.push(png.display().to_string());
    let trace = match spec.trace {
        Trace::Exact => "exact".to_string(),
        Trace::Hutchinson { probes, dist } => format!("Hutchinson ({probes} {dist:?} probes)"),
    };
    let discretization = setup.pipeline.discretization();
    let mut summary = NllSummary {
        config: config.file.clone(),
        model: config.model.name.to_string(),
        param: config.target_name().to_string(),
        sde: config.sde.name.to_string(),
        solver: setup.solver.to_string(),
        schedule: match &setup.adaptive {
            Some(a) => a.clone(),
            None => format!("{} {} steps", discretization.steps, discretization.grid),
        },
        trace,
        rows_from: m.from,
        rows: n,
        dim,
        nll: mean,
        nll_se_rows: sd / (n as f64).sqrt(),
        nll_se_probes: se_probes,
        nats_per_dim: mean / dim as f64,
        bits_per_dim: m
            .levels
            .map(|l| mean / (dim as f64 * std::f64::consts::LN_2) + l.bits_offset()),
        exact_nll,
        bound,
        nfe: m.nfe,
        nfe_per_row: m.spread.map(|s| s.nfe_spread()),
        device: device_name(device),
        wall_seconds: m.wall,
        shards: m.shards,
        files,
    };
    let path = dir.join("nll-summary.json");
    summary.files.push(path.display().to_string());
    let text = serde_json::to_string_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&path, |tmp| std::fs::write(tmp, &text).map_err(io(tmp)))?;
    Ok(summary)
}
