//! Weighting contracts: finite and positive on [t_ε, T] for every SDE.

use sdeflow_kernel::{ForwardSde, Weighting};

use crate::report::{Report, num};

/// Runs the weighting contracts for `w` (named `name`) on every SDE.
pub fn check(report: &mut Report, name: &str, w: &dyn Weighting, sdes: &[(&str, &dyn ForwardSde)]) {
    let plugin = format!("weighting/{name}");
    for (sde_name, sde) in sdes {
        let (a, b) = (sde.t_eps(), sde.t_max());
        let weights: Vec<f64> = (0..=1000)
            .map(|i| w.eps_weight(&sde.coefs(a + (b - a) * i as f64 / 1000.0)))
            .collect();
        let bad = weights
            .iter()
            .filter(|v| !(v.is_finite() && **v > 0.0))
            .count();
        let min = weights.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        report.push(
            &plugin,
            format!("finite and positive on [t_ε, T] of {sde_name}"),
            format!("range [{}, {}]", num(min), num(max)),
            "0 < w < ∞",
            "every one of 1,001 points",
            bad == 0,
            format!("{bad} of 1,001 weights are zero, negative or not finite"),
        );
    }
}
