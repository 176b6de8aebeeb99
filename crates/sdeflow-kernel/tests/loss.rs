//! The denoising score-matching loss (`sdeflow_kernel::loss`, MATH.md §4, §9) against exact
//! answers on the OU SDE: the exact model's loss is the closed form d α² s²/(α² s² + σ²) at a
//! fixed t; a perturbed model's is larger by exactly its error; per-row and per-call evaluation
//! agree; a row's draws do not depend on the batch split; t comes from the weighting's density
//! and the loss carries w_ε alone; the gradient reaches every weight of a trainable model.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::LinearEps;
use sdeflow_kernel::{
    At, Denoiser, Dsm, ForwardSde, PerRow, Result, Rows, ScoreModel, TimeCoefs, Weighting,
    testing::{EpsParam, Gaussian, Ou, flat},
};

/// w_ε = 1, t uniform.
#[derive(Debug)]
struct Simple;

impl Weighting for Simple {
    fn eps_weight(&self, _c: &TimeCoefs) -> f64 {
        1.0
    }
}

/// w_ε = 1 + λ², with its own density p(t) = 2(t − t_ε)/(T − t_ε)² on [t_ε, T] (inverse CDF
/// t = t_ε + (T − t_ε) √u).
#[derive(Debug)]
struct Ramp;

impl Weighting for Ramp {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        1.0 + c.lambda * c.lambda
    }
    fn t_density(&self, sde: &dyn ForwardSde, c: &TimeCoefs) -> Option<f64> {
        let (a, b) = (sde.t_eps(), sde.t_max());
        Some(2.0 * (c.t - a) / ((b - a) * (b - a)))
    }
    fn sample_t(&self, sde: &dyn ForwardSde, u: f64) -> Option<f64> {
        let (a, b) = (sde.t_eps(), sde.t_max());
        Some(a + (b - a) * u.sqrt())
    }
}

fn dsm(w: impl Weighting + 'static) -> Dsm {
    Dsm::new(Arc::new(Ou), Arc::new(w))
}

fn host(x: &Tensor) -> Result<Vec<f64>> {
    flat(x)
}

/// `n` exact draws of p₀ = N(m, s² I) from a fixed stream, independent of the loss's draws.
fn data(law: &Gaussian, n: usize) -> Result<Tensor> {
    let d = law.mean.len();
    let z = sdeflow_kernel::testing::normals(77, n, d)?;
    let m = Tensor::new(law.mean.as_slice(), &Device::Cpu)?;
    Ok(z.affine(law.std, 0.0)?.broadcast_add(&m)?)
}

fn mean_and_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// At each fixed t the exact model's mean row loss is d α² s²/(α² s² + σ²) within 3 standard
/// errors (20,000 rows); a model off by δ in every coordinate of ε̂ pays d δ² more on the same
/// draws (the paired difference 2δ·Σ(ε̂* − ε) + d δ² has mean d δ²: within 3 standard errors).
#[test]
fn the_exact_models_loss_is_the_closed_form() -> Result<()> {
    let law = Gaussian::default();
    let d = law.mean.len() as f64;
    let n = 20_000;
    let x0 = data(&law, n)?;
    let loss = dsm(Simple);
    let draws = loss.draw(5, 0, 0, n, &[2], DType::F64, &Device::Cpu)?;
    let exact = law.denoiser();
    let delta = 0.05;
    let off = Denoiser::new(
        Arc::new(Shifted(law.clone(), delta)),
        Arc::new(EpsParam),
        None,
        None,
    );
    for t in [0.01, 0.2, 0.7] {
        let at = loss.at_time(&draws, t);
        let rows = host(&loss.row_losses(&exact, &x0, None, &at)?)?;
        let (mean, se) = mean_and_se(&rows);
        let c = Ou.coefs(t);
        let a2s2 = c.alpha * c.alpha * law.std * law.std;
        let want = d * a2s2 / (a2s2 + c.sigma * c.sigma);
        assert!(
            (mean - want).abs() <= 3.0 * se,
            "t = {t}: {mean} ± {se} vs {want}"
        );
        let worse = host(&loss.row_losses(&off, &x0, None, &at)?)?;
        let diff: Vec<f64> = worse.iter().zip(&rows).map(|(a, b)| a - b).collect();
        let (gap, se_gap) = mean_and_se(&diff);
        assert!(
            gap > 0.0,
            "t = {t}: the perturbed model's loss is not larger"
        );
        assert!(
            (gap - d * delta * delta).abs() <= 3.0 * se_gap,
            "t = {t}: gap {gap} ± {se_gap} vs {}",
            d * delta * delta
        );
    }
    Ok(())
}

/// The exact Gaussian with δ added to every coordinate of its ε̂.
#[derive(Debug)]
struct Shifted(Gaussian, f64);

impl ScoreModel for Shifted {
    fn sample_shape(&self) -> Vec<usize> {
        self.0.sample_shape()
    }
    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.0.forward(x, at, cond)?.affine(1.0, self.1)?)
    }
}

/// With every row at one t, the per-row loss (a column of identical factors, per-row
/// conversions) equals the per-call loss to 1e-12 relative, row by row.
#[test]
fn per_row_and_per_call_losses_agree() -> Result<()> {
    let law = Gaussian::default();
    let n = 300;
    let x0 = data(&law, n)?;
    let loss = dsm(Ramp);
    let draws = loss.draw(1, 3, 0, n, &[2], DType::F64, &Device::Cpu)?;
    for t in [0.005, 0.4, 1.0] {
        let call = loss.at_time(&draws, t);
        let rows = sdeflow_kernel::Draws {
            time: PerRow::Rows(Rows::new(vec![Ou.coefs(t); n])),
            eps: draws.eps.clone(),
            dropout: None,
            probes: None,
        };
        let d = law.denoiser();
        let (a, b) = (
            host(&loss.row_losses(&d, &x0, None, &call)?)?,
            host(&loss.row_losses(&d, &x0, None, &rows)?)?,
        );
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1e-300),
                "t = {t}, row {i}: {a} vs {b}"
            );
        }
    }
    Ok(())
}

/// Rows 40..100 drawn as one batch or as part of rows 0..100 get the same t and ε bits; a
/// different step or seed gets different ones.
#[test]
fn draws_do_not_depend_on_the_batch_split() -> Result<()> {
    let loss = dsm(Ramp);
    let whole = loss.draw(9, 17, 0, 100, &[3], DType::F32, &Device::Cpu)?;
    let part = loss.draw(9, 17, 40, 60, &[3], DType::F32, &Device::Cpu)?;
    let ts = |d: &sdeflow_kernel::Draws| -> Vec<f64> {
        match &d.time {
            PerRow::Rows(r) => r.values().iter().map(|c| c.t).collect(),
            PerRow::Call(_) => Vec::new(),
        }
    };
    assert_eq!(ts(&whole)[40..], ts(&part)[..]);
    assert_eq!(
        host(&whole.eps.narrow(0, 40, 60)?)?,
        host(&part.eps)?,
        "ε of rows 40..100"
    );
    let next = loss.draw(9, 18, 0, 100, &[3], DType::F32, &Device::Cpu)?;
    assert_ne!(ts(&whole), ts(&next));
    let other = loss.draw(10, 17, 0, 100, &[3], DType::F32, &Device::Cpu)?;
    assert_ne!(host(&whole.eps)?, host(&other.eps)?);
    assert_eq!(whole.eps.dims(), &[100, 3]);
    Ok(())
}

/// t follows the weighting's density: under `Ramp` (p ∝ t − t_ε), E[t] = t_ε + 2(T − t_ε)/3
/// within 3 standard errors on 20,000 rows; under `Simple`, the uniform mean. And the loss
/// carries w_ε alone: each row's loss is w_ε(t_r) ‖ε̂ − ε‖², with no division by p(t).
#[test]
fn times_follow_the_density_and_the_loss_carries_w_alone() -> Result<()> {
    let (a, b) = (Ou.t_eps(), Ou.t_max());
    for (loss, want) in [
        (dsm(Ramp), a + 2.0 * (b - a) / 3.0),
        (dsm(Simple), 0.5 * (a + b)),
    ] {
        let draws = loss.draw(2, 0, 0, 20_000, &[1], DType::F64, &Device::Cpu)?;
        let PerRow::Rows(rows) = &draws.time else {
            panic!("training draws are per row");
        };
        let ts: Vec<f64> = rows.values().iter().map(|c| c.t).collect();
        let (mean, se) = mean_and_se(&ts);
        assert!((mean - want).abs() <= 3.0 * se, "{mean} ± {se} vs {want}");
    }
    let law = Gaussian::default();
    let loss = dsm(Ramp);
    let n = 64;
    let x0 = data(&law, n)?;
    let draws = loss.draw(4, 1, 0, n, &[2], DType::F64, &Device::Cpu)?;
    let d = law.denoiser();
    let got = host(&loss.row_losses(&d, &x0, None, &draws)?)?;
    let PerRow::Rows(rows) = &draws.time else {
        panic!("per row");
    };
    let x = sdeflow_kernel::convert::noisy(&x0, &draws.eps, &draws.time)?;
    let eps_hat = d.eval_at(&x, &draws.time)?.eps()?;
    let sq = host(&(eps_hat - &draws.eps)?.sqr()?.sum(1)?)?;
    for (i, c) in rows.values().iter().enumerate() {
        let want = Ramp.eps_weight(c) * sq[i];
        assert!(
            (got[i] - want).abs() <= 1e-12 * want,
            "row {i}: {} vs {want}",
            got[i]
        );
    }
    Ok(())
}

/// The loss through a trainable network keeps autograd's graph when the denoiser does, and
/// its gradient reaches every weight.
#[test]
fn the_gradient_reaches_every_weight() -> Result<()> {
    let (model, vars) = LinearEps::trainable(2, 16, DType::F64)?;
    let d = Denoiser::new(Arc::new(model), Arc::new(EpsParam), Some(64), None).keep_graph(true);
    let loss = dsm(Ramp);
    let x0 = data(&Gaussian::default(), 100)?;
    let draws = loss.draw(3, 0, 0, 100, &[2], DType::F64, &Device::Cpu)?;
    let value = loss.loss(&d, &x0, None, &draws)?;
    assert!(value.to_scalar::<f64>()?.is_finite());
    let grads = value.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let g = grads.get(v.as_tensor()).expect("a gradient");
        let max = g.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
        assert!(max > 0.0, "variable {i} gets no gradient");
    }
    Ok(())
}

/// A batch's labels reach the model with its rows (`cond`, chunked with them), and a label
/// tensor whose row count is not the batch's is an error.
#[test]
fn labels_travel_with_the_batch() -> Result<()> {
    let model = Arc::new(common::RecordingModel {
        independent: false,
        dim: 2,
        ..Default::default()
    });
    let d = Denoiser::new(model.clone(), Arc::new(EpsParam), Some(16), None);
    let loss = dsm(Simple);
    let n = 40;
    let x0 = data(&Gaussian::default(), n)?;
    let draws = loss.draw(6, 0, 0, n, &[2], DType::F64, &Device::Cpu)?;
    let none = host(&loss.row_losses(&d, &x0, None, &draws)?)?;
    let zeros = Tensor::zeros((n, 2), DType::F64, &Device::Cpu)?;
    assert_eq!(
        host(&loss.row_losses(&d, &x0, Some(&zeros), &draws)?)?,
        none
    );
    let ones = zeros.ones_like()?;
    assert_ne!(host(&loss.row_losses(&d, &x0, Some(&ones), &draws)?)?, none);
    // Three padded chunks of 16 rows per evaluation.
    assert!(model.calls.lock().expect("lock").iter().all(|&r| r == 16));
    let short = Tensor::zeros((n - 1, 2), DType::F64, &Device::Cpu)?;
    assert!(loss.row_losses(&d, &x0, Some(&short), &draws).is_err());
    Ok(())
}
