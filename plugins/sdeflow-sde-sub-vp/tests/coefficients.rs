//! The sub-VP SDE's coefficients against MATH.md §1's closed forms: α, σ, f, g², λ at chosen
//! times, σ where 1 − e^{−B} would lose its digits, σ = 1 − α², the marginal identities, the
//! closed-form inverse of λ (MATH.md §5), monotonicity and the N(0, I) prior.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{ForwardSde, Result};
use sdeflow_sde_sub_vp::{Params, SubVp};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn sub_vp() -> Result<SubVp> {
    SubVp::new(Params::default())
}

/// β(t) and B(t) for the default β_min = 0.1, β_max = 20, written out by hand (MATH.md §1).
fn beta(t: f64) -> f64 {
    0.1 + 19.9 * t
}
fn big_b(t: f64) -> f64 {
    0.1 * t + 9.95 * t * t
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

/// α, σ, g² and λ at five times against 50-digit values from mpmath (mp.dps = 50):
/// `B = 0.1 t + 9.95 t²; β = 0.1 + 19.9 t; α = exp(−B/2); σ = −expm1(−B);
/// g² = −β expm1(−2B); λ = log(α/σ)`. Each is a handful of roundings of well-conditioned
/// operations (exp of B ≤ 10.05 costs B·ε ≈ 2e-15 relative), so 1e-14 leaves a margin of five.
#[test]
fn coefficients_match_high_precision_values() -> Result<()> {
    let sde = sub_vp()?;
    // (t, α, σ, g², λ), from the mpmath snippet above.
    let table = [
        (
            1e-7,
            0.999_999_994_999_950_3,
            1.000_009_944_999_900_5e-8,
            2.000_059_680_395_214e-9,
            18.420_670_794_001_866,
        ),
        (
            1e-3,
            0.999_945_026_511_097_6,
            0.000_109_943_955_720_274_88,
            2.636_311_126_968_132_6e-5,
            9.115_484_840_459_796,
        ),
        (
            0.25,
            0.723_657_185_083_086_4,
            0.476_320_278_477_623_6,
            3.683_229_712_526_199_9,
            0.418_227_297_070_855_3,
        ),
        (
            0.5,
            0.281_182_880_796_752_38,
            0.920_936_187_546_839_4,
            9.987_176_581_281_733,
            -1.186_385_468_821_574_5,
        ),
        (
            1.0,
            0.006_571_586_494_929_615,
            0.999_956_814_250_939_6,
            19.999_999_962_699_82,
            -5.024_956_813_318_409,
        ),
    ];
    for (t, alpha, sigma, g2, lambda) in table {
        assert!(rel(sde.alpha(t), alpha) <= 1e-14, "α({t})");
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
    }
    Ok(())
}

/// f = −β/2 (MATH.md §1's sub-VP row, the same drift as VP), and the TimeCoefs bundle agrees
/// with the single accessors. One or two roundings: 4ε.
#[test]
fn drift_is_minus_half_beta() -> Result<()> {
    let sde = sub_vp()?;
    for t in log_spaced(1e-8, 2.0, 40).into_iter().chain([0.0]) {
        assert!(
            rel(sde.drift_coef(t), -0.5 * beta(t)) <= 4.0 * EPS,
            "f({t})"
        );
        let c = sde.coefs(t);
        assert_eq!(
            (c.t, c.alpha, c.sigma, c.f, c.g2, c.lambda),
            (
                t,
                sde.alpha(t),
                sde.sigma(t),
                sde.drift_coef(t),
                sde.diffusion_sq(t),
                sde.log_snr(t)
            )
        );
    }
    Ok(())
}

/// σ = 1 − e^{−B} = 1 − α²: sub-VP's σ is VP's σ² (MATH.md §8 warns against the square root).
/// Then g² = β (1 − e^{−2B}) = β σ (2 − σ) ≤ β, VP's g². The sums round a few times: 4ε.
#[test]
fn sigma_is_one_minus_alpha_squared() -> Result<()> {
    let sde = sub_vp()?;
    for t in log_spaced(1e-3, 3.0, 60) {
        let (a, s) = (sde.alpha(t), sde.sigma(t));
        assert!((s + a * a - 1.0).abs() <= 4.0 * EPS, "t = {t}");
        let g2 = sde.diffusion_sq(t);
        assert!(rel(g2, beta(t) * s * (2.0 - s)) <= 8.0 * EPS, "g²({t})");
        assert!(g2 <= beta(t), "g²({t}) exceeds β");
    }
    Ok(())
}

/// At t = 1e-9, B ≈ 1e-10 and 1 − e^{−B} keeps only ~6 digits. The series
/// −expm1(−B) = B − B²/2 + B³/6 is exact to f64 there (next term B⁴/24 ≈ 4e-42), and
/// g² = β(2B − 2B² + 4B³/3). Both must agree to 1e-13 relative (expm1: a few ulp).
#[test]
fn sigma_and_diffusion_are_accurate_at_tiny_t() -> Result<()> {
    let sde = sub_vp()?;
    for t in [1e-7, 1e-9, 1e-12, 1e-15] {
        let b = big_b(t);
        let sigma = b - b * b / 2.0 + b * b * b / 6.0;
        assert!(rel(sde.sigma(t), sigma) <= 1e-13, "σ({t})");
        let g2 = beta(t) * (2.0 * b - 2.0 * b * b + 4.0 * b * b * b / 3.0);
        assert!(rel(sde.diffusion_sq(t), g2) <= 1e-13, "g²({t})");
        // λ = −B/2 − log(B − B²/2 + …) = −log B + B/2 − B/2 + O(B²) = −log B + O(B²).
        assert!(rel(sde.log_snr(t), -b.ln()) <= 1e-13, "λ({t})");
    }
    Ok(())
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², by the 5-point central differences
/// conformance uses (step h = 1e-4 (T − t_ε), 201 points in [t_ε + 3h, T − 3h]) and its bound
/// 1e-6 · max(|ref|, 1). Truncation is h⁴/30 · |σ²⁽⁵⁾| ≲ 1e-16/30 · 20⁵ ≈ 1e-11, rounding
/// about ε/h ≈ 1e-12: the bound has a wide margin.
#[test]
fn marginal_identities_hold_by_central_differences() -> Result<()> {
    let d5 = |f: &dyn Fn(f64) -> f64, t: f64, h: f64| {
        (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
    };
    for p in [
        Params::default(),
        Params {
            beta_min: 0.0,
            beta_max: 5.0,
            t_max: 2.0,
            t_eps: 1e-5,
        },
    ] {
        let sde = SubVp::new(p)?;
        let h = 1e-4 * (p.t_max - p.t_eps);
        for i in 0..=200 {
            let t = p.t_eps + 3.0 * h + (p.t_max - p.t_eps - 6.0 * h) * i as f64 / 200.0;
            let f = sde.drift_coef(t);
            let f_num = d5(&|s| sde.alpha(s).ln(), t, h);
            assert!(
                (f - f_num).abs() <= 1e-6 * f.abs().max(1.0),
                "{p:?}, t = {t}: f"
            );
            let g2 = sde.diffusion_sq(t);
            let g2_num = d5(&|s| sde.sigma(s).powi(2), t, h) - 2.0 * f * sde.sigma(t).powi(2);
            assert!(
                (g2 - g2_num).abs() <= 1e-6 * g2.abs().max(1.0),
                "{p:?}, t = {t}: g² = {g2}, numerically {g2_num}"
            );
        }
    }
    Ok(())
}

/// α does not rise, σ does not fall and λ falls strictly, on conformance's 1001-point grid and
/// on a log grid reaching t = 1e-9.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = sub_vp()?;
    let fine: Vec<f64> = (0..=1000)
        .map(|i| 1e-3 + 0.999 * i as f64 / 1000.0)
        .collect();
    for ts in [fine, log_spaced(1e-9, 2.0, 400)] {
        for w in ts.windows(2) {
            let (early, late) = (w[0], w[1]);
            assert!(sde.alpha(late) <= sde.alpha(early), "α at {late}");
            assert!(sde.sigma(late) >= sde.sigma(early), "σ at {late}");
            assert!(sde.log_snr(late) < sde.log_snr(early), "λ at {late}");
        }
    }
    Ok(())
}

/// t(λ(t)) = t to 1e-12 relative on [t_ε, T] and beyond it (the closed form B = 2 asinh(σ̃/2)
/// does not clamp), and λ(t(λ)) = λ; the round trip is well conditioned, so a correct inverse
/// lands within a few ulp. Extreme λ stay finite where e^{−λ} itself would overflow.
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            beta_min: 0.0,
            beta_max: 5.0,
            t_max: 2.0,
            t_eps: 1e-5,
        },
    ] {
        let sde = SubVp::new(p)?;
        let inside = log_spaced(p.t_eps, p.t_max, 50);
        for t in inside.into_iter().chain([1e-9, 1e-7, 1.5 * p.t_max, 5.0]) {
            let back = sde.t_of_log_snr(sde.log_snr(t));
            assert!(
                rel(back, t) <= 1e-12,
                "{p:?}: t = {t:e} came back as {back:e}"
            );
        }
        for i in 0..=40 {
            let lambda = -20.0 + 30.0 * i as f64 / 40.0;
            let back = sde.log_snr(sde.t_of_log_snr(lambda));
            assert!(
                (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
                "{p:?}: λ = {lambda} came back as {back}"
            );
        }
        // λ = −800: e^{800} overflows, but B = 2 (800 − ln 2 + ln 2 + …) = 1600 is fine.
        let t = sde.t_of_log_snr(-800.0);
        assert!(t.is_finite() && t > p.t_max, "t(−800) = {t}");
        assert!(rel(sde.log_snr(t), -800.0) <= 1e-12);
    }
    Ok(())
}

/// The prior is N(0, I): log p(0) for d = 6 is −3 ln 2π = −5.5136311992280364507 (mpmath),
/// samples are the standard normal draws, and the KL per dimension to the marginal at T of
/// data N(1, 1) is ½ (v + α² − 1 − ln v), v = α² + σ², = 2.159334e-5 (mpmath), below 1e-3.
#[test]
fn prior_is_standard_normal_and_close_to_the_marginal_at_t_max() -> Result<()> {
    let sde = sub_vp()?;
    assert_eq!(sde.prior_std(), 1.0);
    let zero = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu)?;
    let lp0 = sde.prior_log_prob(&zero)?.to_vec1::<f64>()?;
    assert!(rel(lp0[0], -5.513_631_199_228_036) <= 1e-14);
    let z = Tensor::new(&[[0.5f64, -1.5]], &Device::Cpu)?;
    assert_eq!(sde.prior_sample(&z)?.to_vec2::<f64>()?, z.to_vec2::<f64>()?);

    let (a, s) = (sde.alpha(1.0), sde.sigma(1.0));
    let v = a * a + s * s;
    let kl = 0.5 * (v + a * a - 1.0 - v.ln());
    assert!(rel(kl, 2.159_334_075_555e-5) <= 1e-6, "KL = {kl:e}");
    assert!(kl < 1e-3);
    Ok(())
}
