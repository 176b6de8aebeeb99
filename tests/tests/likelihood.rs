//! log p through the probability-flow ODE against the exact density of the oracle's law
//! (MATH.md §6): the ring on VP, integrated forward by rk4 from t_ε to T.

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::mixtures::ring;
use sdeflow_kernel::{
    ModelContext, Pipeline, Result,
    likelihood::{Probe, Trace},
};

const ROWS: usize = 200;

/// With the exact trace and rk4 on 400 uniform steps, log p_{t_ε} of exact samples is within
/// 1e-3 nats/dim of the truth on average (and 1e-2 at every point) once the SDE's prior is
/// replaced by the exact p_T (the solver's error alone); with the SDE's prior N(0, I), VP's
/// prior mismatch at T adds its small part. Decoding the latents x(T) with the same solver
/// returns the rows within 1e-4. Hutchinson's mean (Rademacher, 4 probes) is within
/// 3 standard errors of the exact value, and its probes' standard error is reported.
#[test]
fn the_oracle_likelihood_matches_the_exact_density() -> Result<()> {
    let r = sdeflow_plugins::registry()?;
    let spec = ring();
    let law = spec.mixture()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let oracle = r.model("gmm_oracle", &spec.oracle_params(), &ctx)?;
    let sde = r.sde("vp", "()")?;
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .model(oracle)
        .solver(r.solver("rk4", "()")?)
        .steps(400)
        .grid(sdeflow_kernel::GridKind::Uniform)
        .dtype(DType::F64)
        .build()?;
    let (ce, ct) = (sde.coefs(sde.t_eps()), sde.coefs(sde.t_max()));
    let at_eps = law.marginal(ce.alpha, ce.sigma)?;
    let at_t = law.marginal(ct.alpha, ct.sigma)?;
    let rows = at_eps.sample(7, 0, ROWS);
    let x = Tensor::from_vec(rows.clone(), (ROWS, 2), &Device::Cpu)?;
    let truth: Vec<f64> = at_eps.eval(&rows).iter().map(|e| e.log_prob).collect();

    let exact = pipeline.log_likelihood(&x, 0, Trace::Exact)?;
    assert_eq!(exact.nfe, 4 * 400);
    let latent = exact.latent.flatten_all()?.to_vec1::<f64>()?;
    let p_t: Vec<f64> = at_t.eval(&latent).iter().map(|e| e.log_prob).collect();
    let gaps: Vec<f64> = (0..ROWS)
        .map(|i| (p_t[i] + exact.delta[i] - truth[i]).abs() / 2.0)
        .collect();
    let mean_gap = gaps.iter().sum::<f64>() / ROWS as f64;
    let max_gap = gaps.iter().copied().fold(0.0, f64::max);
    let prior_gap = (0..ROWS)
        .map(|i| (exact.log_p[i] - truth[i]).abs() / 2.0)
        .sum::<f64>()
        / ROWS as f64;
    println!(
        "ring/vp rk4×400: |NLL − exact| per dim, exact p_T: mean {mean_gap:.2e}, max {max_gap:.2e}; SDE prior: mean {prior_gap:.2e}"
    );
    assert!(mean_gap <= 1e-3 && max_gap <= 1e-2, "{mean_gap} {max_gap}");
    assert!(prior_gap <= 1e-2, "VP's prior is close to p_T: {prior_gap}");

    // Decode: the same solver and grid from the latents back to t_ε returns the rows.
    let start = sdeflow_kernel::State::new(exact.latent.clone(), sde.t_max(), 0);
    let decoded = pipeline
        .run(start)?
        .state
        .x
        .flatten_all()?
        .to_vec1::<f64>()?;
    let round_trip = decoded
        .iter()
        .zip(&rows)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("encode then decode: max |x − x̂| = {round_trip:.2e}");
    assert!(round_trip <= 1e-4, "{round_trip}");

    let hutch = pipeline.log_likelihood(
        &x,
        0,
        Trace::Hutchinson {
            probes: 4,
            dist: Probe::Rademacher,
        },
    )?;
    let se = hutch
        .probe_se
        .clone()
        .expect("k > 1 gives a standard error");
    let n = ROWS as f64;
    let diff: Vec<f64> = (0..ROWS).map(|i| hutch.log_p[i] - exact.log_p[i]).collect();
    let mean = diff.iter().sum::<f64>() / n;
    let sd = (diff.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    println!(
        "Hutchinson (4 Rademacher probes): mean − exact {mean:.3e} ± {:.3e}; median probe SE {:.3e}",
        sd / n.sqrt(),
        {
            let mut s = se.clone();
            s.sort_by(f64::total_cmp);
            s[ROWS / 2]
        }
    );
    assert!(mean.abs() <= 3.0 * sd / n.sqrt() + 1e-9, "{mean} vs {sd}");
    Ok(())
}

/// Through a network (the mlp, f64), the divergence by vector-Jacobian products equals the
/// central finite differences of its score, and each Hutchinson estimate equals vᵀ J v with J
/// from the same differences.
#[test]
fn a_network_divergence_by_autograd_matches_finite_differences() -> Result<()> {
    use sdeflow_kernel::{Denoiser, PerRow, likelihood::score_divergence};
    let r = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let mlp = r.model(
        "mlp",
        "(hidden: 16, layers: 2, embed_dim: 8, seed: 3)",
        &ctx,
    )?;
    let den = Denoiser::new(mlp, r.param("eps", "()")?, None, None);
    let sde = r.sde("vp", "()")?;
    let time = PerRow::Call(sde.coefs(0.3));
    let n = 5;
    let xs: Vec<f64> = (0..2 * n).map(|i| (i as f64 * 0.37).sin() * 1.5).collect();
    let x = Tensor::from_vec(xs.clone(), (n, 2), &Device::Cpu)?;
    let score = |v: &[f64]| -> Result<Vec<f64>> {
        let t = Tensor::from_vec(v.to_vec(), (n, 2), &Device::Cpu)?;
        Ok(den
            .eval_at(&t, &time)?
            .score()?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    // J[i][a][b] = ∂ŝ_a/∂x_b at row i.
    let h = 1e-5;
    let mut jac = vec![[[0.0; 2]; 2]; n];
    for b in 0..2 {
        let (mut up, mut down) = (xs.clone(), xs.clone());
        for i in 0..n {
            up[2 * i + b] += h;
            down[2 * i + b] -= h;
        }
        let (su, sd) = (score(&up)?, score(&down)?);
        for i in 0..n {
            for a in 0..2 {
                jac[i][a][b] = (su[2 * i + a] - sd[2 * i + a]) / (2.0 * h);
            }
        }
    }
    let (_, div) = score_divergence(&den, &x, &time, None)?;
    for (i, d) in div.to_vec1::<f64>()?.iter().enumerate() {
        let fd = jac[i][0][0] + jac[i][1][1];
        assert!(
            (d - fd).abs() < 1e-6 * (1.0 + fd.abs()),
            "row {i}: {d} vs {fd}"
        );
    }
    let v = sdeflow_kernel::likelihood::probes(
        9,
        0,
        n,
        &[2],
        3,
        Probe::Gaussian,
        (DType::F64, &Device::Cpu),
    )?;
    let (_, est) = score_divergence(&den, &x, &time, Some(&v))?;
    // Rows first: v is [n, k, d], the estimates [n, k].
    let vs = v.to_vec3::<f64>()?;
    for (i, row) in est.to_vec2::<f64>()?.iter().enumerate() {
        for (j, e) in row.iter().enumerate() {
            let p = &vs[i][j];
            let vjv: f64 = (0..2)
                .map(|a| (0..2).map(|b| p[a] * jac[i][a][b] * p[b]).sum::<f64>())
                .sum();
            assert!(
                (e - vjv).abs() < 1e-6 * (1.0 + vjv.abs()),
                "probe {j} row {i}: {e} vs {vjv}"
            );
        }
    }
    Ok(())
}

/// The oracle's closed-form Jacobian-vector products: with the basis vectors as probes the
/// estimates e_jᵀ J e_j sum to its closed-form divergence, and J is symmetric (a Hessian).
#[test]
fn the_oracle_jacobian_products_sum_to_its_divergence() -> Result<()> {
    use sdeflow_kernel::{Denoiser, PerRow, likelihood::score_divergence};
    let r = sdeflow_plugins::registry()?;
    let spec = ring();
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let oracle = r.model("gmm_oracle", &spec.oracle_params(), &ctx)?;
    let den = Denoiser::of(oracle, None, None)?;
    let sde = r.sde("vp", "()")?;
    let time = PerRow::Call(sde.coefs(0.05));
    let n = 6;
    let xs: Vec<f64> = (0..2 * n).map(|i| (i as f64 * 0.91).cos() * 3.0).collect();
    let x = Tensor::from_vec(xs, (n, 2), &Device::Cpu)?;
    let (_, div) = score_divergence(&den, &x, &time, None)?;
    // Rows first, [n, k, d]: row i's probe 0 is e_1, its probe 1 is e_2.
    let mut basis = vec![0.0; n * 2 * 2];
    for i in 0..n {
        basis[4 * i] = 1.0;
        basis[4 * i + 3] = 1.0;
    }
    let e = Tensor::from_vec(basis, (n, 2, 2), &Device::Cpu)?;
    let (_, est) = score_divergence(&den, &x, &time, Some(&e))?;
    let est = est.to_vec2::<f64>()?;
    for (i, d) in div.to_vec1::<f64>()?.iter().enumerate() {
        let sum = est[i][0] + est[i][1];
        assert!(
            (d - sum).abs() < 1e-10 * (1.0 + d.abs()),
            "row {i}: {d} vs {sum}"
        );
    }
    // Symmetry: (J e_2)_1 = (J e_1)_2, J being the Hessian of log p_t.
    let (_, jv) = den
        .model()
        .score_jvp(&x, &time, &e)
        .expect("the oracle offers Jacobian-vector products")?;
    let jv = jv.to_vec3::<f64>()?;
    for (i, row) in jv.iter().enumerate() {
        let (j12, j21) = (row[1][0], row[0][1]);
        assert!(
            (j12 - j21).abs() < 1e-10 * (1.0 + j12.abs()),
            "row {i}: {j12} vs {j21}"
        );
    }
    Ok(())
}

/// A solver that cannot carry the log-density change (an SDE solver, an exponential
/// integrator) is refused with a message naming what to use.
#[test]
fn a_solver_that_cannot_integrate_a_likelihood_is_refused() -> Result<()> {
    let r = sdeflow_plugins::registry()?;
    let spec = ring();
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    for solver in ["euler_maruyama", "dpmpp_2m"] {
        let pipeline = Pipeline::builder()
            .sde(r.sde("vp", "()")?)
            .model(r.model("gmm_oracle", &spec.oracle_params(), &ctx)?)
            .solver(r.solver(solver, "()")?)
            .steps(10)
            .dtype(DType::F64)
            .build()?;
        let x = Tensor::zeros((3, 2), DType::F64, &Device::Cpu)?;
        let msg = pipeline
            .log_likelihood(&x, 0, Trace::Exact)
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("rk4") && msg.contains("cannot carry"),
            "{solver}: {msg}"
        );
    }
    Ok(())
}

/// `sdeflow nll` on the oracle (dopri5, the default): the mean NLL of held-out rows equals the
/// exact law's within 1e-3 nats/dim, with Hutchinson's probes' standard error reported, the
/// variational bound beside it within its standard error, and its files written.
#[test]
fn sdeflow_nll_of_the_oracle_is_the_exact_nll() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sdeflow-nll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?;
    let spec = ring();
    let text = |trace: &str| {
        format!(
            "(\n    sde: vp(),\n    data: gmm({}),\n    model: gmm_oracle(),\n    solver: euler(),\n    \
             dtype: f64,\n    nll: (rows: 300, trace: {trace}),\n    jobs: [nll],\n)\n",
            spec.oracle_params()
                .trim_start_matches('(')
                .trim_end_matches(')')
        )
    };
    for (name, trace) in [
        ("exact", "exact"),
        ("hutchinson", "hutchinson(probes: 3, dist: rademacher)"),
    ] {
        let path = dir.join(format!("{name}.ron"));
        std::fs::write(&path, text(trace))
            .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?;
        let out = dir.join(name);
        let (code, stdout, err) = sdeflow_tests::run_cli(&[
            "run",
            path.to_str().unwrap_or_default(),
            "--out",
            out.to_str().unwrap_or_default(),
        ]);
        assert_eq!(code, 0, "{err}");
        for f in ["nll.npy", "latents.npy", "nll.png", "nll-summary.json"] {
            assert!(out.join(f).is_file(), "{f}: {stdout}");
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("nll-summary.json"))
                .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?,
        )
        .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?;
        let (nll, exact) = (
            summary["nll"].as_f64().unwrap_or(f64::NAN),
            summary["exact_nll"].as_f64().unwrap_or(f64::NAN),
        );
        let se = summary["nll_se_probes"].as_f64();
        let (bound, bound_se) = (
            summary["bound"]["nats"].as_f64().unwrap_or(f64::NAN),
            summary["bound"]["se"].as_f64().unwrap_or(f64::NAN),
        );
        println!(
            "{name}: NLL {nll:.6} vs exact {exact:.6}, probes' SE {se:?}; bound {bound:.4} ± {bound_se:.4}"
        );
        // The oracle's bound is tight up to VP's small prior mismatch at T.
        assert!((bound - exact).abs() <= 3.0 * bound_se + 0.01, "{stdout}");
        match name {
            "exact" => assert!((nll - exact).abs() / 2.0 <= 1e-3, "{stdout}"),
            _ => {
                let se = se.expect("Hutchinson reports its probes' standard error");
                assert!((nll - exact).abs() <= 3.0 * se + 1e-3, "{stdout}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The mlp's frozen copy (weights off the graph, for the trace's backward passes) computes
/// the same score and divergence as the tracked model, and follows a load into the original.
#[test]
fn a_frozen_network_gives_the_same_score_and_divergence() -> Result<()> {
    use sdeflow_kernel::{Denoiser, PerRow, likelihood::score_divergence};
    let r = sdeflow_plugins::registry()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let mlp = r.model(
        "mlp",
        "(hidden: 16, layers: 2, embed_dim: 8, seed: 5)",
        &ctx,
    )?;
    let frozen = mlp.frozen().expect("the mlp offers a frozen copy");
    let eps = r.param("eps", "()")?;
    let (tracked, cold) = (
        Denoiser::new(mlp.clone(), eps.clone(), None, None),
        Denoiser::new(frozen, eps, None, None),
    );
    let time = PerRow::Call(r.sde("vp", "()")?.coefs(0.2));
    let x = Tensor::from_vec(vec![0.3, -1.2, 2.0, 0.5, -0.7, 0.1], (3, 2), &Device::Cpu)?;
    let (s1, d1) = score_divergence(&tracked, &x, &time, None)?;
    let (s2, d2) = score_divergence(&cold, &x, &time, None)?;
    assert_eq!(s1.to_vec2::<f64>()?, s2.to_vec2::<f64>()?);
    let (d1, d2) = (d1.to_vec1::<f64>()?, d2.to_vec1::<f64>()?);
    for (a, b) in d1.iter().zip(&d2) {
        assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
    }
    // Scale every weight in the original: the frozen copy shares the storage.
    for var in mlp.varmap().expect("weights").all_vars() {
        var.set(&var.as_tensor().affine(0.5, 0.0)?)?;
    }
    let (s3, _) = score_divergence(&tracked, &x, &time, None)?;
    let (s4, _) = score_divergence(&cold, &x, &time, None)?;
    assert_eq!(s3.to_vec2::<f64>()?, s4.to_vec2::<f64>()?);
    assert_ne!(s1.to_vec2::<f64>()?, s3.to_vec2::<f64>()?);
    Ok(())
}

/// The variational bound (Song et al. 2021, Theorem 1) of the oracle on the ring under VP:
/// with the exact score and the exact p_T in place of the prior it is tight, its mean over
/// rows within 3 standard errors of the exact NLL; with the SDE's prior it is the reverse
/// SDE's bound, above the exact NLL by the prior's mismatch. The same row gets the same
/// bound in any batch.
#[test]
fn the_oracle_variational_bound_is_tight() -> Result<()> {
    let r = sdeflow_plugins::registry()?;
    let spec = ring();
    let law = spec.mixture()?;
    let ctx = ModelContext::new(Device::Cpu, DType::F64);
    let sde = r.sde("vp", "()")?;
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .model(r.model("gmm_oracle", &spec.oracle_params(), &ctx)?)
        .solver(r.solver("dopri5", "()")?)
        .dtype(DType::F64)
        .build()?;
    let (c0, ct) = (sde.coefs(sde.t_eps()), sde.coefs(sde.t_max()));
    let at_eps = law.marginal(c0.alpha, c0.sigma)?;
    let at_t = law.marginal(ct.alpha, ct.sigma)?;
    let n = 400;
    let rows = at_eps.sample(21, 0, n);
    let x = Tensor::from_vec(rows.clone(), (n, 2), &Device::Cpu)?;
    let truth: Vec<f64> = at_eps.eval(&rows).iter().map(|e| -e.log_prob).collect();
    let b = pipeline.variational_bound(&x, 0, 256)?;
    // E[−log p_T(x_T)], x_T = a x + s ε, by Monte Carlo with 256 draws per row.
    let a = ct.alpha / c0.alpha;
    let s = (ct.sigma.powi(2) - a * a * c0.sigma.powi(2)).sqrt();
    let draws = 256;
    let z = law.marginal(0.0, 1.0)?.sample(5, 0, n * draws);
    let mut exact_prior = Vec::with_capacity(n);
    for i in 0..n {
        let pts: Vec<f64> = (0..draws)
            .flat_map(|j| {
                let k = 2 * (i * draws + j);
                [
                    a * rows[2 * i] + s * z[k],
                    a * rows[2 * i + 1] + s * z[k + 1],
                ]
            })
            .collect();
        let lp = at_t.eval(&pts);
        exact_prior.push(-lp.iter().map(|e| e.log_prob).sum::<f64>() / draws as f64);
    }
    let gap: Vec<f64> = (0..n)
        .map(|i| exact_prior[i] + b.integral[i] - truth[i])
        .collect();
    let mean = gap.iter().sum::<f64>() / n as f64;
    let sd = (gap.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let se = sd / (n as f64).sqrt();
    let with_prior = (0..n).map(|i| b.value[i] - truth[i]).sum::<f64>() / n as f64;
    let row_se = b.se.iter().map(|v| v * v).sum::<f64>().sqrt() / n as f64;
    println!(
        "bound − exact NLL: exact p_T {mean:.4} ± {se:.4} (rows' own SE {row_se:.4}); SDE prior {with_prior:.4}; NFE {}",
        b.nfe
    );
    assert!(mean.abs() <= 3.0 * se, "{mean} ± {se}");
    assert!(with_prior > -3.0 * se, "{with_prior}");
    // Row 7 alone gets the bits it got in the batch.
    let one = pipeline.variational_bound(&x.narrow(0, 7, 1)?, 7, 256)?;
    assert_eq!(one.value[0].to_bits(), b.value[7].to_bits());
    Ok(())
}
