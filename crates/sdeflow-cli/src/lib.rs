//! # sdeflow-cli
//!
//! The host binary `sdeflow`: it composes a pipeline from a RON file (or the embedded
//! `configs/default.ron`) and runs it on candle's CPU, CUDA or Metal device.
//!
//! `list` · `describe KIND/NAME` · `check [FILE]` · `sample [FILE]` · `train [FILE]` ·
//! `nll [FILE]` · `run [FILE]` · `merge [FILE]` (`sample` and `nll` take `--shard i/n`), with
//! `--device cpu|cuda:N|metal:N`. User errors (a bad config, an unknown plugin, a device
//! whose feature is off) print one message naming the fix and exit 2; they never panic.
//!
//! Everything runs through [`main_with`], so tests drive the command line in-process.

pub mod advice;
pub mod device;
pub mod images;
pub mod nll;
pub mod plan;
pub mod plot;
pub mod sample;
pub mod shard;
pub mod train;

use std::{io::Write, path::PathBuf};

use clap::{Parser, Subcommand};
use sdeflow_kernel::{Config, DeviceSpec, Error, Registry, Result, config::Job};

/// The default config, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.ron");
/// How messages name the embedded config.
pub const DEFAULT_CONFIG_NAME: &str = "configs/default.ron";

#[derive(Debug, Parser)]
#[command(
    name = "sdeflow",
    version,
    about = "Score-based diffusion as SDEs: compose, check and run pipelines"
)]
struct Cli {
    /// Run on this device (overrides the config): cpu, cuda:N or metal:N.
    #[arg(long, global = true)]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the registered plugins by kind, with summaries.
    List {
        /// As the Markdown table the README carries.
        #[arg(long)]
        markdown: bool,
    },
    /// Show a plugin's formula, parameters with defaults, and claims: `describe solver/euler_maruyama`;
    /// `describe solver`: which solver and grid to use at which budget.
    Describe {
        /// KIND/NAME, e.g. `sde/vp`; or `solver` for the recommendation per budget.
        plugin: String,
    },
    /// Print the plan (data, grid, t, α, σ, λ per step, NFE, loss weights) without calling the model.
    Check {
        /// The config (default: the embedded configs/default.ron).
        file: Option<PathBuf>,
        /// Print every step, not the first and last ten.
        #[arg(long)]
        all: bool,
        /// Draw the config's data to this PNG (a scatter of 2-D rows, a grid of images).
        #[arg(long, value_name = "PNG")]
        data_png: Option<PathBuf>,
    },
    /// Sample and write .npy, a PNG (2-D) and a JSON summary.
    Sample {
        /// The config (default: the embedded configs/default.ron).
        file: Option<PathBuf>,
        /// Output directory (default: the config's, else out/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw only shard i of n (0 ≤ i < n) into <out>/shards/; `merge` joins them.
        #[arg(long, value_name = "i/n")]
        shard: Option<shard::Shard>,
    },
    /// Train the config's network by denoising score matching: checkpoints, metrics.jsonl, loss.png.
    Train {
        /// The config.
        file: Option<PathBuf>,
        /// Output directory (default: the config's, else out/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        resume: ResumeArgs,
    },
    /// −log p(x) of data rows through the probability-flow ODE: nll.npy, latents.npy, nll.png.
    Nll {
        /// The config.
        file: Option<PathBuf>,
        /// Output directory (default: the config's, else out/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Evaluate only shard i of n (0 ≤ i < n) into <out>/shards/; `merge` joins them.
        #[arg(long, value_name = "i/n")]
        shard: Option<shard::Shard>,
    },
    /// Join the shards (`sample --shard i/n`, `nll --shard i/n`) in <out>/shards/ into the
    /// outputs of the unsharded run, byte for byte, with its summary.
    Merge {
        /// The config the shards ran.
        file: Option<PathBuf>,
        /// Output directory (default: the config's, else out/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run every job the config names.
    Run {
        /// The config (default: the embedded configs/default.ron).
        file: Option<PathBuf>,
        /// Output directory (default: the config's, else out/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        resume: ResumeArgs,
    },
}

/// What `train` does with checkpoints already in the output directory (default: continue
/// those of the same config, start when there are none).
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct ResumeArgs {
    /// Continue the latest checkpoint; an error if there is none.
    #[arg(long)]
    resume: bool,
    /// Remove the output directory's checkpoints and start afresh.
    #[arg(long)]
    fresh: bool,
}

impl ResumeArgs {
    fn mode(&self) -> train::Resume {
        match (self.resume, self.fresh) {
            (true, _) => train::Resume::Require,
            (_, true) => train::Resume::Fresh,
            _ => train::Resume::Auto,
        }
    }
}

/// Whether an error is the user's to fix (exit 2) rather than a failure of the run (exit 1).
pub fn is_user_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Config { .. }
            | Error::UnknownPlugin { .. }
            | Error::InvalidParam { .. }
            | Error::Io { .. }
            | Error::File { .. }
    )
}

/// Runs the command line `args` (program name first), writing to `out` and `err`; returns the
/// exit code. The command runs on a rayon worker
/// ([`on_workers`](sdeflow_kernel::threads::on_workers)), so that its parallel calls start on
/// one; the `sdeflow` binary gives the workers the main thread's 8 MiB stacks.
pub fn main_with(
    args: impl IntoIterator<Item = String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let _ = if code == 0 {
                write!(out, "{text}")
            } else {
                write!(err, "{text}")
            };
            return code;
        }
    };
    match sdeflow_kernel::threads::on_workers(|| dispatch(cli, out)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            if is_user_error(&e) { 2 } else { 1 }
        }
    }
}

fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let device_override = cli
        .device
        .as_deref()
        .map(str::parse::<DeviceSpec>)
        .transpose()?;
    let io = |e: std::io::Error| Error::Msg(format!("cannot write output: {e}"));
    match cli.command {
        Command::List { markdown } => write!(out, "{}", plan::list(registry, markdown)).map_err(io),
        Command::Describe { plugin } => {
            write!(out, "{}", plan::describe(registry, &plugin)?).map_err(io)
        }
        Command::Check {
            file,
            all,
            data_png,
        } => {
            let config = load(registry, file.as_ref(), device_override)?;
            let plan = plan::plan(&config, all).map_err(|e| config.locate(e))?;
            write!(out, "{plan}").map_err(io)?;
            if let Some(path) = data_png {
                let Some(data) = &config.data else {
                    return Err(Error::invalid(
                        "check",
                        "--data-png",
                        format!("{} names no `data:` to draw", config.file),
                    ));
                };
                plan::draw_data(data.name, &data.plugin, config.seed, &path)?;
                writeln!(out, "\ndata drawn to {}", path.display()).map_err(io)?;
            }
            Ok(())
        }
        Command::Sample {
            file,
            out: dir,
            shard: Some(shard),
        } => {
            let report = with_config(registry, file, device_override, |config, device| {
                sample::sample_shard(config, device, dir, shard)
            })?;
            write!(out, "{report}").map_err(io)
        }
        Command::Nll {
            file,
            out: dir,
            shard: Some(shard),
        } => {
            let report = with_config(registry, file, device_override, |config, device| {
                nll::nll_shard(config, device, dir, shard)
            })?;
            write!(out, "{report}").map_err(io)
        }
        Command::Merge { file, out: dir } => {
            let config = load(registry, file.as_ref(), device_override)?;
            let device = device::resolve(device_override.unwrap_or(config.device))?;
            let dir = sample::output_dir(&config, dir);
            let mut merged = 0;
            if shard::present(&dir, shard::SAMPLE) {
                let summary =
                    sample::merge(&config, device.clone(), &dir).map_err(|e| config.locate(e))?;
                write!(out, "{summary}").map_err(io)?;
                merged += 1;
            }
            if shard::present(&dir, shard::NLL) {
                let summary = nll::merge(&config, device, &dir).map_err(|e| config.locate(e))?;
                write!(out, "{summary}").map_err(io)?;
                merged += 1;
            }
            if merged == 0 {
                return Err(Error::invalid(
                    "merge",
                    "shards",
                    format!(
                        "{} holds no shards; draw them with `sdeflow sample {} --shard i/n` (or `nll`) for i = 0 … n − 1",
                        dir.join(shard::SHARDS).display(),
                        config.file
                    ),
                ));
            }
            Ok(())
        }
        Command::Sample {
            file,
            out: dir,
            shard: None,
        } => jobs(
            registry,
            file,
            device_override,
            (dir, Some(Job::Sample), train::Resume::Auto),
            out,
        ),
        Command::Train {
            file,
            out: dir,
            resume,
        } => jobs(
            registry,
            file,
            device_override,
            (dir, Some(Job::Train), resume.mode()),
            out,
        ),
        Command::Nll {
            file,
            out: dir,
            shard: None,
        } => jobs(
            registry,
            file,
            device_override,
            (dir, Some(Job::Nll), train::Resume::Auto),
            out,
        ),
        Command::Run {
            file,
            out: dir,
            resume,
        } => jobs(
            registry,
            file,
            device_override,
            (dir, None, resume.mode()),
            out,
        ),
    }
}

/// Runs `f` on the config `file` (the embedded default when `None`) and its device (or
/// `device_override`), errors placed at the config's fields.
fn with_config<T>(
    registry: &Registry,
    file: Option<PathBuf>,
    device_override: Option<DeviceSpec>,
    f: impl FnOnce(&Config, candle_core::Device) -> Result<T>,
) -> Result<T> {
    let config = load(registry, file.as_ref(), device_override)?;
    let device = device::resolve(device_override.unwrap_or(config.device))?;
    f(&config, device).map_err(|e| config.locate(e))
}

/// Runs `only` (or every job the config names) into `dir`, printing each job's summary.
fn jobs(
    registry: &Registry,
    file: Option<PathBuf>,
    device_override: Option<DeviceSpec>,
    (dir, only, resume): (Option<PathBuf>, Option<Job>, train::Resume),
    out: &mut dyn Write,
) -> Result<()> {
    let config = load(registry, file.as_ref(), device_override)?;
    let device = device::resolve(device_override.unwrap_or(config.device))?;
    let jobs = only.map_or_else(|| config.jobs.clone(), |j| vec![j]);
    for job in jobs {
        run_job(&config, job, &device, (dir.clone(), resume), out).map_err(|e| config.locate(e))?;
    }
    Ok(())
}

/// Runs one job of `config` into `dir`, printing its summary.
fn run_job(
    config: &Config,
    job: Job,
    device: &candle_core::Device,
    (dir, resume): (Option<PathBuf>, train::Resume),
    out: &mut dyn Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Msg(format!("cannot write output: {e}"));
    match job {
        Job::Sample => {
            let summary = sample::sample(config, device.clone(), dir)?;
            write!(out, "{summary}").map_err(io)
        }
        Job::Train => {
            let summary = train::train(config, device.clone(), dir, resume)?;
            write!(out, "{summary}").map_err(io)
        }
        Job::Nll => {
            let summary = nll::nll(config, device.clone(), dir)?;
            write!(out, "{summary}").map_err(io)
        }
    }
}

/// What `check` prints for the config `text` (named `name` in messages): parse it, build its
/// pipeline and write the plan, all without calling the model. The fuzz target
/// (`tests/fuzz`) drives this with arbitrary text: it must return an error, never panic.
pub fn check_text(registry: &Registry, name: &str, text: &str) -> Result<String> {
    let config = Config::parse(name, text, registry, &device::resolve)?;
    plan::plan(&config, false).map_err(|e| config.locate(e))
}

/// Reads and parses a config (the embedded default when `file` is `None`), resolving its
/// device (or `device_override`).
pub fn load(
    registry: &Registry,
    file: Option<&PathBuf>,
    device_override: Option<DeviceSpec>,
) -> Result<Config> {
    let (name, text) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            (path.display().to_string(), text)
        }
        None => (DEFAULT_CONFIG_NAME.to_string(), DEFAULT_CONFIG.to_string()),
    };
    match device_override {
        // A device named on the command line is checked on its own, not at the config's line.
        Some(spec) => {
            let device = device::resolve(spec)?;
            Config::parse(&name, &text, registry, &|_| Ok(device.clone()))
        }
        None => Config::parse(&name, &text, registry, &device::resolve),
    }
}
