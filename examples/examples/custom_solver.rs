//! A solver written outside `plugins/`: Ralston's second-order method on the probability-flow
//! ODE, registered from this file, run through a RON pipeline, then through the solver
//! contracts (the quick conformance pass). Run it with
//! `cargo run --release -p sdeflow-examples --example custom_solver`.

use candle_core::Device;
use sdeflow_conformance::{Mode, Options};
use sdeflow_kernel::{
    Config, Result, register_solver,
    rk::{ButcherTableau, RkSolver},
};
use serde::{Deserialize, Serialize};

/// Ralston's method, the second-order two-stage rule of least error bound:
/// k₁ = F(x, t), k₂ = F(x + (2h/3) k₁, t + 2h/3), x + h (k₁/4 + 3k₂/4). Its order and NFE
/// per step are read off the tableau by [`RkSolver`].
const RALSTON: ButcherTableau = ButcherTableau {
    name: "ralston",
    a: &[&[], &[2.0 / 3.0]],
    b: &[0.25, 0.75],
    c: &[0.0, 2.0 / 3.0],
    order: 2,
    embedded: None,
};

/// Ralston's method has no parameters.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

register_solver!(
    "ralston",
    "Ralston's method on the PF-ODE: order 2, 2 NFE per step",
    Params,
    |_: Params| RkSolver::new(&RALSTON, 250)
);

const CONFIG: &str = "(sde: vp(), solver: ralston(), samples: 2000, dtype: f64,
    model: gmm_oracle(weights: [0.5, 0.5], means: [[-2.0, 0.0], [2.0, 0.0]],
                      covariances: [isotropic(0.3), isotropic(0.3)]))";

fn main() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let config = Config::parse("custom.ron", CONFIG, registry, &|_| Ok(Device::Cpu))?;
    let out = config.pipeline(Device::Cpu)?.sample(config.samples)?;
    let (mean, _) = sdeflow_examples::moments(&out.state.x)?;
    println!(
        "ralston: {} NFE, sample mean {mean:.3?} (exact [0, 0])\n",
        out.nfe
    );
    let opts = Options {
        mode: Mode::Quick,
        kind: Some("solver".into()),
        plugin: Some("ralston".into()),
        ..Options::default()
    };
    let report = sdeflow_conformance::run(registry, &opts);
    println!("{report}");
    if !report.all_passed() {
        return Err(sdeflow_kernel::Error::Msg(
            "ralston fails a contract".into(),
        ));
    }
    Ok(())
}
