//! The EDM SDE's coefficients against MATH.md §1's closed forms (α = 1, σ = t, f = 0, g² = 2t,
//! λ = −ln t), the marginal identities by five-point differences, monotonicity, the inverse of
//! λ, the Karras grid (EDM's own σ schedule), and the N(0, T² I) prior.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{ForwardSde, GridKind, Result};
use sdeflow_sde_edm::{Edm, Params};

fn edm() -> Result<Edm> {
    Edm::new(Params::default())
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

/// Five-point central difference of `f` at `t` with step `h` (exact on polynomials of degree 4).
fn derivative(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    (-f(t + 2.0 * h) + 8.0 * f(t + h) - 8.0 * f(t - h) + f(t - 2.0 * h)) / (12.0 * h)
}

/// α = 1, σ = t, f = 0, g² = 2t hold exactly (each is at most one exact doubling); λ = −ln t
/// against mpmath (mp.dps = 30, `-log(mpf(t))`), to a couple of ulp of |λ|.
#[test]
fn coefficients_match_closed_forms() -> Result<()> {
    let sde = edm()?;
    // (t, −ln t) from the mpmath snippet above.
    let table = [
        (1e-6, 13.815_510_557_964_274),
        (0.002, 6.214_608_098_422_191),
        (0.5, std::f64::consts::LN_2), // −ln ½ = ln 2, mpmath agrees
        (1.0, 0.0),
        (80.0, -4.382_026_634_673_881),
        (1000.0, -6.907_755_278_982_137),
    ];
    for (t, lambda) in table {
        assert_eq!(
            (
                sde.alpha(t),
                sde.sigma(t),
                sde.drift_coef(t),
                sde.diffusion_sq(t)
            ),
            (1.0, t, 0.0, 2.0 * t),
            "t = {t}"
        );
        let l = sde.log_snr(t);
        assert!(
            (l - lambda).abs() <= 4.0 * f64::EPSILON * (1.0 + lambda.abs()),
            "λ({t}) = {l}"
        );
    }
    Ok(())
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², with conformance's stencil: five-point
/// differences, h = 1e-4 (T − t_ε), 201 points on [t_ε + 3h, T − 3h], tolerance
/// 1e-6 · max(|ref|, 1). log α = 0 and σ² = t² are polynomials the stencil differentiates
/// exactly, so only rounding is left: about 3ε t²/h ≤ 3e-10.
#[test]
fn marginal_identities_hold_by_five_point_differences() -> Result<()> {
    for p in [
        Params::default(),
        Params {
            t_max: 1.0,
            t_eps: 1e-5,
            rho: 3.0,
        },
    ] {
        let sde = Edm::new(p)?;
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

/// α non-increasing (constant), σ non-decreasing and λ strictly decreasing on [t_ε, T]
/// (conformance's 1001 points) and on a log-spaced grid, where EDM's noise levels live.
#[test]
fn alpha_sigma_log_snr_are_monotone() -> Result<()> {
    let sde = edm()?;
    let (t_eps, t_max) = (sde.t_eps(), sde.t_max());
    for ts in [uniform(t_eps, t_max, 1000), log_spaced(t_eps, t_max, 1000)] {
        for w in ts.windows(2) {
            let (earlier, later) = (w[0], w[1]);
            assert!(sde.alpha(later) <= sde.alpha(earlier), "α at {later}");
            assert!(sde.sigma(later) >= sde.sigma(earlier), "σ at {later}");
            assert!(sde.log_snr(later) < sde.log_snr(earlier), "λ at {later}");
        }
    }
    Ok(())
}

/// t(λ(t)) = e^{ln t}: conformance asks 1e-9 · T; exp of a λ carrying ε |λ| of rounding is
/// relatively off by about (1 + |λ|) ε, so 1e-14 relative for |λ| ≤ 14 (t ∈ [1e-6, 1e3]).
#[test]
fn t_of_log_snr_inverts_log_snr() -> Result<()> {
    let sde = edm()?;
    let t_max = sde.t_max();
    for t in uniform(sde.t_eps(), t_max, 1000) {
        assert!(
            (sde.t_of_log_snr(sde.log_snr(t)) - t).abs() <= 1e-9 * t_max,
            "t = {t}"
        );
    }
    for t in log_spaced(1e-6, 1e3, 200) {
        let back = sde.t_of_log_snr(sde.log_snr(t));
        assert!(rel(back, t) <= 1e-14, "t = {t:e} came back as {back:e}");
    }
    Ok(())
}

/// MATH.md §5: on EDM, σ̃ = t, so the kernel's Karras grid is EDM's eq. (5) itself. The 18-step
/// schedule (σ_max = 80, σ_min = 0.002, ρ = 7) from mpmath (mp.dps = 50):
/// `(80**(1/7) + i/18*(0.002**(1/7) - 80**(1/7)))**7`. The grid goes through e^{±ln}, a 1/ρ-th
/// root and a ρ-th power: about 2ρ(1 + |λ|) ε ≤ 2e-13 relative.
#[test]
fn default_grid_is_karras_and_reproduces_edm_sigmas() -> Result<()> {
    let sde = edm()?;
    assert_eq!(sde.default_grid(), GridKind::Karras { rho: 7.0 });
    let sde3 = Edm::new(Params {
        rho: 3.0,
        ..Params::default()
    })?;
    assert_eq!(sde3.default_grid(), GridKind::Karras { rho: 3.0 });

    let want = [
        80.0,
        58.671_476_727_062_556,
        42.415_189_318_512_68,
        30.183_258_054_886_963,
        21.108_676_736_193_75,
        14.480_808_227_292_392,
        9.723_201_355_260_127,
        6.373_613_547_951_3,
        4.066_123_602_953_758,
        2.515_218_976_147_158_6,
        1.501_741_979_068_007_8,
        0.860_579_274_286_184_5,
        0.469_979_057_997_746_8,
        0.242_380_319_038_795_4,
        0.116_638_563_525_178_46,
        0.051_532_394_322_817_78,
        0.020_435_334_553_438_714,
        0.007_037_284_340_484_991,
        0.002,
    ];
    let ts = sde.default_grid().times(&sde, 18)?;
    assert_eq!(ts.len(), want.len());
    for (i, (got, want)) in ts.iter().zip(want).enumerate() {
        assert!(
            rel(*got, want) <= 2e-13,
            "t_{i} = {got}, EDM σ_{i} = {want}"
        );
    }
    Ok(())
}

/// The prior N(0, T² I) with T = 80. Against the marginal of data N(1, 1) at T, per dimension:
/// KL(N(1, 1 + T²) ‖ N(0, T²)) = ½ ((1 + T² + 1)/T² − 1 − ln((1 + T²)/T²)) =
/// 7.813110287991662e-5 (mpmath); the two O(1/T²) terms cancel to half, so 1e-10 relative.
/// log p(0) for d = 6 is −3 ln(2π · 6400) = −31.805791007271326 (mpmath).
#[test]
fn prior_is_scaled_normal_close_to_the_marginal() -> Result<()> {
    let sde = edm()?;
    let t_max = sde.t_max();
    assert_eq!(sde.prior_std(), t_max);
    let (a, s, p) = (sde.alpha(t_max), sde.sigma(t_max), sde.prior_std());
    let v = a * a + s * s;
    let kl = 0.5 * ((v + a * a) / (p * p) - 1.0 - (v / (p * p)).ln());
    assert!(rel(kl, 7.813_110_287_991_662e-5) <= 1e-10, "KL = {kl}");
    assert!(kl < 1e-3);

    let dev = Device::Cpu;
    let zero = Tensor::zeros((1, 2, 3), DType::F64, &dev)?;
    let lp0 = sde.prior_log_prob(&zero)?.to_vec1::<f64>()?;
    assert!(rel(lp0[0], -31.805_791_007_271_326) <= 1e-14, "{}", lp0[0]);
    let z = Tensor::new(&[[1.0f64, -0.5], [0.25, 2.0]], &dev)?;
    let x = sde.prior_sample(&z)?.to_vec2::<f64>()?;
    assert_eq!(x, vec![vec![80.0, -40.0], vec![20.0, 160.0]]);
    Ok(())
}

/// Every grid conformance builds (uniform, quadratic, log_snr, karras(7)) is strictly
/// decreasing from exactly T to exactly t_ε for N = 1..=2000: the inverse of λ never repeats
/// a time.
#[test]
fn grids_are_strictly_decreasing_up_to_2000_steps() -> Result<()> {
    let sde = edm()?;
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
