//! The small tensor helpers in `ops` and the error messages' shape (lowercase, no final
//! period, naming what to fix); the fused CPU paths of `lin2`, `lin3` and `all_finite` against
//! candle's own ops (the same bits) and their fallback for strided and tracked tensors.

use candle_core::{DType, Device, Tensor, Var};
use sdeflow_kernel::{
    Error, Result,
    ops::{all_finite, expect_rows, lin2, lin3},
    testing::normals,
};

#[test]
fn lin2_and_lin3_are_linear_combinations() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::new(&[1.0f64, 2.0, 3.0], &dev)?;
    let y = Tensor::new(&[-1.0f64, 0.5, 4.0], &dev)?;
    let z = Tensor::new(&[2.0f64, 2.0, -2.0], &dev)?;
    // 2x − 3y = (5, 2.5, −6); 2x − 3y + 0.5z = (6, 3.5, −7), by hand.
    assert_eq!(
        lin2(2.0, &x, -3.0, &y)?.to_vec1::<f64>()?,
        vec![5.0, 2.5, -6.0]
    );
    assert_eq!(
        lin3(2.0, &x, -3.0, &y, 0.5, &z)?.to_vec1::<f64>()?,
        vec![6.0, 3.5, -7.0]
    );
    Ok(())
}

#[test]
fn all_finite_detects_nan_and_infinities() -> Result<()> {
    let dev = Device::Cpu;
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let ok = Tensor::new(&[[1.0f64, -2.0], [3.5, 0.0]], &dev)?.to_dtype(dtype)?;
        assert!(all_finite(&ok)?, "{dtype:?}");
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let t = Tensor::new(&[[1.0f64, bad], [3.5, 0.0]], &dev)?.to_dtype(dtype)?;
            assert!(!all_finite(&t)?, "{dtype:?} {bad}");
        }
        // +∞ and −∞ together must not cancel.
        let both = Tensor::new(&[f64::INFINITY, f64::NEG_INFINITY], &dev)?.to_dtype(dtype)?;
        assert!(!all_finite(&both)?, "{dtype:?}");
    }
    assert!(all_finite(&Tensor::zeros((0, 3), DType::F32, &dev)?)?);
    Ok(())
}

/// Large but finite values are finite: their sum overflowing the dtype must not read as
/// NaN/Inf (f32 max ≈ 3.4e38; f16 max 65504).
#[test]
fn all_finite_does_not_overflow_on_large_finite_values() -> Result<()> {
    let dev = Device::Cpu;
    let big32 = Tensor::new(&[3e38f32, 3e38, 3e38], &dev)?;
    assert!(all_finite(&big32)?);
    let big16 = Tensor::new(&[60000f32, 60000.0], &dev)?.to_dtype(DType::F16)?;
    assert!(all_finite(&big16)?);
    let big64 = Tensor::new(&[1.7e308f64, 1.7e308], &dev)?;
    assert!(all_finite(&big64)?);
    Ok(())
}

#[test]
fn expect_rows_names_the_tensor() -> Result<()> {
    let x = Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?;
    expect_rows(&x, 3, "x")?;
    match expect_rows(&x, 4, "the noise") {
        Err(e @ Error::Shape(_)) => {
            assert_eq!(
                e.to_string(),
                "shape mismatch: the noise has 3 rows, expected 4"
            );
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn error_messages_name_the_fix() -> Result<()> {
    let cases = [
        (
            Error::invalid("vp", "beta_max", "must exceed beta_min = 0.1, got 0"),
            "vp: invalid `beta_max`: must exceed beta_min = 0.1, got 0",
        ),
        (
            Error::UnknownPlugin {
                kind: "solver",
                name: "dddim".into(),
                known: vec!["ddim".into(), "euler_maruyama".into()],
            },
            "unknown solver plugin `dddim` (did you mean `ddim`?); registered solver plugins: ddim, euler_maruyama",
        ),
        (
            Error::NonFinite {
                what: "samples".into(),
                step: 3,
                t: 0.25,
                rows: vec![],
            },
            "non-finite values in samples at step 3 (t = 2.5e-1)",
        ),
        (
            Error::NonFinite {
                what: "samples".into(),
                step: 3,
                t: 0.25,
                rows: vec![4, 9, 12],
            },
            "non-finite values in samples at step 3 (t = 2.5e-1), first in samples 4, 9 and 12",
        ),
        (
            Error::Config {
                file: "a.ron".into(),
                line: 3,
                col: 4,
                msg: "unexpected field".into(),
            },
            "a.ron:3:4: unexpected field",
        ),
    ];
    for (e, want) in cases {
        let msg = e.to_string();
        assert_eq!(msg, want);
        assert!(!msg.ends_with('.'));
    }
    let bail = || -> Result<()> { sdeflow_kernel::bail!("no {} here", "model") };
    assert!(matches!(bail(), Err(Error::Msg(m)) if m == "no model here"));
    Ok(())
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .iter()
        .map(|v| v.to_bits())
        .collect())
}

/// In f32 and f64 the fused sums equal candle's `(a·x + b·y) + c·z` bit for bit, contiguous
/// or not (a transposed input takes candle's path).
#[test]
fn fused_sums_match_candle_bit_for_bit() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let (x, y, z) = (
            normals(1, 64, 3)?.to_dtype(dtype)?,
            normals(2, 64, 3)?.to_dtype(dtype)?,
            normals(3, 64, 3)?.to_dtype(dtype)?,
        );
        let (a, b, c) = (0.731, -1.9e-3, 2.5);
        let want2 = (x.affine(a, 0.0)? + y.affine(b, 0.0)?)?;
        let want3 = (want2.clone() + z.affine(c, 0.0)?)?;
        assert_eq!(bits(&lin2(a, &x, b, &y)?)?, bits(&want2)?, "{dtype:?} lin2");
        assert_eq!(
            bits(&lin3(a, &x, b, &y, c, &z)?)?,
            bits(&want3)?,
            "{dtype:?} lin3"
        );
        let (xt, yt) = (x.t()?, y.t()?);
        let strided = lin2(a, &xt, b, &yt)?;
        assert_eq!(bits(&strided)?, bits(&want2.t()?)?, "{dtype:?} strided");
    }
    Ok(())
}

/// Inside an autograd graph the sums keep their gradient (candle's path).
#[test]
fn tracked_inputs_keep_gradients() -> Result<()> {
    let v = Var::from_tensor(&normals(4, 5, 2)?)?;
    let y = normals(5, 5, 2)?;
    let out = lin2(3.0, v.as_tensor(), 1.0, &y)?;
    let grads = out.sum_all()?.backward()?;
    let g = grads
        .get(v.as_tensor())
        .expect("a gradient")
        .flatten_all()?
        .to_vec1::<f64>()?;
    assert!(g.iter().all(|v| *v == 3.0), "{g:?}");
    Ok(())
}

/// all_finite finds a NaN or an infinity anywhere, in both dtypes and strided.
#[test]
fn all_finite_finds_any_non_finite_value() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let x = normals(6, 10, 4)?.to_dtype(dtype)?;
        assert!(all_finite(&x)?);
        assert!(all_finite(&x.t()?)?);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            v[37] = bad;
            let y = Tensor::from_vec(v, (10, 4), x.device())?.to_dtype(dtype)?;
            assert!(!all_finite(&y)?, "{dtype:?} {bad}");
            assert!(!all_finite(&y.t()?)?, "{dtype:?} {bad} strided");
        }
    }
    Ok(())
}
