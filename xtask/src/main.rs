//! `cargo xtask`: build automation for sdeflow, in Rust.
//!
//! - `cargo xtask conformance [--quick|--full] [--kind K] [--plugin NAME] [--json PATH]
//!   [--device cpu|cuda|metal] [--dtype f32|f64] [--jobs N]`: runs every registered plugin
//!   through the contracts of its kind, N units side by side, prints the table, exits 1 on a
//!   failure.
//! - `cargo xtask bench [--batch N] [--threads N] [--repeats N] [--solver NAME]`: the framework's overhead
//!   beside the model for every solver, samples/s, and the solver's own time per step.
//! - `cargo xtask tidy`: the plugin rules ([`xtask::tidy`]); exits 1 naming each violation.
//! - `cargo xtask new-plugin KIND NAME`: a working plugin crate in the house shape, linked.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod bench;
mod conformance;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sdeflow's build automation")]
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
    /// Create plugins/sdeflow-KIND-NAME: a working plugin in the house shape, linked.
    NewPlugin {
        /// sde, param, model, solver or weighting.
        kind: String,
        /// The registered name, snake_case.
        name: String,
    },
    /// Check the plugin rules: names, linking, doc headings, no own noise, no plugin deps.
    Tidy,
    /// Measure the framework's overhead beside the model, per solver (CPU, release build).
    Bench {
        /// Samples per run.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Threads for candle and the noise (RAYON_NUM_THREADS).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Runs per timing: the overhead ratio is the median of as many pairs.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Only this solver (and its registered variants).
        #[arg(long)]
        solver: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Tidy => tidy(),
        Command::NewPlugin { kind, name } => new_plugin(&kind, &name),
        Command::Bench {
            batch,
            threads,
            repeats,
            solver,
        } => bench::run(bench::BenchArgs {
            batch,
            threads,
            repeats,
            solver,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the tidy rules on this workspace and the registry.
fn tidy() -> sdeflow_kernel::Result<ExitCode> {
    let registry = sdeflow_plugins::registry()?;
    let registrations: Vec<xtask::tidy::Registration> = registry
        .infos()
        .into_iter()
        .map(|(kind, info)| xtask::tidy::Registration {
            kind: kind.to_string(),
            name: info.name.to_string(),
            crate_name: info.crate_name.to_string(),
        })
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let violations = xtask::tidy::check(&root, &registrations);
    for v in &violations {
        println!("{v}");
    }
    if violations.is_empty() {
        println!(
            "tidy: {} registrations, every rule holds",
            registrations.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("tidy: {} violations", violations.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Scaffolds a plugin and says what to do next.
fn new_plugin(kind: &str, name: &str) -> sdeflow_kernel::Result<ExitCode> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let created = xtask::scaffold::new_plugin(&root, kind, name)
        .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?;
    // Best effort: the templates are formatted already; rustfmt settles the substituted names.
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args(
            created
                .files
                .iter()
                .filter(|f| f.ends_with(".rs"))
                .map(|f| root.join(f)),
        )
        .status();
    for f in &created.files {
        println!("wrote {f}");
    }
    let kind_flag = if kind == "model" { "model" } else { kind };
    println!(
        "\nnext: cargo test -p {krate}\n      cargo xtask conformance --kind {kind_flag} --plugin {name}\n      cargo xtask tidy",
        krate = created.crate_name
    );
    Ok(ExitCode::SUCCESS)
}
