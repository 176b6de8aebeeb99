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

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

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

/// The `xtask-linked train-table` command line that [`pinned`] re-runs: `flags`, then the
/// seeds, threads and output folder.
fn line(flags: &[String], seeds: u64, threads: usize, out: &Path) -> Vec<String> {
    let mut args = vec!["train-table".to_string()];
    args.extend_from_slice(flags);
    args.extend([
        "--seeds".into(),
        seeds.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    args
}

/// `train-table`: every row × `seeds` seeds, `steps` training steps each (default: the
/// default job's).
pub fn table(seeds: u64, steps: Option<u64>, threads: usize, out: PathBuf) -> Result<ExitCode> {
    let steps_flag = steps.map(|s| ["--steps".to_string(), s.to_string()]);
    let args = line(
        steps_flag.as_ref().map_or(&[][..], |f| &f[..]),
        seeds,
        threads,
        &out,
    );
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

/// The objectives' rows: the default job (DSM) and the configs that train its model with
/// implicit and sliced score matching, as the repository ships them.
const OBJECTIVES: [(&str, &str); 3] = [
    ("configs/default.ron", sdeflow_cli::DEFAULT_CONFIG),
    (
        "configs/train-vp-ring-mlp-ism.ron",
        include_str!("../../../configs/train-vp-ring-mlp-ism.ron"),
    ),
    (
        "configs/train-vp-ring-mlp-ssm.ron",
        include_str!("../../../configs/train-vp-ring-mlp-ssm.ron"),
    ),
];

/// An objective as the table names it.
fn objective_label(objective: &sdeflow_kernel::Objective) -> String {
    use sdeflow_kernel::Objective;
    match objective {
        Objective::Dsm {} => "dsm".into(),
        Objective::Ism {} => "ism (exact ∇·ŝ)".into(),
        Objective::Ssm {
            projections,
            dist,
            variance_reduced,
        } => format!(
            "ssm{} ({projections} {dist:?} projection{})",
            if *variance_reduced { "-VR" } else { "" },
            if *projections == 1 { "" } else { "s" }
        ),
    }
}

/// `train-table --objectives`: each objective's config × `seeds` seeds (of the run and of the
/// network's initial weights), trained and then sampled as the config says; the training wall
/// time beside DSM's and the samples' sliced W2 against the exact-sample floor.
pub fn objectives(seeds: u64, threads: usize, out: PathBuf) -> Result<ExitCode> {
    let args = line(&["--objectives".to_string()], seeds, threads, &out);
    if let Some(code) = pinned(threads, &args)? {
        return Ok(code);
    }
    let registry = sdeflow_plugins::registry()?;
    println!(
        "| objective | steps × rows | train wall (s) | × DSM's | ms/step (no evaluations) | SW2 of the samples | × floor mean (worst seed) | worst mode share off its weight | seeds within 2× the floor mean |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---:|---:|");
    let mut dsm_wall = None;
    for (file, base) in OBJECTIVES {
        let (mut walls, mut ms, mut sws, mut ratios, mut modes) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut label = String::new();
        let mut steps = (0, 0);
        for seed in 0..seeds {
            let text = base
                .replace("seed: 0,", &format!("seed: {seed},"))
                .replace("model: mlp(),", &format!("model: mlp(seed: {seed}),"));
            let config =
                sdeflow_kernel::Config::parse(file, &text, registry, &|_| Ok(Device::Cpu))?;
            let spec = config.train.clone().unwrap_or_default();
            label = objective_label(&spec.objective);
            steps = (spec.steps, spec.batch);
            let stem = file.trim_start_matches("configs/").trim_end_matches(".ron");
            let dir = out.join(format!("{stem}-seed{seed}"));
            let trained = sdeflow_cli::train::train(
                &config,
                Device::Cpu,
                Some(dir.clone()),
                sdeflow_cli::train::Resume::Fresh,
            )?;
            let sampled = sdeflow_cli::sample::sample(&config, Device::Cpu, Some(dir))?;
            let exact = sampled
                .exact
                .ok_or_else(|| Error::Msg(format!("{file}: no exact law to measure against")))?;
            eprintln!(
                "{label} seed {seed}: trained in {:.1} s, SW2 {:.4} (floor {:.4}), mode shares within {:.1}%",
                trained.wall_seconds,
                exact.sliced_w2,
                exact.sliced_w2_floor_mean,
                100.0 * exact.worst_mode_deviation
            );
            walls.push(trained.wall_seconds);
            ms.push(1e3 / trained.steps_per_second);
            sws.push(exact.sliced_w2);
            ratios.push(exact.sliced_w2 / exact.sliced_w2_floor_mean);
            modes.push(exact.worst_mode_deviation);
        }
        let (wall, _) = mean_sd(&walls);
        let (step_ms, _) = mean_sd(&ms);
        let base_wall = *dsm_wall.get_or_insert(wall);
        let (sw, sw_sd) = mean_sd(&sws);
        let (r, _) = mean_sd(&ratios);
        let worst = ratios.iter().copied().fold(f64::NAN, f64::max);
        let mode = modes.iter().copied().fold(f64::NAN, f64::max);
        let within = ratios.iter().filter(|r| **r <= 2.0).count();
        println!(
            "| {label} | {} × {} | {wall:.1} | {:.1} | {:.1} | {sw:.4} ± {sw_sd:.4} | {r:.2} ({worst:.2}) | {:.1}% | {within}/{seeds} |",
            steps.0,
            steps.1,
            wall / base_wall,
            step_ms,
            100.0 * mode
        );
    }
    Ok(ExitCode::SUCCESS)
}
