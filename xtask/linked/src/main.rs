//! The `cargo xtask` commands that run plugins, so link every plugin and candle:
//! `conformance` and `bench`. `cargo xtask` (package `xtask`, which only reads and writes
//! files) forwards them here through cargo; `cargo run -p xtask-linked -- conformance ...`
//! runs them directly.
//!
//! - `conformance [--quick|--full] [--kind K] [--plugin NAME] [--json PATH]
//!   [--device cpu|cuda|metal] [--dtype f32|f64] [--jobs N]`: runs every registered plugin
//!   through the contracts of its kind, N units side by side, prints the table, exits 1 on a
//!   failure.
//! - `bench [--batch N] [--threads N] [--repeats N] [--solver NAME]`: the framework's
//!   overhead beside the model for every solver, samples/s, and the solver's own time per
//!   step. `bench --train [--threads N]`: training steps/s of the mlp at batch 512 and
//!   4,096, on 1 and 2 threads. `bench [--train] --torch [--python P]`: the same beside
//!   PyTorch eager (xtask/torch/bench.py), with the ratios sdeflow ÷ PyTorch.
//! - `train-table [--seeds N] [--steps N]`: the default job's training in every
//!   parameterization, final SW2 and held-out loss over seeds. `train-table --objectives`:
//!   its model trained with DSM, ISM and SSM, the training time and the samples' SW2.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sdeflow_kernel::threads::on_workers;

mod bench;
mod conformance;
mod peers;
mod torch_bench;
mod train_bench;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "sdeflow's build automation: the commands that run plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every registered plugin through the contract tests of its kind.
    Conformance {
        /// The quick pass that `cargo test` runs (SW2 on `ring` only).
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// Everything (the default): SW2 and paired errors on `ring` and `mix8`, every
        /// SDE × parameterization.
        #[arg(long)]
        full: bool,
        /// Only plugins of this kind: sde, param, model, solver, weighting.
        #[arg(long)]
        kind: Option<String>,
        /// Only the plugin with this registered name.
        #[arg(long)]
        plugin: Option<String>,
        /// Also write every row as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where the tensor contracts run. A GPU needs a build with its feature:
        /// `cargo run --release -p xtask --features cuda -- conformance --device cuda`.
        #[arg(long, value_enum, default_value_t = conformance::DeviceArg::Cpu)]
        device: conformance::DeviceArg,
        /// The plugins' dtype there; default f64 on the CPU, f32 on a GPU (Metal has no f64).
        #[arg(long, value_enum)]
        dtype: Option<conformance::DtypeArg>,
        /// Workers running plugins (and each solver parameter set) side by side, each
        /// single-threaded; the table keeps the sequential order. Default: the CPU count.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Measure the framework's overhead beside the model, per solver (CPU, release build).
    Bench {
        /// Samples per run.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Threads for candle and the noise (RAYON_NUM_THREADS); default 1, and with
        /// `--train` both 1 and 2.
        #[arg(long)]
        threads: Option<usize>,
        /// Runs per timing: the overhead ratio is the median of as many pairs.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Only this solver (and its registered variants).
        #[arg(long)]
        solver: Option<String>,
        /// Training steps/s of the mlp at batch 512 and 4,096 instead.
        #[arg(long)]
        train: bool,
        /// Beside PyTorch eager instead (xtask/torch/bench.py): the mlp's sampling (Euler,
        /// 100 NFE, batch 10,000) or, with `--train`, its training steps, at 1 and 2 threads,
        /// with the ratios sdeflow ÷ PyTorch.
        #[arg(long)]
        torch: bool,
        /// `--torch`: the Python that has the pinned torch (`bash xtask/torch/setup.sh`).
        #[arg(long, default_value = "target/torch-venv/bin/python")]
        python: PathBuf,
    },
    /// Train the default job's network in every parameterization (its usual weighting; VP,
    /// and EDM's SDE for `edm`) over seeds; print final SW2 and held-out loss, mean ± sd.
    TrainTable {
        /// Instead: the default job's model trained with each objective (DSM, and
        /// configs/train-vp-ring-mlp-{ism,ssm}.ron as they stand), then sampled as each
        /// config says; training wall time beside DSM's, and SW2 against the floor.
        #[arg(long, conflicts_with = "steps")]
        objectives: bool,
        /// Seeds per parameterization.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Training steps (default: the default job's).
        #[arg(long)]
        steps: Option<u64>,
        /// Threads (RAYON_NUM_THREADS).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Where the runs write.
        #[arg(long, default_value = "target/train-table")]
        out: PathBuf,
    },
    /// sdeflow's few-step solvers beside diffusers' and k-diffusion's on an exact score
    /// (docs/peers.md): `export` writes the problem for `xtask/peers/peers.py`, `select` the
    /// peers' candidates for its `--rescore`, `table` runs
    /// sdeflow's rows, reads the peers' and prints the tables.
    Peers {
        /// `export`, `select` or `table`.
        #[arg(value_enum)]
        action: PeersAction,
        /// The exchange directory.
        #[arg(default_value = "target/peers")]
        dir: PathBuf,
        /// `table` without the peers' rows (no `peers.json` needed).
        #[arg(long)]
        only_sdeflow: bool,
        /// Rows per library in each table.
        #[arg(long, default_value_t = 8)]
        top: usize,
        /// `table`: only these sdeflow solvers (registered names, comma-separated; default
        /// every one), to rerun a few rows quickly.
        #[arg(long, value_delimiter = ',')]
        solvers: Vec<String>,
        /// Threads (RAYON_NUM_THREADS).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// What `peers` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PeersAction {
    /// Write the problem and the starts.
    Export,
    /// Choose the peers' best-SW2 candidates for the fresh sets (`DIR/rescore.json`).
    Select,
    /// Run sdeflow's rows and print the tables.
    Table,
}

fn main() -> ExitCode {
    // candle's elementwise ops on 64K elements or more run on its own thread pool, whose
    // workers spin 25,000 pauses (about a millisecond here) after each op before they park:
    // on the cores sdeflow's kernels (rayon) need next. A training step runs several such
    // ops (autograd's gradient sums), and at two threads the spinning cost a step at batch
    // 512 about 12% (`bench --train`). A short spin keeps back-to-back ops fast; a value the
    // user set is kept.
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: first thing in `main`, before any other thread exists (tracing, rayon and
        // candle start theirs later), so nothing reads the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000");
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The benches run on rayon's workers, as the `sdeflow` binary's commands do.
    sdeflow_kernel::threads::build_global_pool();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Conformance {
            quick,
            full: _,
            kind,
            plugin,
            json,
            device,
            dtype,
            jobs,
        } => conformance::run(quick, kind, plugin, json, device, dtype, jobs),
        Command::Bench {
            threads,
            repeats,
            train,
            torch: true,
            python,
            ..
        } => on_workers(|| torch_bench::run(train, threads, repeats, &python)),
        Command::Bench {
            threads,
            repeats,
            train: true,
            ..
        } => on_workers(|| train_bench::run(threads, repeats)),
        Command::Bench {
            batch,
            threads,
            repeats,
            solver,
            train: false,
            ..
        } => on_workers(|| {
            bench::run(bench::BenchArgs {
                batch,
                threads: threads.unwrap_or(1),
                repeats,
                solver,
            })
        }),
        Command::TrainTable {
            objectives: true,
            seeds,
            threads,
            out,
            ..
        } => on_workers(|| train_bench::objectives(seeds, threads, out)),
        Command::TrainTable {
            seeds,
            steps,
            threads,
            out,
            ..
        } => on_workers(|| train_bench::table(seeds, steps, threads, out)),
        Command::Peers {
            action,
            dir,
            only_sdeflow,
            top,
            solvers,
            threads,
        } => {
            // Set before any pool exists; an error means one does, and it is used instead.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global();
            match action {
                PeersAction::Export => peers::export(&dir),
                PeersAction::Select => peers::select(&dir),
                PeersAction::Table => peers::table(&dir, only_sdeflow, top, &solvers),
            }
            .map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
