//! The conversions of `param::convert` (MATH.md §3), the `Parameterization` trait's provided
//! `to_x0`/`to_score`, the `Denoiser`'s reading of one output in every target, and the
//! `Weighting` trait's provided target weight (MATH.md §4).

mod common;

use std::sync::Arc;

use common::{EdmSde, EpsParam, ExpSde, GaussianEps, VParam, flat, normals, rel_err};
use sdeflow_kernel::{
    Conversions, Denoiser, ForwardSde, Parameterization, Result, TimeCoefs, Weighting, convert,
    ops::lin2,
};

/// Coefficients away from α = 0 and σ = 0 on the VP test SDE (α² + σ² = 1) and on EDM's
/// (α = 1, σ = t, so α² + σ² ≠ 1).
fn coefs() -> Vec<TimeCoefs> {
    let vp = ExpSde::new();
    let edm = EdmSde;
    let mut cs: Vec<TimeCoefs> = [1e-3, 0.01, 0.3, 1.0]
        .iter()
        .map(|&t| vp.coefs(t))
        .collect();
    cs.extend([0.002, 0.5, 80.0].iter().map(|&t| edm.coefs(t)));
    cs
}

const TOL: f64 = 1e-12;

#[test]
fn eps_x0_eps_round_trip() -> Result<()> {
    let x = normals(1, 64, 3)?;
    let eps = normals(2, 64, 3)?;
    for c in coefs() {
        let x0 = convert::x0_from_eps(&x, &eps, &c.into())?;
        let back = convert::eps_from_x0(&x, &x0, &c.into())?;
        assert!(rel_err(&back, &eps)? <= TOL, "t = {}", c.t);
        let again = convert::x0_from_eps(&x, &back, &c.into())?;
        assert!(rel_err(&again, &x0)? <= TOL, "t = {}", c.t);
    }
    Ok(())
}

#[test]
fn eps_score_eps_round_trip() -> Result<()> {
    let eps = normals(3, 64, 3)?;
    for c in coefs() {
        let score = convert::score_from_eps(&eps, &c.into())?;
        let back = convert::eps_from_score(&score, &c.into())?;
        assert!(rel_err(&back, &eps)? <= TOL, "t = {}", c.t);
        // ŝ = −ε̂/σ entry by entry.
        for (s, e) in flat(&score)?.iter().zip(flat(&eps)?) {
            assert!((s + e / c.sigma).abs() <= 1e-15 * (1.0 + s.abs()));
        }
    }
    Ok(())
}

/// From x_t = α x₀ + σ ε, the true ε and x₀ come back exactly (MATH.md §3).
#[test]
fn noisy_sample_inverts_to_its_parts() -> Result<()> {
    let x0 = normals(4, 50, 2)?;
    let eps = normals(5, 50, 2)?;
    for c in coefs() {
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let by_hand = lin2(c.alpha, &x0, c.sigma, &eps)?;
        assert!(rel_err(&x, &by_hand)? <= 1e-15);
        assert!(
            rel_err(&convert::x0_from_eps(&x, &eps, &c.into())?, &x0)? <= TOL,
            "t = {}",
            c.t
        );
        assert!(
            rel_err(&convert::eps_from_x0(&x, &x0, &c.into())?, &eps)? <= TOL,
            "t = {}",
            c.t
        );
    }
    Ok(())
}

/// Tweedie (MATH.md §3): for data N(m, s²), E[x₀ | x_t] = (x + σ² ŝ)/α with the exact score;
/// by Gaussian conditioning it is also m + α s² (x − α m)/(α² s² + σ²). The conversion chain
/// score → ε̂ → x̂₀ must land on it.
#[test]
fn x0_from_the_exact_score_is_the_posterior_mean() -> Result<()> {
    let model = GaussianEps {
        mean: vec![0.7, -1.2, 2.0],
        std: 0.3,
    };
    let x = normals(6, 40, 3)?;
    for c in coefs() {
        let d = Denoiser::new(Arc::new(model.clone()), Arc::new(EpsParam), None, None);
        let x0_hat = d.eval(&x, &c)?.x0()?;
        let var = c.alpha * c.alpha * model.std * model.std + c.sigma * c.sigma;
        let xs = flat(&x)?;
        for (k, got) in flat(&x0_hat)?.iter().enumerate() {
            let m = model.mean[k % 3];
            let want = m + c.alpha * model.std * model.std * (xs[k] - c.alpha * m) / var;
            assert!(
                (got - want).abs() <= 1e-11 * (1.0 + want.abs()),
                "t = {}, entry {k}: {got} vs {want}",
                c.t
            );
        }
    }
    Ok(())
}

/// The provided `to_x0` and `to_score` of a parameterization that only gives `to_eps`:
/// for v-prediction, x̂₀ = (α x − σ v)/(α² + σ²) (MATH.md §3, last row, any α and σ) and
/// ŝ = −ε̂/σ; `from_eps` inverts `to_eps`, and the target maps back to the true ε.
#[test]
fn provided_conversions_of_a_v_parameterization() -> Result<()> {
    let x0 = normals(7, 30, 2)?;
    let eps = normals(8, 30, 2)?;
    let p = VParam;
    for c in coefs() {
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let v = p.target_of(&x0, &eps, &c.into())?;
        assert!(
            rel_err(&p.to_eps(&v, &x, &c.into())?, &eps)? <= TOL,
            "t = {}",
            c.t
        );
        let n = c.alpha * c.alpha + c.sigma * c.sigma;
        let want_x0 = lin2(c.alpha / n, &x, -c.sigma / n, &v)?;
        assert!(
            rel_err(&p.to_x0(&v, &x, &c.into())?, &want_x0)? <= TOL,
            "t = {}",
            c.t
        );
        assert!(
            rel_err(&p.to_x0(&v, &x, &c.into())?, &x0)? <= TOL,
            "t = {}",
            c.t
        );
        let want_score = eps.affine(-1.0 / c.sigma, 0.0)?;
        assert!(rel_err(&p.to_score(&v, &x, &c.into())?, &want_score)? <= TOL);
        let out = p.from_eps(&eps, &x, &c.into())?;
        assert!(rel_err(&out, &v)? <= TOL, "t = {}", c.t);
    }
    Ok(())
}

/// A `Prediction` reads one output as ε̂, x̂₀ and ŝ consistently, in either parameterization.
#[test]
fn prediction_reads_one_output_in_every_target() -> Result<()> {
    let model = Arc::new(GaussianEps {
        mean: vec![1.0, -1.0],
        std: 0.5,
    });
    let x = normals(9, 20, 2)?;
    for c in coefs() {
        let d = Denoiser::new(model.clone(), Arc::new(EpsParam), Some(8), None);
        let pred = d.eval(&x, &c)?;
        let eps = pred.eps()?;
        assert!(rel_err(&eps, pred.output())? <= 1e-15);
        assert!(rel_err(&pred.x0()?, &convert::x0_from_eps(&x, &eps, &c.into())?)? <= TOL);
        assert!(rel_err(&pred.score()?, &convert::score_from_eps(&eps, &c.into())?)? <= TOL);
        // The same numbers through v: report ε̂ as v, read it back.
        let v = VParam.from_eps(&eps, &x, &c.into())?;
        assert!(rel_err(&VParam.to_score(&v, &x, &c.into())?, &pred.score()?)? <= TOL);
    }
    Ok(())
}

/// w_ε = g²/σ² (likelihood weighting). MATH.md §4: the loss is the same in every target when
/// the target's weight is w_ε/k², k the target's loss scale.
#[derive(Debug)]
struct Likelihood;

impl Weighting for Likelihood {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        c.g2 / (c.sigma * c.sigma)
    }
}

#[test]
fn target_weight_makes_losses_agree_across_targets() -> Result<()> {
    let x0 = normals(10, 25, 2)?;
    let eps = normals(11, 25, 2)?;
    let eps_hat = normals(12, 25, 2)?;
    let sde = ExpSde::new();
    for t in [0.01, 0.2, 0.9] {
        let c = sde.coefs(t);
        assert_eq!(Likelihood.t_density(&sde, &c), None);
        let x = convert::noisy(&x0, &eps, &c.into())?;
        let sq = |a: &candle_core::Tensor, b: &candle_core::Tensor| -> Result<f64> {
            Ok(flat(&(a - b)?)?.iter().map(|v| v * v).sum())
        };
        let loss_eps = Likelihood.eps_weight(&c) * sq(&eps_hat, &eps)?;
        for p in [&EpsParam as &dyn Parameterization, &VParam] {
            let out = p.from_eps(&eps_hat, &x, &c.into())?;
            let target = p.target_of(&x0, &eps, &c.into())?;
            let w = Likelihood.target_weight(&c, p.eps_loss_scale(&c));
            let loss = w * sq(&out, &target)?;
            assert!(
                (loss - loss_eps).abs() <= 1e-11 * loss_eps,
                "t = {t}: {loss} vs {loss_eps}"
            );
        }
        assert_eq!(
            Likelihood.target_weight(&c, 2.0),
            Likelihood.eps_weight(&c) / 4.0
        );
    }
    Ok(())
}
