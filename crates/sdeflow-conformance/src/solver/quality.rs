//! Sample quality at the solver's declared default (steps, grid) on the fixed mixtures
//! (DESIGN.md "Measuring sample quality honestly"): sliced W2 from exact p_T starts within the
//! noise floor of exact samplers (plus, for a plateauing solver, its closed-form Langevin
//! bias), the NFE counted against the NFE claimed, and for deterministic solvers the paired
//! error against a fixed-step RK4 reference from the same starts.

use std::sync::Arc;

use sdeflow_kernel::{Order, Parameterization, Result, State};

use super::{
    Case,
    adaptive::{nfe_reported, schedule_text},
    fixture::{Fixture, PAIRED_SAMPLES, exact_start, host_vec},
    weak::plateau_bias,
};
use crate::{
    mixtures::MixtureSpec,
    report::{Report, num},
    sw2::SAMPLES,
};

/// The RMS distance, sample by sample from the same exact p_T starts, between a deterministic
/// solver at its default schedule and the fixed-step RK4 reference with 2^13 λ-uniform steps.
/// It passes within the SW2 noise floor's threshold, mean + 3 sd (per coordinate, as SW2 is
/// per direction), the same bar as the SW2 row: the solver's own error is then within what
/// 20,000 exact samples can resolve. On `mix8` the RMS of a first-order method is carried by
/// the few trajectories that start near a boundary between modes and end in the other mode:
/// euler with 1,000 uniform steps on ve gives 0.0545 per coordinate from 4 such flips in
/// 2,000 samples, 0.0099 without them (halving with the step as order 1 should); flips fall
/// only as the error itself does, so that RMS falls like N^{−1/2}.
pub(crate) fn paired_error(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
    spec: &MixtureSpec,
) -> Result<()> {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let reference = fixture.paired_reference(spec, sde_name, sde)?;
    let target = &fixture.target;
    let pipeline = fixture.pipeline(sde, solver, spec, target)?.build()?;
    let schedule = pipeline.discretization();
    let schedule = schedule_text(&**solver)
        .unwrap_or_else(|| format!("{} {} steps", schedule.steps, schedule.grid));
    let start = target.put(&exact_start(spec, &**sde, PAIRED_SAMPLES)?)?;
    let got = host_vec(&pipeline.run(State::new(start, sde.t_max(), 0))?.state.x)?;
    // Per coordinate: a displacement δ projects onto a random unit direction with RMS ‖δ‖/√d,
    // which is what the sliced W2 floor it is judged against resolves.
    let rms = (got
        .iter()
        .zip(reference.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / got.len() as f64)
        .sqrt();
    let floor = fixture.floor(spec, sde_name, &**sde)?.1;
    report.push(
        plugin,
        format!(
            "paired RMS error per coordinate vs RK4 (2^13 λ-uniform steps) on {} ({sde_name}, {schedule})",
            spec.name
        ),
        num(rms),
        "0",
        format!(
            "≤ SW2 floor {} + 3 × {} = {}",
            num(floor.mean),
            num(floor.sd),
            num(floor.threshold())
        ),
        rms <= floor.threshold(),
        "the solver's samples stray from the exact flow by more than exact sampling can resolve at its default schedule",
    );
    Ok(())
}

/// At the default schedule on `spec`, reading the oracle through `param` (named `param_name`,
/// empty for the run parameterization left unnamed): the NFE counted equals the NFE claimed,
/// and SW2 from exact p_T starts is within the floor (plus a plateau's allowance).
pub(crate) fn sw2_at_default(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
    spec: &MixtureSpec,
    param_name: &str,
    param: Arc<dyn Parameterization>,
) -> Result<()> {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let target = &fixture.target;
    let pipeline = fixture
        .pipeline_through(param, sde, solver, spec, target)?
        .build()?;
    let schedule = pipeline.discretization();
    let start = target.put(&exact_start(spec, &**sde, SAMPLES)?)?;
    let out = pipeline.run(State::new(start, sde.t_max(), 0))?;
    let by = if param_name.is_empty() { "" } else { " × " };
    let adaptive = schedule_text(&**solver);
    if adaptive.is_some() {
        let what = format!("{} at default, {sde_name}{by}{param_name}", spec.name);
        nfe_reported(report, plugin, &what, &**solver, &out);
    } else {
        let claimed_nfe = solver.nfe(schedule.steps) as u64;
        report.push(
            plugin,
            format!(
                "NFE counted at default ({sde_name}{by}{param_name}, {} steps)",
                schedule.steps
            ),
            out.nfe.to_string(),
            claimed_nfe.to_string(),
            "exact",
            out.nfe == claimed_nfe,
            "the solver evaluates the model a different number of times than it claims (Solver::nfe)",
        );
    }
    let schedule =
        adaptive.unwrap_or_else(|| format!("{} {} steps", schedule.steps, schedule.grid));
    let samples = host_vec(&out.state.x)?;
    // A plateauing solver is allowed its closed-form Langevin bias at t_ε on the narrowest
    // mode (DESIGN.md "Decisions").
    let allowance = match solver.claims().order {
        Order::Plateau { snr } => {
            let c = sde.coefs(sde.t_eps());
            let var = c.alpha * c.alpha * spec.min_axis_variance() + c.sigma * c.sigma;
            plateau_bias(var, snr, c.sigma)
        }
        _ => 0.0,
    };
    let floor = fixture.floor(spec, sde_name, &**sde)?;
    let (sw, floor) = (&floor.0, floor.1);
    let d = sw.distance(&samples)?;
    report.push(
        plugin,
        format!(
            "SW2 on {} ({sde_name}{by}{param_name}, {schedule}, exact p_T start)",
            spec.name
        ),
        num(d),
        format!("floor {} ± {}", num(floor.mean), num(floor.sd)),
        if allowance > 0.0 {
            format!(
                "≤ {} + plateau {}",
                num(floor.threshold()),
                num(allowance)
            )
        } else {
            format!("≤ {}", num(floor.threshold()))
        },
        d <= floor.threshold() + allowance,
        "samples are further from the exact law than exact samples are: the solver is biased at its default schedule",
    );
    Ok(())
}
