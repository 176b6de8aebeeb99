//! The flow velocity against MATH.md §3 ("flow velocity") and §4: u = α′ x₀ + σ′ ε with the
//! closed-form derivatives of each test SDE, x̂₀ = (σ′ x − σ û)/D and ε̂ = (α û − α′ x)/D with
//! D = α σ′ − σ α′, the PF-ODE identity û = f x − ½ g² ŝ, ‖û − u‖ = (g²/(2σ)) ‖ε̂ − ε‖, and the
//! α = 0 end.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, Parameterization, Registry, Result, TimeCoefs, convert,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_param_flow::{Flow, Params};

/// MATH.md §3's conformance bar: norm-relative error ≤ 1e-10 in f64.
const TOL: f64 = 1e-10;

/// Time coefficients with the exact derivatives α′ and σ′ of the SDE they come from, so the
/// tests do not read α′ and σ′ back from the kernel's `d_alpha`/`d_sigma`.
#[derive(Debug, Clone, Copy)]
struct Point {
    c: TimeCoefs,
    d_alpha: f64,
    d_sigma: f64,
}

fn point(t: f64, (alpha, sigma, f, g2): (f64, f64, f64, f64), d_alpha: f64, d_sigma: f64) -> Point {
    let lambda = (alpha / sigma).ln();
    let c = TimeCoefs {
        t,
        alpha,
        sigma,
        f,
        g2,
        lambda,
    };
    Point {
        c,
        d_alpha,
        d_sigma,
    }
}

/// The default VP SDE (B = 0.1 t + 9.95 t², α = e^{−B/2}, σ = √(−expm1(−B)), f = −β/2,
/// g² = β): α′ = −β α/2 and σ′ = β e^{−B}/(2σ) = β α²/(2σ).
fn vp(t: f64) -> Point {
    let (b, beta) = (0.1 * t + 9.95 * t * t, 0.1 + 19.9 * t);
    let (alpha, sigma) = ((-0.5 * b).exp(), (-(-b).exp_m1()).sqrt());
    let coefs = (alpha, sigma, -0.5 * beta, beta);
    point(
        t,
        coefs,
        -0.5 * beta * alpha,
        beta * alpha * alpha / (2.0 * sigma),
    )
}

/// Linear flow α = 1 − t, σ = t, f = −1/(1 − t), g² = 2t/(1 − t): α′ = −1, σ′ = 1.
fn linear_flow(t: f64) -> Point {
    let a = 1.0 - t;
    point(t, (a, t, -1.0 / a, 2.0 * t / a), -1.0, 1.0)
}

/// VP at t_ε, 0.5 and T = 1; a VE-like point α = 1, σ = 3, f = 0, g² = 2 (α′ = 0,
/// σ′ = g²/(2σ) = 1/3); EDM α = 1, σ = t, f = 0, g² = 2t (α′ = 0, σ′ = 1) at 0.002 and 80;
/// linear flow at 1e-3, 0.5 and its T = 0.999. Only VP has α² + σ² = 1.
fn all_points() -> Vec<Point> {
    let edm = |t: f64| point(t, (1.0, t, 0.0, 2.0 * t), 0.0, 1.0);
    vec![
        vp(1e-3),
        vp(0.5),
        vp(1.0),
        point(1.0, (1.0, 3.0, 0.0, 2.0), 0.0, 1.0 / 3.0),
        edm(0.002),
        edm(80.0),
        linear_flow(1e-3),
        linear_flow(0.5),
        linear_flow(0.999),
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

/// a x + b y, written out with tensor arithmetic (not the kernel's `lin2`).
fn comb(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

/// The target is α′ x₀ + σ′ ε with the SDE's exact derivatives, and equals `from_eps` of the
/// true ε at x = α x₀ + σ ε.
#[test]
fn target_is_the_velocity_and_matches_from_eps() -> Result<()> {
    let (x0, eps) = (normals(1, 16, 3)?, normals(2, 16, 3)?);
    for p in all_points() {
        let c = p.c;
        let target = Flow.target_of(&x0, &eps, &c.into())?;
        let want = comb(p.d_alpha, &x0, p.d_sigma, &eps)?;
        assert!(rel(&target, &want)? <= TOL, "t = {}", c.t);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let e = rel(&Flow.from_eps(&eps, &x, &c.into())?, &target)?;
        assert!(e <= TOL, "t = {}: {e:e}", c.t);
    }
    Ok(())
}

/// ε̂ = (α û − α′ x)/D with D = α σ′ − σ α′ (MATH.md §3, written out here with the exact
/// derivatives) and û = f x + (σ′ − f σ) ε̂; round trips output → ε̂ → output and
/// ε̂ → output → ε̂ to 1e-10.
#[test]
fn maps_follow_the_closed_forms_and_round_trip() -> Result<()> {
    let (x, out) = (normals(3, 32, 4)?, normals(4, 32, 4)?);
    for p in all_points() {
        let c = p.c;
        let d = c.alpha * p.d_sigma - c.sigma * p.d_alpha;
        let eps_hat = Flow.to_eps(&out, &x, &c.into())?;
        let want = (comb(c.alpha, &out, -p.d_alpha, &x)? / d)?;
        assert!(rel(&eps_hat, &want)? <= TOL, "t = {}: to_eps", c.t);
        let back = Flow.from_eps(&out, &x, &c.into())?;
        let want = comb(c.f, &x, p.d_sigma - c.f * c.sigma, &out)?;
        assert!(rel(&back, &want)? <= TOL, "t = {}: from_eps", c.t);
        let round = Flow.from_eps(&Flow.to_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: out → ε̂ → out", c.t);
        let round = Flow.to_eps(&Flow.from_eps(&out, &x, &c.into())?, &x, &c.into())?;
        assert!(rel(&round, &out)? <= TOL, "t = {}: ε̂ → out → ε̂", c.t);
    }
    Ok(())
}

/// x̂₀ = (σ′ x − σ û)/D (written out here) agrees with the kernel's x̂₀ = (x − σ ε̂)/α of the
/// same ε̂, and ŝ with the kernel's −ε̂/σ.
#[test]
fn x0_and_score_agree_with_convert() -> Result<()> {
    let (x, out) = (normals(5, 16, 3)?, normals(6, 16, 3)?);
    for p in all_points() {
        let c = p.c;
        let d = c.alpha * p.d_sigma - c.sigma * p.d_alpha;
        let eps_hat = Flow.to_eps(&out, &x, &c.into())?;
        let x0_hat = Flow.to_x0(&out, &x, &c.into())?;
        let closed = (comb(p.d_sigma, &x, -c.sigma, &out)? / d)?;
        assert!(rel(&x0_hat, &closed)? <= TOL, "t = {}: closed form", c.t);
        let via_eps = convert::x0_from_eps(&x, &eps_hat, &c.into())?;
        assert!(rel(&x0_hat, &via_eps)? <= TOL, "t = {}: convert", c.t);
        let score = Flow.to_score(&out, &x, &c.into())?;
        let want = convert::score_from_eps(&eps_hat, &c.into())?;
        assert!(rel(&score, &want)? <= TOL, "t = {}: score", c.t);
    }
    Ok(())
}

/// From the true u = α′ x₀ + σ′ ε as output, ε̂, x̂₀ and ŝ are the true ε, x₀ and −ε/σ; on
/// linear flow also close to its singular end t = 1, where α = 1 − t is small and
/// (x − σ ε̂)/α would divide by it. There σ′ = (g² + 2 f σ²)/(2σ) from the coefficients
/// cancels two terms of size 1/(1 − t), losing ~ε_mach/(1 − t) ≤ 1e-11 at 1 − t = 1e-5.
#[test]
fn the_true_output_gives_the_true_noise_data_and_score() -> Result<()> {
    let (x0, eps) = (normals(7, 16, 3)?, normals(8, 16, 3)?);
    let near_one = [1e-3, 1e-4, 1e-5].map(|d| linear_flow(1.0 - d));
    for p in all_points().into_iter().chain(near_one) {
        let c = p.c;
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let u = comb(p.d_alpha, &x0, p.d_sigma, &eps)?;
        assert!(
            rel(&Flow.to_eps(&u, &x, &c.into())?, &eps)? <= TOL,
            "t = {}: ε",
            c.t
        );
        assert!(
            rel(&Flow.to_x0(&u, &x, &c.into())?, &x0)? <= TOL,
            "t = {}: x₀",
            c.t
        );
        let score = (&eps / -c.sigma)?;
        assert!(
            rel(&Flow.to_score(&u, &x, &c.into())?, &score)? <= TOL,
            "t = {}: ŝ",
            c.t
        );
    }
    Ok(())
}

/// u is the PF-ODE drift (MATH.md §2, §3): for any output û, f x − ½ g² ŝ(û) = û; and for an
/// imperfect ε̂, from_eps(ε̂) = α′ x̂₀ + σ′ ε̂ = f x − ½ g² ŝ with x̂₀ = (x − σ ε̂)/α and
/// ŝ = −ε̂/σ from the kernel's `convert`.
#[test]
fn velocity_is_the_probability_flow_drift() -> Result<()> {
    let (x0, eps, delta) = (normals(9, 32, 3)?, normals(10, 32, 3)?, normals(11, 32, 3)?);
    let eps_hat = (&eps + (&delta * 0.1)?)?;
    for p in all_points() {
        let c = p.c;
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let u_hat = Flow.from_eps(&eps_hat, &x, &c.into())?;
        let score = convert::score_from_eps(&eps_hat, &c.into())?;
        let drift = comb(c.f, &x, -0.5 * c.g2, &score)?;
        assert!(rel(&u_hat, &drift)? <= TOL, "t = {}: F", c.t);
        let x0_hat = convert::x0_from_eps(&x, &eps_hat, &c.into())?;
        let u = comb(p.d_alpha, &x0_hat, p.d_sigma, &eps_hat)?;
        assert!(rel(&u_hat, &u)? <= TOL, "t = {}: α′ x̂₀ + σ′ ε̂", c.t);
        let out = (&delta + &x0)?;
        let drift = comb(c.f, &x, -0.5 * c.g2, &Flow.to_score(&out, &x, &c.into())?)?;
        assert!(rel(&drift, &out)? <= TOL, "t = {}: F(ŝ(û)) = û", c.t);
    }
    Ok(())
}

/// ‖out − target‖ = k ‖ε̂ − ε‖ with k = g²/(2σ) = σ′ − f σ for an imperfect ε̂ = ε + 0.1 δ at
/// the true x (MATH.md §4).
#[test]
fn loss_scale_is_g2_over_two_sigma() -> Result<()> {
    let (x0, eps, delta) = (
        normals(12, 32, 3)?,
        normals(13, 32, 3)?,
        normals(14, 32, 3)?,
    );
    let eps_hat = (&eps + (&delta * 0.1)?)?;
    for p in all_points() {
        let c = p.c;
        let k = Flow.eps_loss_scale(&c);
        let want = p.d_sigma - c.f * c.sigma;
        assert!(
            (k - want).abs() <= 1e-12 * want,
            "t = {}: {k} vs {want}",
            c.t
        );
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let out = Flow.from_eps(&eps_hat, &x, &c.into())?;
        let lhs = norm(&(&out - Flow.target_of(&x0, &eps, &c.into())?)?)?;
        let rhs = k * norm(&(&eps_hat - &eps)?)?;
        assert!(
            (lhs - rhs).abs() <= TOL * rhs,
            "t = {}: {lhs} vs {rhs}",
            c.t
        );
    }
    Ok(())
}

/// α = 0 exactly: linear flow at t = 1 (f = −∞, g² = ∞). x = σ ε there, so ε̂ = x/σ whatever
/// the output, bit for bit, and ŝ = −x/σ².
#[test]
fn at_alpha_zero_the_noise_is_x_over_sigma() -> Result<()> {
    let (x, out) = (normals(15, 8, 3)?, normals(16, 8, 3)?);
    let c = TimeCoefs {
        t: 1.0,
        alpha: 0.0,
        sigma: 1.0,
        f: f64::NEG_INFINITY,
        g2: f64::INFINITY,
        lambda: f64::NEG_INFINITY,
    };
    assert_eq!(
        Flow.to_eps(&out, &x, &c.into())?.to_vec2::<f64>()?,
        x.to_vec2::<f64>()?
    );
    let score = Flow.to_score(&out, &x, &c.into())?;
    assert_eq!(score.to_vec2::<f64>()?, (&x * -1.0)?.to_vec2::<f64>()?);
    Ok(())
}

/// |α| ≤ ε_mach σ with finite α′ and σ′: a hypothetical point α = 2⁻⁶⁰, σ = 1, f = −2⁵⁰,
/// g² = 2⁵¹ + 2, chosen so that α′ = f α = −2⁻¹⁰ and σ′ = (g² + 2 f σ²)/(2σ) = 1 are exact in
/// f64. The α = 0 branch gives ε̂ = x/σ (off by α|x₀|/σ ≈ 1e-18) and x̂₀ = (û − σ′ ε̂)/α′,
/// both to 1e-10 of the truth from û = α′ x₀ + σ′ ε.
#[test]
fn near_alpha_zero_x0_comes_from_the_velocity() -> Result<()> {
    let (x0, eps) = (normals(17, 16, 3)?, normals(18, 16, 3)?);
    let (alpha, f) = (2f64.powi(-60), -(2f64.powi(50)));
    let p = point(
        1.0,
        (alpha, 1.0, f, 2f64.powi(51) + 2.0),
        -(2f64.powi(-10)),
        1.0,
    );
    let c = p.c;
    assert_eq!((c.d_alpha(), c.d_sigma()), (p.d_alpha, p.d_sigma));
    let x = convert::noisy(&x0, &eps, &c.into())?;
    let u = comb(p.d_alpha, &x0, p.d_sigma, &eps)?;
    assert!(rel(&Flow.to_eps(&u, &x, &c.into())?, &eps)? <= TOL);
    assert!(rel(&Flow.to_x0(&u, &x, &c.into())?, &x0)? <= TOL);
    Ok(())
}

/// The `flow` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let p = reg.param("flow", "()")?;
    let c = linear_flow(0.5).c;
    assert!((p.eps_loss_scale(&c) - 2.0).abs() <= 4.0 * f64::EPSILON);
    assert!(reg.param("flow", "(scale: 2.0)").is_err());
    Ok(())
}
