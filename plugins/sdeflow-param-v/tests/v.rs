//! v-prediction against MATH.md §3's fourth row and §4, for any (α, σ), not only α² + σ² = 1:
//! the target is α ε − σ x₀, ε̂ = (σ x + α v̂)/(α² + σ²), x̂₀ = (α x − σ v̂)/(α² + σ²), the
//! inverse map v̂ = ((α² + σ²) ε̂ − σ x)/α, and ‖v̂ − v‖ = ((α² + σ²)/α) ‖ε̂ − ε‖.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, Parameterization, Registry, Result, TimeCoefs, convert,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_param_v::{Params, V};

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

/// n = α² + σ².
fn n(c: &TimeCoefs) -> f64 {
    c.alpha * c.alpha + c.sigma * c.sigma
}

/// The fixtures reach far from α² + σ² = 1 (VE-like n = 10, EDM n = 6401, linear flow at
/// t = 0.5 n = 0.5), so a VP-only formula could not pass: at the VE-like point the VP form
/// ε̂ = σ x + α v of the true v misses ε by a factor n = 10.
#[test]
fn fixtures_leave_the_unit_circle() -> Result<()> {
    let cs = all_coefs();
    assert!(cs.iter().any(|c| n(c) >= 10.0) && cs.iter().any(|c| n(c) <= 0.5));
    let (x0, eps) = (normals(12, 16, 3)?, normals(13, 16, 3)?);
    let c = coefs(1.0, 1.0, 3.0, 0.0, 2.0);
    let x = convert::noisy(&x0, &eps, &c.into())?;
    let v = V.target_of(&x0, &eps, &c.into())?;
    let vp_only = ((&x * c.sigma)? + (&v * c.alpha)?)?;
    assert!(rel(&vp_only, &eps)? > 1.0);
    assert!(rel(&V.to_eps(&v, &x, &c.into())?, &eps)? <= TOL);
    Ok(())
}

/// The target is α ε − σ x₀ (written out here), and equals `from_eps` of the true ε at
/// x = α x₀ + σ ε.
#[test]
fn target_is_v_and_matches_from_eps() -> Result<()> {
    let (x0, eps) = (normals(1, 16, 3)?, normals(2, 16, 3)?);
    for c in all_coefs() {
        let target = V.target_of(&x0, &eps, &c.into())?;
        let want = ((&eps * c.alpha)? - (&x0 * c.sigma)?)?;
        assert!(rel(&target, &want)? <= TOL, "t = {}", c.t);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let e = rel(&V.from_eps(&eps, &x, &c.into())?, &target)?;
        assert!(e <= TOL, "t = {}: {e:e}", c.t);
    }
    Ok(())
}

/// ε̂ = (σ x + α v̂)/n and v̂ = (n ε̂ − σ x)/α (MATH.md §3), written out here; and the round
/// trips output → ε̂ → output and ε̂ → output → ε̂ to 1e-10.
#[test]
fn maps_follow_the_closed_forms_and_round_trip() -> Result<()> {
    let (x, out) = (normals(3, 32, 4)?, normals(4, 32, 4)?);
    for c in all_coefs() {
        let eps_hat = V.to_eps(&out, &x, &c.into())?;
        let want = (((&x * c.sigma)? + (&out * c.alpha)?)? / n(&c))?;
        assert!(rel(&eps_hat, &want)? <= TOL, "t = {}: to_eps", c.t);
        let back = V.from_eps(&out, &x, &c.into())?;
        let want = (((&out * n(&c))? - (&x * c.sigma)?)? / c.alpha)?;
        assert!(rel(&back, &want)? <= TOL, "t = {}: from_eps", c.t);
        let round = V.from_eps(&V.to_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: out → ε̂ → out", c.t);
        let round = V.to_eps(&V.from_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: ε̂ → out → ε̂", c.t);
    }
    Ok(())
}

/// x̂₀ = (α x − σ v̂)/n (MATH.md §3's v row, written out here) agrees with the kernel's
/// x̂₀ = (x − σ ε̂)/α of the same ε̂, and ŝ with the kernel's −ε̂/σ.
#[test]
fn x0_and_score_agree_with_convert() -> Result<()> {
    let (x, out) = (normals(5, 16, 3)?, normals(6, 16, 3)?);
    for c in all_coefs() {
        let eps_hat = V.to_eps(&out, &x, &c.into())?;
        let x0_hat = V.to_x0(&out, &x, &c.into())?;
        let closed = (((&x * c.alpha)? - (&out * c.sigma)?)? / n(&c))?;
        assert!(rel(&x0_hat, &closed)? <= TOL, "t = {}: closed form", c.t);
        let via_eps = convert::x0_from_eps(&x, &eps_hat, &c.into())?;
        assert!(rel(&x0_hat, &via_eps)? <= TOL, "t = {}: convert", c.t);
        let score = V.to_score(&out, &x, &c.into())?;
        let want = convert::score_from_eps(&eps_hat, &c.into())?;
        assert!(rel(&score, &want)? <= TOL, "t = {}: score", c.t);
    }
    Ok(())
}

/// From the true v = α ε − σ x₀ as output, ε̂, x̂₀ and ŝ are the true ε, x₀ and −ε/σ.
#[test]
fn the_true_output_gives_the_true_noise_data_and_score() -> Result<()> {
    let (x0, eps) = (normals(7, 16, 3)?, normals(8, 16, 3)?);
    for c in all_coefs() {
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let v = ((&eps * c.alpha)? - (&x0 * c.sigma)?)?;
        assert!(
            rel(&V.to_eps(&v, &x, &c.into())?, &eps)? <= TOL,
            "t = {}",
            c.t
        );
        assert!(
            rel(&V.to_x0(&v, &x, &c.into())?, &x0)? <= TOL,
            "t = {}",
            c.t
        );
        let score = (&eps / -c.sigma)?;
        assert!(
            rel(&V.to_score(&v, &x, &c.into())?, &score)? <= TOL,
            "t = {}",
            c.t
        );
    }
    Ok(())
}

/// ‖out − target‖ = k ‖ε̂ − ε‖ with k = (α² + σ²)/α for an imperfect ε̂ = ε + 0.1 δ at the
/// true x (MATH.md §4).
#[test]
fn loss_scale_is_n_over_alpha() -> Result<()> {
    let (x0, eps, delta) = (normals(9, 32, 3)?, normals(10, 32, 3)?, normals(11, 32, 3)?);
    let eps_hat = (&eps + (&delta * 0.1)?)?;
    for c in all_coefs() {
        let k = V.eps_loss_scale(&c);
        assert!((k - n(&c) / c.alpha).abs() <= 4.0 * f64::EPSILON * k);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let out = V.from_eps(&eps_hat, &x, &c.into())?;
        let lhs = norm(&(&out - V.target_of(&x0, &eps, &c.into())?)?)?;
        let rhs = k * norm(&(&eps_hat - &eps)?)?;
        assert!(
            (lhs - rhs).abs() <= TOL * rhs,
            "t = {}: {lhs} vs {rhs}",
            c.t
        );
    }
    Ok(())
}

/// The `v` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let p = reg.param("v", "()")?;
    let c = coefs(1.0, 1.0, 3.0, 0.0, 2.0);
    assert!((p.eps_loss_scale(&c) - 10.0).abs() <= 4.0 * f64::EPSILON * 10.0);
    assert!(reg.param("v", "(scale: 2.0)").is_err());
    Ok(())
}
