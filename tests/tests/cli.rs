//! The command line: golden error messages (file:line:col, the field, what is valid), exit
//! codes, and no panic on broken configs.

use sdeflow_kernel::{Error, Result};

/// A small valid config the error cases are cut from, so that positions stay put when the
/// shipped configs change.
const BASE: &str = "(
    sde: vp(),
    param: score(),
    model: gmm_oracle(weights: [0.5, 0.5], means: [[0.0, 0.0], [1.0, 1.0]], covariances: [isotropic(0.5), isotropic(0.5)]),
    solver: euler_maruyama(),
    steps: 10,
    samples: 100,
)
";

use sdeflow_tests::run_cli as run;

/// Runs `check` on `text` written to a file called `name`; returns (exit code, stderr with
/// the file's directory removed).
fn check_text(name: &str, text: &str) -> Result<(i32, String)> {
    let dir = std::env::temp_dir().join(format!("sdeflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Msg(e.to_string()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::Msg(e.to_string()))?;
    let (code, _, err) = run(&["check", path.to_str().unwrap_or_default()]);
    Ok((code, err.replace(&format!("{}/", dir.display()), "")))
}

fn edited(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_config_checks() -> Result<()> {
    let (code, err) = check_text("base.ron", BASE)?;
    assert_eq!((code, err.as_str()), (0, ""));
    Ok(())
}

#[test]
fn golden_error_messages() -> Result<()> {
    // Each case: the edit, and the whole message the user sees. Reviewed by hand: each names
    // the file, line and column, the field, and what would be valid.
    let cases = [
        (
            edited("euler_maruyama()", "euler_maruyam()"),
            "error: bad.ron:5:13: unknown solver plugin `euler_maruyam` (did you mean `euler_maruyama`?); \
             registered solver plugins: annealed_langevin, bosh3, ddim, ddpm, deis, dopri5, dpmpp_2m, dpmpp_2m_sde, dpmpp_2s, dpmpp_3m, edm, euler, euler_ancestral, euler_maruyama, heun, ipndm, pc, reverse_diffusion, rk4, unipc\n",
        ),
        (
            edited("sde: vp()", "sde: heat()"),
            "error: bad.ron:2:10: unknown sde plugin `heat`; registered sde plugins: edm, linear_flow, sub_vp, ve, vp, \
             vp_cosine, vp_discrete\n",
        ),
        (
            edited("    steps: 10,", "    stpes: 10,"),
            "error: bad.ron:6:5: unknown field `stpes` in `config` (did you mean `steps`?); valid fields: device, \
             dtype, seed, data, sde, param, weighting, model, solver, grid, steps, samples, latents, chunk_rows, denoise_final, outputs, jobs, \
             train, nll, guidance, checkpoint\n",
        ),
        (
            edited("sde: vp()", "sde: vp(beta_mn: 0.2)"),
            "error: bad.ron:2:13: unknown field `beta_mn` (did you mean `beta_min`?); valid fields: beta_min, \
             beta_max, t_max, t_eps\n",
        ),
        (
            edited("steps: 10", "steps: 0"),
            "error: bad.ron:6:5: invalid `steps`: must be at least 1\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    chunk_rows: Some(0),"),
            "error: bad.ron:8:5: invalid `chunk_rows`: must be at least 1\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    steps: 4,"),
            "error: bad.ron:8:5: field `steps` given twice in `config`\n",
        ),
        (
            edited("sde: vp()", "sde: vp(beta_min: 5.0, beta_max: 1.0)"),
            "error: bad.ron:2:28: vp: invalid `beta_max`: must exceed beta_min = 5, got 1\n",
        ),
        (
            edited("sde: vp()", "sde: vp(t_eps: 1.5)"),
            "error: bad.ron:2:13: vp: invalid `t_eps`: must lie in (0, t_max = 1), got 1.5\n",
        ),
        (
            edited("weights: [0.5, 0.5]", "weights: [0.7, 0.5]"),
            "error: bad.ron:4:23: gmm_oracle: invalid `weights`: weights sum to 1.2, not 1\n",
        ),
        (
            edited("weights: [0.5, 0.5]", "weights: [1.5, -0.5]"),
            "error: bad.ron:4:23: gmm_oracle: invalid `weights`: weight -0.5 is negative or not finite\n",
        ),
        (
            edited(
                "isotropic(0.5), isotropic(0.5)",
                "isotropic(0.5), full([[1.0, 2.0], [2.0, 1.0]])",
            ),
            "error: bad.ron:4:77: gmm_oracle: invalid `covariances`: covariance 1 is not symmetric positive definite\n",
        ),
        (
            edited("sde: vp(),", "sde: vp(),\n    device: cuda(0),"),
            "error: bad.ron:3:5: device: invalid `device`: `cuda(0)` needs sdeflow built with the `cuda` feature \
             (cargo run --release -p sdeflow-cli --features cuda -- ...); this build has only `cpu`\n",
        ),
        (
            edited("    solver: euler_maruyama(),\n", ""),
            "error: bad.ron:7:1: missing field `solver` in `config`\n",
        ),
        (
            edited("param: score()", "param: eps()"),
            "error: bad.ron:3:5: invalid `param`: `gmm_oracle` predicts in its own target `score()`, not `eps()`; \
             remove `param:` or write `param: score()`\n",
        ),
        (
            edited(
                "    param: score(),\n    model: gmm_oracle(weights: [0.5, 0.5], means: [[0.0, 0.0], [1.0, 1.0]], covariances: [isotropic(0.5), isotropic(0.5)]),",
                "    model: mlp(hidden: 8, layers: 1, embed_dim: 4),",
            ),
            "error: bad.ron:3:5: missing field `param`: `mlp` learns the target `param:` names; add one of \
             `param: edm()`, `param: eps()`, `param: flow()`, `param: score()`, `param: v()`, `param: x0()`\n",
        ),
        (
            edited("    sde: vp(),", "    sde: vp(),\n    data: mnist(),"),
            "error: bad.ron:3:11: unknown data plugin `mnist`; registered data plugins: checkerboard, digits, gmm, \
             idx, moons, npy, spirals, swiss_roll\n",
        ),
        (
            edited("    sde: vp(),", "    sde: vp(),\n    data: gmm(),"),
            "error: bad.ron:5:23: gmm_oracle: invalid `weights`: the mixture is named twice: the oracle reads the \
             law of `data: gmm(...)`; write `model: gmm_oracle()`\n",
        ),
        (
            "(\n    sde: vp(),\n    model: gmm_oracle(),\n    solver: euler(),\n)\n".into(),
            "error: bad.ron:3:23: gmm_oracle: invalid `weights`: no mixture: write `data: gmm(weights: ..., \
             means: ..., covariances: ...)` and `model: gmm_oracle()`, or give the mixture here\n",
        ),
        (
            "(\n    sde: vp(),\n    data: moons(),\n    model: gmm_oracle(),\n    solver: euler(),\n)\n".into(),
            "error: bad.ron:4:23: gmm_oracle: invalid `weights`: the config's data has no exact law to read; use \
             `data: gmm(...)` (a Gaussian mixture), or a trained model\n",
        ),
        (
            "(\n    sde: vp(),\n    data: gmm(means: [[0.0, 0.0, 0.0]]),\n    param: eps(),\n    \
             model: mlp(hidden: 8, layers: 1, embed_dim: 4),\n    solver: euler(),\n)\n"
                .into(),
            "error: bad.ron:5:5: invalid `model`: `mlp` takes rows of shape [2] but data `gmm` has rows of shape [3]; \
             make the model's shape match the data\n",
        ),
        (
            edited("euler_maruyama()", "dopri5()"),
            "error: bad.ron:6:5: invalid `steps`: `dopri5` chooses every sample's steps itself (rtol 1e-5, atol 1e-5); \
             remove `steps: 10` and set its tolerances instead, e.g. `solver: dopri5(rtol: 1e-6)`\n",
        ),
        (
            edited("euler_maruyama()", "dopri5(rtol: 2.0)"),
            "error: bad.ron:5:20: dopri5: invalid `rtol`: 2 is not in (0, 1)\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    nll: (rows: 10, steps: 50),"),
            "error: bad.ron:8:21: nll: invalid `steps`: `dopri5` chooses every sample's steps itself; remove `steps: 50` \
             and set its tolerances instead, e.g. `solver: dopri5(rtol: 1e-6)`\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    nll: (solver: ddim()),"),
            "error: bad.ron:8:11: nll: invalid `solver`: `ddim` cannot carry the log-density change forward; use a \
             Runge–Kutta PF-ODE solver (dopri5, bosh3, rk4, heun, euler)\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    train: (steps: 10, lr: -1.0),"),
            "error: bad.ron:8:24: train: invalid `lr`: -1 is not a positive finite rate\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    train: (steps: 10, ema: [warmup(beta: 1.5)]),"),
            "error: bad.ron:8:24: train: invalid `ema`: beta 1.5 is not in [0, 1)\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    train: (stpes: 10),"),
            "error: bad.ron:8:13: unknown field `stpes` in `train` (did you mean `steps`?); valid fields: objective, steps, batch, accumulate, label_dropout, lr, warmup, decay, optimizer, clip, ema, log_every, eval, checkpoint\n",
        ),
        (
            edited("samples: 100,", "samples: 100,\n    train: (steps: 10, eval: (evry: 5)),"),
            "error: bad.ron:8:31: unknown field `evry` in `eval` (did you mean `every`?); valid fields: every, rows, samples, steps\n",
        ),
    ];
    for (text, golden) in cases {
        let (code, err) = check_text("bad.ron", &text)?;
        assert_eq!(err, golden, "for config:\n{text}");
        assert_eq!(code, 2, "user errors exit 2: {err}");
    }
    Ok(())
}

#[test]
fn a_model_whose_dimension_differs_from_its_exact_law_is_an_error() -> Result<()> {
    let (code, err) = check_text(
        "dims.ron",
        &edited(
            "means: [[0.0, 0.0], [1.0, 1.0]]",
            "means: [[0.0, 0.0], [1.0]]",
        ),
    )?;
    assert_eq!(code, 2);
    assert!(
        err.contains("gmm_oracle: invalid `means`: mean 1 has 1 entries, mean 0 has 2"),
        "{err}"
    );
    Ok(())
}

/// `check`'s NFE per sample and its last grid row are what a run of the config counts,
/// the final denoising step included when the config asks for it.
#[test]
fn check_counts_the_nfe_a_run_takes() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sdeflow-cli-nfe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Msg(e.to_string()))?;
    for (denoise, text) in [
        (false, BASE.to_string()),
        (
            true,
            edited("steps: 10,", "steps: 10,\n    denoise_final: true,"),
        ),
    ] {
        let path = dir.join(format!("nfe-{denoise}.ron"));
        std::fs::write(&path, &text).map_err(|e| Error::Msg(e.to_string()))?;
        let path = path.to_str().unwrap_or_default();
        let (code, out, err) = run(&["check", path]);
        assert_eq!(code, 0, "{err}");
        let config = sdeflow_cli::load(sdeflow_tests::registry()?, Some(&path.into()), None)?;
        assert_eq!(config.denoise_final, denoise);
        let ran = config.pipeline(candle_core::Device::Cpu)?.sample(3)?.nfe;
        // euler_maruyama: 1 NFE per step, 10 steps, and Tweedie's step when asked for.
        assert_eq!(ran, 10 + u64::from(denoise));
        assert!(
            out.contains(&format!(", {ran} NFE per sample,")),
            "check should announce {ran} NFE:\n{out}"
        );
        let grid = out.split("\nloss ").next().unwrap_or_default();
        let last_row = grid
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        assert!(
            last_row.split_whitespace().last() == Some(ran.to_string().as_str()),
            "the last grid row should reach {ran} NFE: {last_row}"
        );
    }
    Ok(())
}

/// `check` prints the loss a training run would minimise: where the weighting's t-density
/// puts the times, the weight there, and the weight in the model's target. EDM's weighting
/// read in EDM's preconditioned target has w_ε/k² = 1 at every time (Karras et al.'s unit
/// effective weight), with c_in = 1/√(σ² + σ_d²) and c_noise = ¼ ln σ on EDM's SDE.
#[test]
fn check_prints_the_loss_weights() -> Result<()> {
    let text = edited(
        "    param: score(),\n    model: gmm_oracle(weights: [0.5, 0.5], means: [[0.0, 0.0], [1.0, 1.0]], covariances: [isotropic(0.5), isotropic(0.5)]),",
        "    param: edm(),\n    weighting: edm(),\n    model: mlp(hidden: 8, layers: 1, embed_dim: 4),",
    )
    .replace("sde: vp()", "sde: edm()");
    let (code, _) = check_text("loss.ron", &text)?;
    assert_eq!(code, 0);
    let dir = std::env::temp_dir().join(format!("sdeflow-cli-{}", std::process::id()));
    let (code, out, err) = run(&["check", dir.join("loss.ron").to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("loss    weighting edm(): E_t~p[w_ε(t) ‖ε̂ − ε‖²], the weighting's own t-density; in the edm() target"),
        "{out}"
    );
    let table: Vec<Vec<f64>> = out
        .split("c_noise\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(table.len(), 9, "{out}");
    for row in &table {
        let (t, w_target, c_in, c_noise) = (row[1], row[4], row[5], row[6]);
        assert!((w_target - 1.0).abs() < 1e-4, "{row:?}");
        assert!(
            (c_in - 1.0 / (t * t + 0.25).sqrt()).abs() <= 1e-4 * c_in,
            "{row:?}"
        );
        assert!((c_noise - 0.25 * t.ln()).abs() <= 1e-4, "{row:?}");
    }
    // The density is EDM's log-normal: its median σ is e^{−1.2} (truncation barely moves it).
    let median = table[4][1];
    assert!((median.ln() + 1.2).abs() < 0.01, "median t = {median}");
    Ok(())
}

#[test]
fn every_prefix_of_a_config_is_an_error_not_a_panic() -> Result<()> {
    for cut in (0..BASE.len() - 2)
        .step_by(3)
        .filter(|c| BASE.is_char_boundary(*c))
    {
        let (code, err) = check_text("cut.ron", &BASE[..cut])?;
        assert_eq!(code, 2, "prefix of {cut} chars: {err}");
        assert!(err.starts_with("error: cut.ron:"), "{err}");
    }
    Ok(())
}

#[test]
fn exit_codes_and_help() -> Result<()> {
    assert_eq!(run(&["--help"]).0, 0);
    assert_eq!(run(&["list"]).0, 0);
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["check", "--device", "cuda:1"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: device: invalid `device`: `cuda(1)` needs"),
        "{err}"
    );
    let (code, _, err) = run(&["check", "--device", "tpu"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`tpu` is not a device; use cpu, cuda:N or metal:N"),
        "{err}"
    );
    let (code, _, err) = run(&["check", "no/such/file.ron"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: no/such/file.ron: "), "{err}");
    Ok(())
}

#[test]
fn describe_shows_formula_defaults_and_claims() -> Result<()> {
    let (code, out, err) = run(&["describe", "solver/euler_maruyama"]);
    assert_eq!(code, 0, "{err}");
    for part in [
        "# Formula",
        "# Parameters",
        "# Claims",
        "# References",
        "## Default parameters",
        "## Declared claims",
        "weak order 1",
    ] {
        assert!(out.contains(part), "missing {part}:\n{out}");
    }
    let (code, _, err) = run(&["describe", "solver/eulr_maruyama"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `euler_maruyama`?"), "{err}");
    let (code, out, _) = run(&["describe", "sde/vp"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("beta_min: 0.1") && out.contains("t_ε = 1e-3"),
        "{out}"
    );
    Ok(())
}

#[test]
fn the_readme_plugin_table_is_current() -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .map_err(|e| Error::Msg(e.to_string()))?;
    let (_, table, _) = run(&["list", "--markdown"]);
    let start = readme
        .find("<!-- plugins -->\n")
        .map(|i| i + "<!-- plugins -->\n".len());
    let end = readme.find("<!-- /plugins -->");
    let (Some(start), Some(end)) = (start, end) else {
        panic!("README.md lacks the <!-- plugins --> markers")
    };
    assert_eq!(
        &readme[start..end],
        table,
        "README's plugin table is stale: paste `sdeflow list --markdown` between its markers"
    );
    Ok(())
}

/// The PNG's width and height, read from its IHDR chunk (bytes 16..24).
fn png_size(path: &std::path::Path) -> Result<(u32, u32)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Msg(e.to_string()))?;
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{path:?} is not a PNG"
    );
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Ok((be(16), be(20)))
}

/// `check` prints the config's data (shape, size, split, labels, range, levels) and draws it:
/// 2-D rows as a scatter; images as a grid (here the 64 first digits, 8 to a line, each
/// 8 × 8 image scaled 8× with a 2-pixel border: 8 · (64 + 2) + 2 = 530 pixels a side). A
/// config without data has nothing to draw.
#[test]
fn check_prints_and_draws_the_data() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sdeflow-cli-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Msg(e.to_string()))?;
    let config = dir.join("moons.ron");
    std::fs::write(
        &config,
        "(\n    sde: vp(),\n    data: moons(noise: 0.1),\n    param: eps(),\n    model: mlp(hidden: 8, layers: 1, embed_dim: 4),\n    solver: euler(),\n)\n",
    )
    .map_err(|e| Error::Msg(e.to_string()))?;
    let png = dir.join("moons.png");
    let (code, out, err) = run(&[
        "check",
        config.to_str().unwrap_or_default(),
        "--data-png",
        png.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("data    moons: rows of shape [2], unbounded draws (train and held-out: independent streams), 2 classes"),
        "{out}"
    );
    let (w, h) = png_size(&png)?;
    assert!(w >= 600 && h >= 600, "{w} × {h}");

    let digits = sdeflow_tests::registry()?.data("digits", "()")?;
    let text = sdeflow_cli::plan::data_text("digits", &digits);
    assert_eq!(
        text,
        "digits: rows of shape [1, 8, 8], 1797 stored rows (1617 train, 180 held out, fixed), 10 classes, \
         values in [-1, 1], 17 levels (bits/dim offset 3.0875)"
    );
    let grid = dir.join("digits.png");
    sdeflow_cli::plan::draw_data("digits", &digits, 0, &grid)?;
    assert_eq!(png_size(&grid)?, (530, 530));

    let no_data = dir.join("no-data.ron");
    std::fs::write(&no_data, BASE).map_err(|e| Error::Msg(e.to_string()))?;
    let (code, _, err) = run(&[
        "check",
        no_data.to_str().unwrap_or_default(),
        "--data-png",
        dir.join("none.png").to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("names no `data:` to draw"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The recommendation per budget (`describe solver`, the README): every row builds — the
/// solver from the registry, the grid from RON — spends its budget with the most steps that
/// fit, beats the best peer it names on both mixtures, and the README carries it verbatim.
#[test]
fn the_budget_advice_builds_beats_its_peers_and_is_in_the_readme() -> Result<()> {
    use sdeflow_cli::advice::{ADVICE, HEADING, markdown};
    let registry = sdeflow_plugins::registry()?;
    for budget in [10, 20] {
        assert!(
            ADVICE.iter().any(|a| a.nfe == budget),
            "no advice at NFE {budget}"
        );
    }
    for a in ADVICE {
        let (name, params) = a.solver.split_once('(').unwrap_or((a.solver, ")"));
        let solver = registry.solver(name, &format!("({params}"))?;
        ron::from_str::<sdeflow_kernel::GridKind>(a.grid)
            .map_err(|e| Error::Msg(format!("{}: {e}", a.grid)))?;
        assert!(
            !solver.claims().stochastic,
            "{}: not deterministic",
            a.solver
        );
        assert!(
            solver.nfe(a.steps) <= a.nfe && solver.nfe(a.steps + 1) > a.nfe,
            "{} at {} steps does not spend NFE {}",
            a.solver,
            a.steps,
            a.nfe
        );
        for m in 0..2 {
            assert!(
                a.error[m] < a.peer_error[m],
                "{} at NFE {}: {} ≥ the peer's {}",
                a.solver,
                a.nfe,
                a.error[m],
                a.peer_error[m]
            );
        }
    }
    let (code, out, _) = run(&["describe", "solver"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("{HEADING}{}", markdown()));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .map_err(|e| Error::Msg(e.to_string()))?;
    assert!(
        readme.contains(&format!("<!-- budget -->\n{}<!-- /budget -->", markdown())),
        "README's budget table is stale: paste `sdeflow describe solver`'s table between its \
         <!-- budget --> markers"
    );
    Ok(())
}
