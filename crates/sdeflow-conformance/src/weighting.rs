//! Weighting contracts: finite and positive on [t_ε, T] for every SDE; a weighting with its
//! own t-density has it normalized and sampled by its inverse CDF.

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
        density(report, &plugin, w, sde_name, *sde);
    }
}

/// A weighting with its own t-density: it integrates to 1 on [t_ε, T] and its sampler
/// inverts its CDF (both by quadrature in ln t, deterministic).
fn density(
    report: &mut Report,
    plugin: &str,
    w: &dyn Weighting,
    sde_name: &str,
    sde: &dyn ForwardSde,
) {
    let (a, b) = (sde.t_eps(), sde.t_max());
    if w.t_density(sde, &sde.coefs(0.5 * (a + b))).is_none() {
        return;
    }
    // Trapezoid in u = ln t on a fine grid; the cumulative integral is the CDF.
    const NODES: usize = 200_001;
    let (la, lb) = (a.ln(), b.ln());
    let ts: Vec<f64> = (0..NODES)
        .map(|i| (la + (lb - la) * i as f64 / (NODES - 1) as f64).exp())
        .collect();
    let f: Vec<f64> = ts
        .iter()
        .map(|&t| w.t_density(sde, &sde.coefs(t)).unwrap_or(f64::NAN) * t)
        .collect();
    let du = (lb - la) / (NODES - 1) as f64;
    let mut cdf = vec![0.0; NODES];
    for i in 1..NODES {
        cdf[i] = cdf[i - 1] + 0.5 * du * (f[i - 1] + f[i]);
    }
    let total = cdf[NODES - 1];
    report.push(
        plugin,
        format!("t-density integrates to 1 on [t_ε, T] of {sde_name}"),
        num(total),
        "1",
        "± 1e-6",
        (total - 1.0).abs() <= 1e-6,
        "t_density is not normalized on [t_ε, T]: divide by the mass the SDE's range keeps",
    );
    let mut worst: f64 = 0.0;
    for u in [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
        let Some(t) = w.sample_t(sde, u) else {
            worst = f64::INFINITY;
            break;
        };
        let x = (t.ln() - la) / du;
        let i = (x.floor() as usize).min(NODES - 2);
        let frac = x - i as f64;
        let at = cdf[i] + frac * (cdf[i + 1] - cdf[i]);
        worst = worst.max((at - u).abs());
    }
    report.push(
        plugin,
        format!("sample_t inverts the CDF of its t-density on {sde_name}"),
        num(worst),
        "0",
        "≤ 1e-6",
        worst <= 1e-6,
        "sample_t(u) does not land where the density's CDF equals u",
    );
}
