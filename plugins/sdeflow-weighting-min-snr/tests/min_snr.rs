//! The min-SNR-γ weighting against MATH.md §4: w_ε = min(1, γ/SNR), x₀-space weight
//! min(SNR, γ), γ validated, no t-density of its own.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result, TimeCoefs, Weighting};
use sdeflow_weighting_min_snr::{MinSnr, Params};

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

/// w_ε = min(1, γ/SNR) with SNR = α²/σ² computed here from α and σ, for γ ∈ {0.5, 5, 100}
/// (the fixtures' SNR spans 4e-5 … 1e6, so both branches are taken for each γ). e^{2λ} and
/// α²/σ² differ by a few roundings of |2λ| ≤ 14: 1e-14 relative.
#[test]
fn eps_weight_is_min_of_one_and_gamma_over_snr() -> Result<()> {
    for gamma in [0.5, 5.0, 100.0] {
        let w = MinSnr::new(Params { gamma })?;
        let (mut capped, mut flat) = (0, 0);
        for c in all_coefs() {
            let snr = (c.alpha / c.sigma).powi(2);
            let want = (gamma / snr).min(1.0);
            let got = w.eps_weight(&c);
            assert!(
                (got - want).abs() <= 1e-14 * want,
                "γ = {gamma}, t = {}: {got}",
                c.t
            );
            assert!(got > 0.0 && got <= 1.0);
            if snr > gamma { capped += 1 } else { flat += 1 }
        }
        assert!(capped > 0 && flat > 0, "γ = {gamma}: both branches");
    }
    Ok(())
}

/// In x₀ space (k = σ/α) the weight is min(SNR, γ) (Hang et al.'s w_t, MATH.md §4).
#[test]
fn x0_space_weight_is_min_of_snr_and_gamma() -> Result<()> {
    let w = MinSnr::new(Params::default())?;
    for c in all_coefs() {
        let snr = (c.alpha / c.sigma).powi(2);
        let want = snr.min(5.0);
        let got = w.target_weight(&c, c.sigma / c.alpha);
        assert!(
            (got - want).abs() <= 1e-13 * want,
            "t = {}: {got} vs {want}",
            c.t
        );
    }
    Ok(())
}

/// At α = 0 (SNR = 0) the weight is 1, at σ = 0 (SNR = ∞) it is 0: no NaN at either end.
#[test]
fn singular_ends_stay_finite() -> Result<()> {
    let w = MinSnr::new(Params::default())?;
    let alpha_zero = TimeCoefs {
        t: 1.0,
        alpha: 0.0,
        sigma: 1.0,
        f: f64::NEG_INFINITY,
        g2: f64::INFINITY,
        lambda: f64::NEG_INFINITY,
    };
    assert_eq!(w.eps_weight(&alpha_zero), 1.0);
    assert_eq!(w.eps_weight(&vp(0.0)), 0.0);
    Ok(())
}

/// Finite, positive and ≤ 1 on 1,001 points of [t_ε, T] of VP, and no density of its own.
#[test]
fn finite_positive_and_uniform_in_t() -> Result<()> {
    let w = MinSnr::new(Params::default())?;
    for i in 0..=1000 {
        let c = Vp.coefs(1e-3 + (1.0 - 1e-3) * i as f64 / 1000.0);
        let v = w.eps_weight(&c);
        assert!(v.is_finite() && v > 0.0 && v <= 1.0, "t = {}: {v}", c.t);
        assert_eq!(w.t_density(&Vp, &c), None);
    }
    assert_eq!(w.sample_t(&Vp, 0.5), None);
    Ok(())
}

/// γ must be finite and > 0; each bad value is an `InvalidParam` naming `gamma`.
#[test]
fn invalid_gamma_is_rejected() -> Result<()> {
    for gamma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        match MinSnr::new(Params { gamma }) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("min_snr", "gamma"));
            }
            other => panic!("γ = {gamma}: expected InvalidParam, got {other:?}"),
        }
    }
    assert_eq!(MinSnr::new(Params { gamma: 1e-3 })?.gamma(), 1e-3);
    Ok(())
}

/// The `min_snr` registration: γ = 5 by default (Hang et al.'s choice), read from RON, and
/// unknown fields or a bad γ refused.
#[test]
fn registration_reads_gamma() -> Result<()> {
    assert_eq!(Params::default().gamma, 5.0);
    let reg = Registry::global()?;
    let c = vp(0.1);
    let snr = (c.alpha / c.sigma).powi(2);
    assert!(snr > 5.0);
    let w = reg.weighting("min_snr", "()")?;
    assert!((w.eps_weight(&c) - 5.0 / snr).abs() <= 1e-14);
    let w = reg.weighting("min_snr", "(gamma: 2.0)")?;
    assert!((w.eps_weight(&c) - 2.0 / snr).abs() <= 1e-14);
    assert!(reg.weighting("min_snr", "(gama: 2.0)").is_err());
    assert!(reg.weighting("min_snr", "(gamma: -1.0)").is_err());
    Ok(())
}
