//! The test fixtures themselves (`sdeflow_kernel::testing`), which every solver plugin's own
//! tests measure against: the OU SDE is consistent and the Gaussian's flow map is the PF-ODE's.

use sdeflow_kernel::{
    ForwardSde, Result,
    testing::{Gaussian, Ou},
};

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², by central differences (step 1e-5,
/// truncation ~1e-10; tolerance 1e-8).
#[test]
fn ou_is_consistent() -> Result<()> {
    let sde = Ou;
    let d = 1e-5;
    for t in [0.01, 0.1, 0.5, 0.9] {
        let dlog_alpha = (sde.alpha(t + d).ln() - sde.alpha(t - d).ln()) / (2.0 * d);
        let dsigma2 = (sde.sigma(t + d).powi(2) - sde.sigma(t - d).powi(2)) / (2.0 * d);
        let c = sde.coefs(t);
        assert!((dlog_alpha - c.f).abs() <= 1e-8, "t = {t}: {dlog_alpha}");
        let g2 = dsigma2 - 2.0 * c.f * c.sigma * c.sigma;
        assert!((g2 - c.g2).abs() <= 1e-8, "t = {t}: {g2}");
    }
    Ok(())
}

/// The reference itself: the flow map composes (t → u → s equals t → s to rounding) and its
/// s-derivative at s = t is the drift F (central differences, step 1e-5; tolerance 1e-8).
#[test]
fn the_flow_map_is_the_pf_ode_flow() -> Result<()> {
    let (model, d) = (Gaussian::default(), 1e-5);
    let flow_map =
        |x: f64, j: usize, t: f64, s: f64| model.flow_map(x, j, &Ou.coefs(t), &Ou.coefs(s));
    // Coordinate j has mean m_j: m_0 = 1, m_1 = −0.5.
    for (x, j) in [(1.5, 0), (-2.0, 1), (0.3, 0)] {
        for t in [0.01, 0.3, 0.9] {
            let via = flow_map(flow_map(x, j, 1.0, 0.6), j, 0.6, t);
            let direct = flow_map(x, j, 1.0, t);
            assert!((via - direct).abs() <= 1e-14 * direct.abs().max(1.0));
            let slope = (flow_map(x, j, t, t + d) - flow_map(x, j, t, t - d)) / (2.0 * d);
            let f = model.pf_ode_drift(x, j, &Ou.coefs(t));
            assert!(
                (slope - f).abs() <= 1e-8 * f.abs().max(1.0),
                "{slope} vs {f}"
            );
        }
    }
    Ok(())
}
