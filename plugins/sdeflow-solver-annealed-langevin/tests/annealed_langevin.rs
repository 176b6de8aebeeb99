//! Annealed Langevin dynamics against its formula: x scaled by α_s/α_t, then M Langevin steps
//! x ← x + ε ŝ(x, s) + sqrt(2ε) z at the level s with ε = 2 (r σ_s)², no predictor (the OU SDE with the exact
//! score of a Gaussian, sdeflow_kernel::testing, to 1e-12); batch-free; claims, validation and
//! registration.

use sdeflow_kernel::{
    ForwardSde, GridKind, Order, Result, Solver,
    noise::{ConstantNoise, PhiloxNoise},
    testing::{Gaussian, Ou, assert_close, normals, one_step, rows},
};
use sdeflow_solver_annealed_langevin::{AnnealedLangevin, Params};

fn sampler(steps_per_level: usize, snr: f64) -> Result<AnnealedLangevin> {
    AnnealedLangevin::new(Params {
        steps_per_level,
        snr,
    })
}

/// M Langevin steps at s from α_{t|s} x_t, coordinate by coordinate, with constant noise `z`.
fn expected(
    model: &Gaussian,
    x: &[Vec<f64>],
    (t, s): (f64, f64),
    m: usize,
    r: f64,
    z: f64,
) -> Vec<Vec<f64>> {
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let eps = 2.0 * r * r * cs.sigma * cs.sigma;
    x.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, &xt)| {
                    let mut v = cs.alpha / ct.alpha * xt;
                    for _ in 0..m {
                        v += eps * model.score(v, j, &cs) + (2.0 * eps).sqrt() * z;
                    }
                    v
                })
                .collect()
        })
        .collect()
}

/// A level is M Langevin steps at s with the batch-free step size; NFE and noise draws are M
/// per level, to 1e-12.
#[test]
fn a_level_is_m_langevin_steps() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(1, 5, 2)?;
    for (t, s, m, r) in [
        (1.0, 0.9, 1, 0.16),
        (0.4, 0.39, 3, 0.3),
        (0.01, 1e-3, 7, 0.16),
    ] {
        let solver = sampler(m, r)?;
        for z in [0.0, 1.0] {
            let out = one_step(&solver, &Ou, &model, &ConstantNoise(z), &x, t, s)?;
            let what = format!("t = {t}, s = {s}, M = {m}, z = {z}");
            assert_eq!(
                (out.nfe, out.draw_calls, out.draws),
                (m as u64, m as u64, 2 * m as u64),
                "{what}"
            );
            let want = expected(&model, &rows(&x)?, (t, s), m, r, z);
            assert_close(&rows(&out.x)?, &want, 1e-12, &what);
        }
    }
    Ok(())
}

/// A sample's steps are the same alone as among others.
#[test]
fn a_sample_does_not_depend_on_its_batch_mates() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(3, 6, 2)?;
    let solver = sampler(4, 0.16)?;
    let all = rows(&one_step(&solver, &Ou, &model, &PhiloxNoise, &x, 0.7, 0.6)?.x)?;
    let first = rows(
        &one_step(
            &solver,
            &Ou,
            &model,
            &PhiloxNoise,
            &x.narrow(0, 0, 1)?,
            0.7,
            0.6,
        )?
        .x,
    )?;
    assert_eq!(first[0], all[0]);
    Ok(())
}

/// NFE per level = M, so a run costs L·M; a plateau of r; stochastic and affine; NCSN's 10
/// levels on the log-SNR grid by default.
#[test]
fn claims() -> Result<()> {
    let solver = sampler(100, 0.16)?;
    let c = solver.claims();
    assert_eq!(c.order, Order::Plateau { snr: 0.16 });
    assert_eq!(c.nfe_per_step, 100);
    assert!(c.stochastic && c.affine);
    let d = solver.default_discretization(&Ou);
    assert_eq!((d.steps, d.grid), (10, GridKind::LogSnr));
    assert_eq!(d.steps * c.nfe_per_step, 1000);
    Ok(())
}

/// M = 0 and r outside (0, 1) are errors naming the field.
#[test]
fn parameters_are_validated() {
    for (m, r, field) in [
        (0, 0.16, "steps_per_level"),
        (10, 0.0, "snr"),
        (10, 1.0, "snr"),
    ] {
        let e = sampler(m, r).expect_err("invalid");
        assert!(e.to_string().contains(field), "{e}");
    }
}

/// The registration builds the same solver, with its defaults.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("annealed_langevin", "()")?.claims(),
        sampler(100, 0.16)?.claims()
    );
    assert_eq!(
        reg.solver("annealed_langevin", "(steps_per_level: 5, snr: 0.1)")?
            .claims()
            .nfe_per_step,
        5
    );
    Ok(())
}
