//! Adaptive solvers end to end on the oracle: the PF-ODE's encoding decoded back, and the
//! clear errors of a run that cannot meet its tolerances.

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::mixtures::ring;
use sdeflow_kernel::{ModelContext, Pipeline, Result, State, likelihood::Trace};

/// `dopri5` on the ring oracle under VP.
fn pipeline(params: &str, dtype: DType) -> Result<Pipeline> {
    let r = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, dtype);
    Pipeline::builder()
        .sde(r.sde("vp", "()")?)
        .model(r.model("gmm_oracle", &ring().oracle_params(), &ctx)?)
        .solver(r.solver("dopri5", params)?)
        .dtype(dtype)
        .build()
}

/// Encode x₀ → x_T through the PF-ODE (an nll run's latents) and decode x_T → x₀ with the
/// same adaptive solver (f64, rtol 1e-8): the rows come back within 1e-4. Each direction
/// chooses its own steps per sample.
#[test]
fn encode_then_decode_returns_the_rows() -> Result<()> {
    let p = pipeline("(rtol: 1e-8, atol: 1e-8)", DType::F64)?;
    let law = ring().mixture()?;
    let c = p.sde().coefs(p.sde().t_eps());
    let n = 64;
    let rows = law.marginal(c.alpha, c.sigma)?.sample(11, 0, n);
    let x = Tensor::from_vec(rows.clone(), (n, 2), &Device::Cpu)?;
    let encoded = p.log_likelihood(&x, 0, Trace::Exact)?;
    let decoded = p.run(State::new(encoded.latent.clone(), p.sde().t_max(), 0))?;
    let back = decoded.state.x.flatten_all()?.to_vec1::<f64>()?;
    let worst = back
        .iter()
        .zip(&rows)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let nfe = |r: &Option<sdeflow_kernel::RowStats>| {
        r.as_ref()
            .map_or(0.0, |r| r.nfe.iter().sum::<u64>() as f64 / n as f64)
    };
    println!(
        "dopri5 rtol 1e-8: encode {:.0} NFE/sample, decode {:.0}; max |x − x̂| = {worst:.2e}",
        nfe(&encoded.rows),
        nfe(&decoded.rows)
    );
    assert!(worst <= 1e-4, "{worst}");
    Ok(())
}

/// A run that cannot meet its tolerances stops with an error naming the sample, t and what
/// to change: the NFE budget, a step below `min_step`, and an rtol below the dtype's
/// precision.
#[test]
fn an_adaptive_run_that_cannot_finish_says_why() -> Result<()> {
    let err = |params: &str, dtype: DType| -> String {
        pipeline(params, dtype)
            .and_then(|p| p.sample(4))
            .map(|_| ())
            .expect_err(params)
            .to_string()
    };
    let budget = err("(rtol: 1e-10, atol: 1e-10, max_nfe: 40)", DType::F64);
    assert!(
        budget.contains("sample 0 used its budget of 40 NFE at t = ")
            && budget.contains("raise max_nfe"),
        "{budget}"
    );
    let stalled = err("(rtol: 1e-9, atol: 1e-9, min_step: 0.5)", DType::F64);
    assert!(
        stalled.contains("stalled at t = ") && stalled.contains("below 5e-1"),
        "{stalled}"
    );
    let f32 = err("(rtol: 1e-8, atol: 1e-8)", DType::F32);
    assert!(
        f32.contains("invalid `rtol`: 1e-8 is below what F32 resolves"),
        "{f32}"
    );
    Ok(())
}

/// Through the command line: `nll` of rows from a `.npy` writes their PF-ODE encodings as
/// `latents.npy`, and `sample` from those latents (`latents:`) decodes them back to the rows
/// within 1e-4 (dopri5, rtol 1e-8, f64).
#[test]
fn sample_decodes_an_nll_runs_latents() -> Result<()> {
    use sdeflow_kernel::Error;
    let msg = |e: std::io::Error| Error::Msg(e.to_string());
    let dir = std::env::temp_dir().join(format!("sdeflow-latents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(msg)?;
    let spec = ring();
    let (n, p) = (32, pipeline("()", DType::F64)?);
    let c = p.sde().coefs(p.sde().t_eps());
    let rows = spec.mixture()?.marginal(c.alpha, c.sigma)?.sample(13, 0, n);
    let x = Tensor::from_vec(rows.clone(), (n, 2), &Device::Cpu)?;
    x.write_npy(dir.join("rows.npy"))?;
    let mixture = spec.oracle_params();
    let mixture = mixture.trim_start_matches('(').trim_end_matches(')');
    let config = |rest: &str| {
        format!(
            "(\n    sde: vp(),\n    data: gmm({mixture}),\n    model: gmm_oracle(),\n    \
             solver: dopri5(rtol: 1e-8, atol: 1e-8),\n    dtype: f64,\n    samples: {n},\n{rest})\n"
        )
    };
    let encode = config(&format!(
        "    nll: (npy: \"{}\", solver: dopri5(rtol: 1e-8, atol: 1e-8), bound: None),\n    jobs: [nll],\n",
        dir.join("rows.npy").display()
    ));
    let decode = config(&format!(
        "    latents: \"{}\",\n    outputs: (png: false),\n    jobs: [sample],\n",
        dir.join("enc/latents.npy").display()
    ));
    for (name, text) in [("enc", encode), ("dec", decode)] {
        let path = dir.join(format!("{name}.ron"));
        std::fs::write(&path, text).map_err(msg)?;
        let out = dir.join(name);
        let (code, _, err) = sdeflow_tests::run_cli(&[
            "run",
            path.to_str().unwrap_or_default(),
            "--out",
            out.to_str().unwrap_or_default(),
        ]);
        assert_eq!(code, 0, "{name}: {err}");
    }
    let back = Tensor::read_npy(dir.join("dec/samples.npy"))?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let worst = back
        .iter()
        .zip(&rows)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("CLI encode then decode: max |x − x̂| = {worst:.2e}");
    assert!(worst <= 1e-4, "{worst}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
