//! `sdeflow train` through the built binary: a run that learns and samples from its
//! checkpoint; kills at points drawn from a seed that always leave a whole, consistent last
//! checkpoint and resume to the uninterrupted run's bytes; the errors a user meets.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sdeflow_kernel::io::FAULT_ENV;
use sdeflow_train::checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_sdeflow");

/// A tiny run: 24 steps, a checkpoint every 6 (keeping 2), evaluations at 12 and 24.
const TINY: &str = r#"(
    seed: 3,
    sde: vp(),
    data: gmm(weights: [0.5, 0.5], means: [[-1.0, 0.0], [1.0, 0.5]], covariances: [isotropic(0.3), isotropic(0.3)]),
    param: eps(),
    model: mlp(hidden: 32, layers: 2, embed_dim: 8),
    train: (
        steps: 24, batch: 64, warmup: 4, log_every: 4,
        ema: [warmup(beta: 0.99), half_life(samples: 500.0, warmup_ratio: 0.05)],
        eval: (every: 12, rows: 256, samples: 200, steps: Some(10)),
        checkpoint: (every: 6, keep: 2),
    ),
    solver: euler(),
    steps: 10,
    samples: 200,
    jobs: [train, sample],
)"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdeflow-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("run.ron");
    std::fs::write(&path, text).expect("config written");
    path
}

fn sdeflow(args: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env_remove(FAULT_ENV);
    if let Some(f) = fault {
        cmd.env(FAULT_ENV, f);
    }
    cmd.output().expect("the sdeflow binary runs")
}

/// `sdeflow run CONFIG --out OUT`, no fault injected.
fn run(config: &Path, out: &Path) -> Output {
    sdeflow(
        &[
            "run",
            config.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ],
        None,
    )
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The bytes of the final checkpoint's files (weights, EMAs, moments, manifest).
fn final_bytes(out: &Path) -> Vec<(String, Vec<u8>)> {
    let (dir, m) = checkpoint::latest(&out.join("checkpoints"))
        .expect("readable")
        .expect("a checkpoint");
    assert_eq!(m.step, 24, "the run finished");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).expect("file");
            (f, bytes)
        })
        .collect()
}

/// The steps of `metrics.jsonl`'s lines.
fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            v["step"].as_u64().expect("a step")
        })
        .collect()
}

/// SplitMix64: the test's own draws of kill points, from a seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Ten fault points drawn from seed 17 among all the points an uninterrupted run passes
/// (each step, each file's three stages of every checkpoint, the folder and `latest`, each
/// pruned folder): after each kill the last checkpoint loads whole and consistent, and a
/// resumed run ends on the uninterrupted run's bytes, with one metrics line per logged step.
#[test]
fn kills_leave_a_consistent_checkpoint_and_resume_to_the_same_bytes() {
    let base = scratch("kill");
    let config = write_config(&base, TINY);
    let straight_dir = base.join("straight");
    let o = sdeflow(
        &[
            "train",
            config.to_str().expect("utf-8"),
            "--out",
            straight_dir.to_str().expect("utf-8"),
        ],
        Some("list"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let points: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("fault point "))
        .map(str::to_string)
        .collect();
    assert!(
        points.len() > 24 + 4 * 12,
        "every step and checkpoint stage is a point: {points:?}"
    );
    let expected = final_bytes(&straight_dir);
    let expected_steps = metric_steps(&straight_dir);

    let mut state = 17;
    for trial in 0..10 {
        let at = 1 + splitmix(&mut state) % points.len() as u64;
        let out = base.join(format!("kill-{trial}"));
        let args = [
            "train",
            config.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ];
        println!(
            "kill {trial}: point {at} of {}: {}",
            points.len(),
            points[at as usize - 1]
        );
        let killed = sdeflow(&args, Some(&at.to_string()));
        assert!(
            !killed.status.success(),
            "point {at} ({}) aborts: {}",
            points[at as usize - 1],
            text(&killed)
        );
        let root = out.join("checkpoints");
        let resume = match checkpoint::latest(&root).expect("`latest` readable after a kill") {
            Some((dir, m)) => {
                let ckpt = checkpoint::load(&dir).unwrap_or_else(|e| {
                    panic!(
                        "kill at {}: {} is not whole: {e}",
                        points[at as usize - 1],
                        dir.display()
                    )
                });
                assert_eq!(ckpt.manifest, m);
                "--resume"
            }
            None => "--out",
        };
        let mut resumed_args = args.to_vec();
        if resume == "--resume" {
            resumed_args.push("--resume");
        }
        let o = sdeflow(&resumed_args, None);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            final_bytes(&out) == expected,
            "kill at {} then resume: the final checkpoint differs from the uninterrupted run's",
            points[at as usize - 1]
        );
        assert_eq!(metric_steps(&out), expected_steps);
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A small run learns a two-mode mixture (the EMA's sliced W2 within twice its floor),
/// writes its files, and `sample` reads its checkpoint; rerunning the finished run trains
/// nothing more.
#[test]
fn a_run_learns_writes_its_files_and_samples_from_its_checkpoint() {
    let base = scratch("learn");
    let config = write_config(
        &base,
        &TINY
            .replace(
                "steps: 24, batch: 64, warmup: 4",
                "steps: 2000, batch: 256, lr: 3e-3, warmup: 20, decay: cosine(final_fraction: 0.1)",
            )
            .replace(
                "ema: [warmup(beta: 0.99), half_life(samples: 500.0, warmup_ratio: 0.05)]",
                "ema: [warmup(beta: 0.995)]",
            )
            .replace(
                "eval: (every: 12, rows: 256, samples: 200, steps: Some(10))",
                "eval: (every: 1000, rows: 1024, samples: 2000, steps: Some(40))",
            )
            .replace(
                "checkpoint: (every: 6, keep: 2)",
                "checkpoint: (every: 1000, keep: 1)",
            )
            .replace("hidden: 32", "hidden: 64")
            .replace("solver: euler()", "solver: dpmpp_2m()")
            .replace(
                "steps: 10,\n    samples: 200",
                "steps: 40,\n    samples: 2000",
            ),
    );
    let out = base.join("out");
    let o = run(&config, &out);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    for file in [
        "metrics.jsonl",
        "loss.png",
        "train-samples.png",
        "train-summary.json",
        "samples.npy",
        "samples.png",
        "summary.json",
    ] {
        assert!(out.join(file).is_file(), "{file} written: {stdout}");
    }
    assert!(stdout.contains("weights from"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("train-summary.json")).expect("summary"),
    )
    .expect("JSON");
    let last = &summary["last"];
    let (sw, floor) = (
        last["sliced_w2"].as_f64().expect("sw2"),
        last["sliced_w2_floor_mean"].as_f64().expect("floor"),
    );
    println!("EMA samples after 2000 steps: SW2 {sw:.4}, floor mean {floor:.4}");
    assert!(sw <= 2.0 * floor, "SW2 {sw} vs floor {floor}: {stdout}");
    assert!(last["worst_mode_deviation"].as_f64().expect("modes") < 0.3);
    assert_eq!(metric_steps(&out).len(), 2000 / 4);
    let sampled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
            .expect("JSON");
    let exact = &sampled["exact"];
    assert!(
        exact["sliced_w2"].as_f64().expect("sw2")
            <= 2.0 * exact["sliced_w2_floor_mean"].as_f64().expect("floor"),
        "{stdout}"
    );
    // The finished run again: nothing to train, the same checkpoint, the same samples.
    let npy = std::fs::read(out.join("samples.npy")).expect("npy");
    let o = run(&config, &out);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("resumed at step 2000"));
    assert_eq!(std::fs::read(out.join("samples.npy")).expect("npy"), npy);
    let _ = std::fs::remove_dir_all(&base);
}

/// What a user gets wrong: sampling a network that was never trained, resuming what is not
/// there, continuing a run under another config, reading a checkpoint that lacks a tensor or
/// has another shape. Each is a message naming the file and the fix, and nothing is changed.
#[test]
fn checkpoint_mistakes_are_clear_errors() {
    let base = scratch("errors");
    let config = write_config(&base, &TINY.replace("steps: 24,", "steps: 6,"));
    let out = base.join("out");
    let c = config.to_str().expect("utf-8");
    let o_dir = out.to_str().expect("utf-8");

    let o = sdeflow(&["sample", c, "--out", o_dir], None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds no checkpoint") && err.contains("sdeflow train"),
        "{err}"
    );

    let o = sdeflow(&["train", c, "--out", o_dir, "--resume"], None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no checkpoint to resume"), "{err}");

    let o = sdeflow(&["train", c, "--out", o_dir], None);
    assert!(o.status.success(), "{}", text(&o));

    // Another config over the same directory: refused, the checkpoints untouched.
    let before = final_bytes_at(&out, 6);
    let other = write_config(
        &base,
        &TINY
            .replace("steps: 24,", "steps: 6,")
            .replace("seed: 3", "seed: 4"),
    );
    let o = sdeflow(
        &["train", other.to_str().expect("utf-8"), "--out", o_dir],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("another config or seed") && err.contains("--fresh"),
        "{err}"
    );
    assert!(final_bytes_at(&out, 6) == before);

    // A wider network read from the checkpoint: the tensor, the file and both shapes.
    let wide = write_config(
        &base,
        &format!(
            "{})",
            TINY.replace("steps: 24,", "steps: 6,")
                .replace("hidden: 32", "hidden: 16")
                .trim_end()
                .trim_end_matches(')')
                .to_string()
                + &format!(
                    "    checkpoint: (dir: Some({:?})),\n",
                    out.join("checkpoints").display().to_string()
                )
        ),
    );
    let o = sdeflow(
        &[
            "sample",
            wide.to_str().expect("utf-8"),
            "--out",
            base.join("wide").to_str().expect("utf-8"),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains("ema.safetensors") && err.contains("has shape [32]") && err.contains("[16]"),
        "{err}"
    );

    // A checkpoint file without one of its tensors.
    let (dir, _) = checkpoint::latest(&out.join("checkpoints"))
        .expect("ok")
        .expect("some");
    let ema = dir.join("ema.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&ema, &candle_core::Device::Cpu).expect("load");
    let gone = tensors.keys().min().cloned().expect("a tensor");
    tensors.remove(&gone);
    let tensors: Vec<_> = tensors.into_iter().collect();
    sdeflow_kernel::io::save_tensors(&ema, tensors, Some("eps")).expect("save");
    let o = sdeflow(&["sample", c, "--out", o_dir], None);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("`{gone}`")) && err.contains("ema.safetensors"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&base);
}

fn final_bytes_at(out: &Path, step: u64) -> Vec<u8> {
    let dir = out.join("checkpoints").join(format!("step-{step:08}"));
    let mut all = Vec::new();
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "train.json",
    ] {
        all.extend(std::fs::read(dir.join(f)).expect("checkpoint file"));
    }
    all
}

/// Data without an exact law (moons): training evaluates and `sample` measures against the
/// held-out rows, with the floor of training rows beside them.
#[test]
fn data_without_a_law_is_measured_against_held_out_rows() {
    let base = scratch("moons");
    let config = write_config(
        &base,
        &TINY
            .replace(
                "data: gmm(weights: [0.5, 0.5], means: [[-1.0, 0.0], [1.0, 0.5]], covariances: [isotropic(0.3), isotropic(0.3)]),",
                "data: moons(),",
            )
            .replace("steps: 24,", "steps: 12,"),
    );
    let out = base.join("out");
    let o = run(&config, &out);
    assert!(o.status.success(), "{}", text(&o));
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).expect("summary")).expect("JSON")
    };
    let trained = read("train-summary.json");
    assert!(
        trained["last"]["sliced_w2"]
            .as_f64()
            .is_some_and(f64::is_finite)
    );
    assert!(
        trained["last"]["sliced_w2_floor_mean"]
            .as_f64()
            .is_some_and(|f| f > 0.0)
    );
    assert!(
        trained["last"].get("mode_shares").is_none(),
        "no mixture, no modes"
    );
    let sampled = read("summary.json");
    assert!(sampled["exact"].is_null());
    let held = &sampled["heldout"];
    assert!(
        held["sliced_w2"].as_f64().is_some_and(f64::is_finite),
        "{sampled}"
    );
    assert!(
        held["sliced_w2_floor_mean"]
            .as_f64()
            .is_some_and(|f| f > 0.0)
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Bad files (issue 22): a truncated, a corrupted and a diverged (NaN) checkpoint, a torn
/// manifest and torn optimizer moments on resume, and an output directory that cannot be
/// written. Each exits 2 naming the file and the problem, and nothing is overwritten: the
/// samples of the last good run and every checkpoint keep their bytes.
#[test]
fn bad_checkpoints_and_outputs_are_named_and_nothing_is_overwritten() {
    let base = scratch("bad-files");
    let config = write_config(&base, &TINY.replace("steps: 24,", "steps: 6,"));
    let out = base.join("out");
    let (c, o_dir) = (
        config.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    );
    let o = sdeflow(&["run", c, "--out", o_dir], None);
    assert!(o.status.success(), "{}", text(&o));
    let samples = std::fs::read(out.join("samples.npy")).expect("samples");
    let checkpoint_bytes = final_bytes_at(&out, 6);
    let dir = out.join("checkpoints").join("step-00000006");
    let ema = dir.join("ema.safetensors");
    let good = std::fs::read(&ema).expect("ema");
    let fails = |args: &[&str], says: &[&str]| {
        let o = sdeflow(args, None);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        for s in says {
            assert!(err.contains(s), "{args:?}: want …{s}…, got {err}");
        }
        assert!(
            std::fs::read(out.join("samples.npy")).expect("samples") == samples,
            "{args:?} changed samples.npy"
        );
    };

    // Truncated to half.
    std::fs::write(&ema, &good[..good.len() / 2]).expect("truncate");
    fails(
        &["sample", c, "--out", o_dir],
        &["ema.safetensors: cannot read safetensors"],
    );
    // Corrupted: the header's length and JSON overwritten.
    let mut bad = good.clone();
    bad[..16].copy_from_slice(b"not a tensor fil");
    std::fs::write(&ema, &bad).expect("corrupt");
    fails(
        &["sample", c, "--out", o_dir],
        &["ema.safetensors: cannot read safetensors"],
    );
    // A diverged run's weights.
    std::fs::write(&ema, &good).expect("restore");
    let mut tensors: Vec<_> = candle_core::safetensors::load(&ema, &candle_core::Device::Cpu)
        .expect("load")
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (name, t) = tensors[0].clone();
    tensors[0] = (name.clone(), (t * f64::NAN).expect("nan"));
    sdeflow_kernel::io::save_tensors(&ema, tensors, Some("eps")).expect("save");
    fails(
        &["sample", c, "--out", o_dir],
        &["ema.safetensors", &format!("`{name}` holds NaN")],
    );
    std::fs::write(&ema, &good).expect("restore");
    assert!(final_bytes_at(&out, 6) == checkpoint_bytes);

    // On resume: torn optimizer moments, then a torn manifest; the checkpoint is kept as it is.
    let longer = write_config(&base, &TINY.replace("steps: 24,", "steps: 6,"));
    let l = longer.to_str().expect("utf-8");
    let optimizer = dir.join("optimizer.safetensors");
    let moments = std::fs::read(&optimizer).expect("moments");
    std::fs::write(&optimizer, &moments[..moments.len() - 8]).expect("tear");
    fails(
        &["train", l, "--out", o_dir, "--resume"],
        &["optimizer.safetensors: cannot read safetensors"],
    );
    std::fs::write(&optimizer, &moments).expect("restore");
    let manifest = dir.join("train.json");
    let json = std::fs::read(&manifest).expect("manifest");
    std::fs::write(&manifest, &json[..json.len() / 2]).expect("tear");
    fails(
        &["train", l, "--out", o_dir, "--resume"],
        &["train.json: not a checkpoint manifest"],
    );
    std::fs::write(&manifest, &json).expect("restore");
    assert!(final_bytes_at(&out, 6) == checkpoint_bytes);

    // An output directory under a regular file: refused before anything runs.
    let file = base.join("a-file");
    std::fs::write(&file, b"").expect("file");
    let under = file.join("out");
    for job in ["sample", "train", "nll"] {
        let o = sdeflow(&[job, c, "--out", under.to_str().expect("utf-8")], None);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{job}: {}", text(&o));
        assert!(
            err.contains("a-file/out: cannot write the output directory") && err.contains("--out"),
            "{job}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// Implicit and sliced score matching through the binary: their losses (DSM's less d·w_ε) go
/// negative, and the run still writes its plot, summary and a checkpoint that samples.
#[test]
fn implicit_and_sliced_runs_train_and_plot_negative_losses() {
    for objective in ["ism()", "ssm(projections: 2, dist: gaussian)"] {
        let dir = scratch(&format!("objective-{}", &objective[..3]));
        let ron = TINY
            .replace(
                "steps: 24, batch: 64",
                &format!("objective: {objective}, steps: 12, batch: 64"),
            )
            .replace("eval: (every: 12,", "eval: (every: 6,")
            .replace(
                "checkpoint: (every: 6, keep: 2)",
                "checkpoint: (every: 12, keep: 1)",
            );
        let config = write_config(&dir, &ron);
        let out = dir.join("out");
        let o = run(&config, &out);
        assert!(o.status.success(), "{objective}: {}", text(&o));
        for f in ["loss.png", "train-summary.json", "samples.npy"] {
            assert!(out.join(f).exists(), "{objective}: no {f}");
        }
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
        let last: serde_json::Value =
            serde_json::from_str(metrics.lines().last().expect("a line")).expect("json");
        let loss = last["heldout_loss"].as_f64().expect("an evaluation");
        assert!(
            loss < 0.0 && loss.is_finite(),
            "{objective}: held-out loss {loss}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
