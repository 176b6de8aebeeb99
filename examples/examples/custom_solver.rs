//! A solver written outside `plugins/`: the explicit midpoint method on the probability-flow
//! ODE, registered from this file, run through a RON pipeline, then through the solver
//! contracts (the quick conformance pass). Run it with
//! `cargo run --release -p sdeflow-examples --example custom_solver`.

use candle_core::Device;
use sdeflow_conformance::{Mode, Options};
use sdeflow_kernel::{
    Config, Equation, ForwardSde, GridKind, Order, Result, Schedule, Solver, SolverClaims, State,
    Step, StepContext, register_solver,
    rk::{ButcherTableau, rk_step},
};
use serde::{Deserialize, Serialize};

/// The explicit midpoint rule: k₁ = F(x, t), k₂ = F(x + (h/2) k₁, t + h/2), x + h k₂.
const MIDPOINT: ButcherTableau = ButcherTableau {
    name: "midpoint",
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
    c: &[0.0, 0.5],
    order: 2,
};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

#[derive(Debug)]
struct Midpoint;

impl Solver for Midpoint {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 2,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: Some(GridKind::Uniform),
        }
    }
    fn default_schedule(&self, sde: &dyn ForwardSde) -> Schedule {
        Schedule {
            steps: 250,
            grid: sde.default_grid(),
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        Ok(Step::to(state.with_x(rk_step(&MIDPOINT, ctx, &state.x)?)))
    }
}

register_solver!(
    "midpoint",
    "explicit midpoint on the PF-ODE: order 2, 2 NFE per step",
    Params,
    |_: Params| {
        MIDPOINT.validate()?;
        Ok(Midpoint)
    }
);

const CONFIG: &str = "(sde: vp(), param: eps(), solver: midpoint(), samples: 2000, dtype: f64,
    model: gmm_oracle(weights: [0.5, 0.5], means: [[-2.0, 0.0], [2.0, 0.0]],
                      covariances: [isotropic(0.3), isotropic(0.3)]))";

fn main() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let config = Config::parse("custom.ron", CONFIG, registry, &|_| Ok(Device::Cpu))?;
    let out = config.pipeline(Device::Cpu)?.sample(config.samples)?;
    let (mean, _) = sdeflow_examples::moments(&out.state.x)?;
    println!(
        "midpoint: {} NFE, sample mean {mean:.3?} (exact [0, 0])\n",
        out.nfe
    );
    let opts = Options {
        mode: Mode::Quick,
        kind: Some("solver".into()),
        plugin: Some("midpoint".into()),
    };
    let report = sdeflow_conformance::run(registry, &opts);
    println!("{report}");
    if !report.all_passed() {
        return Err(sdeflow_kernel::Error::Msg(
            "midpoint fails a contract".into(),
        ));
    }
    Ok(())
}
