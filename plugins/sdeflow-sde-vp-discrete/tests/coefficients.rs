//! The discrete VP schedule against DDPM's cumulative products and DPM-Solver's
//! piecewise-linear log α (MATH.md §1): ᾱ at the knots, α, σ, f, λ between them, the knots
//! themselves, the marginal identities between knots, monotonicity, the exact inverse of λ and
//! the N(0, I) prior.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{ForwardSde, Result};
use sdeflow_sde_vp_discrete::{Params, VpDiscrete};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn ddpm() -> Result<VpDiscrete> {
    VpDiscrete::new(Params::default())
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// α(t_i)² at t_i = (i + 1)/1000 equals ᾱ_i = Π_{j≤i} (1 − β_j), β_j = 1e-4 + j (0.02 − 1e-4)/999,
/// from mpmath (mp.dps = 50, the product in exact decimal arithmetic). The sum of up to 1000
/// log1p terms, each within an ulp, carries ≲ 1000 ε |log ᾱ| ≈ 2e-12 relative in the worst
/// case (√1000 ε typically); 1e-11 leaves a margin.
#[test]
fn alpha_squared_at_the_knots_is_the_cumulative_product() -> Result<()> {
    let sde = ddpm()?;
    // (i, ᾱ_i), from the mpmath product above.
    let table = [
        (0, 0.9999),
        (1, 0.999_780_092_072_072_1),
        (9, 0.998_105_204_785_834_6),
        (99, 0.897_018_145_674_960_4),
        (499, 0.078_587_242_881_778_24),
        (998, 4.118_193_638_138_452_4e-5),
        (999, 4.035_829_765_375_683_3e-5),
    ];
    for (i, alpha_bar) in table {
        let t = (i + 1) as f64 / 1000.0;
        assert!(
            rel(sde.alpha(t).powi(2), alpha_bar) <= 1e-11,
            "α(t_{i})² = {:e}, ᾱ = {alpha_bar:e}",
            sde.alpha(t).powi(2)
        );
        // σ² = 1 − ᾱ, computed as −expm1(2 log α): no digits lost where ᾱ ≈ 1.
        assert!(
            rel(sde.sigma(t).powi(2), 1.0 - alpha_bar) <= 1e-11,
            "σ(t_{i})"
        );
    }
    // N = 10, β from 0.1 to 0.2 (step 1/90): ᾱ = 0.9, 0.8, 0.702…, exact decimals (mpmath).
    let sde = VpDiscrete::new(Params {
        beta_start: 0.1,
        beta_end: 0.2,
        num_train_timesteps: 10,
        t_eps: None,
    })?;
    let alpha_bar = [
        0.9,
        0.8,
        0.702_222_222_222_222_2,
        0.608_592_592_592_592_6,
        0.520_684_773_662_551_4,
        0.439_689_364_426_154_5,
        0.366_407_803_688_462_1,
        0.301_268_638_588_291_08,
        0.244_362_340_188_280_54,
        0.195_489_872_150_624_43,
    ];
    for (i, want) in alpha_bar.into_iter().enumerate() {
        let t = (i + 1) as f64 / 10.0;
        assert!(rel(sde.alpha(t).powi(2), want) <= 1e-14, "N = 10, i = {i}");
    }
    Ok(())
}

/// knots() returns t_i = (i + 1)/N for i = 0..N−1: t_0 = 1/N = t_ε by default, t_{N−1} = T = 1.
#[test]
fn knots_are_the_discrete_times() -> Result<()> {
    let sde = ddpm()?;
    let knots = sde.knots();
    assert_eq!(knots.len(), 1000);
    for (i, k) in knots.iter().enumerate() {
        assert_eq!(*k, (i + 1) as f64 / 1000.0, "t_{i}");
    }
    assert_eq!((knots[0], knots[999]), (sde.t_eps(), sde.t_max()));
    Ok(())
}

/// α, σ, f and λ between and beyond the knots against mpmath (mp.dps = 50), with log α
/// interpolated linearly on the segment holding t (the first one below t_0):
/// `u = N t − 1; k = clamp(floor(u), 0, N − 2); log α = la[k] + (u − k)(la[k+1] − la[k]);
/// σ = sqrt(−expm1(2 log α)); f = N (la[k+1] − la[k]); λ = log α − log σ`. σ at t_0 is 0.01
/// exactly (σ² = β_0 = 1e-4). The sums carry ~1e-13 relative at most; f is a difference of
/// neighbouring sums, ≈ |la|·ε/Δla ≈ 1e-12 relative in the worst segment.
#[test]
fn coefficients_between_knots_match_high_precision_values() -> Result<()> {
    let sde = ddpm()?;
    // (t, α, σ, f, λ), from the mpmath snippet above.
    let table = [
        (
            0.0005,
            0.999_979_979_477_968_8,
            0.006_327_767_634_892_708_2,
            -0.059_963_555_444_208_02,
            5.062_787_748_618_239_4,
        ),
        (
            0.001,
            0.999_949_998_749_937_5,
            0.01,
            -0.059_963_555_444_208_02,
            4.605_120_183_487_925,
        ),
        (
            0.0015,
            0.999_920_018_920_768_3,
            0.012_647_361_839_149_877,
            -0.059_963_555_444_208_02,
            4.370_226_651_545_181,
        ),
        (
            0.25025,
            0.723_476_686_782_112_1,
            0.690_348_813_052_342_2,
            -2.546_463_471_884_302,
            0.046_871_326_703_026_23,
        ),
        (
            0.5005,
            0.279_626_449_813_101_27,
            0.960_108_873_287_254_5,
            -5.055_451_651_896_8,
            -1.233_592_083_060_936_1,
        ),
        (
            0.7777,
            0.046_749_957_279_097_25,
            0.998_906_623_010_580_8,
            -7.850_193_168_721_579,
            -3.061_847_961_901_862,
        ),
        (
            1.0,
            0.006_352_818_087_570_022,
            0.999_979_820_647_57,
            -10.101_353_658_759_724,
            -5.058_836_591_650_516_1,
        ),
    ];
    for (t, alpha, sigma, f, lambda) in table {
        assert!(
            rel(sde.alpha(t), alpha) <= 1e-13,
            "α({t}) = {}",
            sde.alpha(t)
        );
        assert!(
            rel(sde.sigma(t), sigma) <= 1e-12,
            "σ({t}) = {}",
            sde.sigma(t)
        );
        assert!(
            rel(sde.drift_coef(t), f) <= 1e-11,
            "f({t}) = {}",
            sde.drift_coef(t)
        );
        assert_eq!(sde.diffusion_sq(t), -2.0 * sde.drift_coef(t), "g²({t})");
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
        let c = sde.coefs(t);
        assert_eq!(
            (c.alpha, c.sigma, c.f, c.g2, c.lambda),
            (
                sde.alpha(t),
                sde.sigma(t),
                sde.drift_coef(t),
                sde.diffusion_sq(t),
                l
            )
        );
    }
    Ok(())
}

/// MATH.md §1: "ᾱ differs by up to 6.5% at the last index" from the VP SDE (β_min = 0.1,
/// β_max = 20, ᾱ_VP(t) = e^{−B(t)}). mpmath: ᾱ_i/ᾱ_VP(t_i) − 1 is largest in size at i = 999,
/// −0.065471862086583525. 1e-10 covers the sums' rounding.
#[test]
fn alpha_bar_is_within_six_and_a_half_percent_of_the_vp_sde() -> Result<()> {
    let sde = ddpm()?;
    let gap = |t: f64| sde.alpha(t).powi(2) / (-(0.1 * t + 9.95 * t * t)).exp() - 1.0;
    let last = gap(1.0);
    assert!((last + 0.065_471_862_086_583_52).abs() <= 1e-10, "{last}");
    for k in sde.knots() {
        assert!(gap(k).abs() <= last.abs() + 1e-12, "t = {k}: {}", gap(k));
    }
    Ok(())
}

/// f = d log α/dt and g² = dσ²/dt − 2 f σ² between the knots, by the 5-point central differences
/// conformance uses (h = 1e-4 (T − t_ε)) at the middle of every segment and in the extrapolated
/// piece below t_0, with its bound 1e-6 · max(|ref|, 1). log α is linear there, so its
/// difference has rounding only (≈ 18 ε |log α|/(12 h) ≈ 7e-11); σ² = 1 − e^{2 log α} has
/// truncation h⁴/30 · (2|f|)⁵ ≈ 1e-11.
#[test]
fn marginal_identities_hold_between_knots() -> Result<()> {
    let d5 = |f: &dyn Fn(f64) -> f64, t: f64, h: f64| {
        (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
    };
    let sde = ddpm()?;
    let h = 1e-4 * (sde.t_max() - sde.t_eps());
    let mids = (0..999).map(|i| (i as f64 + 1.5) / 1000.0);
    for t in mids.chain([5e-4, 7e-4]) {
        let f = sde.drift_coef(t);
        let f_num = d5(&|s| sde.alpha(s).ln(), t, h);
        assert!((f - f_num).abs() <= 1e-6 * f.abs().max(1.0), "t = {t}: f");
        let g2 = sde.diffusion_sq(t);
        let g2_num = d5(&|s| sde.sigma(s).powi(2), t, h) - 2.0 * f * sde.sigma(t).powi(2);
        assert!(
            (g2 - g2_num).abs() <= 1e-6 * g2.abs().max(1.0),
            "t = {t}: g² = {g2}, numerically {g2_num}"
        );
    }
    Ok(())
}

/// f is constant on each segment and jumps only at the knots: within a segment it is the same
/// f64 at both ends' neighbourhoods; the slopes are N·½ log(1 − β_{i+1}), which grow in size.
#[test]
fn drift_is_piecewise_constant() -> Result<()> {
    let sde = ddpm()?;
    for i in 0..999 {
        let (lo, hi) = ((i as f64 + 1.01) / 1000.0, (i as f64 + 1.99) / 1000.0);
        assert_eq!(sde.drift_coef(lo), sde.drift_coef(hi), "segment {i}");
        let beta = 1e-4 + (i + 1) as f64 * (0.02 - 1e-4) / 999.0;
        let want = 500.0 * (-beta).ln_1p();
        assert!(rel(sde.drift_coef(lo), want) <= 1e-10, "segment {i}");
    }
    Ok(())
}

/// α does not rise, σ does not fall and λ falls strictly, on conformance's 1001-point grid, on
/// a grid with 10 points per segment, and across the extrapolated piece down to t = 2e-4.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = ddpm()?;
    let coarse: Vec<f64> = (0..=1000)
        .map(|i| 1e-3 + 0.999 * i as f64 / 1000.0)
        .collect();
    let fine: Vec<f64> = (2..=10_000).map(|i| i as f64 / 10_000.0).collect();
    for ts in [coarse, fine] {
        for w in ts.windows(2) {
            let (early, late) = (w[0], w[1]);
            assert!(sde.alpha(late) <= sde.alpha(early), "α at {late}");
            assert!(sde.sigma(late) >= sde.sigma(early), "σ at {late}");
            assert!(sde.log_snr(late) < sde.log_snr(early), "λ at {late}");
        }
    }
    Ok(())
}

/// t(λ(t)) = t to 1e-12 on [t_ε, T] (much tighter than conformance's 1e-9 T: the inverse is
/// exact per segment), at the knots, and beyond them on both sides; λ(t(λ)) = λ.
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    let sde = ddpm()?;
    let ts = (0..=5000).map(|i| 1e-3 + 0.999 * i as f64 / 5000.0);
    for t in ts.chain(sde.knots()).chain([2e-4, 5e-4, 1.2, 2.0]) {
        let back = sde.t_of_log_snr(sde.log_snr(t));
        assert!(rel(back, t) <= 1e-12, "t = {t:e} came back as {back:e}");
    }
    for i in 0..=40 {
        let lambda = -8.0 + 14.0 * i as f64 / 40.0;
        let back = sde.log_snr(sde.t_of_log_snr(lambda));
        assert!(
            (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
            "λ = {lambda} came back as {back}"
        );
    }
    Ok(())
}

/// The prior is N(0, I): log p(0) for d = 6 is −3 ln 2π = −5.5136311992280364507 (mpmath), and
/// the KL per dimension to the marginal at T of data N(1, 1) is ½ (v + α² − 1 − ln v) with
/// v = α² + σ² = 1, i.e. ᾱ_999/2 = 2.0179148826878e-5 (the mpmath ᾱ above), below 1e-3.
#[test]
fn prior_is_standard_normal_and_close_to_the_marginal_at_t_max() -> Result<()> {
    let sde = ddpm()?;
    assert_eq!(sde.prior_std(), 1.0);
    let zero = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu)?;
    let lp0 = sde.prior_log_prob(&zero)?.to_vec1::<f64>()?;
    assert!(rel(lp0[0], -5.513_631_199_228_036) <= 1e-14);
    let (a, s) = (sde.alpha(1.0), sde.sigma(1.0));
    let v = a * a + s * s;
    assert!((v - 1.0).abs() <= 4.0 * EPS);
    let kl = 0.5 * (v + a * a - 1.0 - v.ln());
    assert!(rel(kl, 2.017_914_882_687_8e-5) <= 1e-6, "KL = {kl:e}");
    Ok(())
}
