//! `cargo xtask`: build automation for sdeflow, in Rust.
//!
//! - `cargo xtask conformance [--quick] [--kind K] [--plugin NAME] [--json PATH]`: runs every
//!   registered plugin through the contracts of its kind, prints the table, exits 1 on a
//!   failure.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

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
        #[arg(long)]
        quick: bool,
        /// Only plugins of this kind: sde, param, model, solver, weighting.
        #[arg(long)]
        kind: Option<String>,
        /// Only the plugin with this registered name.
        #[arg(long)]
        plugin: Option<String>,
        /// Also write every row as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
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
            kind,
            plugin,
            json,
        } => conformance::run(quick, kind, plugin, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
