//! Shared helpers of sdeflow's whole-system tests (the tests live in `tests/tests/`).

use candle_core::{DType, Device};
use sdeflow_conformance::mixtures::ring;
use sdeflow_kernel::{ModelContext, Pipeline, PipelineBuilder, Registry, Result};

/// The registry with every built-in plugin.
pub fn registry() -> Result<&'static Registry> {
    sdeflow_plugins::registry()
}

/// A builder for VP + the `ring` oracle (read as the score it predicts) + `solver`, in f32 on the CPU.
pub fn ring_pipeline(solver: &str, steps: usize, seed: u64) -> Result<PipelineBuilder> {
    let r = registry()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F32);
    Ok(Pipeline::builder()
        .sde(r.sde("vp", "()")?)
        .model(r.model("gmm_oracle", &ring().oracle_params(), &ctx)?)
        .solver(r.solver(solver, "()")?)
        .steps(steps)
        .seed(seed))
}

/// The bytes of a sample tensor, for bitwise comparisons.
pub fn bits(x: &candle_core::Tensor) -> Result<Vec<u32>> {
    Ok(x.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

/// Runs the `sdeflow` command line in-process on `args` (without the program name); returns
/// (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = std::iter::once("sdeflow")
        .chain(args.iter().copied())
        .map(String::from);
    let code = sdeflow_cli::main_with(args, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}
