//! The SNR weighting against MATH.md §4: w_ε = α²/σ² on the ε loss (SNR² in x₀ space, not the
//! plain x₀-MSE MATH.md names), and no t-density of its own.

use sdeflow_kernel::{ForwardSde, Registry, Result, TimeCoefs, Weighting};
use sdeflow_weighting_snr::{Params, Snr};

/// The default VP SDE (MATH.md §1): B = 0.1 t + 9.95 t², β = 0.1 + 19.9 t, α = e^{−B/2},
/// σ = √(−expm1(−B)), f = −β/2, g² = β, λ = −½ ln(expm1(B)).
fn vp(t: f64) -> TimeCoefs {
    let (b, beta) = (0.1 * t + 9.95 * t * t, 0.1 + 19.9 * t);
    TimeCoefs {
        t,
        alpha: (-0.5 * b).exp(),
        sigma: (-(-b).exp_m1()).sqrt(),
        f: -0.5 * beta,
        g2: beta,
        lambda: -0.5 * b.exp_m1().ln(),
    }
}

/// EDM (α = 1, σ = t, f = 0, g² = 2t).
fn edm(t: f64) -> TimeCoefs {
    TimeCoefs {
        t,
        alpha: 1.0,
        sigma: t,
        f: 0.0,
        g2: 2.0 * t,
        lambda: -t.ln(),
    }
}

/// Linear flow (α = 1 − t, σ = t, f = −1/(1 − t), g² = 2t/(1 − t)).
fn linear_flow(t: f64) -> TimeCoefs {
    TimeCoefs {
        t,
        alpha: 1.0 - t,
        sigma: t,
        f: -1.0 / (1.0 - t),
        g2: 2.0 * t / (1.0 - t),
        lambda: ((1.0 - t) / t).ln(),
    }
}

/// Interior coefficients: VP at 1e-5, 1e-3, 0.5, 1; a VE-like point α = 1, σ = 3, f = 0,
/// g² = 2; EDM at 0.002, 1, 80; linear flow at 1e-3, 0.5, 0.999.
fn all_coefs() -> Vec<TimeCoefs> {
    let mut cs: Vec<TimeCoefs> = [1e-5, 1e-3, 0.5, 1.0].into_iter().map(vp).collect();
    cs.push(TimeCoefs {
        t: 1.0,
        alpha: 1.0,
        sigma: 3.0,
        f: 0.0,
        g2: 2.0,
        lambda: -(3f64.ln()),
    });
    cs.extend([0.002, 1.0, 80.0].map(edm));
    cs.extend([1e-3, 0.5, 0.999].map(linear_flow));
    cs
}

/// The default VP SDE, for the calls that take an SDE.
#[derive(Debug)]
struct Vp;

impl ForwardSde for Vp {
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_eps(&self) -> f64 {
        1e-3
    }
    fn alpha(&self, t: f64) -> f64 {
        vp(t).alpha
    }
    fn sigma(&self, t: f64) -> f64 {
        vp(t).sigma
    }
    fn drift_coef(&self, t: f64) -> f64 {
        vp(t).f
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        vp(t).g2
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// w_ε = α²/σ², computed here from α and σ: VP e^{−B}/(−expm1(−B)) = 1/expm1(B), EDM 1/t²,
/// linear flow ((1 − t)/t)², the VE-like point 1/9. The plugin reads e^{2λ}, whose rounding
/// grows with |λ| ≤ 6 here: 1e-14 relative.
#[test]
fn eps_weight_is_alpha_squared_over_sigma_squared() -> Result<()> {
    let check = |c: &TimeCoefs, want: f64| {
        let w = Snr.eps_weight(c);
        assert!(
            (w - want).abs() <= 1e-14 * want,
            "t = {}: {w} vs {want}",
            c.t
        );
    };
    for t in [1e-5, 1e-3, 0.5, 1.0] {
        check(&vp(t), 1.0 / (0.1 * t + 9.95 * t * t).exp_m1());
    }
    for t in [0.002, 1.0, 80.0] {
        check(&edm(t), 1.0 / (t * t));
    }
    for t in [1e-3, 0.5, 0.999] {
        check(&linear_flow(t), ((1.0 - t) / t).powi(2));
    }
    check(&all_coefs()[4], 1.0 / 9.0);
    Ok(())
}

/// ‖x̂₀ − x₀‖² = (σ/α)² ‖ε̂ − ε‖² (MATH.md §4), so in x₀ space (k = σ/α) the weight is
/// w_ε/k² = SNR², not the 1 of a plain x₀-MSE; in score space (k = 1/σ) it is w_ε σ² = α².
/// An imperfect x̂₀ at a fixed x shows the first directly: the ε loss with w_ε equals the x₀
/// loss with SNR², and the plain x₀ loss is the ε loss with 1/SNR.
#[test]
fn x0_space_weight_is_snr_squared() -> Result<()> {
    for c in all_coefs() {
        let snr = (c.alpha / c.sigma).powi(2);
        let w = Snr.target_weight(&c, c.sigma / c.alpha);
        assert!(
            (w - snr * snr).abs() <= 1e-13 * snr * snr,
            "t = {}: {w}",
            c.t
        );
        let w = Snr.target_weight(&c, 1.0 / c.sigma);
        let want = c.alpha * c.alpha;
        assert!((w - want).abs() <= 1e-13 * want, "t = {}: {w}", c.t);
        // One coordinate: x = α x₀ + σ ε, ε̂ = ε + 0.3, x̂₀ = (x − σ ε̂)/α.
        let (x0, eps, eps_hat) = (0.7, -1.1, -0.8);
        let x = c.alpha * x0 + c.sigma * eps;
        let x0_hat = (x - c.sigma * eps_hat) / c.alpha;
        let (eps_sq, x0_sq) = ((eps_hat - eps).powi(2), (x0_hat - x0).powi(2));
        let eps_loss = Snr.eps_weight(&c) * eps_sq;
        assert!(
            (eps_loss - snr * snr * x0_sq).abs() <= 1e-10 * eps_loss,
            "t = {}",
            c.t
        );
        assert!((x0_sq - eps_sq / snr).abs() <= 1e-10 * x0_sq, "t = {}", c.t);
    }
    Ok(())
}

/// Finite and positive on 1,001 points of [t_ε, T] of VP, and no density of its own.
#[test]
fn finite_positive_and_uniform_in_t() -> Result<()> {
    for i in 0..=1000 {
        let c = Vp.coefs(1e-3 + (1.0 - 1e-3) * i as f64 / 1000.0);
        let w = Snr.eps_weight(&c);
        assert!(w.is_finite() && w > 0.0, "t = {}: {w}", c.t);
        assert_eq!(Snr.t_density(&Vp, &c), None);
    }
    assert_eq!(Snr.sample_t(&Vp, 0.5), None);
    Ok(())
}

/// The `snr` registration builds from `()`, takes no fields, and weighs like `Snr`.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let w = reg.weighting("snr", "()")?;
    for c in all_coefs() {
        assert_eq!(w.eps_weight(&c), Snr.eps_weight(&c));
    }
    assert!(reg.weighting("snr", "(gamma: 5.0)").is_err());
    Ok(())
}
