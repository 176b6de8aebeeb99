//! DDPM's simple weighting against MATH.md §4: w_ε = 1 at every time, 1/k² in a target whose
//! loss scale is k, and no t-density of its own (uniform t on [t_ε, T]).

use sdeflow_kernel::{ForwardSde, Registry, Result, TimeCoefs, Weighting};
use sdeflow_weighting_simple::{Params, Simple};

/// Coefficients from every regime: the default VP SDE (B = 0.1 t + 9.95 t², α = e^{−B/2},
/// σ = √(−expm1(−B)), MATH.md §1) at t = 1e-5, 1e-3, 0.5 and 1; EDM (α = 1, σ = t) at 0.002
/// and 80; and the singular ends σ = 0 (t = 0) and α = 0.
fn all_coefs() -> Vec<TimeCoefs> {
    let vp = |t: f64| {
        let b = 0.1 * t + 9.95 * t * t;
        let (alpha, sigma) = ((-0.5 * b).exp(), (-(-b).exp_m1()).sqrt());
        TimeCoefs {
            t,
            alpha,
            sigma,
            f: -0.5 * (0.1 + 19.9 * t),
            g2: 0.1 + 19.9 * t,
            lambda: (alpha / sigma).ln(),
        }
    };
    let edm = |t: f64| TimeCoefs {
        t,
        alpha: 1.0,
        sigma: t,
        f: 0.0,
        g2: 2.0 * t,
        lambda: -t.ln(),
    };
    let mut cs: Vec<TimeCoefs> = [1e-5, 1e-3, 0.5, 1.0].into_iter().map(vp).collect();
    cs.extend([0.002, 80.0].map(edm));
    cs.push(vp(0.0));
    cs.push(TimeCoefs {
        t: 1.0,
        alpha: 0.0,
        sigma: 1.0,
        f: f64::NEG_INFINITY,
        g2: f64::INFINITY,
        lambda: f64::NEG_INFINITY,
    });
    cs
}

/// w_ε = 1 whatever the time, including the singular ends, where it must stay finite.
#[test]
fn eps_weight_is_one_everywhere() -> Result<()> {
    for c in all_coefs() {
        assert_eq!(Simple.eps_weight(&c), 1.0, "{c:?}");
    }
    Ok(())
}

/// In a target with ‖out − target‖ = k ‖ε̂ − ε‖ the weight is 1/k², so w·k² = 1 and the loss
/// equals the ε loss (MATH.md §4). k = 1 (ε), σ/α (x₀), 1/σ (score), (α² + σ²)/α (v) and
/// plain constants. 1/(k·k) and (1/k)² differ by at most three roundings: 4ε relative.
#[test]
fn target_weight_is_one_over_k_squared() -> Result<()> {
    for c in all_coefs()
        .into_iter()
        .filter(|c| c.alpha > 0.0 && c.sigma > 0.0)
    {
        let ks = [
            1.0,
            c.sigma / c.alpha,
            1.0 / c.sigma,
            (c.alpha * c.alpha + c.sigma * c.sigma) / c.alpha,
            2.0,
            1e-3,
            1e3,
        ];
        for k in ks {
            let w = Simple.target_weight(&c, k);
            let want = (1.0 / k).powi(2);
            assert!(
                (w - want).abs() <= 4.0 * f64::EPSILON * want,
                "t = {}, k = {k}: {w} vs {want}",
                c.t
            );
            assert!(
                (w * k * k - 1.0).abs() <= 4.0 * f64::EPSILON,
                "t = {}, k = {k}",
                c.t
            );
        }
    }
    Ok(())
}

/// The default VP SDE (MATH.md §1), for the calls that take an SDE.
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
        (-0.5 * (0.1 * t + 9.95 * t * t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(-(0.1 * t + 9.95 * t * t)).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * (0.1 + 19.9 * t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        0.1 + 19.9 * t
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// Times are uniform on [t_ε, T]: no density of its own.
#[test]
fn t_density_is_none() -> Result<()> {
    for c in all_coefs() {
        assert_eq!(Simple.t_density(&Vp, &c), None, "{c:?}");
        assert_eq!(Simple.sample_t(&Vp, 0.5), None);
    }
    Ok(())
}

/// The `simple` registration builds from `()`, takes no fields, and weighs like `Simple`.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let w = reg.weighting("simple", "()")?;
    for c in all_coefs() {
        assert_eq!(w.eps_weight(&c), 1.0);
        assert_eq!(w.t_density(&Vp, &c), None);
    }
    assert!(reg.weighting("simple", "(gamma: 5.0)").is_err());
    Ok(())
}
