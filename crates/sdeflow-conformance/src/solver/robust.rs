//! Robustness of every solver (DESIGN.md "Conformance" and "Decisions"): finite, with the NFE
//! it claims, at 1, 2, 3, 5, 10, 100, 1,000 and 2,000 steps (those within 12,000 NFE per
//! sample, and the most steps that buys); and sample i bit-identical
//! whatever the batch it is drawn in and on a rerun (noise is a pure function of (seed,
//! sample, draw); state lives in `State`).

use std::sync::Arc;

use candle_core::{DType, Device};
use sdeflow_kernel::{ForwardSde, Pipeline, Result, Solver};

use super::{Case, fixture::Fixture};
use crate::{Target, mixtures::ring, report::Report};

/// "Finite at every step count" (DESIGN.md "Decisions").
pub const FINITE_STEPS: [usize; 8] = [1, 2, 3, 5, 10, 100, 1000, 2000];
/// The most NFE per sample the sweep spends on one step count: 2,000 steps of the costliest
/// built-in Runge–Kutta step (dopri5's 6), so every solver with up to 6 NFE per step is swept
/// to 2,000 steps. A costlier step (annealed Langevin's 100 per level) is swept up to as many
/// steps as this buys, that count included.
pub const FINITE_NFE: usize = 12_000;

/// The step counts of [`FINITE_STEPS`] that `nfe_per_step` affords within [`FINITE_NFE`],
/// with the largest affordable count.
pub fn finite_steps(nfe_per_step: usize) -> Vec<usize> {
    let most = (FINITE_NFE / nfe_per_step.max(1)).max(1);
    let mut steps: Vec<usize> = FINITE_STEPS
        .iter()
        .copied()
        .filter(|&n| n <= most)
        .collect();
    if steps.last() != Some(&most) && most < FINITE_STEPS[FINITE_STEPS.len() - 1] {
        steps.push(most);
    }
    steps
}
/// Batch sizes whose samples must agree bit for bit.
pub const BATCHES: [usize; 3] = [1, 7, 1000];

/// `solver` on `sde` with `steps` steps on its natural grid, on `ring`, in `dtype` on the
/// target's device.
fn small_run(
    fixture: &Fixture<'_>,
    solver: &Arc<dyn Solver>,
    sde: &Arc<dyn ForwardSde>,
    steps: usize,
    dtype: DType,
) -> Result<Pipeline> {
    let on = Target::new(fixture.target.device.clone(), dtype);
    fixture
        .pipeline(sde, solver, &ring(), &on)?
        .steps(steps)
        .grid(solver.claims().natural_grid)
        .build()
}

/// Finite samples, with NFE as claimed, at every step count of [`FINITE_STEPS`].
pub(crate) fn finite_everywhere(report: &mut Report, fixture: &Fixture<'_>, case: Case<'_>) {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let mut failures = Vec::new();
    let sweep = finite_steps(solver.claims().nfe_per_step);
    for &steps in &sweep {
        let outcome =
            small_run(fixture, solver, sde, steps, fixture.target.dtype).and_then(|p| p.sample(64));
        match outcome {
            Ok(out) if out.nfe == solver.nfe(steps) as u64 => {}
            Ok(out) => failures.push(format!("{steps} steps: {} NFE", out.nfe)),
            Err(e) => failures.push(format!("{steps} steps: {e}")),
        }
    }
    report.push(
        plugin,
        format!(
            "finite with NFE as claimed at 1–{} steps ({sde_name}, ring)",
            sweep.last().copied().unwrap_or(1)
        ),
        format!("{}/{}", sweep.len() - failures.len(), sweep.len()),
        format!("{}/{}", sweep.len(), sweep.len()),
        "all",
        failures.is_empty(),
        failures.join("; "),
    );
}

/// Sample i, in f32 at the default step count, is the same bits in every batch of
/// [`BATCHES`] and on a rerun.
pub(crate) fn bit_identical(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
) -> Result<()> {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let steps = solver.default_discretization(&**sde).steps;
    let pipeline = small_run(fixture, solver, sde, steps, DType::F32)?;
    let bits = |n: usize| -> Result<Vec<Vec<u32>>> {
        let x = pipeline
            .sample(n)?
            .state
            .x
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        Ok(x.iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect())
    };
    let big = *BATCHES.iter().max().unwrap_or(&1);
    let reference = bits(big)?;
    let mut mismatches = Vec::new();
    for n in BATCHES.iter().copied().filter(|n| *n != big) {
        if bits(n)?[..] != reference[..n] {
            mismatches.push(format!("batch {n}"));
        }
    }
    if bits(big)? != reference {
        mismatches.push("rerun".into());
    }
    report.push(
        plugin,
        format!("sample i bit-identical in batches {BATCHES:?} and on rerun ({sde_name}, f32)"),
        if mismatches.is_empty() { "identical".into() } else { format!("differs: {}", mismatches.join(", ")) },
        "identical",
        "bitwise",
        mismatches.is_empty(),
        "a sample depends on its batch-mates or on the run: draw noise only through ctx.standard_normal and keep state in State",
    );
    Ok(())
}

/// A registered alias (`euler_ancestral` for `ddim(eta: 1.0)`) builds the solver it names:
/// the same claims, and the same bits on `ring` over the first SDE at 20 steps. The target's
/// contracts run under the target's own name.
pub(crate) fn alias_matches(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    alias_of: &str,
    solver: &Arc<dyn Solver>,
    sde: &Arc<dyn ForwardSde>,
) {
    let check = format!("builds {alias_of}: the same claims and bits (ring, 20 steps, f32)");
    let run = || -> Result<(bool, bool)> {
        let (name, params) = alias_of
            .find('(')
            .map_or((alias_of, "()"), |i| alias_of.split_at(i));
        let target = fixture.registry.solver(name, params)?;
        let same_claims = target.claims() == solver.claims();
        let bits = |s: &Arc<dyn Solver>| -> Result<Vec<u32>> {
            let x = small_run(fixture, s, sde, 20, DType::F32)?
                .sample(64)?
                .state
                .x;
            Ok(x.flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v.to_bits())
                .collect())
        };
        Ok((same_claims, bits(&target)? == bits(solver)?))
    };
    match run() {
        Ok((claims, bits)) => report.push(
            plugin,
            check,
            match (claims, bits) {
                (true, true) => "same".to_string(),
                (false, _) => "other claims".to_string(),
                (true, false) => "other bits".to_string(),
            },
            "same",
            "exact",
            claims && bits,
            format!("the alias builds a solver other than {alias_of}"),
        ),
        Err(e) => report.error(plugin, check, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in step of up to 6 NFE is swept to 2,000 steps; annealed Langevin's 100
    /// per level to 120 levels.
    #[test]
    fn the_sweep_is_bounded_in_nfe() {
        for nfe in [1, 2, 4, 6] {
            assert_eq!(
                finite_steps(nfe),
                FINITE_STEPS.to_vec(),
                "{nfe} NFE per step"
            );
        }
        assert_eq!(finite_steps(100), vec![1, 2, 3, 5, 10, 100, 120]);
    }
}
