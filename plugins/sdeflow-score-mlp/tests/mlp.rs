//! The MLP against its formula, evaluated by hand in f64 from its own variables: the
//! sinusoidal embedding of λ, the split first layer, SiLU, the output layer; seeded and bounded
//! initialization; parameter and input validation; the registration.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    At, Error, ModelContext, Result, Rows, ScoreModel, Time, TimeCoefs,
    testing::{EpsParam, normals, rows},
};
use sdeflow_score_mlp::{Mlp, Params};

fn ctx(dtype: DType) -> ModelContext {
    ModelContext::new(Device::Cpu, dtype)
}

fn small(seed: u64) -> Params {
    Params {
        dim: 2,
        hidden: 5,
        layers: 2,
        embed_dim: 4,
        max_period: 100.0,
        seed,
    }
}

fn coefs(lambda: f64) -> TimeCoefs {
    TimeCoefs {
        t: 0.5,
        alpha: 0.8,
        sigma: 0.6,
        f: -1.0,
        g2: 2.0,
        lambda,
    }
}

/// One time per call at half log-SNR `lambda`, read by ε-prediction (c_noise = λ).
fn at(lambda: f64) -> At {
    At::new(coefs(lambda).into(), &EpsParam)
}

/// A variable of the model's map as a row-major matrix.
fn var(m: &Mlp, name: &str) -> Result<Vec<Vec<f64>>> {
    let vm = m.varmap().expect("the mlp has variables");
    let data = vm.data().lock().expect("unpoisoned");
    let t = data[name].as_tensor().to_dtype(DType::F64)?;
    Ok(match t.rank() {
        1 => vec![t.to_vec1::<f64>()?],
        _ => t.to_vec2::<f64>()?,
    })
}

fn affine(w: &[Vec<f64>], b: &[f64], x: &[f64]) -> Vec<f64> {
    w.iter()
        .zip(b)
        .map(|(row, bi)| row.iter().zip(x).map(|(a, v)| a * v).sum::<f64>() + bi)
        .collect()
}

fn silu(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|u| u / (1.0 + (-u).exp())).collect()
}

/// out = W_o SiLU(W₂ SiLU(W₁ [x; e(λ)] + b₁) + b₂) + b_o with e(λ) = [sin λω_k, cos λω_k],
/// ω_k = P^{−k/(E/2)}, computed by hand from the model's variables, to 1e-12.
#[test]
fn forward_matches_the_formula() -> Result<()> {
    let p = small(3);
    let m = Mlp::new(p.clone(), &ctx(DType::F64))?;
    let x = normals(1, 6, 2)?;
    for lambda in [-7.5, -0.3, 0.0, 2.0, 11.0] {
        let got = rows(&m.forward(&x, &at(lambda), None)?)?;
        let half = p.embed_dim / 2;
        let w: Vec<f64> = (0..half)
            .map(|k| p.max_period.powf(-(k as f64) / half as f64))
            .collect();
        let e: Vec<f64> = w
            .iter()
            .map(|w| (lambda * w).sin())
            .chain(w.iter().map(|w| (lambda * w).cos()))
            .collect();
        for (row, g) in rows(&x)?.iter().zip(&got) {
            let input: Vec<f64> = row.iter().chain(&e).copied().collect();
            let mut h = silu(affine(
                &var(&m, "l0.weight")?,
                &var(&m, "l0.bias")?[0],
                &input,
            ));
            h = silu(affine(&var(&m, "l1.weight")?, &var(&m, "l1.bias")?[0], &h));
            let want = affine(&var(&m, "out.weight")?, &var(&m, "out.bias")?[0], &h);
            for (a, b) in g.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "λ = {lambda}: {a} vs {b}"
                );
            }
        }
    }
    Ok(())
}

/// The same seed gives the same weights bit for bit, another seed others; every weight and
/// bias lies within ±1/√fan_in (PyTorch's nn.Linear default).
#[test]
fn initialization_is_seeded_and_bounded() -> Result<()> {
    let (a, b, c) = (
        Mlp::new(small(1), &ctx(DType::F64))?,
        Mlp::new(small(1), &ctx(DType::F64))?,
        Mlp::new(small(2), &ctx(DType::F64))?,
    );
    for (name, fan_in) in [("l0", 6.0), ("l1", 5.0), ("out", 5.0)] {
        for part in ["weight", "bias"] {
            let key = format!("{name}.{part}");
            let (va, vb, vc) = (var(&a, &key)?, var(&b, &key)?, var(&c, &key)?);
            assert_eq!(va, vb, "{key}: same seed");
            assert_ne!(va, vc, "{key}: other seed");
            let bound = 1.0 / f64::sqrt(fan_in);
            assert!(
                va.iter().flatten().all(|v| v.abs() <= bound),
                "{key} out of ±{bound}"
            );
        }
    }
    Ok(())
}

/// In f32 the outputs follow the f64 network to f32 precision.
#[test]
fn f32_follows_f64() -> Result<()> {
    let (m64, m32) = (
        Mlp::new(Params::default(), &ctx(DType::F64))?,
        Mlp::new(Params::default(), &ctx(DType::F32))?,
    );
    let x = normals(2, 9, 2)?;
    let y64 = rows(&m64.forward(&x, &at(1.5), None)?)?;
    let y32 = rows(&m32.forward(&x.to_dtype(DType::F32)?, &at(1.5), None)?)?;
    for (a, b) in y32.iter().flatten().zip(y64.iter().flatten()) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
    Ok(())
}

/// Bad parameters name their field; a wrong input shape or a non-finite λ is an error.
#[test]
fn bad_input_is_an_error() -> Result<()> {
    let field = |p: Params| match Mlp::new(p, &ctx(DType::F64)) {
        Err(Error::InvalidParam { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let d = Params::default;
    assert_eq!(field(Params { dim: 0, ..d() }), "dim");
    assert_eq!(field(Params { hidden: 0, ..d() }), "hidden");
    assert_eq!(field(Params { layers: 0, ..d() }), "layers");
    assert_eq!(
        field(Params {
            embed_dim: 3,
            ..d()
        }),
        "embed_dim"
    );
    assert_eq!(
        field(Params {
            max_period: 1.0,
            ..d()
        }),
        "max_period"
    );
    let m = Mlp::new(d(), &ctx(DType::F64))?;
    let wrong = Tensor::zeros((4, 3), DType::F64, &Device::Cpu)?;
    assert!(matches!(
        m.forward(&wrong, &at(0.0), None),
        Err(Error::Shape(_))
    ));
    let x = Tensor::zeros((4, 2), DType::F64, &Device::Cpu)?;
    assert!(m.forward(&x, &at(f64::INFINITY), None).is_err());
    Ok(())
}

/// The registration builds from RON with the defaults filled in; unknown fields fail.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    let m = reg.model("mlp", "(dim: 3, hidden: 8)", &ctx(DType::F32))?;
    assert_eq!(m.sample_shape(), vec![3]);
    assert_eq!(m.varmap().map(|v| v.all_vars().len()), Some(8));
    assert!(reg.model("mlp", "(width: 8)", &ctx(DType::F32)).is_err());
    Ok(())
}

/// With one time per row, row i is what a call at row i's time gives it: the embedding is one
/// row per sample instead of one per call (f64, to 1e-13 relative); a per-row time list of the
/// wrong length is an error.
#[test]
fn per_row_times_match_per_call_rows() -> Result<()> {
    let m = Mlp::new(small(5), &ctx(DType::F64))?;
    let lambdas = [-6.0, -1.5, 0.0, 0.7, 3.0, 9.5];
    let x = normals(4, lambdas.len(), 2)?;
    let time = Time::Rows(Rows::new(lambdas.iter().map(|&l| coefs(l)).collect()));
    let batch = rows(&m.forward(&x, &At::new(time, &EpsParam), None)?)?;
    for (i, &l) in lambdas.iter().enumerate() {
        let one = rows(&m.forward(&x.narrow(0, i, 1)?, &at(l), None)?)?;
        for (a, b) in batch[i].iter().zip(&one[0]) {
            assert!(
                (a - b).abs() <= 1e-13 * (1.0 + b.abs()),
                "row {i}: {a} vs {b}"
            );
        }
    }
    let short = Time::Rows(Rows::new(vec![coefs(0.0); 2]));
    assert!(m.forward(&x, &At::new(short, &EpsParam), None).is_err());
    Ok(())
}
