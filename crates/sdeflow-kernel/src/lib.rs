//! # sdeflow-kernel
//!
//! The vocabulary and the loop of sdeflow, a framework for score-based diffusion models seen
//! as SDEs (Song et al. 2021), built on candle. The kernel owns five object-safe traits —
//! [`ForwardSde`], [`Parameterization`], [`ScoreModel`], [`Solver`], [`Weighting`] — and the
//! parts they share: [`TimeCoefs`] computed once per evaluation time, the [`State`] a solver
//! threads, time grids, the counter-based [noise source](noise), the [`Denoiser`] that reads
//! a model's output as ε̂, x̂₀ or ŝ, the [`Pipeline`] and the plugin [registry].
//!
//! Every implementation is a plugin crate registered with a `register_*!` macro; a binary
//! sees a plugin only if it names its crate (`use sdeflow_plugins as _;`).
//!
//! ```
//! use sdeflow_kernel::TimeCoefs;
//! let c = TimeCoefs { t: 0.5, alpha: 0.8, sigma: 0.6, f: -1.0, g2: 2.0, lambda: (0.8f64 / 0.6).ln() };
//! assert!((c.sigma_tilde() - 0.75).abs() < 1e-15);
//! ```

pub mod adaptive;
pub mod coefs;
pub mod config;
pub mod data;
pub mod de;
pub mod denoiser;
pub mod error;
pub mod grid;
pub mod io;
pub mod likelihood;
pub mod loss;
pub mod mixture;
pub mod model;
pub mod noise;
pub mod ops;
pub mod param;
pub mod pipeline;
pub mod registry;
pub mod resources;
pub mod rk;
pub mod schedule;
pub mod sde;
pub mod solver;
pub mod state;
pub mod testing;
pub mod threads;
pub mod train;
pub mod tune;
pub mod weighting;

pub use adaptive::{Adaptive, AdaptiveParams, Controller, RowStats, Tolerances};
pub use coefs::{PerRow, Rows, Time, TimeCoefs, Transition};
pub use config::{Config, DeviceSpec};
pub use data::{Data, DataSource, Split};
pub use de::{Entry, SolverRef};
pub use denoiser::{Denoiser, Prediction};
pub use error::{Error, Result};
pub use grid::GridKind;
pub use loss::{Draws, Dsm, Objective};
pub use model::{At, ModelContext, ParamEntry, Retarget, ScoreModel, null_label};
pub use param::{Conversions, Lin, Parameterization, TargetLin, convert};
pub use pipeline::{Pipeline, PipelineBuilder, SampleOutput};
pub use registry::{KINDS, Registry};
pub use sde::ForwardSde;
pub use solver::{
    Discretization, Equation, Order, RunContext, Solver, SolverClaims, Step, StepContext, StepSpan,
    corrector_snr,
};
pub use state::{COND, HistoryEntry, State, previous_evaluations};
pub use train::TrainSpec;
pub use weighting::Weighting;

// Re-exported for the `register_*!` macros, so plugins need not name these crates.
#[doc(hidden)]
pub use erased_serde;
#[doc(hidden)]
pub use inventory;
#[doc(hidden)]
pub use serde;
