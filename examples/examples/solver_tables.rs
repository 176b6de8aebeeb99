//! Sliced W2, paired error and weak error of every registered solver (and each registered
//! parameter variant) under VP, at a budget of 10, 20, 50, 100 and 1,000 model evaluations per
//! sample — the tables the solver issues' notes report. Run with
//! `cargo run --release -p sdeflow-examples --example solver_tables`.
//!
//! SW2: 20,000 samples from exact p_T samples against 20,000 exact samples of p_{t_ε}, with
//! the floor of exact sets beside it. Paired error: RMS distance, sample by sample from the
//! same 2,000 exact p_T starts, to a fixed-step RK4 reference with 2^13 λ-uniform steps, per
//! coordinate (deterministic solvers only; a stochastic solver follows another path by
//! design). Weak error: the closed-form W2 between the law after the run and the exact p_{t_ε}
//! of the single Gaussian N((1, −0.5), 0.3² I), propagated exactly through the solver's own
//! steps (affine solvers only), on the solver's default grid.

use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

use sdeflow_conformance::{
    Target,
    mixtures::{ring, single_gaussian},
    solver::exact_weak_error,
    sw2::{SAMPLES, reference_and_floor},
};
use sdeflow_kernel::{GridKind, ModelContext, Pipeline, Result, Solver, State};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUDGETS: [usize; 5] = [10, 20, 50, 100, 1000];
const PAIRED: usize = 2_000;

fn main() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let sde = registry.sde("vp", "()")?;
    let spec = ring();
    let mixture = spec.mixture()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let model = registry.model("gmm_oracle", &spec.oracle_params(), &ctx)?;
    let (ct, ce) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    let start = |n: usize| -> Result<Tensor> {
        let x = mixture.marginal(ct.alpha, ct.sigma)?.sample(3_000, 0, n);
        Ok(Tensor::from_vec(x, (n, 2), &Device::Cpu)?)
    };
    let (sw, floor) = reference_and_floor(&mixture.marginal(ce.alpha, ce.sigma)?, SAMPLES)?;
    let run = |solver: Arc<dyn Solver>,
               steps: usize,
               grid: Option<GridKind>,
               n: usize|
     -> Result<Vec<f64>> {
        let mut b = Pipeline::builder()
            .sde(sde.clone())
            .model(model.clone())
            .solver(solver)
            .steps(steps)
            .seed(42)
            .dtype(DType::F64);
        if let Some(g) = grid {
            b = b.grid(g);
        }
        Ok(b.build()?
            .run(State::new(start(n)?, sde.t_max(), 0))?
            .state
            .x
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    let reference = run(
        registry.solver("rk4", "()")?,
        1 << 13,
        Some(GridKind::LogSnr),
        PAIRED,
    )?;
    println!(
        "ring under vp; SW2 floor {:.4} ± {:.4} (pass ≤ {:.4})\n",
        floor.mean,
        floor.sd,
        floor.threshold()
    );
    println!(
        "| solver | grid | NFE budget | steps | SW2 | paired RMS vs RK4 | weak error (single Gaussian) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let gauss = registry.model("gmm_oracle", &single_gaussian().oracle_params(), &ctx)?;
    for p in registry.solvers.all() {
        let sets = std::iter::once("()").chain(p.info.variants.iter().copied());
        for params in sets {
            let label = if params == "()" {
                p.info.name.to_string()
            } else {
                format!("{}{params}", p.info.name)
            };
            let solver = registry.solver(p.info.name, params)?;
            if solver.adaptive().is_some() {
                // Its NFE follow its tolerances, not a budget (conformance measures it).
                println!("| {label} | adaptive: NFE set by rtol, atol | | | | | |");
                continue;
            }
            let claims = solver.claims();
            let grid = solver.default_discretization(&*sde).grid;
            for budget in BUDGETS {
                let steps = (budget / claims.nfe_per_step).max(1);
                let d = sw.distance(&run(solver.clone(), steps, None, SAMPLES)?)?;
                let paired = if claims.stochastic {
                    "—".to_string()
                } else {
                    let got = run(solver.clone(), steps, None, PAIRED)?;
                    let rms = (got
                        .iter()
                        .zip(&reference)
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f64>()
                        / got.len() as f64)
                        .sqrt();
                    format!("{rms:.3e}")
                };
                let weak = if claims.affine {
                    let e = exact_weak_error(
                        &*sde,
                        &*solver,
                        gauss.clone(),
                        grid,
                        steps,
                        &Target::default(),
                    )?;
                    format!("{e:.3e}")
                } else {
                    "—".to_string()
                };
                println!("| {label} | {grid} | {budget} | {steps} | {d:.4} | {paired} | {weak} |");
            }
        }
    }
    Ok(())
}
