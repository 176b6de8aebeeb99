//! The optimizer's elementwise updates, in place and in one pass each on CPU tensors.
//!
//! Written as candle's ops, an AdamW step is about twenty passes over the weights, each a new
//! tensor (scaled copies, a square, a root, a quotient), and the EMA and the clip several more.
//! Here each update is one loop over the elements that writes its result over its first
//! tensor: the moments, the weights (a variable's storage, which every view of it shares, as
//! `Var::set` writes it), the average, the gradient. The loops run in the tensors' dtype, like
//! PyTorch's, and are compiled for the CPU's vector width. A tensor off the CPU, strided, or of
//! another dtype takes candle's ops instead ([`fits`]).

use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, InplaceOp3, Layout, Tensor};

/// One elementwise update of `dst` from up to two other tensors of its shape.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Update {
    /// dst ← β dst + (1 − β) a, or (1 − β) a² with `square`: Adam's moments.
    Moment { beta: f64, square: bool },
    /// θ ← θ (1 − lr·wd) − lr (m / bc₁) / (√(v / bc₂) + ε), from (m, v): AdamW's step.
    Adam {
        lr: f64,
        decay: f64,
        bc1: f64,
        bc2: f64,
        eps: f64,
    },
    /// dst ← β dst + (1 − β) a: an exponential moving average.
    Lerp { beta: f64 },
    /// dst ← s dst: a gradient's clip.
    Scale(f64),
}

/// The element types the loops run in.
trait Float:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    fn of(x: f64) -> Self;
    fn sqrt(self) -> Self;
}

impl Float for f32 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Float for f64 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

impl Update {
    /// The update over slices: `a` and `b` are the other tensors it reads (empty if none).
    #[inline(always)]
    fn run<T: Float>(self, dst: &mut [T], a: &[T], b: &[T]) {
        match self {
            Update::Moment { beta, square } => {
                let (keep, take) = (T::of(beta), T::of(1.0 - beta));
                if square {
                    for (m, &g) in dst.iter_mut().zip(a) {
                        *m = keep * *m + take * (g * g);
                    }
                } else {
                    for (m, &g) in dst.iter_mut().zip(a) {
                        *m = keep * *m + take * g;
                    }
                }
            }
            Update::Adam {
                lr,
                decay,
                bc1,
                bc2,
                eps,
            } => {
                let shrink = T::of(1.0 - lr * decay);
                let (lr, bc1, bc2, eps) = (T::of(lr), T::of(bc1), T::of(bc2), T::of(eps));
                for ((t, &m), &v) in dst.iter_mut().zip(a).zip(b) {
                    *t = *t * shrink - lr * ((m / bc1) / ((v / bc2).sqrt() + eps));
                }
            }
            Update::Lerp { beta } => {
                let (keep, take) = (T::of(beta), T::of(1.0 - beta));
                for (avg, &t) in dst.iter_mut().zip(a) {
                    *avg = keep * *avg + take * t;
                }
            }
            Update::Scale(s) => {
                let s = T::of(s);
                for g in dst.iter_mut() {
                    *g = *g * s;
                }
            }
        }
    }

    /// The update over CPU storages, f32 or f64 alike.
    fn storages(
        self,
        dst: &mut CpuStorage,
        ld: &Layout,
        args: &[(&CpuStorage, &Layout)],
    ) -> candle_core::Result<()> {
        fn range<'a, T>(v: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
            let (a, b) = l
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("in-place update: not contiguous".into()))?;
            Ok(&v[a..b])
        }
        let (from, to) = ld
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("in-place update: not contiguous".into()))?;
        macro_rules! typed {
            ($variant:ident, $v:expr) => {{
                let mut ins = Vec::with_capacity(args.len());
                for (s, l) in args {
                    match s {
                        CpuStorage::$variant(x) => ins.push(range(x, l)?),
                        _ => candle_core::bail!("in-place update: mixed dtypes"),
                    }
                }
                let (a, b) = match ins.as_slice() {
                    [] => (&[][..], &[][..]),
                    [a] => (*a, &[][..]),
                    [a, b, ..] => (*a, *b),
                };
                let dst = &mut $v[from..to];
                if ins.iter().any(|x| x.len() != dst.len()) {
                    candle_core::bail!("in-place update: shapes differ");
                }
                pulp::Arch::new().dispatch(Run { u: self, dst, a, b });
            }};
        }
        match dst {
            CpuStorage::F32(v) => typed!(F32, v),
            CpuStorage::F64(v) => typed!(F64, v),
            _ => candle_core::bail!("in-place update: f32 or f64 only"),
        }
        Ok(())
    }
}

/// [`Update::run`] for [`pulp::Arch::dispatch`]: the loop compiled for the CPU's widest
/// vectors (AVX2 or AVX-512), picked at run time. No operation is contracted, so every
/// machine computes the same values.
struct Run<'a, T> {
    u: Update,
    dst: &'a mut [T],
    a: &'a [T],
    b: &'a [T],
}

impl<T: Float> pulp::WithSimd for Run<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.u.run(self.dst, self.a, self.b);
    }
}

impl InplaceOp1 for Update {
    fn name(&self) -> &'static str {
        "optimizer-update"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        self.storages(s, l, &[])
    }
}

impl InplaceOp2 for Update {
    fn name(&self) -> &'static str {
        "optimizer-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        self.storages(s1, l1, &[(s2, l2)])
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "optimizer-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        self.storages(s1, l1, &[(s2, l2), (s3, l3)])
    }
}

/// Whether the in-place loops take these tensors: all on the CPU, contiguous, of one dtype,
/// f32 or f64, of one shape.
pub(crate) fn fits(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else {
        return false;
    };
    matches!(first.dtype(), DType::F32 | DType::F64)
        && ts.iter().all(|t| {
            matches!(t.device(), Device::Cpu)
                && t.is_contiguous()
                && t.dtype() == first.dtype()
                && t.dims() == first.dims()
        })
}

/// Σ x² over a tensor's elements, summed in f64 in eight fixed lanes (the same bytes on every
/// run); `None` for a tensor [`fits`] does not take.
pub(crate) fn sum_squares(t: &Tensor) -> Option<f64> {
    fn lanes<T: Copy + Into<f64>>(v: &[T]) -> f64 {
        let mut acc = [0.0f64; 8];
        let mut chunks = v.chunks_exact(8);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                let x: f64 = x.into();
                *a += x * x;
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&x| x.into() * x.into())
            .sum();
        acc.iter().sum::<f64>() + tail
    }
    if !fits(&[t]) {
        return None;
    }
    let (s, l) = t.storage_and_layout();
    let (a, b) = l.contiguous_offsets()?;
    match &*s {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => Some(lanes(&v[a..b])),
        candle_core::Storage::Cpu(CpuStorage::F64(v)) => Some(lanes(&v[a..b])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update's value from (dst, a, b), in f64.
    type Formula = Box<dyn Fn(f64, f64, f64) -> f64>;

    /// Each update against its formula in f64, on f32 and f64 tensors.
    #[test]
    fn updates_follow_their_formulas() -> candle_core::Result<()> {
        let n = 37;
        let vals = |k: f64| -> Vec<f64> { (0..n).map(|i| ((i as f64 + k) * 0.7).sin()).collect() };
        let (d0, a0, b0) = (
            vals(0.0),
            vals(1.0),
            vals(2.0).iter().map(|v| v * v).collect::<Vec<_>>(),
        );
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-15)] {
            let t = |v: &[f64]| Tensor::new(v, &Device::Cpu)?.to_dtype(dtype);
            let cases: [(Update, Formula); 5] = [
                (
                    Update::Moment {
                        beta: 0.9,
                        square: false,
                    },
                    Box::new(|d, a, _| 0.9 * d + 0.1 * a),
                ),
                (
                    Update::Moment {
                        beta: 0.999,
                        square: true,
                    },
                    Box::new(|d, a, _| 0.999 * d + 0.001 * a * a),
                ),
                (
                    Update::Adam {
                        lr: 0.01,
                        decay: 0.1,
                        bc1: 0.5,
                        bc2: 0.25,
                        eps: 1e-8,
                    },
                    Box::new(|d, a, b| {
                        d * (1.0 - 0.001) - 0.01 * (a / 0.5) / ((b / 0.25).sqrt() + 1e-8)
                    }),
                ),
                (
                    Update::Lerp { beta: 0.99 },
                    Box::new(|d, a, _| 0.99 * d + 0.01 * a),
                ),
                (Update::Scale(0.3), Box::new(|d, _, _| 0.3 * d)),
            ];
            for (u, want) in cases {
                let (dst, a, b) = (t(&d0)?, t(&a0)?, t(&b0)?);
                match u {
                    Update::Adam { .. } => dst.inplace_op3(&a, &b, &u)?,
                    Update::Scale(_) => dst.inplace_op1(&u)?,
                    _ => dst.inplace_op2(&a, &u)?,
                }
                let got = dst.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                for i in 0..n {
                    let w = want(d0[i], a0[i], b0[i]);
                    assert!(
                        (got[i] - w).abs() <= tol * (1.0 + w.abs()),
                        "{u:?} {dtype:?} [{i}]: {} vs {w}",
                        got[i]
                    );
                }
            }
            let s = sum_squares(&t(&a0)?).unwrap_or(f64::NAN);
            let want: f64 = a0.iter().map(|x| x * x).sum();
            assert!(
                (s - want).abs() <= tol * want,
                "Σx² {dtype:?}: {s} vs {want}"
            );
        }
        Ok(())
    }
}
