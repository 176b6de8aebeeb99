//! The MLP's forward and backward on the CPU, owned outright.
//!
//! Op by op, candle runs the network as a chain of fresh tensors: each matmul's output zeroed
//! then written, the bias and the activation as passes of their own, each layer's backward as
//! several more ops and transposed copies, every buffer a new allocation. Here the network is
//! one candle op ([`MlpOp`], with its backward) over the input x and θ, all the weights in one
//! flat vector (the model concatenates its variables into it, so candle's autograd hands each
//! variable its slice of ∂L/∂θ). Inside it:
//!
//! - **Row blocks.** Rows go through all the layers [`BLOCK`] at a time, so that a block's
//!   activations stay in the core's cache between layers, and blocks are spread over rayon's
//!   threads. A block's products are the `gemm` crate's (candle's own kernels) on one thread,
//!   written straight into their buffers; bias + SiLU is one pass ([`crate::fused`]). A row's
//!   result depends on its block's rows, never on the thread that computed them: the output is
//!   the same bytes at any thread count.
//! - **Weight gradients** ∂L/∂W_i = (∂L/∂z_i)ᵀ h_{i−1} and ∂L/∂b_i = 1ᵀ (∂L/∂z_i) are whole-batch
//!   products on all of rayon's threads, written into ∂L/∂θ's slices. `gemm` splits their output,
//!   not the sum over rows, so they too are the same bytes at any thread count.
//! - **What the backward reads** (the input rows [x; e(c)], each hidden layer's σ(z_i) and
//!   activation h_i = z_i σ(z_i), from which SiLU'(z_i) = σ + h_i (1 − σ) needs no exp) is kept
//!   by the forward, only when a graph records it.
//!   Sampling records none and keeps nothing, and its first layer, with one time per call, is
//!   `W₁ˣ x + (W₁ᵉ e(c) + b₁)`: the embedding's product is one row.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::fused::{Real, silu_grad_kept, silu_in_place, silu_keep, sin_cos_into};
use crate::gemm::{Mat, MatMut, matmul};

/// Rows per block: a block's two hidden-layer buffers (256 × 256 f32 each) fit a core's L2.
const BLOCK: usize = 256;

/// The element types of the CPU network, with their candle storage.
pub(crate) trait Elem: Real + candle_core::WithDType {
    /// The slice of a CPU storage of this type.
    fn of_storage(s: &CpuStorage) -> Option<&[Self]>;
    /// A CPU storage holding `v`.
    fn storage(v: Vec<Self>) -> CpuStorage;
    /// The pool's free buffers of this type.
    fn free(pool: &mut Pool) -> &mut Vec<Vec<Self>>;
    /// `f` on this thread's scratch buffer of `len` elements (kept between calls, so a
    /// sampling step allocates and zeroes nothing; a fresh one if the thread's is in use).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// [`Elem::with_scratch`] over a thread-local buffer.
fn scratch<T: Real, R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    cell.with(|c| match c.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, T::ZERO);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![T::ZERO; len]),
    })
}

thread_local! {
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers a model's ops hand back for its next step: the kept activations (tens of MB at a
/// training batch of thousands) and the backward's work space, which fresh each step cost
/// the allocator's zeroing. A reused buffer is written whole before anything reads it.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    f32: Vec<Vec<f32>>,
    f64: Vec<Vec<f64>>,
}

/// A model's pool, shared by its ops.
pub(crate) type SharedPool = Arc<Mutex<Pool>>;

/// The most buffers a pool keeps (the oldest go first).
const POOL_MAX: usize = 32;

/// A buffer of `len` elements from the pool, or a new one (zeros).
fn take<T: Elem>(pool: &SharedPool, len: usize) -> Vec<T> {
    if let Ok(mut p) = pool.lock() {
        let free = T::free(&mut p);
        if let Some(i) = free.iter().position(|v| v.len() == len) {
            return free.swap_remove(i);
        }
    }
    vec![T::ZERO; len]
}

/// Hands `v` back to the pool.
fn give<T: Elem>(pool: &SharedPool, v: Vec<T>) {
    if let Ok(mut p) = pool.lock() {
        let free = T::free(&mut p);
        if free.len() == POOL_MAX {
            free.remove(0);
        }
        free.push(v);
    }
}

impl Elem for f32 {
    fn of_storage(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }

    fn storage(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }

    fn free(pool: &mut Pool) -> &mut Vec<Vec<f32>> {
        &mut pool.f32
    }

    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        scratch(&SCRATCH_F32, len, f)
    }
}

impl Elem for f64 {
    fn of_storage(s: &CpuStorage) -> Option<&[f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }

    fn storage(v: Vec<f64>) -> CpuStorage {
        CpuStorage::F64(v)
    }

    fn free(pool: &mut Pool) -> &mut Vec<Vec<f64>> {
        &mut pool.f64
    }

    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
        scratch(&SCRATCH_F64, len, f)
    }
}

/// The network's sizes: sample dimension d, embedding dimension E, width h, hidden layers L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub(crate) d: usize,
    pub(crate) e: usize,
    pub(crate) h: usize,
    pub(crate) layers: usize,
}

impl Dims {
    /// The first layer's input width, d + E.
    fn input(&self) -> usize {
        self.d + self.e
    }

    /// The lengths of θ's pieces, in θ's order: W₁ [h, d + E], b₁ [h], then W_i [h, h] and
    /// b_i [h] for each further hidden layer, then W_o [d, h] and b_o [d].
    pub(crate) fn pieces(&self) -> Vec<usize> {
        let mut p = vec![self.h * self.input(), self.h];
        for _ in 1..self.layers {
            p.extend([self.h * self.h, self.h]);
        }
        p.extend([self.d * self.h, self.d]);
        p
    }
}

/// The weights, borrowed, in θ's order.
pub(crate) struct Weights<'a, T> {
    /// (W_i, b_i) of each hidden layer; W₁'s columns are x's d, then the embedding's E.
    hidden: Vec<(&'a [T], &'a [T])>,
    wo: &'a [T],
    bo: &'a [T],
}

impl<'a, T> Weights<'a, T> {
    /// The weights from their slices in θ's order ([`Dims::pieces`]), or `None` if a length
    /// differs.
    pub(crate) fn new(parts: &[&'a [T]], dims: Dims) -> Option<Self> {
        let lens = dims.pieces();
        if parts.len() != lens.len() || parts.iter().zip(&lens).any(|(p, &n)| p.len() != n) {
            return None;
        }
        let hidden = parts[..2 * dims.layers]
            .chunks_exact(2)
            .map(|wb| (wb[0], wb[1]))
            .collect();
        Some(Self {
            hidden,
            wo: parts[2 * dims.layers],
            bo: parts[2 * dims.layers + 1],
        })
    }

    /// The weights in θ, one flat slice.
    fn split(theta: &'a [T], dims: Dims) -> Option<Self> {
        let mut parts = Vec::new();
        let mut rest = theta;
        for n in dims.pieces() {
            if rest.len() < n {
                return None;
            }
            let (a, b) = rest.split_at(n);
            parts.push(a);
            rest = b;
        }
        if rest.is_empty() {
            Self::new(&parts, dims)
        } else {
            None
        }
    }
}

/// The rows [x_r; e(c_r)] of a block: `levels` holds one level per row, or one for all
/// (whose embedding `call` then holds).
fn fill_input<T: Real>(
    input: &mut [T],
    x: &[T],
    dims: Dims,
    freqs: &[f64],
    levels: &[f64],
    call: &[T],
) {
    let (d, win) = (dims.d, dims.input());
    for (r, (row, x)) in input
        .chunks_exact_mut(win)
        .zip(x.chunks_exact(d))
        .enumerate()
    {
        let (xs, es) = row.split_at_mut(d);
        xs.copy_from_slice(x);
        if levels.len() == 1 {
            es.copy_from_slice(call);
        } else {
            sin_cos_into(levels[r], freqs, es);
        }
    }
}

/// out ← rows of b_o, then out += h W_oᵀ: the output layer over a block.
fn output_layer<T: Real>(out: &mut [T], h: &[T], w: &Weights<'_, T>, dims: Dims) {
    let rows = out.len() / dims.d;
    for row in out.chunks_exact_mut(dims.d) {
        row.copy_from_slice(w.bo);
    }
    matmul(
        MatMut::rows(out, rows, dims.d),
        Mat::rows(h, rows, dims.h),
        Mat::rows(w.wo, dims.d, dims.h).t(),
        true,
        1,
    );
}

/// What the backward reads, kept by a recorded forward.
pub(crate) struct Stash<T> {
    /// The first layer's input rows [x; e(c)], n × (d + E).
    input: Vec<T>,
    /// Each hidden layer's σ(z_i), z_i = W_i h_{i−1} + b_i, n × h (written over W_i h_{i−1}).
    u: Vec<Vec<T>>,
    /// Each hidden layer's activation h_i = SiLU(u_i + b_i), n × h.
    h: Vec<Vec<T>>,
}

impl<T: Elem> Stash<T> {
    /// Hands every buffer back to `pool`.
    fn give_back(self, pool: &SharedPool) {
        give(pool, self.input);
        for v in self.u.into_iter().chain(self.h) {
            give(pool, v);
        }
    }
}

/// The network's output at the n rows of x (n × d) and `levels` (one per row, or one for
/// all), with what its backward reads (in buffers from `pool`).
pub(crate) fn forward_kept<T: Elem>(
    w: &Weights<'_, T>,
    dims: Dims,
    freqs: &[f64],
    x: &[T],
    levels: &[f64],
    pool: &SharedPool,
) -> (Vec<T>, Stash<T>) {
    let (d, h, win) = (dims.d, dims.h, dims.input());
    let n = x.len() / d;
    let mut out = vec![T::ZERO; n * d];
    let mut stash = Stash {
        input: take(pool, n * win),
        u: (0..dims.layers).map(|_| take(pool, n * h)).collect(),
        h: (0..dims.layers).map(|_| take(pool, n * h)).collect(),
    };
    let mut call = vec![T::ZERO; dims.e];
    if let [c] = levels {
        sin_cos_into(*c, freqs, &mut call);
    }
    // Each block's slices of every buffer, so that blocks run on any thread.
    struct Block<'b, T> {
        first: usize,
        out: &'b mut [T],
        input: &'b mut [T],
        u: Vec<&'b mut [T]>,
        h: Vec<&'b mut [T]>,
    }
    let mut u_blocks: Vec<_> = stash
        .u
        .iter_mut()
        .map(|v| v.chunks_mut(BLOCK * h))
        .collect();
    let mut h_blocks: Vec<_> = stash
        .h
        .iter_mut()
        .map(|v| v.chunks_mut(BLOCK * h))
        .collect();
    let blocks: Vec<Block<'_, T>> = out
        .chunks_mut(BLOCK * d)
        .zip(stash.input.chunks_mut(BLOCK * win))
        .enumerate()
        .map(|(k, (out, input))| Block {
            first: k * BLOCK,
            out,
            input,
            u: u_blocks.iter_mut().flat_map(Iterator::next).collect(),
            h: h_blocks.iter_mut().flat_map(Iterator::next).collect(),
        })
        .collect();
    blocks.into_par_iter().for_each(|b| {
        let rows = b.out.len() / d;
        let lv = if levels.len() == 1 {
            levels
        } else {
            &levels[b.first..b.first + rows]
        };
        let x = &x[b.first * d..(b.first + rows) * d];
        fill_input(b.input, x, dims, freqs, lv, &call);
        let mut prev: &[T] = b.input;
        let mut width = win;
        for ((u, hh), &(wi, bi)) in b.u.into_iter().zip(b.h).zip(&w.hidden) {
            matmul(
                MatMut::rows(&mut *u, rows, h),
                Mat::rows(prev, rows, width),
                Mat::rows(wi, h, width).t(),
                false,
                1,
            );
            silu_keep(u, bi, &mut *hh);
            (prev, width) = (hh, h);
        }
        output_layer(b.out, prev, w, dims);
    });
    (out, stash)
}

/// The network's output at the n rows of x and `levels`, keeping nothing (sampling): with one
/// level for all rows, the first layer adds W₁ᵉ e(c) + b₁, computed once, to W₁ˣ x.
pub(crate) fn forward<T: Elem>(
    w: &Weights<'_, T>,
    dims: Dims,
    freqs: &[f64],
    x: &[T],
    levels: &[f64],
) -> Vec<T> {
    let (d, h, win) = (dims.d, dims.h, dims.input());
    let n = x.len() / d;
    let mut out = vec![T::ZERO; n * d];
    let (w1, b1) = w.hidden[0];
    // One level: shift = b₁ + W₁ᵉ e(c), one row.
    let mut shift = b1.to_vec();
    if let [c] = levels {
        let mut e = vec![T::ZERO; dims.e];
        sin_cos_into(*c, freqs, &mut e);
        matmul(
            MatMut::rows(&mut shift, 1, h),
            Mat::rows(&e, 1, dims.e),
            Mat::new(&w1[d..], dims.e, h, 1, win),
            true,
            1,
        );
    }
    out.par_chunks_mut(BLOCK * d)
        .enumerate()
        .for_each(|(k, out)| {
            T::with_scratch(BLOCK * (2 * h + win), |buf| {
                let (a, rest) = buf.split_at_mut(BLOCK * h);
                let (b, input) = rest.split_at_mut(BLOCK * h);
                let rows = out.len() / d;
                let (a, b) = (&mut a[..rows * h], &mut b[..rows * h]);
                let x = &x[k * BLOCK * d..(k * BLOCK + rows) * d];
                if levels.len() == 1 {
                    matmul(
                        MatMut::rows(&mut *a, rows, h),
                        Mat::rows(x, rows, d),
                        Mat::new(w1, d, h, 1, win),
                        false,
                        1,
                    );
                } else {
                    let input = &mut input[..rows * win];
                    let lv = &levels[k * BLOCK..k * BLOCK + rows];
                    fill_input(input, x, dims, freqs, lv, &[]);
                    matmul(
                        MatMut::rows(&mut *a, rows, h),
                        Mat::rows(input, rows, win),
                        Mat::rows(w1, h, win).t(),
                        false,
                        1,
                    );
                }
                silu_in_place(&mut *a, &shift);
                let (mut cur, mut next) = (a, b);
                for &(wi, bi) in &w.hidden[1..] {
                    matmul(
                        MatMut::rows(&mut *next, rows, h),
                        Mat::rows(cur, rows, h),
                        Mat::rows(wi, h, h).t(),
                        false,
                        1,
                    );
                    silu_in_place(&mut *next, bi);
                    std::mem::swap(&mut cur, &mut next);
                }
                output_layer(out, cur, w, dims);
            })
        });
    out
}

/// The backward of [`forward_kept`]: from ∂L/∂out (n × d), ∂L/∂θ in θ's order when `theta`,
/// and ∂L/∂x (n × d) when `x` (its work space from `pool`).
pub(crate) fn backward<T: Elem>(
    w: &Weights<'_, T>,
    dims: Dims,
    stash: &Stash<T>,
    g: &[T],
    theta: bool,
    x: bool,
    pool: &SharedPool,
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let (d, h, win, layers) = (dims.d, dims.h, dims.input(), dims.layers);
    let n = g.len() / d;
    let threads = rayon::current_num_threads();
    let mut ones = take(pool, n);
    ones.fill(T::ONE);
    let mut dtheta = theta.then(|| vec![T::ZERO; dims.pieces().iter().sum()]);
    // ∂L/∂θ's pieces, in θ's order.
    let mut parts: Vec<&mut [T]> = Vec::new();
    if let Some(dt) = dtheta.as_mut() {
        let mut rest: &mut [T] = dt;
        for len in dims.pieces() {
            let (a, b) = rest.split_at_mut(len);
            parts.push(a);
            rest = b;
        }
    }
    // Whole-batch products: ∂W = δᵀ prev (rows × cols), ∂b = 1ᵀ δ. They run beside the next
    // δ (rayon::join), on half the threads: with two, one thread takes the weight gradients
    // while the other takes δ's blocks, instead of both splitting each small product.
    let half = (threads / 2).max(1);
    let weight_grads =
        |dw: &mut [T], db: &mut [T], delta: &[T], cols: usize, prev: &[T], grad_threads: usize| {
            let width = db.len();
            matmul(
                MatMut::rows(dw, width, cols),
                Mat::rows(delta, n, width).t(),
                Mat::rows(prev, n, cols),
                false,
                grad_threads,
            );
            matmul(
                MatMut::rows(db, 1, width),
                Mat::rows(&ones, 1, n),
                Mat::rows(delta, n, width),
                false,
                grad_threads,
            );
        };
    // ∂L/∂θ's pieces, taken from the back: the output layer's, then each hidden layer's.
    let mut pieces = parts.into_iter().rev();
    let mut next_pair = || -> Option<(&mut [T], &mut [T])> {
        let db = pieces.next()?;
        let dw = pieces.next()?;
        Some((dw, db))
    };
    let last = &stash.h[layers - 1];
    // δ_L = SiLU'(z_L) ⊙ (g W_o), block by block, beside ∂W_o and ∂b_o.
    let mut delta = take(pool, n * h);
    let output_grads = next_pair();
    rayon::join(
        || {
            if let Some((dwo, dbo)) = output_grads {
                weight_grads(dwo, dbo, g, h, last, half);
            }
        },
        || {
            delta
                .par_chunks_mut(BLOCK * h)
                .zip(g.par_chunks(BLOCK * d))
                .zip(stash.u[layers - 1].par_chunks(BLOCK * h))
                .zip(last.par_chunks(BLOCK * h))
                .for_each(|(((dz, g), s), hh)| {
                    let rows = g.len() / d;
                    matmul(
                        MatMut::rows(&mut *dz, rows, h),
                        Mat::rows(g, rows, d),
                        Mat::rows(w.wo, d, h),
                        false,
                        1,
                    );
                    silu_grad_kept(dz, s, hh);
                });
        },
    );
    let mut next = if layers > 1 {
        take(pool, n * h)
    } else {
        Vec::new()
    };
    let mut dx = None;
    for i in (0..layers).rev() {
        let (prev, cols) = if i == 0 {
            (&stash.input, win)
        } else {
            (&stash.h[i - 1], h)
        };
        let grads = next_pair();
        let wi = w.hidden[i].0;
        let delta_ref = &delta;
        let next_ref = &mut next;
        let ((), out) = rayon::join(
            || {
                if let Some((dw, db)) = grads {
                    // The first layer's, with no δ to compute beside them, on every thread.
                    let alone = i == 0 && !x;
                    weight_grads(
                        dw,
                        db,
                        delta_ref,
                        cols,
                        prev,
                        if alone { threads } else { half },
                    );
                }
            },
            || {
                if i > 0 {
                    // δ_{i−1} = SiLU'(z_{i−1}) ⊙ (δ_i W_i).
                    next_ref
                        .par_chunks_mut(BLOCK * h)
                        .zip(delta_ref.par_chunks(BLOCK * h))
                        .zip(stash.u[i - 1].par_chunks(BLOCK * h))
                        .zip(stash.h[i - 1].par_chunks(BLOCK * h))
                        .for_each(|(((dz, dl), s), hh)| {
                            let rows = dl.len() / h;
                            matmul(
                                MatMut::rows(&mut *dz, rows, h),
                                Mat::rows(dl, rows, h),
                                Mat::rows(wi, h, h),
                                false,
                                1,
                            );
                            silu_grad_kept(dz, s, hh);
                        });
                    None
                } else if x {
                    // ∂L/∂x = δ₁ W₁ˣ, W₁ˣ the first d columns of W₁.
                    let mut out = vec![T::ZERO; n * d];
                    out.par_chunks_mut(BLOCK * d)
                        .zip(delta_ref.par_chunks(BLOCK * h))
                        .for_each(|(dx, dl)| {
                            let rows = dl.len() / h;
                            matmul(
                                MatMut::rows(dx, rows, d),
                                Mat::rows(dl, rows, h),
                                Mat::new(wi, h, d, win, 1),
                                false,
                                1,
                            );
                        });
                    Some(out)
                } else {
                    None
                }
            },
        );
        if i > 0 {
            std::mem::swap(&mut delta, &mut next);
        } else {
            dx = out;
        }
    }
    for v in [ones, delta, next] {
        give(pool, v);
    }
    (dtheta, dx)
}

/// The network as one candle op over (x `[n, d]`, θ `[P]`), its backward included.
pub(crate) struct MlpOp {
    dims: Dims,
    freqs: Vec<f64>,
    levels: Vec<f64>,
    /// What the backward reads, from the last forward.
    stash: Mutex<Option<Kept>>,
    /// The model's buffers: the stash goes back to it when the graph lets the op go.
    pool: SharedPool,
}

impl Drop for MlpOp {
    fn drop(&mut self) {
        match self.stash.get_mut().map(Option::take) {
            Ok(Some(Kept::F32(s))) => s.give_back(&self.pool),
            Ok(Some(Kept::F64(s))) => s.give_back(&self.pool),
            _ => {}
        }
    }
}

/// A [`Stash`] of either element type.
enum Kept {
    F32(Stash<f32>),
    F64(Stash<f64>),
}

impl MlpOp {
    /// The op for sizes `dims`, embedding frequencies `freqs` and one level per row of x (or
    /// one for all).
    pub(crate) fn new(dims: Dims, freqs: Vec<f64>, levels: Vec<f64>, pool: SharedPool) -> Self {
        Self {
            dims,
            freqs,
            levels,
            stash: Mutex::new(None),
            pool,
        }
    }

    fn run<T: Elem>(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        theta: &CpuStorage,
        lt: &Layout,
    ) -> candle_core::Result<(Vec<T>, Stash<T>)> {
        let x = contiguous::<T>(x, lx, "x")?;
        let theta = contiguous::<T>(theta, lt, "θ")?;
        let w = Weights::split(theta, self.dims)
            .ok_or_else(|| candle_core::Error::Msg("mlp: θ has the wrong length".into()))?;
        Ok(forward_kept(
            &w,
            self.dims,
            &self.freqs,
            x,
            &self.levels,
            &self.pool,
        ))
    }

    fn grads<T: Elem>(
        &self,
        stash: &Stash<T>,
        x: &Tensor,
        theta: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (ts, tl) = theta.storage_and_layout();
        let (Storage::Cpu(gs), Storage::Cpu(ts)) = (&*gs, &*ts) else {
            candle_core::bail!("mlp: the CPU op's gradient is not on the CPU")
        };
        let g = contiguous::<T>(gs, gl, "the output's gradient")?;
        let w = Weights::split(contiguous::<T>(ts, tl, "θ")?, self.dims)
            .ok_or_else(|| candle_core::Error::Msg("mlp: θ has the wrong length".into()))?;
        let (dtheta, dx) = backward(
            &w,
            self.dims,
            stash,
            g,
            theta.track_op(),
            x.track_op(),
            &self.pool,
        );
        let dev = x.device();
        let dx = dx
            .map(|v| Tensor::from_vec(v, x.shape(), dev))
            .transpose()?;
        let dtheta = dtheta
            .map(|v| Tensor::from_vec(v, theta.shape(), dev))
            .transpose()?;
        Ok((dx, dtheta))
    }
}

/// The contiguous slice of `s` under `l`, of element type T, or an error naming `what`.
fn contiguous<'a, T: Elem>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match (T::of_storage(s), l.contiguous_offsets()) {
        (Some(v), Some((a, b))) => Ok(&v[a..b]),
        (None, _) => candle_core::bail!("mlp: {what} has another dtype than the weights"),
        (_, None) => candle_core::bail!("mlp: {what} is not contiguous"),
    }
}

impl CustomOp2 for MlpOp {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        theta: &CpuStorage,
        lt: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = lx.shape().clone();
        let (out, kept) = match x {
            CpuStorage::F32(_) => {
                let (out, s) = self.run::<f32>(x, lx, theta, lt)?;
                (f32::storage(out), Kept::F32(s))
            }
            CpuStorage::F64(_) => {
                let (out, s) = self.run::<f64>(x, lx, theta, lt)?;
                (f64::storage(out), Kept::F64(s))
            }
            _ => candle_core::bail!("mlp: the CPU network runs in f32 or f64"),
        };
        *self.stash.lock().map_err(|_| {
            candle_core::Error::Msg("mlp: the kept activations are poisoned".into())
        })? = Some(kept);
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        theta: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let stash = self.stash.lock().map_err(|_| {
            candle_core::Error::Msg("mlp: the kept activations are poisoned".into())
        })?;
        match &*stash {
            Some(Kept::F32(s)) => self.grads(s, x, theta, grad),
            Some(Kept::F64(s)) => self.grads(s, x, theta, grad),
            None => candle_core::bail!("mlp: backward before forward"),
        }
    }
}
