//! AdamW, clipping, the schedules and the EMA against hand computations of their formulas
//! (MATH.md §9), and a resumed optimizer against an uninterrupted one, bit for bit.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarMap};
use sdeflow_kernel::{Error, Result};
use sdeflow_train::{
    AdamW, AdamWParams, Decay, Ema, EmaRate, LrSchedule, Params, clip_global_norm,
};

/// A model of two variables, `a` = [1.0, −2.0] and `b` = [0.5].
fn model() -> Result<(VarMap, Params)> {
    let mut vm = VarMap::new();
    vm.get(2, "a", Init::Const(0.0), DType::F64, &Device::Cpu)?;
    vm.get(1, "b", Init::Const(0.5), DType::F64, &Device::Cpu)?;
    vm.set_one("a", Tensor::new(&[1.0f64, -2.0], &Device::Cpu)?)?;
    let params = Params::new(&vm)?;
    Ok((vm, params))
}

fn values(params: &Params) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (_, v) in params.vars() {
        out.extend(v.as_tensor().to_vec1::<f64>()?);
    }
    Ok(out)
}

/// The gradients of L = ½ Σ c_i θ_i² (c = 1, 3 for `a`, 2 for `b`): g_i = c_i θ_i.
fn grads(params: &Params) -> Result<Vec<Tensor>> {
    let x = values(params)?;
    Ok(vec![
        Tensor::new(&[x[0], 3.0 * x[1]], &Device::Cpu)?,
        Tensor::new(&[2.0 * x[2]], &Device::Cpu)?,
    ])
}

/// Three AdamW steps on the quadratic, against the recursion written out in f64 scalars.
#[test]
fn adamw_follows_its_formula() -> Result<()> {
    let (_vm, params) = model()?;
    let hp = AdamWParams::default();
    let mut opt = AdamW::new(params.clone(), hp)?;
    let c = [1.0, 3.0, 2.0];
    let (mut theta, mut m, mut v) = (vec![1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
    for (n, lr) in [(1, 1e-2), (2, 2e-2), (3, 5e-3)] {
        opt.step(&grads(&params)?, lr)?;
        for i in 0..3 {
            let g = c[i] * theta[i];
            m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
            v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
            let m_hat = m[i] / (1.0 - hp.beta1.powi(n));
            let v_hat = v[i] / (1.0 - hp.beta2.powi(n));
            theta[i] -= lr * (m_hat / (v_hat.sqrt() + hp.eps) + hp.weight_decay * theta[i]);
        }
        for (got, want) in values(&params)?.iter().zip(&theta) {
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                "step {n}: {got} vs {want}"
            );
        }
    }
    assert_eq!(opt.step_count(), 3);
    // The first step moves each weight by lr (1 + wd θ) in the direction of its gradient:
    // m̂ = g, v̂ = g², so m̂/(√v̂ + ε) = g/(|g| + ε).
    let (_vm, params) = model()?;
    let mut opt = AdamW::new(
        params.clone(),
        AdamWParams {
            weight_decay: 0.0,
            ..hp
        },
    )?;
    opt.step(&grads(&params)?, 0.1)?;
    let moved: Vec<f64> = values(&params)?
        .iter()
        .zip([1.0, -2.0, 0.5])
        .map(|(a, b)| a - b)
        .collect();
    for (d, sign) in moved.iter().zip([-1.0, 1.0, -1.0]) {
        assert!((d - 0.1 * sign).abs() < 1e-8, "{moved:?}");
    }
    Ok(())
}

/// With zero gradients only the decoupled weight decay acts: θ ← (1 − lr·wd) θ.
#[test]
fn weight_decay_is_decoupled() -> Result<()> {
    let (_vm, params) = model()?;
    let mut opt = AdamW::new(
        params.clone(),
        AdamWParams {
            weight_decay: 0.1,
            ..AdamWParams::default()
        },
    )?;
    let zero = vec![
        Tensor::zeros(2, DType::F64, &Device::Cpu)?,
        Tensor::zeros(1, DType::F64, &Device::Cpu)?,
    ];
    opt.step(&zero, 0.5)?;
    assert_eq!(values(&params)?, vec![0.95, -1.9, 0.475]);
    for (field, hp) in [
        (
            "beta1",
            AdamWParams {
                beta1: 1.0,
                ..AdamWParams::default()
            },
        ),
        (
            "eps",
            AdamWParams {
                eps: 0.0,
                ..AdamWParams::default()
            },
        ),
        (
            "weight_decay",
            AdamWParams {
                weight_decay: -1.0,
                ..AdamWParams::default()
            },
        ),
    ] {
        match AdamW::new(params.clone(), hp) {
            Err(Error::InvalidParam { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    Ok(())
}

/// Five steps straight, or three steps, the state saved and loaded into a fresh optimizer over
/// the same weights, then two more: the same bits.
#[test]
fn a_resumed_optimizer_ends_where_an_uninterrupted_one_does() -> Result<()> {
    let lrs = [1e-2, 2e-2, 3e-2, 1e-2, 5e-3];
    let (_vm, straight) = model()?;
    let mut opt = AdamW::new(straight.clone(), AdamWParams::default())?;
    for lr in lrs {
        opt.step(&grads(&straight)?, lr)?;
    }
    let (_vm2, resumed) = model()?;
    let mut first = AdamW::new(resumed.clone(), AdamWParams::default())?;
    for lr in &lrs[..3] {
        first.step(&grads(&resumed)?, *lr)?;
    }
    let (tensors, step) = first.state()?;
    let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut second = AdamW::new(resumed.clone(), AdamWParams::default())?;
    second.load_state(&tensors, step)?;
    for lr in &lrs[3..] {
        second.step(&grads(&resumed)?, *lr)?;
    }
    let bits =
        |p: &Params| -> Result<Vec<u64>> { Ok(values(p)?.iter().map(|v| v.to_bits()).collect()) };
    assert_eq!(bits(&straight)?, bits(&resumed)?);
    // A state missing a moment, or of the wrong shape, is an error naming the tensor.
    let mut broken = tensors.clone();
    broken.remove("v.b");
    let msg = second
        .load_state(&broken, step)
        .map(|_| ())
        .expect_err("missing")
        .to_string();
    assert!(msg.contains("`v.b`"), "{msg}");
    broken.insert("v.b".into(), Tensor::zeros(3, DType::F64, &Device::Cpu)?);
    let msg = second
        .load_state(&broken, step)
        .map(|_| ())
        .expect_err("shape")
        .to_string();
    assert!(msg.contains("`v.b`") && msg.contains("[3]"), "{msg}");
    Ok(())
}

/// ‖(3, 4) , (12)‖ = 13: clipped to 6.5 every gradient halves; below the bound nothing
/// changes; a NaN is an error naming its variable.
#[test]
fn clipping_scales_by_the_global_norm() -> Result<()> {
    let (_vm, params) = model()?;
    let g = || -> Result<Vec<Tensor>> {
        Ok(vec![
            Tensor::new(&[3.0f64, 4.0], &Device::Cpu)?,
            Tensor::new(&[12.0f64], &Device::Cpu)?,
        ])
    };
    let mut clipped = g()?;
    assert_eq!(clip_global_norm(&params, &mut clipped, 6.5)?, 13.0);
    assert_eq!(clipped[0].to_vec1::<f64>()?, vec![1.5, 2.0]);
    assert_eq!(clipped[1].to_vec1::<f64>()?, vec![6.0]);
    let mut kept = g()?;
    clip_global_norm(&params, &mut kept, 20.0)?;
    assert_eq!(kept[1].to_vec1::<f64>()?, vec![12.0]);
    let mut nan = vec![
        Tensor::new(&[3.0f64, 4.0], &Device::Cpu)?,
        Tensor::new(&[f64::NAN], &Device::Cpu)?,
    ];
    let msg = clip_global_norm(&params, &mut nan, 1.0)
        .map(|_| ())
        .expect_err("nan")
        .to_string();
    assert!(msg.contains("`b`") && msg.contains("not finite"), "{msg}");
    Ok(())
}

/// Warm-up is linear to the peak; cosine decay reaches final_fraction × peak at the last step
/// and passes through the mean of the two halfway.
#[test]
fn schedules_follow_their_formulas() -> Result<()> {
    let s = LrSchedule {
        peak: 1e-3,
        warmup: 100,
        decay: Decay::Cosine {
            final_fraction: 0.1,
        },
    };
    s.validate()?;
    assert_eq!(s.lr(25, 1100), 2.5e-4);
    assert_eq!(s.lr(100, 1100), 1e-3);
    assert!((s.lr(600, 1100) - 0.55e-3).abs() < 1e-15);
    assert!((s.lr(1100, 1100) - 1e-4).abs() < 1e-18);
    let c = LrSchedule {
        peak: 2e-4,
        warmup: 0,
        decay: Decay::Constant,
    };
    assert_eq!((c.lr(1, 10), c.lr(10, 10)), (2e-4, 2e-4));
    assert!(LrSchedule { peak: 0.0, ..c }.validate().is_err());
    Ok(())
}

/// β_n of each schedule at hand-computed points, and the average of a weight that jumps from
/// 0.5 to its later values: θ̄ = β θ̄ + (1 − β) θ.
#[test]
fn ema_rates_and_updates() -> Result<()> {
    // score_sde: min(0.9999, (1 + n)/(10 + n)).
    let w = EmaRate::Warmup { beta: 0.9999 };
    assert_eq!(w.beta(1, 1), 2.0 / 11.0);
    assert_eq!(w.beta(1_000_000, 1), 0.9999);
    // k-diffusion: 1 − (1 + n)^(−2/3) at γ = 1.
    let p = EmaRate::Power {
        gamma: 1.0,
        power: 2.0 / 3.0,
        max: 0.9999,
    };
    assert!((p.beta(7, 1) - (1.0 - 8f64.powf(-2.0 / 3.0))).abs() < 1e-15); // 1 − 1/4
    // EDM: 0.5^(b/h) after the warm-up, h = min(h, r n b) during it.
    let h = EmaRate::HalfLife {
        samples: 500_000.0,
        warmup_ratio: 0.05,
    };
    assert!((h.beta(1_000_000, 512) - 0.5f64.powf(512.0 / 500_000.0)).abs() < 1e-15);
    assert!((h.beta(10, 512) - 0.5f64.powf(1.0 / 0.5)).abs() < 1e-15); // r n b = 256 = b/2
    let (_vm, params) = model()?;
    let mut ema = Ema::new(EmaRate::Warmup { beta: 0.5 }, &params)?;
    params.vars()[1]
        .1
        .set(&Tensor::new(&[1.5f64], &Device::Cpu)?)?;
    ema.update(&params, 1, 1)?; // β = min(0.5, 2/11) = 2/11
    let want = 2.0 / 11.0 * 0.5 + 9.0 / 11.0 * 1.5;
    assert!((ema.weights()[1].to_vec1::<f64>()?[0] - want).abs() < 1e-15);
    ema.update(&params, 100, 1)?; // β = 0.5
    assert!((ema.weights()[1].to_vec1::<f64>()?[0] - (0.5 * want + 0.75)).abs() < 1e-15);
    assert!(Ema::new(EmaRate::Warmup { beta: 1.0 }, &params).is_err());
    Ok(())
}
