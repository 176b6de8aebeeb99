//! The pipeline: the builder's checks and defaults, the prior draw, NFE counting, NaN/Inf
//! detection naming the step, trajectory capture, the noise counter threaded through steps,
//! resuming from a saved state, and the PF-ODE flow of a Gaussian reached by the loop.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{
    BreaksBelow, EdmSde, EpsParam, ExpSde, GaussianEps, NoisyEuler, OdeEuler, OdeHeun,
    RecordingNoise, TempDir, flat, normals,
};
use sdeflow_kernel::{
    Denoiser, Discretization, Error, ForwardSde, GridKind, HistoryEntry, Pipeline, PipelineBuilder,
    Result, State,
    noise::{Stream, philox_key, philox_normal_tensor},
};

fn gaussian() -> Arc<GaussianEps> {
    Arc::new(GaussianEps {
        mean: vec![0.5, -1.0, 2.0],
        std: 0.3,
    })
}

fn builder() -> PipelineBuilder {
    Pipeline::builder()
        .sde(Arc::new(ExpSde::new()))
        .param(Arc::new(EpsParam))
        .model(gaussian())
        .solver(Arc::new(OdeEuler))
}

#[test]
fn nfe_counted_equals_claimed_nfe_times_steps() -> Result<()> {
    for steps in [1, 2, 3, 17, 100] {
        for (solver, per_step) in [
            (Arc::new(OdeEuler) as Arc<dyn sdeflow_kernel::Solver>, 1u64),
            (Arc::new(OdeHeun), 2),
            (Arc::new(NoisyEuler { draws: 3 }), 1),
        ] {
            assert_eq!(solver.claims().nfe_per_step as u64, per_step);
            let p = builder().solver(solver).steps(steps).build()?;
            let out = p.sample(5)?;
            assert_eq!(out.nfe, per_step * steps as u64, "{steps} steps");
            assert_eq!(out.state.step, steps);
            assert_eq!(out.state.t, p.sde().t_eps());
            assert_eq!(out.state.x.dims(), &[5, 3]);
        }
    }
    Ok(())
}

#[test]
fn schedule_defaults_to_the_solvers_and_can_be_overridden() -> Result<()> {
    let sde = ExpSde::new();
    let p = builder().build()?;
    // OdeEuler's declared default: 25 quadratic steps.
    assert_eq!(
        p.discretization(),
        Discretization {
            steps: 25,
            grid: GridKind::Quadratic
        }
    );
    assert_eq!(p.times(), GridKind::Quadratic.times(&sde, 25)?.as_slice());
    let p = builder().steps(7).grid(GridKind::LogSnr).build()?;
    assert_eq!(p.discretization().steps, 7);
    assert_eq!(p.times(), GridKind::LogSnr.times(&sde, 7)?.as_slice());
    let p = builder().steps(4).build()?;
    assert_eq!(p.discretization().grid, GridKind::Quadratic);
    assert_eq!(p.dtype(), DType::F32);
    assert!(matches!(p.device(), Device::Cpu));
    assert_eq!(p.solver().claims().nfe_per_step, 1);
    assert_eq!(p.sde().t_max(), 1.0);
    Ok(())
}

fn expect_invalid(r: Result<Pipeline>, plugin: &str, field: &str) {
    match r {
        Err(Error::InvalidParam {
            plugin: p,
            field: f,
            ..
        }) => {
            assert_eq!((p.as_str(), f.as_str()), (plugin, field));
        }
        other => panic!("expected an invalid `{field}`, got {other:?}"),
    }
}

#[test]
fn builder_rejects_missing_parts_and_bad_settings() -> Result<()> {
    let sde = || Arc::new(ExpSde::new());
    let solver = || Arc::new(OdeEuler);
    expect_invalid(
        Pipeline::builder()
            .param(Arc::new(EpsParam))
            .model(gaussian())
            .solver(solver())
            .build(),
        "pipeline",
        "sde",
    );
    expect_invalid(
        Pipeline::builder()
            .sde(sde())
            .model(gaussian())
            .solver(solver())
            .build(),
        "pipeline",
        "param",
    );
    expect_invalid(
        Pipeline::builder()
            .sde(sde())
            .param(Arc::new(EpsParam))
            .solver(solver())
            .build(),
        "pipeline",
        "model",
    );
    expect_invalid(
        Pipeline::builder()
            .sde(sde())
            .param(Arc::new(EpsParam))
            .model(gaussian())
            .build(),
        "pipeline",
        "solver",
    );
    expect_invalid(Pipeline::builder().build(), "pipeline", "sde");
    expect_invalid(
        builder().chunk_rows(Some(0)).build(),
        "pipeline",
        "chunk_rows",
    );
    expect_invalid(builder().steps(0).build(), "grid", "steps");
    expect_invalid(
        builder().grid(GridKind::Karras { rho: -1.0 }).build(),
        "grid",
        "rho",
    );
    assert!(builder().chunk_rows(None).build().is_ok());
    assert!(builder().chunk_rows(Some(1)).build().is_ok());
    Ok(())
}

/// The first state holds prior_std × the Philox draws 0..d of each sample in the sampling
/// stream of the seed, at T, with `draws` = d consumed.
#[test]
fn prior_state_is_the_scaled_sampling_stream() -> Result<()> {
    let p = Pipeline::builder()
        .sde(Arc::new(EdmSde))
        .param(Arc::new(EpsParam))
        .model(gaussian())
        .solver(Arc::new(OdeEuler))
        .seed(31)
        .dtype(DType::F64)
        .build()?;
    let state = p.prior_state(100, 6)?;
    assert_eq!(state.x.dims(), &[6, 3]);
    assert_eq!(
        (state.t, state.step, state.sample_offset, state.draws),
        (80.0, 0, 100, 3)
    );
    assert!(state.history.is_empty() && state.extras.is_empty());
    let z = philox_normal_tensor(
        philox_key(31, Stream::Sampling),
        100,
        6,
        3,
        0,
        DType::F64,
        &Device::Cpu,
    )?;
    for (x, z) in flat(&state.x)?.iter().zip(flat(&z)?) {
        assert_eq!(*x, 80.0 * z);
    }
    Ok(())
}

/// A model whose output turns NaN (or ±∞) once t < 0.5 is caught right after the first step
/// that evaluated it: the error names that step and the time it reached.
#[test]
fn non_finite_values_are_caught_at_the_step_they_appear() -> Result<()> {
    let steps = 10;
    for (below_t, value) in [
        (0.5, f64::NAN),
        (0.5, f64::INFINITY),
        (0.25, f64::NEG_INFINITY),
        (2.0, f64::NAN),
    ] {
        let p = builder()
            .model(Arc::new(BreaksBelow { below_t, value }))
            .steps(steps)
            .grid(GridKind::Uniform)
            .build()?;
        let ts = p.times().to_vec();
        // OdeEuler evaluates at the step's start: the first step starting below the threshold.
        let want = (0..steps).find(|&i| ts[i] < below_t).unwrap_or(0);
        match p.sample_range(10, 4) {
            Err(e @ Error::NonFinite { .. }) => {
                let Error::NonFinite {
                    ref what,
                    step,
                    t,
                    ref rows,
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(what, "samples");
                // Every row broke: the first ones, by their index in the run.
                assert_eq!(rows, &[10, 11, 12, 13]);
                assert_eq!(step, want, "below {below_t}");
                assert_eq!(t, ts[want + 1]);
                let msg = e.to_string();
                assert!(msg.contains(&format!("at step {want} ")), "{msg}");
                assert!(msg.starts_with("non-finite values in samples"), "{msg}");
            }
            other => panic!("below {below_t}: expected NonFinite, got {other:?}"),
        }
        // Asked for, the values go through to the end.
        let kept = builder()
            .model(Arc::new(BreaksBelow { below_t, value }))
            .steps(steps)
            .grid(GridKind::Uniform)
            .keep_non_finite(true)
            .build()?
            .sample(4)?;
        assert!(!sdeflow_kernel::ops::all_finite(&kept.state.x)?);
    }
    Ok(())
}

#[test]
fn trajectory_capture_keeps_one_entry_per_step() -> Result<()> {
    for steps in [1, 6] {
        let p = builder().steps(steps).capture_trajectory(true).build()?;
        let out = p.sample(3)?;
        assert_eq!(out.trajectory.len(), steps);
        for (i, (t, x)) in out.trajectory.iter().enumerate() {
            assert_eq!(*t, p.times()[i + 1]);
            assert_eq!(x.dims(), &[3, 3]);
        }
        let last = &out.trajectory[steps - 1].1;
        assert_eq!(flat(last)?, flat(&out.state.x)?);
        // Entries differ from step to step (the Gaussian's flow moves every sample).
        if steps > 1 {
            assert_ne!(flat(&out.trajectory[0].1)?, flat(last)?);
        }
    }
    let out = builder().steps(6).build()?.sample(3)?;
    assert!(out.trajectory.is_empty());
    Ok(())
}

/// Every noise request carries the seed, the rows, the step's times, its index within the
/// step and the next draw index: the prior takes draws 0..d, then each call d more.
#[test]
fn noise_requests_thread_the_draw_counter() -> Result<()> {
    let noise = Arc::new(RecordingNoise::default());
    let (steps, per_step, d) = (3usize, 2usize, 3u64);
    let p = builder()
        .solver(Arc::new(NoisyEuler { draws: per_step }))
        .noise(noise.clone())
        .steps(steps)
        .seed(8)
        .build()?;
    let out = p.sample_range(10, 4)?;
    let reqs = noise.requests.lock().expect("lock").clone();
    assert_eq!(reqs.len(), steps * per_step);
    for (k, r) in reqs.iter().enumerate() {
        let (i, j) = (k / per_step, k % per_step);
        assert_eq!(
            (r.seed, r.sample_offset, r.rows, r.cols),
            (8, 10, 4, d as usize)
        );
        assert_eq!(
            r.draw_offset,
            d + (i * per_step + j) as u64 * d,
            "request {k}"
        );
        assert_eq!(r.index_in_step, j as u64);
        assert_eq!((r.t_from, r.t_to), (p.times()[i], p.times()[i + 1]));
    }
    assert_eq!(out.state.draws, d * (1 + (steps * per_step) as u64));
    assert_eq!(out.state.sample_offset, 10);
    Ok(())
}

/// A run stopped after k steps, saved, loaded and resumed gives the same bits as the run that
/// never stopped. The state at step k is rebuilt from the trajectory and the documented
/// counters (one draw of d per step after the prior's d); its history, the (λ, x̂₀) of the
/// last two steps, from the model at those states.
#[test]
fn resuming_a_saved_state_reproduces_the_uninterrupted_run() -> Result<()> {
    let dir = TempDir::new("resume")?;
    let steps = 10;
    let p = builder()
        .solver(Arc::new(NoisyEuler { draws: 1 }))
        .steps(steps)
        .grid(GridKind::Uniform)
        .seed(77)
        .capture_trajectory(true)
        .build()?;
    let full = p.sample_range(3, 5)?;
    let prior = p.prior_state(3, 5)?;
    let x_at = |j: usize| {
        if j == 0 {
            prior.x.clone()
        } else {
            full.trajectory[j - 1].1.clone()
        }
    };
    let denoiser = Denoiser::new(gaussian(), Arc::new(EpsParam), None, None);
    for k in [1, 4, 9] {
        let mut mid = State::new(x_at(k), p.times()[k], 3);
        mid.step = k;
        mid.draws = 3 * (1 + k as u64);
        mid.extras
            .insert("steps".into(), Tensor::new(&[k as f64], &Device::Cpu)?);
        for j in k.saturating_sub(2)..k {
            let c = p.sde().coefs(p.times()[j]);
            mid.history
                .push(HistoryEntry::x0(&c, denoiser.eval(&x_at(j), &c)?.x0()?));
        }
        let path = dir.join(&format!("state-{k}.safetensors"));
        mid.save(&path)?;
        let resumed = p.run(State::load(&path, &Device::Cpu)?)?;
        assert_eq!(resumed.nfe, (steps - k) as u64);
        assert_eq!(resumed.trajectory.len(), steps - k);
        let (a, b) = (&resumed.state, &full.state);
        assert_eq!(flat(&a.x)?, flat(&b.x)?, "resumed at {k}");
        assert_eq!(
            (a.t, a.step, a.draws, a.sample_offset),
            (b.t, b.step, b.draws, b.sample_offset)
        );
        assert_eq!(flat(&a.extras["steps"])?, vec![steps as f64]);
        assert_eq!(a.history.len(), b.history.len());
        for (h, g) in a.history.iter().zip(&b.history) {
            assert_eq!(h.lambda, g.lambda);
            assert_eq!(flat(&h.x0_hat)?, flat(&g.x0_hat)?);
        }
    }
    // A state already at the last step runs no step.
    let done = p.run(full.state.clone())?;
    assert_eq!(done.nfe, 0);
    assert_eq!(flat(&done.state.x)?, flat(&full.state.x)?);
    Ok(())
}

/// The PF-ODE of data N(m, s² I) is affine: x_t = α_t m + √(v_t/v_T) (x_T − α_T m) with
/// v = α² s² + σ² (MATH.md §7 with one component). Heun through the pipeline reaches it with
/// an error that falls by 2² = 4 when the steps double (within [3, 5]), and is small at 400.
#[test]
fn pipeline_integrates_the_gaussian_flow() -> Result<()> {
    let sde = ExpSde::new();
    let model = gaussian();
    let x_t = normals(12, 50, 3)?;
    let v = |t: f64| sde.alpha(t).powi(2) * model.std * model.std + sde.sigma(t).powi(2);
    let scale = (v(sde.t_eps) / v(sde.t_max)).sqrt();
    let xs = flat(&x_t)?;
    let exact: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(k, x)| {
            let m = model.mean[k % 3];
            sde.alpha(sde.t_eps) * m + scale * (x - sde.alpha(sde.t_max) * m)
        })
        .collect();
    let err = |steps: usize| -> Result<f64> {
        let p = builder()
            .model(model.clone())
            .solver(Arc::new(OdeHeun))
            .steps(steps)
            .grid(GridKind::Uniform)
            .dtype(DType::F64)
            .build()?;
        let out = p.run(State::new(x_t.clone(), sde.t_max, 0))?;
        assert_eq!(out.state.x.dtype(), DType::F64);
        Ok(flat(&out.state.x)?
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max))
    };
    let (e200, e400) = (err(200)?, err(400)?);
    let ratio = e200 / e400;
    assert!(
        (3.0..=5.0).contains(&ratio),
        "errors {e200:e}, {e400:e}: ratio {ratio}"
    );
    assert!(e400 < 1e-3, "error at 400 steps {e400:e}");
    Ok(())
}

/// A zero-row shard is a valid (empty) job.
#[test]
fn empty_shard_samples_nothing() -> Result<()> {
    let p = builder().steps(3).build()?;
    let out = p.sample_range(7, 0)?;
    assert_eq!(out.state.x.dims(), &[0, 3]);
    Ok(())
}
