//! Time grids (MATH.md §5): every kind is strictly decreasing from exactly T to exactly t_ε,
//! and each follows its formula — uniform in t, quadratic, uniform in λ, uniform in σ̃^{1/ρ}.

mod common;

use common::{EdmSde, ExpSde};
use sdeflow_kernel::{Error, ForwardSde, GridKind, Result};

const KINDS: [GridKind; 5] = [
    GridKind::Uniform,
    GridKind::Quadratic,
    GridKind::LogSnr,
    GridKind::Karras { rho: 7.0 },
    GridKind::Karras { rho: 1.0 },
];

fn check_grid(sde: &dyn ForwardSde, kind: GridKind, steps: usize, ts: &[f64]) {
    assert_eq!(ts.len(), steps + 1, "{kind:?} N = {steps}: length");
    assert_eq!(ts[0], sde.t_max(), "{kind:?} N = {steps}: t_0 is not T");
    assert_eq!(
        ts[steps],
        sde.t_eps(),
        "{kind:?} N = {steps}: t_N is not t_ε"
    );
    for i in 0..steps {
        assert!(
            ts[i] > ts[i + 1],
            "{kind:?} N = {steps}: t_{i} = {:e} ≤ t_{} = {:e}",
            ts[i],
            i + 1,
            ts[i + 1]
        );
    }
}

/// EDM's SDE with the closed-form inverse t(λ) = e^{−λ} (the sweep below makes 6 million
/// inversions; bisection is checked separately).
#[derive(Debug)]
struct EdmClosed;

impl ForwardSde for EdmClosed {
    fn t_max(&self) -> f64 {
        EdmSde.t_max()
    }
    fn t_eps(&self) -> f64 {
        EdmSde.t_eps()
    }
    fn alpha(&self, t: f64) -> f64 {
        EdmSde.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        EdmSde.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        EdmSde.drift_coef(t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        EdmSde.diffusion_sq(t)
    }
    fn prior_std(&self) -> f64 {
        EdmSde.prior_std()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

/// N = 1..2000 for every kind, on the exponential VP test SDE and on EDM's SDE (T = 80,
/// t_ε = 0.002), both with closed-form inverses of λ.
#[test]
fn every_grid_is_strictly_decreasing_with_exact_ends() -> Result<()> {
    let sdes: [&dyn ForwardSde; 2] = [&ExpSde::closed(), &EdmClosed];
    for sde in sdes {
        for kind in KINDS {
            for steps in 1..=2000 {
                let ts = kind.times(sde, steps)?;
                check_grid(sde, kind, steps, &ts);
            }
        }
    }
    Ok(())
}

/// The λ-inverting grids again with the trait's default bisection on both SDEs, at the step
/// counts DESIGN.md's "finite at every step count" names, powers of two and their neighbours.
#[test]
fn bisection_grids_are_strictly_decreasing_with_exact_ends() -> Result<()> {
    let sdes: [&dyn ForwardSde; 2] = [&ExpSde::new(), &EdmSde];
    for sde in sdes {
        for kind in [GridKind::LogSnr, GridKind::Karras { rho: 7.0 }] {
            for steps in [1, 2, 3, 5, 10, 63, 64, 65, 100, 128, 1000, 1024, 1999, 2000] {
                let ts = kind.times(sde, steps)?;
                check_grid(sde, kind, steps, &ts);
            }
        }
    }
    Ok(())
}

#[test]
fn uniform_grid_is_evenly_spaced_in_t() -> Result<()> {
    let sde = ExpSde::new();
    for steps in [1, 4, 7, 1000] {
        let ts = GridKind::Uniform.times(&sde, steps)?;
        let h = (sde.t_max - sde.t_eps) / steps as f64;
        for (i, t) in ts.iter().enumerate() {
            let want = sde.t_max - i as f64 * h;
            assert!(
                (t - want).abs() <= 1e-14,
                "N = {steps}, t_{i} = {t} vs {want}"
            );
        }
    }
    Ok(())
}

/// DESIGN.md: t_i = t_ε + (T − t_ε)(1 − i/N)².
#[test]
fn quadratic_grid_follows_its_formula() -> Result<()> {
    for sde in [
        ExpSde::new(),
        ExpSde {
            t_max: 3.0,
            t_eps: 0.25,
            closed_inverse: true,
        },
    ] {
        for steps in [1, 2, 9, 250] {
            let ts = GridKind::Quadratic.times(&sde, steps)?;
            for (i, t) in ts.iter().enumerate() {
                let u = 1.0 - i as f64 / steps as f64;
                let want = sde.t_eps + (sde.t_max - sde.t_eps) * u * u;
                assert!((t - want).abs() <= 1e-14 * sde.t_max, "N = {steps}, t_{i}");
            }
            // Steps shrink toward the data: h_i = (T − t_ε)(2(N − i) − 1)/N².
            for i in 0..steps {
                let h = ts[i] - ts[i + 1];
                let n = steps as f64;
                let want = (sde.t_max - sde.t_eps) * (2.0 * (n - i as f64) - 1.0) / (n * n);
                assert!((h - want).abs() <= 1e-13 * sde.t_max, "N = {steps}, h_{i}");
            }
        }
    }
    Ok(())
}

/// λ(t_i) = λ(T) + (i/N)(λ(t_ε) − λ(T)), with λ(t) = −½ log(e^{2t} − 1) and its closed-form
/// inverse t = ½ log(1 + e^{−2λ}), for the bisection and the closed-form SDE.
#[test]
fn log_snr_grid_is_uniform_in_lambda() -> Result<()> {
    for sde in [ExpSde::new(), ExpSde::closed()] {
        let (l0, l1) = (
            ExpSde::log_snr_exact(sde.t_max),
            ExpSde::log_snr_exact(sde.t_eps),
        );
        for steps in [1, 3, 20, 500] {
            let ts = GridKind::LogSnr.times(&sde, steps)?;
            for (i, t) in ts.iter().enumerate() {
                let lambda = l0 + (i as f64 / steps as f64) * (l1 - l0);
                let want = ExpSde::t_of_log_snr_exact(lambda);
                // |dt/dλ| = e^{−2λ}/(1 + e^{−2λ}) < 1, so a few ulp of λ move t by less.
                assert!(
                    (t - want).abs() <= 1e-13,
                    "N = {steps}, t_{i} = {t} vs {want}"
                );
                let got = ExpSde::log_snr_exact(*t);
                assert!(
                    (got - lambda).abs() <= 1e-11 * (1.0 + lambda.abs()),
                    "N = {steps}, λ(t_{i}) = {got} vs {lambda}"
                );
            }
        }
    }
    Ok(())
}

/// Karras et al. 2022, eq. (5): σ̃_i = (σ̃_max^{1/ρ} + (i/N)(σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ. On
/// EDM's SDE σ̃ = t, so the grid is that formula with σ̃_max = 80 and σ̃_min = 0.002; on the VP
/// test SDE σ̃(t) = √(e^{2t} − 1), so σ̃(t_i)^{1/ρ} must be evenly spaced.
#[test]
fn karras_grid_is_uniform_in_sigma_tilde_to_the_one_over_rho() -> Result<()> {
    for rho in [7.0, 3.0, 1.0] {
        for steps in [1, 2, 18, 256] {
            let ts = GridKind::Karras { rho }.times(&EdmSde, steps)?;
            let (a, b) = (80f64.powf(1.0 / rho), 0.002f64.powf(1.0 / rho));
            for (i, t) in ts.iter().enumerate() {
                // Compared in σ̃^{1/ρ}, where the interpolation rounds at the scale of a.
                let want = a + (i as f64 / steps as f64) * (b - a);
                let got = t.powf(1.0 / rho);
                assert!(
                    (got - want).abs() <= 1e-13 * a,
                    "EDM ρ = {rho}, N = {steps}, t_{i} = {t}: {got} vs {want}"
                );
            }
            for sde in [ExpSde::new(), ExpSde::closed()] {
                let ts = GridKind::Karras { rho }.times(&sde, steps)?;
                let s = |t: f64| (2.0 * t).exp_m1().sqrt().powf(1.0 / rho);
                let (a, b) = (s(sde.t_max), s(sde.t_eps));
                for (i, t) in ts.iter().enumerate() {
                    let want = a + (i as f64 / steps as f64) * (b - a);
                    assert!(
                        (s(*t) - want).abs() <= 1e-12,
                        "VP ρ = {rho}, N = {steps}, i = {i}: {} vs {want}",
                        s(*t)
                    );
                }
            }
        }
    }
    // ρ = 1 on EDM is the uniform grid in t.
    let karras = GridKind::Karras { rho: 1.0 }.times(&EdmSde, 40)?;
    let uniform = GridKind::Uniform.times(&EdmSde, 40)?;
    for (k, u) in karras.iter().zip(&uniform) {
        assert!((k - u).abs() <= 1e-13 * 80.0);
    }
    Ok(())
}

fn expect_invalid(r: Result<Vec<f64>>, field: &str) {
    match r {
        Err(Error::InvalidParam {
            plugin,
            field: f,
            reason,
        }) => {
            assert_eq!(plugin, "grid");
            assert_eq!(f, field, "reason: {reason}");
        }
        other => panic!("expected an invalid `{field}`, got {other:?}"),
    }
}

#[test]
fn zero_steps_are_rejected_by_every_kind() -> Result<()> {
    for kind in KINDS {
        expect_invalid(kind.times(&ExpSde::new(), 0), "steps");
    }
    Ok(())
}

#[test]
fn karras_rho_must_be_positive() -> Result<()> {
    for rho in [0.0, -7.0, f64::NAN] {
        expect_invalid(GridKind::Karras { rho }.times(&EdmSde, 10), "rho");
    }
    Ok(())
}

#[test]
fn t_eps_must_lie_below_t_max() -> Result<()> {
    for (t_max, t_eps) in [(1.0, 1.0), (0.5, 1.0), (1.0, f64::NAN)] {
        let sde = ExpSde {
            t_max,
            t_eps,
            closed_inverse: true,
        };
        for kind in KINDS {
            expect_invalid(kind.times(&sde, 10), "t_eps");
        }
    }
    Ok(())
}

/// An interval a few ulps wide cannot hold 100 distinct times: the grid must refuse rather
/// than produce zero-length steps (MATH.md §5), naming the repeat.
#[test]
fn repeated_times_are_rejected() -> Result<()> {
    let sde = ExpSde {
        t_max: 1.0 + 4.0 * f64::EPSILON,
        t_eps: 1.0,
        closed_inverse: true,
    };
    assert!(GridKind::Uniform.times(&sde, 2).is_ok());
    for kind in [GridKind::Uniform, GridKind::Quadratic] {
        match kind.times(&sde, 100) {
            Err(e @ Error::InvalidParam { .. }) => {
                assert!(e.to_string().contains("repeats a time"), "{e}");
            }
            other => panic!("{kind:?}: expected a repeated-time error, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn grid_kinds_read_from_ron() -> Result<()> {
    let read = |s: &str| ron::from_str::<GridKind>(s);
    assert_eq!(read("uniform").ok(), Some(GridKind::Uniform));
    assert_eq!(read("quadratic").ok(), Some(GridKind::Quadratic));
    assert_eq!(read("log_snr").ok(), Some(GridKind::LogSnr));
    assert_eq!(
        read("karras(rho: 7.0)").ok(),
        Some(GridKind::Karras { rho: 7.0 })
    );
    assert!(read("karras(rho: 7.0, sigma: 1.0)").is_err());
    assert!(read("Uniform").is_err());
    Ok(())
}

#[test]
fn default_grid_is_uniform_unless_overridden() -> Result<()> {
    assert_eq!(ExpSde::new().default_grid(), GridKind::Uniform);
    assert_eq!(EdmSde.default_grid(), GridKind::Karras { rho: 7.0 });
    Ok(())
}
