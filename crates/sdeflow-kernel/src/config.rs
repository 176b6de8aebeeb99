//! RON pipeline configs. A config is one derived-serde struct, [`Config`]: its plugin fields
//! are [`Entry`]s, read through the registry that [`Config::parse`] is given (the
//! [`de`](crate::de) module keeps it in scope while the file is read); every other field is
//! plain serde with `deny_unknown_fields`, so a new field is one line with its default, and a
//! new section a derived sub-struct like [`Outputs`]. Every error keeps the file, line and
//! column.
//!
//! A model is built on the config's device in its dtype, with the config's data (an oracle
//! reads its exact law), so a first pass reads `device`, `dtype` and `data` (and skips the
//! rest); the second reads everything else with the model's context in scope. What the model predicts is not part of that context: an exact model fixes its own
//! target, a network learns the one `param:` names, and [`Config::parse`] checks that the two
//! agree.

use std::{fmt, path::PathBuf};

use candle_core::{DType, Device};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    Error, GridKind, ModelContext, Pipeline, PipelineBuilder, Registry, Result, TrainSpec,
    de::{Entry, locate_field, ron_options, spanned},
    registry::{DataKind, ModelKind, ParamKind, SdeKind, SolverKind, WeightingKind},
};

/// Where to run: `cpu`, `cuda(N)` or `metal(N)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// Metal device N.
    Metal(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;
    /// Parses `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N` (the command line's spelling).
    fn from_str(s: &str) -> Result<Self> {
        let (kind, index) = s.split_once(':').unwrap_or((s, "0"));
        let bad = || {
            Error::invalid(
                "--device",
                "device",
                format!("`{s}` is not a device; use cpu, cuda:N or metal:N"),
            )
        };
        let n: usize = index.parse().map_err(|_| bad())?;
        match kind {
            "cpu" if !s.contains(':') => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(n)),
            "metal" => Ok(Self::Metal(n)),
            _ => Err(bad()),
        }
    }
}

/// The floating-point type samples are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DTypeSpec {
    /// f32 (the default).
    #[default]
    F32,
    /// f64 (CPU and CUDA; Metal has none).
    F64,
}

impl DTypeSpec {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F64 => DType::F64,
        }
    }
}

/// What a run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    /// The directory (default `out/<config file stem>`).
    pub dir: Option<PathBuf>,
    /// Samples as `samples.npy`.
    pub npy: bool,
    /// A PNG scatter of 2-D samples beside exact data.
    pub png: bool,
    /// A JSON summary of metrics.
    pub json: bool,
    /// Every sample's path: `trajectory.npy` ([steps + 1, n, d]) and, in 2-D, `trajectory.png`.
    pub trajectory: bool,
    /// Write samples with NaN or infinities instead of stopping at the step that made them
    /// (the default stops with the step, t and the first offending samples); the summary
    /// counts them.
    pub keep_non_finite: bool,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            dir: None,
            npy: true,
            png: true,
            json: true,
            trajectory: false,
            keep_non_finite: false,
        }
    }
}

/// A job a config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Sample from the prior to t_ε and measure against the exact law when there is one.
    Sample,
    /// Train the model by denoising score matching as `train:` says.
    Train,
    /// log p_{t_ε} of data rows through the probability-flow ODE, as `nll:` says.
    Nll,
}

/// Which rows `nll` evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NllSplit {
    /// The data's held-out split (the default).
    #[default]
    Heldout,
    /// The training split.
    Train,
}

/// The solver `nll` integrates with unless `nll: (solver: ...)` names another: Dormand–Prince
/// 5(4) at score_sde's tolerances, each sample on its own steps.
pub const DEFAULT_NLL_SOLVER: &str = "dopri5";
/// Steps of an `nll` solver on a grid, unless `nll: (steps: ...)` says otherwise.
pub const DEFAULT_NLL_STEPS: usize = 200;

/// How `nll` computes log-likelihoods: the `nll:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename = "nll", deny_unknown_fields, default)]
pub struct NllSpec {
    /// Rows of the data's split (from row 0 of the config's seed).
    pub rows: usize,
    /// Which split.
    pub split: NllSplit,
    /// A `.npy` of rows `[n, ...]` to evaluate instead of the data's (`npy: "rows.npy"`).
    #[serde(deserialize_with = "some")]
    pub npy: Option<PathBuf>,
    /// The trace: `exact` or `hutchinson(probes: k, dist: rademacher | gaussian)`.
    pub trace: crate::likelihood::Trace,
    /// The solver integrating forward (one that can: default [`DEFAULT_NLL_SOLVER`], adaptive
    /// per sample).
    #[serde(deserialize_with = "some")]
    pub solver: Option<Entry<SolverKind>>,
    /// Steps of a solver on a grid (default 200); an adaptive solver takes none.
    #[serde(deserialize_with = "steps")]
    pub steps: Option<usize>,
    /// The grid of a solver on a grid (default uniform in t); an adaptive solver takes none.
    #[serde(deserialize_with = "grid")]
    pub grid: Option<GridKind>,
    /// Integer data: add uniform noise within each level's cell before evaluating, and report
    /// bits per dimension with the levels' offset (MATH.md §9).
    pub dequantize: bool,
    /// Write the PF-ODE's encodings x(T) as `latents.npy`.
    pub latents: bool,
    /// Beside the ODE's exact NLL, the continuous-time variational bound on the reverse SDE's
    /// NLL (Song et al. 2021, Theorem 1) with this many stratified time samples per row (at
    /// least 2; default 256), or `None`.
    #[serde(deserialize_with = "bound_samples")]
    pub bound: Option<usize>,
}

/// `bound: 64`, `bound: Some(64)` or `bound: None`; a count of at least 2.
fn bound_samples<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a count of time samples per row (at least 2), or None")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            if v < 2 {
                return Err(E::custom(format!(
                    "invalid `bound`: {v} time samples per row; at least 2 are needed for a standard error (or None)"
                )));
            }
            usize::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("invalid `bound`: {v} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "invalid `bound`: {v} time samples per row; at least 2 are needed (or None)"
                ))),
            }
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(
            self,
            d: D2,
        ) -> std::result::Result<Self::Value, D2::Error> {
            d.deserialize_any(Count)
        }
    }
    d.deserialize_any(Count)
}

impl Default for NllSpec {
    fn default() -> Self {
        Self {
            rows: 2_000,
            split: NllSplit::Heldout,
            npy: None,
            trace: crate::likelihood::Trace::Exact,
            solver: None,
            steps: None,
            grid: None,
            dequantize: true,
            latents: true,
            bound: Some(256),
        }
    }
}

/// Which classes a conditional model's samples are drawn for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classes {
    /// Every class in turn: sample i is drawn for class i mod K (the default).
    #[default]
    All,
    /// These classes in turn: sample i for `classes[i mod len]`.
    Only(Vec<u32>),
    /// No class: the unconditional model (every label ∅).
    None,
}

/// Class-conditional sampling with classifier-free guidance: the `guidance:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "guidance", deny_unknown_fields, default)]
pub struct GuidanceSpec {
    /// The scale w of `ε̂ = (1 + w) ε̂(x, y) − w ε̂(x, ∅)` (0: the conditional model alone).
    pub scale: f64,
    /// The classes drawn.
    pub classes: Classes,
    /// Candidate scales: `sample` draws `search_samples` samples at each with the seed after the
    /// config's, keeps the one whose samples are closest to the training images of their class
    /// (mean class-conditional pixel sliced W2), and samples and scores with it under the
    /// config's seed. Empty (the default): `scale`.
    pub search: Vec<f64>,
    /// Samples per candidate scale.
    pub search_samples: usize,
}

impl Default for GuidanceSpec {
    fn default() -> Self {
        Self {
            scale: 0.0,
            classes: Classes::All,
            search: Vec::new(),
            search_samples: 1_000,
        }
    }
}

impl GuidanceSpec {
    /// The label of sample `i` for a model of `classes` classes: [`Classes`] in turn, or ∅.
    pub fn label(&self, i: u64, classes: usize) -> u32 {
        match &self.classes {
            Classes::All => (i % classes.max(1) as u64) as u32,
            Classes::Only(list) if !list.is_empty() => list[(i % list.len() as u64) as usize],
            _ => crate::null_label(classes),
        }
    }

    /// The labels of samples `offset..offset + n`, `[n]` u32.
    pub fn labels(
        &self,
        offset: u64,
        n: usize,
        classes: usize,
        device: &Device,
    ) -> Result<candle_core::Tensor> {
        let y: Vec<u32> = (0..n as u64)
            .map(|i| self.label(offset + i, classes))
            .collect();
        Ok(candle_core::Tensor::from_vec(y, n, device)?)
    }

    /// The classes drawn, in turn (none for the unconditional model).
    pub fn drawn(&self, classes: usize) -> Vec<u32> {
        match &self.classes {
            Classes::All => (0..classes as u32).collect(),
            Classes::Only(list) => list.clone(),
            Classes::None => Vec::new(),
        }
    }

    /// Checks the scales, the classes (below `classes`) and the search.
    pub fn validate(&self, classes: usize) -> std::result::Result<(), (&'static str, String)> {
        if !self.scale.is_finite() {
            return Err(("scale", format!("{} is not a finite scale", self.scale)));
        }
        if let Classes::Only(list) = &self.classes {
            if list.is_empty() {
                return Err((
                    "classes",
                    "name at least one class, or write `classes: all`".into(),
                ));
            }
            if let Some(bad) = list.iter().find(|&&c| c as usize >= classes) {
                return Err((
                    "classes",
                    format!(
                        "class {bad} is not one of the model's {classes} classes (0 … {})",
                        classes.saturating_sub(1)
                    ),
                ));
            }
        }
        if let Some(bad) = self.search.iter().find(|w| !w.is_finite()) {
            return Err(("search", format!("{bad} is not a finite scale")));
        }
        if !self.search.is_empty() && self.search_samples < 2 * classes.max(1) {
            return Err((
                "search_samples",
                format!(
                    "{} samples cannot compare {classes} classes; use at least {}",
                    self.search_samples,
                    2 * classes.max(1)
                ),
            ));
        }
        Ok(())
    }
}

/// Which weights of a checkpoint a job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weights {
    /// The first EMA's (the default: what score_sde, k-diffusion and EDM sample with).
    #[default]
    Ema,
    /// The trained weights themselves.
    Model,
}

/// The checkpoint a trained network is read from by `sample`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename = "checkpoint", deny_unknown_fields, default)]
pub struct CheckpointRef {
    /// The run's checkpoint root (default: `checkpoints` in the output directory, where
    /// `train` writes them).
    pub dir: Option<PathBuf>,
    /// The step (default: the one `latest` names).
    pub step: Option<u64>,
    /// Which weights.
    pub weights: Weights,
}

/// A parsed, validated config: the plugins built, the rest typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename = "config", deny_unknown_fields)]
pub struct Config {
    /// The file it came from (for messages and default output paths).
    #[serde(skip)]
    pub file: String,
    /// The device asked for.
    #[serde(default)]
    pub device: DeviceSpec,
    /// The dtype of samples.
    #[serde(default)]
    pub dtype: DTypeSpec,
    /// The seed of every draw.
    #[serde(default)]
    pub seed: u64,
    /// What the model learns from and is evaluated on (read in the first pass, before the
    /// model: see the module docs).
    #[serde(default, deserialize_with = "read_in_first_pass")]
    pub data: Option<Entry<DataKind>>,
    /// The forward SDE.
    pub sde: Entry<SdeKind>,
    /// The parameterization a network learns (and is read in). A model that fixes its own
    /// target (the oracle: the score) needs none; if given it must name that target.
    #[serde(default, deserialize_with = "some")]
    pub param: Option<Entry<ParamKind>>,
    /// The time weighting of the denoising loss, with its t-density; [`Config::parse`] fills in
    /// `simple()` ([`DEFAULT_WEIGHTING`]) when the file names none.
    #[serde(default, deserialize_with = "some")]
    pub weighting: Option<Entry<WeightingKind>>,
    /// The score model.
    pub model: Entry<ModelKind>,
    /// The solver.
    pub solver: Entry<SolverKind>,
    /// The grid (default: the solver's for this SDE).
    #[serde(default, deserialize_with = "grid")]
    pub grid: Option<GridKind>,
    /// The step count (default: the solver's for this SDE).
    #[serde(default, deserialize_with = "steps")]
    pub steps: Option<usize>,
    /// Samples to draw.
    #[serde(default = "default_samples", deserialize_with = "samples")]
    pub samples: usize,
    /// `sample` starts from these states at T instead of prior draws: a `.npy` of
    /// `[samples, ...]` — an `nll` run's `latents.npy`, say, which a PF-ODE solver decodes back
    /// to the rows it encoded.
    #[serde(default, deserialize_with = "some")]
    pub latents: Option<PathBuf>,
    /// Model chunk rows (`None`: chunking, and batch invariance, off).
    #[serde(default = "default_chunk_rows", deserialize_with = "chunk_rows")]
    pub chunk_rows: Option<usize>,
    /// End with Tweedie's denoising step x̂₀ at t_ε (one more NFE; samples of p₀).
    #[serde(default)]
    pub denoise_final: bool,
    /// What to write.
    #[serde(default)]
    pub outputs: Outputs,
    /// The jobs `run` performs, in order.
    #[serde(default = "default_jobs")]
    pub jobs: Vec<Job>,
    /// How `train` trains (default: [`TrainSpec::default`]).
    #[serde(default, deserialize_with = "train")]
    pub train: Option<TrainSpec>,
    /// How `nll` evaluates (default: [`NllSpec::default`]).
    #[serde(default, deserialize_with = "some")]
    pub nll: Option<NllSpec>,
    /// Class-conditional sampling and guidance, for a conditional model (default: every
    /// class in turn, w = 0).
    #[serde(default, deserialize_with = "some")]
    pub guidance: Option<GuidanceSpec>,
    /// Where `sample` reads a trained network from (default: the run's own checkpoints).
    #[serde(default, deserialize_with = "some")]
    pub checkpoint: Option<CheckpointRef>,
    /// A hash of the config's text: a checkpoint records it, and a resume from another config
    /// is an error.
    #[serde(skip)]
    pub hash: String,
    /// The text it was read from (for the positions of errors found after reading).
    #[serde(skip)]
    pub text: String,
}

/// About how many bytes of state one piece of a `sample` run holds ([`Config::sample_piece_rows`]).
pub const SAMPLE_PIECE_BYTES: usize = 4 << 20;
/// The most rows `sample`'s sliced W2, mode shares and plots read: the first ones (the files
/// hold every row, and the mean and covariance errors are over every row). Conformance's
/// set size; the metric holds 256 sorted projections of its rows (40 MiB here).
pub const METRIC_ROWS: usize = 20_000;

/// The default sample count.
pub const DEFAULT_SAMPLES: usize = 10_000;

fn default_samples() -> usize {
    DEFAULT_SAMPLES
}

fn default_chunk_rows() -> Option<usize> {
    Some(crate::denoiser::DEFAULT_CHUNK_ROWS)
}

fn default_jobs() -> Vec<Job> {
    vec![Job::Sample]
}

/// An optional field written without `Some(...)`: `grid: uniform`.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A count of at least 1, named `field` in the error.
fn at_least_one<E: serde::de::Error>(field: &str, v: usize) -> std::result::Result<usize, E> {
    if v == 0 {
        Err(E::custom(format!("invalid `{field}`: must be at least 1")))
    } else {
        Ok(v)
    }
}

fn steps<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    at_least_one("steps", usize::deserialize(d)?).map(Some)
}

/// A grid, its parameters checked where they are read (so the error has a position).
fn grid<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<GridKind>, D::Error> {
    let grid = GridKind::deserialize(d)?;
    grid.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(grid))
}

fn samples<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    at_least_one("samples", usize::deserialize(d)?)
}

fn train<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<TrainSpec>, D::Error> {
    let spec = TrainSpec::deserialize(d)?;
    spec.validate().map_err(serde::de::Error::custom)?;
    Ok(Some(spec))
}

fn chunk_rows<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    Option::<usize>::deserialize(d)?
        .map(|c| at_least_one("chunk_rows", c))
        .transpose()
}

/// What the first pass reads: what the model is built with. Every other field is skipped.
#[derive(Deserialize)]
#[serde(rename = "config")]
struct Prelude {
    #[serde(default)]
    device: DeviceSpec,
    #[serde(default)]
    dtype: DTypeSpec,
    #[serde(default, deserialize_with = "some")]
    data: Option<Entry<DataKind>>,
}

/// The second pass skips `data:`, which the first pass built (a file is read once).
fn read_in_first_pass<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Entry<DataKind>>, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| None)
}

/// The first 16 bytes of the SHA-256 of `text`, in hex.
pub fn text_hash(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The weighting a config without `weighting:` trains with: DDPM's w_ε = 1.
pub const DEFAULT_WEIGHTING: &str = "simple";

impl Config {
    /// Parses `text` (from `file`, for messages), reading every plugin through `registry`.
    /// `device` turns the config's device into a candle device (the host owns device
    /// features); its error is reported at the `device` field.
    pub fn parse(
        file: &str,
        text: &str,
        registry: &Registry,
        device: &dyn Fn(DeviceSpec) -> Result<Device>,
    ) -> Result<Self> {
        let at = |e: ron::error::SpannedError| spanned(file, text, &e);
        let at_field = |field: &str, msg: String| {
            let (line, col) = locate_field(text, field).unwrap_or((1, 1));
            Error::Config {
                file: file.to_string(),
                line,
                col,
                msg,
            }
        };
        let prelude: Prelude = registry
            .reading(None, || ron_options().from_str(text))
            .map_err(at)?;
        let candle_device =
            device(prelude.device).map_err(|e| at_field("device", e.to_string()))?;
        let mut ctx = ModelContext::new(candle_device, prelude.dtype.dtype());
        if let Some(data) = &prelude.data {
            ctx = ctx.with_data(data.plugin.clone());
        }
        let mut config: Config = registry
            .reading(Some(ctx), || ron_options().from_str(text))
            .map_err(at)?;
        config.file = file.to_string();
        config.hash = text_hash(text);
        config.text = text.to_string();
        config.data = prelude.data;
        if let Some(data) = &config.data {
            let (model, rows) = (
                config.model.plugin.sample_shape(),
                data.plugin.sample_shape(),
            );
            if model != rows {
                return Err(at_field(
                    "model",
                    format!(
                        "invalid `model`: `{}` takes rows of shape {model:?} but data `{}` has rows of shape {rows:?}; make the model's shape match the data",
                        config.model.name, data.name
                    ),
                ));
            }
        }
        if let Some(a) = config.solver.plugin.adaptive() {
            let set = [
                ("steps", config.steps.map(|n| n.to_string())),
                ("grid", config.grid.map(|g| g.to_string())),
            ];
            if config.outputs.trajectory {
                return Err(at_field(
                    "trajectory",
                    format!(
                        "invalid `trajectory`: `{}` steps each sample at its own times, so there is no common grid to record; remove `trajectory: true` or sample with a solver on a grid (rk4, dpmpp_2m)",
                        config.solver.name
                    ),
                ));
            }
            for (field, value) in set {
                if let Some(value) = value {
                    return Err(at_field(
                        field,
                        format!(
                            "invalid `{field}`: `{}` chooses every sample's steps itself (rtol {:e}, atol {:e}); remove `{field}: {value}` and set its tolerances instead, e.g. `solver: {}(rtol: 1e-6)`",
                            config.solver.name,
                            a.tolerances.rtol,
                            a.tolerances.atol,
                            config.solver.name
                        ),
                    ));
                }
            }
        }
        if let Some(nll) = &config.nll {
            let at_nll = |field: &str, msg: String| {
                let (line, col) = crate::de::locate_field_in(text, "nll", field)
                    .or_else(|| locate_field(text, "nll"))
                    .unwrap_or((1, 1));
                Error::Config {
                    file: file.to_string(),
                    line,
                    col,
                    msg: format!("nll: {msg}"),
                }
            };
            let (name, solver) = match &nll.solver {
                Some(s) => (s.name, Some(s.plugin.clone())),
                None => (
                    DEFAULT_NLL_SOLVER,
                    registry.solver(DEFAULT_NLL_SOLVER, "()").ok(),
                ),
            };
            if let Some(solver) = solver {
                if !solver.integrates_likelihood() {
                    return Err(at_nll(
                        "solver",
                        format!(
                            "invalid `solver`: `{name}` cannot carry the log-density change forward; use a Runge–Kutta PF-ODE solver (dopri5, bosh3, rk4, heun, euler)"
                        ),
                    ));
                }
                if solver.adaptive().is_some() {
                    let set = [
                        ("steps", nll.steps.map(|n| n.to_string())),
                        ("grid", nll.grid.map(|g| g.to_string())),
                    ];
                    for (field, value) in set {
                        if let Some(value) = value {
                            return Err(at_nll(
                                field,
                                format!(
                                    "invalid `{field}`: `{name}` chooses every sample's steps itself; remove `{field}: {value}` and set its tolerances instead, e.g. `solver: {name}(rtol: 1e-6)`"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        match (&config.guidance, config.model.plugin.classes()) {
            (Some(_), None) => {
                return Err(at_field(
                    "guidance",
                    format!(
                        "invalid `guidance`: `{}` is not conditional (it takes no class labels); remove `guidance:` or train a conditional model (e.g. `unet(classes: Some(10))` on labelled data)",
                        config.model.name
                    ),
                ));
            }
            (Some(g), Some(k)) => {
                if let Err((field, why)) = g.validate(k) {
                    let (line, col) = crate::de::locate_field_in(text, "guidance", field)
                        .or_else(|| locate_field(text, "guidance"))
                        .unwrap_or((1, 1));
                    return Err(Error::Config {
                        file: file.to_string(),
                        line,
                        col,
                        msg: format!("guidance: invalid `{field}`: {why}"),
                    });
                }
            }
            _ => {}
        }
        if let (Some(k), Some(data)) = (config.model.plugin.classes(), &config.data)
            && let Some(m) = data.plugin.source().classes()
            && m != k
        {
            return Err(at_field(
                "model",
                format!(
                    "invalid `model`: `{}` is conditional on {k} classes but data `{}` has {m}; set the model's classes to {m}",
                    config.model.name, data.name
                ),
            ));
        }
        if config.weighting.is_none() {
            // The default when it is registered (a registry without it has no default).
            config.weighting = registry
                .entry::<WeightingKind>(DEFAULT_WEIGHTING, "()", &())
                .ok();
        }
        if let Err((outer, field, why)) =
            config.check_resources(&crate::resources::Budget::current()?)
        {
            let (line, col) = match outer {
                Some(outer) => crate::de::locate_field_in(text, outer, field)
                    .or_else(|| locate_field(text, outer)),
                None => locate_field(text, field),
            }
            .unwrap_or((1, 1));
            return Err(Error::Config {
                file: file.to_string(),
                line,
                col,
                msg: format!(
                    "{}invalid `{field}`: {why}",
                    outer.map_or(String::new(), |o| format!("{o}: "))
                ),
            });
        }
        match (config.model.plugin.target(), &config.param) {
            (Some(fixed), Some(param)) if fixed.name != param.name => {
                return Err(at_field(
                    "param",
                    format!(
                        "invalid `param`: `{}` predicts in its own target `{}()`, not `{}()`; remove `param:` or write `param: {}()`",
                        config.model.name, fixed.name, param.name, fixed.name
                    ),
                ));
            }
            (None, None) => {
                return Err(at_field(
                    "model",
                    format!(
                        "missing field `param`: `{}` learns the target `param:` names; add one of {}",
                        config.model.name,
                        registry
                            .params
                            .names()
                            .iter()
                            .map(|n| format!("`param: {n}()`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            _ => {}
        }
        Ok(config)
    }

    /// Rows per piece of a `sample` run: the run is drawn piece by piece and streamed to its
    /// files, so that its memory does not grow with `samples`. About
    /// [`SAMPLE_PIECE_BYTES`] of state, a multiple of `chunk_rows` (the model's batches, and
    /// so the bytes, do not change); the whole run where chunking is off or a trajectory is
    /// kept.
    pub fn sample_piece_rows(&self) -> usize {
        let cols: usize = self.model.plugin.sample_shape().iter().product();
        let per_row = (cols * self.dtype.dtype().size_in_bytes()).max(1);
        let rows = match self.chunk_rows {
            _ if self.outputs.trajectory => self.samples,
            None => self.samples,
            Some(c) => (SAMPLE_PIECE_BYTES / per_row / c).max(1).saturating_mul(c),
        };
        rows.min(self.samples).max(1)
    }

    /// The memory each job will hold at once, checked against `budget` before anything is
    /// allocated; an error names the section (if any), the field and the estimate.
    #[allow(clippy::type_complexity)]
    pub fn check_resources(
        &self,
        budget: &crate::resources::Budget,
    ) -> std::result::Result<(), (Option<&'static str>, &'static str, String)> {
        use crate::{pipeline::STATE_COPIES, resources::Estimate};
        let model = &self.model.plugin;
        let cols = model.sample_shape().iter().product::<usize>() as u128;
        let dtype = self.dtype.dtype();
        let elem = dtype.size_in_bytes() as u128;
        let act = u128::from(model.activation_bytes_per_row(dtype));
        let chunk = |rows: usize| self.chunk_rows.map_or(rows, |c| c.min(rows)) as u128;
        let steps = self.steps.unwrap_or_else(|| {
            self.solver
                .plugin
                .default_discretization(&*self.sde.plugin)
                .steps
        });
        // Sampling: the grid, one piece's state and model batch, the trajectory, the
        // metrics' rows.
        let piece = self.sample_piece_rows();
        let mut e = Estimate::new();
        e.add(
            "the grid's tables",
            steps as u128 + 1,
            crate::pipeline::GRID_BYTES_PER_STEP,
        )
        .add(
            "the state and its copies",
            piece as u128 * cols,
            STATE_COPIES * elem,
        )
        .add("the model's working memory", chunk(piece), act)
        .add(
            "the metrics' rows",
            self.samples.min(METRIC_ROWS) as u128 * cols,
            8 * 3,
        );
        if self.outputs.trajectory {
            e.add(
                "the trajectory",
                (steps as u128 + 2) * self.samples as u128 * cols,
                2 * elem,
            );
        }
        let field = match e.largest() {
            Some("the grid's tables") => "steps",
            Some("the trajectory") => "trajectory",
            _ => "chunk_rows",
        };
        let fix = match field {
            "steps" => "use fewer steps",
            "trajectory" => {
                "a trajectory keeps every step of every sample: draw fewer samples or steps, or drop `trajectory: true`"
            }
            _ => "use fewer `chunk_rows`, or turn chunking on (`chunk_rows: Some(1024)`)",
        };
        e.check(budget, fix).map_err(|why| (None, field, why))?;
        if let Some(GridKind::Tuned { .. }) = self.grid
            && steps > crate::tune::MAX_STEPS
        {
            return Err((None, "grid", crate::tune::too_many_steps(steps)));
        }
        if let Some(GridKind::Tuned { rows }) = self.grid {
            let mut e = Estimate::new();
            e.add(
                "the tuned grid's calibration",
                rows as u128 * cols,
                STATE_COPIES * 8,
            )
            .add("the model's working memory", chunk(rows), act);
            e.check(
                budget,
                "use fewer calibration rows (default tuned(rows: 256))",
            )
            .map_err(|why| (None, "grid", why))?;
        }
        if let Some(g) = &self.guidance
            && !g.search.is_empty()
        {
            let rows = g.search_samples;
            let mut e = Estimate::new();
            e.add(
                "the state and its copies",
                rows as u128 * cols,
                STATE_COPIES * elem,
            )
            .add("the model's working memory", chunk(rows), act);
            e.check(budget, "use fewer search samples")
                .map_err(|why| (Some("guidance"), "search_samples", why))?;
        }
        if let Some(t) = &self.train {
            let rows = t.batch.div_ceil(t.accumulate.max(1));
            let mut e = Estimate::new();
            e.add(
                "the batch and its copies",
                rows as u128 * cols,
                STATE_COPIES * elem,
            )
            .add("the model's activations", rows as u128, act);
            e.check(
                budget,
                "use a smaller batch, or accumulate it (`accumulate: 4`)",
            )
            .map_err(|why| (Some("train"), "batch", why))?;
        }
        if let Some(n) = &self.nll {
            let mut e = Estimate::new();
            e.add(
                "the rows and their copies",
                n.rows as u128 * cols,
                (STATE_COPIES + 4) * 8,
            )
            .add("the model's working memory", chunk(n.rows), 2 * act);
            e.check(budget, "evaluate fewer rows")
                .map_err(|why| (Some("nll"), "rows", why))?;
        }
        Ok(())
    }

    /// An error of a part built from this config (the pipeline, its grid) at the line and
    /// column of the field it names, when the config sets that field; other errors as they
    /// are.
    pub fn locate(&self, e: Error) -> Error {
        match e {
            Error::InvalidParam {
                plugin,
                field,
                reason,
            } if matches!(plugin.as_str(), "pipeline" | "grid") => {
                match locate_field(&self.text, &field) {
                    Some((line, col)) => Error::Config {
                        file: self.file.clone(),
                        line,
                        col,
                        msg: format!("invalid `{field}`: {reason}"),
                    },
                    None => Error::InvalidParam {
                        plugin,
                        field,
                        reason,
                    },
                }
            }
            other => other,
        }
    }

    /// The registered name of the target the model predicts in: the model's own, or `param:`.
    pub fn target_name(&self) -> &'static str {
        match (self.model.plugin.target(), &self.param) {
            (Some(fixed), _) => fixed.name,
            (None, Some(param)) => param.name,
            (None, None) => "",
        }
    }

    /// The pipeline this config composes, on `device`.
    pub fn pipeline(&self, device: Device) -> Result<Pipeline> {
        self.builder(device).build()
    }

    /// The guidance a conditional model samples with: the config's, or every class in turn
    /// at w = 0; `None` for an unconditional model.
    pub fn guidance_spec(&self) -> Option<GuidanceSpec> {
        self.model.plugin.classes()?;
        Some(self.guidance.clone().unwrap_or_default())
    }

    /// The builder of [`pipeline`](Self::pipeline), to add a progress hook or a noise source.
    /// A conditional model is guided with the config's scale (rows without labels are not).
    pub fn builder(&self, device: Device) -> PipelineBuilder {
        let mut b = Pipeline::builder()
            .sde(self.sde.plugin.clone())
            .model(self.model.plugin.clone())
            .solver(self.solver.plugin.clone())
            .seed(self.seed)
            .chunk_rows(self.chunk_rows)
            .denoise_final(self.denoise_final)
            .capture_trajectory(self.outputs.trajectory)
            .keep_non_finite(self.outputs.keep_non_finite)
            .device(device)
            .dtype(self.dtype.dtype());
        if self.model.plugin.target().is_none()
            && let Some(param) = &self.param
        {
            b = b.param(param.plugin.clone());
        }
        if let Some(steps) = self.steps {
            b = b.steps(steps);
        }
        if let Some(grid) = self.grid {
            b = b.grid(grid);
        }
        if let Some(g) = self.guidance_spec() {
            b = b.guidance(Some(g.scale));
        }
        b
    }
}
