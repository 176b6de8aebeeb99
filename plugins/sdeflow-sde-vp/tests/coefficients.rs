//! The VP SDE's coefficients against MATH.md §1's closed forms: α, σ, f, g², λ at chosen
//! times, σ where 1 − e^{−B} would lose its digits, α² + σ² = 1, the marginal identities, the
//! closed-form inverse of λ, and the N(0, I) prior.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    ForwardSde, Result,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_sde_vp::{Params, Vp};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn vp() -> Result<Vp> {
    Vp::new(Params::default())
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

/// α, σ and λ at five times against 50-digit values from mpmath (mp.dps = 50):
/// `B = 0.1 t + 9.95 t²; α = exp(−B/2); σ = sqrt(−expm1(−B)); λ = log(α/σ)`.
/// α = e^{−B/2} with B ≤ 10.05 carries a relative error of about B·ε ≈ 1e-15, σ and λ a few
/// ulp; 1e-14 leaves a factor of ten.
#[test]
fn alpha_sigma_log_snr_match_high_precision_values() -> Result<()> {
    let sde = vp()?;
    // (t, α, σ, λ), from the mpmath snippet above.
    let table = [
        (
            1e-7,
            0.999_999_994_999_950_3,
            0.000_100_000_497_248_758_74,
            9.210_335_394_500_908,
        ),
        (
            1e-3,
            0.999_945_026_511_097_6,
            0.010_485_416_335_094_896,
            4.557_714_932_729_898,
        ),
        (
            0.25,
            0.723_657_185_083_086_4,
            0.690_159_603_626_308_7,
            0.047_394_898_535_427_67,
        ),
        (
            0.5,
            0.281_182_880_796_752_4,
            0.959_654_202_068_036_2,
            -1.227_567_734_410_787_3,
        ),
        (
            1.0,
            0.006_571_586_494_929_615,
            0.999_978_406_892_338_7,
            -5.024_978_406_659_204,
        ),
    ];
    for (t, alpha, sigma, lambda) in table {
        assert!(
            rel(sde.alpha(t), alpha) <= 1e-14,
            "α({t}) = {}",
            sde.alpha(t)
        );
        assert!(
            rel(sde.sigma(t), sigma) <= 1e-14,
            "σ({t}) = {}",
            sde.sigma(t)
        );
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 1e-14 * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
    }
    // α(1) = exp(−(β_min + ½(β_max − β_min))/2) = exp(−(0.1 + 9.95)/2), by hand.
    assert!(rel(sde.alpha(1.0), (-(0.1f64 + 9.95) / 2.0).exp()) <= 1e-14);
    Ok(())
}

/// f = −β/2 and g² = β (MATH.md §1's VP row), on a grid through and beyond [t_ε, T]. Each is
/// one or two roundings from the hand formula, so 4ε relative.
#[test]
fn drift_and_diffusion_are_minus_half_beta_and_beta() -> Result<()> {
    let sde = vp()?;
    for t in log_spaced(1e-8, 2.0, 40).into_iter().chain([0.0]) {
        let b = beta(t);
        assert!(rel(sde.drift_coef(t), -0.5 * b) <= 4.0 * EPS, "f({t})");
        assert!(rel(sde.diffusion_sq(t), b) <= 4.0 * EPS, "g²({t})");
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

/// At t = 1e-7, B ≈ 1e-8 and 1 − e^{−B} keeps only ~8 of 16 digits. The series
/// σ = √(1 − e^{−B}) = √B (1 − B/4 + 5B²/96 − …) (expand √(1 − B/2 + B²/6)) is exact to
/// f64 here: the next term is O(B³) ≈ 1e-24. σ must agree to 1e-12 relative (expm1 gives a
/// few ulp; the naive form is off by ~1e-8).
#[test]
fn sigma_is_accurate_at_tiny_t() -> Result<()> {
    let sde = vp()?;
    for t in [1e-7, 3e-8, 1e-9, 1e-12] {
        let b = big_b(t);
        let series = b.sqrt() * (1.0 - b / 4.0 + 5.0 * b * b / 96.0);
        assert!(
            rel(sde.sigma(t), series) <= 1e-12,
            "σ({t}) = {:e}, series {:e}",
            sde.sigma(t),
            series
        );
        // λ = −½ log(expm1(B)) = −½ log B − B/4 + O(B²) there.
        let lambda = -0.5 * b.ln() - b / 4.0;
        assert!(rel(sde.log_snr(t), lambda) <= 1e-12, "λ({t})");
    }
    Ok(())
}

/// α² + σ² = e^{−B} + (1 − e^{−B}) = 1 for every t; each square and the sum round, so 4ε.
#[test]
fn alpha_squared_plus_sigma_squared_is_one() -> Result<()> {
    let sde = vp()?;
    for t in log_spaced(1e-9, 3.0, 60) {
        let (a, s) = (sde.alpha(t), sde.sigma(t));
        assert!((a * a + s * s - 1.0).abs() <= 4.0 * EPS, "t = {t}");
    }
    Ok(())
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², by central differences with
/// h = 1e-5·t. log α = −B/2 is quadratic, so its difference has no truncation error; σ² has
/// h²/6·|σ²'''| ≤ 1e-10/6·(β³ + 3ββ') ≈ 2e-7 absolute at β ≤ 20. Rounding: α and σ² carry
/// about ε absolute, so the differences carry ε/(α h) and ε/h; the bound is their sum
/// (times 4) plus 1e-7 relative.
#[test]
fn marginal_identities_hold_by_central_differences() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            beta_min: 0.0,
            beta_max: 5.0,
            ..Params::default()
        },
    ] {
        let sde = Vp::new(p)?;
        for t in log_spaced(1e-3, 1.0, 20) {
            let h = 1e-5 * t;
            let dlog_alpha = (sde.alpha(t + h).ln() - sde.alpha(t - h).ln()) / (2.0 * h);
            let dsigma2 = (sde.sigma(t + h).powi(2) - sde.sigma(t - h).powi(2)) / (2.0 * h);
            let (f, g2) = (sde.drift_coef(t), sde.diffusion_sq(t));
            let tol_f = 1e-7 * f.abs() + 4.0 * EPS / (sde.alpha(t) * h);
            assert!((f - dlog_alpha).abs() <= tol_f, "{p:?}, t = {t}: f");
            let want = dsigma2 - 2.0 * f * sde.sigma(t).powi(2);
            let tol_g2 = 1e-7 * g2.abs() + 2e-7 + 4.0 * EPS / h;
            assert!((g2 - want).abs() <= tol_g2, "{p:?}, t = {t}: g²");
        }
    }
    Ok(())
}

/// t(λ(t)) = t to 1e-12 relative on [t_ε, T] and beyond it on both sides (the closed form
/// B(λ) = log1p(e^{−2λ}) does not clamp). The condition number of the round trip is about 1
/// in relative terms, so a correct inverse lands within a few ulp; 1e-12 leaves 1e3.
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
        let sde = Vp::new(p)?;
        let inside = log_spaced(p.t_eps, p.t_max, 50);
        let beyond = [1e-9, 1e-7, 1e-5, 1.5 * p.t_max, 5.0];
        for t in inside.into_iter().chain(beyond) {
            let back = sde.t_of_log_snr(sde.log_snr(t));
            assert!(
                rel(back, t) <= 1e-12,
                "{p:?}: t = {t:e} came back as {back:e}"
            );
        }
        // And λ(t(λ)) = λ on a λ grid spanning λ(5) ≈ −124 (defaults) to λ(1e-9) ≈ 10.
        for i in 0..=40 {
            let lambda = -20.0 + 30.0 * i as f64 / 40.0;
            let back = sde.log_snr(sde.t_of_log_snr(lambda));
            assert!(
                (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
                "{p:?}: λ = {lambda} came back as {back}"
            );
        }
    }
    Ok(())
}

/// λ falls strictly in t, as the grids that invert it need.
#[test]
fn log_snr_decreases_in_t() -> Result<()> {
    let sde = vp()?;
    let ts = log_spaced(1e-9, 2.0, 200);
    for w in ts.windows(2) {
        assert!(sde.log_snr(w[1]) < sde.log_snr(w[0]), "t = {}", w[1]);
    }
    Ok(())
}

/// The prior is N(0, I): log p(x) = −½‖x‖² − (d/2) ln 2π per row, rows of any shape flattened.
/// At x = 0 with d = 6 this is −3 ln 2π = −5.5136311992280364507 (mpmath). The sum of d
/// squares rounds d times: 1e-13 relative is ample.
#[test]
fn prior_log_prob_is_the_standard_normal_density() -> Result<()> {
    let sde = vp()?;
    assert_eq!(sde.prior_std(), 1.0);
    let dev = Device::Cpu;
    let zero = Tensor::zeros((1, 2, 3), DType::F64, &dev)?;
    let lp0 = sde.prior_log_prob(&zero)?.to_vec1::<f64>()?;
    assert!(rel(lp0[0], -5.513_631_199_228_036) <= 1e-14);

    let x = philox_normal_tensor(philox_key(7, Stream::Exact), 0, 5, 6, 0, DType::F64, &dev)?
        .affine(1.7, 0.3)?;
    let lp = sde
        .prior_log_prob(&x.reshape((5, 2, 3))?)?
        .to_vec1::<f64>()?;
    assert_eq!(lp.len(), 5);
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    for (row, got) in x.to_vec2::<f64>()?.iter().zip(&lp) {
        let want = -0.5 * row.iter().map(|v| v * v).sum::<f64>() - 3.0 * ln_2pi;
        assert!(rel(*got, want) <= 1e-13, "{got} vs {want}");
    }
    // An f32 input gives the same densities (computed in f64 from the f32 values).
    let lp32 = sde
        .prior_log_prob(&x.to_dtype(DType::F32)?)?
        .to_vec1::<f64>()?;
    for (a, b) in lp32.iter().zip(&lp) {
        assert!(rel(*a, *b) <= 1e-6, "f32: {a} vs {b}");
    }
    // Prior samples are the standard normal draws themselves (s = 1).
    let z = sde.prior_sample(&x)?;
    assert_eq!(z.to_vec2::<f64>()?, x.to_vec2::<f64>()?);
    Ok(())
}
