//! The VE SDE's coefficients against MATH.md §1's closed forms in the square-root convention
//! σ² = s(t)² − s_min²: σ, g², λ at chosen times, σ(0) = 0 and σ at tiny t, the marginal
//! identities, the closed-form inverse of λ (MATH.md §5), monotonicity and the N(0, s_max² I)
//! prior.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{ForwardSde, Result, grid::GridKind};
use sdeflow_sde_ve::{Params, Ve};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn ve() -> Result<Ve> {
    Ve::new(Params::default())
}

/// s(t)² = s_min² (s_max/s_min)^{2t} for the defaults s_min = 0.01, s_max = 50, by hand.
fn s_sq(t: f64) -> f64 {
    1e-4 * 5000f64.powf(2.0 * t)
}

/// `n + 1` times log-spaced on [a, b].
fn log_spaced(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n)
        .map(|i| (a.ln() + (b.ln() - a.ln()) * i as f64 / n as f64).exp())
        .collect()
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// σ, g² and λ at five times against 50-digit values from mpmath (mp.dps = 50):
/// `L = log(5000); s² = 0.01² · 5000^{2t}; σ = sqrt(s² − 0.01²); g² = 2 L s²; λ = −log σ`.
/// exp(2Lt) with 2Lt ≤ 17 costs 17ε ≈ 4e-15 relative; 1e-14 leaves a margin.
#[test]
fn coefficients_match_high_precision_values() -> Result<()> {
    let sde = ve()?;
    // (t, σ, g², λ), from the mpmath snippet above.
    let table = [
        (
            1e-9,
            1.305_158_478_036_963_7e-6,
            0.001_703_438_667_300_279_7,
            13.549_186_085_453_965,
        ),
        (
            1e-5,
            0.000_130_521_405_588_563_9,
            0.001_703_728_833_318_457_2,
            8.943_973_317_153_992,
        ),
        (
            0.25,
            0.083_492_920_729_038_31,
            0.120_451_301_246_526_28,
            2.482_993_432_407_661_7,
        ),
        (
            0.5,
            0.707_036_066_972_541_4,
            8.517_193_191_416_238,
            0.346_673_600_281_306_19,
        ),
        (
            1.0,
            49.999_998_999_999_99,
            42_585.965_957_081_187,
            -3.912_022_985_428_145_7,
        ),
    ];
    for (t, sigma, g2, lambda) in table {
        assert!(
            rel(sde.sigma(t), sigma) <= 1e-14,
            "σ({t}) = {:e}",
            sde.sigma(t)
        );
        assert!(rel(sde.diffusion_sq(t), g2) <= 1e-14, "g²({t})");
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 1e-14 * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
        assert_eq!((sde.alpha(t), sde.drift_coef(t)), (1.0, 0.0));
    }
    Ok(())
}

/// The square-root convention: σ(0) = 0 exactly (the marginal at t = 0 is the data), and
/// σ² + s_min² = s(t)² (score_sde's σ = s(t) overstates the variance by s_min²). At t = 1e-12,
/// s² − s_min² would keep only 4 of 16 digits; σ² = s_min² expm1(2Lt) ≈ s_min² (2Lt + 2L²t²)
/// (next term ~1e-35 relative) must hold to 1e-13.
#[test]
fn sigma_is_zero_at_zero_and_sqrt_of_s_squared_minus_s_min_squared() -> Result<()> {
    let sde = ve()?;
    assert_eq!(sde.sigma(0.0), 0.0);
    for t in log_spaced(1e-3, 2.0, 40) {
        let s = sde.sigma(t);
        assert!(rel(s * s + 1e-4, s_sq(t)) <= 64.0 * EPS, "t = {t}");
    }
    let l = 5000f64.ln();
    for t in [1e-9, 1e-12, 1e-15] {
        let x = 2.0 * l * t;
        let sigma = (1e-4 * (x + x * x / 2.0)).sqrt();
        assert!(rel(sde.sigma(t), sigma) <= 1e-13, "σ({t})");
    }
    Ok(())
}

/// g² = 2 s(t)² ln(s_max/s_min) = d s²/dt, f = 0, α = 1 (MATH.md §1's VE row), on a grid through
/// and beyond [t_ε, T]; the TimeCoefs bundle agrees with the single accessors.
#[test]
fn drift_and_diffusion_are_zero_and_two_l_s_squared() -> Result<()> {
    let sde = ve()?;
    let l = 5000f64.ln();
    for t in log_spaced(1e-8, 2.0, 40).into_iter().chain([0.0]) {
        assert!(
            rel(sde.diffusion_sq(t), 2.0 * l * s_sq(t)) <= 64.0 * EPS,
            "g²({t})"
        );
        let c = sde.coefs(t);
        assert_eq!(
            (c.t, c.alpha, c.sigma, c.f, c.g2, c.lambda),
            (
                t,
                1.0,
                sde.sigma(t),
                0.0,
                sde.diffusion_sq(t),
                sde.log_snr(t)
            )
        );
    }
    // Uniform in t is geometric in s(t), SMLD's noise levels.
    assert_eq!(sde.default_grid(), GridKind::Uniform);
    Ok(())
}

/// MATH.md §1: f = d log α/dt (= 0) and g² = dσ²/dt − 2 f σ², by the 5-point central
/// differences conformance uses (step h = 1e-4 (T − t_ε), 201 points in [t_ε + 3h, T − 3h]) and
/// its bound 1e-6 · max(|ref|, 1). σ² = s_min² expm1(2Lt): truncation h⁴/30 · (2L)⁵ σ² ≈ 1e-8
/// absolute at T against g² ≈ 4e4; rounding ε σ²/h ≈ 3e-9.
#[test]
fn marginal_identities_hold_by_central_differences() -> Result<()> {
    let d5 = |f: &dyn Fn(f64) -> f64, t: f64, h: f64| {
        (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
    };
    for p in [
        Params::default(),
        Params {
            sigma_min: 0.002,
            sigma_max: 80.0,
            t_max: 1.5,
            t_eps: 1e-3,
        },
    ] {
        let sde = Ve::new(p)?;
        let h = 1e-4 * (p.t_max - p.t_eps);
        for i in 0..=200 {
            let t = p.t_eps + 3.0 * h + (p.t_max - p.t_eps - 6.0 * h) * i as f64 / 200.0;
            let f_num = d5(&|s| sde.alpha(s).ln(), t, h);
            assert_eq!((sde.drift_coef(t), f_num), (0.0, 0.0), "{p:?}, t = {t}");
            let g2 = sde.diffusion_sq(t);
            let g2_num = d5(&|s| sde.sigma(s).powi(2), t, h);
            assert!(
                (g2 - g2_num).abs() <= 1e-6 * g2.abs().max(1.0),
                "{p:?}, t = {t}: g² = {g2}, numerically {g2_num}"
            );
        }
    }
    Ok(())
}

/// α is constant, σ rises and λ falls strictly, on conformance's 1001-point grid and on a log
/// grid reaching t = 1e-12.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = ve()?;
    let fine: Vec<f64> = (0..=1000)
        .map(|i| 1e-5 + (1.0 - 1e-5) * i as f64 / 1000.0)
        .collect();
    for ts in [fine, log_spaced(1e-12, 2.0, 400)] {
        for w in ts.windows(2) {
            let (early, late) = (w[0], w[1]);
            assert!(sde.alpha(late) <= sde.alpha(early), "α at {late}");
            assert!(sde.sigma(late) > sde.sigma(early), "σ at {late}");
            assert!(sde.log_snr(late) < sde.log_snr(early), "λ at {late}");
        }
    }
    Ok(())
}

/// t(λ(t)) = t to 1e-12 relative on [t_ε, T] and beyond it (the closed form
/// t = ln(√(σ̃² + s_min²)/s_min)/L does not clamp), and λ(t(λ)) = λ; the round trip is well
/// conditioned, so a correct inverse lands within a few ulp. λ = −1000, where σ̃² overflows,
/// gives t = (1000 + ln 100)/L (σ̃ ≫ s_min).
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            sigma_min: 0.002,
            sigma_max: 80.0,
            t_max: 1.5,
            t_eps: 1e-3,
        },
    ] {
        let sde = Ve::new(p)?;
        let inside = log_spaced(p.t_eps, p.t_max, 50);
        for t in inside.into_iter().chain([1e-12, 1e-9, 1.5 * p.t_max, 5.0]) {
            let back = sde.t_of_log_snr(sde.log_snr(t));
            assert!(
                rel(back, t) <= 1e-12,
                "{p:?}: t = {t:e} came back as {back:e}"
            );
        }
        for i in 0..=40 {
            let lambda = -20.0 + 40.0 * i as f64 / 40.0;
            let back = sde.log_snr(sde.t_of_log_snr(lambda));
            assert!(
                (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
                "{p:?}: λ = {lambda} came back as {back}"
            );
        }
    }
    let sde = ve()?;
    let t = sde.t_of_log_snr(-1000.0);
    assert!(
        rel(t, (1000.0 + 100f64.ln()) / 5000f64.ln()) <= 1e-14,
        "t(−1000) = {t}"
    );
    Ok(())
}

/// The prior is N(0, s_max² I): log p(0) for d = 6 is −3 ln(2π · 2500) = −28.985769231796913
/// (mpmath), samples are 50 z, and the KL per dimension to the marginal at T of data N(1, 1),
/// ½ ((v + 1)/s_max² − 1 − ln(v/s_max²)) with v = 1 + σ(1)², is 2.0003998134e-4 (mpmath),
/// below 1e-3.
#[test]
fn prior_is_n_0_s_max_squared_and_close_to_the_marginal_at_t_max() -> Result<()> {
    let sde = ve()?;
    assert_eq!(sde.prior_std(), 50.0);
    let zero = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu)?;
    let lp0 = sde.prior_log_prob(&zero)?.to_vec1::<f64>()?;
    assert!(rel(lp0[0], -28.985_769_231_796_913) <= 1e-14);
    let z = Tensor::new(&[[0.5f64, -1.5]], &Device::Cpu)?;
    assert_eq!(sde.prior_sample(&z)?.to_vec2::<f64>()?, [[25.0, -75.0]]);

    let (s, p) = (sde.sigma(1.0), sde.prior_std());
    let v = 1.0 + s * s;
    let kl = 0.5 * ((v + 1.0) / (p * p) - 1.0 - (v / (p * p)).ln());
    assert!(rel(kl, 2.000_399_813_4e-4) <= 1e-6, "KL = {kl:e}");
    assert!(kl < 1e-3);
    Ok(())
}
