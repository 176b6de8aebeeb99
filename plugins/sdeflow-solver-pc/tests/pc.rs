//! The predictor–corrector against MATH.md §5: the predictor's step, then M Langevin steps
//! x ← x + ε_L ŝ + sqrt(2 ε_L) z at s with ε_L = 2 α_{t|s}² (r σ_s)² (or the per-sample
//! norms), claims derived from the predictor's, validation and the nested RON reference.
//!
//! The predictors are test-local solvers registered here (a plugin must not depend on another
//! plugin crate): `test_em`, Euler–Maruyama, and `test_ode`, a deterministic Euler step.

use std::sync::Arc;

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Result, Solver, SolverClaims,
    SolverRef, State, Step, StepContext,
    noise::{ConstantNoise, PhiloxNoise},
    ops::lin3,
    register_solver,
    testing::{Gaussian, Ou, assert_close, normals, one_step, rows},
};
use sdeflow_solver_pc::{Params, Pc, StepSize};
use serde::{Deserialize, Serialize};

/// Euler–Maruyama: x − (f x − g² ŝ) h + g √h z at t (MATH.md §5).
#[derive(Debug)]
struct TestEm;

impl Solver for TestEm {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Sde {
                weak: 1.0,
                strong: 1.0,
            },
            nfe_per_step: 1,
            stochastic: true,
            affine: true,
            equation: Equation::ReverseSde,
            natural_grid: GridKind::Quadratic,
        }
    }
    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 1000,
            grid: GridKind::Uniform,
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (c, h) = (&ctx.from, ctx.h());
        let score = ctx.eval(&state.x, c)?.score()?;
        let z = ctx.standard_normal(state)?;
        let x = lin3(
            1.0 - c.f * h,
            &state.x,
            c.g2 * h,
            &score,
            (c.g2 * h).sqrt(),
            &z,
        )?;
        Ok(Step::to(state.with_x(x)))
    }
}

/// A deterministic step (the identity), which pc must refuse as its predictor.
#[derive(Debug)]
struct TestOde;

impl Solver for TestOde {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            stochastic: false,
            order: Order::Ode(1.0),
            equation: Equation::ProbabilityFlowOde,
            ..TestEm.claims()
        }
    }
    fn default_discretization(&self, sde: &dyn ForwardSde) -> Discretization {
        TestEm.default_discretization(sde)
    }
    fn step(&self, _ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        Ok(Step::to(state.clone()))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

register_solver!(
    "test_em",
    "test-local Euler–Maruyama",
    NoParams,
    |_: NoParams| Ok(TestEm)
);
register_solver!(
    "test_ode",
    "test-local deterministic step",
    NoParams,
    |_: NoParams| { Ok(TestOde) }
);

fn pc(corrector_steps: usize, snr: f64, step_size: StepSize) -> Result<Pc> {
    Pc::new(Params {
        predictor: SolverRef::built("test_em", Arc::new(TestEm)),
        corrector_steps,
        snr,
        step_size,
    })
}

/// EM's step at (t → s) with noise value `z` (a constant), then the Langevin steps at s with
/// constant noise `z` and ε = 2 e^{−2(t−s)} (r σ_s)², coordinate by coordinate.
fn expected(
    model: &Gaussian,
    x: &[Vec<f64>],
    t: f64,
    s: f64,
    m: usize,
    r: f64,
    z: f64,
) -> Vec<Vec<f64>> {
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = t - s;
    let eps = 2.0 * (-2.0 * h).exp() * r * r * cs.sigma * cs.sigma;
    x.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, &xt)| {
                    let mut v = xt - (ct.f * xt - ct.g2 * model.score(xt, j, &ct)) * h
                        + (ct.g2 * h).sqrt() * z;
                    for _ in 0..m {
                        v += eps * model.score(v, j, &cs) + (2.0 * eps).sqrt() * z;
                    }
                    v
                })
                .collect()
        })
        .collect()
}

/// The step is the predictor's, then M Langevin steps with the batch-free step size; NFE and
/// draws are 1 + M per step (per coordinate), to 1e-12.
#[test]
fn predictor_then_langevin_steps() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(1, 5, 2)?;
    for (t, s, m) in [(1.0, 0.9, 1), (0.4, 0.39, 3), (0.01, 1e-3, 2)] {
        let solver = pc(m, 0.16, StepSize::ExpectedNorm)?;
        for z in [0.0, 1.0] {
            let out = one_step(&solver, &Ou, &model, &ConstantNoise(z), &x, t, s)?;
            let what = format!("t = {t}, s = {s}, M = {m}, z = {z}");
            assert_eq!(
                (out.nfe, out.draw_calls, out.draws),
                (1 + m as u64, 1 + m as u64, 2 * (1 + m as u64)),
                "{what}"
            );
            let want = expected(&model, &rows(&x)?, t, s, m, 0.16, z);
            assert_close(&rows(&out.x)?, &want, 1e-12, &what);
        }
    }
    Ok(())
}

/// The per-sample rule: ε_i = 2 a r² ‖z_i‖²/‖ŝ_i‖² for each row; with z = 1, ‖z‖² = d.
#[test]
fn per_sample_norm_step_size() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(2, 4, 2)?;
    let (t, s, r) = (0.5, 0.45, 0.2);
    let solver = pc(1, r, StepSize::PerSampleNorm)?;
    let out = one_step(&solver, &Ou, &model, &ConstantNoise(1.0), &x, t, s)?;
    let predicted = expected(&model, &rows(&x)?, t, s, 0, r, 1.0);
    let cs = Ou.coefs(s);
    let a = (-2.0 * (t - s)).exp();
    let want: Vec<Vec<f64>> = predicted
        .iter()
        .map(|row| {
            let score: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(j, &v)| model.score(v, j, &cs))
                .collect();
            let eps = 2.0 * a * r * r * row.len() as f64 / score.iter().map(|g| g * g).sum::<f64>();
            row.iter()
                .zip(&score)
                .map(|(v, g)| v + eps * g + (2.0 * eps).sqrt())
                .collect()
        })
        .collect();
    assert_close(&rows(&out.x)?, &want, 1e-12, "per-sample norms");
    Ok(())
}

/// Never a batch average: a sample's step is the same alone as among others, for both rules.
#[test]
fn a_sample_does_not_depend_on_its_batch_mates() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(3, 6, 2)?;
    for rule in [StepSize::ExpectedNorm, StepSize::PerSampleNorm] {
        let solver = pc(2, 0.16, rule)?;
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
        assert_eq!(first[0], all[0], "{rule:?}");
    }
    Ok(())
}

/// Claims follow the predictor's: NFE 1 + M, its grid, affine only with the expected-norm
/// rule; the order is the plateau of r; the default spends at most 1,000 NFE.
#[test]
fn claims_derive_from_the_predictor() -> Result<()> {
    let c = pc(3, 0.1, StepSize::ExpectedNorm)?.claims();
    assert_eq!(
        c,
        SolverClaims {
            order: Order::Plateau { snr: 0.1 },
            nfe_per_step: 4,
            stochastic: true,
            affine: true,
            equation: Equation::ReverseSde,
            natural_grid: GridKind::Quadratic,
        }
    );
    assert!(!pc(1, 0.1, StepSize::PerSampleNorm)?.claims().affine);
    assert_eq!(
        pc(3, 0.1, StepSize::ExpectedNorm)?.default_discretization(&Ou),
        Discretization {
            steps: 250,
            grid: GridKind::Uniform
        }
    );
    Ok(())
}

/// A deterministic predictor, M = 0 and r outside (0, 1) are errors naming their field.
#[test]
fn parameters_are_validated() -> Result<()> {
    let field_of = |e: Error| match e {
        Error::InvalidParam { field, .. } => field,
        other => panic!("{other}"),
    };
    let ode = Pc::new(Params {
        predictor: SolverRef::built("test_ode", Arc::new(TestOde)),
        ..Params::default()
    })
    .unwrap_err();
    assert_eq!(field_of(ode), "predictor");
    assert_eq!(
        field_of(pc(0, 0.16, StepSize::ExpectedNorm).unwrap_err()),
        "corrector_steps"
    );
    for r in [0.0, 1.0, -0.1, f64::NAN] {
        assert_eq!(
            field_of(pc(1, r, StepSize::ExpectedNorm).unwrap_err()),
            "snr"
        );
    }
    Ok(())
}

/// The predictor is named in RON like a config's solver; an unknown name lists the registered
/// solvers with the position; a deterministic one is refused.
#[test]
fn registration_reads_a_nested_predictor() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    let built = reg.solver(
        "pc",
        "(predictor: test_em(), corrector_steps: 2, snr: 0.1, step_size: per_sample_norm)",
    )?;
    assert_eq!(built.claims().nfe_per_step, 3);
    assert!(!built.claims().affine);
    let err = reg
        .solver("pc", "(predictor: test_emm())")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1:13") && err.contains("test_em"), "{err}");
    let err = reg
        .solver("pc", "(predictor: test_ode())")
        .unwrap_err()
        .to_string();
    assert!(err.contains("deterministic"), "{err}");
    assert!(reg.solver("pc", "(snr: 0.16, corector_steps: 1)").is_err());
    Ok(())
}
