//! Hardening (issue 22): every config in configs/ checks with exit 0; every broken config in
//! tests/broken/ exits 2 with `file:line:col:` (or the file, for an error of the whole file)
//! and the fix; sizes that cannot fit in memory are refused before anything is allocated; a
//! run drawn piece by piece writes the bytes of one run; the fuzzer's finds stay fixed.

use std::path::{Path, PathBuf};

use sdeflow_kernel::{Error, Result};
use sdeflow_tests::run_cli;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn io(e: std::io::Error) -> Error {
    Error::Msg(e.to_string())
}

/// Each broken config, where its error is (`line:col`, empty for the whole file) and what
/// the message must say.
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "adaptive_steps.ron",
        "5:3",
        "`dopri5` chooses every sample's steps itself",
    ),
    (
        "batch.ron",
        "6:11",
        "train: invalid `batch`: the run would allocate about",
    ),
    ("binary.ron", "", "stream did not contain valid UTF-8"),
    // A device would be read forever: only regular files are data.
    ("dev_zero.ron", "3:13", "/dev/zero: not a regular file"),
    (
        "chunk0.ron",
        "5:3",
        "invalid `chunk_rows`: must be at least 1",
    ),
    (
        "chunk_huge.ron",
        "5:3",
        "invalid `chunk_rows`: the run would allocate about",
    ),
    ("guidance.ron", "5:3", "`gmm_oracle` is not conditional"),
    ("missing_sde.ron", "4:1", "missing field `sde`"),
    (
        "nan_seed.ron",
        "5:10",
        "Expected comma in the value of `seed`",
    ),
    (
        "neg_samples.ron",
        "5:13",
        "Integer is out of bounds in the value of `samples`",
    ),
    (
        "nll_rows.ron",
        "7:9",
        "nll: invalid `rows`: the run would allocate about",
    ),
    (
        "rho.ron",
        "5:16",
        "invalid `rho`: -1; the Karras grid's exponent must be positive",
    ),
    (
        "samples0.ron",
        "5:3",
        "invalid `samples`: must be at least 1",
    ),
    (
        "sde_invalid.ron",
        "2:26",
        "vp: invalid `beta_max`: must exceed beta_min",
    ),
    ("solver_param.ron", "4:26", "unknown field `foo`"),
    (
        "steps_big.ron",
        "5:3",
        "invalid `steps`: the run would allocate about 23.3 TiB",
    ),
    (
        "steps_max.ron",
        "5:3",
        "invalid `steps`: the run would allocate about 4.7e21 B",
    ),
    (
        "steps_text.ron",
        "5:9",
        "Expected integer in the value of `steps`",
    ),
    ("trailing.ron", "5:2", "trailing characters"),
    (
        "traj.ron",
        "6:13",
        "a trajectory keeps every step of every sample",
    ),
    (
        "tuned0.ron",
        "5:15",
        "a tuned grid needs at least one calibration row",
    ),
    (
        "tuned_huge.ron",
        "5:3",
        "invalid `grid`: the run would allocate about 17.1 PiB",
    ),
    // Found by the property test: a tuned grid of 400 steps searched for hours in `check`.
    ("tuned_steps.ron", "5:3", "tune at most 64 steps"),
    ("unclosed.ron", "4:19", "Unexpected end of RON"),
    (
        "unknown_field.ron",
        "5:3",
        "unknown field `stepz` in `config` (did you mean `steps`?)",
    ),
    (
        "unknown_solver.ron",
        "4:11",
        "unknown solver plugin `eulr` (did you mean `euler`?)",
    ),
    (
        "weights.ron",
        "3:21",
        "gmm_oracle: invalid `weights`: weights sum to 1.4",
    ),
];

#[test]
fn every_config_checks_and_every_broken_one_exits_2_at_its_position() -> Result<()> {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("../configs")).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let (code, out, err) = run_cli(&["check", &name]);
        // A config on a system package's files checks where they are installed; elsewhere
        // its error names the missing files.
        const SYSTEM: &str = "/usr/share/datasets/fashion-mnist";
        if text.contains(SYSTEM) && !Path::new(SYSTEM).exists() {
            assert!(code == 2 && err.contains(SYSTEM), "{name}: {err}");
            continue;
        }
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("NFE"), "{name}: {out}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} configs");

    let dir = root().join("broken");
    let mut listed: Vec<&str> = BROKEN.iter().map(|b| b.0).collect();
    listed.sort_unstable();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    on_disk.sort_unstable();
    assert_eq!(
        listed, on_disk,
        "every file in tests/broken has its expectation"
    );
    for (file, at, says) in BROKEN {
        let path = dir.join(file).display().to_string();
        let (code, out, err) = run_cli(&["check", &path]);
        assert_eq!(code, 2, "{file}: stdout {out} stderr {err}");
        let head = if at.is_empty() {
            format!("error: {path}: ")
        } else {
            format!("error: {path}:{at}: ")
        };
        assert!(err.starts_with(&head), "{file}: want {head}…, got {err}");
        assert!(err.contains(says), "{file}: want …{says}…, got {err}");
        assert_eq!(err.lines().count(), 1, "{file}: one line, got {err}");
    }
    Ok(())
}

/// A run drawn in pieces (streamed to samples.npy) writes the bytes of the run drawn whole,
/// and a smaller run's file is its first rows.
#[test]
fn a_run_drawn_in_pieces_writes_the_bytes_of_one_run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sdeflow-pieces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry = sdeflow_tests::registry()?;
    let text = |n: usize| {
        format!(
            "(\n  sde: vp(),\n  model: gmm_oracle(weights: [0.5, 0.5], means: [[-2.0, 0.0], [2.0, 0.0]], \
             covariances: [isotropic(0.3), isotropic(0.3)]),\n  solver: euler_maruyama(),\n  steps: 20,\n  \
             samples: {n},\n  chunk_rows: Some(64),\n  seed: 5,\n  outputs: (png: false),\n)\n"
        )
    };
    let read = |sub: &str| std::fs::read(dir.join(sub).join("samples.npy")).map_err(io);
    let config = sdeflow_kernel::Config::parse("pieces.ron", &text(500), registry, &|_| {
        Ok(candle_core::Device::Cpu)
    })?;
    let device = candle_core::Device::Cpu;
    let whole = sdeflow_cli::sample::sample_in_pieces(
        &config,
        device.clone(),
        Some(dir.join("whole")),
        500,
    )?;
    let pieces = sdeflow_cli::sample::sample_in_pieces(
        &config,
        device.clone(),
        Some(dir.join("pieces")),
        192,
    )?;
    assert!(read("whole")? == read("pieces")?, "pieces and whole differ");
    // The moments are over every row either way; the metrics read the same first rows.
    let (a, b) = (whole.exact.as_ref(), pieces.exact.as_ref());
    let (a, b) = (
        a.ok_or(Error::Msg("no metrics".into()))?,
        b.ok_or(Error::Msg("no metrics".into()))?,
    );
    assert!((a.mean_error - b.mean_error).abs() < 1e-12 && a.sliced_w2 == b.sliced_w2);
    // 130 rows: the first 130 of the 500, header aside.
    let small = sdeflow_kernel::Config::parse("pieces.ron", &text(130), registry, &|_| {
        Ok(candle_core::Device::Cpu)
    })?;
    sdeflow_cli::sample::sample_in_pieces(&small, device, Some(dir.join("small")), 64)?;
    let (big, small) = (read("whole")?, read("small")?);
    let data = |f: &[u8]| 10 + usize::from(u16::from_le_bytes([f[8], f[9]]));
    let (b, s) = (data(&big), data(&small));
    assert_eq!(small.len() - s, 130 * 2 * 4);
    assert!(
        big[b..b + 130 * 2 * 4] == small[s..],
        "the first rows differ"
    );
    // And the pieces are one run of the pipeline.
    let one = config.pipeline(candle_core::Device::Cpu)?.sample(500)?;
    let path = dir.join("one.npy");
    one.state.x.write_npy(&path)?;
    assert!(
        std::fs::read(&path).map_err(io)? == read("pieces")?,
        "the pieces differ from one run's write_npy"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A `.npy` of latents whose header claims more than the file holds (candle would allocate
/// the claim) is refused, naming the file, before any allocation.
#[test]
fn an_npy_header_claiming_more_than_its_file_is_refused() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sdeflow-npy-bomb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 2), }".to_string();
    header.push_str(&" ".repeat((16 - (10 + header.len() + 1) % 16) % 16));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 64]);
    let npy = dir.join("bomb.npy");
    std::fs::write(&npy, bytes).map_err(io)?;
    let config = dir.join("bomb.ron");
    std::fs::write(
        &config,
        format!(
            "(\n  sde: vp(),\n  model: gmm_oracle(weights: [1.0], means: [[0.0, 0.0]], covariances: [isotropic(1.0)]),\n  \
             solver: euler(),\n  latents: {:?},\n  samples: 1000000000000,\n  steps: 10,\n)\n",
            npy.display().to_string()
        ),
    )
    .map_err(io)?;
    let out = dir.join("out").display().to_string();
    let (code, _, err) = run_cli(&["sample", &config.display().to_string(), "--out", &out]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "bomb.npy: truncated: its header claims 8000000000000 bytes of data, the file holds 64"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
