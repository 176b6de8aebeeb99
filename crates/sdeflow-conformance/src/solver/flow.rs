//! The pathwise order of deterministic solvers (DESIGN.md "Measuring sample quality honestly"
//! (b)): the PF-ODE flow map of the single Gaussian N(m, s² I) is closed-form (MATH.md §7), so
//! an ODE solver's error at t_ε from fixed starts is exact, with no sampling noise, and must
//! fall at the claimed order on the solver's natural grid.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use sdeflow_kernel::{ForwardSde, GridKind, Result, ScoreModel, Solver, State};

use super::{
    Case,
    fixture::{Fixture, host_vec, pipeline},
    order::{ORDER_STEPS, OrderFit, claimed_order, order_rows},
};
use crate::{
    Target,
    mixtures::{single_gaussian, single_law},
    report::Report,
};

/// Starting points of the pathwise checks, in units of the marginal's std at T around its mean.
const FLOW_STARTS: [f64; 5] = [-2.0, -1.0, 0.0, 1.0, 2.5];

/// The pathwise error at t_ε of a deterministic solver against the closed-form PF-ODE flow of
/// the single Gaussian ([`sdeflow_kernel::testing::Gaussian::flow_map`]); the largest
/// coordinate error over five starts. `schedule` is the grid and step count, or `None` for an
/// adaptive solver, which chooses its own.
pub fn exact_flow_error(
    sde: &Arc<dyn ForwardSde>,
    solver: &Arc<dyn Solver>,
    model: Arc<dyn ScoreModel>,
    schedule: Option<(GridKind, usize)>,
    target: &Target,
) -> Result<f64> {
    Ok(
        flow_errors(sde, solver, model, schedule, target, &FLOW_STARTS)?
            .into_iter()
            .fold(0.0, f64::max),
    )
}

/// Every coordinate's error at t_ε against the single Gaussian's exact PF-ODE flow, from the
/// starts `ks` (in units of the marginal's std at T around its mean).
pub(crate) fn flow_errors(
    sde: &Arc<dyn ForwardSde>,
    solver: &Arc<dyn Solver>,
    model: Arc<dyn ScoreModel>,
    schedule: Option<(GridKind, usize)>,
    target: &Target,
    ks: &[f64],
) -> Result<Vec<f64>> {
    let law = single_law();
    let d = law.mean.len();
    let (c0, c1) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    let std0 = law.var(&c0).sqrt();
    let starts: Vec<f64> = ks
        .iter()
        .flat_map(|k| law.mean.iter().map(move |mj| c0.alpha * mj + k * std0))
        .collect();
    let x = target.put(&Tensor::from_vec(
        starts.clone(),
        (ks.len(), d),
        &Device::Cpu,
    )?)?;
    let mut builder = pipeline(sde, model, solver, target).chunk_rows(None);
    if let Some((grid, steps)) = schedule {
        builder = builder.steps(steps).grid(grid);
    }
    let out = builder.build()?.run(State::new(x, sde.t_max(), 0))?;
    Ok(host_vec(&out.state.x)?
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(k, (got, x0))| (got - law.flow_map(*x0, k % d, &c0, &c1)).abs())
        .collect())
}

/// The pathwise error on `sde` falls at the claimed ODE order on the solver's natural grid
/// (tail fit over N ≤ 4096, ± 0.25).
pub(crate) fn flow_order(report: &mut Report, fixture: &Fixture<'_>, case: Case<'_>) {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let claims = solver.claims();
    let Some(claim) = claimed_order(claims.order) else {
        return;
    };
    let grid = claims.natural_grid;
    let check = format!(
        "order on {sde_name}, {grid} grid (pathwise vs the exact PF-ODE flow of a Gaussian)"
    );
    let run = |on: &Target| -> Result<Vec<f64>> {
        let model = fixture.oracle(&single_gaussian(), on, fixture.param.clone())?;
        ORDER_STEPS
            .iter()
            .map(|&n| exact_flow_error(sde, solver, model.clone(), Some((grid, n)), on))
            .collect()
    };
    let fit = OrderFit::tail(claim, "the pathwise error");
    order_rows(report, &fixture.target, plugin, &**sde, check, &fit, run);
}
