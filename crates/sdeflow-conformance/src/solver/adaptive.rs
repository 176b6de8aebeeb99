//! The contracts that fit adaptivity ([`Solver::adaptive`]): a fixed-grid solver's order,
//! step-count sweep and NFE claim have no meaning when every sample chooses its own steps, so
//! an adaptive solver is checked instead for
//! - NFE: the run's per-sample report equals what the model counted (calls: the largest
//!   sample's NFE; rows evaluated: their sum), and each sample's NFE is the starting step's
//!   2 plus the claimed NFE per attempt times its attempts;
//! - accuracy: the global error against the single Gaussian's exact PF-ODE flow falls in
//!   proportion to rtol (log-log slope within 0.2 of 1; an embedded pair carrying the higher
//!   order, p/(q + 1) = 1 for both 5(4) and 3(2));
//! - robustness: finite from rtol 1e-1 to 1e-10 (f64), and each sample takes the same steps,
//!   and ends on the same bits, in batches of 1, 7 and 1,000 and on a rerun (f32).
//!
//! Beside them: SW2 at the defaults and the paired error against RK4, as for every
//! deterministic solver, and the likelihood contract ([`super::likelihood`]).

use std::sync::Arc;

use candle_core::{DType, Device};
use sdeflow_kernel::{Pipeline, Result, RowStats, SampleOutput, Solver, testing::tail_order};

use super::{
    BATCHES, Case,
    fixture::{Fixture, pipeline},
    flow::flow_errors,
};
use crate::{
    Target,
    mixtures::{ring, single_gaussian},
    report::{Report, num},
};

/// Tolerances (rtol = atol) of the proportionality fit.
pub const SLOPE_RTOLS: [f64; 6] = [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10];
/// Tolerances (rtol = atol) that must all run to finite samples, in f64.
pub const FINITE_RTOLS: [f64; 10] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10];
/// Samples of each run of the finite sweep.
const FINITE_ROWS: usize = 16;
/// Starts of the proportionality fit, spread over ±2.5 marginal standard deviations at T.
const SLOPE_STARTS: usize = 64;

/// `name` (a registered adaptive solver) with rtol = atol = `tol`.
pub(crate) fn with_tolerance(
    fixture: &Fixture<'_>,
    name: &str,
    tol: f64,
) -> Result<Arc<dyn Solver>> {
    fixture
        .registry
        .solver(name, &format!("(rtol: {tol:e}, atol: {tol:e})"))
}

/// "adaptive, rtol …, atol …": the schedule of an adaptive run, for a check's label.
pub(crate) fn schedule_text(solver: &dyn Solver) -> Option<String> {
    solver.adaptive().map(|a| a.to_string())
}

/// The NFE rows of an adaptive run `out` of `solver`: the report equals the count.
pub(crate) fn nfe_reported(
    report: &mut Report,
    plugin: &str,
    what: &str,
    solver: &dyn Solver,
    out: &SampleOutput,
) {
    let Some(rows) = &out.rows else {
        return report.error(
            plugin,
            format!("NFE per sample reported ({what})"),
            "an adaptive run returned no per-sample cost",
        );
    };
    let RowStats {
        nfe,
        accepted,
        rejected,
    } = rows;
    let max = nfe.iter().copied().max().unwrap_or(0);
    let sum: u64 = nfe.iter().sum();
    let per_attempt = solver.claims().nfe_per_step as u64;
    let start = solver.adaptive().map_or(0, |a| {
        if a.tolerances.first_step.is_some() {
            1
        } else {
            2
        }
    });
    let off: Vec<String> = (0..nfe.len())
        .filter(|&i| nfe[i] != start + per_attempt * u64::from(accepted[i] + rejected[i]))
        .take(3)
        .map(|i| {
            format!(
                "sample {i}: {} NFE for {} accepted + {} rejected",
                nfe[i], accepted[i], rejected[i]
            )
        })
        .collect();
    let ok = out.nfe == max && out.row_evals == sum && off.is_empty();
    let mean = sum as f64 / nfe.len().max(1) as f64;
    report.push(
        plugin,
        format!("NFE per sample reported = counted ({what})"),
        format!(
            "calls {} (max {max}), rows {} (sum {sum}), mean {mean:.1} per sample",
            out.nfe, out.row_evals
        ),
        format!("{start} + {per_attempt} per attempt"),
        "exact",
        ok,
        format!(
            "the run's per-sample NFE disagree with the model's count or with the claim: {}",
            if off.is_empty() {
                "the totals differ".to_string()
            } else {
                off.join("; ")
            }
        ),
    );
}

/// The global error at t_ε against the single Gaussian's exact flow falls in proportion to
/// rtol (f64 on the host; the RMS over [`SLOPE_STARTS`] starts, whose own steps differ, so
/// one start's lucky cancellation does not bend the curve; slope of log error on log rtol
/// within 0.2 of 1).
pub(crate) fn error_follows_rtol(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
    name: &str,
) {
    let (plugin, sde_name, sde) = (case.plugin, case.sde_name, case.sde);
    let check = format!(
        "global error ∝ rtol on {sde_name} (RMS vs the exact PF-ODE flow of a Gaussian from {SLOPE_STARTS} starts, f64, rtol = atol {:e}…{:e})",
        SLOPE_RTOLS[0],
        SLOPE_RTOLS[SLOPE_RTOLS.len() - 1]
    );
    let host = Target::default();
    let ks: Vec<f64> = (0..SLOPE_STARTS)
        .map(|i| -2.5 + 5.0 * (i as f64 + 0.5) / SLOPE_STARTS as f64)
        .collect();
    let errors = (|| -> Result<Vec<f64>> {
        let model = fixture.oracle(&single_gaussian(), &host, fixture.param.clone())?;
        SLOPE_RTOLS
            .iter()
            .map(|&tol| {
                let solver = with_tolerance(fixture, name, tol)?;
                let e = flow_errors(sde, &solver, model.clone(), None, &host, &ks)?;
                Ok((e.iter().map(|v| v * v).sum::<f64>() / e.len() as f64).sqrt())
            })
            .collect()
    })();
    let errors = match errors {
        Ok(e) => e,
        Err(e) => return report.error(plugin, check, e),
    };
    // The order fit on "steps" 1/rtol: error ∝ rtol^s is order s in 1/rtol.
    let inverse: Vec<usize> = SLOPE_RTOLS
        .iter()
        .map(|r| (1.0 / r).round() as usize)
        .collect();
    let slope = log_log_slope(&SLOPE_RTOLS, &errors);
    let tail = tail_order(&inverse, &errors);
    let curve: Vec<String> = SLOPE_RTOLS
        .iter()
        .zip(&errors)
        .map(|(r, e)| format!("{r:e}: {}", num(*e)))
        .collect();
    report.push(
        plugin,
        check,
        format!("slope {slope:.3}"),
        "1",
        "± 0.2 (least squares over every rtol)",
        (slope - 1.0).abs() <= 0.2,
        format!(
            "the error does not follow the tolerance (tail fit {}): errors by rtol {}",
            tail.map_or("—".into(), |t| format!("{t:.2}")),
            curve.join(", ")
        ),
    );
}

/// The least-squares slope of log y on log x.
fn log_log_slope(x: &[f64], y: &[f64]) -> f64 {
    let (lx, ly): (Vec<f64>, Vec<f64>) = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a.ln(), b.max(f64::MIN_POSITIVE).ln()))
        .unzip();
    let n = lx.len() as f64;
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let sxy: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = lx.iter().map(|a| (a - mx).powi(2)).sum();
    sxy / sxx
}

/// Finite samples, within the NFE budget, at every tolerance of [`FINITE_RTOLS`] (f64 on the
/// host, `ring`, prior starts).
pub(crate) fn finite_at_every_rtol(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
    name: &str,
) {
    let (plugin, sde_name, sde) = (case.plugin, case.sde_name, case.sde);
    let host = Target::default();
    let mut failures = Vec::new();
    let mut nfe = Vec::new();
    for tol in FINITE_RTOLS {
        let run = with_tolerance(fixture, name, tol).and_then(|solver| {
            fixture
                .pipeline(sde, &solver, &ring(), &host)?
                .build()?
                .sample(FINITE_ROWS)
        });
        match run {
            Ok(out) => nfe.push(format!("{tol:e}: {}", out.nfe)),
            Err(e) => failures.push(format!("rtol {tol:e}: {e}")),
        }
    }
    report.push(
        plugin,
        format!(
            "finite at rtol = atol {:e}…{:e} ({sde_name}, ring, f64)",
            FINITE_RTOLS[0],
            FINITE_RTOLS[FINITE_RTOLS.len() - 1]
        ),
        format!(
            "{}/{} (NFE of the slowest sample: {})",
            FINITE_RTOLS.len() - failures.len(),
            FINITE_RTOLS.len(),
            nfe.join(", ")
        ),
        format!("{}/{}", FINITE_RTOLS.len(), FINITE_RTOLS.len()),
        "all",
        failures.is_empty(),
        failures.join("; "),
    );
}

/// Sample i takes the same steps (accepted, rejected, NFE) and ends on the same bits in every
/// batch of [`BATCHES`] and on a rerun (f32 at the defaults, `ring`, prior starts).
pub(crate) fn same_steps_in_any_batch(
    report: &mut Report,
    fixture: &Fixture<'_>,
    case: Case<'_>,
) -> Result<()> {
    let (plugin, solver, sde_name, sde) = (case.plugin, case.solver, case.sde_name, case.sde);
    let on = Target::new(fixture.target.device.clone(), DType::F32);
    let model = fixture.oracle(&ring(), &on, fixture.param.clone())?;
    let p: Pipeline = pipeline(sde, model, solver, &on).build()?;
    type Run = (Vec<Vec<u32>>, Vec<(u64, u32, u32)>);
    let run = |n: usize| -> Result<Run> {
        let out = p.sample(n)?;
        let x = out.state.x.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        let bits = x
            .iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect();
        let rows = out.rows.unwrap_or_default();
        let steps = (0..rows.nfe.len())
            .map(|i| (rows.nfe[i], rows.accepted[i], rows.rejected[i]))
            .collect();
        Ok((bits, steps))
    };
    let big = *BATCHES.iter().max().unwrap_or(&1);
    let (bits, steps) = run(big)?;
    let mut mismatches = Vec::new();
    for n in BATCHES.iter().copied().filter(|n| *n != big) {
        let (b, s) = run(n)?;
        if b[..] != bits[..n] {
            mismatches.push(format!("batch {n}: bits"));
        }
        if s.len() != n || s[..] != steps[..n] {
            mismatches.push(format!("batch {n}: steps"));
        }
    }
    if run(big)? != (bits, steps.clone()) {
        mismatches.push("rerun".into());
    }
    let spread = steps
        .iter()
        .map(|s| s.1)
        .min()
        .zip(steps.iter().map(|s| s.1).max());
    report.push(
        plugin,
        format!("sample i: same steps and bits in batches {BATCHES:?} and on rerun ({sde_name}, f32)"),
        if mismatches.is_empty() {
            format!(
                "identical (accepted steps per sample {})",
                spread.map_or("—".into(), |(a, b)| format!("{a}…{b}"))
            )
        } else {
            format!("differs: {}", mismatches.join(", "))
        },
        "identical",
        "bitwise",
        mismatches.is_empty(),
        "a sample's steps depend on its batch-mates: error norms, step sizes and acceptance must be per row",
    );
    Ok(())
}
