//! Images end to end through the command line: a tiny class-conditional UNet trained a few
//! steps on the 8 × 8 digits, then sampled by class with a guidance scale searched on another
//! seed, written as `[n, c, h, w]`, a grid with a line per class and an x̂₀ strip, and judged in
//! summary.json; and the clear errors of guidance a model cannot take.

use std::path::PathBuf;

use sdeflow_tests::run_cli as run;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdeflow-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

const UNET: &str = "unet(base: 8, multipliers: [1, 2], blocks: 1, attention: [4], groups: 4, dropout: 0.1, classes: Some(10))";

#[test]
fn a_conditional_unet_trains_samples_by_class_and_is_judged() {
    let dir = scratch("run");
    let config = dir.join("digits.ron");
    std::fs::write(
        &config,
        format!(
            r#"(
    seed: 3,
    sde: vp(),
    data: digits(),
    param: eps(),
    model: {UNET},
    train: (steps: 12, batch: 32, lr: 1e-3, warmup: 4, log_every: 4,
            eval: (every: 6, rows: 64, samples: 0), checkpoint: (every: 6, keep: 1)),
    solver: dpmpp_2m(),
    steps: 4,
    samples: 40,
    guidance: (classes: all, search: [0.0, 1.5], search_samples: 40),
    outputs: (dir: Some("{}"), trajectory: true),
    jobs: [train, sample],
)"#,
            dir.join("out").display()
        ),
    )
    .expect("the config is written");
    let (code, out, err) = run(&["run", config.to_str().expect("a UTF-8 path")]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("5-NN accuracy of samples for their class"),
        "{out}"
    );
    assert!(out.contains("chosen on seed 4's samples"), "{out}");
    let out_dir = dir.join("out");
    for file in [
        "samples.npy",
        "samples.png",
        "trajectory.png",
        "summary.json",
        "loss.png",
    ] {
        assert!(out_dir.join(file).exists(), "{file} missing: {out}");
    }
    let x = candle_core::Tensor::read_npy(out_dir.join("samples.npy")).expect("samples.npy");
    assert_eq!(x.dims(), &[40, 1, 8, 8]);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("summary.json")).expect("summary.json"),
    )
    .expect("JSON");
    let w = summary["guidance"].as_f64().expect("a guidance scale");
    assert!(w == 0.0 || w == 1.5, "{w}");
    assert_eq!(summary["classes"].as_array().map(Vec::len), Some(10));
    let nfe = summary["nfe"].as_u64().expect("nfe");
    assert_eq!(
        nfe,
        if w == 0.0 { 4 } else { 8 },
        "a guided step is two NFE"
    );
    let images = &summary["images"];
    let acc = images["accuracy"]["overall"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(
        images["accuracy"]["per_class"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(images["search"]["trials"].as_array().map(Vec::len), Some(2));
    assert_eq!(images["search"]["seed"].as_u64(), Some(4));
    assert!(images["search"]["floor_mean"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(images["accuracy_unguided"].is_null(), w == 0.0);
    for key in [
        "nearest_train_distance",
        "heldout_nearest_train_distance",
        "sliced_w2",
        "sliced_w2_floor_mean",
    ] {
        let v = images[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key}: {v}");
    }
    assert_eq!(images["sliced_w2_rows"].as_u64(), Some(40));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn guidance_a_model_cannot_take_is_an_error_at_its_field() {
    let dir = scratch("errors");
    let cases = [
        (
            "(sde: vp(), data: moons(), param: eps(), model: mlp(), solver: euler(),\n guidance: (scale: 1.0))",
            "2:2: invalid `guidance`: `mlp` is not conditional",
        ),
        (
            &*format!(
                "(sde: vp(), data: digits(), param: eps(), model: {UNET}, solver: euler(),\n guidance: (scale: 1.0, classes: only([3, 12])))"
            ),
            "guidance: invalid `classes`: class 12 is not one of the model's 10 classes (0 … 9)",
        ),
        (
            "(sde: vp(), data: digits(), param: eps(), model: unet(classes: Some(3)), solver: euler())",
            "`unet` is conditional on 3 classes but data `digits` has 10",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.ron"));
        std::fs::write(&path, text).expect("written");
        let (code, out, err) = run(&["check", path.to_str().expect("UTF-8")]);
        assert_eq!(code, 2, "{out}");
        assert!(err.contains(want), "case {i}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
