//! # sdeflow-train
//!
//! What a training run steps with (its settings, the `train:` section, are the kernel's
//! [`TrainSpec`], re-exported here) (MATH.md §9, "Optimiser and EMA"), as the framework's own
//! code so that every piece of state can be checkpointed and a resumed run ends where an
//! uninterrupted one does (candle-nn's AdamW keeps its moments private):
//! - [`Params`]: the trainable variables of a model by name, in name order (every sum over
//!   them — the global gradient norm — has one order, so the same run gives the same bits);
//! - [`AdamW`]: Adam with bias correction and decoupled weight decay (Loshchilov & Hutter
//!   2019), its moments and step count exposed for checkpoints;
//! - [`clip_global_norm`]: gradients scaled by min(1, c/‖g‖₂) over all parameters together,
//!   a non-finite norm an error;
//! - [`Ema`]: exponential moving averages of the weights, with score_sde's, k-diffusion's and
//!   EDM's rate schedules;
//! - [`Trainer`]: one run's state and its step on the kernel's DSM loss;
//! - [`checkpoint`]: that state on disk, crash-safe, restored bit for bit;
//! - [`parallel`]: data parallelism, each rank a slice of every batch and their gradients
//!   summed through a [`parallel::Reduce`] (one process: the identity; threads; NCCL).
//!
//! On the CPU the optimizer, the clip and the averages update their tensors in place, one
//! pass each (`inplace`); elsewhere they are candle's ops.

pub mod checkpoint;
pub mod ema;
mod inplace;
pub mod optim;
pub mod parallel;
pub mod trainer;

pub use ema::Ema;
pub use optim::{AdamW, Params, clip_global_norm};
pub use sdeflow_kernel::train::{
    AdamWParams, CheckpointSpec, Decay, EmaRate, EvalSpec, LrSchedule, TrainSpec,
};
pub use trainer::{StepReport, Trainer};
