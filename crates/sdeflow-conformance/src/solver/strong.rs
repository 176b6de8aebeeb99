//! The strong order of stochastic solvers on a Brownian path shared across step counts
//! (DESIGN.md "Conformance": Euler–Maruyama's strong order 1.0 with additive noise): from the
//! same exact p_T starts of the single Gaussian, with every step's noise read off one Brownian
//! tree, the RMS distance at t_ε to the same solver with 2^14 steps must fall at the claimed
//! strong order.

use std::sync::Arc;

use sdeflow_kernel::{Result, State, noise::BrownianNoise};

use super::{
    Case,
    fixture::{Fixture, exact_start, host_vec},
    order::{OrderFit, order_rows},
};
use crate::{Target, mixtures::single_gaussian, report::Report};

/// Step counts of the strong-order fit.
const STRONG_STEPS: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
/// Steps of the reference run on the same path.
const STRONG_REFERENCE_STEPS: usize = 1 << 14;
/// Paths compared.
const STRONG_SAMPLES: usize = 128;

/// The strong order on a shared Brownian path (`BrownianNoise`): the RMS distance at t_ε to
/// the same solver with 2^14 steps, fitted on the tail over N ≤ 2048, within ± 0.3 of `claim`.
pub(crate) fn strong_order(report: &mut Report, fixture: &Fixture<'_>, case: Case<'_>, claim: f64) {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let grid = solver.claims().natural_grid;
    let check = format!("strong order on {sde_name}, {grid} grid (shared Brownian path)");
    let run = |target: &Target| -> Result<Vec<f64>> {
        let spec = single_gaussian();
        let noise = Arc::new(BrownianNoise::new(sde.t_eps(), sde.t_max(), 24)?);
        let start = exact_start(&spec, &**sde, STRONG_SAMPLES)?;
        // The reference on the host in f64; the runs fitted on the target.
        let end = |steps: usize, on: &Target| -> Result<Vec<f64>> {
            let out = fixture
                .pipeline(sde, solver, &spec, on)?
                .steps(steps)
                .grid(grid)
                .chunk_rows(None)
                .noise(noise.clone())
                .build()?
                .run(State::new(on.put(&start)?, sde.t_max(), 0))?;
            host_vec(&out.state.x)
        };
        let reference = end(STRONG_REFERENCE_STEPS, &Target::default())?;
        STRONG_STEPS
            .iter()
            .map(|&n| {
                let got = end(n, target)?;
                Ok((got
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    / got.len() as f64)
                    .sqrt())
            })
            .collect()
    };
    let fit = OrderFit {
        steps: &STRONG_STEPS,
        claim,
        tolerance: 0.3,
        tolerance_text: "± 0.3 (tail fit, N ≤ 2048, reference 2^14 steps)",
        what: "the pathwise error on a shared Brownian path",
    };
    order_rows(report, &fixture.target, plugin, &**sde, check, &fit, run);
}
