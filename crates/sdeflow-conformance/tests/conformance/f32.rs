//! The contracts as a device runs them, in f32 (`cargo xtask conformance --device cuda`),
//! here on the CPU: every parameterization and model, and the solvers whose orders f32
//! rounding pinches hardest (rk4, order 4) and a stochastic one (ddpm), in the quick pass.
//! Tolerances come from f32's epsilon; the truths compared against stay in f64 on the host.

use candle_core::{DType, Device};
use sdeflow_conformance::{Options, Target};
use sdeflow_kernel::Result;

fn pass(kind: &str, plugin: Option<&str>) -> Result<()> {
    super::quick_pass(
        kind,
        Options {
            plugin: plugin.map(Into::into),
            target: Target::new(Device::Cpu, DType::F32),
            ..Options::default()
        },
    )
}

#[test]
fn parameterizations_pass_in_f32() -> Result<()> {
    pass("param", None)
}

#[test]
fn models_pass_in_f32() -> Result<()> {
    pass("model", None)
}

#[test]
fn rk4_passes_in_f32() -> Result<()> {
    pass("solver", Some("rk4"))
}

#[test]
fn ddpm_passes_in_f32() -> Result<()> {
    pass("solver", Some("ddpm"))
}
