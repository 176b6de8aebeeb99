//! The quick conformance pass over every built-in plugin, as `cargo test` runs it: one test
//! per kind and one per built-in solver, so that the test harness runs them side by side, and
//! one for every registered solver not named here, so that a new solver is tested the moment
//! it is registered. Together they are the quick pass exactly once: the pass policy is that of
//! the whole selection whichever part a test runs ([`Part`]), and the SW2 floors and RK4
//! references they share are computed once per process.

use sdeflow_conformance::{Options, Part};
use sdeflow_kernel::Result;

/// The built-in solvers, each with its own test below.
const SOLVERS: [&str; 20] = [
    "annealed_langevin",
    "bosh3",
    "ddim",
    "ddpm",
    "deis",
    "dopri5",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_2s",
    "dpmpp_3m",
    "edm",
    "euler",
    "euler_ancestral",
    "euler_maruyama",
    "heun",
    "ipndm",
    "pc",
    "reverse_diffusion",
    "rk4",
    "unipc",
];

fn quick(kind: &str, part: Part) -> Result<()> {
    super::quick_pass(
        kind,
        Options {
            part,
            ..Options::default()
        },
    )
}

fn solver(name: &str) -> Result<()> {
    quick("solver", Part::Only(vec![name.into()]))
}

#[test]
fn data_sources_pass_quick_conformance() -> Result<()> {
    quick("data", Part::Whole)
}

#[test]
fn sdes_pass_quick_conformance() -> Result<()> {
    quick("sde", Part::Whole)
}

#[test]
fn parameterizations_pass_quick_conformance() -> Result<()> {
    quick("param", Part::Whole)
}

#[test]
fn weightings_pass_quick_conformance() -> Result<()> {
    quick("weighting", Part::Whole)
}

#[test]
fn models_pass_quick_conformance() -> Result<()> {
    quick("model", Part::Whole)
}

#[test]
fn annealed_langevin_passes_quick_conformance() -> Result<()> {
    solver("annealed_langevin")
}

#[test]
fn bosh3_passes_quick_conformance() -> Result<()> {
    solver("bosh3")
}

#[test]
fn dopri5_passes_quick_conformance() -> Result<()> {
    solver("dopri5")
}

#[test]
fn ddim_passes_quick_conformance() -> Result<()> {
    solver("ddim")
}

#[test]
fn ddpm_passes_quick_conformance() -> Result<()> {
    solver("ddpm")
}

#[test]
fn dpmpp_2m_passes_quick_conformance() -> Result<()> {
    solver("dpmpp_2m")
}

#[test]
fn euler_passes_quick_conformance() -> Result<()> {
    solver("euler")
}

#[test]
fn euler_maruyama_passes_quick_conformance() -> Result<()> {
    solver("euler_maruyama")
}

#[test]
fn heun_passes_quick_conformance() -> Result<()> {
    solver("heun")
}

#[test]
fn pc_passes_quick_conformance() -> Result<()> {
    solver("pc")
}

#[test]
fn reverse_diffusion_passes_quick_conformance() -> Result<()> {
    solver("reverse_diffusion")
}

#[test]
fn rk4_passes_quick_conformance() -> Result<()> {
    solver("rk4")
}

#[test]
fn deis_passes_quick_conformance() -> Result<()> {
    solver("deis")
}

#[test]
fn dpmpp_2m_sde_passes_quick_conformance() -> Result<()> {
    solver("dpmpp_2m_sde")
}

#[test]
fn dpmpp_2s_passes_quick_conformance() -> Result<()> {
    solver("dpmpp_2s")
}

#[test]
fn dpmpp_3m_passes_quick_conformance() -> Result<()> {
    solver("dpmpp_3m")
}

#[test]
fn edm_passes_quick_conformance() -> Result<()> {
    solver("edm")
}

#[test]
fn euler_ancestral_passes_quick_conformance() -> Result<()> {
    solver("euler_ancestral")
}

#[test]
fn ipndm_passes_quick_conformance() -> Result<()> {
    solver("ipndm")
}

#[test]
fn unipc_passes_quick_conformance() -> Result<()> {
    solver("unipc")
}

/// Every registered solver without a test of its own above; and every name above registered.
#[test]
fn other_solvers_pass_quick_conformance() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let names = registry.solvers.names();
    let missing: Vec<&str> = SOLVERS
        .iter()
        .copied()
        .filter(|s| !names.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "solvers with a quick test but not registered: {missing:?}"
    );
    if names.iter().all(|n| SOLVERS.contains(n)) {
        return Ok(());
    }
    quick(
        "solver",
        Part::Except(SOLVERS.iter().map(|s| s.to_string()).collect()),
    )
}
