//! `cargo xtask bench --torch` and `bench --train --torch`: sdeflow beside PyTorch eager on the
//! same network, batch and steps, on the CPU (issue "faster than PyTorch eager").
//!
//! - Sampling: the `mlp` (3 × 256, SiLU, the default) under VP × ε, Euler on the PF-ODE,
//!   100 steps (100 NFE), batch 10,000, f32; PyTorch under `torch.inference_mode()`.
//! - Training: one DSM step of the mlp on the ring per iteration (rows, t, ε, loss, backward,
//!   clip at 1, AdamW, EMA 0.999), at batch 512 (100 steps per repeat) and 4,096 (20).
//!
//! The PyTorch side is `xtask/torch/bench.py`, run with the interpreter of `--python`
//! (`xtask/torch/setup.sh` makes `target/torch-venv` with the pinned torch). For each thread
//! count k (1 and 2) the bench runs in its own release process with RAYON_NUM_THREADS = k,
//! and PyTorch with `torch.set_num_threads(k)`, `set_num_interop_threads(1)`. Both warm up,
//! then their repeats alternate — one sdeflow repeat, one PyTorch repeat (a fresh process,
//! with its own warm-up repeat first) — so that a drift of the machine's speed falls on both
//! alike. Each side's median and min are printed, and the ratio sdeflow ÷ PyTorch in
//! throughput (PyTorch's time over sdeflow's): above 1 sdeflow is faster.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use candle_core::{DType, Device};
use sdeflow_kernel::{Error, ModelContext, Pipeline, Result};

use crate::bench::{median_range, pinned};

/// Samples per sampling run.
const SAMPLE_BATCH: usize = 10_000;
/// Steps (= NFE) per sampling run.
const NFE: usize = 100;
/// Training batches, each with its steps per timed repeat.
const TRAIN: [(usize, usize); 2] = [(512, 100), (4_096, 20)];

/// The PyTorch script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../torch/bench.py")
}

/// One timed PyTorch repeat: `bench.py` with `args`, its single repeat's seconds.
fn torch_once(python: &Path, args: &[String]) -> Result<(f64, String)> {
    let out = Command::new(python)
        .arg(script())
        .args(args)
        .args(["--repeats", "1", "--warmup", "1"])
        .output()
        .map_err(|e| {
            Error::Msg(format!(
                "cannot run {} (make it with `bash xtask/torch/setup.sh`, or name another interpreter with --python): {e}",
                python.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{} {} failed: {}",
            python.display(),
            script().display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .ok_or_else(|| Error::Msg("bench.py printed nothing".into()))?;
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Error::Msg(format!("bench.py printed {line:?}: {e}")))?;
    let secs = v["times"][0]
        .as_f64()
        .ok_or_else(|| Error::Msg(format!("bench.py printed no time: {line}")))?;
    Ok((secs, v["torch"].as_str().unwrap_or("?").to_string()))
}

/// One row: sdeflow's and PyTorch's seconds per repeat, alternated.
fn row(
    label: &str,
    k: usize,
    repeats: usize,
    mut ours: impl FnMut() -> Result<f64>,
    python: &Path,
    torch_args: &[String],
) -> Result<()> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    ours()?; // warm-up
    let mut version = String::new();
    for _ in 0..repeats.max(1) {
        a.push(ours()?);
        let (secs, v) = torch_once(python, torch_args)?;
        b.push(secs);
        version = v;
    }
    let ((am, amin, _), (bm, bmin, _)) = (median_range(a), median_range(b));
    println!(
        "| {label} | {k} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.3} | {:.3} | {version} |",
        am * 1e3,
        amin * 1e3,
        bm * 1e3,
        bmin * 1e3,
        bm / am,
        bmin / amin
    );
    Ok(())
}

/// `bench [--train] --torch`.
pub fn run(train: bool, threads: Option<usize>, repeats: usize, python: &Path) -> Result<ExitCode> {
    let line = |k: usize| {
        let mut l = vec![
            "bench".to_string(),
            "--torch".into(),
            "--python".into(),
            python.display().to_string(),
            "--threads".into(),
            k.to_string(),
            "--repeats".into(),
            repeats.to_string(),
        ];
        if train {
            l.push("--train".into());
        }
        l
    };
    let Some(k) = threads else {
        if train {
            println!(
                "training: mlp 3 × 256 on the ring, DSM step with AdamW + clip + EMA, f32, CPU; ms per {} steps at batch {} and per {} at {}",
                TRAIN[0].1, TRAIN[0].0, TRAIN[1].1, TRAIN[1].0
            );
        } else {
            println!(
                "sampling: mlp 3 × 256, VP × ε, Euler on the PF-ODE, {NFE} NFE, batch {SAMPLE_BATCH}, f32, CPU; ms per run"
            );
        }
        println!(
            "median (min) of {repeats} alternated repeats; ratio = PyTorch's time ÷ sdeflow's (throughput sdeflow ÷ PyTorch, ≥ 1: sdeflow faster)\n"
        );
        println!(
            "| run | threads | sdeflow ms | PyTorch ms | ratio (median) | ratio (min) | torch |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        return crate::bench::each_thread_count(line);
    };
    if let Some(code) = pinned(k, &line(k))? {
        return Ok(code);
    }
    if train {
        for (batch, steps) in TRAIN {
            let mut trainer = crate::train_bench::ring_trainer(batch)?;
            for _ in 0..5 {
                trainer.step()?; // warm-up: allocations, caches
            }
            let args: Vec<String> = [
                "train",
                "--threads",
                &k.to_string(),
                "--batch",
                &batch.to_string(),
                "--steps",
                &steps.to_string(),
            ]
            .map(String::from)
            .to_vec();
            row(
                &format!("train, batch {batch}, {steps} steps"),
                k,
                repeats,
                || {
                    let start = Instant::now();
                    for _ in 0..steps {
                        trainer.step()?;
                    }
                    Ok(start.elapsed().as_secs_f64())
                },
                python,
                &args,
            )?;
        }
    } else {
        let registry = sdeflow_plugins::registry()?;
        let ctx = ModelContext::new(Device::Cpu, DType::F32);
        let pipeline = Pipeline::builder()
            .sde(registry.sde("vp", "()")?)
            .param(registry.param("eps", "()")?)
            .model(registry.model("mlp", "()", &ctx)?)
            .solver(registry.solver("euler", "()")?)
            .steps(NFE)
            .grid(sdeflow_kernel::GridKind::Uniform)
            .dtype(DType::F32)
            .seed(0)
            .build()?;
        let args: Vec<String> = [
            "sample",
            "--threads",
            &k.to_string(),
            "--batch",
            &SAMPLE_BATCH.to_string(),
            "--nfe",
            &NFE.to_string(),
        ]
        .map(String::from)
        .to_vec();
        row(
            &format!("sample, batch {SAMPLE_BATCH}, {NFE} NFE"),
            k,
            repeats,
            || {
                let start = Instant::now();
                let out = pipeline.sample(SAMPLE_BATCH)?;
                if out.row_evals != (NFE * SAMPLE_BATCH) as u64 {
                    return Err(Error::Msg(format!(
                        "{} row evaluations, not {NFE} per sample",
                        out.row_evals
                    )));
                }
                Ok(start.elapsed().as_secs_f64())
            },
            python,
            &args,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
