//! The linear-flow SDE's coefficients against MATH.md §1's closed forms (α = 1 − t, σ = t,
//! f = −1/(1 − t), g² = 2t/(1 − t), λ = ln((1 − t)/t)), the marginal identities by five-point
//! differences, monotonicity, the inverse of λ, the PF-ODE drift as the flow velocity, and the
//! prior's KL at T.

use sdeflow_kernel::{ForwardSde, GridKind, Result};
use sdeflow_sde_linear_flow::{LinearFlow, Params};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn flow() -> Result<LinearFlow> {
    LinearFlow::new(Params::default())
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// `n + 1` times uniform on [a, b].
fn uniform(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n).map(|i| a + (b - a) * i as f64 / n as f64).collect()
}

/// `n + 1` times log-spaced on [a, b].
fn log_spaced(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n)
        .map(|i| (a.ln() + (b.ln() - a.ln()) * i as f64 / n as f64).exp())
        .collect()
}

/// Five-point central difference of `f` at `t` with step `h`; its error is exactly
/// h⁴/30 · f⁽⁵⁾(ξ) for some ξ within 2h of t.
fn derivative(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
}

/// (t, α, f, g², λ) from mpmath (mp.dps = 40, t the f64 literal as mpf):
/// `α = 1 − t; f = −1/(1 − t); g² = 2t/(1 − t); λ = log((1 − t)/t)`; σ = t.
/// Each is one to three roundings in the code (ln_1p, ln, a division): 4ε relative, λ 4ε
/// (1 + |λ|) absolute.
#[test]
fn coefficients_match_high_precision_values() -> Result<()> {
    let sde = flow()?;
    let table = [
        (
            1e-9,
            0.999_999_999,
            -1.000_000_001,
            2.000_000_002e-9,
            20.723_265_835_946_41,
        ),
        (
            1e-3,
            0.999,
            -1.001_001_001_001_001,
            0.002_002_002_002_002_002,
            6.906_754_778_648_554,
        ),
        (
            0.25,
            0.75,
            -1.333_333_333_333_333_3,
            0.666_666_666_666_666_6,
            1.098_612_288_668_109_7,
        ),
        (0.5, 0.5, -2.0, 2.0, 0.0),
        (
            0.9,
            0.099_999_999_999_999_98,
            -10.000_000_000_000_002,
            18.000_000_000_000_004,
            -2.197_224_577_336_219_6,
        ),
        (
            0.999,
            0.001_000_000_000_000_000_9,
            -999.999_999_999_999_1,
            1_997.999_999_999_998_2,
            -6.906_754_778_648_553,
        ),
    ];
    for (t, alpha, f, g2, lambda) in table {
        assert!(rel(sde.alpha(t), alpha) <= 4.0 * EPS, "α({t})");
        assert_eq!(sde.sigma(t), t);
        assert!(rel(sde.drift_coef(t), f) <= 4.0 * EPS, "f({t})");
        assert!(rel(sde.diffusion_sq(t), g2) <= 4.0 * EPS, "g²({t})");
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 4.0 * EPS * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
    }
    assert_eq!(sde.default_grid(), GridKind::Uniform);
    Ok(())
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ² by five-point differences on
/// conformance's 201 points. σ² = t² is differentiated exactly, so g² meets 1e-6 · max(|g²|, 1)
/// at conformance's step h = 1e-4 (T − t_ε). log α = ln(1 − t) is not: its fifth derivative is
/// −24/(1 − t)⁵, and with 1 − t ≥ 1.3e-3 at T − 3h the stencil's own truncation,
/// h⁴/30 · 24/(1 − t − 2h)⁵ ≈ 0.8 (h/(1 − t))⁴ |f| ≈ 3e-5 |f|, exceeds 1e-6 |f| for every
/// correct f; at that step the test allows the truncation bound on top (plus rounding,
/// 3ε |ln α|/h). At a quarter of the step the truncation is below 2.3e-7 |f|, and plain
/// 1e-6 · max(|f|, 1) holds.
#[test]
fn marginal_identities_hold_by_five_point_differences() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            t_max: 0.9,
            t_eps: 0.1,
        },
    ] {
        let sde = LinearFlow::new(p)?;
        let h = 1e-4 * (p.t_max - p.t_eps);
        for t in uniform(p.t_eps + 3.0 * h, p.t_max - 3.0 * h, 200) {
            let f = sde.drift_coef(t);
            let f_num = derivative(|s| sde.alpha(s).ln(), t, h);
            let truncation = h.powi(4) / 30.0 * 24.0 / (1.0 - t - 2.0 * h).powi(5);
            let rounding = 3.0 * EPS * sde.alpha(t).ln().abs().max(1.0) / h;
            let tol = 1e-6 * f.abs().max(1.0) + truncation + rounding;
            assert!((f_num - f).abs() <= tol, "{p:?}, t = {t}: f");
            let g2 = sde.diffusion_sq(t);
            let g2_num =
                derivative(|s| sde.sigma(s).powi(2), t, h) - 2.0 * f * sde.sigma(t).powi(2);
            assert!(
                (g2_num - g2).abs() <= 1e-6 * g2.abs().max(1.0),
                "{p:?}, t = {t}: g²"
            );
        }
        let h = h / 4.0;
        for t in uniform(p.t_eps + 3.0 * h, p.t_max - 3.0 * h, 200) {
            let f = sde.drift_coef(t);
            let f_num = derivative(|s| sde.alpha(s).ln(), t, h);
            assert!(
                (f_num - f).abs() <= 1e-6 * f.abs().max(1.0),
                "{p:?}, t = {t}: f, h/4"
            );
        }
    }
    Ok(())
}

/// α non-increasing, σ non-decreasing, λ strictly decreasing on [t_ε, T] (conformance's
/// 1001 points) and on a log-spaced grid down to 1e-9.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = flow()?;
    let (t_eps, t_max) = (sde.t_eps(), sde.t_max());
    for ts in [uniform(t_eps, t_max, 1000), log_spaced(1e-9, t_max, 400)] {
        for w in ts.windows(2) {
            let (earlier, later) = (w[0], w[1]);
            assert!(sde.alpha(later) <= sde.alpha(earlier), "α at {later}");
            assert!(sde.sigma(later) >= sde.sigma(earlier), "σ at {later}");
            assert!(sde.log_snr(later) < sde.log_snr(earlier), "λ at {later}");
        }
    }
    Ok(())
}

/// t(λ(t)) = t: conformance asks 1e-9 · T; dt/dλ = −t (1 − t), so λ's rounding
/// (ε (|ln t| + |ln(1 − t)|) ≤ 25ε) moves t by under 1e-14 relative, and the inverse adds a few
/// ε: 1e-13 relative from 1e-9 to T. λ(t(λ)) = λ on [λ(T) − 1, 20], where 1 − t ≥ 3.6e-4
/// keeps t's rounding below ε/3.6e-4 ≈ 6e-13 in λ. Far out, no overflow: t(±1000) is 0 and 1.
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    let sde = flow()?;
    let t_max = sde.t_max();
    for t in uniform(sde.t_eps(), t_max, 1000) {
        assert!(
            (sde.t_of_log_snr(sde.log_snr(t)) - t).abs() <= 1e-9 * t_max,
            "t = {t}"
        );
    }
    for t in log_spaced(1e-9, t_max, 200) {
        let back = sde.t_of_log_snr(sde.log_snr(t));
        assert!(rel(back, t) <= 1e-13, "t = {t:e} came back as {back:e}");
    }
    for lambda in uniform(sde.log_snr(t_max) - 1.0, 20.0, 100) {
        let back = sde.log_snr(sde.t_of_log_snr(lambda));
        assert!(
            (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
            "λ = {lambda} came back as {back}"
        );
    }
    assert_eq!(
        (sde.t_of_log_snr(1000.0), sde.t_of_log_snr(-1000.0)),
        (0.0, 1.0)
    );
    assert_eq!(sde.t_of_log_snr(0.0), 0.5);
    Ok(())
}

/// The kernel's λ-uniform grid, which inverts λ at every point: its λ(t_i) are equally spaced.
#[test]
fn log_snr_grid_is_uniform_in_log_snr() -> Result<()> {
    let sde = flow()?;
    let n = 25;
    let ts = GridKind::LogSnr.times(&sde, n)?;
    let (l0, l1) = (sde.log_snr(sde.t_max()), sde.log_snr(sde.t_eps()));
    for (i, &t) in ts.iter().enumerate() {
        let want = l0 + (l1 - l0) * i as f64 / n as f64;
        assert!(
            (sde.log_snr(t) - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "t_{i} = {t}"
        );
    }
    Ok(())
}

/// MATH.md §3: the PF-ODE drift F = f x − ½ g² s is the flow velocity u = α′ x₀ + σ′ ε = ε − x₀.
/// With x = α x₀ + σ ε and the conditional score s = −ε/σ it is algebra:
/// −(x₀ + σ ε/(1 − t)) + ε/(1 − t) = ε − x₀; a few roundings of terms up to |ε|/(1 − t), so
/// 1e-12 (1 + |ε|/(1 − t)) absolute.
#[test]
fn pf_ode_drift_is_the_flow_velocity() -> Result<()> {
    let sde = flow()?;
    for t in uniform(sde.t_eps(), sde.t_max(), 50) {
        for (x0, eps) in [(1.0, 0.0), (0.0, 1.0), (-0.7, 1.3), (2.5, -0.4)] {
            let c = sde.coefs(t);
            let x = c.alpha * x0 + c.sigma * eps;
            let drift = c.f * x - 0.5 * c.g2 * (-eps / c.sigma);
            let tol = 1e-12 * (1.0 + f64::abs(eps) / (1.0 - t));
            assert!(
                (drift - (eps - x0)).abs() <= tol,
                "t = {t}, x₀ = {x0}, ε = {eps}"
            );
        }
    }
    Ok(())
}

/// The prior N(0, I) against the marginal at T = 1 − 1e-3 of data N(1, 1), per dimension:
/// KL(N(α, α² + σ²) ‖ N(0, 1)) = ½ ((α² + σ² + α²) − 1 − ln(α² + σ²)) = 1.4993323325333371e-6
/// (mpmath with T the f64 literal; ≈ 3α²/2 − 2α³/3 since α² + σ² = 1 − 2α + 2α²). The terms
/// of size 2e-3 cancel to 1.5e-6, costing three digits: 1e-10 relative.
#[test]
fn prior_is_close_to_the_marginal_at_t_max() -> Result<()> {
    let sde = flow()?;
    assert_eq!(sde.prior_std(), 1.0);
    let (a, s) = (sde.alpha(sde.t_max()), sde.sigma(sde.t_max()));
    let v = a * a + s * s;
    let kl = 0.5 * ((v + a * a) - 1.0 - v.ln());
    assert!(rel(kl, 1.499_332_332_533_337e-6) <= 1e-10, "KL = {kl}");
    assert!(kl < 1e-3);
    Ok(())
}

/// Every grid conformance builds (uniform, quadratic, log_snr, karras(7)) is strictly
/// decreasing from exactly T to exactly t_ε for N = 1..=2000: the inverse of λ never repeats
/// a time.
#[test]
fn grids_are_strictly_decreasing_up_to_2000_steps() -> Result<()> {
    let sde = flow()?;
    let kinds = [
        GridKind::Uniform,
        GridKind::Quadratic,
        GridKind::LogSnr,
        GridKind::Karras { rho: 7.0 },
    ];
    for kind in kinds {
        for n in 1..=2000 {
            let ts = kind.times(&sde, n)?;
            assert_eq!(ts.len(), n + 1);
            assert_eq!(
                (ts[0], ts[n]),
                (sde.t_max(), sde.t_eps()),
                "{kind} at N = {n}"
            );
            assert!(ts.windows(2).all(|w| w[0] > w[1]), "{kind} at N = {n}");
        }
    }
    Ok(())
}
