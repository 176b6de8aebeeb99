//! The cosine VP SDE's coefficients against MATH.md §1's closed forms: α, σ, f, g², λ at chosen
//! times, α² + σ² = 1, the marginal identities by five-point differences, monotonicity, the
//! closed-form inverse of λ, the λ-uniform grid, and the prior's KL at T.

use sdeflow_kernel::{ForwardSde, GridKind, Result};
use sdeflow_sde_vp_cosine::{Params, VpCosine};

/// f64 machine epsilon, for tolerances counted in roundings.
const EPS: f64 = f64::EPSILON;

fn cosine() -> Result<VpCosine> {
    VpCosine::new(Params::default())
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// `n + 1` times log-spaced on [a, b].
fn log_spaced(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n)
        .map(|i| (a.ln() + (b.ln() - a.ln()) * i as f64 / n as f64).exp())
        .collect()
}

/// `n + 1` times uniform on [a, b].
fn uniform(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..=n).map(|i| a + (b - a) * i as f64 / n as f64).collect()
}

/// Five-point central difference of `f` at `t` with step `h` (truncation h⁴/30 · f⁽⁵⁾).
fn derivative(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
}

/// (t, α, σ, f, g², λ) from the textbook forms in mpmath (mp.dps = 50, s = mpf(0.008), the f64
/// the code holds, t the f64 literal): `a = pi/2*(t+s)/(1+s); b = pi/2*s/(1+s);
/// α = cos(a)/cos(b); σ = sqrt(1 − α²); f = −(pi/2)/(1+s)*tan(a); g² = −2f; λ = log(α/σ)`.
/// The code takes other routes (sin(k(1 − t)), the sin(a − b) sin(a + b) product); each is a
/// few roundings from exact, so 1e-14 relative (λ: 1e-14 (1 + |λ|) absolute) leaves room.
const TABLE: [(f64, f64, f64, f64, f64, f64); 7] = [
    (
        1e-9,
        0.999_999_999_980_571_9,
        6.233_480_420_495_039e-6,
        -0.019_428_140_291_109_396,
        0.038_856_280_582_218_792,
        11.985_575_726_159_955,
    ),
    (
        1e-6,
        0.999_999_980_570_648,
        0.000_197_126_111_255_171_1,
        -0.019_430_566_631_260_746,
        0.038_861_133_262_521_49,
        8.531_666_855_955_39,
    ),
    (
        1e-3,
        0.999_979_357_674_536_3,
        0.006_425_280_135_665_51,
        -0.021_856_955_888_826_92,
        0.043_713_911_777_653_84,
        5.047_494_405_731_033,
    ),
    (
        0.1,
        0.985_947_634_062_767_6,
        0.167_054_670_350_849,
        -0.264_770_863_542_954_4,
        0.529_541_727_085_908_9,
        1.775_282_117_508_365_4,
    ),
    (
        0.5,
        0.702_740_058_941_169,
        0.711_446_701_840_244_8,
        -1.577_878_930_487_609_7,
        3.155_757_860_975_219_3,
        -0.012_313_441_405_757_273,
    ),
    (
        0.9,
        0.155_215_089_923_904_77,
        0.987_880_699_204_066,
        -9.918_922_269_170_277,
        19.837_844_538_340_556,
        -1.850_750_108_749_734,
    ),
    (
        0.9946,
        0.008_415_534_959_361_199,
        0.999_964_588_758_695_9,
        -185.180_814_059_994_44,
        370.361_628_119_988_9,
        -4.777_640_469_375_091,
    ),
];

#[test]
fn coefficients_match_high_precision_values() -> Result<()> {
    let sde = cosine()?;
    for (t, alpha, sigma, f, g2, lambda) in TABLE {
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
        assert!(rel(sde.drift_coef(t), f) <= 1e-14, "f({t})");
        assert!(rel(sde.diffusion_sq(t), g2) <= 1e-14, "g²({t})");
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 1e-14 * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
    }
    // α(0) = cos b / cos b = 1 and σ(0) = 0 exactly, by hand.
    assert_eq!((sde.alpha(0.0), sde.sigma(0.0)), (1.0, 0.0));
    Ok(())
}

/// α² + σ² = (cos²a + sin(a − b) sin(a + b))/cos²b = 1: the code never forms 1 − α², so this
/// is a real check; each side is a handful of roundings, 8ε.
#[test]
fn alpha_squared_plus_sigma_squared_is_one() -> Result<()> {
    let sde = cosine()?;
    for t in log_spaced(1e-9, 0.9999, 80) {
        let (a, s) = (sde.alpha(t), sde.sigma(t));
        assert!((a * a + s * s - 1.0).abs() <= 8.0 * EPS, "t = {t}");
    }
    assert_eq!(sde.default_grid(), GridKind::Uniform);
    Ok(())
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², with conformance's stencil: five-point
/// differences, h = 1e-4 (T − t_ε), 201 points on [t_ε + 3h, T − 3h], tolerance
/// 1e-6 · max(|ref|, 1). The truncation h⁴/30 · |d⁵ log α/dt⁵| is worst at T − 3h, where
/// log α ≈ log(k (1 − t)) makes it 0.8 (h/(1 − t))⁴ · |f| ≈ 8e-8 |f| (1 − t ≥ 5.7e-3);
/// rounding adds about 3ε |log α|/h ≈ 3e-11.
#[test]
fn marginal_identities_hold_by_five_point_differences() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            s: 0.0,
            t_max: 0.99,
            t_eps: 1e-2,
        },
    ] {
        let sde = VpCosine::new(p)?;
        let h = 1e-4 * (p.t_max - p.t_eps);
        for t in uniform(p.t_eps + 3.0 * h, p.t_max - 3.0 * h, 200) {
            let f = sde.drift_coef(t);
            let f_num = derivative(|s| sde.alpha(s).ln(), t, h);
            assert!(
                (f_num - f).abs() <= 1e-6 * f.abs().max(1.0),
                "{p:?}, t = {t}: f"
            );
            let g2 = sde.diffusion_sq(t);
            let g2_num =
                derivative(|s| sde.sigma(s).powi(2), t, h) - 2.0 * f * sde.sigma(t).powi(2);
            assert!(
                (g2_num - g2).abs() <= 1e-6 * g2.abs().max(1.0),
                "{p:?}, t = {t}: g²"
            );
        }
    }
    Ok(())
}

/// α non-increasing, σ non-decreasing and λ strictly decreasing on [t_ε, T] (conformance's
/// 1001 points) and on a log-spaced grid down to 1e-9.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = cosine()?;
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

/// t(λ(t)) = t: conformance asks 1e-9 · T on [t_ε, T]; the atan2 form of the inverse is
/// relatively exact, and λ's own rounding (a few ε |λ|, |λ| ≤ 12) moves t by at most 2 t δλ,
/// so 1e-12 relative holds down to t = 1e-9. λ(t(λ)) = λ on [λ(T) − 1, λ(1e-9)]: there
/// 1 − t ≥ 2e-3, and t's rounding moves λ by ε/(1 − t) ≤ 1e-13.
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            s: 0.0,
            ..Params::default()
        },
    ] {
        let sde = VpCosine::new(p)?;
        for t in uniform(p.t_eps, p.t_max, 1000) {
            let back = sde.t_of_log_snr(sde.log_snr(t));
            assert!((back - t).abs() <= 1e-9 * p.t_max, "{p:?}: t = {t}");
        }
        for t in log_spaced(1e-9, p.t_max, 200) {
            let back = sde.t_of_log_snr(sde.log_snr(t));
            assert!(
                rel(back, t) <= 1e-12,
                "{p:?}: t = {t:e} came back as {back:e}"
            );
        }
        let (lo, hi) = (sde.log_snr(p.t_max) - 1.0, sde.log_snr(1e-9));
        for lambda in uniform(lo, hi, 100) {
            let back = sde.log_snr(sde.t_of_log_snr(lambda));
            assert!(
                (back - lambda).abs() <= 1e-12 * (1.0 + lambda.abs()),
                "{p:?}: λ = {lambda} came back as {back}"
            );
        }
    }
    Ok(())
}

/// The kernel's λ-uniform grid, which inverts λ at every point: its λ(t_i) are equally spaced.
#[test]
fn log_snr_grid_is_uniform_in_log_snr() -> Result<()> {
    let sde = cosine()?;
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

/// The prior N(0, I) against the marginal at T of data N(1, 1), per dimension:
/// KL(N(α, α² + σ²) ‖ N(0, 1)) = ½ ((α² + σ² + α²) − 1 − ln(α² + σ²)) = α(T)²/2, which
/// mpmath gives as 3.5410614326115248e-5 (α(T)² = 7.0821228652230495e-5, MATH.md's "≈ 7e-5").
/// ln(α² + σ²) is a rounding of 0, so 1e-10 relative.
#[test]
fn prior_is_close_to_the_marginal_at_t_max() -> Result<()> {
    let sde = cosine()?;
    assert_eq!(sde.prior_std(), 1.0);
    let (a, s) = (sde.alpha(sde.t_max()), sde.sigma(sde.t_max()));
    let v = a * a + s * s;
    let kl = 0.5 * ((v + a * a) - 1.0 - v.ln());
    assert!(
        rel(a * a, 7.082_122_865_223_05e-5) <= 1e-13,
        "α(T)² = {}",
        a * a
    );
    assert!(rel(kl, 3.541_061_432_611_525e-5) <= 1e-10, "KL = {kl}");
    assert!(kl < 1e-3);
    Ok(())
}

/// Every grid conformance builds (uniform, quadratic, log_snr, karras(7)) is strictly
/// decreasing from exactly T to exactly t_ε for N = 1..=2000: the inverse of λ never repeats
/// a time.
#[test]
fn grids_are_strictly_decreasing_up_to_2000_steps() -> Result<()> {
    let sde = cosine()?;
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
