//! The Gaussian-mixture oracle against MATH.md §7: on one Gaussian the output is the closed
//! form score, read in an x₀ target it is Tweedie's x̂₀; on a mixture the score and divergence
//! match central differences of the exact log-density; per-row times give each row its own
//! marginal's score; rows are independent; shapes, dtypes and invalid parameters are handled
//! without panics.
//!
//! The oracle predicts in the registered `score` parameterization; a plugin must not depend
//! on another plugin crate, so this test registers its own `score` and an x₀ target, with
//! MATH.md §3's formulas written beside them.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    At, Data, Error, Lin, ModelContext, ParamEntry, Parameterization, PerRow, Registry, Result,
    Retarget, Rows, ScoreModel, TargetLin, TimeCoefs,
    data::MixtureData,
    mixture::{Covariance, GaussianMixture},
    register_param,
    testing::{flat, normals},
};
use sdeflow_score_gmm_oracle::{GmmOracle, Params};
use serde::{Deserialize, Serialize};

const EPS: f64 = f64::EPSILON;

/// Score prediction (MATH.md §3, third row): ε̂ = −σ ŝ; the target is −ε/σ.
#[derive(Debug)]
struct ScoreParam;

impl Parameterization for ScoreParam {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        Lin {
            out: -c.sigma,
            x: 0.0,
        }
    }
    fn target(&self, c: &TimeCoefs) -> TargetLin {
        TargetLin {
            x0: 0.0,
            eps: -1.0 / c.sigma,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

register_param!(
    "score",
    "score prediction (test)",
    NoParams,
    |_: NoParams| Ok(ScoreParam)
);

/// x₀-prediction (MATH.md §3, second row): ε̂ = (x − α x̂₀)/σ, x̂₀ the output itself.
#[derive(Debug)]
struct X0Param;

impl Parameterization for X0Param {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        Lin {
            out: -c.alpha / c.sigma,
            x: 1.0 / c.sigma,
        }
    }
    fn target(&self, _c: &TimeCoefs) -> TargetLin {
        TargetLin { x0: 1.0, eps: 0.0 }
    }
}

fn ctx() -> ModelContext {
    ModelContext::new(Device::Cpu, DType::F64)
}

/// A context whose data is N(0, I) in 2-D, with its exact law.
fn standard_normal_data() -> Result<ModelContext> {
    let law = GaussianMixture::new(
        vec![1.0],
        vec![vec![0.0, 0.0]],
        vec![Covariance::Isotropic(1.0)],
    )?;
    let data = Data::new(Arc::new(MixtureData::new(law, false)?))?;
    Ok(ctx().with_data(data))
}

fn oracle(p: Params) -> Result<GmmOracle> {
    GmmOracle::from_params(p, &ctx())
}

/// The oracle's output at one time per call.
fn score(o: &dyn ScoreModel, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
    o.forward(x, &At::new(c.into(), &ScoreParam), None)
}

/// Time coefficients with the given (α, σ); the oracle reads only α and σ, which need not
/// satisfy α² + σ² = 1 (any linear SDE, MATH.md §7).
fn coefs(alpha: f64, sigma: f64) -> TimeCoefs {
    TimeCoefs {
        t: 0.5,
        alpha,
        sigma,
        f: -1.0,
        g2: 2.0,
        lambda: (alpha / sigma).ln(),
    }
}

/// A VP-like pair, a pair with α² + σ² ≠ 1, and one close to the data (σ = 0.01).
fn all_coefs() -> [TimeCoefs; 3] {
    [coefs(0.8, 0.6), coefs(0.6, 0.9), coefs(0.99995, 0.01)]
}

/// One Gaussian N(m, s² I): p_t = N(α m, (α² s² + σ²) I), so ŝ = −(x − α m)/(α² s² + σ²).
/// The oracle's path (difference, Cholesky inverse, product) takes a handful of roundings of
/// terms of size (|x| + α|m|)/C: 16ε of that scale. It predicts in the registered `score`.
#[test]
fn single_gaussian_gives_the_closed_form_score() -> Result<()> {
    let (m, s) = ([0.5, -1.0, 2.0], 0.7);
    let o = oracle(Params {
        weights: vec![1.0],
        means: vec![m.to_vec()],
        covariances: vec![Covariance::Isotropic(s)],
    })?;
    assert_eq!(o.target().map(|t| t.name), Some("score"));
    let x = normals(1, 16, 3)?.affine(1.5, 0.0)?;
    let xs = x.to_vec2::<f64>()?;
    for c in all_coefs() {
        let (a, sg) = (c.alpha, c.sigma);
        let var = a * a * s * s + sg * sg;
        let out = score(&o, &x, &c)?;
        assert_eq!(out.dims(), &[16, 3]);
        for (row, got) in xs.iter().zip(out.to_vec2::<f64>()?) {
            for j in 0..3 {
                let want = -(row[j] - a * m[j]) / var;
                let scale = (row[j].abs() + a * m[j].abs()) / var;
                assert!(
                    (got[j] - want).abs() <= 16.0 * EPS * scale,
                    "α = {a}, σ = {sg}: {} vs {want}",
                    got[j]
                );
            }
        }
    }
    Ok(())
}

/// Each row at its own time gets its own marginal's score, bit for bit what a call at that
/// time gives it (rows at equal times share one marginal); a per-row list of the wrong length
/// is a shape error.
#[test]
fn per_row_times_give_each_row_its_marginal() -> Result<()> {
    let o = oracle(two_components())?;
    let cs = [
        coefs(0.8, 0.6),
        coefs(0.8, 0.6),
        coefs(0.6, 0.9),
        coefs(0.99995, 0.01),
        coefs(0.3, 0.95),
    ];
    let x = normals(11, cs.len(), 2)?;
    let time = PerRow::Rows(Rows::new(cs.to_vec()));
    let batch = o.forward(&x, &At::new(time, &ScoreParam), None)?;
    for (i, c) in cs.iter().enumerate() {
        let one = score(&o, &x.narrow(0, i, 1)?, c)?;
        assert_eq!(flat(&one)?, flat(&batch.narrow(0, i, 1)?)?, "row {i}");
    }
    let short = PerRow::Rows(Rows::new(cs[..2].to_vec()));
    assert!(matches!(
        o.forward(&x, &At::new(short, &ScoreParam), None),
        Err(Error::Shape(_))
    ));
    Ok(())
}

/// In an x₀ target the oracle reports Tweedie's E[x₀ | x_t] = (x + σ² ŝ)/α (MATH.md §3); for
/// one Gaussian that is (x + σ² (α m − x)/C)/α with C = α² s² + σ². Each of the two
/// conversions (ε̂ = −σŝ, then x̂₀ = (x − σ ε̂)/α) adds a few roundings: 32ε of the scale
/// (|x| + σ²|x − α m|/C)/α.
#[test]
fn x0_target_reports_tweedie() -> Result<()> {
    let (m, s) = ([1.0, -0.5], 0.4);
    let inner = oracle(Params {
        weights: vec![1.0],
        means: vec![m.to_vec()],
        covariances: vec![Covariance::Isotropic(s)],
    })?;
    let to = ParamEntry {
        name: "x0_test",
        plugin: Arc::new(X0Param),
    };
    let o = Retarget::new(Arc::new(inner), to)?;
    let x = normals(2, 8, 2)?;
    for c in all_coefs() {
        let (a, sg) = (c.alpha, c.sigma);
        let var = a * a * s * s + sg * sg;
        let out = o
            .forward(&x, &At::new(c.into(), &X0Param), None)?
            .to_vec2::<f64>()?;
        for (row, got) in x.to_vec2::<f64>()?.iter().zip(out) {
            for j in 0..2 {
                let want = (row[j] + sg * sg * (a * m[j] - row[j]) / var) / a;
                let scale = (row[j].abs() + sg * sg * (row[j] - a * m[j]).abs() / var) / a;
                assert!(
                    (got[j] - want).abs() <= 32.0 * EPS * scale,
                    "α = {a}: {} vs {want}",
                    got[j]
                );
            }
        }
    }
    Ok(())
}

/// A two-component mixture in d = 2, one component with a full (correlated) covariance and one
/// diagonal.
fn two_components() -> Params {
    Params {
        weights: vec![0.3, 0.7],
        means: vec![vec![-1.0, 0.5], vec![1.5, -0.5]],
        covariances: vec![
            Covariance::Full(vec![vec![1.0, 0.3], vec![0.3, 0.5]]),
            Covariance::Diagonal(vec![0.2, 0.8]),
        ],
    }
}

/// On the mixture, ŝ from `forward` equals the gradient of log p_t taken by central
/// differences of `marginal(c).eval_row(..).log_prob` with h = 1e-5: truncation h²/6·|∂³ log p|
/// ≈ 1e-10 × O(10) and rounding ε|log p|/h ≈ 1e-10, so 1e-6 is the bar. The divergence that
/// `eval_row` reports matches central differences of its score to the same bar.
#[test]
fn mixture_score_matches_central_differences_of_log_density() -> Result<()> {
    let o = oracle(two_components())?;
    let x = normals(3, 24, 2)?.affine(1.5, 0.0)?;
    let h = 1e-5;
    for c in all_coefs().into_iter().take(2).chain([coefs(0.3, 0.95)]) {
        let marginal = o.marginal(&c)?;
        let scores = score(&o, &x, &c)?.to_vec2::<f64>()?;
        for (row, e) in x.to_vec2::<f64>()?.iter().zip(scores) {
            let exact = marginal.eval_row(row, true);
            let mut div_fd = 0.0;
            for j in 0..2 {
                let (mut up, mut down) = (row.clone(), row.clone());
                up[j] += h;
                down[j] -= h;
                let (ru, rd) = (
                    marginal.eval_row(&up, false),
                    marginal.eval_row(&down, false),
                );
                let grad = (ru.log_prob - rd.log_prob) / (2.0 * h);
                let score = e[j];
                assert!(
                    (score - grad).abs() <= 1e-6,
                    "α = {}, x = {row:?}: ŝ_{j} = {score}, finite difference {grad}",
                    c.alpha
                );
                assert!((exact.score[j] - score).abs() <= 1e-12 * (1.0 + score.abs()));
                div_fd += (ru.score[j] - rd.score[j]) / (2.0 * h);
            }
            assert!(
                (exact.divergence - div_fd).abs() <= 1e-6,
                "α = {}: ∇·ŝ = {}, finite difference {div_fd}",
                c.alpha,
                exact.divergence
            );
        }
    }
    Ok(())
}

/// log p_t of one Gaussian is the closed-form N(α m, C I) density:
/// −‖x − α m‖²/(2C) − (d/2) ln(2π C). A sum of d squares, a log: 1e-13 relative.
#[test]
fn single_gaussian_log_density_is_closed_form() -> Result<()> {
    let (m, s) = ([0.5, -1.0, 2.0], 0.7);
    let o = oracle(Params {
        weights: vec![1.0],
        means: vec![m.to_vec()],
        covariances: vec![Covariance::Isotropic(s)],
    })?;
    let x = normals(4, 8, 3)?;
    for c in all_coefs() {
        let var = c.alpha * c.alpha * s * s + c.sigma * c.sigma;
        let marginal = o.marginal(&c)?;
        for row in x.to_vec2::<f64>()? {
            let sq: f64 = (0..3).map(|j| (row[j] - c.alpha * m[j]).powi(2)).sum();
            let want = -0.5 * sq / var - 1.5 * (2.0 * std::f64::consts::PI * var).ln();
            let got = marginal.eval_row(&row, false).log_prob;
            assert!(
                (got - want).abs() <= 1e-13 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }
    Ok(())
}

/// `rows_independent` is true, and it is honest: the whole batch and each row alone give the
/// same bits.
#[test]
fn rows_are_independent() -> Result<()> {
    let o = oracle(two_components())?;
    assert!(o.rows_independent());
    let x = normals(5, 7, 2)?.affine(2.0, 0.0)?;
    let c = coefs(0.8, 0.6);
    let batch = score(&o, &x, &c)?;
    for i in 0..7 {
        let one = score(&o, &x.narrow(0, i, 1)?, &c)?;
        assert_eq!(flat(&one)?, flat(&batch.narrow(0, i, 1)?)?, "row {i}");
    }
    Ok(())
}

/// A wrong dimension, a rank-1 or a rank-3 input is a `Shape` error, not a panic.
#[test]
fn wrong_input_shape_is_a_shape_error() -> Result<()> {
    let o = oracle(two_components())?;
    let c = coefs(0.8, 0.6);
    let dev = Device::Cpu;
    for bad in [
        Tensor::zeros((4, 3), DType::F64, &dev)?,
        Tensor::zeros((4, 1), DType::F64, &dev)?,
        Tensor::zeros(4, DType::F64, &dev)?,
        Tensor::zeros((4, 2, 1), DType::F64, &dev)?,
    ] {
        match score(&o, &bad, &c) {
            Err(Error::Shape(msg)) => assert!(msg.contains("2-dimensional"), "{msg}"),
            other => panic!(
                "input {:?}: expected a shape error, got {other:?}",
                bad.dims()
            ),
        }
    }
    // An empty batch of the right width is fine.
    let empty = score(&o, &Tensor::zeros((0, 2), DType::F64, &dev)?, &c)?;
    assert_eq!(empty.dims(), &[0, 2]);
    Ok(())
}

/// f32 in, f32 out, equal to the f64 answer on the same (f32-representable) inputs up to the
/// final rounding to f32: 2⁻²⁴ relative, so 1e-6 of the row's scale.
#[test]
fn f32_inputs_give_f32_outputs() -> Result<()> {
    let o = oracle(two_components())?;
    let c = coefs(0.6, 0.9);
    let x32 = normals(6, 10, 2)?.to_dtype(DType::F32)?;
    let out32 = score(&o, &x32, &c)?;
    assert_eq!(out32.dtype(), DType::F32);
    assert_eq!(out32.dims(), &[10, 2]);
    let out64 = flat(&score(&o, &x32.to_dtype(DType::F64)?, &c)?)?;
    for (a, b) in flat(&out32)?.iter().zip(&out64) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
    Ok(())
}

/// One sample is a d-vector. The defaults name no mixture: the oracle reads the law of the
/// context's data — here N(0, I) in d = 2, whose score is −x/(α² + σ²) by the single-Gaussian
/// closed form — and without data, or with the mixture named twice, it is an error on `weights`.
#[test]
fn sample_shape_and_defaults() -> Result<()> {
    assert_eq!(oracle(two_components())?.sample_shape(), vec![2]);
    let three = Params {
        weights: vec![1.0],
        means: vec![vec![0.0; 3]],
        covariances: vec![Covariance::Diagonal(vec![1.0, 2.0, 3.0])],
    };
    assert_eq!(oracle(three)?.sample_shape(), vec![3]);

    let p = Params::default();
    assert!(!p.names_a_mixture());
    let on_weights = |r: Result<GmmOracle>| matches!(r, Err(Error::InvalidParam { field, .. }) if field == "weights");
    assert!(on_weights(oracle(p.clone())));
    let cx = standard_normal_data()?;
    assert!(on_weights(GmmOracle::from_params(two_components(), &cx)));
    let o = GmmOracle::from_params(p, &cx)?;
    assert_eq!(o.sample_shape(), vec![2]);
    assert_eq!(o.mixture().components(), 1);
    assert!(o.varmap().is_none());
    let c = coefs(0.6, 0.9);
    let x = normals(7, 5, 2)?;
    let out = flat(&score(&o, &x, &c)?)?;
    for (xi, got) in flat(&x)?.iter().zip(out) {
        let want = -xi / (c.alpha * c.alpha + c.sigma * c.sigma);
        assert!((got - want).abs() <= 16.0 * EPS * (1.0 + want.abs()));
    }
    Ok(())
}

/// `from_params` rejects what `GaussianMixture::new` refuses, as `InvalidParam` naming the
/// field: weights that do not sum to 1 or are negative, a covariance that is not symmetric
/// positive definite (eigenvalues 3 and −1; a zero scale; an asymmetric matrix), and counts
/// that do not match.
#[test]
fn invalid_params_are_rejected() -> Result<()> {
    let base = two_components();
    let cases = [
        (
            Params {
                weights: vec![0.5, 0.6],
                ..base.clone()
            },
            "weights",
        ),
        (
            Params {
                weights: vec![1.2, -0.2],
                ..base.clone()
            },
            "weights",
        ),
        (
            Params {
                weights: vec![],
                means: vec![],
                covariances: vec![],
            },
            "weights",
        ),
        (
            Params {
                covariances: vec![
                    Covariance::Full(vec![vec![1.0, 2.0], vec![2.0, 1.0]]),
                    Covariance::Isotropic(1.0),
                ],
                ..base.clone()
            },
            "covariances",
        ),
        (
            Params {
                covariances: vec![Covariance::Isotropic(0.0), Covariance::Isotropic(1.0)],
                ..base.clone()
            },
            "covariances",
        ),
        (
            Params {
                covariances: vec![
                    Covariance::Full(vec![vec![1.0, 0.2], vec![0.0, 1.0]]),
                    Covariance::Isotropic(1.0),
                ],
                ..base.clone()
            },
            "covariances",
        ),
        (
            Params {
                covariances: vec![
                    Covariance::Diagonal(vec![1.0, 1.0, 1.0]),
                    Covariance::Isotropic(1.0),
                ],
                ..base.clone()
            },
            "covariances",
        ),
        (
            Params {
                means: vec![vec![0.0, 0.0]],
                ..base.clone()
            },
            "means",
        ),
    ];
    for (p, field) in cases {
        match oracle(p.clone()) {
            Err(Error::InvalidParam { field: f, .. }) => assert_eq!(f, field, "{p:?}"),
            other => panic!("{p:?}: expected InvalidParam on `{field}`, got {other:?}"),
        }
    }
    Ok(())
}

/// The `gmm_oracle` registration reads the documented RON syntax (`isotropic(s)`,
/// `diagonal([..])`, `full([[..], ..])`), defaults missing fields, and refuses bad mixtures.
#[test]
fn registration_reads_documented_ron() -> Result<()> {
    let reg = Registry::global()?;
    let m = reg.model("gmm_oracle", "()", &standard_normal_data()?)?;
    assert_eq!(m.sample_shape(), vec![2]);
    let cx = ctx();
    let m = reg.model(
        "gmm_oracle",
        "(weights: [0.3, 0.7], means: [[-1.0, 0.5], [1.5, -0.5]], \
         covariances: [full([[1.0, 0.3], [0.3, 0.5]]), diagonal([0.2, 0.8])])",
        &cx,
    )?;
    let direct = oracle(two_components())?;
    let x = normals(8, 6, 2)?;
    let c = coefs(0.8, 0.6);
    assert_eq!(flat(&score(&*m, &x, &c)?)?, flat(&score(&direct, &x, &c)?)?);
    let m = reg.model(
        "gmm_oracle",
        "(weights: [1.0], means: [[0.0, 0.0, 0.0]], covariances: [isotropic(2.0)])",
        &cx,
    )?;
    assert_eq!(m.sample_shape(), vec![3]);
    assert!(
        reg.model("gmm_oracle", "(weights: [0.5], means: [[0.0]])", &cx)
            .is_err()
    );
    assert!(reg.model("gmm_oracle", "(weight: [1.0])", &cx).is_err());
    Ok(())
}
