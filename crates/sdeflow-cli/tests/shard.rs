//! `--shard i/n` and `merge` through the built binary: shards of `sample` and `nll` merge to
//! the unsharded run's files byte for byte and its summaries' numbers; a missing, duplicated,
//! unfinished, stale or mismatched shard is a clear error that writes nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BIN: &str = env!("CARGO_BIN_EXE_sdeflow");

/// A network trained for a few steps; chunks of 64 rows, so that 3 shards split 500 samples
/// into whole chunks (128, 192, 180) and 150 nll rows (64, 64, 22); a trajectory; an nll with
/// Hutchinson's probes (their standard errors), the variational bound and latents, solved by
/// the adaptive default solver (per-row NFE). Split in 4, the nll rows leave shard 0 empty.
const RUN: &str = r#"(
    seed: 3,
    sde: vp(),
    data: gmm(weights: [0.5, 0.5], means: [[-1.0, 0.0], [1.0, 0.5]], covariances: [isotropic(0.3), isotropic(0.3)]),
    param: eps(),
    model: mlp(hidden: 16, layers: 2, embed_dim: 8),
    train: (steps: 4, batch: 32, warmup: 1, log_every: 2,
        eval: (every: 4, rows: 64, samples: 50, steps: Some(4)), checkpoint: (every: 4, keep: 1)),
    solver: euler_maruyama(),
    steps: 8,
    samples: 500,
    chunk_rows: Some(64),
    outputs: (trajectory: true),
    nll: (rows: 150, trace: hutchinson(probes: 2, dist: rademacher), bound: 4, latents: true),
    jobs: [train, sample, nll],
)"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdeflow-shard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn sdeflow(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the sdeflow binary runs")
}

fn ok(args: &[&str]) -> String {
    let o = sdeflow(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The run fails with exit 2 and an error holding every one of `needles`.
fn fails(args: &[&str], needles: &[&str]) {
    let o = sdeflow(args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
    for n in needles {
        assert!(t.contains(n), "{args:?}: no {n:?} in {t}");
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A summary's JSON without what differs between runs (times, files, the shard count).
fn numbers(p: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&read(p)).expect("json");
    let o = v.as_object_mut().expect("an object");
    for k in ["wall_seconds", "samples_per_second", "files", "shards"] {
        o.remove(k);
    }
    if let Some(b) = o.get_mut("bound").and_then(|b| b.as_object_mut()) {
        b.remove("wall_seconds");
    }
    v
}

const FILES: [&str; 4] = ["samples.npy", "trajectory.npy", "nll.npy", "latents.npy"];

#[test]
fn shards_merge_to_the_unsharded_bytes_and_bad_sets_are_refused() {
    let dir = scratch("merge");
    let cfg = dir.join("run.ron");
    std::fs::write(&cfg, RUN).expect("config");
    let (cfg, out) = (cfg.to_str().expect("utf-8"), dir.join("out"));
    let out_s = out.to_str().expect("utf-8");
    ok(&["run", cfg, "--out", out_s]);
    let whole: Vec<Vec<u8>> = FILES.iter().map(|f| read(&out.join(f))).collect();
    let (sample_json, nll_json) = (
        numbers(&out.join("summary.json")),
        numbers(&out.join("nll-summary.json")),
    );

    for i in [2, 0, 1] {
        let shard = format!("{i}/3");
        let said = ok(&["sample", cfg, "--out", out_s, "--shard", &shard]);
        assert!(
            said.contains(&format!("sample shard {i}/3: rows")),
            "{said}"
        );
        ok(&["nll", cfg, "--out", out_s, "--shard", &shard]);
    }
    for f in FILES {
        std::fs::remove_file(out.join(f)).expect("removed");
    }
    let said = ok(&["merge", cfg, "--out", out_s]);
    assert!(said.contains("merged from 3 shards"), "{said}");
    for (f, bytes) in FILES.iter().zip(&whole) {
        assert!(
            read(&out.join(f)) == *bytes,
            "{f} differs from the unsharded run's"
        );
    }
    assert_eq!(numbers(&out.join("summary.json")), sample_json);
    assert_eq!(numbers(&out.join("nll-summary.json")), nll_json);
    let rows = |f: &str| {
        let t = String::from_utf8_lossy(&read(&out.join("shards").join(f).join("shard.json")))
            .into_owned();
        let m: serde_json::Value = serde_json::from_str(&t).expect("manifest");
        (m["first"].as_u64(), m["rows"].as_u64())
    };
    assert_eq!(rows("sample-2-of-3"), (Some(320), Some(180)));
    assert_eq!(rows("nll-1-of-3"), (Some(64), Some(64)));

    // Four nll shards of 150 rows in chunks of 64: the first is empty (3 chunks, 4 shards).
    for i in 0..3 {
        std::fs::remove_dir_all(out.join("shards").join(format!("nll-{i}-of-3"))).expect("removed");
    }
    for i in 0..4 {
        ok(&["nll", cfg, "--out", out_s, "--shard", &format!("{i}/4")]);
    }
    assert_eq!(rows("nll-0-of-4"), (Some(0), Some(0)));
    ok(&["merge", cfg, "--out", out_s]);
    for (f, bytes) in FILES.iter().zip(&whole) {
        assert!(
            read(&out.join(f)) == *bytes,
            "{f} differs after a split with an empty shard"
        );
    }
    assert_eq!(numbers(&out.join("nll-summary.json")), nll_json);

    // What a merge refuses, each without touching the merged files.
    let shards = out.join("shards");
    let merge = ["merge", cfg, "--out", out_s];
    let moved = dir.join("moved");
    std::fs::rename(shards.join("sample-1-of-3"), &moved).expect("moved");
    fails(
        &merge,
        &[
            "lacks 1 of the 3 shards of `sample` (shard 1)",
            "--shard 1/3",
        ],
    );
    copy_dir(&moved, &shards.join("sample-1-of-3"));
    copy_dir(&moved, &shards.join("sample-1-of-3-again"));
    fails(&merge, &["duplicates shard 1/3", "remove one"]);
    std::fs::remove_dir_all(shards.join("sample-1-of-3-again")).expect("removed");
    ok(&["sample", cfg, "--out", out_s, "--shard", "0/2"]);
    fails(&merge, &["two splits", "one of 2", "one of 3", "stale"]);
    std::fs::remove_dir_all(shards.join("sample-0-of-2")).expect("removed");
    std::fs::remove_file(shards.join("nll-2-of-4").join("shard.json")).expect("removed");
    fails(&merge, &["nll-2-of-4", "unfinished shard"]);
    ok(&["nll", cfg, "--out", out_s, "--shard", "2/4"]);
    // A shard of another seed: another config.
    let other = dir.join("other.ron");
    std::fs::write(&other, RUN.replace("seed: 3", "seed: 4")).expect("config");
    let other = other.to_str().expect("utf-8");
    ok(&["sample", other, "--out", out_s, "--shard", "1/3"]);
    fails(
        &merge,
        &[
            "sample-1-of-3",
            "seed 4",
            "says 3",
            "not a shard of this run",
        ],
    );
    fails(&["sample", cfg, "--shard", "3/3"], &["0 ≤ i < n"]);
    for (f, bytes) in FILES.iter().zip(&whole) {
        assert!(
            read(&out.join(f)) == *bytes,
            "{f} changed by a refused merge"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder");
    for e in std::fs::read_dir(from).expect("readable").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copied");
    }
}
