//! # sdeflow-conformance
//!
//! Contract suites that run every registered plugin against exact answers: data sources'
//! rows, splits and moments, the SDE identities, parameterization round trips, the denoising loss, weightings, and solvers'
//! orders, NFE,
//! finiteness, batch invariance and sliced W2 on the fixed mixtures (DESIGN.md
//! "Conformance"). A plugin is tested the moment it is registered.
//!
//! The crate names no plugin: the binary that calls [`run`] links them (`sdeflow-plugins`).

pub mod data;
pub mod loss;
pub mod mixtures;
pub mod model;
pub mod param;
pub mod policy;
pub mod report;
pub mod sde;
pub mod solver;
pub mod sw2;
pub mod target;
pub mod weighting;

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use sdeflow_kernel::{
    ForwardSde, Parameterization, Registry, Weighting,
    registry::{
        DataKind, Kind, ModelKind, ParamKind, Registration, SdeKind, SolverKind, WeightingKind,
    },
};

pub use policy::Policy;
pub use report::{Report, Row};
pub use target::Target;

/// How much to run; [`Policy`] says what each mode runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// What `cargo test` runs: every check, with SW2 on `ring` only, for every SDE in the run
    /// parameterization and, with the first selected solver, for every parameterization on the
    /// first SDE; the paired error against RK4 on `ring` and strong orders under the first SDE
    /// only; a registered parameter variant on the first SDE only.
    Quick,
    /// Everything: SW2 on `ring` for every solver × SDE × parameterization, on `mix8` for every
    /// solver × SDE, and the paired error on both (what `cargo xtask conformance` runs).
    #[default]
    Full,
}

/// Which part of the selection a run executes. The [`Policy`] is that of the whole selection,
/// so the parts of one pass (the quick pass's tests) add up to that pass, each check once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Part {
    /// All of it.
    #[default]
    Whole,
    /// Only the plugins with these registered names.
    Only(Vec<String>),
    /// All but the plugins with these registered names.
    Except(Vec<String>),
}

impl Part {
    fn runs(&self, name: &str) -> bool {
        match self {
            Part::Whole => true,
            Part::Only(names) => names.iter().any(|n| n == name),
            Part::Except(names) => !names.iter().any(|n| n == name),
        }
    }
}

/// Which plugins to run, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quick or full.
    pub mode: Mode,
    /// Only this kind (`data`, `sde`, `param`, `solver`, `weighting`, `model`).
    pub kind: Option<String>,
    /// Only this plugin name.
    pub plugin: Option<String>,
    /// Where the tensor contracts run (default: the CPU in f64).
    pub target: Target,
    /// The part of the selection to run (default: all of it).
    pub part: Part,
    /// Units of work (a plugin; a solver with one parameter set) run side by side on this many
    /// workers, each single-threaded; the report keeps the order of a sequential run. 0 or 1:
    /// one worker.
    pub jobs: usize,
}

impl Options {
    fn wants(&self, kind: &str, name: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.plugin.as_deref().is_none_or(|p| p == name)
    }

    fn runs(&self, kind: &str, name: &str) -> bool {
        self.wants(kind, name) && self.part.runs(name)
    }
}

/// The parameterization solver runs read the oracle through: `eps` when registered.
const RUN_PARAM: &str = "eps";

/// Every registered plugin of the kinds the contracts need built with its defaults, and a
/// failing row for each that does not build.
struct Built {
    sdes: Vec<(&'static str, Arc<dyn ForwardSde>)>,
    params: Vec<(&'static str, Arc<dyn Parameterization>)>,
    weightings: Vec<(&'static str, Arc<dyn Weighting>)>,
    failures: Report,
}

/// Every registered plugin of kind `K` built with its default parameters, by name; a failing
/// row in `failures` for each that does not build.
fn defaults<K: Kind<Ctx = ()>>(
    registry: &Registry,
    failures: &mut Report,
) -> Vec<(&'static str, K::Object)> {
    let mut built = Vec::new();
    for p in K::catalog(registry).all() {
        let name = p.info().name;
        match registry.build::<K>(name, "()", &()) {
            Ok(v) => built.push((name, v)),
            Err(e) => failures.error(
                &format!("{}/{name}", K::NAME),
                "builds with default parameters",
                e,
            ),
        }
    }
    built
}

impl Built {
    fn new(registry: &Registry) -> Self {
        let mut failures = Report::default();
        Self {
            sdes: defaults::<SdeKind>(registry, &mut failures),
            params: defaults::<ParamKind>(registry, &mut failures),
            weightings: defaults::<WeightingKind>(registry, &mut failures),
            failures,
        }
    }

    fn run_param(&self) -> Option<Arc<dyn Parameterization>> {
        self.params
            .iter()
            .find(|(n, _)| *n == RUN_PARAM)
            .or(self.params.first())
            .map(|(_, p)| p.clone())
    }
}

/// One independent piece of a run, reported on its own.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Data(&'static str),
    Sde(usize),
    Param(usize),
    Weighting(usize),
    Model(&'static str),
    /// Solvers were selected but no parameterization is registered to read the oracle in.
    SolversWithoutParam,
    Solver {
        name: &'static str,
        params_ron: &'static str,
    },
}

/// The units `opts` selects, in the order of a sequential run: data sources, SDEs,
/// parameterizations, weightings, models, then each solver with its defaults and each
/// registered variant.
fn units(registry: &Registry, built: &Built, opts: &Options) -> Vec<Unit> {
    let mut units = Vec::new();
    for p in registry.data.all() {
        if opts.runs(DataKind::NAME, p.info.name) {
            units.push(Unit::Data(p.info.name));
        }
    }
    for (i, (name, _)) in built.sdes.iter().enumerate() {
        if opts.runs(SdeKind::NAME, name) {
            units.push(Unit::Sde(i));
        }
    }
    for (i, (name, _)) in built.params.iter().enumerate() {
        if opts.runs(ParamKind::NAME, name) {
            units.push(Unit::Param(i));
        }
    }
    for (i, (name, _)) in built.weightings.iter().enumerate() {
        if opts.runs(WeightingKind::NAME, name) {
            units.push(Unit::Weighting(i));
        }
    }
    for p in registry.models.all() {
        if opts.runs(ModelKind::NAME, p.info.name) {
            units.push(Unit::Model(p.info.name));
        }
    }
    let solvers: Vec<_> = registry
        .solvers
        .all()
        .iter()
        .filter(|p| opts.runs(SolverKind::NAME, p.info.name))
        .collect();
    if solvers.is_empty() {
        return units;
    }
    if built.run_param().is_none() {
        units.push(Unit::SolversWithoutParam);
        return units;
    }
    for p in solvers {
        // The defaults, then each declared variant.
        for params_ron in std::iter::once(policy::DEFAULTS).chain(p.info.variants.iter().copied()) {
            units.push(Unit::Solver {
                name: p.info.name,
                params_ron,
            });
        }
    }
    units
}

/// What every unit reads.
struct Context<'a> {
    registry: &'a Registry,
    built: &'a Built,
    policy: Policy,
    fixture: Option<solver::Fixture<'a>>,
    target: &'a Target,
}

impl Context<'_> {
    fn run(&self, unit: Unit) -> Report {
        let mut report = Report::default();
        let built = self.built;
        let sde_refs: Vec<&dyn ForwardSde> = built.sdes.iter().map(|(_, s)| &**s).collect();
        let named_sdes: Vec<(&str, &dyn ForwardSde)> =
            built.sdes.iter().map(|(n, s)| (*n, &**s)).collect();
        let param_refs: Vec<(&str, &dyn Parameterization)> =
            built.params.iter().map(|(n, p)| (*n, &**p)).collect();
        let weighting_refs: Vec<(&str, &dyn Weighting)> =
            built.weightings.iter().map(|(n, w)| (*n, &**w)).collect();
        let params: Vec<(&str, Arc<dyn Parameterization>)> =
            built.params.iter().map(|(n, p)| (*n, p.clone())).collect();
        let sdes: Vec<(&str, Arc<dyn ForwardSde>)> =
            built.sdes.iter().map(|(n, s)| (*n, s.clone())).collect();
        match unit {
            Unit::Data(name) => data::check(&mut report, self.registry, name),
            Unit::Sde(i) => {
                sde::check(&mut report, named_sdes[i].0, named_sdes[i].1);
                let (name, sde) = &sdes[i];
                loss::closed_form(&mut report, self.registry, name, sde, self.target);
                loss::implicit_closed_form(&mut report, self.registry, name, sde, self.target);
            }
            Unit::Param(i) => {
                param::check(
                    &mut report,
                    param_refs[i].0,
                    param_refs[i].1,
                    &param_refs,
                    &weighting_refs,
                    &sde_refs,
                    self.target,
                );
                let weightings: Vec<(&str, Arc<dyn Weighting>)> = built
                    .weightings
                    .iter()
                    .map(|(n, w)| (*n, w.clone()))
                    .collect();
                let (name, p) = &built.params[i];
                loss::check_param(
                    &mut report,
                    self.registry,
                    name,
                    p,
                    &weightings,
                    &sdes,
                    self.target,
                );
            }
            Unit::Weighting(i) => weighting::check(
                &mut report,
                weighting_refs[i].0,
                weighting_refs[i].1,
                &named_sdes,
            ),
            Unit::Model(name) => match (built.run_param(), sdes.first()) {
                (Some(param), Some((_, sde))) => {
                    model::check(&mut report, self.registry, name, param, sde, self.target);
                }
                _ => report.error(
                    &format!("model/{name}"),
                    "needs a parameterization and an SDE",
                    "none is registered",
                ),
            },
            Unit::SolversWithoutParam => report.error(
                "solver/*",
                "needs a parameterization",
                "no parameterization is registered",
            ),
            Unit::Solver { name, params_ron } => {
                let Some(fixture) = &self.fixture else {
                    return report;
                };
                match self.registry.solver(name, params_ron) {
                    Ok(s) => solver::check(
                        &mut report,
                        fixture,
                        &self.policy,
                        name,
                        params_ron,
                        s,
                        &sdes,
                        &params,
                    ),
                    Err(e) => report.error(
                        &format!("solver/{}", solver::label(name, params_ron)),
                        format!("builds with parameters {params_ron}"),
                        e,
                    ),
                }
            }
        }
        report
    }
}

/// Runs `work` on every item of `items` on `jobs` workers and returns the results in the
/// items' order. Each worker is a thread with its own one-thread rayon pool: the parallel
/// loops inside an item (oracle scores, SW2 projections, exact samples) run on it, never
/// queue behind another worker's in a shared pool (with `RAYON_NUM_THREADS=1` the global pool
/// would serialise them), and never steal another item's work while it holds a shared cache
/// entry. One worker per item at a time also keeps every reduction's order, and so every
/// measured value, independent of `jobs`.
fn run_on_workers<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let worker = || {
        let drain = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            }
        };
        match rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "sdeflow-conformance".into())
            .stack_size(8 << 20)
            .build()
        {
            Ok(pool) => pool.install(drain),
            Err(_) => drain(),
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(worker);
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every item ran")
        })
        .collect()
}

/// Runs the contracts of every registered plugin that `opts` selects.
pub fn run(registry: &Registry, opts: &Options) -> Report {
    let built = Built::new(registry);
    let selected = registry
        .solvers
        .all()
        .iter()
        .map(|p| p.info.name)
        .filter(|name| opts.wants(SolverKind::NAME, name))
        // An adaptive solver's runs cost far more evaluations, and so do annealed Langevin's
        // 100 per level: the matrix goes to a grid solver of at most 2 NFE per step.
        .filter(|name| {
            registry.solver(name, policy::DEFAULTS).map_or(true, |s| {
                s.adaptive().is_none() && s.claims().nfe_per_step <= 2
            })
        });
    let ctx = Context {
        registry,
        built: &built,
        policy: Policy::new(opts.mode, selected),
        fixture: built
            .run_param()
            .map(|param| solver::Fixture::new(registry, param, opts.target.clone())),
        target: &opts.target,
    };
    let units = units(registry, &built, opts);
    let mut report = built.failures.clone();
    for r in run_on_workers(&units, opts.jobs, |u| ctx.run(*u)) {
        report.extend(r);
    }
    report
}
