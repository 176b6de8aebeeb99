//! Adaptive solvers end to end on the oracle: the PF-ODE's encoding decoded back, and the
//! clear errors of a run that cannot meet its tolerances.

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::mixtures::ring;
use sdeflow_kernel::{ModelContext, Pipeline, Result, State, likelihood::Trace};

/// `dopri5` on the ring oracle under VP.
fn pipeline(params: &str, dtype: DType) -> Result<Pipeline> {
    let r = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, dtype);
    Pipeline::builder()
        .sde(r.sde("vp", "()")?)
        .model(r.model("gmm_oracle", &ring().oracle_params(), &ctx)?)
        .solver(r.solver("dopri5", params)?)
        .dtype(dtype)
        .build()
}

/// Encode x₀ → x_T through the PF-ODE (an nll run's latents) and decode x_T → x₀ with the
/// same adaptive solver (f64, rtol 1e-8): the rows come back within 1e-4. Each direction
/// chooses its own steps per sample.
#[test]
fn encode_then_decode_returns_the_rows() -> Result<()> {
    let p = pipeline("(rtol: 1e-8, atol: 1e-8)", DType::F64)?;
    let law = ring().mixture()?;
    let c = p.sde().coefs(p.sde().t_eps());
    let n = 64;
    let rows = law.marginal(c.alpha, c.sigma)?.sample(11, 0, n);
    let x = Tensor::from_vec(rows.clone(), (n, 2), &Device::Cpu)?;
    let encoded = p.log_likelihood(&x, 0, Trace::Exact)?;
    let decoded = p.run(State::new(encoded.latent.clone(), p.sde().t_max(), 0))?;
    let back = decoded.state.x.flatten_all()?.to_vec1::<f64>()?;
    let worst = back
        .iter()
        .zip(&rows)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let nfe = |r: &Option<sdeflow_kernel::RowStats>| {
        r.as_ref()
            .map_or(0.0, |r| r.nfe.iter().sum::<u64>() as f64 / n as f64)
    };
    println!(
        "dopri5 rtol 1e-8: encode {:.0} NFE/sample, decode {:.0}; max |x − x̂| = {worst:.2e}",
        nfe(&encoded.rows),
        nfe(&decoded.rows)
    );
    assert!(worst <= 1e-4, "{worst}");
    Ok(())
}

/// A run that cannot meet its tolerances stops with an error naming the sample, t and what
/// to change: the NFE budget, a step below `min_step`, and an rtol below the dtype's
/// precision.
#[test]
fn an_adaptive_run_that_cannot_finish_says_why() -> Result<()> {
    let err = |params: &str, dtype: DType| -> String {
        pipeline(params, dtype)
            .and_then(|p| p.sample(4))
            .map(|_| ())
            .expect_err(params)
            .to_string()
    };
    let budget = err("(rtol: 1e-10, atol: 1e-10, max_nfe: 40)", DType::F64);
    assert!(
        budget.contains("sample 0 used its budget of 40 NFE at t = ")
            && budget.contains("raise max_nfe"),
        "{budget}"
    );
    let stalled = err("(rtol: 1e-9, atol: 1e-9, min_step: 0.5)", DType::F64);
    assert!(
        stalled.contains("stalled at t = ") && stalled.contains("below 5e-1"),
        "{stalled}"
    );
    let f32 = err("(rtol: 1e-8, atol: 1e-8)", DType::F32);
    assert!(
        f32.contains("invalid `rtol`: 1e-8 is below what F32 resolves"),
        "{f32}"
    );
    Ok(())
}
