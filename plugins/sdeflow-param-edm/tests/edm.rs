//! EDM's preconditioning against Karras et al. 2022, Table 1, computed here in its own
//! variables (x̃ = x/α, σ̃ = σ/α) and mapped to sdeflow's x = α x̃: D(x̃; σ̃) = c_skip x̃ +
//! c_out F(c_in x̃; c_noise) must be the x̂₀ the kernel reads, for any (α, σ); the network's
//! input has unit variance when the data has variance σ_d²; bad σ_d is refused.

use candle_core::Tensor;
use sdeflow_kernel::{
    Conversions, Error, Parameterization, Registry, Result, Time, TimeCoefs, convert,
    testing::normals,
};
use sdeflow_param_edm::{Edm, Params};

fn coefs(alpha: f64, sigma: f64) -> TimeCoefs {
    TimeCoefs {
        t: 0.5,
        alpha,
        sigma,
        f: -1.0,
        g2: 2.0,
        lambda: (alpha / sigma).ln(),
    }
}

/// EDM's own SDE (α = 1) at σ = 0.002, 1 and 80, a VP point and a VE-like point.
fn all_coefs() -> Vec<TimeCoefs> {
    vec![
        coefs(1.0, 0.002),
        coefs(1.0, 1.0),
        coefs(1.0, 80.0),
        coefs(0.6, 0.8),
        coefs(0.9, 3.0),
    ]
}

fn rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    let n = |x: &Tensor| -> Result<f64> { Ok(x.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt()) };
    Ok(n(&(a - b)?)? / n(b)?)
}

/// x̂₀ = c_skip x̃ + c_out F with Table 1's c_skip = σ_d²/(σ̃² + σ_d²) and
/// c_out = σ̃ σ_d/√(σ̃² + σ_d²); the network sees c_in x̃ = x̃/√(σ̃² + σ_d²) and ¼ ln σ̃.
#[test]
fn coefficients_are_table_one_in_ve_variables() -> Result<()> {
    let sd = 0.5;
    let p = Edm::new(Params { sigma_data: sd })?;
    let (x, f) = (normals(1, 16, 3)?, normals(2, 16, 3)?);
    for c in all_coefs() {
        let (st, xt) = (c.sigma / c.alpha, x.affine(1.0 / c.alpha, 0.0)?);
        let r2 = st * st + sd * sd;
        let (c_skip, c_out, c_in) = (sd * sd / r2, st * sd / r2.sqrt(), 1.0 / r2.sqrt());
        let want = (xt.affine(c_skip, 0.0)? + f.affine(c_out, 0.0)?)?;
        let time = Time::Call(c);
        assert!(rel(&p.to_x0(&f, &x, &time)?, &want)? <= 1e-14, "σ̃ = {st}");
        let seen = p.input(&x, &time)?;
        assert!(rel(&seen, &xt.affine(c_in, 0.0)?)? <= 1e-14, "σ̃ = {st}");
        assert!((p.c_noise(&c) - 0.25 * st.ln()).abs() <= 1e-15 * (1.0 + st.ln().abs()));
        // ε̂ is read off x̂₀ exactly: (x − α x̂₀)/σ.
        let eps = convert::eps_from_x0(&x, &want, &time)?;
        assert!(rel(&p.to_eps(&f, &x, &time)?, &eps)? <= 1e-12, "σ̃ = {st}");
    }
    Ok(())
}

/// The target F* = (x₀ − c_skip x̃)/c_out is what the output converted from the true ε is,
/// and its loss scale turns EDM's weight (σ̃² + σ_d²)/σ_d² into 1 on ‖F − F*‖².
#[test]
fn target_and_loss_scale() -> Result<()> {
    let sd = 0.7;
    let p = Edm::new(Params { sigma_data: sd })?;
    let (x0, eps) = (normals(3, 32, 2)?, normals(4, 32, 2)?);
    for c in all_coefs() {
        let time = Time::Call(c);
        let x = convert::noisy(&x0, &eps, &time)?;
        let (st, xt) = (c.sigma / c.alpha, x.affine(1.0 / c.alpha, 0.0)?);
        let r2 = st * st + sd * sd;
        let (c_skip, c_out) = (sd * sd / r2, st * sd / r2.sqrt());
        let want = (&x0 - xt.affine(c_skip, 0.0)?)?.affine(1.0 / c_out, 0.0)?;
        assert!(
            rel(&p.target_of(&x0, &eps, &time)?, &want)? <= 1e-10,
            "σ̃ = {st}"
        );
        assert!(
            rel(&p.from_eps(&eps, &x, &time)?, &want)? <= 1e-10,
            "σ̃ = {st}"
        );
        let k = p.eps_loss_scale(&c);
        let w_eps = (st * st + sd * sd) / (sd * sd);
        assert!(
            (w_eps / (k * k) - 1.0).abs() <= 1e-12,
            "σ̃ = {st}: {}",
            w_eps / (k * k)
        );
    }
    Ok(())
}

/// With x₀ of variance σ_d² per coordinate, x_t = α x₀ + σ ε has variance α² σ_d² + σ², and
/// c_in x_t has variance 1 at every time: measured on 200,000 draws, within 1%.
#[test]
fn the_network_input_has_unit_variance() -> Result<()> {
    let sd = 0.5;
    let p = Edm::new(Params::default())?;
    let (x0, eps) = (
        normals(5, 100_000, 2)?.affine(sd, 0.0)?,
        normals(6, 100_000, 2)?,
    );
    for c in all_coefs() {
        let time = Time::Call(c);
        let seen = p.input(&convert::noisy(&x0, &eps, &time)?, &time)?;
        let var = seen.sqr()?.mean_all()?.to_scalar::<f64>()?;
        assert!((var - 1.0).abs() <= 0.01, "σ = {}: variance {var}", c.sigma);
    }
    Ok(())
}

#[test]
fn bad_sigma_data_is_refused() -> Result<()> {
    for sd in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        match Edm::new(Params { sigma_data: sd }) {
            Err(Error::InvalidParam { field, .. }) => assert_eq!(field, "sigma_data"),
            other => panic!("σ_d = {sd}: {other:?}"),
        }
    }
    let reg = Registry::global()?;
    assert!(reg.param("edm", "(sigma_data: 1.0)").is_ok());
    assert!(reg.param("edm", "(sigma_data: -1.0)").is_err());
    assert!(reg.param("edm", "(sigma: 1.0)").is_err());
    Ok(())
}
