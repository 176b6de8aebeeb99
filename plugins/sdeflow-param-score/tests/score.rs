//! Score prediction against MATH.md §3's third row and §4: the target is −ε/σ, ε̂ = −σ ŝ, the
//! inverse map ŝ = −ε̂/σ, `to_score` is the identity, x̂₀ = (x + σ² ŝ)/α agrees with the
//! kernel's `convert`, and ‖ŝ − s‖ = ‖ε̂ − ε‖/σ.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, Parameterization, Registry, Result, TimeCoefs, convert,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_param_score::{Params, Score};

/// MATH.md §3's conformance bar: norm-relative error ≤ 1e-10 in f64.
const TOL: f64 = 1e-10;

fn coefs(t: f64, alpha: f64, sigma: f64, f: f64, g2: f64) -> TimeCoefs {
    let lambda = (alpha / sigma).ln();
    TimeCoefs {
        t,
        alpha,
        sigma,
        f,
        g2,
        lambda,
    }
}

/// Coefficients away from α = 0 and σ = 0 (MATH.md §1's table): the default VP SDE
/// (B = 0.1 t + 9.95 t², α = e^{−B/2}, σ = √(−expm1(−B)), f = −β/2, g² = β) at t_ε = 1e-3, 0.5
/// and T = 1 (α ≈ 6.6e-3); a VE-like point α = 1, σ = 3, f = 0, g² = 2; EDM (α = 1, σ = t,
/// f = 0, g² = 2t) at 0.002 and 80; linear flow (α = 1 − t, σ = t, f = −1/(1 − t),
/// g² = 2t/(1 − t)) at 1e-3, 0.5 and 0.999. Only the VP points have α² + σ² = 1.
fn all_coefs() -> Vec<TimeCoefs> {
    let vp = |t: f64| {
        let (b, beta) = (0.1 * t + 9.95 * t * t, 0.1 + 19.9 * t);
        coefs(
            t,
            (-0.5 * b).exp(),
            (-(-b).exp_m1()).sqrt(),
            -0.5 * beta,
            beta,
        )
    };
    let edm = |t: f64| coefs(t, 1.0, t, 0.0, 2.0 * t);
    let flow = |t: f64| coefs(t, 1.0 - t, t, -1.0 / (1.0 - t), 2.0 * t / (1.0 - t));
    vec![
        vp(1e-3),
        vp(0.5),
        vp(1.0),
        coefs(1.0, 1.0, 3.0, 0.0, 2.0),
        edm(0.002),
        edm(80.0),
        flow(1e-3),
        flow(0.5),
        flow(0.999),
    ]
}

/// Deterministic standard normals `[rows, cols]` in f64 (the kernel's Philox, exact stream).
fn normals(seed: u64, rows: usize, cols: usize) -> Result<Tensor> {
    philox_normal_tensor(
        philox_key(seed, Stream::Exact),
        0,
        rows,
        cols,
        0,
        DType::F64,
        &Device::Cpu,
    )
}

fn norm(x: &Tensor) -> Result<f64> {
    Ok(x.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok(norm(&(a - b)?)? / norm(b)?)
}

/// The target is the conditional score −ε/σ (MATH.md §4), and equals `from_eps` of the true
/// ε at x = α x₀ + σ ε.
#[test]
fn target_is_the_conditional_score_and_matches_from_eps() -> Result<()> {
    let (x0, eps) = (normals(1, 16, 3)?, normals(2, 16, 3)?);
    for c in all_coefs() {
        let target = Score.target_of(&x0, &eps, &c.into())?;
        assert!(rel(&target, &(&eps / -c.sigma)?)? <= TOL, "t = {}", c.t);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let e = rel(&Score.from_eps(&eps, &x, &c.into())?, &target)?;
        assert!(e <= TOL, "t = {}: {e:e}", c.t);
    }
    Ok(())
}

/// ε̂ = −σ ŝ and ŝ = −ε̂/σ (MATH.md §3), written out here; and the round trips
/// output → ε̂ → output and ε̂ → output → ε̂ to 1e-10.
#[test]
fn maps_follow_the_closed_forms_and_round_trip() -> Result<()> {
    let (x, out) = (normals(3, 32, 4)?, normals(4, 32, 4)?);
    for c in all_coefs() {
        let eps_hat = Score.to_eps(&out, &x, &c.into())?;
        assert!(rel(&eps_hat, &(&out * -c.sigma)?)? <= TOL, "t = {}", c.t);
        let back = Score.from_eps(&out, &x, &c.into())?;
        assert!(rel(&back, &(&out / -c.sigma)?)? <= TOL, "t = {}", c.t);
        let round = Score.from_eps(&Score.to_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: out → ε̂ → out", c.t);
        let round = Score.to_eps(&Score.from_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: ε̂ → out → ε̂", c.t);
    }
    Ok(())
}

/// `to_score` returns the output unchanged; `to_x0` is the kernel's x̂₀ = (x − σ ε̂)/α of
/// ε̂ = −σ ŝ, and Tweedie's (x + σ² ŝ)/α (MATH.md §3's score row) written out here.
#[test]
fn x0_and_score_agree_with_convert() -> Result<()> {
    let (x, out) = (normals(5, 16, 3)?, normals(6, 16, 3)?);
    for c in all_coefs() {
        let score = Score.to_score(&out, &x, &c.into())?;
        assert_eq!(score.to_vec2::<f64>()?, out.to_vec2::<f64>()?);
        let x0_hat = Score.to_x0(&out, &x, &c.into())?;
        let want = convert::x0_from_eps(&x, &convert::eps_from_score(&out, &c.into())?, &c.into())?;
        assert!(rel(&x0_hat, &want)? <= TOL, "t = {}", c.t);
        let tweedie = ((&x + (&out * (c.sigma * c.sigma))?)? / c.alpha)?;
        assert!(rel(&x0_hat, &tweedie)? <= TOL, "t = {}: Tweedie", c.t);
    }
    Ok(())
}

/// From the true conditional score −ε/σ as output, ε̂ is the true ε and x̂₀ the true x₀.
#[test]
fn the_true_output_gives_the_true_noise_and_data() -> Result<()> {
    let (x0, eps) = (normals(7, 16, 3)?, normals(8, 16, 3)?);
    for c in all_coefs() {
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let out = (&eps / -c.sigma)?;
        assert!(
            rel(&Score.to_eps(&out, &x, &c.into())?, &eps)? <= TOL,
            "t = {}",
            c.t
        );
        assert!(
            rel(&Score.to_x0(&out, &x, &c.into())?, &x0)? <= TOL,
            "t = {}",
            c.t
        );
    }
    Ok(())
}

/// ‖out − target‖ = k ‖ε̂ − ε‖ with k = 1/σ for an imperfect ε̂ = ε + 0.1 δ at the true x
/// (MATH.md §4: ‖ŝ − s‖² = ‖ε̂ − ε‖²/σ²).
#[test]
fn loss_scale_is_one_over_sigma() -> Result<()> {
    let (x0, eps, delta) = (normals(9, 32, 3)?, normals(10, 32, 3)?, normals(11, 32, 3)?);
    let eps_hat = (&eps + (&delta * 0.1)?)?;
    for c in all_coefs() {
        let k = Score.eps_loss_scale(&c);
        assert!((k - 1.0 / c.sigma).abs() <= 2.0 * f64::EPSILON * k);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let out = Score.from_eps(&eps_hat, &x, &c.into())?;
        let lhs = norm(&(&out - Score.target_of(&x0, &eps, &c.into())?)?)?;
        let rhs = k * norm(&(&eps_hat - &eps)?)?;
        assert!(
            (lhs - rhs).abs() <= TOL * rhs,
            "t = {}: {lhs} vs {rhs}",
            c.t
        );
    }
    Ok(())
}

/// The `score` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let p = reg.param("score", "()")?;
    let c = all_coefs()[1];
    assert_eq!(p.eps_loss_scale(&c), 1.0 / c.sigma);
    assert!(reg.param("score", "(scale: 2.0)").is_err());
    Ok(())
}
