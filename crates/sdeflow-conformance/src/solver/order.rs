//! Fitting and reporting a convergence order: the tail fit of an error curve
//! ([`sdeflow_kernel::testing::tail_order`], the one fit plugins' own tests use too) judged
//! against a claim, and, on a target other than the CPU in f64, the check that the target's
//! curve is the host's f64 curve up to rounding (f32 rounding floors a fourth-order method's
//! error within two doublings of its asymptotic range, so orders are fitted in f64).

use sdeflow_kernel::{ForwardSde, Order, Result, testing::tail_order};

use crate::{
    Target,
    mixtures::single_law,
    report::{Report, num},
};

/// Step counts of the order fits: 2^4 … 2^12.
pub const ORDER_STEPS: [usize; 9] = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Rounding allowed per step, in epsilons of the target's dtype, in [`order_rows`]. Measured
/// worst cases: 0.35 (rk4 on linear_flow, the CPU in f32) and 2.1 (euler on linear_flow,
/// CUDA on an H100, whose kernels divide and exponentiate to a few ulps). A solver computing
/// something else misses by its own error, 1e4 N ε and more at N = 16.
pub const ROUNDING_PER_STEP: f64 = 8.0;

/// The order a solver claims to converge at, if it claims one (a plateau does not).
pub(crate) fn claimed_order(order: Order) -> Option<f64> {
    match order {
        Order::Ode(p) => Some(p),
        Order::Sde { weak, .. } => Some(weak),
        Order::Plateau { .. } | Order::Unclaimed => None,
    }
}

/// How an order check is judged: the tolerance on the fitted order and its words.
pub(crate) struct OrderFit<'a> {
    pub steps: &'a [usize],
    pub claim: f64,
    pub tolerance: f64,
    pub tolerance_text: &'a str,
    /// What falls, for the failure message ("the weak error").
    pub what: &'a str,
}

impl<'a> OrderFit<'a> {
    /// The weak and pathwise fits: over [`ORDER_STEPS`], within ± 0.25 of `claim`; `what`
    /// names what falls.
    pub(crate) fn tail(claim: f64, what: &'a str) -> Self {
        Self {
            steps: &ORDER_STEPS,
            claim,
            tolerance: 0.25,
            tolerance_text: "± 0.25 (tail fit, N ≤ 4096)",
            what,
        }
    }
}

/// Fits the tail order of `errors` over `fit.steps` and reports it against the claim (or the
/// error that stopped the measurement).
fn push_order(
    report: &mut Report,
    plugin: &str,
    check: String,
    fit: &OrderFit<'_>,
    errors: Result<Vec<f64>>,
) {
    let errors = match errors {
        Ok(e) => e,
        Err(e) => return report.error(plugin, check, e),
    };
    let fitted = tail_order(fit.steps, &errors);
    let curve: Vec<String> = fit
        .steps
        .iter()
        .zip(&errors)
        .map(|(n, e)| format!("{n}:{}", num(*e)))
        .collect();
    tracing::info!(plugin, check, errors = %curve.join(" "), "error curve");
    report.push(
        plugin,
        check,
        fitted.map_or("fewer than three points above 1e-11".into(), num),
        num(fit.claim),
        fit.tolerance_text,
        fitted.is_some_and(|p| (p - fit.claim).abs() <= fit.tolerance),
        match fitted {
            Some(p) => format!(
                "{} falls at order {p:.2}, not the claimed {}: doubling N divides it by {:.1} where order {} divides it by {:.0}; errors by N {}",
                fit.what,
                fit.claim,
                2f64.powf(p),
                fit.claim,
                2f64.powf(fit.claim),
                curve.join(", ")
            ),
            None => format!(
                "{} has no three points above 1e-11 to fit: errors by N {}",
                fit.what,
                curve.join(", ")
            ),
        },
    );
}

/// The rows of an order check of a run on the single Gaussian under `sde`. On the reference
/// target (the CPU in f64) the order fitted on the error curve `run(target)`. Elsewhere the
/// order is fitted on the host's f64 curve, and a second row checks that the target's curve
/// is that curve up to its rounding, |e_target(N) − e_f64(N)| ≤ [`ROUNDING_PER_STEP`] · N ε ·
/// scale at every N, `scale` the magnitude of the values stepped: the single Gaussian's
/// marginal std at T.
pub(crate) fn order_rows(
    report: &mut Report,
    target: &Target,
    plugin: &str,
    sde: &dyn ForwardSde,
    check: String,
    fit: &OrderFit<'_>,
    run: impl Fn(&Target) -> Result<Vec<f64>>,
) {
    let scale = single_law().var(&sde.coefs(sde.t_max())).sqrt();
    if target.is_reference() {
        return push_order(report, plugin, check, fit, run(target));
    }
    let host = run(&Target::default());
    let on_target = run(target);
    let agree = format!(
        "{check}: {} agrees with f64 within rounding",
        target.label()
    );
    match (&host, on_target) {
        (Ok(want), Ok(got)) => {
            let scale = scale.max(1.0);
            let worst = fit
                .steps
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(n, (w, g))| (g - w).abs() / (*n as f64 * target.epsilon() * scale))
                .fold(0.0, f64::max);
            let curve: Vec<String> = fit
                .steps
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(n, (w, g))| format!("{n}: {} vs {}", num(*g), num(*w)))
                .collect();
            report.push(
                plugin,
                agree,
                format!("{worst:.3} N ε"),
                "0",
                format!("≤ {ROUNDING_PER_STEP} N ε × {}", num(scale)),
                worst <= ROUNDING_PER_STEP,
                format!(
                    "the {} run strays from the f64 run by more than rounding: errors by N (target vs f64) {}",
                    target.label(),
                    curve.join(", ")
                ),
            );
        }
        (_, Err(e)) => report.error(plugin, agree, e),
        (Err(_), _) => {}
    }
    push_order(
        report,
        plugin,
        format!("{check} (f64 on the host)"),
        fit,
        host,
    );
}
