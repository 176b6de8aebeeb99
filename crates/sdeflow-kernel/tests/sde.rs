//! `ForwardSde`'s provided methods (coefs, log_snr, the bisection t_of_log_snr, the prior)
//! and `TimeCoefs`' derived quantities, on test SDEs whose closed forms are known.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{EdmSde, ExpSde, flat, normals};
use sdeflow_kernel::{ForwardSde, Result, TimeCoefs};

/// Times spread over [t_ε, T] on a log scale.
fn times(sde: &dyn ForwardSde, n: usize) -> Vec<f64> {
    let (a, b) = (sde.t_eps().ln(), sde.t_max().ln());
    (0..=n)
        .map(|i| (a + (b - a) * i as f64 / n as f64).exp())
        .collect()
}

/// The fixtures themselves obey MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2fσ², by
/// central differences in f64 (truncation O(h²), rounding O(ε/h): 1e-6 relative is ample).
#[test]
fn test_sdes_satisfy_the_marginal_identities() -> Result<()> {
    let sdes: [&dyn ForwardSde; 2] = [&ExpSde::new(), &EdmSde];
    for sde in sdes {
        for t in times(sde, 40) {
            let h = 1e-5 * t;
            let dlog_alpha = (sde.alpha(t + h).ln() - sde.alpha(t - h).ln()) / (2.0 * h);
            let dsigma2 = (sde.sigma(t + h).powi(2) - sde.sigma(t - h).powi(2)) / (2.0 * h);
            let f = sde.drift_coef(t);
            let g2 = sde.diffusion_sq(t);
            assert!(
                (f - dlog_alpha).abs() <= 1e-6 * (1.0 + f.abs()),
                "t = {t}: f"
            );
            let want = dsigma2 - 2.0 * f * sde.sigma(t).powi(2);
            assert!((g2 - want).abs() <= 1e-6 * (1.0 + g2.abs()), "t = {t}: g²");
        }
    }
    Ok(())
}

#[test]
fn coefs_gathers_every_coefficient_at_t() -> Result<()> {
    let sde = ExpSde::new();
    for t in times(&sde, 10) {
        let c = sde.coefs(t);
        assert_eq!(
            c,
            TimeCoefs {
                t,
                alpha: sde.alpha(t),
                sigma: sde.sigma(t),
                f: sde.drift_coef(t),
                g2: sde.diffusion_sq(t),
                lambda: sde.log_snr(t),
            }
        );
    }
    Ok(())
}

/// The default λ = log(α/σ) against the closed forms −½ log(e^{2t} − 1) (VP test SDE) and
/// −log t (EDM).
#[test]
fn default_log_snr_is_log_alpha_over_sigma() -> Result<()> {
    let vp = ExpSde::new();
    for t in times(&vp, 30) {
        let want = ExpSde::log_snr_exact(t);
        assert!(
            (vp.log_snr(t) - want).abs() <= 1e-14 * (1.0 + want.abs()),
            "t = {t}"
        );
    }
    for t in times(&EdmSde, 30) {
        assert!((EdmSde.log_snr(t) + t.ln()).abs() <= 1e-14 * (1.0 + t.ln().abs()));
    }
    Ok(())
}

/// The default bisection inverts λ on [t_ε, T]: t(λ(t)) = t to a few ulp, it agrees with the
/// closed-form inverses, and it clamps λ outside [λ(T), λ(t_ε)] to the ends.
#[test]
fn default_t_of_log_snr_inverts_log_snr() -> Result<()> {
    let vp = ExpSde::new();
    for t in times(&vp, 50) {
        let back = vp.t_of_log_snr(vp.log_snr(t));
        // λ carries a few ulp of rounding and |dt/dλ| < 1 here (see grid.rs).
        assert!((back - t).abs() <= 1e-14, "VP t = {t}: {back}");
        let lambda = ExpSde::log_snr_exact(t);
        let exact = ExpSde::t_of_log_snr_exact(lambda);
        assert!((vp.t_of_log_snr(lambda) - exact).abs() <= 1e-14);
    }
    for t in times(&EdmSde, 50) {
        let back = EdmSde.t_of_log_snr(-t.ln());
        // t = e^{−λ}: dt/dλ = −t, so the inverse is good to a few ulp of t.
        assert!((back - t).abs() <= 1e-14 * t, "EDM t = {t}: {back}");
    }
    assert_eq!(vp.t_of_log_snr(vp.log_snr(vp.t_eps) + 1.0), vp.t_eps);
    assert_eq!(vp.t_of_log_snr(f64::INFINITY), vp.t_eps);
    assert_eq!(vp.t_of_log_snr(vp.log_snr(vp.t_max) - 1.0), vp.t_max);
    assert_eq!(vp.t_of_log_snr(f64::NEG_INFINITY), vp.t_max);
    assert_eq!(EdmSde.t_of_log_snr(-(80f64.ln()) - 2.0), 80.0);
    Ok(())
}

/// log N(x; 0, s² I) = −‖x‖²/(2s²) − (d/2) log(2π s²), per row of any shape and dtype.
#[test]
fn prior_log_prob_is_the_isotropic_gaussian_density() -> Result<()> {
    let dev = Device::Cpu;
    // At x = 0 in two dimensions with s = 1: −log(2π) = −1.8378770664093453 (closed form).
    let zero = Tensor::zeros((1, 2), DType::F32, &dev)?;
    let lp = ExpSde::new().prior_log_prob(&zero)?;
    assert_eq!(lp.dtype(), DType::F64);
    assert!((flat(&lp)?[0] + 1.837_877_066_409_345_3).abs() <= 1e-15);

    let sdes: [&dyn ForwardSde; 2] = [&ExpSde::new(), &EdmSde];
    for sde in sdes {
        let s = sde.prior_std();
        let z = normals(4, 5 * 6, 1)?.reshape((5, 2, 3))?;
        let x = sde.prior_sample(&z)?;
        assert_eq!(x.dims(), &[5, 2, 3]);
        let xs = flat(&x)?;
        for (a, b) in xs.iter().zip(flat(&z)?) {
            assert!((a - s * b).abs() <= 1e-15 * s * (1.0 + b.abs()));
        }
        for dtype in [DType::F64, DType::F32] {
            let x_in = x.to_dtype(dtype)?;
            let got = flat(&sde.prior_log_prob(&x_in)?)?;
            let x_used = flat(&x_in)?;
            assert_eq!(got.len(), 5);
            for (row, g) in got.iter().enumerate() {
                let sq: f64 = x_used[row * 6..(row + 1) * 6].iter().map(|v| v * v).sum();
                let want = -sq / (2.0 * s * s) - 3.0 * (2.0 * std::f64::consts::PI * s * s).ln();
                assert!((g - want).abs() <= 1e-12 * (1.0 + want.abs()), "row {row}");
            }
        }
    }
    Ok(())
}

/// σ̃ = σ/α, SNR = α²/σ² = e^{2λ}, α′ = f α and σ′ = (g² + 2fσ²)/(2σ) against central
/// differences of α and σ, and the PF-ODE coefficients (f, ½ g²).
#[test]
fn time_coefs_derived_quantities() -> Result<()> {
    let sdes: [&dyn ForwardSde; 2] = [&ExpSde::new(), &EdmSde];
    for sde in sdes {
        for t in times(sde, 20) {
            let c = sde.coefs(t);
            assert!((c.sigma_tilde() - c.sigma / c.alpha).abs() <= 1e-15 * c.sigma_tilde());
            let snr = (c.alpha / c.sigma).powi(2);
            assert!((c.snr() - snr).abs() <= 1e-13 * snr, "t = {t}: snr");
            let h = 1e-5 * t;
            let da = (sde.alpha(t + h) - sde.alpha(t - h)) / (2.0 * h);
            let ds = (sde.sigma(t + h) - sde.sigma(t - h)) / (2.0 * h);
            assert!(
                (c.d_alpha() - da).abs() <= 1e-7 * (1.0 + da.abs()),
                "t = {t}: α′"
            );
            assert!(
                (c.d_sigma() - ds).abs() <= 1e-7 * (1.0 + ds.abs()),
                "t = {t}: σ′"
            );
            assert_eq!(c.ode_coefs(), (c.f, 0.5 * c.g2));
        }
    }
    // A hand-made point: α = 0.8, σ = 0.6 gives σ̃ = 0.75 and SNR = 16/9.
    let c = TimeCoefs {
        t: 0.5,
        alpha: 0.8,
        sigma: 0.6,
        f: -1.0,
        g2: 2.0,
        lambda: (0.8f64 / 0.6).ln(),
    };
    assert!((c.snr() - 16.0 / 9.0).abs() <= 1e-15);
    assert!((c.d_alpha() + 0.8).abs() <= 1e-15);
    // σ′ = (2 − 2·0.36)/(1.2) = 1.28/1.2.
    assert!((c.d_sigma() - 1.28 / 1.2).abs() <= 1e-15);
    Ok(())
}
