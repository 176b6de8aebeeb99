//! Euler–Maruyama's claims and one step against MATH.md §5 computed by hand:
//! x_s = x_t − (f x_t − g² ŝ) h + g √h z, with the coefficients at the step's start, one
//! noise draw per coordinate and one model evaluation per step.
//!
//! The SDE and the score model are test-local, their formulas stated beside them: here f and
//! g² vary in time (`sdeflow_kernel::testing::Ou` has them constant, which would not tell the
//! step's start from its end), and ŝ = −x/v is a fixed affine map.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use sdeflow_kernel::{
    At, Denoiser, Discretization, Equation, ForwardSde, GridKind, Order, Result, RunContext,
    ScoreModel, Solver, SolverClaims, State, StepSpan,
    noise::{ConstantNoise, NoiseSource, PhiloxNoise},
    testing::{EpsParam, flat, normals},
};
use sdeflow_solver_euler_maruyama::EulerMaruyama;

const EPS: f64 = f64::EPSILON;

/// VP with β(t) = 2t: B = t², α = e^{−t²/2}, σ = √(1 − e^{−t²}), f = −β/2 = −t, g² = β = 2t
/// (MATH.md §1's VP row). Time-varying f and g² tell the step's start from its end.
#[derive(Debug)]
struct LinearBetaVp;

impl ForwardSde for LinearBetaVp {
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_eps(&self) -> f64 {
        1e-3
    }
    fn alpha(&self, t: f64) -> f64 {
        (-0.5 * t * t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(-t * t).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -t
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * t
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// A model whose score is affine, ŝ(x) = −x/v, reported as ε̂ = −σ ŝ = σ x/v.
#[derive(Debug)]
struct AffineScore {
    v: f64,
    d: usize,
}

impl ScoreModel for AffineScore {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.d]
    }
    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.affine(at.call("AffineScore")?.sigma / self.v, 0.0)?)
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

const V: f64 = 0.7;

fn denoiser(d: usize) -> Denoiser {
    Denoiser::new(
        Arc::new(AffineScore { v: V, d }),
        Arc::new(EpsParam),
        None,
        None,
    )
}

/// One step from `t` to `s` on `x` with `noise`; returns (x_s, draws taken, NFE).
fn one_step(
    noise: &dyn NoiseSource,
    state: &State,
    t: f64,
    s: f64,
    d: usize,
) -> Result<(Tensor, u64, u64)> {
    let sde = LinearBetaVp;
    let den = denoiser(d);
    let ctx = RunContext::new(&sde, &den, noise, 5).step(StepSpan {
        from: sde.coefs(t),
        to: sde.coefs(s),
        step: 3,
        steps: 10,
    });
    let step = EulerMaruyama.step(&ctx, state)?;
    assert!(step.error_estimate.is_none());
    Ok((step.state.x, ctx.draws_taken(), den.nfe()))
}

/// MATH.md §5: x_s = x − (f x − g² ŝ) h + g √h z with ŝ = −x/v, so per element
/// x_s = x (1 − f h − g² h / v) + g √h z, f and g² at the step's start t. The step forms
/// three products and two sums of terms of size ≤ |x|(1 + |f|h + g²h/v) + g√h|z|: 8ε of that.
#[test]
fn step_equals_the_hand_computed_update() -> Result<()> {
    let d = 3;
    let x = normals(1, 6, d)?;
    for (t, s) in [(0.6, 0.55), (1.0, 0.9), (0.01, 1e-3)] {
        let state = State::new(x.clone(), t, 0);
        let from = LinearBetaVp.coefs(t);
        let h = t - s;
        for z in [0.0, 1.0, -2.5] {
            let (xs, draws, nfe) = one_step(&ConstantNoise(z), &state, t, s, d)?;
            assert_eq!(xs.dims(), &[6, 3]);
            assert_eq!((draws, nfe), (d as u64, 1));
            for (xi, got) in flat(&x)?.iter().zip(flat(&xs)?) {
                let score = -xi / V;
                let want = xi - (from.f * xi - from.g2 * score) * h + from.g2.sqrt() * h.sqrt() * z;
                let scale = xi.abs() * (1.0 + from.f.abs() * h + from.g2 * h / V)
                    + (from.g2 * h).sqrt() * z.abs();
                assert!(
                    (got - want).abs() <= 8.0 * EPS * scale,
                    "t = {t}, z = {z}: {got} vs {want}"
                );
            }
        }
    }
    Ok(())
}

/// The noise enters as g(t)√h z exactly: the steps with z = 1 and z = 0 differ by g√h in every
/// coordinate (to the rounding of the two results, 4ε of their size).
#[test]
fn noise_coefficient_is_g_sqrt_h() -> Result<()> {
    let d = 2;
    let x = normals(2, 4, d)?;
    let state = State::new(x, 0.8, 0);
    let (t, s) = (0.8, 0.7);
    let (x0, ..) = one_step(&ConstantNoise(0.0), &state, t, s, d)?;
    let (x1, ..) = one_step(&ConstantNoise(1.0), &state, t, s, d)?;
    // g² = 2t at t = 0.8, h = 0.1.
    let want = (2.0 * 0.8 * 0.1f64).sqrt();
    for (a, b) in flat(&x0)?.iter().zip(flat(&x1)?) {
        assert!(
            ((b - a) - want).abs() <= 4.0 * EPS * (a.abs() + b.abs()),
            "{}",
            b - a
        );
    }
    Ok(())
}

/// The noise comes from the step context, keyed by the state's sample offset and draw counter:
/// with Philox noise the step equals the hand update with the z that a fresh context draws for
/// the same state. One draw per coordinate of a `[n, 2, 3]` sample (d = 6), one NFE.
#[test]
fn philox_noise_comes_from_the_context() -> Result<()> {
    let (rows, d) = (4, 6);
    let x = normals(3, rows, d)?.reshape((rows, 2, 3))?;
    let mut state = State::new(x.clone(), 0.5, 11);
    state.draws = 7;
    let (t, s) = (0.5, 0.45);
    let (xs, draws, nfe) = one_step(&PhiloxNoise, &state, t, s, d)?;
    assert_eq!(xs.dims(), &[rows, 2, 3]);
    assert_eq!((draws, nfe), (d as u64, 1));

    let sde = LinearBetaVp;
    let den = denoiser(d);
    let ctx = RunContext::new(&sde, &den, &PhiloxNoise, 5).step(StepSpan {
        from: sde.coefs(t),
        to: sde.coefs(s),
        step: 3,
        steps: 10,
    });
    let z = flat(&ctx.standard_normal(&state)?)?;
    let from = sde.coefs(t);
    let h = t - s;
    for ((xi, zi), got) in flat(&x)?.iter().zip(z).zip(flat(&xs)?) {
        let want = xi * (1.0 - from.f * h - from.g2 * h / V) + (from.g2 * h).sqrt() * zi;
        let scale =
            xi.abs() * (1.0 + from.f.abs() * h + from.g2 * h / V) + (from.g2 * h).sqrt() * zi.abs();
        assert!((got - want).abs() <= 8.0 * EPS * scale, "{got} vs {want}");
    }
    Ok(())
}

/// An f32 state stays f32 and agrees with the f64 step to f32 rounding (1e-6 of the scale).
#[test]
fn f32_state_stays_f32() -> Result<()> {
    let d = 3;
    let x = normals(4, 5, d)?;
    let (t, s) = (0.3, 0.2);
    let (x64, ..) = one_step(&ConstantNoise(1.0), &State::new(x.clone(), t, 0), t, s, d)?;
    let x32 = x.to_dtype(DType::F32)?;
    let (xs32, ..) = one_step(&ConstantNoise(1.0), &State::new(x32.clone(), t, 0), t, s, d)?;
    assert_eq!(xs32.dtype(), DType::F32);
    // Compare with the f64 step on the f32-rounded input.
    let (x64_32, ..) = one_step(
        &ConstantNoise(1.0),
        &State::new(x32.to_dtype(DType::F64)?, t, 0),
        t,
        s,
        d,
    )?;
    for (a, b) in flat(&xs32)?.iter().zip(flat(&x64_32)?) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
    assert_eq!(x64.dims(), xs32.dims());
    Ok(())
}

/// The step leaves the rest of the state to the loop: time, step index, offset and draw
/// counter come back unchanged.
#[test]
fn step_carries_the_rest_of_the_state() -> Result<()> {
    let x = normals(5, 2, 2)?;
    let mut state = State::new(x, 0.4, 9);
    state.draws = 12;
    state.step = 3;
    let sde = LinearBetaVp;
    let den = denoiser(2);
    let ctx = RunContext::new(&sde, &den, &ConstantNoise(0.0), 1).step(StepSpan {
        from: sde.coefs(0.4),
        to: sde.coefs(0.3),
        step: 3,
        steps: 10,
    });
    let next = EulerMaruyama.step(&ctx, &state)?.state;
    assert_eq!(
        (next.t, next.step, next.sample_offset, next.draws),
        (0.4, 3, 9, 12)
    );
    assert!(next.history.is_empty());
    Ok(())
}

/// MATH.md §5 and the crate's `# Claims`: weak order 1, strong order 1 (additive noise), 1 NFE
/// per step, stochastic, affine, the reverse SDE on a uniform grid; 1,000 uniform steps by
/// default.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    assert_eq!(
        EulerMaruyama.claims(),
        SolverClaims {
            order: Order::Sde {
                weak: 1.0,
                strong: 1.0
            },
            nfe_per_step: 1,
            stochastic: true,
            affine: true,
            equation: Equation::ReverseSde,
            natural_grid: GridKind::Quadratic,
        }
    );
    assert_eq!(
        EulerMaruyama.default_discretization(&LinearBetaVp),
        Discretization {
            steps: 1000,
            grid: GridKind::Uniform
        }
    );
    Ok(())
}

/// The `euler_maruyama` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    let solver = reg.solver("euler_maruyama", "()")?;
    assert_eq!(solver.claims(), EulerMaruyama.claims());
    assert!(reg.solver("euler_maruyama", "(steps: 10)").is_err());
    Ok(())
}
