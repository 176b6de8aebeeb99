//! Links every built-in plugin crate, so that a binary that names this crate
//! (`use sdeflow_plugins as _;` or [`link`]) sees them all in the registry.
//!
//! inventory registers nothing from a crate that is only a Cargo dependency: each crate must
//! be named somewhere in the final binary. This crate names them once; [`BUILT_IN`] lists
//! what they register, and a test checks the two agree.

use sdeflow_kernel::{Registry, Result};

// One line per built-in plugin crate.
use sdeflow_data_checkerboard as _;
use sdeflow_data_digits as _;
use sdeflow_data_gmm as _;
use sdeflow_data_idx as _;
use sdeflow_data_moons as _;
use sdeflow_data_npy as _;
use sdeflow_data_spirals as _;
use sdeflow_data_swiss_roll as _;
use sdeflow_param_edm as _;
use sdeflow_param_eps as _;
use sdeflow_param_flow as _;
use sdeflow_param_score as _;
use sdeflow_param_v as _;
use sdeflow_param_x0 as _;
use sdeflow_score_gmm_oracle as _;
use sdeflow_score_mlp as _;
use sdeflow_score_unet as _;
use sdeflow_sde_edm as _;
use sdeflow_sde_linear_flow as _;
use sdeflow_sde_sub_vp as _;
use sdeflow_sde_ve as _;
use sdeflow_sde_vp as _;
use sdeflow_sde_vp_cosine as _;
use sdeflow_sde_vp_discrete as _;
use sdeflow_solver_annealed_langevin as _;
use sdeflow_solver_bosh3 as _;
use sdeflow_solver_ddim as _;
use sdeflow_solver_ddpm as _;
use sdeflow_solver_deis as _;
use sdeflow_solver_dopri5 as _;
use sdeflow_solver_dpmpp_2m as _;
use sdeflow_solver_dpmpp_2m_sde as _;
use sdeflow_solver_dpmpp_2s as _;
use sdeflow_solver_dpmpp_3m as _;
use sdeflow_solver_edm as _;
use sdeflow_solver_euler as _;
use sdeflow_solver_euler_maruyama as _;
use sdeflow_solver_heun as _;
use sdeflow_solver_ipndm as _;
use sdeflow_solver_pc as _;
use sdeflow_solver_reverse_diffusion as _;
use sdeflow_solver_rk4 as _;
use sdeflow_solver_unipc as _;
use sdeflow_weighting_edm as _;
use sdeflow_weighting_likelihood as _;
use sdeflow_weighting_min_snr as _;
use sdeflow_weighting_simple as _;
use sdeflow_weighting_snr as _;

/// Every built-in plugin as (kind, registered name, crate).
pub const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        "solver",
        "annealed_langevin",
        "sdeflow-solver-annealed-langevin",
    ),
    ("solver", "edm", "sdeflow-solver-edm"),
    ("solver", "dpmpp_2m_sde", "sdeflow-solver-dpmpp-2m-sde"),
    ("solver", "ipndm", "sdeflow-solver-ipndm"),
    ("solver", "euler_ancestral", "sdeflow-solver-ddim"),
    ("solver", "deis", "sdeflow-solver-deis"),
    ("solver", "dpmpp_2s", "sdeflow-solver-dpmpp-2s"),
    ("solver", "dpmpp_3m", "sdeflow-solver-dpmpp-3m"),
    ("solver", "unipc", "sdeflow-solver-unipc"),
    ("data", "gmm", "sdeflow-data-gmm"),
    ("data", "digits", "sdeflow-data-digits"),
    ("data", "idx", "sdeflow-data-idx"),
    ("data", "npy", "sdeflow-data-npy"),
    ("data", "spirals", "sdeflow-data-spirals"),
    ("data", "checkerboard", "sdeflow-data-checkerboard"),
    ("data", "swiss_roll", "sdeflow-data-swiss-roll"),
    ("data", "moons", "sdeflow-data-moons"),
    ("param", "edm", "sdeflow-param-edm"),
    ("model", "gmm_oracle", "sdeflow-score-gmm-oracle"),
    ("model", "mlp", "sdeflow-score-mlp"),
    ("model", "unet", "sdeflow-score-unet"),
    ("param", "eps", "sdeflow-param-eps"),
    ("param", "flow", "sdeflow-param-flow"),
    ("param", "score", "sdeflow-param-score"),
    ("param", "v", "sdeflow-param-v"),
    ("param", "x0", "sdeflow-param-x0"),
    ("sde", "edm", "sdeflow-sde-edm"),
    ("sde", "linear_flow", "sdeflow-sde-linear-flow"),
    ("sde", "sub_vp", "sdeflow-sde-sub-vp"),
    ("sde", "ve", "sdeflow-sde-ve"),
    ("sde", "vp", "sdeflow-sde-vp"),
    ("sde", "vp_cosine", "sdeflow-sde-vp-cosine"),
    ("sde", "vp_discrete", "sdeflow-sde-vp-discrete"),
    ("solver", "ddim", "sdeflow-solver-ddim"),
    ("solver", "ddpm", "sdeflow-solver-ddpm"),
    ("solver", "dpmpp_2m", "sdeflow-solver-dpmpp-2m"),
    ("solver", "euler", "sdeflow-solver-euler"),
    ("solver", "euler_maruyama", "sdeflow-solver-euler-maruyama"),
    ("solver", "heun", "sdeflow-solver-heun"),
    ("solver", "pc", "sdeflow-solver-pc"),
    (
        "solver",
        "reverse_diffusion",
        "sdeflow-solver-reverse-diffusion",
    ),
    ("solver", "rk4", "sdeflow-solver-rk4"),
    ("solver", "dopri5", "sdeflow-solver-dopri5"),
    ("solver", "bosh3", "sdeflow-solver-bosh3"),
    ("weighting", "edm", "sdeflow-weighting-edm"),
    ("weighting", "likelihood", "sdeflow-weighting-likelihood"),
    ("weighting", "min_snr", "sdeflow-weighting-min-snr"),
    ("weighting", "simple", "sdeflow-weighting-simple"),
    ("weighting", "snr", "sdeflow-weighting-snr"),
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
