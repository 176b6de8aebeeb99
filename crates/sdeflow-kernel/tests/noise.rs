//! The counter-based noise source: draws are a pure function of (seed, sample, draw), have the
//! moments of a standard normal, and differ between seeds and streams; `ConstantNoise`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{correlation, flat, mean_var};
use rand_philox::{philox4x32_10, u32_to_unit_f64};
use sdeflow_kernel::{
    Result,
    noise::{
        ConstantNoise, NoiseRequest, NoiseSource, PhiloxNoise, Prefetch, Stream, fill_normals_f32,
        fill_normals_f64, philox_key, philox_normal_tensor, uniform_f64,
    },
};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

const STREAMS: [Stream; 5] = [
    Stream::Sampling,
    Stream::Exact,
    Stream::Brownian,
    Stream::Training,
    Stream::Init,
];

fn request(seed: u64, offset: u64, rows: usize, cols: usize, draw: u64) -> NoiseRequest {
    NoiseRequest {
        seed,
        sample_offset: offset,
        rows,
        cols,
        draw_offset: draw,
        index_in_step: 0,
        t_from: 1.0,
        t_to: 0.5,
    }
}

/// The module doc's layout: counter = (draw block lo, hi, sample lo, hi), key = the seed's
/// key; Box–Muller on words (0, 1) gives draws 4k, 4k + 1 and on (2, 3) draws 4k + 2, 4k + 3,
/// r = √(−2 ln u₁) times (cos, sin) of 2π u₂. Re-derived here from rand_philox directly.
#[test]
fn draws_follow_the_documented_philox_layout() -> Result<()> {
    let key = philox_key(11, Stream::Sampling);
    let sample = (1u64 << 33) + 5; // both halves of the sample index in play
    let first = (1u64 << 34) + 3; // a draw block above 2^32, starting mid-block
    let mut got = vec![0.0; 9];
    fill_normals_f64(key, sample, first, &mut got);
    for (j, g) in got.iter().enumerate() {
        let idx = first + j as u64;
        let b = idx / 4;
        let w = philox4x32_10(
            [
                b as u32,
                (b >> 32) as u32,
                sample as u32,
                (sample >> 32) as u32,
            ],
            key,
        );
        let pair = (idx % 4) as usize / 2;
        let r = (-2.0 * u32_to_unit_f64(w[2 * pair]).ln()).sqrt();
        let theta = std::f64::consts::TAU * u32_to_unit_f64(w[2 * pair + 1]);
        let want = if idx.is_multiple_of(2) {
            r * theta.cos()
        } else {
            r * theta.sin()
        };
        assert!(
            (g - want).abs() <= 1e-15 * (1.0 + want.abs()),
            "draw {idx}: {g} vs {want}"
        );
    }
    Ok(())
}

/// Element (i, j) depends on (seed, sample_offset + i, draw_offset + j) only: any split of the
/// rows, the draws, or the batch gives the same values, in f64 and f32, on the serial and the
/// parallel path (≥ 2^14 elements).
#[test]
fn draws_do_not_depend_on_batch_offset_or_draw_split() -> Result<()> {
    let dev = Device::Cpu;
    let key = philox_key(2024, Stream::Sampling);
    for dtype in [DType::F64, DType::F32] {
        for (rows, cols) in [(64usize, 37usize), (700, 30)] {
            // 64 × 37 runs serially, 700 × 30 = 21,000 in parallel.
            let full = philox_normal_tensor(key, 1000, rows, cols, 0, dtype, &dev)?;
            let full = flat(&full)?;
            // Rows in uneven shards, draws in uneven column ranges (not multiples of 4).
            let row_cuts = [0, 1, 5, 33, rows];
            let col_cuts = [0, 3, 11, 12, cols];
            for r in row_cuts.windows(2) {
                for c in col_cuts.windows(2) {
                    let part = philox_normal_tensor(
                        key,
                        1000 + r[0] as u64,
                        r[1] - r[0],
                        c[1] - c[0],
                        c[0] as u64,
                        dtype,
                        &dev,
                    )?;
                    let part = flat(&part)?;
                    for i in r[0]..r[1] {
                        for j in c[0]..c[1] {
                            let p = part[(i - r[0]) * (c[1] - c[0]) + (j - c[0])];
                            assert_eq!(
                                p.to_bits(),
                                full[i * cols + j].to_bits(),
                                "{dtype:?} ({i}, {j})"
                            );
                        }
                    }
                }
            }
            // One draw at a time through the slice fillers.
            for &(i, j) in &[(0usize, 0usize), (3, 5), (rows - 1, cols - 1)] {
                let s = 1000 + i as u64;
                let one = if dtype == DType::F64 {
                    let mut o = [0.0];
                    fill_normals_f64(key, s, j as u64, &mut o);
                    o[0]
                } else {
                    let mut o = [0.0f32];
                    fill_normals_f32(key, s, j as u64, &mut o);
                    o[0] as f64
                };
                assert_eq!(one.to_bits(), full[i * cols + j].to_bits());
            }
        }
    }
    Ok(())
}

#[test]
fn philox_noise_source_is_the_sampling_stream() -> Result<()> {
    let dev = Device::Cpu;
    let req = request(9, 77, 5, 6, 13);
    let got = PhiloxNoise.standard_normal(&req, DType::F64, &dev)?;
    let want = philox_normal_tensor(
        philox_key(9, Stream::Sampling),
        77,
        5,
        6,
        13,
        DType::F64,
        &dev,
    )?;
    assert_eq!(got.dims(), &[5, 6]);
    assert_eq!(flat(&got)?, flat(&want)?);
    // The step's times and the draw's index in the step do not enter a Philox draw.
    let other = NoiseRequest {
        index_in_step: 3,
        t_from: 0.2,
        t_to: 0.1,
        ..req
    };
    assert_eq!(
        flat(&PhiloxNoise.standard_normal(&other, DType::F64, &dev)?)?,
        flat(&want)?
    );
    Ok(())
}

/// Half-precision dtypes are the f32 draws rounded.
#[test]
fn half_precision_draws_are_rounded_f32_draws() -> Result<()> {
    let dev = Device::Cpu;
    let key = philox_key(5, Stream::Sampling);
    let f32s = philox_normal_tensor(key, 0, 8, 9, 0, DType::F32, &dev)?;
    for dtype in [DType::BF16, DType::F16] {
        let half = philox_normal_tensor(key, 0, 8, 9, 0, dtype, &dev)?;
        assert_eq!(half.dtype(), dtype);
        assert_eq!(flat(&half)?, flat(&f32s.to_dtype(dtype)?)?);
    }
    Ok(())
}

/// Moments of n draws against N(0, 1), each within 5 standard errors: mean (SE 1/√n),
/// variance (SE √(2/n)), fourth moment 3 (SE √((105 − 9)/n)) and
/// P(|z| < 1) = erf(1/√2) (binomial SE).
fn check_moments(v: &[f64], what: &str) {
    let n = v.len() as f64;
    let (m, var) = mean_var(v);
    assert!(m.abs() < 5.0 / n.sqrt(), "{what}: mean {m}");
    assert!(
        (var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(),
        "{what}: variance {var}"
    );
    let m4 = v.iter().map(|z| z.powi(4)).sum::<f64>() / n;
    assert!(
        (m4 - 3.0).abs() < 5.0 * (96.0 / n).sqrt(),
        "{what}: fourth moment {m4}"
    );
    // erf(1/√2), the standard normal's mass in [−1, 1] (Abramowitz & Stegun table 26.1).
    let p = 0.682_689_492_137_085_9;
    let inside = v.iter().filter(|z| z.abs() < 1.0).count() as f64 / n;
    assert!(
        (inside - p).abs() < 5.0 * (p * (1.0 - p) / n).sqrt(),
        "{what}: P(|z| < 1) = {inside}"
    );
}

/// n = 100,000 draws in f64 and in f32 have standard normal moments, and the correlation of
/// the two halves of a Box–Muller pair, of draws straddling two pairs and of the same draw of
/// neighbouring samples is 0 within 5 standard errors (SE 1/√m for m pairs).
#[test]
fn draws_have_standard_normal_moments_in_f64_and_f32() -> Result<()> {
    let dev = Device::Cpu;
    let (rows, cols) = (1000usize, 100usize);
    for dtype in [DType::F64, DType::F32] {
        let t = philox_normal_tensor(
            philox_key(7, Stream::Sampling),
            0,
            rows,
            cols,
            0,
            dtype,
            &dev,
        )?;
        let v = flat(&t)?;
        check_moments(&v, &format!("{dtype:?}"));
        let se = 1.0 / ((rows * cols) as f64).sqrt();
        // Consecutive draws of one sample: (4k, 4k+1) share a Box–Muller pair,
        // (4k+1, 4k+2) straddle two pairs.
        let a: Vec<f64> = v.iter().step_by(2).copied().collect();
        let b: Vec<f64> = v.iter().skip(1).step_by(2).copied().collect();
        let r = correlation(&a, &b);
        assert!(
            r.abs() < 5.0 * se * 2f64.sqrt(),
            "{dtype:?}: pair correlation {r}"
        );
        let a: Vec<f64> = v.iter().skip(1).step_by(4).copied().collect();
        let b: Vec<f64> = v.iter().skip(2).step_by(4).copied().collect();
        let r = correlation(&a, &b);
        assert!(
            r.abs() < 5.0 * se * 2.0,
            "{dtype:?}: cross-pair correlation {r}"
        );
        // The same draw index of neighbouring samples.
        let a: Vec<f64> = v[..(rows - 1) * cols].to_vec();
        let b: Vec<f64> = v[cols..].to_vec();
        let r = correlation(&a, &b);
        assert!(r.abs() < 5.0 * se, "{dtype:?}: sample correlation {r}");
    }
    Ok(())
}

#[test]
fn seeds_and_streams_give_different_uncorrelated_draws() -> Result<()> {
    let dev = Device::Cpu;
    let (rows, cols) = (200usize, 100usize);
    let se = 1.0 / ((rows * cols) as f64).sqrt();
    let mut keys = Vec::new();
    let mut draws = Vec::new();
    for seed in [0u64, 1, 2, u64::MAX] {
        for stream in STREAMS {
            let key = philox_key(seed, stream);
            assert!(!keys.contains(&key), "seed {seed} {stream:?}: key repeats");
            keys.push(key);
            draws.push((
                format!("seed {seed} {stream:?}"),
                flat(&philox_normal_tensor(
                    key,
                    0,
                    rows,
                    cols,
                    0,
                    DType::F64,
                    &dev,
                )?)?,
            ));
        }
    }
    for (i, (na, a)) in draws.iter().enumerate() {
        for (nb, b) in &draws[i + 1..] {
            let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
            assert_eq!(equal, 0, "{na} and {nb} share {equal} draws");
            let r = correlation(a, b);
            assert!(r.abs() < 5.0 * se, "{na} and {nb}: correlation {r}");
        }
    }
    // The same key twice gives the same draws.
    let again = philox_normal_tensor(
        philox_key(0, Stream::Sampling),
        0,
        rows,
        cols,
        0,
        DType::F64,
        &dev,
    )?;
    assert_eq!(flat(&again)?, draws[0].1);
    Ok(())
}

/// Uniforms lie in (0, 1), have mean ½ and variance 1/12 (SEs √(1/12n) and √(1/180n)), are a
/// pure function of (key, sample, index) and are uncorrelated with the normals of the same
/// sample (they live in the other half of the block space).
#[test]
fn uniforms_are_uniform_and_apart_from_the_normals() -> Result<()> {
    let key = philox_key(3, Stream::Exact);
    let n = 100_000usize;
    let u: Vec<f64> = (0..n as u64).map(|s| uniform_f64(key, s, 0)).collect();
    assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
    let (m, var) = mean_var(&u);
    let nf = n as f64;
    assert!(
        (m - 0.5).abs() < 5.0 * (1.0 / (12.0 * nf)).sqrt(),
        "mean {m}"
    );
    assert!(
        (var - 1.0 / 12.0).abs() < 5.0 * (1.0 / (180.0 * nf)).sqrt(),
        "variance {var}"
    );
    let z: Vec<f64> = (0..n as u64)
        .map(|s| {
            let mut o = [0.0];
            fill_normals_f64(key, s, 0, &mut o);
            o[0]
        })
        .collect();
    let r = correlation(&u, &z);
    assert!(r.abs() < 5.0 / nf.sqrt(), "uniform–normal correlation {r}");
    let later: Vec<f64> = (0..4u64).map(|i| uniform_f64(key, 42, i)).collect();
    assert_eq!(later[2].to_bits(), uniform_f64(key, 42, 2).to_bits());
    assert!(later.windows(2).all(|w| w[0] != w[1]));
    Ok(())
}

#[test]
fn constant_noise_fills_the_requested_shape() -> Result<()> {
    let dev = Device::Cpu;
    for value in [0.0, 1.0, -2.5] {
        for dtype in [DType::F64, DType::F32] {
            let z = ConstantNoise(value).standard_normal(&request(1, 3, 4, 5, 7), dtype, &dev)?;
            assert_eq!(z.dims(), &[4, 5]);
            assert_eq!(z.dtype(), dtype);
            assert!(flat(&z)?.iter().all(|&v| v == value));
        }
    }
    Ok(())
}

#[test]
fn empty_requests_give_empty_tensors() -> Result<()> {
    let dev = Device::Cpu;
    let key = philox_key(1, Stream::Sampling);
    let none = philox_normal_tensor(key, 0, 0, 4, 0, DType::F32, &dev)?;
    assert_eq!(none.dims(), &[0, 4]);
    let no_cols = philox_normal_tensor(key, 0, 3, 0, 0, DType::F64, &dev)?;
    assert_eq!(no_cols.dims(), &[3, 0]);
    let t: Tensor = PhiloxNoise.standard_normal(&request(1, 0, 0, 2, 0), DType::F32, &dev)?;
    assert_eq!(t.elem_count(), 0);
    Ok(())
}

/// Philox counting the calls made on the caller's thread (not the prefetcher's).
#[derive(Debug, Default)]
struct Counting(AtomicUsize);

impl NoiseSource for Counting {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        if std::thread::current().name() != Some("sdeflow-noise") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        PhiloxNoise.standard_normal(req, dtype, device)
    }
    fn counter_based(&self) -> bool {
        true
    }
}

/// The prefetcher returns the inner source's bits for any sequence of requests — consecutive
/// draws (its guess), a jump, another seed or dtype — and computes the guessed next draws
/// ahead: after the first call, consecutive requests are served from the computed-ahead draws.
#[test]
fn prefetch_returns_the_same_draws_and_computes_ahead() -> Result<()> {
    let counting = Arc::new(Counting::default());
    let prefetch = Prefetch::new(counting.clone());
    let dev = Device::Cpu;
    let mut reqs: Vec<(NoiseRequest, DType)> = (0..5)
        .map(|k| (request(3, 10, 300, 2, 2 + 2 * k), DType::F32))
        .collect();
    reqs.push((request(3, 10, 300, 2, 40), DType::F32));
    reqs.push((request(4, 10, 300, 2, 42), DType::F32));
    reqs.push((request(4, 10, 300, 2, 44), DType::F64));
    reqs.push((request(4, 10, 300, 2, 46), DType::F64));
    for (req, dtype) in &reqs {
        let got = prefetch.standard_normal(req, *dtype, &dev)?;
        let want = PhiloxNoise.standard_normal(req, *dtype, &dev)?;
        assert_eq!(
            flat(&got)?.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            flat(&want)?.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{req:?} {dtype:?}"
        );
    }
    // Only the misses are computed on the caller's thread: the first request, the jump, the
    // new seed and the new dtype; the 5 consecutive ones were computed ahead.
    assert_eq!(counting.0.load(Ordering::SeqCst), 4);
    Ok(())
}

/// Sources whose draws depend on the step (a Brownian tree) or the device pass through.
#[test]
fn prefetch_passes_through_sources_that_are_not_counter_based() -> Result<()> {
    let prefetch = Prefetch::new(Arc::new(ConstantNoise(0.5)));
    let z = prefetch.standard_normal(&request(1, 0, 3, 2, 0), DType::F64, &Device::Cpu)?;
    assert!(flat(&z)?.iter().all(|v| *v == 0.5));
    assert!(!prefetch.counter_based());
    Ok(())
}
