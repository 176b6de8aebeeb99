//! RON pipeline configs: plugin references read like enum variants keyed by registered name,
//! always with parentheses (`solver: euler_maruyama()`, `sde: vp(beta_max: 20.0)`), and every
//! error keeps the file, line and column.
//!
//! Names are known only at run time, so each plugin field is read with a
//! [`DeserializeSeed`] whose identifier visitor looks the name up in the registry and whose
//! variant content is handed, type-erased, to the plugin's own `Params` (ron's
//! `UNWRAP_VARIANT_NEWTYPES` reads `ddim(eta: 0.0)` as the struct inside). Capturing the
//! content as `ron::Value` would lose the spans.
//!
//! The model is built in the parameterization it is read in, on the config's device, so a
//! config is read twice: a first pass takes `device`, `dtype` and `param` and skips the rest;
//! the second reads everything with the model's context at hand.

use std::{fmt, path::PathBuf, sync::Arc};

use candle_core::{DType, Device};
use serde::{
    Deserialize, Serialize,
    de::{self, DeserializeSeed, EnumAccess, IgnoredAny, MapAccess, VariantAccess, Visitor},
};

use crate::{
    Error, ForwardSde, GridKind, ModelContext, Parameterization, Pipeline, PipelineBuilder,
    Registry, Result, ScoreModel, Solver,
    registry::{
        BuildSeed, Buildable, Catalog, ErasedDe, Kind, ModelKind, ParamKind, Registration, SdeKind,
        SolverKind, ron_options, spanned,
    },
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
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            dir: None,
            npy: true,
            png: true,
            json: true,
            trajectory: false,
        }
    }
}

/// A job a config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Sample from the prior to t_ε and measure against the exact law when there is one.
    Sample,
}

/// A parsed, validated config: the plugins built, the rest typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and default output paths).
    pub file: String,
    /// The device asked for.
    pub device: DeviceSpec,
    /// The dtype of samples.
    pub dtype: DTypeSpec,
    /// The seed of every draw.
    pub seed: u64,
    /// The forward SDE and its registered name.
    pub sde: (String, Arc<dyn ForwardSde>),
    /// The parameterization.
    pub param: (String, Arc<dyn Parameterization>),
    /// The score model.
    pub model: (String, Arc<dyn ScoreModel>),
    /// The solver.
    pub solver: (String, Arc<dyn Solver>),
    /// The grid (default: the solver's for this SDE).
    pub grid: Option<GridKind>,
    /// The step count (default: the solver's for this SDE).
    pub steps: Option<usize>,
    /// Samples to draw.
    pub samples: usize,
    /// Model chunk rows (`None`: chunking, and batch invariance, off).
    pub chunk_rows: Option<usize>,
    /// End with Tweedie's denoising step x̂₀ at t_ε (one more NFE; samples of p₀).
    pub denoise_final: bool,
    /// What to write.
    pub outputs: Outputs,
    /// The jobs `run` performs, in order.
    pub jobs: Vec<Job>,
}

/// The default sample count.
pub const DEFAULT_SAMPLES: usize = 10_000;

const FIELDS: &[&str] = &[
    "device",
    "dtype",
    "seed",
    "sde",
    "param",
    "model",
    "solver",
    "grid",
    "steps",
    "samples",
    "chunk_rows",
    "denoise_final",
    "outputs",
    "jobs",
];

impl Config {
    /// Parses `text` (from `file`, for messages). `device` turns the config's device into a
    /// candle device (the host owns device features); its error is reported at the `device`
    /// field.
    pub fn parse(
        file: &str,
        text: &str,
        registry: &Registry,
        device: &dyn Fn(DeviceSpec) -> Result<Device>,
    ) -> Result<Self> {
        let at = |e: ron::error::SpannedError| spanned(file, text, &e);
        let prelude = ron_options()
            .from_str_seed(text, PreludeSeed { registry })
            .map_err(at)?;
        let candle_device = match device(prelude.device) {
            Ok(d) => d,
            Err(e) => {
                let (line, col) = locate_field(text, "device").unwrap_or((1, 1));
                return Err(Error::Config {
                    file: file.to_string(),
                    line,
                    col,
                    msg: e.to_string(),
                });
            }
        };
        let ctx = ModelContext {
            param: prelude.param.1.clone(),
            device: candle_device,
            dtype: prelude.dtype.dtype(),
        };
        let mut config = ron_options()
            .from_str_seed(
                text,
                ConfigSeed {
                    registry,
                    ctx: &ctx,
                    file,
                },
            )
            .map_err(at)?;
        config.param = prelude.param;
        Ok(config)
    }

    /// The pipeline this config composes, on `device`.
    pub fn pipeline(&self, device: Device) -> Result<Pipeline> {
        self.builder(device).build()
    }

    /// The builder of [`pipeline`](Self::pipeline), to add a progress hook or a noise source.
    pub fn builder(&self, device: Device) -> PipelineBuilder {
        let mut b = Pipeline::builder()
            .sde(self.sde.1.clone())
            .param(self.param.1.clone())
            .model(self.model.1.clone())
            .solver(self.solver.1.clone())
            .seed(self.seed)
            .chunk_rows(self.chunk_rows)
            .denoise_final(self.denoise_final)
            .capture_trajectory(self.outputs.trajectory)
            .device(device)
            .dtype(self.dtype.dtype());
        if let Some(steps) = self.steps {
            b = b.steps(steps);
        }
        if let Some(grid) = self.grid {
            b = b.grid(grid);
        }
        b
    }
}

/// The 1-based line and column of `name:` at the start of a field in `text`, if present.
fn locate_field(text: &str, name: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let col = line.find(name)?;
        let rest = line[col + name.len()..].trim_start();
        let boundary = line[..col]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        (boundary && rest.starts_with(':')).then_some((i + 1, col + 1))
    })
}

/// Reads a plugin reference `name(params...)` of kind `K`.
pub(crate) struct PluginSeed<'a, K: Kind>
where
    K::Plugin: Buildable,
{
    pub(crate) catalog: &'a Catalog<K>,
    pub(crate) ctx: &'a <K::Plugin as Buildable>::Ctx,
}

impl<'de, K: Kind> DeserializeSeed<'de> for PluginSeed<'_, K>
where
    K::Plugin: Buildable,
{
    type Value = (String, <K::Plugin as Buildable>::Object);
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_enum(K::NAME, self.catalog.names(), self)
    }
}

impl<'de, K: Kind> Visitor<'de> for PluginSeed<'_, K>
where
    K::Plugin: Buildable,
{
    type Value = (String, <K::Plugin as Buildable>::Object);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} plugin written `name(...)`, one of {}",
            K::NAME,
            self.catalog.names().join(", ")
        )
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> std::result::Result<Self::Value, A::Error> {
        let (plugin, variant) = data.variant_seed(NameSeed::<K> {
            catalog: self.catalog,
        })?;
        let built = variant.newtype_variant_seed(BuildSeed(|de: ErasedDe<'_, 'de>| {
            plugin.build_from(de, self.ctx)
        }))?;
        Ok((plugin.info().name.to_string(), built))
    }
}

/// Reads a registered name of kind `K`, or fails listing the names and the nearest.
struct NameSeed<'a, K: Kind> {
    catalog: &'a Catalog<K>,
}

impl<'de, K: Kind> DeserializeSeed<'de> for NameSeed<'_, K> {
    type Value = &'static K::Plugin;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: Kind> Visitor<'de> for NameSeed<'_, K> {
    type Value = &'static K::Plugin;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a registered {} name", K::NAME)
    }
    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<Self::Value, E> {
        self.catalog.get(name).map_err(E::custom)
    }
}

/// What the first pass reads.
struct Prelude {
    device: DeviceSpec,
    dtype: DTypeSpec,
    param: (String, Arc<dyn Parameterization>),
}

struct PreludeSeed<'a> {
    registry: &'a Registry,
}

impl<'de> DeserializeSeed<'de> for PreludeSeed<'_> {
    type Value = Prelude;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Prelude, D::Error> {
        d.deserialize_struct("config", FIELDS, self)
    }
}

impl<'de> Visitor<'de> for PreludeSeed<'_> {
    type Value = Prelude;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pipeline config `( sde: ..., param: ..., model: ..., solver: ... )`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Prelude, A::Error> {
        let (mut device, mut dtype, mut param) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "device" => device = Some(map.next_value()?),
                "dtype" => dtype = Some(map.next_value()?),
                "param" => {
                    param = Some(map.next_value_seed(PluginSeed::<ParamKind> {
                        catalog: &self.registry.params,
                        ctx: &(),
                    })?)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Prelude {
            device: device.unwrap_or_default(),
            dtype: dtype.unwrap_or_default(),
            param: param.ok_or_else(|| de::Error::missing_field("param"))?,
        })
    }
}

struct ConfigSeed<'a> {
    registry: &'a Registry,
    ctx: &'a ModelContext,
    file: &'a str,
}

impl<'de> DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = Config;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Config, D::Error> {
        d.deserialize_struct("config", FIELDS, self)
    }
}

fn positive<E: de::Error>(field: &str, v: usize) -> std::result::Result<usize, E> {
    if v == 0 {
        Err(E::custom(format!("invalid `{field}`: must be at least 1")))
    } else {
        Ok(v)
    }
}

fn once<T, E: de::Error>(
    slot: &mut Option<T>,
    field: &'static str,
    v: T,
) -> std::result::Result<(), E> {
    if slot.replace(v).is_some() {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

impl<'de> Visitor<'de> for ConfigSeed<'_> {
    type Value = Config;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pipeline config `( sde: ..., param: ..., model: ..., solver: ... )`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Config, A::Error> {
        let r = self.registry;
        let (mut device, mut dtype, mut seed, mut sde, mut param, mut model, mut solver) =
            (None, None, None, None, None, None, None);
        let (mut grid, mut steps, mut samples, mut chunk_rows, mut outputs, mut jobs) =
            (None, None, None, None, None, None);
        let mut denoise_final = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "device" => once(&mut device, "device", map.next_value()?)?,
                "dtype" => once(&mut dtype, "dtype", map.next_value()?)?,
                "seed" => once(&mut seed, "seed", map.next_value()?)?,
                "sde" => once(
                    &mut sde,
                    "sde",
                    map.next_value_seed(PluginSeed::<SdeKind> {
                        catalog: &r.sdes,
                        ctx: &(),
                    })?,
                )?,
                "param" => {
                    // Built in the first pass; read again only to check and skip it.
                    let p = map.next_value_seed(PluginSeed::<ParamKind> {
                        catalog: &r.params,
                        ctx: &(),
                    })?;
                    once(&mut param, "param", p)?
                }
                "model" => once(
                    &mut model,
                    "model",
                    map.next_value_seed(PluginSeed::<ModelKind> {
                        catalog: &r.models,
                        ctx: self.ctx,
                    })?,
                )?,
                "solver" => once(
                    &mut solver,
                    "solver",
                    map.next_value_seed(PluginSeed::<SolverKind> {
                        catalog: &r.solvers,
                        ctx: &(),
                    })?,
                )?,
                "grid" => once(&mut grid, "grid", map.next_value::<GridKind>()?)?,
                "steps" => {
                    let v = positive("steps", map.next_value()?)?;
                    once(&mut steps, "steps", v)?
                }
                "samples" => {
                    let v = positive("samples", map.next_value()?)?;
                    once(&mut samples, "samples", v)?
                }
                "chunk_rows" => {
                    let v: Option<usize> = map.next_value()?;
                    if let Some(c) = v {
                        positive::<A::Error>("chunk_rows", c)?;
                    }
                    once(&mut chunk_rows, "chunk_rows", v)?
                }
                "denoise_final" => once(&mut denoise_final, "denoise_final", map.next_value()?)?,
                "outputs" => once(&mut outputs, "outputs", map.next_value()?)?,
                "jobs" => once(&mut jobs, "jobs", map.next_value::<Vec<Job>>()?)?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        let missing = |f: &'static str| de::Error::missing_field(f);
        Ok(Config {
            file: self.file.to_string(),
            device: device.unwrap_or_default(),
            dtype: dtype.unwrap_or_default(),
            seed: seed.unwrap_or(0),
            sde: sde.ok_or_else(|| missing("sde"))?,
            param: param.ok_or_else(|| missing("param"))?,
            model: model.ok_or_else(|| missing("model"))?,
            solver: solver.ok_or_else(|| missing("solver"))?,
            grid,
            steps,
            samples: samples.unwrap_or(DEFAULT_SAMPLES),
            chunk_rows: chunk_rows.unwrap_or(Some(crate::denoiser::DEFAULT_CHUNK_ROWS)),
            denoise_final: denoise_final.unwrap_or(false),
            outputs: outputs.unwrap_or_default(),
            jobs: jobs.unwrap_or_else(|| vec![Job::Sample]),
        })
    }
}
