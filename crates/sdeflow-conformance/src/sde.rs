//! SDE contracts (MATH.md §1): the identities f = d log α/dt and g² = dσ²/dt − 2 f σ², the
//! prior against the marginal at T, monotone α, σ and SNR, and t(λ(t)) = t.

use sdeflow_kernel::{ForwardSde, GridKind};

use crate::report::{Report, num};

/// Interior points checked.
const POINTS: usize = 201;

/// Five-point central difference of `f` at `t` with step `h` (error O(h⁴)), extrapolated
/// once more by Richardson, (16 D(h/2) − D(h))/15 (error O(h⁶)): near a singular end, as
/// linear_flow's T = 1 − 1e-3, the plain stencil's own error reaches 3e-5·|f|.
fn derivative(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    let d =
        |h: f64| (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h);
    (16.0 * d(0.5 * h) - d(h)) / 15.0
}

/// `t` moved to the middle between its neighbouring knots when a stencil of half-width `r`
/// around it would straddle one.
fn nudge_off_knots(t: f64, knots: &[f64], r: f64) -> f64 {
    let Some(k) = knots.iter().position(|k| (k - t).abs() <= r) else {
        return t;
    };
    let lo = if k > 0 {
        knots[k - 1]
    } else {
        knots[k] - 2.0 * r - 1e-12
    };
    let hi = knots
        .get(k + 1)
        .copied()
        .unwrap_or(knots[k] + 2.0 * r + 1e-12);
    let (lo, hi) = if t < knots[k] {
        (lo, knots[k])
    } else {
        (knots[k], hi)
    };
    0.5 * (lo + hi)
}

/// Grids every SDE must build strictly decreasing from T to t_ε, for N = 1..=`GRID_STEPS`.
pub const GRID_STEPS: usize = 2000;

/// Runs every SDE contract on `sde`, registered as `name`.
pub fn check(report: &mut Report, name: &str, sde: &dyn ForwardSde) {
    let plugin = format!("sde/{name}");
    let (t_eps, t_max) = (sde.t_eps(), sde.t_max());
    let h = 1e-4 * (t_max - t_eps);
    // Clear of the ends, where a stencil would leave [t_ε, T], and of knots, where f jumps.
    let knots = sde.knots();
    let grid: Vec<f64> = (0..POINTS)
        .map(|i| t_eps + 3.0 * h + (t_max - t_eps - 6.0 * h) * i as f64 / (POINTS - 1) as f64)
        .map(|t| nudge_off_knots(t, &knots, 3.0 * h))
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

    let kinds = [
        GridKind::Uniform,
        GridKind::Quadratic,
        GridKind::LogSnr,
        GridKind::Karras { rho: 7.0 },
    ];
    let mut bad = Vec::new();
    for kind in kinds {
        for n in 1..=GRID_STEPS {
            match kind.times(sde, n) {
                Ok(ts)
                    if ts.len() == n + 1
                        && ts[0] == t_max
                        && ts[n] == t_eps
                        && ts.windows(2).all(|w| w[0] > w[1]) => {}
                Ok(_) => bad.push(format!("{kind} at N = {n}: wrong ends or not decreasing")),
                Err(e) => bad.push(format!("{kind} at N = {n}: {e}")),
            }
            if bad.len() > 3 {
                break;
            }
        }
    }
    report.push(
        &plugin,
        format!("grids uniform, quadratic, log_snr, karras(7): strictly ↓ from T to t_ε, N = 1..{GRID_STEPS}"),
        if bad.is_empty() { "all".to_string() } else { format!("{} failing", bad.len()) },
        "all",
        "exact",
        bad.is_empty(),
        bad.join("; "),
    );
}
