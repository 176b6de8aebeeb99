//! The Brownian-tree noise source: W(t) is a function of t, so increments add up exactly under
//! refinement; increments over disjoint intervals are independent with variance equal to the
//! interval's length; through the pipeline, the noise of any grid sums to W(T) − W(t_ε).

mod common;

use std::sync::Arc;

use candle_core::{DType, Device};
use common::{AccumulateNoise, EpsParam, ExpSde, GaussianEps, correlation, flat, mean_var};
use sdeflow_kernel::{
    Error, GridKind, Pipeline, Result,
    noise::{BrownianNoise, NoiseRequest, NoiseSource, PhiloxNoise, Stream, philox_key},
};

const T_LO: f64 = 1e-3;
const T_HI: f64 = 1.0;

fn request(rows: usize, cols: usize, t_from: f64, t_to: f64) -> NoiseRequest {
    NoiseRequest {
        seed: 17,
        sample_offset: 40,
        rows,
        cols,
        draw_offset: 2,
        index_in_step: 0,
        t_from,
        t_to,
    }
}

/// The increment W(t_from) − W(t_to) of every row and column, from the noise source's z.
fn increments(
    w: &BrownianNoise,
    rows: usize,
    cols: usize,
    t_from: f64,
    t_to: f64,
) -> Result<Vec<f64>> {
    let z = w.standard_normal(&request(rows, cols, t_from, t_to), DType::F64, &Device::Cpu)?;
    Ok(flat(&z)?
        .into_iter()
        .map(|v| v * (t_from - t_to).sqrt())
        .collect())
}

#[test]
fn new_rejects_bad_intervals_and_depths() -> Result<()> {
    for (lo, hi, depth) in [
        (1.0, 1.0, 10),
        (1.0, 0.5, 10),
        (f64::NAN, 1.0, 10),
        (0.0, f64::NAN, 10),
        (0.0, 1.0, 0),
        (0.0, 1.0, 63),
    ] {
        match BrownianNoise::new(lo, hi, depth) {
            Err(Error::InvalidParam { field, .. }) => assert_eq!(field, "interval"),
            other => panic!("[{lo}, {hi}] depth {depth}: expected InvalidParam, got {other:?}"),
        }
    }
    assert!(BrownianNoise::new(0.0, 1.0, 1).is_ok());
    assert!(BrownianNoise::new(0.0, 1.0, 62).is_ok());
    Ok(())
}

#[test]
fn path_starts_at_zero_and_is_flat_outside_the_interval() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 12)?;
    let key = philox_key(5, Stream::Brownian);
    for s in 0..20u64 {
        assert_eq!(w.value(key, s, 0, 2, T_LO), 0.0);
        assert_eq!(w.value(key, s, 1, 2, T_LO - 0.5), 0.0);
        let top = w.value(key, s, 1, 2, T_HI);
        assert!(top.is_finite() && top != 0.0);
        assert_eq!(w.value(key, s, 1, 2, T_HI + 3.0), top);
    }
    Ok(())
}

/// W(t0) − W(t2) = [W(t0) − W(t1)] + [W(t1) − W(t2)] through the source's scaled draws, for
/// dyadic, non-dyadic and leaf-interior points; rounding only (~1e-12 absolute).
#[test]
fn increments_add_over_a_split_interval() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 16)?;
    let (rows, cols) = (64, 3);
    let span = T_HI - T_LO;
    for (t0, t1, t2) in [
        (T_HI, T_LO + 0.5 * span, T_LO),
        (T_LO + 0.75 * span, T_LO + 0.3 * span, T_LO + 0.01 * span),
        (0.912_345, 0.5, 0.123_456_7),
        (0.5 + 1e-7, 0.5 + 3e-7 / 7.0, 0.5),
    ] {
        let whole = increments(&w, rows, cols, t0, t2)?;
        let a = increments(&w, rows, cols, t0, t1)?;
        let b = increments(&w, rows, cols, t1, t2)?;
        for k in 0..whole.len() {
            let sum = a[k] + b[k];
            assert!(
                (whole[k] - sum).abs() <= 1e-12,
                "[{t2}, {t0}] split at {t1}, element {k}: {} vs {sum}",
                whole[k]
            );
        }
    }
    Ok(())
}

/// On the dyadic uniform grids with 2^k steps on [t_lo, t_hi] (the tree's own nodes), the fine
/// increments of every coarse step sum to the coarse increment, for k = 0..8.
#[test]
fn refinement_is_consistent_on_dyadic_grids() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 20)?;
    let (rows, cols) = (16, 2);
    let grid = |k: u32| -> Vec<f64> {
        let n = 1usize << k;
        (0..=n)
            .map(|i| T_HI + (i as f64 / n as f64) * (T_LO - T_HI))
            .collect()
    };
    for k in 0..8u32 {
        let coarse = grid(k);
        let fine = grid(k + 1);
        for i in 0..coarse.len() - 1 {
            let big = increments(&w, rows, cols, coarse[i], coarse[i + 1])?;
            let a = increments(&w, rows, cols, fine[2 * i], fine[2 * i + 1])?;
            let b = increments(&w, rows, cols, fine[2 * i + 1], fine[2 * i + 2])?;
            for e in 0..big.len() {
                assert!(
                    (big[e] - a[e] - b[e]).abs() <= 1e-12,
                    "k = {k}, step {i}, element {e}"
                );
            }
        }
    }
    Ok(())
}

/// Increments over disjoint dyadic intervals of n = 20,000 samples: variance equal to the
/// length within 5 standard errors (SE = length·√(2/n)), mean 0 (SE √(length/n)), and
/// uncorrelated across intervals and coordinates (SE 1/√n). The second interval sits three
/// levels deep in the tree, so the bridge variance at every level is exercised.
#[test]
fn disjoint_increments_are_independent_with_variance_equal_to_length() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 10)?;
    let (rows, cols) = (20_000, 2);
    let at = |f: f64| T_LO + f * (T_HI - T_LO);
    let intervals = [
        (at(1.0), at(0.5)),
        (at(0.5), at(0.375)),
        (at(0.375), at(0.0)),
    ];
    let n = rows as f64;
    let mut per_interval = Vec::new();
    for &(hi, lo) in &intervals {
        let inc = increments(&w, rows, cols, hi, lo)?;
        let len = hi - lo;
        for col in 0..cols {
            let v: Vec<f64> = inc.iter().skip(col).step_by(cols).copied().collect();
            let (m, var) = mean_var(&v);
            assert!(
                m.abs() < 5.0 * (len / n).sqrt(),
                "[{lo}, {hi}] col {col}: mean {m}"
            );
            assert!(
                (var - len).abs() < 5.0 * len * (2.0 / n).sqrt(),
                "[{lo}, {hi}] col {col}: variance {var}, length {len}"
            );
        }
        let c0: Vec<f64> = inc.iter().step_by(cols).copied().collect();
        let c1: Vec<f64> = inc.iter().skip(1).step_by(cols).copied().collect();
        let r = correlation(&c0, &c1);
        assert!(
            r.abs() < 5.0 / n.sqrt(),
            "[{lo}, {hi}]: coordinate correlation {r}"
        );
        per_interval.push(c0);
    }
    for i in 0..per_interval.len() {
        for j in i + 1..per_interval.len() {
            let r = correlation(&per_interval[i], &per_interval[j]);
            assert!(
                r.abs() < 5.0 / n.sqrt(),
                "intervals {i}, {j}: correlation {r}"
            );
        }
    }
    Ok(())
}

#[test]
fn later_draws_in_a_step_are_fresh_philox_normals() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 10)?;
    let dev = Device::Cpu;
    let req = NoiseRequest {
        index_in_step: 1,
        ..request(6, 3, 0.8, 0.6)
    };
    let got = w.standard_normal(&req, DType::F64, &dev)?;
    let want = PhiloxNoise.standard_normal(&req, DType::F64, &dev)?;
    assert_eq!(flat(&got)?, flat(&want)?);
    Ok(())
}

#[test]
fn zero_length_step_is_an_error() -> Result<()> {
    let w = BrownianNoise::new(T_LO, T_HI, 10)?;
    match w.standard_normal(&request(2, 2, 0.5, 0.5), DType::F32, &Device::Cpu) {
        Err(Error::InvalidParam { field, .. }) => assert_eq!(field, "step"),
        other => panic!("expected InvalidParam, got {other:?}"),
    }
    Ok(())
}

/// Through the pipeline: a solver that sums z √h over its steps gets W(T) − W(t_ε) for any
/// step count and grid (the path is shared across step counts, as strong-order tests need).
#[test]
fn pipeline_noise_sums_to_the_same_path_at_every_step_count() -> Result<()> {
    let sde = ExpSde::new();
    let brownian = Arc::new(BrownianNoise::new(sde.t_eps, sde.t_max, 24)?);
    let run = |steps: usize, grid: GridKind| -> Result<Vec<f64>> {
        let pipeline = Pipeline::builder()
            .sde(Arc::new(sde))
            .param(Arc::new(EpsParam))
            .model(Arc::new(GaussianEps {
                mean: vec![0.0; 3],
                std: 1.0,
            }))
            .solver(Arc::new(AccumulateNoise))
            .noise(brownian.clone())
            .steps(steps)
            .grid(grid)
            .seed(99)
            .dtype(DType::F64)
            .build()?;
        let out = pipeline.sample_range(5, 10)?;
        flat(&out.state.extras["w"])
    };
    let reference = run(1, GridKind::Uniform)?;
    for (steps, grid) in [
        (2, GridKind::Uniform),
        (3, GridKind::Uniform),
        (64, GridKind::Uniform),
        (17, GridKind::Quadratic),
        (10, GridKind::LogSnr),
    ] {
        let w = run(steps, grid)?;
        for (a, b) in w.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-12, "{steps} {grid:?} steps: {a} vs {b}");
        }
    }
    // And it is W(T) − W(t_ε) of the source itself, keyed by the run's seed and sample.
    let key = philox_key(99, Stream::Brownian);
    for (k, r) in reference.iter().enumerate() {
        let (s, col) = (5 + (k / 3) as u64, k % 3);
        let want =
            brownian.value(key, s, col, 3, sde.t_max) - brownian.value(key, s, col, 3, sde.t_eps);
        assert!((r - want).abs() <= 1e-12);
    }
    Ok(())
}
