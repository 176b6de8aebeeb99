//! Relations between built-in solvers that no single plugin can test (a plugin must not
//! depend on another): DDPM and DDIM(η = 1) are the same sampler (MATH.md §5).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::{
    Target,
    mixtures::{ring, single_gaussian},
    solver::exact_weak_error,
};
use sdeflow_kernel::{GridKind, ModelContext, Pipeline, Result, State};

/// With the same seed (shared noise), `ddpm()` and `ddim(eta: 1.0)` give the same samples to
/// 1e-12 in f64, on every SDE and on two grids; and their laws on the single Gaussian,
/// propagated exactly, agree to 1e-12.
#[test]
fn ddpm_is_ddim_at_eta_one() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let spec = ring();
    let model = registry.model("gmm_oracle", &spec.oracle_params(), &ctx)?;
    let gauss = registry.model("gmm_oracle", &single_gaussian().oracle_params(), &ctx)?;
    let (ddpm, ddim) = (
        registry.solver("ddpm", "()")?,
        registry.solver("ddim", "(eta: 1.0)")?,
    );
    for sde_name in registry.sdes.names() {
        let sde = registry.sde(sde_name, "()")?;
        for grid in [GridKind::Uniform, GridKind::LogSnr] {
            let run = |solver| -> Result<Vec<f64>> {
                let x = Tensor::from_vec(
                    spec.mixture()?
                        .marginal(sde.coefs(sde.t_max()).alpha, sde.coefs(sde.t_max()).sigma)?
                        .sample(11, 0, 300),
                    (300, 2),
                    &Device::Cpu,
                )?;
                Ok(Pipeline::builder()
                    .sde(sde.clone())
                    .model(model.clone())
                    .solver(solver)
                    .steps(50)
                    .grid(grid)
                    .seed(9)
                    .dtype(DType::F64)
                    .build()?
                    .run(State::new(x, sde.t_max(), 0))?
                    .state
                    .x
                    .flatten_all()?
                    .to_vec1::<f64>()?)
            };
            let (a, b) = (run(ddpm.clone())?, run(ddim.clone())?);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                .fold(0.0, f64::max);
            assert!(
                worst <= 1e-12,
                "{sde_name}, {grid}: samples differ by {worst:e}"
            );
            for steps in [1, 10, 100] {
                let w = |s: &Arc<dyn sdeflow_kernel::Solver>| {
                    let cpu = Target::default();
                    exact_weak_error(&*sde, &**s, gauss.clone(), grid, steps, &cpu)
                };
                let (wa, wb) = (w(&ddpm)?, w(&ddim)?);
                assert!(
                    (wa - wb).abs() <= 1e-12 * (1.0 + wb),
                    "{sde_name}, {grid}, {steps} steps: weak errors {wa:e} vs {wb:e}"
                );
            }
        }
    }
    Ok(())
}
