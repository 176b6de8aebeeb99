//! The likelihood weighting against MATH.md §4: w_ε = g²/σ² (which is −2 dλ/dt by §1), the
//! weight g² on the score loss, no t-density of its own.

use sdeflow_kernel::{ForwardSde, Registry, Result, TimeCoefs, Weighting};
use sdeflow_weighting_likelihood::{Likelihood, Params};

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

/// w_ε = g²/σ², with each SDE's g² and σ written out in closed form: VP β/(−expm1(−B)), the
/// VE-like point 2/9, EDM 2/t, linear flow 2/(t (1 − t)). A few roundings: 8ε relative.
#[test]
fn eps_weight_is_g2_over_sigma_squared() -> Result<()> {
    let check = |c: &TimeCoefs, want: f64| {
        let w = Likelihood.eps_weight(c);
        assert!(
            (w - want).abs() <= 8.0 * f64::EPSILON * want,
            "t = {}: {w} vs {want}",
            c.t
        );
    };
    for t in [1e-5, 1e-3, 0.5, 1.0] {
        let b = 0.1 * t + 9.95 * t * t;
        check(&vp(t), (0.1 + 19.9 * t) / -(-b).exp_m1());
    }
    for t in [0.002, 1.0, 80.0] {
        check(&edm(t), 2.0 / t);
    }
    for t in [1e-3, 0.5, 0.999] {
        check(&linear_flow(t), 2.0 / (t * (1.0 - t)));
    }
    check(&all_coefs()[4], 2.0 / 9.0);
    Ok(())
}

/// g² = −2σ² dλ/dt (MATH.md §1), so w_ε = −2 dλ/dt: checked against a central difference of
/// VP's closed-form λ(t) = −½ ln(expm1(B)) (step 1e-6 on t ≥ 1e-3: truncation ~h²λ‴ and
/// rounding ~ε|λ|/h, both below 1e-6 relative).
#[test]
fn eps_weight_is_minus_twice_the_log_snr_slope() -> Result<()> {
    let h = 1e-6;
    for t in [1e-3, 0.01, 0.1, 0.5, 0.9] {
        let slope = (vp(t + h).lambda - vp(t - h).lambda) / (2.0 * h);
        let w = Likelihood.eps_weight(&vp(t));
        assert!(
            (w + 2.0 * slope).abs() <= 1e-6 * w,
            "t = {t}: {w} vs {}",
            -2.0 * slope
        );
    }
    Ok(())
}

/// With the score target (k = 1/σ) the weight on ‖ŝ − s‖² is g² (Song et al. 2021's
/// λ(t) = g²); with ε (k = 1) it is w_ε itself.
#[test]
fn score_space_weight_is_g2() -> Result<()> {
    for c in all_coefs() {
        let w = Likelihood.target_weight(&c, 1.0 / c.sigma);
        assert!(
            (w - c.g2).abs() <= 8.0 * f64::EPSILON * c.g2,
            "t = {}: {w}",
            c.t
        );
        assert_eq!(Likelihood.target_weight(&c, 1.0), Likelihood.eps_weight(&c));
    }
    Ok(())
}

/// Finite and positive on 1,001 points of [t_ε, T] of VP, and no density of its own.
#[test]
fn finite_positive_and_uniform_in_t() -> Result<()> {
    for i in 0..=1000 {
        let c = Vp.coefs(1e-3 + (1.0 - 1e-3) * i as f64 / 1000.0);
        let w = Likelihood.eps_weight(&c);
        assert!(w.is_finite() && w > 0.0, "t = {}: {w}", c.t);
        assert_eq!(Likelihood.t_density(&Vp, &c), None);
    }
    assert_eq!(Likelihood.sample_t(&Vp, 0.5), None);
    Ok(())
}

/// The `likelihood` registration builds from `()`, takes no fields, and weighs like
/// `Likelihood`.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let w = reg.weighting("likelihood", "()")?;
    for c in all_coefs() {
        assert_eq!(w.eps_weight(&c), Likelihood.eps_weight(&c));
    }
    assert!(reg.weighting("likelihood", "(gamma: 5.0)").is_err());
    Ok(())
}
