//! Solver contracts, one module per concern, run for a solver by [`check`]:
//! - [`weak`]: the weak error by exact propagation on a single Gaussian falls at the claimed
//!   weak order (affine stochastic solvers), or approaches the closed-form plateau (pc);
//! - [`flow`]: the pathwise error against the single Gaussian's exact PF-ODE flow map falls
//!   at the claimed order (deterministic solvers);
//! - [`strong`]: the strong order on a shared Brownian path (stochastic solvers that claim one);
//! - [`quality`]: SW2 on the mixtures at the declared default within the noise floor, the NFE
//!   counted equals the claim, and the paired error against RK4 (deterministic solvers);
//! - [`robust`]: finite at every step count 1–2,000, bit-identical across batches and reruns;
//! - [`adaptive`]: for a solver that chooses every sample's steps, in place of the order and
//!   step-count checks: NFE reported = counted, error ∝ rtol, finite at rtol 1e-1…1e-10, the
//!   same steps in any batch;
//! - [`likelihood`]: an adaptive solver that integrates a likelihood gives the oracle's exact
//!   log-density.
//!
//! [`order`] fits and reports orders; [`fixture`] builds every run; which contract runs on
//! what is the [`Policy`]'s to say.

use std::sync::Arc;

use sdeflow_kernel::{ForwardSde, Order, Parameterization, Solver};

use crate::{
    mixtures::ring,
    policy::{DEFAULTS, ParamSet, Policy},
    report::Report,
};

pub mod adaptive;
pub mod fixture;
pub mod flow;
pub mod likelihood;
pub mod order;
pub mod quality;
pub mod robust;
pub mod strong;
pub mod weak;

pub use fixture::{Fixture, PAIRED_SAMPLES, REFERENCE_STEPS};
pub use flow::exact_flow_error;
pub use order::{ORDER_STEPS, ROUNDING_PER_STEP};
pub use robust::{BATCHES, FINITE_STEPS};
pub use weak::{exact_weak_error, plateau_bias};

/// A solver under test on one SDE: what every solver contract is given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case<'a> {
    /// The report's plugin column, `solver/<label>`.
    pub(crate) plugin: &'a str,
    /// The solver.
    pub(crate) solver: &'a Arc<dyn Solver>,
    /// The SDE's registered name.
    pub(crate) sde_name: &'a str,
    /// The SDE.
    pub(crate) sde: &'a Arc<dyn ForwardSde>,
}

/// The plugin label of `name` with the parameter set `params_ron`, as a config writes it:
/// `ddim` for the defaults, `ddim(eta: 1.0)` for a variant.
pub fn label(name: &str, params_ron: &str) -> String {
    if params_ron == DEFAULTS {
        name.to_string()
    } else {
        format!("{name}{params_ron}")
    }
}

/// Runs every solver contract for `solver` (registered as `name`, built with `params_ron`) on
/// the SDEs `policy` gives it, in the order of `sdes`; `params` are every registered
/// parameterization.
#[allow(clippy::too_many_arguments)]
pub fn check(
    report: &mut Report,
    fixture: &Fixture<'_>,
    policy: &Policy,
    name: &str,
    params_ron: &str,
    solver: Arc<dyn Solver>,
    sdes: &[(&str, Arc<dyn ForwardSde>)],
    params: &[(&str, Arc<dyn Parameterization>)],
) {
    let plugin = format!("solver/{}", label(name, params_ron));
    let alias = fixture
        .registry
        .solvers
        .get(name)
        .ok()
        .and_then(|p| p.info.alias_of);
    if let (Some(alias_of), Some((_, sde))) = (alias, sdes.first()) {
        return robust::alias_matches(report, fixture, &plugin, alias_of, &solver, sde);
    }
    let claims = solver.claims();
    let adaptive = solver.adaptive().is_some();
    let on = &sdes[..policy.sde_count(params_ron, sdes.len())];
    for (i, (sde_name, sde)) in on.iter().enumerate() {
        let case = Case {
            plugin: &plugin,
            solver: &solver,
            sde_name,
            sde,
        };
        if claims.stochastic {
            if claims.affine {
                match claims.order {
                    Order::Plateau { snr } => {
                        weak::plateau(report, fixture, case, snr);
                    }
                    _ => weak::weak_order(report, fixture, case),
                }
            }
            // As for ODE orders, strong orders are claimed on smooth SDEs only: across
            // vp_discrete's 1,000 knots Euler–Maruyama's pathwise error flattens once steps are
            // finer than the knots (N = 512, 1024, 2048: 2.0e-3, 1.2e-3, 9.3e-4; tail 0.55),
            // while ddpm and reverse_diffusion, which step through α_{t|s}, read 0.99 and 0.92.
            let measured = policy.strong_order(i) && sde.knots().is_empty();
            if let (Order::Sde { strong, .. }, true) = (claims.order, measured) {
                strong::strong_order(report, fixture, case, strong);
            }
        } else {
            // A schedule with knots has a drift that jumps: no Runge–Kutta method keeps an order
            // above 1 across them, so orders are claimed on smooth SDEs only.
            if adaptive {
                // Across vp_discrete's 1,000 knots the drift jumps, and an adaptive step must
                // shrink onto each jump: rtol 1e-7 takes 5,762 NFE per sample, 1e-8 exceeds
                // the 20,000 budget. Tolerance sweeps are claimed on smooth, non-stiff SDEs,
                // like orders: linear_flow's f = −1/(1 − t) is −1,000 at T = 0.999, where
                // explicit steps are bounded by stability rather than accuracy, and dopri5's
                // error there falls like rtol^1.25 (RMS over 64 starts, rtol 1e-5…1e-10; 67×
                // between 1e-6 and 1e-7). The criterion: |f(T)| (T − t_ε) ≤ 500 (vp_cosine's
                // is 184 and passes at slope 1.07).
                let c = sde.coefs(sde.t_max());
                let stiff = c.f.abs() * (sde.t_max() - sde.t_eps()) > 500.0;
                if policy.adaptive_sweeps(i) && sde.knots().is_empty() && !stiff {
                    adaptive::error_follows_rtol(report, fixture, case, name);
                    adaptive::finite_at_every_rtol(report, fixture, case, name);
                }
            } else if sde.knots().is_empty() {
                flow::flow_order(report, fixture, case);
            }
            for spec in policy.paired_mixtures(i) {
                if let Err(e) = quality::paired_error(report, fixture, case, &spec) {
                    report.error(
                        &plugin,
                        format!("paired error on {} ({sde_name}) at default", spec.name),
                        e,
                    );
                }
            }
        }
        let ring_params: Vec<(&str, Arc<dyn Parameterization>)> =
            match policy.ring_params(name, params_ron, i) {
                ParamSet::Every => params.to_vec(),
                ParamSet::RunOnly => vec![
                    params
                        .iter()
                        .find(|(_, p)| Arc::ptr_eq(p, &fixture.param))
                        .cloned()
                        .unwrap_or(("", fixture.param.clone())),
                ],
            };
        for (param_name, param) in ring_params {
            let run = quality::sw2_at_default(report, fixture, case, &ring(), param_name, param);
            if let Err(e) = run {
                report.error(
                    &plugin,
                    format!("SW2 on ring ({sde_name}, {param_name}) at default"),
                    e,
                );
            }
        }
        for spec in policy.sw2_other_mixtures() {
            let param = fixture.param.clone();
            if let Err(e) = quality::sw2_at_default(report, fixture, case, &spec, "", param) {
                report.error(
                    &plugin,
                    format!("SW2 on {} ({sde_name}) at default", spec.name),
                    e,
                );
            }
        }
        if adaptive {
            if let Err(e) = adaptive::same_steps_in_any_batch(report, fixture, case) {
                report.error(&plugin, format!("same steps in any batch ({sde_name})"), e);
            }
            continue;
        }
        robust::finite_everywhere(report, fixture, case);
        if let Err(e) = robust::bit_identical(report, fixture, case) {
            report.error(
                &plugin,
                format!("bit-identical across batches ({sde_name})"),
                e,
            );
        }
    }
    if adaptive && solver.integrates_likelihood() {
        for (spec, sde_name) in policy.likelihood_cases() {
            let Some((_, sde)) = sdes.iter().find(|(n, _)| *n == sde_name) else {
                continue;
            };
            if let Err(e) =
                likelihood::exact_likelihood(report, fixture, &plugin, name, &spec, (sde_name, sde))
            {
                report.error(
                    &plugin,
                    format!("exact likelihood on {} ({sde_name})", spec.name),
                    e,
                );
            }
        }
    }
}
