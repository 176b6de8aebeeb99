//! What every solver contract shares: the `gmm_oracle` read through the run
//! parameterization, the target the runs happen on, the one pipeline every contract builds,
//! exact p_T starts, and the expensive truths — SW2 references and floors, RK4 paired
//! references — computed once per process and shared by every run and thread that asks for
//! them (the quick pass runs as several tests side by side).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use candle_core::{Device, Tensor};
use sdeflow_kernel::{
    ForwardSde, GridKind, ParamEntry, Parameterization, Pipeline, PipelineBuilder, Registry,
    Result, Retarget, ScoreModel, Solver, State,
};

use crate::{
    Target,
    mixtures::MixtureSpec,
    sw2::{Floor, SAMPLES, SlicedW2, reference_and_floor},
};

/// The seed of every solver run.
pub(crate) const RUN_SEED: u64 = 42;
/// The seed of the exact p_T starts.
const START_SEED: u64 = 3_000;
/// Samples in the paired comparison against the reference.
pub const PAIRED_SAMPLES: usize = 2_000;
/// Steps of the RK4 reference (λ-uniform).
pub const REFERENCE_STEPS: usize = 1 << 13;

/// What every solver check needs: the registry (for the oracle and the RK4 reference), the
/// parameterization the oracle reports in, and where the solver's runs happen (references
/// and floors stay on the host in f64).
pub struct Fixture<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The parameterization runs read the model in.
    pub param: Arc<dyn Parameterization>,
    /// Where the solver's runs happen.
    pub target: Target,
}

/// The pipeline every contract runs: `solver` on `sde`, reading `model` (the oracle in some
/// target) through its target, on `on`, seeded with the run seed. Callers add only what
/// differs (steps, grid, chunking, noise).
pub(crate) fn pipeline(
    sde: &Arc<dyn ForwardSde>,
    model: Arc<dyn ScoreModel>,
    solver: &Arc<dyn Solver>,
    on: &Target,
) -> PipelineBuilder {
    Pipeline::builder()
        .sde(sde.clone())
        .model(model)
        .solver(solver.clone())
        .seed(RUN_SEED)
        .device(on.device.clone())
        .dtype(on.dtype)
}

impl<'a> Fixture<'a> {
    /// A fixture reading the oracle through `param`, running solvers on `target`.
    pub fn new(registry: &'a Registry, param: Arc<dyn Parameterization>, target: Target) -> Self {
        Self {
            registry,
            param,
            target,
        }
    }

    /// The oracle of `spec` on `on`, reporting in `param`'s target (the oracle predicts the
    /// score; [`Retarget`] writes it in any target, so every conversion runs on an exact answer).
    pub(crate) fn oracle(
        &self,
        spec: &MixtureSpec,
        on: &Target,
        param: Arc<dyn Parameterization>,
    ) -> Result<Arc<dyn ScoreModel>> {
        let oracle = crate::loss::oracle(self.registry, spec, on)?;
        let to = ParamEntry {
            name: "the run parameterization",
            plugin: param,
        };
        Ok(Arc::new(Retarget::new(oracle, to)?))
    }

    /// [`pipeline`] of `solver` on `sde` reading the oracle of `spec` through the run
    /// parameterization, on `on`.
    pub(crate) fn pipeline(
        &self,
        sde: &Arc<dyn ForwardSde>,
        solver: &Arc<dyn Solver>,
        spec: &MixtureSpec,
        on: &Target,
    ) -> Result<PipelineBuilder> {
        self.pipeline_through(self.param.clone(), sde, solver, spec, on)
    }

    /// [`Fixture::pipeline`] with the oracle read through `param` instead.
    pub(crate) fn pipeline_through(
        &self,
        param: Arc<dyn Parameterization>,
        sde: &Arc<dyn ForwardSde>,
        solver: &Arc<dyn Solver>,
        spec: &MixtureSpec,
        on: &Target,
    ) -> Result<PipelineBuilder> {
        let model = self.oracle(spec, on, param)?;
        Ok(pipeline(sde, model, solver, on))
    }

    /// The RK4 reference endpoints of the paired comparison on `spec` under `sde` (named
    /// `sde_name`), from [`PAIRED_SAMPLES`] exact p_T starts with [`REFERENCE_STEPS`]
    /// λ-uniform steps, on the host in f64; computed once per process.
    pub(crate) fn paired_reference(
        &self,
        spec: &MixtureSpec,
        sde_name: &str,
        sde: &Arc<dyn ForwardSde>,
    ) -> Result<Arc<Vec<f64>>> {
        REFERENCES.get_or_try_init((spec.name, sde_name.to_string()), || {
            let rk4 = self.registry.solver("rk4", "()")?;
            let x = self
                .pipeline(sde, &rk4, spec, &Target::default())?
                .steps(REFERENCE_STEPS)
                .grid(GridKind::LogSnr)
                .build()?
                .run(State::new(
                    exact_start(spec, &**sde, PAIRED_SAMPLES)?,
                    sde.t_max(),
                    0,
                ))?
                .state
                .x;
            Ok(x.flatten_all()?.to_vec1::<f64>()?)
        })
    }

    /// The SW2 reference set and noise floor of `spec`'s exact law at t_ε of `sde` (named
    /// `sde_name`), [`SAMPLES`] per set; computed once per process.
    pub(crate) fn floor(
        &self,
        spec: &MixtureSpec,
        sde_name: &str,
        sde: &dyn ForwardSde,
    ) -> Result<Arc<(SlicedW2, Floor)>> {
        FLOORS.get_or_try_init((spec.name, sde_name.to_string()), || {
            let c = sde.coefs(sde.t_eps());
            let target = spec.mixture()?.marginal(c.alpha, c.sigma)?;
            reference_and_floor(&target, SAMPLES)
        })
    }
}

/// [`PAIRED_SAMPLES`] or [`SAMPLES`] exact samples of `spec`'s law at T of `sde`, on the host
/// in f64: the start of every run on a mixture, so that a prior mismatch is measured apart.
pub(crate) fn exact_start(spec: &MixtureSpec, sde: &dyn ForwardSde, n: usize) -> Result<Tensor> {
    let c = sde.coefs(sde.t_max());
    let x = spec
        .mixture()?
        .marginal(c.alpha, c.sigma)?
        .sample(START_SEED, 0, n);
    Ok(Tensor::from_vec(x, (n, spec.dim()), &Device::Cpu)?)
}

/// A tensor's rows on the host in f64.
pub(crate) fn rows_f64(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(Target::host(x)?.to_vec2::<f64>()?)
}

/// A tensor's values on the host in f64, flattened.
pub(crate) fn host_vec(x: &Tensor) -> Result<Vec<f64>> {
    Ok(Target::host(&x.flatten_all()?)?.to_vec1::<f64>()?)
}

/// Mixture name and registered SDE name. SDEs run with their default parameters, and the
/// truths are computed on the host in f64 through the run parameterization, so the key names
/// everything an entry depends on.
type Key = (&'static str, String);

/// A process-wide cache of values that are expensive and deterministic. Each entry has its own
/// lock: two threads asking for one entry compute it once (the second waits for the first),
/// and threads asking for different entries never wait for each other. An entry whose
/// computation fails stays empty, and the next caller tries again.
struct Shared<V> {
    entries: Mutex<BTreeMap<Key, Entry<V>>>,
}

/// One cache entry: empty until computed.
type Entry<V> = Arc<Mutex<Option<Arc<V>>>>;

impl<V> Shared<V> {
    const fn new() -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn get_or_try_init(&self, key: Key, init: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let mut slot = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = &*slot {
            return Ok(v.clone());
        }
        let v = Arc::new(init()?);
        *slot = Some(v.clone());
        Ok(v)
    }
}

/// SW2 references and floors, by (mixture, SDE).
static FLOORS: Shared<(SlicedW2, Floor)> = Shared::new();
/// RK4 paired references, by (mixture, SDE).
static REFERENCES: Shared<Vec<f64>> = Shared::new();
