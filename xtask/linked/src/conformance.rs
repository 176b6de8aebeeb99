//! `cargo xtask conformance`.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use candle_core::{DType, Device};
use clap::ValueEnum;
use sdeflow_conformance::{Mode, Options, Target};
use sdeflow_kernel::{Error, KINDS, Result};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The host.
    Cpu,
    /// The first CUDA GPU (a build with `--features cuda`).
    Cuda,
    /// The first Metal GPU (a build with `--features metal`).
    Metal,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
}

/// The device and dtype the run asks for, or why it cannot have them.
fn target(device: DeviceArg, dtype: Option<DtypeArg>) -> Result<Target> {
    let (feature, built) = match device {
        DeviceArg::Cpu => ("", true),
        DeviceArg::Cuda => ("cuda", candle_core::utils::cuda_is_available()),
        DeviceArg::Metal => ("metal", candle_core::utils::metal_is_available()),
    };
    if !built {
        return Err(Error::invalid(
            "conformance",
            "--device",
            format!(
                "this xtask was built without {feature} support; run `cargo run --release -p xtask --features {feature} -- conformance --device {feature}`"
            ),
        ));
    }
    let dev = match device {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => Device::new_cuda(0),
        DeviceArg::Metal => Device::new_metal(0),
    }
    .map_err(|e| {
        Error::invalid(
            "conformance",
            "--device",
            format!("cannot open the first {feature} device: {e}"),
        )
    })?;
    let dtype = match dtype {
        Some(DtypeArg::F64) if device == DeviceArg::Metal => {
            return Err(Error::invalid(
                "conformance",
                "--dtype",
                "Metal has no f64; use --dtype f32",
            ));
        }
        Some(DtypeArg::F64) => DType::F64,
        Some(DtypeArg::F32) => DType::F32,
        None if device == DeviceArg::Cpu => DType::F64,
        None => DType::F32,
    };
    Ok(Target::new(dev, dtype))
}

/// Runs the selected contracts on `jobs` workers (default: the CPU count) and prints the
/// table.
pub fn run(
    quick: bool,
    kind: Option<String>,
    plugin: Option<String>,
    json: Option<PathBuf>,
    device: DeviceArg,
    dtype: Option<DtypeArg>,
    jobs: Option<usize>,
) -> Result<ExitCode> {
    let target = target(device, dtype)?;
    let registry = sdeflow_plugins::registry()?;
    if let Some(k) = &kind
        && !KINDS.contains(&k.as_str())
    {
        return Err(Error::invalid(
            "conformance",
            "--kind",
            format!("`{k}` is not a kind; use one of {}", KINDS.join(", ")),
        ));
    }
    if let Some(p) = &plugin {
        let known: Vec<String> = registry
            .infos()
            .into_iter()
            .map(|(k, i)| format!("{k}/{}", i.name))
            .collect();
        if !registry.infos().iter().any(|(_, i)| i.name == p) {
            return Err(Error::UnknownPlugin {
                kind: "any",
                name: p.clone(),
                known,
            });
        }
    }
    let mode = if quick { Mode::Quick } else { Mode::Full };
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
        .max(1);
    let start = Instant::now();
    let label = target.label();
    let report = sdeflow_conformance::run(
        registry,
        &Options {
            mode,
            kind,
            plugin,
            target,
            jobs,
            ..Options::default()
        },
    );
    println!("{report}");
    println!(
        "({mode:?} pass on {label}, {:.1} s, {jobs} jobs, RAYON_NUM_THREADS={})",
        start.elapsed().as_secs_f64(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Msg(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
