//! x₀-prediction against MATH.md §3's second row and §4: the target is x₀, ε̂ = (x − α x̂₀)/σ,
//! the inverse map x̂₀ = (x − σ ε̂)/α, `to_x0` is the identity, ŝ agrees with the kernel's
//! `convert`, and ‖x̂₀ − x₀‖ = (σ/α) ‖ε̂ − ε‖.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, Parameterization, Registry, Result, TimeCoefs, convert,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_param_x0::{Params, X0};

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

/// The target is x₀ itself, bit for bit, and equals `from_eps` of the true ε at
/// x = α x₀ + σ ε (to the 1e-10 bar: (x − σ ε)/α cancels σ ε, losing ε_mach σ/α ≤ 1e-13).
#[test]
fn target_is_the_data_and_matches_from_eps() -> Result<()> {
    let (x0, eps) = (normals(1, 16, 3)?, normals(2, 16, 3)?);
    for c in all_coefs() {
        let target = X0.target_of(&x0, &eps, &c.into())?;
        assert_eq!(target.to_vec2::<f64>()?, x0.to_vec2::<f64>()?);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let e = rel(&X0.from_eps(&eps, &x, &c.into())?, &target)?;
        assert!(e <= TOL, "t = {}: {e:e}", c.t);
    }
    Ok(())
}

/// ε̂ = (x − α x̂₀)/σ and x̂₀ = (x − σ ε̂)/α (MATH.md §3), written out here; and the round trips
/// output → ε̂ → output and ε̂ → output → ε̂ to 1e-10.
#[test]
fn maps_follow_the_closed_forms_and_round_trip() -> Result<()> {
    let (x, out) = (normals(3, 32, 4)?, normals(4, 32, 4)?);
    for c in all_coefs() {
        let eps_hat = X0.to_eps(&out, &x, &c.into())?;
        let want = ((&x - (&out * c.alpha)?)? / c.sigma)?;
        assert!(rel(&eps_hat, &want)? <= TOL, "t = {}: to_eps", c.t);
        let back = X0.from_eps(&out, &x, &c.into())?;
        let want = ((&x - (&out * c.sigma)?)? / c.alpha)?;
        assert!(rel(&back, &want)? <= TOL, "t = {}: from_eps", c.t);
        let round = X0.from_eps(&X0.to_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: out → ε̂ → out", c.t);
        let round = X0.to_eps(&X0.from_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: ε̂ → out → ε̂", c.t);
    }
    Ok(())
}

/// `to_x0` returns the output unchanged; `to_score` is the kernel's ŝ = −ε̂/σ of
/// ε̂ = (x − α x̂₀)/σ, i.e. −(x − α x̂₀)/σ² (MATH.md §3's x₀ row).
#[test]
fn x0_and_score_agree_with_convert() -> Result<()> {
    let (x, out) = (normals(5, 16, 3)?, normals(6, 16, 3)?);
    for c in all_coefs() {
        let x0_hat = X0.to_x0(&out, &x, &c.into())?;
        assert_eq!(x0_hat.to_vec2::<f64>()?, out.to_vec2::<f64>()?);
        let want = convert::score_from_eps(&convert::eps_from_x0(&x, &out, &c.into())?, &c.into())?;
        let score = X0.to_score(&out, &x, &c.into())?;
        assert!(rel(&score, &want)? <= TOL, "t = {}", c.t);
        let closed = ((&x - (&out * c.alpha)?)? / (-c.sigma * c.sigma))?;
        assert!(rel(&score, &closed)? <= TOL, "t = {}: closed form", c.t);
    }
    Ok(())
}

/// From the true x₀ as output, ε̂ is the true ε and ŝ the conditional score −ε/σ.
#[test]
fn the_true_output_gives_the_true_noise_and_score() -> Result<()> {
    let (x0, eps) = (normals(7, 16, 3)?, normals(8, 16, 3)?);
    for c in all_coefs() {
        let x = convert::noisy(&x0, &eps, &c.into())?;
        assert!(
            rel(&X0.to_eps(&x0, &x, &c.into())?, &eps)? <= TOL,
            "t = {}",
            c.t
        );
        let score = (&eps / -c.sigma)?;
        assert!(
            rel(&X0.to_score(&x0, &x, &c.into())?, &score)? <= TOL,
            "t = {}",
            c.t
        );
    }
    Ok(())
}

/// ‖out − target‖ = k ‖ε̂ − ε‖ with k = σ/α for an imperfect ε̂ = ε + 0.1 δ at the true x
/// (MATH.md §4: ‖x̂₀ − x₀‖² = (σ/α)² ‖ε̂ − ε‖²).
#[test]
fn loss_scale_is_sigma_over_alpha() -> Result<()> {
    let (x0, eps, delta) = (normals(9, 32, 3)?, normals(10, 32, 3)?, normals(11, 32, 3)?);
    let eps_hat = (&eps + (&delta * 0.1)?)?;
    for c in all_coefs() {
        let k = X0.eps_loss_scale(&c);
        assert!((k - c.sigma / c.alpha).abs() <= 2.0 * f64::EPSILON * k);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let out = X0.from_eps(&eps_hat, &x, &c.into())?;
        let lhs = norm(&(&out - X0.target_of(&x0, &eps, &c.into())?)?)?;
        let rhs = k * norm(&(&eps_hat - &eps)?)?;
        assert!(
            (lhs - rhs).abs() <= TOL * rhs,
            "t = {}: {lhs} vs {rhs}",
            c.t
        );
    }
    Ok(())
}

/// The `x0` registration builds from `()` and takes no fields; its loss scale, which the
/// kernel derives from the ε̂ pair as 1/|−α/σ|, is σ/α to two roundings.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let p = reg.param("x0", "()")?;
    let c = all_coefs()[1];
    let k = c.sigma / c.alpha;
    assert!((p.eps_loss_scale(&c) - k).abs() <= 2.0 * f64::EPSILON * k);
    assert!(reg.param("x0", "(scale: 2.0)").is_err());
    Ok(())
}
