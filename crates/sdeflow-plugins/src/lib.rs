//! Links every built-in plugin crate, so that a binary that names this crate
//! (`use sdeflow_plugins as _;` or [`link`]) sees them all in the registry.
//!
//! inventory registers nothing from a crate that is only a Cargo dependency: each crate must
//! be named somewhere in the final binary. This crate names them once; [`BUILT_IN`] lists
//! what they register, and a test checks the two agree.

use sdeflow_kernel::{Registry, Result};

// One line per built-in plugin crate.
use sdeflow_param_eps as _;
use sdeflow_score_gmm_oracle as _;
use sdeflow_sde_vp as _;
use sdeflow_solver_euler_maruyama as _;
use sdeflow_weighting_simple as _;

/// Every built-in plugin as (kind, registered name, crate).
pub const BUILT_IN: &[(&str, &str, &str)] = &[
    ("model", "gmm_oracle", "sdeflow-score-gmm-oracle"),
    ("param", "eps", "sdeflow-param-eps"),
    ("sde", "vp", "sdeflow-sde-vp"),
    ("solver", "euler_maruyama", "sdeflow-solver-euler-maruyama"),
    ("weighting", "simple", "sdeflow-weighting-simple"),
];

/// The registry with every built-in plugin linked in.
pub fn registry() -> Result<&'static Registry> {
    link();
    Registry::global()
}

/// Forces the built-in plugin crates into the binary. Call it (or name this crate) once.
#[inline(never)]
pub fn link() {
    std::hint::black_box(BUILT_IN);
}
