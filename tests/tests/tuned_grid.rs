//! Tuned grids (kernel `tune`): on the exact score of `ring`, the grid the search chooses for
//! a solver and a step count beats every plain grid on draws it never saw, and a tuned grid
//! is refused where it has no meaning.

use candle_core::{DType, Tensor};
use sdeflow_kernel::{GridKind, Result, ops::host_f64};
use sdeflow_tests::ring_pipeline;

/// RMS per coordinate between two sample sets.
fn rmse(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (host_f64(a)?, host_f64(b)?);
    let s: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    Ok((s / a.len() as f64).sqrt())
}

#[test]
fn tuned_grid_beats_plain_grids_on_fresh_draws() -> Result<()> {
    let steps = 8;
    let tuned = ring_pipeline("dpmpp_2m", steps, 0)?
        .dtype(DType::F64)
        .grid(GridKind::Tuned { rows: 128 })
        .build()?;
    let tuning = tuned
        .tuning()
        .expect("a tuned pipeline reports its search")
        .clone();
    eprintln!("{tuning:?}");
    assert!(tuning.rmse <= tuning.start_rmse);
    assert_eq!(tuned.times(), tuning.times.as_slice());
    // Scored on the run's own draws (seed 0, rows 0..512), which calibration never saw.
    let start = tuned.prior_state(0, 512)?;
    let reference = ring_pipeline("rk4", 1024, 0)?
        .dtype(DType::F64)
        .grid(GridKind::LogSnr)
        .build()?
        .run(start.clone())?
        .state
        .x;
    let err = |p: &sdeflow_kernel::Pipeline| -> Result<f64> {
        rmse(&p.run(start.clone())?.state.x, &reference)
    };
    let tuned_err = err(&tuned)?;
    for grid in [
        GridKind::LogSnr,
        GridKind::Karras { rho: 7.0 },
        GridKind::Uniform,
    ] {
        let plain = ring_pipeline("dpmpp_2m", steps, 0)?
            .dtype(DType::F64)
            .grid(grid)
            .build()?;
        let e = err(&plain)?;
        eprintln!("{grid}: {e:.3e} vs tuned {tuned_err:.3e}");
        assert!(tuned_err < e, "{grid}: {e:.3e} vs tuned {tuned_err:.3e}");
    }
    Ok(())
}

#[test]
fn tuned_grid_is_refused_for_stochastic_solvers() -> Result<()> {
    let err = ring_pipeline("euler_maruyama", 8, 0)?
        .grid(GridKind::Tuned { rows: 16 })
        .build()
        .expect_err("a stochastic solver has no PF-ODE endpoint to fit");
    let msg = err.to_string();
    assert!(
        msg.contains("tuned") && msg.contains("stochastic") && msg.contains("log_snr"),
        "{msg}"
    );
    Ok(())
}
