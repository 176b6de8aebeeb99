//! `cargo xtask bench --train`: training steps per second of the `mlp` (3 × 256, SiLU, the
//! default) on the 8-mode ring, AdamW with clipping and one EMA — a whole
//! [`sdeflow_train::Trainer`] step (rows, draws, DSM loss, backward, clip, update, EMA) — at
//! batch 512 and 4,096, on 1 and 2 threads (each thread count in its own process, pinned
//! with RAYON_NUM_THREADS, in a release build).
//!
//! `cargo xtask train-table`: the default job's training (configs/default.ron) with the network
//! in each parameterization under its usual weighting, on VP (and EDM's SDE for `edm`), over
//! seeds (of the run and of the network's initial weights); prints the final sliced W2 (2,000 EMA samples, dpmpp_2m, 50 steps) against its
//! floor and the held-out loss, mean ± sd, as a Markdown table.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use candle_core::{DType, Device};
use sdeflow_kernel::{Error, ModelContext, Result, TrainSpec, data::Data};
use sdeflow_train::Trainer;

use crate::bench::pinned;

/// The ring of the default job, as data.
fn ring() -> Result<Data> {
    let config = sdeflow_cli::load(sdeflow_plugins::registry()?, None, None)?;
    config
        .data
        .map(|d| d.plugin)
        .ok_or_else(|| Error::Msg("the default config names no data".into()))
}

/// The benches' trainer: the default `mlp` on the ring, ε-prediction under VP with the simple
/// weighting, the default training spec at `batch`, f32 on the CPU.
pub(crate) fn ring_trainer(batch: usize) -> Result<Trainer> {
    let registry = sdeflow_plugins::registry()?;
    let data = ring()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F32).with_data(data.clone());
    Trainer::new(
        registry.model("mlp", "()", &ctx)?,
        registry.param("eps", "()")?,
        registry.sde("vp", "()")?,
        registry.weighting("simple", "()")?,
        data,
        TrainSpec {
            batch,
            ..TrainSpec::default()
        },
        0,
        (DType::F32, Device::Cpu),
    )
}

/// `bench --train`: steps/s at batch 512 and 4,096 for each thread count.
pub fn run(threads: Option<usize>, repeats: usize) -> Result<ExitCode> {
    let line = |k: usize| {
        [
            "bench".to_string(),
            "--train".into(),
            "--threads".into(),
            k.to_string(),
            "--repeats".into(),
            repeats.to_string(),
        ]
    };
    let Some(k) = threads else {
        println!(
            "training steps/s: mlp 3 × 256 on the ring, AdamW + clip + EMA, f32, CPU (release)"
        );
        println!("| threads | batch | steps/s | ms/step |");
        println!("|---:|---:|---:|---:|");
        return crate::bench::each_thread_count(line);
    };
    if let Some(code) = pinned(k, &line(k))? {
        return Ok(code);
    }
    for batch in [512, 4_096] {
        let mut trainer = ring_trainer(batch)?;
        for _ in 0..5 {
            trainer.step()?; // warm-up: allocations, caches
        }
        let steps = if batch > 1_000 { 20 } else { 100 };
        let mut rates = Vec::new();
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            for _ in 0..steps {
                trainer.step()?;
            }
            rates.push(steps as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("| {k} | {batch} | {median:.1} | {:.2} |", 1e3 / median);
    }
    Ok(ExitCode::SUCCESS)
}

/// The parameterizations of the table, each with its usual weighting and SDE.
const ROWS: [(&str, &str, &str); 6] = [
    ("eps", "simple()", "vp(beta_min: 0.1, beta_max: 20.0)"),
    (
        "x0",
        "min_snr(gamma: 5.0)",
        "vp(beta_min: 0.1, beta_max: 20.0)",
    ),
    (
        "v",
        "min_snr(gamma: 5.0)",
        "vp(beta_min: 0.1, beta_max: 20.0)",
    ),
    ("score", "simple()", "vp(beta_min: 0.1, beta_max: 20.0)"),
    ("flow", "simple()", "vp(beta_min: 0.1, beta_max: 20.0)"),
    ("edm", "edm()", "edm()"),
];

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `train-table`: every row × `seeds` seeds, `steps` training steps each (default: the
/// default job's).
pub fn table(seeds: u64, steps: Option<u64>, threads: usize, out: PathBuf) -> Result<ExitCode> {
    let mut args = vec![
        "train-table".to_string(),
        "--seeds".into(),
        seeds.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(s) = steps {
        args.extend(["--steps".into(), s.to_string()]);
    }
    if let Some(code) = pinned(threads, &args)? {
        return Ok(code);
    }
    let registry = sdeflow_plugins::registry()?;
    let base = sdeflow_cli::DEFAULT_CONFIG;
    println!(
        "| parameterization | weighting | SDE | final SW2 (× floor mean) | held-out loss | exact model's | excess | steps/s |"
    );
    println!("|---|---|---|---|---|---|---|---:|");
    for (param, weighting, sde) in ROWS {
        let (mut sws, mut ratios, mut losses, mut speeds) = (vec![], vec![], vec![], vec![]);
        let (mut exacts, mut excess) = (vec![], vec![]);
        for seed in 0..seeds {
            let mut text = base
                .replace("seed: 0,", &format!("seed: {seed},"))
                .replace(
                    "param: eps(),",
                    &format!("param: {param}(),\n    weighting: {weighting},"),
                )
                .replace(
                    "sde: vp(beta_min: 0.1, beta_max: 20.0),",
                    &format!("sde: {sde},"),
                )
                .replace("model: mlp(),", &format!("model: mlp(seed: {seed}),"))
                .replace("jobs: [train, sample],", "jobs: [train],");
            if let Some(s) = steps {
                text = text.replace("steps: 3000,", &format!("steps: {s},"));
            }
            let name = format!("train-table-{param}-seed{seed}.ron");
            let config =
                sdeflow_kernel::Config::parse(&name, &text, registry, &|_| Ok(Device::Cpu))?;
            let dir = out.join(format!("{param}-seed{seed}"));
            let summary = sdeflow_cli::train::train(
                &config,
                Device::Cpu,
                Some(dir),
                sdeflow_cli::train::Resume::Fresh,
            )?;
            let last = summary
                .last
                .ok_or_else(|| Error::Msg("no final evaluation".into()))?;
            let (sw, floor) = (
                last.sliced_w2.unwrap_or(f64::NAN),
                last.sliced_w2_floor_mean.unwrap_or(f64::NAN),
            );
            eprintln!(
                "{param} seed {seed}: SW2 {sw:.4} (floor {floor:.4}), held-out loss {:.4}, {:.1} steps/s",
                last.heldout_loss, summary.steps_per_second
            );
            sws.push(sw);
            ratios.push(sw / floor);
            losses.push(last.heldout_loss);
            let exact = last.heldout_loss_exact.unwrap_or(f64::NAN);
            exacts.push(exact);
            excess.push(last.heldout_loss - exact);
            speeds.push(summary.steps_per_second);
        }
        let (sw, sw_sd) = mean_sd(&sws);
        let (r, r_sd) = mean_sd(&ratios);
        let (l, l_sd) = mean_sd(&losses);
        let (s, _) = mean_sd(&speeds);
        let (e, e_sd) = mean_sd(&exacts);
        let (x, x_sd) = mean_sd(&excess);
        println!(
            "| {param} | {weighting} | {sde} | {sw:.4} ± {sw_sd:.4} ({r:.2} ± {r_sd:.2}) | {l:.4} ± {l_sd:.4} | {e:.4} ± {e_sd:.4} | {x:.4} ± {x_sd:.4} | {s:.0} |"
        );
    }
    Ok(ExitCode::SUCCESS)
}
