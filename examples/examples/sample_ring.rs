//! Sample the `ring` mixture with Euler–Maruyama on the VP SDE, reading the exact score from
//! the Gaussian-mixture oracle, and compare with the exact law.

use candle_core::{DType, Device};
use sdeflow_conformance::{mixtures::ring, sw2::reference_and_floor};
use sdeflow_kernel::{ModelContext, Pipeline, Result};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let sde = registry.sde("vp", "()")?;
    let spec = ring();
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .model(registry.model("gmm_oracle", &spec.oracle_params(), &ctx)?)
        .solver(registry.solver("euler_maruyama", "()")?)
        .dtype(DType::F64)
        .seed(0)
        .build()?;
    let start = std::time::Instant::now();
    let out = pipeline.sample(20_000)?;
    let secs = start.elapsed().as_secs_f64();

    let c = sde.coefs(sde.t_eps());
    let exact = spec.mixture()?.marginal(c.alpha, c.sigma)?;
    let (sw, floor) = reference_and_floor(&exact, 20_000)?;
    let d = sw.distance(&out.state.x.flatten_all()?.to_vec1::<f64>()?)?;
    let (mean, cov) = sdeflow_examples::moments(&out.state.x)?;
    println!(
        "{} steps, {} NFE, {secs:.2} s",
        pipeline.discretization().steps,
        out.nfe
    );
    println!(
        "sample mean {mean:.4?} (exact {:.4?})",
        spec.mixture()?.mean()
    );
    println!(
        "sample covariance {cov:.4?}\n(exact p_0 {:.4?})",
        spec.mixture()?.covariance()
    );
    println!(
        "sliced W2 {d:.4} (exact-sample floor {:.4} ± {:.4})",
        floor.mean, floor.sd
    );
    Ok(())
}
