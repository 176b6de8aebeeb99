//! `cargo xtask`: build automation for sdeflow, in Rust. This package reads and writes files
//! only, so it links neither the plugins nor candle; `conformance` and `bench` run plugins and
//! live in `xtask/linked` (package `xtask-linked`), which it runs through cargo in the same
//! profile, forwarding its `cuda` and `metal` features.
//!
//! - `cargo xtask conformance [--quick|--full] [--kind K] [--plugin NAME] [--json PATH]
//!   [--device cpu|cuda|metal] [--dtype f32|f64] [--jobs N]`: runs every registered plugin
//!   through the contracts of its kind, N units side by side, prints the table, exits 1 on a
//!   failure.
//! - `cargo xtask bench [--train] [--batch N] [--threads N] [--repeats N] [--solver NAME]`: the framework's overhead
//!   beside the model for every solver, samples/s, and the solver's own time per step.
//! - `cargo xtask tidy`: the plugin rules ([`xtask::tidy`]); exits 1 naming each violation.
//! - `cargo xtask new-plugin KIND NAME`: a working plugin crate in the house shape, linked.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sdeflow's build automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every registered plugin through the contract tests of its kind (in xtask-linked;
    /// `cargo xtask conformance --help` for its options).
    #[command(disable_help_flag = true)]
    Conformance {
        /// Passed on to `xtask-linked conformance`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Measure the framework's overhead beside the model, per solver (in xtask-linked;
    /// `cargo xtask bench --help` for its options).
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed on to `xtask-linked bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Train the default job's network in every parameterization over seeds and print the
    /// table of final sliced W2 and held-out loss (in xtask-linked; `--help` for options).
    #[command(disable_help_flag = true)]
    TrainTable {
        /// Passed on to `xtask-linked train-table`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// sdeflow's few-step solvers beside diffusers' and k-diffusion's on an exact score: the
    /// problem's export and the table (in xtask-linked; `xtask/peers/run.sh` runs it all).
    #[command(disable_help_flag = true)]
    Peers {
        /// Passed on to `xtask-linked peers`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Conformance { args } => linked("conformance", &args),
        Command::Tidy => tidy(),
        Command::NewPlugin { kind, name } => new_plugin(&kind, &name),
        Command::Bench { args } => linked("bench", &args),
        Command::TrainTable { args } => linked("train-table", &args),
        Command::Peers { args } => linked("peers", &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `command` of `xtask-linked` with `args` through cargo, in this build's profile and
/// with its device features, and returns its exit code.
fn linked(command: &str, args: &[String]) -> Result<ExitCode, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["run", "--quiet", "--package", "xtask-linked"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    for (on, feature) in [
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "metal"), "metal"),
    ] {
        if on {
            cmd.args(["--features", feature]);
        }
    }
    let status = cmd
        .arg("--")
        .arg(command)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo for xtask-linked: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Runs the tidy rules on this workspace's files.
fn tidy() -> Result<ExitCode, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registrations = xtask::tidy::registrations(&root);
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
fn new_plugin(kind: &str, name: &str) -> Result<ExitCode, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let created = xtask::scaffold::new_plugin(&root, kind, name).map_err(|e| e.to_string())?;
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
