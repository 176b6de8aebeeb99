//! Batch invariance (DESIGN.md "pipeline"): with the default row chunking, sample i of a
//! matmul model is bit-identical at any batch size, on a rerun and in any shard; the
//! denoiser's chunking, padding, conditioning and NFE accounting.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{
    EpsParam, ExpSde, GaussianEps, LinearEps, NoisyEuler, RecordingModel, bits_f32, flat,
};
use sdeflow_kernel::{
    At, Denoiser, ForwardSde, GridKind, Pipeline, Result, ScoreModel, denoiser::DEFAULT_CHUNK_ROWS,
};

fn pipeline(model: Arc<dyn ScoreModel>, chunk_rows: Option<Option<usize>>) -> Result<Pipeline> {
    let b = Pipeline::builder()
        .sde(Arc::new(ExpSde::new()))
        .param(Arc::new(EpsParam))
        .model(model)
        .solver(Arc::new(NoisyEuler { draws: 1 }))
        .steps(8)
        .grid(GridKind::Uniform)
        .seed(2024);
    match chunk_rows {
        Some(c) => b.chunk_rows(c).build(),
        None => b.build(),
    }
}

fn mlp() -> Result<Arc<LinearEps>> {
    Ok(Arc::new(LinearEps::new(2, 48, DType::F32)?))
}

/// Sample i is the same bits at batch sizes 1, 7, 1000 and 2100 (two chunks), and on a rerun,
/// with the default chunking.
#[test]
fn samples_are_bit_identical_across_batch_sizes_and_reruns() -> Result<()> {
    let model = mlp()?;
    assert!(!model.rows_independent());
    let p = pipeline(model, None)?;
    let big = bits_f32(&p.sample(1000)?.state.x)?;
    assert_eq!(big.len(), 1000);
    assert_eq!(bits_f32(&p.sample(1000)?.state.x)?, big, "rerun");
    for n in [1usize, 7, 2100] {
        let x = bits_f32(&p.sample(n)?.state.x)?;
        for i in 0..n.min(1000) {
            assert_eq!(x[i], big[i], "batch {n}, sample {i}");
        }
    }
    // The samples are not all alike: the model and the noise act per sample.
    assert_ne!(big[0], big[1]);
    Ok(())
}

/// Shards `sample_range(offset, n)` concatenate to the rows of one big run, whatever the
/// split (shard boundaries off the chunk grid, a single row, a shard past the first chunk).
#[test]
fn shards_give_the_rows_of_one_big_run() -> Result<()> {
    let p = pipeline(mlp()?, None)?;
    let all = bits_f32(&p.sample(1500)?.state.x)?;
    let mut joined = Vec::new();
    for (offset, n) in [(0u64, 300usize), (300, 1), (301, 700), (1001, 499)] {
        let out = p.sample_range(offset, n)?;
        assert_eq!(out.state.sample_offset, offset);
        joined.extend(bits_f32(&out.state.x)?);
    }
    assert_eq!(joined, all);
    let last = bits_f32(&p.sample_range(1499, 1)?.state.x)?;
    assert_eq!(last[0], all[1499]);
    Ok(())
}

/// Small chunks (5 rows) and a row-independent model give the same invariance.
#[test]
fn invariance_holds_for_other_chunk_sizes_and_independent_models() -> Result<()> {
    let p = pipeline(mlp()?, Some(Some(5)))?;
    let all = bits_f32(&p.sample(23)?.state.x)?;
    let mut joined = bits_f32(&p.sample_range(0, 11)?.state.x)?;
    joined.extend(bits_f32(&p.sample_range(11, 12)?.state.x)?);
    assert_eq!(joined, all);
    let g = Arc::new(GaussianEps {
        mean: vec![1.0, -1.0],
        std: 0.3,
    });
    let p = pipeline(g, None)?;
    let all = bits_f32(&p.sample(50)?.state.x)?;
    let part = bits_f32(&p.sample_range(17, 9)?.state.x)?;
    assert_eq!(part, all[17..26].to_vec());
    Ok(())
}

/// The padding the chunking costs: every evaluation of n < chunk rows pads to a full chunk;
/// chunking off, or a row-independent model, pads nothing.
#[test]
fn padded_rows_are_counted() -> Result<()> {
    let steps = 8u64;
    let out = pipeline(mlp()?, None)?.sample(7)?;
    assert_eq!(out.nfe, steps);
    assert_eq!(out.padded_rows, steps * (DEFAULT_CHUNK_ROWS as u64 - 7));
    let out = pipeline(mlp()?, Some(None))?.sample(7)?;
    assert_eq!(out.padded_rows, 0);
    let out = pipeline(mlp()?, Some(Some(4)))?.sample(10)?;
    assert_eq!(out.padded_rows, steps * 2);
    let g = Arc::new(GaussianEps {
        mean: vec![0.0, 0.0],
        std: 1.0,
    });
    let out = pipeline(g, None)?.sample(7)?;
    assert_eq!(out.padded_rows, 0);
    Ok(())
}

/// The denoiser calls the model on chunks of exactly `chunk_rows` rows (the last zero-padded
/// and cut back), keeps the conditioning aligned with its rows, and counts one NFE per call.
#[test]
fn denoiser_chunks_pads_and_aligns_conditioning() -> Result<()> {
    let dev = Device::Cpu;
    let c = ExpSde::new().coefs(0.5);
    let x = Tensor::arange(0f32, 14.0, &dev)?.reshape((7, 2))?;
    let cond = x.affine(100.0, 0.5)?;
    for (chunk, independent, calls, padded) in [
        (Some(3), false, vec![3, 3, 3], 2u64),
        (Some(7), false, vec![7], 0),
        (Some(10), false, vec![10], 3),
        (None, false, vec![7], 0),
        (Some(3), true, vec![7], 0),
    ] {
        let model = Arc::new(RecordingModel {
            independent,
            dim: 2,
            ..Default::default()
        });
        let d = Denoiser::new(model.clone(), Arc::new(EpsParam), chunk, Some(cond.clone()));
        let out = d.eval(&x, &c)?;
        assert_eq!(out.output().dims(), &[7, 2]);
        // The recording model returns x + cond: rows must line up.
        assert_eq!(flat(out.output())?, flat(&(&x + &cond)?)?, "{chunk:?}");
        assert_eq!(*model.calls.lock().expect("lock"), calls, "{chunk:?}");
        assert_eq!(d.padded_rows(), padded, "{chunk:?}");
        assert_eq!(d.nfe(), 1);
        d.eval(&x, &c)?;
        assert_eq!(d.nfe(), 2);
        assert_eq!(d.padded_rows(), 2 * padded);
    }
    Ok(())
}

/// A zero-row batch through a chunked, matmul model is an empty result, not an error.
#[test]
fn empty_batch_through_a_chunked_model() -> Result<()> {
    let c = ExpSde::new().coefs(0.5);
    let x = Tensor::zeros((0, 2), DType::F32, &Device::Cpu)?;
    let d = Denoiser::new(mlp()?, Arc::new(EpsParam), Some(4), None);
    let out = d.eval(&x, &c)?;
    assert_eq!(out.output().dims(), &[0, 2]);
    let out = pipeline(mlp()?, None)?.sample_range(3, 0)?;
    assert_eq!(out.state.x.dims(), &[0, 2]);
    Ok(())
}

/// A trainable model (weights as `Var`s) returns tracked tensors. Sampling detaches them, so
/// no step keeps the previous steps' activations alive through x, and the bits are those of
/// the same model with plain weights. `keep_graph` keeps the graph for callers that
/// differentiate through the model: the gradient reaches every weight.
#[test]
fn sampling_detaches_a_trainable_models_outputs() -> Result<()> {
    let (trainable, vars) = LinearEps::trainable(2, 48, DType::F32)?;
    let trainable = Arc::new(trainable);
    let x = sdeflow_kernel::testing::normals(5, 1500, 2)?.to_dtype(DType::F32)?;
    let c = ExpSde::new().coefs(0.4);
    assert!(
        trainable
            .forward(&x, &At::new(c.into(), &EpsParam), None)?
            .track_op(),
        "the model's own output is tracked"
    );

    let sampled = pipeline(trainable.clone(), None)?.sample(1500)?;
    assert!(
        !sampled.state.x.track_op(),
        "the samples carry autograd's graph"
    );
    let plain = pipeline(mlp()?, None)?.sample(1500)?;
    assert_eq!(bits_f32(&sampled.state.x)?, bits_f32(&plain.state.x)?);

    let detached = Denoiser::new(trainable.clone(), Arc::new(EpsParam), Some(1024), None);
    assert!(!detached.eval(&x, &c)?.output().track_op());
    let kept = Denoiser::new(trainable, Arc::new(EpsParam), Some(1024), None).keep_graph(true);
    let out = kept.eval(&x, &c)?.output().clone();
    assert!(out.track_op());
    let grads = out.sqr()?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("no gradient for weight {i}"));
        assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "weight {i}");
    }
    Ok(())
}
