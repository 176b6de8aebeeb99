//! EDM's weighting against MATH.md §4: w_ε = (σ̃² + σ_d²)/σ_d² (x₀-space λ(σ̃) =
//! (σ̃² + σ_d²)/(σ̃ σ_d)²), and its own t-density — ln σ̃ ~ N(p_mean, p_std²) truncated to the
//! SDE's [σ̃(t_ε), σ̃(T)] and mapped to t — normalized, sampled by its inverse CDF, and the
//! truncated log-normal of t on EDM's own SDE. Integrals are composite Simpson in ln t.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result, TimeCoefs, Weighting};
use sdeflow_weighting_edm::{Edm, Params};

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

/// An EDM-like SDE (MATH.md §1: α = 1, σ = t, f = 0, g² = 2t) on [0.002, 80], with the
/// closed-form inverse t(λ) = e^{−λ}; VP above uses the kernel's default bisection.
#[derive(Debug)]
struct EdmSde;

impl ForwardSde for EdmSde {
    fn t_max(&self) -> f64 {
        80.0
    }
    fn t_eps(&self) -> f64 {
        0.002
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * t
    }
    fn prior_std(&self) -> f64 {
        80.0
    }
    fn log_snr(&self, t: f64) -> f64 {
        -t.ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

/// ∫_a^b f(t) dt by composite Simpson in s = ln t with `n` (even) intervals.
fn integrate_log_t(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let (la, lb) = (a.ln(), b.ln());
    let h = (lb - la) / n as f64;
    let g = |i: usize| {
        let t = (la + h * i as f64).exp();
        f(t) * t
    };
    let inner: f64 = (1..n)
        .map(|i| if i % 2 == 1 { 4.0 * g(i) } else { 2.0 * g(i) })
        .sum();
    (g(0) + inner + g(n)) * h / 3.0
}

/// The density p(t) of `w` on `sde`.
fn density(w: &Edm, sde: &dyn ForwardSde, t: f64) -> f64 {
    w.t_density(sde, &sde.coefs(t))
        .expect("EDM has its own t-density")
}

/// The defaults, and parameter sets whose truncated range lies far in the upper tail
/// (p_mean = −12: z_min ≈ 5.8 on EDM, 7.4 on VP, where 1 − Φ(z_min) ~ 1e-9 … 1e-13 would lose
/// most digits) or the lower tail (p_mean = 12).
fn param_sets() -> Vec<Params> {
    let d = Params::default();
    vec![
        d,
        Params {
            p_mean: -12.0,
            p_std: 1.0,
            ..d
        },
        Params {
            p_mean: 12.0,
            p_std: 1.0,
            ..d
        },
        Params {
            p_mean: 0.5,
            p_std: 3.0,
            sigma_data: 1.0,
        },
    ]
}

fn sdes() -> [&'static dyn ForwardSde; 2] {
    [&Vp, &EdmSde]
}

/// w_ε = (σ̃² + σ_d²)/σ_d² with σ̃ = σ/α written out, and in x₀ space (k = σ̃) EDM's
/// λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)² (Karras et al. Table 1). A few roundings: 1e-14 relative.
#[test]
fn weight_is_edm_lambda_times_sigma_tilde_squared() -> Result<()> {
    for sigma_data in [0.5, 1.0, 2.0] {
        let w = Edm::new(Params {
            sigma_data,
            ..Params::default()
        })?;
        for c in all_coefs() {
            let st = c.sigma / c.alpha;
            let want = (st * st + sigma_data * sigma_data) / (sigma_data * sigma_data);
            let got = w.eps_weight(&c);
            assert!(
                (got - want).abs() <= 1e-14 * want,
                "t = {}: {got} vs {want}",
                c.t
            );
            assert!(got >= 1.0);
            let lambda = (st * st + sigma_data * sigma_data) / (st * sigma_data).powi(2);
            let got = w.target_weight(&c, st);
            assert!((got - lambda).abs() <= 1e-14 * lambda, "t = {}: λ(σ̃)", c.t);
        }
    }
    Ok(())
}

/// ∫ p(t) dt = 1 on [t_ε, T] to 1e-6, on VP and EDM, for every parameter set (Simpson with
/// 20,000 intervals in ln t: its error is far below 1e-9 for these smooth integrands).
#[test]
fn density_integrates_to_one() -> Result<()> {
    for p in param_sets() {
        let w = Edm::new(p)?;
        for sde in sdes() {
            let (a, b) = (sde.t_eps(), sde.t_max());
            let mass = integrate_log_t(|t| density(&w, sde, t), a, b, 20_000);
            assert!((mass - 1.0).abs() <= 1e-6, "{p:?} on {sde:?}: {mass}");
        }
    }
    Ok(())
}

/// The CDF at sample_t(u), ∫_{t_ε}^{t(u)} p(t) dt by the same quadrature, is u to 1e-6.
#[test]
fn sample_t_inverts_the_cdf() -> Result<()> {
    let us = [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999];
    for p in param_sets() {
        let w = Edm::new(p)?;
        for sde in sdes() {
            for u in us {
                let t = w.sample_t(sde, u).expect("EDM samples its own t");
                let cdf = integrate_log_t(|t| density(&w, sde, t), sde.t_eps(), t, 20_000);
                assert!(
                    (cdf - u).abs() <= 1e-6,
                    "{p:?} on {sde:?}: u = {u}, CDF = {cdf}"
                );
            }
        }
    }
    Ok(())
}

/// On EDM's own SDE σ̃ = t, so p(t) is the log-normal density φ((ln t − p_mean)/p_std)/(p_std t)
/// over its mass Z on [0.002, 80]; with the defaults Z = Φ(4.65) − Φ(−4.18) ≈ 0.99998, found
/// here by quadrature of the unnormalized density (φ written out).
#[test]
fn on_edm_the_density_is_the_truncated_log_normal() -> Result<()> {
    let p = Params::default();
    let w = Edm::new(p)?;
    let log_normal = |t: f64| {
        let z = (t.ln() - p.p_mean) / p.p_std;
        (-0.5 * z * z).exp() / ((2.0 * std::f64::consts::PI).sqrt() * p.p_std * t)
    };
    let z_mass = integrate_log_t(log_normal, 0.002, 80.0, 20_000);
    assert!(z_mass > 0.9999 && z_mass < 1.0, "{z_mass}");
    for t in [0.002, 0.01, 0.1, 0.3, 1.0, 5.0, 80.0] {
        let want = log_normal(t) / z_mass;
        let got = density(&w, &EdmSde, t);
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "t = {t}: {got} vs {want}"
        );
    }
    Ok(())
}

/// Zero density outside [t_ε, T]; sample_t(0) = t_ε, sample_t(1) = T, increasing in u.
#[test]
fn support_and_endpoints() -> Result<()> {
    let w = Edm::new(Params::default())?;
    for sde in sdes() {
        let (a, b) = (sde.t_eps(), sde.t_max());
        assert_eq!(w.t_density(sde, &sde.coefs(0.5 * a)), Some(0.0));
        assert_eq!(w.t_density(sde, &sde.coefs(1.01 * b)), Some(0.0));
        let t0 = w.sample_t(sde, 0.0).expect("EDM samples");
        let t1 = w.sample_t(sde, 1.0).expect("EDM samples");
        assert!(
            (t0 - a).abs() <= 1e-9 * a && (t1 - b).abs() <= 1e-9 * b,
            "{t0}, {t1}"
        );
        let ts: Vec<f64> = (1..100)
            .filter_map(|i| w.sample_t(sde, i as f64 / 100.0))
            .collect();
        assert!(
            ts.windows(2).all(|p| p[0] < p[1]),
            "{sde:?}: not increasing"
        );
    }
    Ok(())
}

/// σ_d and p_std must be finite and > 0, p_mean finite; each bad value is an `InvalidParam`
/// naming its field.
#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let d = Params::default();
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let cases = [
        (
            Params {
                sigma_data: 0.0,
                ..d
            },
            "sigma_data",
        ),
        (
            Params {
                sigma_data: -0.5,
                ..d
            },
            "sigma_data",
        ),
        (
            Params {
                sigma_data: nan,
                ..d
            },
            "sigma_data",
        ),
        (
            Params {
                sigma_data: inf,
                ..d
            },
            "sigma_data",
        ),
        (Params { p_mean: nan, ..d }, "p_mean"),
        (Params { p_mean: -inf, ..d }, "p_mean"),
        (Params { p_std: 0.0, ..d }, "p_std"),
        (Params { p_std: -1.2, ..d }, "p_std"),
        (Params { p_std: nan, ..d }, "p_std"),
        (Params { p_std: inf, ..d }, "p_std"),
    ];
    for (p, want) in cases {
        match Edm::new(p) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("edm", want), "{p:?}");
            }
            other => panic!("{p:?}: expected InvalidParam, got {other:?}"),
        }
    }
    Ok(())
}

/// The `edm` registration: MATH.md §4's defaults σ_d = 0.5, ln σ̃ ~ N(−1.2, 1.2²), fields read
/// from RON, unknown fields and bad values refused.
#[test]
fn registration_reads_the_params() -> Result<()> {
    let d = Params::default();
    assert_eq!((d.sigma_data, d.p_mean, d.p_std), (0.5, -1.2, 1.2));
    assert_eq!(Edm::new(d)?.params(), d);
    let reg = Registry::global()?;
    let c = edm(1.0);
    assert_eq!(reg.weighting("edm", "()")?.eps_weight(&c), 1.0 + 4.0);
    let w = reg.weighting("edm", "(sigma_data: 1.0, p_mean: 0.0, p_std: 1.0)")?;
    assert_eq!(w.eps_weight(&c), 2.0);
    assert!(w.t_density(&EdmSde, &c).is_some_and(|p| p > 0.0));
    assert!(reg.weighting("edm", "(sigma: 1.0)").is_err());
    assert!(reg.weighting("edm", "(p_std: 0.0)").is_err());
    Ok(())
}
