//! The noise source: every Gaussian draw is a pure function of (seed, sample index, draw
//! index), so a sample never depends on its batch-mates, the batch size, the thread count or
//! how a job was sharded (DESIGN.md "Noise").
//!
//! Draws come from the Philox4x32-10 block function ([`rand_philox`], pinned to Random123's
//! known answers): the 128-bit counter holds (draw block, sample index), the key the seed and
//! a stream tag; Box–Muller turns each pair of words into two normals.
//!
//! Tensors of f32 draws are computed 16 samples at a time, one per SIMD lane (Philox, then
//! Box–Muller with its own branch-free logarithm and sines, both compiled for AVX2 or AVX-512
//! where the CPU has them), across the current pool's threads from 2^14 draws: 2.7–3.6 ns per
//! normal on one thread here (2-D samples, which use half of each Philox block), against
//! 10.5 ns with the C library's `lnf` and `sincosf` lane by lane and Philox for baseline
//! x86-64 (`cargo xtask bench` prints it). The lanes give the row filler's bits (tested); f64
//! draws use the C library's functions.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex, OnceLock, mpsc},
};

use candle_core::{DType, Device, Tensor};
use rand_philox::{philox4x32_10, splitmix64, u32_to_unit_f32, u32_to_unit_f64};
use rayon::prelude::*;

use crate::{Error, Result};

/// Independent streams drawn from one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Prior and solver noise.
    Sampling = 1,
    /// Exact samples of a reference distribution (conformance, oracles).
    Exact = 2,
    /// The nodes of a Brownian tree.
    Brownian = 3,
    /// Training draws (t, x₀, ε).
    Training = 4,
    /// A network's initial weights.
    Init = 5,
    /// Synthetic data rows and the order of stored ones ([`data`](crate::data)).
    Data = 6,
    /// Hutchinson's trace probes ([`likelihood`](crate::likelihood)).
    Hutchinson = 7,
    /// Uniform dequantization of integer data before a likelihood.
    Dequantize = 8,
    /// The times and noise of the variational bound ([`likelihood`](crate::likelihood)).
    Bound = 9,
    /// A network's dropout masks in training, keyed by (seed, step, row) ([`RowKey`]).
    Dropout = 10,
    /// Sliced score matching's projections, keyed by (seed, step, row) ([`crate::loss`]).
    Projection = 11,
}

/// A Philox key for `seed` and `stream`.
pub fn philox_key(seed: u64, stream: Stream) -> [u32; 2] {
    let k = splitmix64(splitmix64(seed) ^ (stream as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    [k as u32, (k >> 32) as u32]
}

/// A Philox key for `seed` and `stream` at step `step` of a run that draws afresh at every
/// step (training: t, ε and label dropout keyed by (seed, step, row)).
pub fn philox_step_key(seed: u64, stream: Stream, step: u64) -> [u32; 2] {
    let [lo, hi] = philox_key(seed, stream);
    let k = splitmix64((u64::from(hi) << 32 | u64::from(lo)) ^ splitmix64(step));
    [k as u32, (k >> 32) as u32]
}

#[inline]
fn block(key: [u32; 2], sample: u64, block: u64) -> [u32; 4] {
    philox4x32_10(
        [
            block as u32,
            (block >> 32) as u32,
            sample as u32,
            (sample >> 32) as u32,
        ],
        key,
    )
}

/// Fills `out` with the normals of `sample` at draw indices `first..first + out.len()`, each
/// Philox block's four words making two Box–Muller pairs: words 0 and 1 give draws 4k and
/// 4k + 1, words 2 and 3 draws 4k + 2 and 4k + 3. A pair none of whose draws is asked for is
/// not computed (a 2-D sample asks for half a block per step).
fn fill_normals<T: Copy + Default>(
    key: [u32; 2],
    sample: u64,
    first: u64,
    out: &mut [T],
    pair: fn(u32, u32) -> (T, T),
) {
    let mut idx = first;
    let mut j = 0;
    while j < out.len() {
        let w = block(key, sample, idx / 4);
        let lane = (idx % 4) as usize;
        let end = 4.min(lane + out.len() - j);
        let mut n = [T::default(); 4];
        if lane < 2 {
            (n[0], n[1]) = pair(w[0], w[1]);
        }
        if end > 2 {
            (n[2], n[3]) = pair(w[2], w[3]);
        }
        out[j..j + end - lane].copy_from_slice(&n[lane..end]);
        j += end - lane;
        idx += (end - lane) as u64;
    }
}

/// Fills `out` with the standard normals of `sample` at draw indices `first..first + out.len()`.
pub fn fill_normals_f64(key: [u32; 2], sample: u64, first: u64, out: &mut [f64]) {
    fill_normals(key, sample, first, out, box_muller_f64);
}

/// Fills `out` with the standard normals of `sample` at draw indices `first..`, in f32.
pub fn fill_normals_f32(key: [u32; 2], sample: u64, first: u64, out: &mut [f32]) {
    fill_normals(key, sample, first, out, box_muller_f32);
}

/// The draws of one row (one sample) under one key: its normals and its uniforms, each a pure
/// function of (key, row, index). This is what a plugin that draws for itself is given — a
/// synthetic data source's row, a component pick — so that its draws come from the kernel's
/// source (tidy's rule 4) and never depend on the batch the row is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowNoise {
    key: [u32; 2],
    row: u64,
}

impl RowNoise {
    /// The draws of `row` under `key`.
    pub fn new(key: [u32; 2], row: u64) -> Self {
        Self { key, row }
    }

    /// The row's index.
    pub fn row(&self) -> u64 {
        self.row
    }

    /// Fills `out` with the row's standard normals at draw indices `first..first + out.len()`.
    pub fn normals(&self, first: u64, out: &mut [f64]) {
        fill_normals_f64(self.key, self.row, first, out);
    }

    /// The row's uniform on (0, 1) at uniform index `index` (a stream apart from the normals).
    pub fn uniform(&self, index: u64) -> f64 {
        uniform_f64(self.key, self.row, index)
    }
}

/// Fills `out` with the uniforms on (0, 1) of `sample` at uniform indices
/// `first..first + out.len()`: [`uniform_f64`]'s values, four per Philox block.
pub fn fill_uniforms(key: [u32; 2], sample: u64, first: u64, out: &mut [f64]) {
    let mut idx = first;
    let mut j = 0;
    while j < out.len() {
        let w = block(key, sample, (1 << 63) | (idx / 4));
        let lane = (idx % 4) as usize;
        let take = (4 - lane).min(out.len() - j);
        for (o, &word) in out[j..j + take].iter_mut().zip(&w[lane..lane + take]) {
            *o = u32_to_unit_f64(word);
        }
        j += take;
        idx += take as u64;
    }
}

/// A Philox key for the draws of `key` under a sub-stream `index` (a network's dropout layer
/// `index` within one training step's key).
pub fn philox_subkey(key: [u32; 2], index: u64) -> [u32; 2] {
    let k = splitmix64(
        (u64::from(key[1]) << 32 | u64::from(key[0])) ^ splitmix64(index ^ 0xd1b5_4a32_d192_ed03),
    );
    [k as u32, (k >> 32) as u32]
}

/// The draws a training step gives rows `first_row..` of a batch (a network's dropout): a key
/// of (seed, step) and the global index of the batch's row 0, so that a row's draws are the
/// same in any batch split (gradient accumulation, shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey {
    /// The step's Philox key.
    pub key: [u32; 2],
    /// The index of the batch's row 0.
    pub first_row: u64,
}

impl RowKey {
    /// The key of the rows from `start` on (a chunk of the batch).
    pub fn skip(self, start: usize) -> Self {
        Self {
            first_row: self.first_row + start as u64,
            ..self
        }
    }

    /// Inverted dropout of `x` (`[n, ...]`, its row i the batch's row `first_row + i`) with
    /// drop probability `p` ∈ [0, 1): each element kept with probability 1 − p and scaled by
    /// 1/(1 − p), so E[out] = x. Element j of row i is dropped when the uniform j of that row
    /// under the sub-key `layer` of this step's key is below p ([`Stream::Dropout`]): a row's
    /// mask depends on the step, the row and the layer, never on the batch it is evaluated in
    /// (candle-nn's `dropout` draws from candle's own generator: neither seeded nor keyed).
    /// p = 0 returns `x`.
    pub fn dropout(&self, x: &Tensor, p: f64, layer: u64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                "p",
                format!("{p} is not a probability in [0, 1)"),
            ));
        }
        if p == 0.0 {
            return Ok(x.clone());
        }
        let n = x.dim(0)?;
        let cols = x.elem_count() / n.max(1);
        let sub = philox_subkey(self.key, layer);
        let mut mask = vec![0u8; n * cols];
        let mut u = vec![0f64; cols];
        for (i, row) in mask.chunks_mut(cols.max(1)).enumerate() {
            fill_uniforms(sub, self.first_row + i as u64, 0, &mut u);
            for (m, &v) in row.iter_mut().zip(&u) {
                *m = u8::from(v >= p);
            }
        }
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?.affine(1.0 / (1.0 - p), 0.0)?)
    }
}

/// A uniform on (0, 1) for `sample` at uniform index `index` (its own stream of words).
pub fn uniform_f64(key: [u32; 2], sample: u64, index: u64) -> f64 {
    // Uniforms live in the upper half of the block space, clear of the normals'.
    let w = block(key, sample, (1 << 63) | (index / 4));
    u32_to_unit_f64(w[(index % 4) as usize])
}

#[inline]
fn box_muller_f64(a: u32, b: u32) -> (f64, f64) {
    let r = (-2.0 * u32_to_unit_f64(a).ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * u32_to_unit_f64(b)).sin_cos();
    (r * c, r * s)
}

/// Box–Muller in f32: r = √(−2 ln u₁), (r cos 2πu₂, r sin 2πu₂), with [`ln_f32`] and
/// [`sin_cos_turn_f32`] (branch-free, so that 16 lanes at a time vectorise; the same bits in
/// a lane as row by row).
#[inline(always)]
fn box_muller_f32(a: u32, b: u32) -> (f32, f32) {
    let r = (-2.0 * ln_f32(u32_to_unit_f32(a))).sqrt();
    let (s, c) = sin_cos_turn_f32(u32_to_unit_f32(b));
    (r * c, r * s)
}

/// ln x for x in (0, 1] (a Philox uniform; no zero, no subnormal): Cephes' `logf`, x = m 2^e
/// with m in [√½, √2), ln m by a degree-9 polynomial in m − 1, every a·b + c one fused
/// multiply-add (exactly rounded on every machine). Within 2 ulp of the C library's (tested).
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 126) as f32;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // in [½, 1)
    // m < √½: 2m − 1, e − 1; else m − 1.
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= if small { 1.0 } else { 0.0 };
    m = if small { m + m } else { m };
    let x = m - 1.0;
    let z = x * x;
    let p = 7.037_683_6e-2_f32
        .mul_add(x, -1.151_461e-1)
        .mul_add(x, 1.167_699_9e-1)
        .mul_add(x, -1.242_014_1e-1)
        .mul_add(x, 1.424_932_3e-1)
        .mul_add(x, -1.666_805_8e-1)
        .mul_add(x, 2.000_071_5e-1)
        .mul_add(x, -2.499_999_4e-1)
        .mul_add(x, 3.333_333e-1);
    let y = e.mul_add(-2.121_944_4e-4, p * x * z);
    let y = (-0.5f32).mul_add(z, y);
    e.mul_add(0.693_359_4, x + y)
}

/// (sin 2πu, cos 2πu) for u in (0, 1): the quadrant q = round(4u) and the remainder u − q/4
/// are exact, θ = 2π (u − q/4) is within ±π/4, and Cephes' `sinf`/`cosf` polynomials (fused
/// multiply-adds) finish it. Within 2 ulp of the C library's `sin_cos` of 2πu, absolute
/// (tested).
#[inline(always)]
fn sin_cos_turn_f32(u: f32) -> (f32, f32) {
    const SHIFT: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let t = 4.0 * u + SHIFT;
    let q = t - SHIFT;
    let th = (q.mul_add(-0.25, u)) * std::f32::consts::TAU;
    let z = th * th;
    let s = (-1.951_529_6e-4_f32)
        .mul_add(z, 8.332_161e-3)
        .mul_add(z, -1.666_665_5e-1)
        * z;
    let s = s.mul_add(th, th);
    let c = 2.443_315_7e-5_f32
        .mul_add(z, -1.388_731_6e-3)
        .mul_add(z, 4.166_664_6e-2)
        * z;
    let c = c.mul_add(z, (-0.5f32).mul_add(z, 1.0));
    // Quadrant q mod 4: (sin, cos) = (s, c), (c, −s), (−s, −c), (−c, s).
    let k = t.to_bits();
    let odd = (k & 1).wrapping_neg();
    let (sb, cb) = (s.to_bits(), c.to_bits());
    let sin = (sb & !odd) | (cb & odd);
    let cos = (cb & !odd) | (sb & odd);
    let sin_sign = (k & 2) << 30;
    let cos_sign = (k.wrapping_add(1) & 2) << 30;
    (
        f32::from_bits(sin ^ sin_sign),
        f32::from_bits(cos ^ cos_sign),
    )
}

/// One request for standard normal noise: `rows` samples starting at global index
/// `sample_offset`, `cols` draws each starting at draw index `draw_offset`, for a step from
/// `t_from` to `t_to` (which a Brownian source uses; others ignore it).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseRequest {
    /// The run's seed.
    pub seed: u64,
    /// The global index of row 0.
    pub sample_offset: u64,
    /// Rows (samples).
    pub rows: usize,
    /// Draws per row.
    pub cols: usize,
    /// The draw index of column 0.
    pub draw_offset: u64,
    /// Which draw of the current step this is (0 for the first).
    pub index_in_step: u64,
    /// The step's start time.
    pub t_from: f64,
    /// The step's end time.
    pub t_to: f64,
}

/// Where standard normal noise comes from. Replaceable: tests use constants and Brownian paths.
pub trait NoiseSource: Send + Sync + Debug {
    /// Standard normal draws of shape `[rows, cols]`.
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor>;

    /// Whether the draws depend only on (seed, sample index, draw index): not on the step's
    /// times nor on the call's place in the step. Such draws can be computed ahead
    /// ([`Prefetch`]).
    fn counter_based(&self) -> bool {
        false
    }
}

/// What identifies the draws of a counter-based source.
#[derive(Debug, Clone, PartialEq)]
struct CounterKey {
    seed: u64,
    sample_offset: u64,
    rows: usize,
    cols: usize,
    draw_offset: u64,
    dtype: DType,
}

impl CounterKey {
    fn of(req: &NoiseRequest, dtype: DType) -> Self {
        Self {
            seed: req.seed,
            sample_offset: req.sample_offset,
            rows: req.rows,
            cols: req.cols,
            draw_offset: req.draw_offset,
            dtype,
        }
    }
}

type Pending = (CounterKey, mpsc::Receiver<Result<Tensor>>);

/// Computes a counter-based source's next draws on a thread of its own while the caller
/// goes on (the model runs): after serving draws `k..k + cols` of a batch it starts on
/// `k + cols..k + 2 cols`, which is what the next call of a stochastic step (or of the next
/// step) asks for. A request that differs is served directly and the guess dropped. The draws
/// are pure functions of their request, so the samples are the same bits either way.
///
/// On the CPU only; other devices and sources that are not [`counter_based`]
/// (NoiseSource::counter_based) pass through.
pub struct Prefetch {
    inner: Arc<dyn NoiseSource>,
    /// One thread, so that the draws never wait behind the model's work in the global pool.
    pool: OnceLock<std::result::Result<rayon::ThreadPool, String>>,
    pending: Mutex<Option<Pending>>,
}

impl Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetch")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Prefetch {
    /// Prefetches `inner`'s draws.
    pub fn new(inner: Arc<dyn NoiseSource>) -> Self {
        Self {
            inner,
            pool: OnceLock::new(),
            pending: Mutex::new(None),
        }
    }

    fn pool(&self) -> Result<&rayon::ThreadPool> {
        self.pool
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(|_| "sdeflow-noise".into())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Msg(format!("cannot start the noise thread: {e}")))
    }
}

impl NoiseSource for Prefetch {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        if !(self.inner.counter_based() && device.is_cpu()) {
            return self.inner.standard_normal(req, dtype, device);
        }
        let key = CounterKey::of(req, dtype);
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| Error::Msg("the noise prefetch lock is poisoned".into()))?;
        let ready = match pending.take() {
            Some((k, rx)) if k == key => rx.recv().ok(),
            _ => None,
        };
        let z = match ready {
            Some(z) => z?,
            None => self.inner.standard_normal(req, dtype, device)?,
        };
        let next = NoiseRequest {
            draw_offset: req.draw_offset + req.cols as u64,
            index_in_step: req.index_in_step + 1,
            ..req.clone()
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let (inner, dev) = (self.inner.clone(), device.clone());
        *pending = Some((CounterKey::of(&next, dtype), rx));
        self.pool()?.spawn(move || {
            // The receiver may be gone (the run ended, or asked for something else).
            let _ = tx.send(inner.standard_normal(&next, dtype, &dev));
        });
        Ok(z)
    }

    fn counter_based(&self) -> bool {
        self.inner.counter_based()
    }
}

/// Elements at which generation goes parallel.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// A `rows × cols` buffer filled `group` rows at a time: `fill(first_row, rows_of_the_group)`,
/// in parallel on the current pool from [`PAR_MIN_ELEMS`] elements.
fn generate<T: Send + Copy + Default>(
    rows: usize,
    cols: usize,
    group: usize,
    fill: impl Fn(u64, &mut [T]) + Sync,
) -> Vec<T> {
    let mut v = vec![T::default(); rows * cols];
    if cols == 0 {
        return v;
    }
    let chunk = cols * group;
    if rows * cols >= PAR_MIN_ELEMS {
        v.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, rows)| fill((i * group) as u64, rows));
    } else {
        v.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, rows)| fill((i * group) as u64, rows));
    }
    v
}

/// Samples whose Philox blocks are computed together, one per SIMD lane.
const LANES: usize = 16;

/// [`philox4x32_10`] on [`LANES`] counters at once, struct of arrays: `c[w][l]` is word `w` of
/// lane `l`'s counter on entry and of its block on exit. Each lane computes exactly its own
/// block (a test pins it to `rand_philox`); written so that LLVM maps the lanes to vector
/// registers: the multiply-high through the widening product, the low half as a 32-bit
/// multiply.
#[inline(always)]
fn philox_lanes(c: &mut [[u32; LANES]; 4], mut key: [u32; 2]) {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let [x0, x1, x2, x3] = *c;
        for l in 0..LANES {
            let hi0 = ((u64::from(x0[l]) * u64::from(M0)) >> 32) as u32;
            let hi1 = ((u64::from(x2[l]) * u64::from(M1)) >> 32) as u32;
            c[0][l] = hi1 ^ x1[l] ^ key[0];
            c[1][l] = x2[l].wrapping_mul(M1);
            c[2][l] = hi0 ^ x3[l] ^ key[1];
            c[3][l] = x0[l].wrapping_mul(M0);
        }
    }
}

/// Fills `out`, the rows of samples `first..first + out.len() / cols`, at most [`LANES`] of
/// them, with their normals at draw indices `draw..draw + cols`, in f32: the same bits as
/// [`fill_normals_f32`] row by row. The Philox blocks and Box–Muller run across the lanes,
/// compiled through [`pulp::Arch::dispatch`] for the CPU's widest vectors (integer products
/// and fused multiply-adds are exact, so every target gives the same bits).
fn fill_rows_f32(key: [u32; 2], first: u64, draw: u64, cols: usize, out: &mut [f32]) {
    pulp::Arch::new().dispatch(FillRows {
        key,
        first,
        draw,
        cols,
        out,
    });
}

/// [`fill_rows_f32`]'s body, for [`pulp::Arch::dispatch`].
struct FillRows<'a> {
    key: [u32; 2],
    first: u64,
    draw: u64,
    cols: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for FillRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let FillRows {
            key,
            first,
            draw,
            cols,
            out,
        } = self;
        let rows = out.len() / cols;
        let samples: [u64; LANES] = std::array::from_fn(|l| first + l as u64);
        let (lo, hi) = (samples.map(|s| s as u32), samples.map(|s| (s >> 32) as u32));
        let mut idx = draw;
        let mut j = 0;
        while j < cols {
            let b = idx / 4;
            let word = (idx % 4) as usize;
            let end = 4.min(word + cols - j);
            let mut c = [[b as u32; LANES], [(b >> 32) as u32; LANES], lo, hi];
            philox_lanes(&mut c, key);
            // Box–Muller on words (0, 1) for draws 4b, 4b + 1 and on (2, 3) for 4b + 2, 4b + 3.
            for pair in [0, 2] {
                if word >= pair + 2 || end <= pair {
                    continue; // none of this pair's draws is asked for
                }
                let (mut even, mut odd) = ([0f32; LANES], [0f32; LANES]);
                for l in 0..LANES {
                    (even[l], odd[l]) = box_muller_f32(c[pair][l], c[pair + 1][l]);
                }
                for k in word.max(pair)..end.min(pair + 2) {
                    let col = j + k - word;
                    let normals = if k == pair { &even } else { &odd };
                    for (row, n) in out.chunks_exact_mut(cols).zip(normals).take(rows) {
                        row[col] = *n;
                    }
                }
            }
            j += end - word;
            idx += (end - word) as u64;
        }
    }
}

/// Builds a `[rows, cols]` tensor whose element (i, j) is `draw(sample_offset + i, j)`-style
/// Philox noise in `dtype`.
pub fn philox_normal_tensor(
    key: [u32; 2],
    sample_offset: u64,
    rows: usize,
    cols: usize,
    draw_offset: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    match dtype {
        DType::F64 => {
            let v = generate(rows, cols, 1, |i, row: &mut [f64]| {
                fill_normals_f64(key, sample_offset + i, draw_offset, row)
            });
            Ok(Tensor::from_vec(v, (rows, cols), device)?)
        }
        _ => {
            let v = generate(rows, cols, LANES, |i, group: &mut [f32]| {
                fill_rows_f32(key, sample_offset + i, draw_offset, cols, group)
            });
            Ok(Tensor::from_vec(v, (rows, cols), device)?.to_dtype(dtype)?)
        }
    }
}

/// The default source: counter-based Philox noise keyed by (seed, sample, draw).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhiloxNoise;

impl NoiseSource for PhiloxNoise {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        let key = philox_key(req.seed, Stream::Sampling);
        philox_normal_tensor(
            key,
            req.sample_offset,
            req.rows,
            req.cols,
            req.draw_offset,
            dtype,
            device,
        )
    }

    fn counter_based(&self) -> bool {
        true
    }
}

/// Every draw equals one constant: `ConstantNoise(0.0)` and `ConstantNoise(1.0)` read the
/// affine coefficients off a stochastic step (DESIGN.md "Decisions").
#[derive(Debug, Clone, Copy)]
pub struct ConstantNoise(pub f64);

impl NoiseSource for ConstantNoise {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(Tensor::full(self.0, (req.rows, req.cols), device)?.to_dtype(dtype)?)
    }
}

/// A Brownian path per sample and coordinate over [t_lo, t_hi], built as a Brownian bridge
/// tree: W at the midpoint of a node's interval is the bridge mean plus a Philox normal keyed
/// by the node. W(t) is a function of t alone, so increments over a refined step add up to
/// the coarse increment, as strong-order tests need. The first draw of a step returns
/// (W(t_from) − W(t_to)) / √|t_from − t_to|; further draws in the same step are fresh normals.
#[derive(Debug, Clone, Copy)]
pub struct BrownianNoise {
    t_lo: f64,
    t_hi: f64,
    depth: u32,
}

impl BrownianNoise {
    /// A path on [t_lo, t_hi], resolved to 2^-depth of the interval (linear within a leaf).
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(a < b)` also rejects NaN, which `a >= b` would let through"
    )]
    pub fn new(t_lo: f64, t_hi: f64, depth: u32) -> Result<Self> {
        if !(t_lo < t_hi) || !(1..=62).contains(&depth) {
            return Err(Error::invalid(
                "brownian noise",
                "interval",
                format!("need t_lo < t_hi and 1 ≤ depth ≤ 62, got [{t_lo}, {t_hi}], depth {depth}"),
            ));
        }
        Ok(Self { t_lo, t_hi, depth })
    }

    /// W(t) of `sample`, coordinate `col` of `cols`.
    pub fn value(&self, key: [u32; 2], sample: u64, col: usize, cols: usize, t: f64) -> f64 {
        let z = |node: u64| {
            let mut out = [0.0];
            fill_normals_f64(key, sample, node * cols as u64 + col as u64, &mut out);
            out[0]
        };
        let (mut a, mut b) = (self.t_lo, self.t_hi);
        let (mut wa, mut wb) = (0.0, (b - a).sqrt() * z(0));
        if t <= a {
            return 0.0;
        }
        if t >= b {
            return wb;
        }
        let tol = 1e-13 * (self.t_hi - self.t_lo);
        let mut node = 1u64;
        for _ in 0..self.depth {
            let m = 0.5 * (a + b);
            let wm = 0.5 * (wa + wb) + (0.25 * (b - a)).sqrt() * z(node);
            if (t - m).abs() <= tol {
                return wm;
            }
            if t < m {
                (b, wb, node) = (m, wm, 2 * node);
            } else {
                (a, wa, node) = (m, wm, 2 * node + 1);
            }
            if (t - a).abs() <= tol {
                return wa;
            }
            if (t - b).abs() <= tol {
                return wb;
            }
        }
        wa + (wb - wa) * (t - a) / (b - a)
    }
}

impl NoiseSource for BrownianNoise {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        if req.index_in_step > 0 {
            return PhiloxNoise.standard_normal(req, dtype, device);
        }
        let key = philox_key(req.seed, Stream::Brownian);
        let h = (req.t_from - req.t_to).abs();
        if h == 0.0 {
            return Err(Error::invalid("brownian noise", "step", "zero-length step"));
        }
        let cols = req.cols;
        let v = generate(req.rows, cols, 1, |i, row: &mut [f64]| {
            let s = req.sample_offset + i;
            for (j, out) in row.iter_mut().enumerate() {
                let dw =
                    self.value(key, s, j, cols, req.t_from) - self.value(key, s, j, cols, req.t_to);
                *out = dw / h.sqrt();
            }
        });
        Ok(Tensor::from_vec(v, (req.rows, cols), device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_muller_f32_parts_are_within_two_ulp() {
        // Every 3rd of the 2^23 uniforms u32_to_unit_f32 makes, against f64.
        let (mut ln_worst, mut sc_worst) = (0f64, 0f64);
        for k in (0u32..1 << 23).step_by(3) {
            let u = u32_to_unit_f32(k << 9);
            let want = f64::from(u).ln();
            let got = f64::from(ln_f32(u));
            ln_worst = ln_worst.max((got - want).abs() / want.abs());
            let (s, c) = sin_cos_turn_f32(u);
            let (ws, wc) = (std::f64::consts::TAU * f64::from(u)).sin_cos();
            sc_worst = sc_worst
                .max((f64::from(s) - ws).abs())
                .max((f64::from(c) - wc).abs());
        }
        let ulp = f64::from(f32::EPSILON);
        assert!(ln_worst <= 2.0 * ulp, "ln: {ln_worst:e} relative");
        assert!(sc_worst <= 2.0 * ulp, "sin, cos: {sc_worst:e} absolute");
    }

    /// Every lane computes `rand_philox`'s block of its own counter, whatever the words hold
    /// (high bits of the block and sample words included) and whatever the key.
    #[test]
    fn philox_lanes_are_the_scalar_block_function() {
        for (seed, base) in [
            (0u64, 0u64),
            (7, u64::MAX - 3),
            (1 << 40, 0x0123_4567_89ab_cdef),
        ] {
            let key = philox_key(seed, Stream::Sampling);
            let ctrs: [[u32; 4]; LANES] = std::array::from_fn(|l| {
                let x = splitmix64(base.wrapping_add(l as u64));
                let y = splitmix64(x);
                [x as u32, (x >> 32) as u32, y as u32, (y >> 32) as u32]
            });
            let want = ctrs.map(|ctr| philox4x32_10(ctr, key));
            let mut c: [[u32; LANES]; 4] = std::array::from_fn(|w| ctrs.map(|ctr| ctr[w]));
            philox_lanes(&mut c, key);
            for (l, want) in want.iter().enumerate() {
                let got = [c[0][l], c[1][l], c[2][l], c[3][l]];
                assert_eq!(got, *want, "seed {seed}, lane {l}");
            }
        }
    }

    /// The lane path gives `fill_normals_f32`'s bits row by row, for groups shorter than
    /// [`LANES`], draws starting mid-block, and widths that end mid-block.
    #[test]
    fn lane_rows_match_the_row_filler() {
        let key = philox_key(3, Stream::Sampling);
        for (rows, cols, draw) in [(16, 2, 2), (5, 1, 3), (16, 7, 1), (3, 9, 4), (1, 4, 0)] {
            let first = (1u64 << 32) - 2; // the sample word's high half changes mid-group
            let mut got = vec![0f32; rows * cols];
            fill_rows_f32(key, first, draw, cols, &mut got);
            for (i, row) in got.chunks_exact(cols).enumerate() {
                let mut want = vec![0f32; cols];
                fill_normals_f32(key, first + i as u64, draw, &mut want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(row),
                    bits(&want),
                    "{rows} × {cols} from draw {draw}, row {i}"
                );
            }
        }
    }
}
