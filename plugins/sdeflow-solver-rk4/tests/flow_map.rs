//! Classical RK4 against the closed-form PF-ODE flow map of a single Gaussian
//! (MATH.md §7; DESIGN.md "Measuring sample quality honestly" (b)):
//! - one step equals the classical four-stage formula written out by hand;
//! - the pathwise error at t_ε falls at order 4 on a uniform grid;
//! - every step costs 4 NFE and draws no noise;
//! - the claims and defaults are as the crate states.
//!
//! The data law is [`Gaussian::default`], N((1, −0.5), 0.3² I) (s = 0.3, as DESIGN.md advises:
//! s = 1 under VP makes the flow a pure translation), on the OU SDE [`Ou`].

use std::sync::Arc;

use candle_core::{Device, Tensor};
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Registry, Result, RunContext, Solver,
    SolverClaims, State, StepSpan,
    noise::ConstantNoise,
    rk::RkSolver,
    testing::{Gaussian, Ou, flat, one_step, tail_order},
};
use sdeflow_solver_rk4::TABLEAU;

/// The solver as a config gets it: `rk4()` from the registry.
fn registered() -> Result<Arc<dyn Solver>> {
    Registry::global()?.solver("rk4", "()")
}

/// The PF-ODE drift F = f x − ½ g² ŝ = −x + (x − α m)/v of coordinate `j` of
/// [`Gaussian::default`] (MATH.md §2).
fn drift(x: f64, j: usize, t: f64) -> f64 {
    let c = Ou.coefs(t);
    c.f * x - 0.5 * c.g2 * Gaussian::default().score(x, j, &c)
}

/// The exact flow map of coordinate `j` from t to s ([`Gaussian::flow_map`]).
fn flow_map(x: f64, j: usize, t: f64, s: f64) -> f64 {
    Gaussian::default().flow_map(x, j, &Ou.coefs(t), &Ou.coefs(s))
}

/// Model evaluations per step, as MATH.md §5 counts them.
const STAGES: u64 = 4;

/// Starting points at T: rows of a `[4, 2]` batch, both signs and the mean's neighbourhood.
const X_T: [[f64; 2]; 4] = [[0.0, 0.0], [1.5, -2.0], [-1.0, 0.7], [2.5, 1.0]];

/// `steps` steps of `solver` on the uniform grid from T to t_ε, with noise that would turn
/// every value NaN if drawn; checks each step draws nothing and returns (x(t_ε), NFE).
fn solve(solver: &dyn Solver, steps: usize) -> Result<(Vec<f64>, u64)> {
    let sde = Ou;
    let den = Gaussian::default().denoiser();
    let noise = ConstantNoise(f64::NAN);
    let ts = GridKind::Uniform.times(&sde, steps)?;
    let mut state = State::new(Tensor::new(&X_T, &Device::Cpu)?, ts[0], 0);
    for (i, w) in ts.windows(2).enumerate() {
        let ctx = RunContext::new(&sde, &den, &noise, 0).step(StepSpan {
            from: sde.coefs(w[0]),
            to: sde.coefs(w[1]),
            step: i,
            steps,
        });
        let step = solver.step(&ctx, &state)?;
        assert_eq!(ctx.draws_taken(), 0, "step {i} of {steps} drew noise");
        assert!(step.error_estimate.is_none());
        state = step.state;
        state.t = w[1];
        state.step = i + 1;
    }
    Ok((flat(&state.x)?, den.nfe()))
}

/// The largest error of `x` (at t_ε, from [`X_T`]) against the exact flow map.
fn max_error(x: &[f64]) -> f64 {
    let (t, s) = (Ou.t_max(), Ou.t_eps());
    let exact = X_T.iter().flat_map(|row| {
        row.iter()
            .enumerate()
            .map(move |(j, &x)| flow_map(x, j, t, s))
    });
    x.iter()
        .zip(exact)
        .map(|(got, want)| (got - want).abs())
        .fold(0.0, f64::max)
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², by central differences (step 1e-5,
/// truncation ~1e-10; tolerance 1e-8).
#[test]
fn sde_is_consistent() -> Result<()> {
    let sde = Ou;
    let d = 1e-5;
    for t in [0.01, 0.1, 0.5, 0.9] {
        let dlog_alpha = (sde.alpha(t + d).ln() - sde.alpha(t - d).ln()) / (2.0 * d);
        let dsigma2 = (sde.sigma(t + d).powi(2) - sde.sigma(t - d).powi(2)) / (2.0 * d);
        let c = sde.coefs(t);
        assert!((dlog_alpha - c.f).abs() <= 1e-8, "t = {t}: {dlog_alpha}");
        let g2 = dsigma2 - 2.0 * c.f * c.sigma * c.sigma;
        assert!((g2 - c.g2).abs() <= 1e-8, "t = {t}: {g2}");
    }
    Ok(())
}

/// The reference itself: the flow map composes (t → u → s equals t → s to rounding) and its
/// s-derivative at s = t is the drift F (central differences, step 1e-5; tolerance 1e-8).
#[test]
fn flow_map_is_the_pf_ode_flow() -> Result<()> {
    let d = 1e-5;
    // Coordinate j has mean m_j: m_0 = 1, m_1 = −0.5.
    for (x, j) in [(1.5, 0), (-2.0, 1), (0.3, 0)] {
        for t in [0.01, 0.3, 0.9] {
            let via = flow_map(flow_map(x, j, 1.0, 0.6), j, 0.6, t);
            let direct = flow_map(x, j, 1.0, t);
            assert!((via - direct).abs() <= 1e-14 * direct.abs().max(1.0));
            let slope = (flow_map(x, j, t, t + d) - flow_map(x, j, t, t - d)) / (2.0 * d);
            let f = drift(x, j, t);
            assert!(
                (slope - f).abs() <= 1e-8 * f.abs().max(1.0),
                "{slope} vs {f}"
            );
        }
    }
    Ok(())
}

/// One step from t to s (h = t − s) equals the classical four-stage formula on each coordinate:
/// /// with m = (t + s)/2, `k₁ = F(x, t)`, `k₂ = F(x − (h/2) k₁, m)`, `k₃ = F(x − (h/2) k₂, m)`,
/// `k₄ = F(x − h k₃, s)`, `x_s = x − (h/6)(k₁ + 2k₂ + 2k₃ + k₄)` (Hairer et al., Table 1.2).
/// Both sides round a few terms of size ≤ |x| (1 + h |F|/|x|) ≲ 10 |x| here: 1e-14 of |x|.
#[test]
fn one_step_equals_the_hand_written_formula() -> Result<()> {
    let model = Gaussian::default();
    let solver = registered()?;
    let x = Tensor::new(&X_T, &Device::Cpu)?;
    for (t, s) in [(1.0, 0.9), (0.3, 0.05), (0.01, 1e-3)] {
        let h = t - s;
        let step = one_step(&*solver, &Ou, &model, &ConstantNoise(f64::NAN), &x, t, s)?;
        let got = flat(&step.x)?;
        assert_eq!((step.nfe, step.draws), (4, 0));
        let want = X_T.iter().flat_map(|row| {
            row.iter().enumerate().map(move |(j, &x)| {
                let f = |x: f64, t: f64| drift(x, j, t);
                let mid = 0.5 * (t + s);
                let k1 = f(x, t);
                let k2 = f(x - h / 2.0 * k1, mid);
                let k3 = f(x - h / 2.0 * k2, mid);
                let k4 = f(x - h * k3, s);
                x - h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            })
        });
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-14 * w.abs().max(1.0),
                "t = {t}: {g} vs {w}"
            );
        }
    }
    Ok(())
}

/// The pathwise error at t_ε against the exact flow map over N = 16 … 1,024 uniform steps
/// falls at order 4 (tail fit within ±0.25, DESIGN.md "Orders"); the counted NFE is
/// 4 × N and no step draws noise.
#[test]
fn pathwise_error_falls_at_order_4() -> Result<()> {
    let solver = registered()?;
    let ns: Vec<usize> = (4..=10).map(|k| 1 << k).collect();
    let mut errs = Vec::new();
    for &n in &ns {
        let (x, nfe) = solve(&*solver, n)?;
        assert_eq!(nfe, n as u64 * STAGES);
        errs.push(max_error(&x));
    }
    let order = tail_order(&ns, &errs).expect("three errors above 1e-11");
    let shown: Vec<String> = errs.iter().map(|e| format!("{e:.3e}")).collect();
    println!(
        "Classical RK4: N {ns:?}, errors [{}], tail order {order:.3}",
        shown.join(", ")
    );
    assert!(
        (order - 4.0).abs() <= 0.25,
        "order {order}, errors {errs:?}"
    );
    Ok(())
}

/// The crate's `# Claims`: order 4 on a uniform grid, 4 NFE per step, deterministic,
/// affine, the PF-ODE; 100 steps by default on the SDE's default grid.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let solver = registered()?;
    assert_eq!(
        solver.claims(),
        SolverClaims {
            order: Order::Ode(4.0),
            nfe_per_step: 4,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::Uniform,
        }
    );
    assert_eq!(
        solver.default_discretization(&Ou),
        Discretization {
            steps: 100,
            grid: Ou.default_grid()
        }
    );
    assert_eq!(TABLEAU.stages(), 4);
    TABLEAU.validate()
}

/// The `rk4` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    let reg = Registry::global()?;
    let solver = reg.solver("rk4", "()")?;
    let built = RkSolver::new(&TABLEAU, solver.default_discretization(&Ou).steps)?;
    assert_eq!(solver.claims(), built.claims());
    assert!(reg.solver("rk4", "(steps: 10)").is_err());
    Ok(())
}
