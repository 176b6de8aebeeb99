//! ε-prediction against MATH.md §3's first row and §4: the target is ε, `to_eps` and
//! `from_eps` are the identity, x̂₀ = (x − σ ε̂)/α and ŝ = −ε̂/σ element by element, round
//! trips through x̂₀ and ŝ, and the loss scale k = 1.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, Parameterization, Registry, Result, TimeCoefs,
    noise::{Stream, philox_key, philox_normal_tensor},
};
use sdeflow_param_eps::{Eps, Params};

const EPS: f64 = f64::EPSILON;

/// Coefficients with the given (α, σ): f and g² are those of the default VP SDE where the pair
/// is VP's (the ε map does not read them), λ = log(α/σ).
fn coefs(t: f64, alpha: f64, sigma: f64) -> TimeCoefs {
    let beta = 0.1 + 19.9 * t;
    TimeCoefs {
        t,
        alpha,
        sigma,
        f: -0.5 * beta,
        g2: beta,
        lambda: (alpha / sigma).ln(),
    }
}

/// VP (β_min 0.1, β_max 20; B = 0.1 t + 9.95 t², α = e^{−B/2}, σ = √(−expm1(−B)), MATH.md §1)
/// at t_ε = 1e-3, 0.5 and T = 1 (α ≈ 6.6e-3), and EDM-like pairs α = 1, σ ∈ {0.002, 80}
/// (α² + σ² ≠ 1): away from α = 0 and σ = 0, as MATH.md §3 asks.
fn all_coefs() -> Vec<TimeCoefs> {
    let vp = |t: f64| {
        let b = 0.1 * t + 9.95 * t * t;
        coefs(t, (-0.5 * b).exp(), (-(-b).exp_m1()).sqrt())
    };
    vec![
        vp(1e-3),
        vp(0.5),
        vp(1.0),
        coefs(0.002, 1.0, 0.002),
        coefs(80.0, 1.0, 80.0),
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

fn flat(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// ‖a − b‖ / ‖b‖.
fn norm_rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// The training target is ε itself, whatever x₀ and the time; and it equals the output that
/// `from_eps` gives for the true ε at x_t = α x₀ + σ ε (the plugin's claim).
#[test]
fn target_is_the_noise() -> Result<()> {
    let x0 = normals(1, 8, 5)?;
    let eps = normals(2, 8, 5)?;
    for c in all_coefs() {
        let target = Eps.target_of(&x0, &eps, &c.into())?;
        assert_eq!(flat(&target)?, flat(&eps)?, "t = {}", c.t);
        let xt = ((&x0 * c.alpha)? + (&eps * c.sigma)?)?;
        assert_eq!(flat(&Eps.from_eps(&eps, &xt, &c.into())?)?, flat(&target)?);
    }
    Ok(())
}

/// `to_eps` and `from_eps` return their input unchanged, bit for bit and in its dtype.
#[test]
fn to_eps_and_from_eps_are_the_identity() -> Result<()> {
    let x = normals(3, 6, 4)?;
    let out = normals(4, 6, 4)?;
    for c in all_coefs() {
        for dtype in [DType::F64, DType::F32] {
            let (x, out) = (x.to_dtype(dtype)?, out.to_dtype(dtype)?);
            let e = Eps.to_eps(&out, &x, &c.into())?;
            let o = Eps.from_eps(&out, &x, &c.into())?;
            assert_eq!((e.dtype(), o.dtype()), (dtype, dtype));
            assert_eq!(flat(&e)?, flat(&out)?);
            assert_eq!(flat(&o)?, flat(&out)?);
            let round = Eps.to_eps(&Eps.from_eps(&out, &x, &c.into())?, &x, &c.into())?;
            assert_eq!(flat(&round)?, flat(&out)?);
        }
    }
    Ok(())
}

/// x̂₀ = (x − σ ε̂)/α and ŝ = −ε̂/σ (MATH.md §3, ε row), computed here element by element.
/// x̂₀ is a difference of two terms, each a few roundings off, then a division: the error is
/// at most ~4ε (|x| + σ|ε̂|)/α, so the bound is 8ε of that scale. ŝ is one product with a
/// rounded 1/σ: 4ε relative.
#[test]
fn x0_and_score_follow_the_closed_forms() -> Result<()> {
    let x = normals(5, 16, 3)?;
    let out = normals(6, 16, 3)?;
    let (xs, es) = (flat(&x)?, flat(&out)?);
    for c in all_coefs() {
        let x0 = flat(&Eps.to_x0(&out, &x, &c.into())?)?;
        let score = flat(&Eps.to_score(&out, &x, &c.into())?)?;
        for i in 0..xs.len() {
            let want = (xs[i] - c.sigma * es[i]) / c.alpha;
            let scale = (xs[i].abs() + c.sigma * es[i].abs()) / c.alpha;
            assert!(
                (x0[i] - want).abs() <= 8.0 * EPS * scale,
                "t = {}: x̂₀[{i}] = {}, want {want}",
                c.t,
                x0[i]
            );
            let want = -es[i] / c.sigma;
            assert!(
                (score[i] - want).abs() <= 4.0 * EPS * want.abs(),
                "t = {}: ŝ[{i}]",
                c.t
            );
        }
    }
    Ok(())
}

/// Round trips: ε̂ → x̂₀ → ε̂ with ε̂ = (x − α x̂₀)/σ, and ε̂ → ŝ → ε̂ with ε̂ = −σ ŝ, both by
/// hand, to MATH.md §3's bar of 1e-10 norm-relative in f64 (the worst case here loses
/// ε·(|x| + σ|ε|)/σ ≈ 1e-13 at σ = 0.002).
#[test]
fn round_trips_through_x0_and_score() -> Result<()> {
    let x = normals(7, 32, 4)?;
    let out = normals(8, 32, 4)?;
    let (xs, es) = (flat(&x)?, flat(&out)?);
    for c in all_coefs() {
        let x0 = flat(&Eps.to_x0(&out, &x, &c.into())?)?;
        let eps_back: Vec<f64> = xs
            .iter()
            .zip(&x0)
            .map(|(x, x0)| (x - c.alpha * x0) / c.sigma)
            .collect();
        assert!(norm_rel(&eps_back, &es) <= 1e-10, "t = {}: via x̂₀", c.t);
        let score = flat(&Eps.to_score(&out, &x, &c.into())?)?;
        let eps_back: Vec<f64> = score.iter().map(|s| -c.sigma * s).collect();
        assert!(norm_rel(&eps_back, &es) <= 1e-10, "t = {}: via ŝ", c.t);
    }
    Ok(())
}

/// ‖ε̂ − ε‖ is the loss itself, so k(t) = 1 at every time (MATH.md §4).
#[test]
fn eps_loss_scale_is_one() -> Result<()> {
    for c in all_coefs() {
        assert_eq!(Eps.eps_loss_scale(&c), 1.0, "t = {}", c.t);
    }
    Ok(())
}

/// f32 in, f32 out, through the kernel's conversions; within f32 rounding of the f64 answer
/// (a few roundings of 6e-8 on values scaled by 1/α ≤ 152 here: 1e-5 relative to the scale).
#[test]
fn f32_inputs_stay_f32() -> Result<()> {
    let x = normals(9, 8, 3)?;
    let out = normals(10, 8, 3)?;
    let (x32, out32) = (x.to_dtype(DType::F32)?, out.to_dtype(DType::F32)?);
    for c in all_coefs() {
        let x0 = Eps.to_x0(&out32, &x32, &c.into())?;
        let s = Eps.to_score(&out32, &x32, &c.into())?;
        assert_eq!((x0.dtype(), s.dtype()), (DType::F32, DType::F32));
        let x0_64 = flat(&Eps.to_x0(&out, &x, &c.into())?)?;
        let s64 = flat(&Eps.to_score(&out, &x, &c.into())?)?;
        assert!(norm_rel(&flat(&x0)?, &x0_64) <= 1e-5, "t = {}", c.t);
        assert!(norm_rel(&flat(&s)?, &s64) <= 1e-6, "t = {}", c.t);
    }
    Ok(())
}

/// The `eps` registration builds from `()`, and its parameters take no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    assert_eq!(Params::default(), Params {});
    let reg = Registry::global()?;
    let p = reg.param("eps", "()")?;
    let c = all_coefs()[1];
    assert_eq!(p.eps_loss_scale(&c), 1.0);
    assert!(reg.param("eps", "(scale: 2.0)").is_err());
    Ok(())
}
