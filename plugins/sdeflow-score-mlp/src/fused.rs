//! Fused CPU kernels of the MLP: `SiLU(u + b)` forward, and its backward, in one pass each
//! over the activations, with a vectorisable exp.
//!
//! candle computes `u.broadcast_add(b)?.silu()` as two passes, the second calling the scalar
//! `expf` of the C library per element; its backward is several more ops. Here the forward is
//! one pass, `y = z / (1 + e^{−z})` with z = u + b, and the backward one pass,
//! `∂L/∂z = ∂L/∂y · s (1 + z (1 − s))` with s = 1/(1 + e^{−z}) (recomputed, not stored), then
//! ∂L/∂b = Σ_rows ∂L/∂z (a product with a row of ones). The exp is Cephes' (a range
//! reduction to |r| ≤ ½ ln 2 and a polynomial in f32, a Padé form in f64), written branch-free
//! in safe Rust so that the compiler vectorises it, for AVX2 and FMA, or AVX-512, where the CPU
//! has them (`pulp` picks at run time; the same code is compiled for each and no operation is
//! contracted, so every machine computes the same values). It is within a few ulp of the C
//! library's, and the tests hold the kernels and their gradients to candle's ops at 1e-6 (f32)
//! and 1e-14 (f64) relative. Rows are split over rayon's threads in fixed blocks: every element
//! is computed alone, so the elementwise results do not depend on the thread count. Anything
//! other than contiguous f32 or f64 on the CPU (a GPU, a strided view) falls back to candle's
//! ops.

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Device, InplaceOp2, Layout, Shape, Tensor,
};
use rayon::prelude::*;

/// Rows per rayon task.
const BLOCK_ROWS: usize = 64;

/// The element types the kernels run on.
trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ONE: Self;
    /// e^x.
    fn exp(x: Self) -> Self;
}

impl Real for f32 {
    const ONE: f32 = 1.0;

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        // Cephes expf: x = n ln 2 + r, |r| ≤ ½ ln 2, e^r by a degree-7 polynomial, 2^n by the
        // exponent bits. n is rounded by the 1.5·2^23 shift, so no libm call breaks the loop.
        const SHIFT: f32 = 12_582_912.0;
        let x = x.clamp(-87.336_54, 88.722_83);
        let t = x * std::f32::consts::LOG2_E + SHIFT;
        let n = t - SHIFT;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let p = 1.987_569_1e-4_f32;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 0.5;
        let e = p * r * r + r + 1.0;
        let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        // k ∈ [−126, 128] after the clamp; 2^128 is out of range, so scale in two halves.
        let half = k >> 1;
        let a = f32::from_bits(((half + 127) as u32) << 23);
        let b = f32::from_bits(((k - half + 127) as u32) << 23);
        e * a * b
    }
}

impl Real for f64 {
    const ONE: f64 = 1.0;

    #[inline(always)]
    fn exp(x: f64) -> f64 {
        // Cephes exp: x = n ln 2 + r, e^r = 1 + 2 r P(r²) / (Q(r²) − r P(r²)).
        const SHIFT: f64 = 6_755_399_441_055_744.0;
        let x = x.clamp(-708.396_418_532_264, 709.782_712_893_384);
        let t = x * std::f64::consts::LOG2_E + SHIFT;
        let n = t - SHIFT;
        let r = x - n * 6.931_457_519_531_25e-1 - n * 1.428_606_820_309_417_2e-6;
        let rr = r * r;
        let p = ((1.261_771_930_748_105_9e-4 * rr + 3.029_944_077_074_419_6e-2) * rr + 1.0) * r;
        let q = ((3.001_985_051_386_644_5e-6 * rr + 2.524_483_403_496_841e-3) * rr
            + 2.272_655_482_081_550_3e-1)
            * rr
            + 2.0;
        let e = 1.0 + 2.0 * p / (q - p);
        let k = (t.to_bits() as i64).wrapping_sub(0x4338_0000_0000_0000);
        let half = k >> 1;
        let a = f64::from_bits(((half + 1023) as u64) << 52);
        let b = f64::from_bits(((k - half + 1023) as u64) << 52);
        e * a * b
    }
}

/// The bias of row `r` of block `k`: `b` itself, or its row when it holds one per row.
#[inline(always)]
fn bias_row<T>(b: &[T], h: usize, per_row: bool, k: usize, r: usize) -> &[T] {
    if per_row {
        let at = (k * BLOCK_ROWS + r) * h;
        &b[at..at + h]
    } else {
        b
    }
}

/// One block of rows, in place: y ← SiLU(y + b). A [`pulp::WithSimd`] with everything inlined,
/// so that [`pulp::Arch::dispatch`] compiles the loop for the CPU's widest instruction set.
struct SiluBlock<'a, T> {
    y: &'a mut [T],
    b: &'a [T],
    h: usize,
    per_row: bool,
    k: usize,
}

impl<T: Real> pulp::WithSimd for SiluBlock<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            y,
            b,
            h,
            per_row,
            k,
        } = self;
        for (r, y) in y.chunks_exact_mut(h).enumerate() {
            let b = bias_row(b, h, per_row, k, r);
            for (y, &b) in y.iter_mut().zip(b) {
                let z = *y + b;
                *y = z / (T::ONE + T::exp(-z));
            }
        }
    }
}

/// One block of rows, in place: g ← g · s (1 + z (1 − s)), s = σ(z), z = u + b.
struct SiluGradBlock<'a, T> {
    g: &'a mut [T],
    u: &'a [T],
    b: &'a [T],
    h: usize,
    per_row: bool,
    k: usize,
}

impl<T: Real> pulp::WithSimd for SiluGradBlock<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            g,
            u,
            b,
            h,
            per_row,
            k,
        } = self;
        for (r, (g, u)) in g.chunks_exact_mut(h).zip(u.chunks_exact(h)).enumerate() {
            let b = bias_row(b, h, per_row, k, r);
            for ((g, &u), &b) in g.iter_mut().zip(u).zip(b) {
                let z = u + b;
                let s = T::ONE / (T::ONE + T::exp(-z));
                *g = *g * (s * (T::ONE + z * (T::ONE - s)));
            }
        }
    }
}

/// y ← SiLU(y + b) row by row: `y` holds rows of `h`; `b` one row of `h`, or one per row.
fn silu_rows<T: Real>(y: &mut [T], b: &[T], h: usize) {
    let (per_row, arch) = (b.len() != h, pulp::Arch::new());
    y.par_chunks_mut(BLOCK_ROWS * h)
        .enumerate()
        .for_each(|(k, y)| {
            arch.dispatch(SiluBlock {
                y,
                b,
                h,
                per_row,
                k,
            })
        });
}

/// g ← ∂L/∂z = g · s (1 + z (1 − s)), z = u + b, row by row (`b` as in [`silu_rows`]).
fn silu_grad_rows<T: Real>(g: &mut [T], u: &[T], b: &[T], h: usize) {
    let (per_row, arch) = (b.len() != h, pulp::Arch::new());
    g.par_chunks_mut(BLOCK_ROWS * h)
        .zip(u.par_chunks(BLOCK_ROWS * h))
        .enumerate()
        .for_each(|(k, (g, u))| {
            arch.dispatch(SiluGradBlock {
                g,
                u,
                b,
                h,
                per_row,
                k,
            })
        });
}

/// A contiguous slice of `s` under `l`, or an error naming `what`.
fn slice<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(candle_core::Error::Msg(format!(
            "fused silu: {what} is not contiguous"
        ))),
    }
}

/// `SiLU(u + b)` for u `[n, h]` and b `[h]`, `[1, h]` or `[n, h]`.
struct BiasSilu;

impl CustomOp2 for BiasSilu {
    fn name(&self) -> &'static str {
        "bias-silu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = l1.dims()[1];
        let out = match (s1, s2) {
            (CpuStorage::F32(u), CpuStorage::F32(b)) => {
                let mut y = slice(u, l1, "u")?.to_vec();
                silu_rows(&mut y, slice(b, l2, "b")?, h);
                CpuStorage::F32(y)
            }
            (CpuStorage::F64(u), CpuStorage::F64(b)) => {
                let mut y = slice(u, l1, "u")?.to_vec();
                silu_rows(&mut y, slice(b, l2, "b")?, h);
                CpuStorage::F64(y)
            }
            _ => candle_core::bail!("fused silu: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        u: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dz = u.apply_op3_no_bwd(b, &grad, &SiluGrad)?;
        // The bias's gradient in its own shape: summed over the rows it was broadcast to, as
        // a product with a row of ones (gemm's vectorised kernels: candle's sum over dim 0
        // indexes each element alone, and took 18% of a training step).
        let db = if b.dims() == dz.dims() {
            dz.clone()
        } else {
            let ones = Tensor::ones((1, dz.dim(0)?), dz.dtype(), dz.device())?;
            ones.matmul(&dz)?.reshape(b.shape())?
        };
        Ok((Some(dz), Some(db)))
    }
}

/// ∂L/∂z of `SiLU(z)`, z = u + b, from (u, b, ∂L/∂y).
struct SiluGrad;

impl CustomOp3 for SiluGrad {
    fn name(&self) -> &'static str {
        "bias-silu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = l1.dims()[1];
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(u), CpuStorage::F32(b), CpuStorage::F32(g)) => {
                let mut dz = slice(g, l3, "the gradient")?.to_vec();
                silu_grad_rows(&mut dz, slice(u, l1, "u")?, slice(b, l2, "b")?, h);
                CpuStorage::F32(dz)
            }
            (CpuStorage::F64(u), CpuStorage::F64(b), CpuStorage::F64(g)) => {
                let mut dz = slice(g, l3, "the gradient")?.to_vec();
                silu_grad_rows(&mut dz, slice(u, l1, "u")?, slice(b, l2, "b")?, h);
                CpuStorage::F64(dz)
            }
            _ => candle_core::bail!("fused silu: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `SiLU(u + b)` written over u: for a u that no graph records (sampling, a frozen model),
/// whose buffer nothing else reads.
struct BiasSiluInPlace;

impl InplaceOp2 for BiasSiluInPlace {
    fn name(&self) -> &'static str {
        "bias-silu-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let h = l1.dims()[1];
        let Some((from, to)) = l1.contiguous_offsets() else {
            candle_core::bail!("fused silu: u is not contiguous")
        };
        match (s1, s2) {
            (CpuStorage::F32(u), CpuStorage::F32(b)) => {
                silu_rows(&mut u[from..to], slice(b, l2, "b")?, h)
            }
            (CpuStorage::F64(u), CpuStorage::F64(b)) => {
                silu_rows(&mut u[from..to], slice(b, l2, "b")?, h)
            }
            _ => candle_core::bail!("fused silu: f32 or f64 only"),
        }
        Ok(())
    }
}

/// Whether the fused kernels take (u, b): contiguous f32 or f64 on the CPU, u `[n, h]` with
/// h ≥ 1, b `[h]`, `[1, h]` or `[n, h]`.
fn fusable(u: &Tensor, b: &Tensor) -> candle_core::Result<bool> {
    let shape_ok = u.rank() == 2
        && u.dim(1)? > 0
        && (b.dims() == [u.dim(1)?]
            || (b.rank() == 2
                && b.dim(1)? == u.dim(1)?
                && (b.dim(0)? == 1 || b.dim(0)? == u.dim(0)?)));
    Ok(shape_ok
        && matches!(u.device(), Device::Cpu)
        && matches!(u.dtype(), DType::F32 | DType::F64)
        && u.dtype() == b.dtype()
        && u.is_contiguous()
        && b.is_contiguous())
}

/// `SiLU(u + b)` for u `[n, h]` and b `[h]`, `[1, h]` or `[n, h]`: the fused kernel on
/// contiguous f32 or f64 CPU tensors, candle's ops elsewhere. u is left as it is.
pub fn bias_silu(u: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if fusable(u, b)? {
        u.apply_op2(b, BiasSilu)
    } else {
        u.broadcast_add(b)?.silu()
    }
}

/// [`bias_silu`] of a `u` whose buffer no other tensor shares (a matmul's fresh output): when
/// no graph records u or b (sampling, a frozen model), the result is written over u's buffer,
/// which saves a layer-sized allocation and a pass over memory.
pub(crate) fn bias_silu_over(u: Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if fusable(&u, b)? && !u.track_op() && !b.track_op() {
        u.inplace_op2(b, &BiasSiluInPlace)?;
        Ok(u)
    } else {
        bias_silu(&u, b)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use sdeflow_kernel::testing::normals;

    use super::*;

    /// |got − want| ≤ tol · scale entry by entry, scale = |want| + `floor` (a tensor of the
    /// same shape, or none).
    fn close(got: &Tensor, want: &Tensor, floor: Option<&Tensor>, tol: f64, what: &str) {
        let v = |t: &Tensor| {
            let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            t.to_vec1::<f64>().unwrap()
        };
        let (g, w) = (v(got), v(want));
        let f = floor.map_or(vec![0.0; w.len()], v);
        assert_eq!(g.len(), w.len(), "{what}: length");
        for (i, ((g, w), f)) in g.iter().zip(&w).zip(&f).enumerate() {
            assert!(
                (g - w).abs() <= tol * (w.abs() + f),
                "{what}[{i}]: {g:e} vs {w:e}"
            );
        }
    }

    /// Forward and both gradients against candle's `broadcast_add` + `silu`, for each bias
    /// shape, in f32 (1e-6 relative) and f64 (1e-14), on rows spanning ±40 and a row count
    /// that leaves a partial block; a gradient's tolerance is relative to its magnitude plus
    /// the rounding that both implementations share.
    #[test]
    fn matches_candles_ops_forward_and_backward() -> candle_core::Result<()> {
        let (n, h) = (200, 37);
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-14)] {
            let u0 = (normals(1, n, h).unwrap() * 10.0)?.to_dtype(dtype)?;
            let w = normals(2, n, h).unwrap().to_dtype(dtype)?;
            for rows in [None, Some(1), Some(n)] {
                let b0 = match rows {
                    None => normals(3, 1, h).unwrap().reshape(h)?,
                    Some(r) => normals(3, r, h).unwrap(),
                };
                let b0 = (b0 * 3.0)?.to_dtype(dtype)?;
                let what = format!("{dtype:?}, bias {:?}", b0.dims());
                let (u, b) = (Var::from_tensor(&u0)?, Var::from_tensor(&b0)?);
                let got = bias_silu(u.as_tensor(), b.as_tensor())?;
                let grads = (&got * &w)?.sum_all()?.backward()?;
                let (gu, gb) = (grads.get(&u).unwrap(), grads.get(&b).unwrap());
                let (u, b) = (Var::from_tensor(&u0)?, Var::from_tensor(&b0)?);
                let want = u.as_tensor().broadcast_add(b.as_tensor())?.silu()?;
                let grads = (&want * &w)?.sum_all()?.backward()?;
                let (wu, wb) = (grads.get(&u).unwrap(), grads.get(&b).unwrap());
                close(&got, &want, None, tol, &format!("{what}: y"));
                let over = bias_silu_over(u0.copy()?, &b0)?;
                close(&over, &want, None, tol, &format!("{what}: y in place"));
                // ∂L/∂z = g s (1 + z (1 − s)) rounds 1 + z (1 − s) to about ε (1 + |z|) in
                // either implementation, which is all of it where that factor crosses zero.
                let z = u0.broadcast_add(&b0)?;
                let floor = (w.abs()? * (z.abs()? + 1.0)?)?;
                close(gu, wu, Some(&floor), tol, &format!("{what}: ∂u"));
                assert_eq!(gb.dims(), b0.dims(), "{what}: ∂b's shape");
                // ∂b sums n rows of terms of both signs: relative to the sum of magnitudes.
                let scale = (wu.abs()?.sum(0)?.max_keepdim(0)?.to_dtype(DType::F64)?)
                    .flatten_all()?
                    .to_vec1::<f64>()?[0];
                let diff = (gb.to_dtype(DType::F64)? - wb.to_dtype(DType::F64)?)?
                    .abs()?
                    .max_keepdim(0)?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f64>()?;
                assert!(
                    diff <= tol * scale,
                    "{what}: ∂b off by {diff:e} (scale {scale:e})"
                );
            }
        }
        Ok(())
    }

    /// The kernel's exp against the C library's over the whole range, in ulp-relative terms.
    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst32: f64 = 0.0;
        let mut worst64: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * f64::from(i) / 200_000.0;
            let (got, want) = (<f32 as Real>::exp(x as f32), (x as f32).exp());
            worst32 = worst32.max(f64::from((got - want).abs() / want));
            let x = -700.0 + 1_400.0 * f64::from(i) / 200_000.0;
            let (got, want) = (<f64 as Real>::exp(x), x.exp());
            worst64 = worst64.max((got - want).abs() / want);
        }
        assert!(worst32 < 4.0 * f64::from(f32::EPSILON), "f32: {worst32:e}");
        assert!(worst64 < 4.0 * f64::EPSILON, "f64: {worst64:e}");
        // Beyond the range: 0 and the largest finite scale, never NaN.
        assert_eq!(<f32 as Real>::exp(-1e4), (-87.336_54f32).exp());
        assert!(<f32 as Real>::exp(1e4).is_finite());
        assert!(<f64 as Real>::exp(-1e6) >= 0.0 && <f64 as Real>::exp(1e6).is_finite());
    }
}
