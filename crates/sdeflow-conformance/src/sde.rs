//! SDE contracts (MATH.md §1): the identities f = d log α/dt and g² = dσ²/dt − 2 f σ², the
//! prior against the marginal at T, monotone α, σ and SNR, and t(λ(t)) = t.

use sdeflow_kernel::ForwardSde;

use crate::report::{Report, num};

/// Interior points checked.
const POINTS: usize = 201;

/// Five-point central difference of `f` at `t` with step `h` (error O(h⁴)).
fn derivative(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
}

/// Runs every SDE contract on `sde`, registered as `name`.
pub fn check(report: &mut Report, name: &str, sde: &dyn ForwardSde) {
    let plugin = format!("sde/{name}");
    let (t_eps, t_max) = (sde.t_eps(), sde.t_max());
    let h = 1e-4 * (t_max - t_eps);
    // Clear of the ends, where a stencil would leave [t_ε, T].
    let grid: Vec<f64> = (0..POINTS)
        .map(|i| t_eps + 3.0 * h + (t_max - t_eps - 6.0 * h) * i as f64 / (POINTS - 1) as f64)
        .collect();
    let tol = 1e-6;

    let mut worst_f: f64 = 0.0;
    let mut worst_g: f64 = 0.0;
    for &t in &grid {
        let f_num = derivative(|s| sde.alpha(s).ln(), t, h);
        let f = sde.drift_coef(t);
        worst_f = worst_f.max((f_num - f).abs() / f.abs().max(1.0));
        let s2 = sde.sigma(t).powi(2);
        let g2_num = derivative(|s| sde.sigma(s).powi(2), t, h) - 2.0 * f * s2;
        let g2 = sde.diffusion_sq(t);
        worst_g = worst_g.max((g2_num - g2).abs() / g2.abs().max(1.0));
    }
    report.push(
        &plugin,
        "f = d log α/dt (5-point differences)",
        num(worst_f),
        "0",
        format!("≤ {tol:e} · max(|f|, 1)"),
        worst_f <= tol,
        "drift_coef disagrees with the derivative of log alpha: one of them has the wrong formula",
    );
    report.push(
        &plugin,
        "g² = dσ²/dt − 2fσ² (5-point differences)",
        num(worst_g),
        "0",
        format!("≤ {tol:e} · max(|g²|, 1)"),
        worst_g <= tol,
        "diffusion_sq disagrees with the marginal's variance: check sigma and diffusion_sq against MATH.md §1",
    );

    // The prior against the marginal of unit-scale data N(1, 1) at T, KL per dimension:
    // KL(N(α, α² + σ²) ‖ N(0, s²)) = ½ ((α² + σ² + α²)/s² − 1 − ln((α² + σ²)/s²)).
    let (a, s, p) = (sde.alpha(t_max), sde.sigma(t_max), sde.prior_std());
    let v = a * a + s * s;
    let kl = 0.5 * ((v + a * a) / (p * p) - 1.0 - (v / (p * p)).ln());
    report.push(
        &plugin,
        "prior vs marginal at T, KL/dim for data N(1, 1)",
        num(kl),
        "0",
        "< 1e-3",
        kl < 1e-3,
        format!("prior N(0, {p}² I) is far from the marginal at T (α = {a:e}, σ = {s:e}): raise T or fix prior_std"),
    );

    let fine: Vec<f64> = (0..=1000)
        .map(|i| t_max + (t_eps - t_max) * i as f64 / 1000.0)
        .collect();
    let mut monotone = true;
    for w in fine.windows(2) {
        let (later, earlier) = (w[0], w[1]);
        monotone &= sde.alpha(later) <= sde.alpha(earlier)
            && sde.sigma(later) >= sde.sigma(earlier)
            && sde.log_snr(later) < sde.log_snr(earlier);
    }
    report.push(
        &plugin,
        "α ↓, σ ↑, λ strictly ↓ on [t_ε, T]",
        if monotone { "monotone" } else { "not monotone" },
        "monotone",
        "exact",
        monotone,
        "alpha must not increase, sigma must not decrease and log_snr must fall with t",
    );

    let worst_inv = fine
        .iter()
        .map(|&t| (sde.t_of_log_snr(sde.log_snr(t)) - t).abs() / t_max)
        .fold(0.0, f64::max);
    report.push(
        &plugin,
        "t(λ(t)) = t",
        num(worst_inv),
        "0",
        "≤ 1e-9 · T",
        worst_inv <= 1e-9,
        "t_of_log_snr does not invert log_snr",
    );
}
