//! # sdeflow-conformance
//!
//! Contract suites that run every registered plugin against exact answers: the SDE
//! identities, parameterization round trips, weightings, and solvers' orders, NFE,
//! finiteness, batch invariance and sliced W2 on the fixed mixtures (DESIGN.md
//! "Conformance"). A plugin is tested the moment it is registered.
//!
//! The crate names no plugin: the binary that calls [`run`] links them (`sdeflow-plugins`).

pub mod fit;
pub mod mixtures;
pub mod model;
pub mod param;
pub mod report;
pub mod sde;
pub mod solver;
pub mod sw2;
pub mod target;
pub mod weighting;

use std::sync::Arc;

use sdeflow_kernel::{ForwardSde, Parameterization, Registry, Weighting};

pub use report::{Report, Row};
pub use target::Target;

/// How much to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// What `cargo test` runs: every check, with SW2 on `ring` only, for every SDE in the run
    /// parameterization and, with the first solver, for every parameterization on the first
    /// SDE; the paired error against RK4 on `ring` and strong orders under the first SDE only;
    /// a registered parameter variant on the first SDE only.
    Quick,
    /// Everything: SW2 on `ring` for every solver × SDE × parameterization, on `mix8` for every
    /// solver × SDE, and the paired error on both (what `cargo xtask conformance` runs).
    #[default]
    Full,
}

/// Which plugins to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Quick or full.
    pub mode: Mode,
    /// Only this kind (`sde`, `param`, `solver`, `weighting`, `model`).
    pub kind: Option<String>,
    /// Only this plugin name.
    pub plugin: Option<String>,
    /// Where the tensor contracts run (default: the CPU in f64).
    pub target: Target,
}

impl Options {
    fn wants(&self, kind: &str, name: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.plugin.as_deref().is_none_or(|p| p == name)
    }
}

/// The parameterization solver runs read the oracle through: `eps` when registered.
const RUN_PARAM: &str = "eps";

/// Runs the contracts of every registered plugin that `opts` selects.
pub fn run(registry: &Registry, opts: &Options) -> Report {
    let mut report = Report::default();
    let mut sdes: Vec<(&str, Arc<dyn ForwardSde>)> = Vec::new();
    for p in registry.sdes.all() {
        match registry.sde(p.info.name, "()") {
            Ok(s) => sdes.push((p.info.name, s)),
            Err(e) => report.error(
                &format!("sde/{}", p.info.name),
                "builds with default parameters",
                e,
            ),
        }
    }
    let mut params: Vec<(&str, Arc<dyn Parameterization>)> = Vec::new();
    for p in registry.params.all() {
        match registry.param(p.info.name, "()") {
            Ok(v) => params.push((p.info.name, v)),
            Err(e) => report.error(
                &format!("param/{}", p.info.name),
                "builds with default parameters",
                e,
            ),
        }
    }
    let mut weightings: Vec<(&str, Arc<dyn Weighting>)> = Vec::new();
    for p in registry.weightings.all() {
        match registry.weighting(p.info.name, "()") {
            Ok(v) => weightings.push((p.info.name, v)),
            Err(e) => report.error(
                &format!("weighting/{}", p.info.name),
                "builds with default parameters",
                e,
            ),
        }
    }
    let sde_refs: Vec<&dyn ForwardSde> = sdes.iter().map(|(_, s)| &**s).collect();
    let named_sdes: Vec<(&str, &dyn ForwardSde)> = sdes.iter().map(|(n, s)| (*n, &**s)).collect();
    let param_refs: Vec<(&str, &dyn Parameterization)> =
        params.iter().map(|(n, p)| (*n, &**p)).collect();
    let weighting_refs: Vec<(&str, &dyn Weighting)> =
        weightings.iter().map(|(n, w)| (*n, &**w)).collect();

    for (name, sde) in &named_sdes {
        if opts.wants("sde", name) {
            sde::check(&mut report, name, *sde);
        }
    }
    for (name, p) in &param_refs {
        if opts.wants("param", name) {
            param::check(
                &mut report,
                name,
                *p,
                &param_refs,
                &weighting_refs,
                &sde_refs,
                &opts.target,
            );
        }
    }
    for (name, w) in &weighting_refs {
        if opts.wants("weighting", name) {
            weighting::check(&mut report, name, *w, &named_sdes);
        }
    }
    let run_param = params
        .iter()
        .find(|(n, _)| *n == RUN_PARAM)
        .or(params.first())
        .map(|(_, p)| p.clone());
    for p in registry.models.all() {
        if !opts.wants("model", p.info.name) {
            continue;
        }
        match (&run_param, named_sdes.first()) {
            (Some(param), Some((_, sde))) => {
                model::check(
                    &mut report,
                    registry,
                    p.info.name,
                    param.clone(),
                    *sde,
                    &opts.target,
                );
            }
            _ => report.error(
                &format!("model/{}", p.info.name),
                "needs a parameterization and an SDE",
                "none is registered",
            ),
        }
    }
    let solvers: Vec<_> = registry
        .solvers
        .all()
        .iter()
        .filter(|p| opts.wants("solver", p.info.name))
        .collect();
    if !solvers.is_empty() {
        match run_param {
            None => report.error(
                "solver/*",
                "needs a parameterization",
                "no parameterization is registered",
            ),
            Some(param) => {
                let mut fixture = solver::Fixture::new(registry, param, opts.target.clone());
                for p in solvers {
                    // The defaults, then each declared variant, named as a config writes it.
                    let sets = std::iter::once("()").chain(p.info.variants.iter().copied());
                    for params_ron in sets {
                        let label = if params_ron == "()" {
                            p.info.name.to_string()
                        } else {
                            format!("{}{params_ron}", p.info.name)
                        };
                        // The quick pass runs a variant on the first SDE only (moved to the
                        // full pass to keep `cargo test` within 15 minutes on 2 cores).
                        let on = if opts.mode == Mode::Quick && params_ron != "()" {
                            &sdes[..sdes.len().min(1)]
                        } else {
                            &sdes[..]
                        };
                        match registry.solver(p.info.name, params_ron) {
                            Ok(s) => {
                                solver::check(
                                    &mut report,
                                    &mut fixture,
                                    opts.mode,
                                    &label,
                                    s,
                                    on,
                                    &params,
                                );
                            }
                            Err(e) => report.error(
                                &format!("solver/{label}"),
                                format!("builds with parameters {params_ron}"),
                                e,
                            ),
                        }
                    }
                }
            }
        }
    }
    report
}
