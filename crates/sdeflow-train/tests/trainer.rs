//! The trainer learns, and resumes exactly: an `mlp` trained on a 2-D Gaussian approaches the
//! exact model's loss on the same held-out rows and draws; a run stopped after some steps and
//! restored (weights, optimizer moments and step, EMA) ends on the uninterrupted run's bits.

use std::{collections::HashMap, sync::Arc};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{Data, Denoiser, Dsm, Result, ScoreModel, Split, data::MixtureData};
use sdeflow_train::{EmaRate, TrainSpec, Trainer};

const SEED: u64 = 3;

/// The data N((1, −1), 0.5² I), and its exact model (the oracle predicts the score).
fn data() -> Result<Data> {
    let law = sdeflow_kernel::mixture::GaussianMixture::new(
        vec![1.0],
        vec![vec![1.0, -1.0]],
        vec![sdeflow_kernel::mixture::Covariance::Isotropic(0.5)],
    )?;
    Data::new(Arc::new(MixtureData::new(law, false)?))
}

/// The bits of the weights (and of the EMA's, with `ema`), in name order.
fn bits(t: &Trainer, ema: bool) -> Result<Vec<u32>> {
    let mut tensors: Vec<Tensor> = t
        .params()
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().clone())
        .collect();
    if ema {
        for ema in t.emas() {
            tensors.extend(ema.weights().iter().cloned());
        }
    }
    let mut out = Vec::new();
    for w in tensors {
        out.extend(
            w.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|x| x.to_bits()),
        );
    }
    Ok(out)
}

fn trainer(spec: TrainSpec) -> Result<(Trainer, Arc<dyn ScoreModel>)> {
    let r = sdeflow_plugins::registry()?;
    let ctx = sdeflow_kernel::ModelContext::new(Device::Cpu, DType::F32).with_data(data()?);
    let model = r.model("mlp", "(hidden: 64, layers: 2, embed_dim: 16)", &ctx)?;
    let t = Trainer::new(
        model.clone(),
        r.param("eps", "()")?,
        r.sde("vp", "()")?,
        r.weighting("simple", "()")?,
        data()?,
        spec,
        SEED,
        (DType::F32, Device::Cpu),
    )?;
    Ok((t, model))
}

/// 400 steps of batch 256 take the held-out loss (2,048 rows) from about d = 2 at the start
/// to within 10% of the exact model's on the same rows and draws (E‖ε̂* − ε‖², the
/// irreducible part: MATH.md §9).
#[test]
fn training_approaches_the_exact_loss() -> Result<()> {
    let spec = TrainSpec {
        steps: 400,
        batch: 256,
        lr: 3e-3,
        warmup: 20,
        ..TrainSpec::default()
    };
    let (mut t, _) = trainer(spec)?;
    let r = sdeflow_plugins::registry()?;
    let ctx = sdeflow_kernel::ModelContext::new(Device::Cpu, DType::F32).with_data(data()?);
    let exact = Denoiser::of(r.model("gmm_oracle", "()", &ctx)?, None, None)?;
    let floor = t.loss_with(&exact, Split::Heldout, 2048, 0)?;
    let before = t.loss_on(Split::Heldout, 2048, 0)?;
    for _ in 0..400 {
        let s = t.step()?;
        assert!(s.loss.is_finite() && s.grad_norm.is_finite());
    }
    let after = t.loss_on(Split::Heldout, 2048, 0)?;
    println!("held-out loss: {before:.4} before, {after:.4} after, exact model {floor:.4}");
    assert!(
        after < before && after <= 1.10 * floor,
        "{before} → {after}, floor {floor}"
    );
    Ok(())
}

/// 12 steps straight, or 7 steps, the state handed to a fresh run on a fresh model, then 5:
/// the same weights, bit for bit.
#[test]
fn a_restored_run_ends_on_the_same_bits() -> Result<()> {
    let spec = TrainSpec {
        steps: 12,
        batch: 64,
        warmup: 3,
        ..TrainSpec::default()
    };
    let (mut straight, _) = trainer(spec.clone())?;
    for _ in 0..12 {
        straight.step()?;
    }
    let (mut first, _) = trainer(spec.clone())?;
    for _ in 0..7 {
        first.step()?;
    }
    let (mut second, _) = trainer(spec)?;
    for ((_, to), (_, from)) in second.params().vars().iter().zip(first.params().vars()) {
        to.set(from.as_tensor())?;
    }
    let (tensors, step) = first.optimizer_mut().state()?;
    let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
    second.optimizer_mut().load_state(&tensors, step)?;
    let ema = first.emas()[0].weights().to_vec();
    second.emas_mut()[0].set_weights(ema)?;
    for _ in 0..5 {
        second.step()?;
    }
    assert_eq!(bits(&straight, true)?, bits(&second, true)?);
    Ok(())
}

/// Through the files: 4 steps and a checkpoint (three times, keeping 2), then 3 more; a fresh
/// run restored from `latest` and stepped 3 times ends on the same bits. A checkpoint missing a
/// tensor is an error naming the tensor and the file.
#[test]
fn a_run_restored_from_its_checkpoint_ends_on_the_same_bits() -> Result<()> {
    use sdeflow_train::checkpoint::{self, Manifest};
    let root = std::env::temp_dir().join(format!("sdeflow-ckpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let spec = TrainSpec {
        steps: 12,
        batch: 32,
        warmup: 2,
        ema: vec![
            EmaRate::Warmup { beta: 0.999 },
            EmaRate::HalfLife {
                samples: 100.0,
                warmup_ratio: 0.05,
            },
        ],
        ..TrainSpec::default()
    };
    let manifest = |step| Manifest {
        step,
        seed: SEED,
        config_hash: "test".into(),
        target: "eps".into(),
        emas: 2,
    };
    let (mut straight, _) = trainer(spec.clone())?;
    for _ in 0..3 {
        for _ in 0..3 {
            straight.step()?;
        }
        let m = manifest(straight.step_count());
        checkpoint::save(&root, &straight, &m, 2)?;
    }
    for _ in 0..3 {
        straight.step()?;
    }
    let kept = std::fs::read_dir(&root)
        .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?
        .count();
    assert_eq!(kept, 3, "two step folders and `latest`");
    let (dir, m) = checkpoint::latest(&root)?
        .ok_or_else(|| sdeflow_kernel::Error::Msg("no checkpoint".into()))?;
    assert_eq!(m, manifest(9));
    let (mut resumed, _) = trainer(spec.clone())?;
    assert_eq!(checkpoint::restore(&dir, &mut resumed)?, m);
    for _ in 0..3 {
        resumed.step()?;
    }
    assert_eq!(bits(&straight, true)?, bits(&resumed, true)?);
    // Remove one tensor from the EMA file: the restore names it and changes nothing.
    let ema_path = dir.join("ema.safetensors");
    let mut ema = candle_core::safetensors::load(&ema_path, &Device::Cpu)?;
    let gone = ema.keys().next().cloned().unwrap_or_default();
    ema.remove(&gone);
    candle_core::safetensors::save(&ema, &ema_path)?;
    let (mut broken, _) = trainer(spec)?;
    let before = bits(&broken, true)?;
    let msg = checkpoint::restore(&dir, &mut broken)
        .map(|_| ())
        .expect_err("missing")
        .to_string();
    assert!(
        msg.contains(&format!("`{gone}`")) && msg.contains("ema.safetensors"),
        "{msg}"
    );
    assert_eq!(bits(&broken, true)?, before);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Gradient accumulation takes the same rows and draws as one batch: the loss and the
/// updated weights of 3 micro-batches match one batch of 96 up to summation order.
#[test]
fn accumulated_micro_batches_are_the_whole_batch() -> Result<()> {
    let spec = TrainSpec {
        steps: 3,
        batch: 96,
        warmup: 0,
        ..TrainSpec::default()
    };
    let (mut whole, _) = trainer(spec.clone())?;
    let (mut parts, _) = trainer(TrainSpec {
        accumulate: 3,
        ..spec
    })?;
    for _ in 0..3 {
        let (a, b) = (whole.step()?, parts.step()?);
        assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss, "{a:?} vs {b:?}");
        assert!((a.grad_norm - b.grad_norm).abs() <= 1e-4 * a.grad_norm);
    }
    for ((_, a), (_, b)) in whole.params().vars().iter().zip(parts.params().vars()) {
        let gap = (a.as_tensor() - b.as_tensor())?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(gap < 1e-5, "weights differ by {gap}");
    }
    Ok(())
}

/// A run that diverges (a learning rate of 1e30 throws the weights to ~1e30 in one step)
/// stops at the first non-finite loss or gradient with the step and the range of t, and the
/// failing step changes nothing: weights, EMA and step count stay as they were.
#[test]
fn a_non_finite_step_is_an_error_that_changes_nothing() -> Result<()> {
    let spec = TrainSpec {
        steps: 10,
        batch: 32,
        lr: 1e30,
        warmup: 0,
        clip: None,
        ..TrainSpec::default()
    };
    let (mut t, _) = trainer(spec)?;
    let mut failure = None;
    for _ in 0..10 {
        let before = (bits(&t, true)?, t.step_count());
        match t.step() {
            Ok(_) => continue,
            Err(e) => {
                assert_eq!((bits(&t, true)?, t.step_count()), before);
                failure = Some((e.to_string(), before.1 + 1));
                break;
            }
        }
    }
    let (msg, step) = failure.expect("a learning rate of 1e30 diverges");
    assert!(
        msg.contains(&format!("training step {step}")) && msg.contains("t in ["),
        "{msg}"
    );
    assert!(
        msg.contains("the loss is") || msg.contains("the gradient of `"),
        "names the loss or the tensor: {msg}"
    );
    // A non-finite loss names its first rows, by their index in the run, and their t.
    assert!(
        !msg.contains("the loss is") || (msg.contains("first in row ") && msg.contains("(t = ")),
        "names the rows: {msg}"
    );
    Ok(())
}

/// Data parallelism over threads: 4 ranks' steps of a batch of 90 rows (ranks of 22 and 23
/// rows, each in 2 micro-batches) give the one-process run's losses, gradient norms and
/// weights up to the order of the sums, on every rank the same bits; one rank is the
/// one-process run exactly.
#[test]
fn data_parallel_ranks_train_as_one_process() -> Result<()> {
    use sdeflow_train::parallel::{Reduce, Threads};
    let spec = TrainSpec {
        steps: 5,
        batch: 90,
        warmup: 1,
        lr: 3e-3,
        accumulate: 2,
        ..TrainSpec::default()
    };
    let (mut one, _) = trainer(spec.clone())?;
    let reports: Vec<_> = (0..5).map(|_| one.step()).collect::<Result<_>>()?;
    let weights = |t: &Trainer| -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (_, v) in t.params().vars() {
            out.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    };
    let reference = weights(&one)?;
    for world in [1usize, 2, 4] {
        let ranks = std::thread::scope(|s| {
            let handles: Vec<_> = Threads::group(world)
                .into_iter()
                .map(|rank| {
                    let spec = spec.clone();
                    s.spawn(move || -> Result<(Vec<f32>, Vec<u32>, Vec<f64>)> {
                        // Each rank on a pool of its own: ranks wait for each other.
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(1)
                            .build()
                            .map_err(|e| sdeflow_kernel::Error::Msg(e.to_string()))?;
                        pool.install(|| {
                            let reduce: Arc<dyn Reduce> = Arc::new(rank);
                            let (t, _) = trainer(spec)?;
                            let mut t = t.with_reduce(reduce)?;
                            let mut seen = Vec::new();
                            for _ in 0..5 {
                                let r = t.step()?;
                                seen.extend([r.loss, r.grad_norm]);
                            }
                            Ok((weights(&t)?, bits(&t, true)?, seen))
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a rank panicked"))
                .collect::<Result<Vec<_>>>()
        })?;
        for r in &ranks[1..] {
            assert!(r.1 == ranks[0].1, "world {world}: ranks differ");
        }
        let (w, _, seen) = &ranks[0];
        if world == 1 {
            assert!(*w == reference, "one rank is not the one-process run");
        }
        let gap = w
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(gap <= 1e-6, "world {world}: weights differ by {gap}");
        for (k, r) in reports.iter().enumerate() {
            let (loss, norm) = (seen[2 * k], seen[2 * k + 1]);
            assert!(
                (loss - r.loss).abs() <= 1e-6 * r.loss,
                "world {world}, step {k}: loss {loss} vs {}",
                r.loss
            );
            assert!(
                (norm - r.grad_norm).abs() <= 1e-5 * r.grad_norm,
                "world {world}, step {k}: norm {norm} vs {}",
                r.grad_norm
            );
        }
        eprintln!("world {world}: largest weight difference {gap:e}");
    }
    Ok(())
}

/// Ranks that start from different weights are an error on every rank before a step.
#[test]
fn ranks_that_start_apart_are_an_error() -> Result<()> {
    use sdeflow_train::parallel::{Reduce, Threads};
    let spec = TrainSpec {
        steps: 2,
        batch: 8,
        ..TrainSpec::default()
    };
    let verdicts = std::thread::scope(|s| {
        let handles: Vec<_> = Threads::group(2)
            .into_iter()
            .map(|rank| {
                let spec = spec.clone();
                s.spawn(move || -> Result<(bool, bool)> {
                    let apart = rank.rank() == 1;
                    let reduce: Arc<dyn Reduce> = Arc::new(rank);
                    let (t, _) = trainer(spec)?;
                    let t = t.with_reduce(reduce)?;
                    let agreed = t.check_ranks_agree().is_ok();
                    if apart {
                        let (_, v) = &t.params().vars()[0];
                        v.set(&v.as_tensor().affine(1.0, 1e-3)?)?;
                    }
                    let e = t.check_ranks_agree();
                    if let Err(e) = &e {
                        assert!(e.to_string().contains("different states"), "{e}");
                    }
                    Ok((agreed, e.is_err()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    assert_eq!(verdicts, vec![(true, true), (true, true)]);
    Ok(())
}

/// ISM's and SSM's gradients with respect to the weights are those of their loss: against
/// central differences in f64, for an mlp whose input gradients autograd differentiates again
/// (`second_order`). The CPU op's first-order backward, asked for the same loss, misses the
/// second-order terms: the check can fail.
#[test]
fn implicit_and_sliced_gradients_match_finite_differences() -> Result<()> {
    use sdeflow_kernel::{Objective, likelihood::Probe};
    assert!(
        sdeflow_kernel::likelihood::second_order_gradients()?,
        "run with CANDLE_GRAD_DO_NOT_DETACH=1 (.cargo/config.toml sets it)"
    );
    let r = sdeflow_plugins::registry()?;
    let ctx = sdeflow_kernel::ModelContext::new(Device::Cpu, DType::F64).with_data(data()?);
    let model = r.model("mlp", "(hidden: 8, layers: 2, embed_dim: 4)", &ctx)?;
    let (param, sde) = (r.param("eps", "()")?, r.sde("vp", "()")?);
    let x0 = data()?
        .batch(Split::Train, SEED, 0, 16)?
        .tensors(DType::F64, &Device::Cpu)?
        .0;
    let vm = model.varmap().expect("a network");
    let var = vm.data().lock().expect("unpoisoned")["l1.weight"].clone();
    for objective in [
        Objective::Ism {},
        Objective::Ssm {
            projections: 2,
            dist: Probe::Gaussian,
            variance_reduced: false,
        },
    ] {
        let loss = Dsm::new(sde.clone(), r.weighting("simple", "()")?).with_objective(objective);
        let draws = loss.draw(SEED, 1, 0, 16, &[2], DType::F64, &Device::Cpu)?;
        let value = |second: bool| -> Result<Tensor> {
            let d = Denoiser::new(model.clone(), param.clone(), None, None)
                .keep_graph(true)
                .second_order(second);
            loss.loss(&d, &x0, None, &draws)
        };
        let grad = |second: bool| -> Result<Vec<f64>> {
            let g = value(second)?.backward()?;
            Ok(g.get(var.as_tensor())
                .expect("a gradient")
                .flatten_all()?
                .to_vec1::<f64>()?)
        };
        let (autograd, first_order) = (grad(true)?, grad(false)?);
        let w0 = var.as_tensor().copy()?;
        let flat0 = w0.flatten_all()?.to_vec1::<f64>()?;
        let h = 1e-5;
        let (mut worst, mut missed) = (0.0f64, 0.0f64);
        for k in [0, 3, 7, 12] {
            let at = |delta: f64| -> Result<f64> {
                let mut w = flat0.clone();
                w[k] += delta;
                var.set(&Tensor::from_vec(w, w0.shape(), &Device::Cpu)?)?;
                let v = value(true)?.to_scalar::<f64>()?;
                var.set(&w0)?;
                Ok(v)
            };
            let fd = (at(h)? - at(-h)?) / (2.0 * h);
            worst = worst.max((autograd[k] - fd).abs() / fd.abs().max(1e-3));
            missed = missed.max((first_order[k] - fd).abs() / fd.abs().max(1e-3));
        }
        assert!(
            worst < 1e-5,
            "{objective:?}: autograd vs differences {worst:e}"
        );
        assert!(
            missed > 1e-3,
            "{objective:?}: the first-order op matched ({missed:e})"
        );
        eprintln!(
            "{}: relative gap {worst:e}; first-order op {missed:e}",
            objective.name()
        );
    }
    Ok(())
}
