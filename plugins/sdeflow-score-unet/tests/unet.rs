//! The UNet's contracts on tiny networks: shapes, parameter and input errors, per-row noise
//! levels, class labels, row-keyed dropout, save/load, the frozen copy, gradients (checked
//! against finite differences), the seeded initialisation and the registration.

use candle_core::{DType, Device, Tensor, Var};
use sdeflow_kernel::{
    At, Error, ModelContext, PerRow, Result, Rows, ScoreModel, TimeCoefs,
    noise::{RowKey, Stream, philox_step_key},
    testing::{flat, normals},
};
use sdeflow_score_unet::{Params, Unet};

fn ctx(dtype: DType) -> ModelContext {
    ModelContext::new(Device::Cpu, dtype)
}

/// A small network: base 8, two groups.
fn small() -> Params {
    Params {
        base: 8,
        groups: 2,
        ..Params::default()
    }
}

fn coefs() -> TimeCoefs {
    TimeCoefs {
        t: 0.5,
        alpha: 0.8,
        sigma: 0.6,
        f: -1.0,
        g2: 2.0,
        lambda: 0.3,
    }
}

/// One noise level for the call.
fn call(c: f64) -> At {
    At {
        time: PerRow::Call(coefs()),
        c_noise: PerRow::Call(c),
        dropout: None,
        second_order: false,
    }
}

/// One noise level per row.
fn per_row(cs: &[f64]) -> At {
    At {
        time: PerRow::Rows(Rows::new(vec![coefs(); cs.len()])),
        c_noise: PerRow::Rows(Rows::new(cs.to_vec())),
        dropout: None,
        second_order: false,
    }
}

/// `n` standard-normal images of the model's shape, f64.
fn images(m: &Unet, seed: u64, n: usize) -> Result<Tensor> {
    let shape = m.sample_shape();
    let x = normals(seed, n, shape.iter().product())?;
    Ok(x.reshape([vec![n], shape].concat())?)
}

/// max |a − b| / (1 + max |b|).
fn rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (flat(a)?, flat(b)?);
    assert_eq!(a.len(), b.len());
    let scale = 1.0 + b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    Ok(a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale)
}

fn bits(t: &Tensor) -> Result<Vec<u64>> {
    Ok(flat(t)?.iter().map(|v| v.to_bits()).collect())
}

/// Output shape = input shape for 8×8 (two levels), 28×28 (three: 28 → 14 → 7) and a
/// non-square 3-channel 8×12 with two-channel heads, at batches 1 and 3.
#[test]
fn shape_is_preserved() -> Result<()> {
    let cases = [
        small(),
        Params {
            height: 28,
            width: 28,
            multipliers: vec![1, 2, 2],
            attention: vec![7],
            ..small()
        },
        Params {
            channels: 3,
            width: 12,
            multipliers: vec![1, 2, 2],
            attention: vec![4, 2],
            head_channels: Some(2),
            ..small()
        },
    ];
    for p in cases {
        let m = Unet::new(p.clone(), &ctx(DType::F32))?;
        assert_eq!(m.sample_shape(), vec![p.channels, p.height, p.width]);
        for n in [1, 3] {
            let x = images(&m, 1, n)?.to_dtype(DType::F32)?;
            let y = m.forward(&x, &call(0.5), None)?;
            assert_eq!(y.dims(), x.dims(), "{p:?}");
            assert_eq!(y.dtype(), DType::F32);
            assert!(flat(&y)?.iter().all(|v| v.is_finite()));
        }
    }
    Ok(())
}

/// Bad parameters are errors naming their field (never a panic); the size error says what
/// would be valid; a wrong input shape and a non-finite noise level are errors.
#[test]
fn bad_input_is_an_error() -> Result<()> {
    let err = |p: Params| match Unet::new(p, &ctx(DType::F64)) {
        Err(Error::InvalidParam { field, reason, .. }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let three = || Params {
        multipliers: vec![1, 2, 2],
        attention: vec![],
        ..small()
    };
    let (field, why) = err(Params {
        height: 30,
        ..three()
    });
    assert_eq!(field, "height");
    assert!(
        why.contains("multiple of 2^(levels − 1) = 4") && why.contains("28 or 32"),
        "{why}"
    );
    assert_eq!(
        err(Params {
            width: 6,
            ..three()
        })
        .0,
        "width"
    );
    let (field, why) = err(Params {
        groups: 3,
        ..small()
    });
    assert_eq!(field, "groups");
    assert!(why.contains("[8, 16]"), "{why}");
    assert_eq!(err(Params { base: 7, ..small() }).0, "base");
    assert_eq!(
        err(Params {
            blocks: 0,
            ..small()
        })
        .0,
        "blocks"
    );
    assert_eq!(
        err(Params {
            multipliers: vec![],
            ..small()
        })
        .0,
        "multipliers"
    );
    assert_eq!(
        err(Params {
            attention: vec![5],
            ..small()
        })
        .0,
        "attention"
    );
    assert_eq!(
        err(Params {
            head_channels: Some(3),
            ..small()
        })
        .0,
        "head_channels"
    );
    assert_eq!(
        err(Params {
            dropout: 1.0,
            ..small()
        })
        .0,
        "dropout"
    );
    assert_eq!(
        err(Params {
            classes: Some(0),
            ..small()
        })
        .0,
        "classes"
    );
    assert_eq!(
        err(Params {
            noise_scale: f64::NAN,
            ..small()
        })
        .0,
        "noise_scale"
    );
    let m = Unet::new(small(), &ctx(DType::F64))?;
    let wrong = Tensor::zeros((2, 1, 8, 4), DType::F64, &Device::Cpu)?;
    assert!(matches!(
        m.forward(&wrong, &call(0.0), None),
        Err(Error::Shape(_))
    ));
    let x = images(&m, 2, 2)?;
    assert!(m.forward(&x, &call(f64::INFINITY), None).is_err());
    assert!(m.forward(&x, &per_row(&[0.0; 3]), None).is_err());
    Ok(())
}

/// Row i at its own noise level equals a call at that level for row i alone (f64, ≤ 1e-10
/// relative: the two differ only in the batch the kernels see).
#[test]
fn per_row_noise_levels_match_calls() -> Result<()> {
    let m = Unet::new(small(), &ctx(DType::F64))?;
    let cs = [-9.0, -2.5, 0.0, 1.25, 7.0];
    let x = images(&m, 3, cs.len())?;
    let batch = m.forward(&x, &per_row(&cs), None)?;
    for (i, &c) in cs.iter().enumerate() {
        let one = m.forward(&x.narrow(0, i, 1)?, &call(c), None)?;
        let e = rel(&batch.narrow(0, i, 1)?, &one)?;
        assert!(e <= 1e-10, "row {i}: {e:e}");
    }
    // The noise level matters.
    assert!(
        rel(
            &m.forward(&x, &call(-3.0), None)?,
            &m.forward(&x, &call(3.0), None)?
        )? > 1e-3
    );
    Ok(())
}

/// A conditional network: labels change the output, `None` is the ∅ label bit for bit, a label
/// past ∅ is an error naming it.
#[test]
fn class_labels() -> Result<()> {
    let k = 3;
    let m = Unet::new(
        Params {
            classes: Some(k),
            ..small()
        },
        &ctx(DType::F64),
    )?;
    assert_eq!(m.classes(), Some(k));
    let x = images(&m, 4, 4)?;
    let labels = |v: Vec<u32>| Tensor::new(v, &Device::Cpu);
    let at = call(0.7);
    let a = m.forward(&x, &at, Some(&labels(vec![0, 1, 2, 0])?))?;
    let b = m.forward(&x, &at, Some(&labels(vec![1, 2, 0, 3])?))?;
    for i in 0..4 {
        assert!(
            rel(&a.narrow(0, i, 1)?, &b.narrow(0, i, 1)?)? > 1e-6,
            "row {i}"
        );
    }
    let null = sdeflow_kernel::null_label(k);
    let none = m.forward(&x, &at, None)?;
    let nulls = m.forward(&x, &at, Some(&labels(vec![null; 4])?))?;
    assert_eq!(bits(&none)?, bits(&nulls)?);
    match m.forward(&x, &at, Some(&labels(vec![0, 4, 1, 2])?)) {
        Err(Error::InvalidParam { field, reason, .. }) => {
            assert_eq!(field, "cond");
            assert!(reason.contains("label 4"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(m.forward(&x, &at, Some(&labels(vec![0, 1])?)).is_err());
    Ok(())
}

/// Dropout: off without a key (deterministic, the outputs of the same network without
/// dropout bit for bit); on with one (the output changes); row-keyed: rows [0, 4) in one call
/// equal rows [0, 2) and [2, 4) with the key skipped by 2 (f64, ≤ 1e-10).
#[test]
fn dropout_is_row_keyed() -> Result<()> {
    let p = Params {
        dropout: 0.3,
        ..small()
    };
    let (m, plain) = (
        Unet::new(p.clone(), &ctx(DType::F64))?,
        Unet::new(Params { dropout: 0.0, ..p }, &ctx(DType::F64))?,
    );
    let x = images(&m, 5, 4)?;
    let off = m.forward(&x, &call(0.2), None)?;
    assert_eq!(bits(&off)?, bits(&m.forward(&x, &call(0.2), None)?)?);
    assert_eq!(bits(&off)?, bits(&plain.forward(&x, &call(0.2), None)?)?);
    let key = RowKey {
        key: philox_step_key(9, Stream::Dropout, 3),
        first_row: 10,
    };
    let on = |x: &Tensor, key: RowKey| m.forward(x, &call(0.2).with_dropout(Some(key)), None);
    let all = on(&x, key)?;
    assert!(rel(&all, &off)? > 1e-3);
    // With a key but p = 0 there is no dropout.
    let p0 = plain.forward(&x, &call(0.2).with_dropout(Some(key)), None)?;
    assert_eq!(bits(&off)?, bits(&p0)?);
    let head = on(&x.narrow(0, 0, 2)?, key)?;
    let tail = on(&x.narrow(0, 2, 2)?, key.skip(2))?;
    let e = rel(&Tensor::cat(&[&head, &tail], 0)?, &all)?;
    assert!(e <= 1e-10, "{e:e}");
    // Another step's key draws other masks.
    let other = RowKey {
        key: philox_step_key(9, Stream::Dropout, 4),
        ..key
    };
    assert!(rel(&on(&x, other)?, &all)? > 1e-3);
    Ok(())
}

/// Save, overwrite every variable, load: the outputs come back bit for bit; the frozen copy
/// gives the same outputs and, sharing the storage, follows a load into the original.
#[test]
fn save_load_and_frozen() -> Result<()> {
    let m = Unet::new(
        Params {
            classes: Some(2),
            ..small()
        },
        &ctx(DType::F64),
    )?;
    let x = images(&m, 6, 3)?;
    let y = Tensor::new(vec![0u32, 1, 2], &Device::Cpu)?;
    let out =
        |m: &dyn ScoreModel| -> Result<Vec<u64>> { bits(&m.forward(&x, &call(-1.0), Some(&y))?) };
    let want = out(&m)?;
    let frozen = m.frozen().expect("the unet has weights");
    assert_eq!(out(&*frozen)?, want);
    let path = std::env::temp_dir().join(format!(
        "sdeflow-unet-test-{}.safetensors",
        std::process::id()
    ));
    m.save(&path)?;
    let vm = m.varmap().expect("the unet has weights");
    for var in vm.all_vars() {
        var.set(&var.as_tensor().affine(0.5, 0.01)?)?;
    }
    assert_ne!(out(&m)?, want);
    assert_eq!(
        out(&*frozen)?,
        out(&m)?,
        "the frozen copy shares the storage"
    );
    let loaded = m.load(&path);
    let _ = std::fs::remove_file(&path);
    loaded?;
    assert_eq!(out(&m)?, want);
    assert_eq!(out(&*frozen)?, want);
    // The frozen copy's outputs are off autograd's graph.
    assert!(!frozen.forward(&x, &call(-1.0), Some(&y))?.track_op());
    Ok(())
}

/// A sum-of-squares loss sends a non-zero gradient to every variable; the input gradient
/// matches a central difference along a random direction (f64, h = 1e-5: the difference's
/// error is O(h²), measured 1.6e-7, 1.6e-9 relative at h = 1e-4, 1e-5).
#[test]
fn gradients() -> Result<()> {
    let m = Unet::new(
        Params {
            classes: Some(2),
            dropout: 0.1,
            ..small()
        },
        &ctx(DType::F64),
    )?;
    let x = images(&m, 7, 3)?;
    let y = Tensor::new(vec![0u32, 2, 1], &Device::Cpu)?;
    let key = RowKey {
        key: philox_step_key(1, Stream::Dropout, 0),
        first_row: 0,
    };
    let at = per_row(&[-4.0, 0.5, 3.0]).with_dropout(Some(key));
    let xv = Var::from_tensor(&x)?;
    let loss =
        |x: &Tensor| -> Result<Tensor> { Ok(m.forward(x, &at, Some(&y))?.sqr()?.sum_all()?) };
    let grads = loss(xv.as_tensor())?.backward()?;
    let vars = m.varmap().expect("weights").all_vars();
    let vm = m
        .varmap()
        .expect("weights")
        .data()
        .lock()
        .expect("unpoisoned")
        .clone();
    let mut missing = Vec::new();
    for (name, var) in &vm {
        let g = grads.get(var.as_tensor()).map(flat).transpose()?;
        if !g.is_some_and(|g| g.iter().any(|v| *v != 0.0)) {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "no gradient for {missing:?} of {}",
        vars.len()
    );
    let gx = grads.get(xv.as_tensor()).expect("input gradient");
    let v = images(&m, 8, 3)?;
    let analytic: f64 = flat(gx)?.iter().zip(flat(&v)?).map(|(a, b)| a * b).sum();
    let h = 1e-5;
    let f = |s: f64| -> Result<f64> { Ok(loss(&(&x + v.affine(s, 0.0)?)?)?.to_scalar::<f64>()?) };
    let numeric = (f(h)? - f(-h)?) / (2.0 * h);
    assert!(
        (analytic - numeric).abs() <= 1e-7 * analytic.abs().max(1.0),
        "{analytic} vs {numeric}"
    );
    Ok(())
}

/// The same seed gives the same variables bit for bit, another seed others; each variable
/// follows the initialisation candle-nn asks for: GroupNorm 1 and 0, biases in ±1/√fan_in,
/// conv weights N(0, 2/fan_in) (sample variance within 5 standard errors, √(2/m) relative for
/// m draws), the class table N(0, 1).
#[test]
fn initialization_is_seeded() -> Result<()> {
    let p = Params {
        classes: Some(4),
        ..Params::default()
    };
    let build = |seed| Unet::new(Params { seed, ..p.clone() }, &ctx(DType::F64));
    let (a, b, c) = (build(1)?, build(1)?, build(2)?);
    let var = |m: &Unet, name: &str| -> Result<Vec<f64>> {
        let data = m
            .varmap()
            .expect("weights")
            .data()
            .lock()
            .expect("unpoisoned");
        let v = data
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        flat(v.as_tensor())
    };
    let names: Vec<String> = a
        .varmap()
        .expect("w")
        .data()
        .lock()
        .expect("u")
        .keys()
        .cloned()
        .collect();
    for name in &names {
        assert_eq!(var(&a, name)?, var(&b, name)?, "{name}: same seed");
        if !name.contains("norm") {
            assert_ne!(var(&a, name)?, var(&c, name)?, "{name}: other seed");
        }
    }
    assert!(
        var(&a, "down.0.res.0.norm1.weight")?
            .iter()
            .all(|&v| v == 1.0)
    );
    assert!(
        var(&a, "mid.attn.group_norm.bias")?
            .iter()
            .all(|&v| v == 0.0)
    );
    // fan_in of conv1 at level 1's first block: 16 channels × 3 × 3.
    let bias = var(&a, "down.1.res.0.conv1.bias")?;
    assert!(bias.iter().all(|v| v.abs() <= 1.0 / 16f64.sqrt()));
    let variance = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
    for (name, want) in [
        ("down.1.res.0.conv2.weight", 2.0 / (32.0 * 9.0)),
        ("up.0.res.0.conv1.weight", 2.0 / (48.0 * 9.0)),
        ("class_embedding.weight", 1.0),
    ] {
        let w = var(&a, name)?;
        let se = (2.0 / w.len() as f64).sqrt();
        let got = variance(&w) / want;
        assert!(
            (got - 1.0).abs() <= 5.0 * se,
            "{name}: variance ratio {got}"
        );
    }
    Ok(())
}

/// The registration builds from RON with the defaults filled in; unknown fields fail.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    let m = reg.model("unet", "(channels: 3, classes: Some(10))", &ctx(DType::F32))?;
    assert_eq!(m.sample_shape(), vec![3, 8, 8]);
    assert_eq!(m.classes(), Some(10));
    assert!(m.varmap().is_some_and(|v| !v.all_vars().is_empty()));
    assert!(
        reg.model("unet", "(width: 8, depth: 2)", &ctx(DType::F32))
            .is_err()
    );
    Ok(())
}
