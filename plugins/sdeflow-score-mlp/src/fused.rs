//! The MLP's elementwise CPU kernels: `SiLU(u + b)` forward and its backward, one pass each
//! over a block of rows, with a vectorisable exp.
//!
//! candle computes `u.broadcast_add(b)?.silu()` as two passes, the second calling the scalar
//! `expf` of the C library per element; its backward is several more ops. Here the forward is
//! one pass, `y = z / (1 + e^{−z})` with z = u + b, and the backward one pass,
//! `∂L/∂z = ∂L/∂y · (s + y (1 − s))` = ∂L/∂y · s (1 + z (1 − s)), s = 1/(1 + e^{−z}) kept by
//! a recorded forward (in place of u), so the backward has no exp. The
//! exp is Cephes' (a range reduction to |r| ≤ ½ ln 2 and a polynomial in f32, a Padé form in
//! f64), written branch-free in safe Rust so that the compiler vectorises it, for AVX2 and FMA,
//! or AVX-512, where the CPU has them (`pulp` picks at run time; the same code is compiled for
//! each, its multiply-adds fused and nothing else contracted, so every machine computes the
//! same values: a CPU without FMA takes the C library's exactly rounded `fma`). It is
//! within a few ulp of the C library's (tested here); the network built on these kernels
//! ([`crate::cpu`]) is held to candle's ops in its tests. Each kernel works on the rows it is
//! given, on the calling thread: the caller splits rows over threads, and every element is
//! computed alone, so the results do not depend on the split.

/// The element types the kernels run on.
pub(crate) trait Real:
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
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// The value of an f64, rounded.
    fn of(x: f64) -> Self;
    /// e^x.
    fn exp(x: Self) -> Self;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;

    fn of(x: f64) -> f32 {
        x as f32
    }

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        // Cephes expf: x = n ln 2 + r, |r| ≤ ½ ln 2, e^r by a degree-7 polynomial, 2^n by the
        // exponent bits. n is rounded by the 1.5·2^23 shift, so no libm call breaks the loop.
        // Each a·b + c is one fused multiply-add: exactly rounded wherever it runs.
        const SHIFT: f32 = 12_582_912.0;
        let x = x.clamp(-87.336_54, 88.722_83);
        let t = x.mul_add(std::f32::consts::LOG2_E, SHIFT);
        let n = t - SHIFT;
        let r = (-n).mul_add(-2.121_944_4e-4, (-n).mul_add(0.693_359_4, x));
        let p = 1.987_569_1e-4_f32;
        let p = p.mul_add(r, 1.398_199_9e-3);
        let p = p.mul_add(r, 8.333_452e-3);
        let p = p.mul_add(r, 4.166_579_6e-2);
        let p = p.mul_add(r, 1.666_666_5e-1);
        let p = p.mul_add(r, 0.5);
        let e = (p * r).mul_add(r, r) + 1.0;
        let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        // k ∈ [−126, 128] after the clamp; 2^128 is out of range, so scale in two halves.
        let half = k >> 1;
        let a = f32::from_bits(((half + 127) as u32) << 23);
        let b = f32::from_bits(((k - half + 127) as u32) << 23);
        e * a * b
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;

    fn of(x: f64) -> f64 {
        x
    }

    #[inline(always)]
    fn exp(x: f64) -> f64 {
        // Cephes exp: x = n ln 2 + r, e^r = 1 + 2 r P(r²) / (Q(r²) − r P(r²)), with fused
        // multiply-adds as in f32.
        const SHIFT: f64 = 6_755_399_441_055_744.0;
        let x = x.clamp(-708.396_418_532_264, 709.782_712_893_384);
        let t = x.mul_add(std::f64::consts::LOG2_E, SHIFT);
        let n = t - SHIFT;
        let r = (-n).mul_add(
            1.428_606_820_309_417_2e-6,
            (-n).mul_add(6.931_457_519_531_25e-1, x),
        );
        let rr = r * r;
        let p = 1.261_771_930_748_105_9e-4f64
            .mul_add(rr, 3.029_944_077_074_419_6e-2)
            .mul_add(rr, 1.0)
            * r;
        let q = 3.001_985_051_386_644_5e-6f64
            .mul_add(rr, 2.524_483_403_496_841e-3)
            .mul_add(rr, 2.272_655_482_081_550_3e-1)
            .mul_add(rr, 2.0);
        let e = 1.0 + 2.0 * p / (q - p);
        let k = (t.to_bits() as i64).wrapping_sub(0x4338_0000_0000_0000);
        let half = k >> 1;
        let a = f64::from_bits(((half + 1023) as u64) << 52);
        let b = f64::from_bits(((k - half + 1023) as u64) << 52);
        e * a * b
    }
}

/// y ← SiLU(y + b), row by row (`b` one row). A [`pulp::WithSimd`] with everything inlined,
/// so that [`pulp::Arch::dispatch`] compiles the loop for the CPU's widest instruction set.
struct SiluInPlace<'a, T> {
    y: &'a mut [T],
    b: &'a [T],
}

impl<T: Real> pulp::WithSimd for SiluInPlace<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for y in self.y.chunks_exact_mut(self.b.len()) {
            for (y, &b) in y.iter_mut().zip(self.b) {
                let z = *y + b;
                *y = z / (T::ONE + T::exp(-z));
            }
        }
    }
}

/// With z = u + b and s = σ(z): h ← z s, and u ← s, row by row: the forward of a recorded
/// layer, which keeps s for the backward.
struct SiluKeep<'a, T> {
    u: &'a mut [T],
    b: &'a [T],
    h: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for SiluKeep<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let w = self.b.len();
        for (h, u) in self.h.chunks_exact_mut(w).zip(self.u.chunks_exact_mut(w)) {
            for ((h, u), &b) in h.iter_mut().zip(u).zip(self.b) {
                let z = *u + b;
                let s = T::ONE / (T::ONE + T::exp(-z));
                *h = z * s;
                *u = s;
            }
        }
    }
}

/// g ← g · (s + h (1 − s)), from the kept s = σ(z) and h = z s: SiLU'(z) = s (1 + z (1 − s)),
/// with no exp.
struct SiluGradKept<'a, T> {
    g: &'a mut [T],
    s: &'a [T],
    h: &'a [T],
}

impl<T: Real> pulp::WithSimd for SiluGradKept<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for ((g, &s), &h) in self.g.iter_mut().zip(self.s).zip(self.h) {
            *g = *g * (s + h * (T::ONE - s));
        }
    }
}

/// y ← SiLU(y + b) for the rows of `y` (each `b.len()` long).
pub(crate) fn silu_in_place<T: Real>(y: &mut [T], b: &[T]) {
    pulp::Arch::new().dispatch(SiluInPlace { y, b });
}

/// h ← SiLU(u + b) and u ← σ(u + b) for the rows of `u` (each `b.len()` long).
pub(crate) fn silu_keep<T: Real>(u: &mut [T], b: &[T], h: &mut [T]) {
    pulp::Arch::new().dispatch(SiluKeep { u, b, h });
}

/// g ← ∂L/∂z = g · (s + h (1 − s)) from the s and h [`silu_keep`] kept.
pub(crate) fn silu_grad_kept<T: Real>(g: &mut [T], s: &[T], h: &[T]) {
    pulp::Arch::new().dispatch(SiluGradKept { g, s, h });
}

/// [sin(c ω_k)] then [cos(c ω_k)] into `out` (2 · `freqs` long), in f64 rounded to T: the
/// sinusoidal embedding of one level. Cephes' polynomials on |r| ≤ π/4 after r = x − q π/2
/// (π/2 in three parts, exact for |q| < 2²⁶), the quadrant q picked branch-free, so the loop
/// vectorises; within 2 ulp of the C library's `sin_cos` (tested). A level beyond ±10⁶ takes
/// the C library's.
pub(crate) fn sin_cos_into<T: Real>(c: f64, freqs: &[f64], out: &mut [T]) {
    let (sin, cos) = out.split_at_mut(freqs.len());
    if c.abs() > 1e6 {
        for ((s, co), w) in sin.iter_mut().zip(cos).zip(freqs) {
            let (a, b) = (c * w).sin_cos();
            *s = T::of(a);
            *co = T::of(b);
        }
        return;
    }
    pulp::Arch::new().dispatch(SinCos { c, freqs, sin, cos });
}

/// The loop of [`sin_cos_into`], for [`pulp::Arch::dispatch`].
struct SinCos<'a, T> {
    c: f64,
    freqs: &'a [f64],
    sin: &'a mut [T],
    cos: &'a mut [T],
}

impl<T: Real> pulp::WithSimd for SinCos<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        const SHIFT: f64 = 6_755_399_441_055_744.0;
        const PIO2: [f64; 3] = [
            1.570_796_251_296_997,
            7.549_789_415_861_596e-8,
            5.390_302_858_158_119e-15,
        ];
        for ((s, co), &w) in self.sin.iter_mut().zip(self.cos.iter_mut()).zip(self.freqs) {
            let x = self.c * w;
            let t = x * std::f64::consts::FRAC_2_PI + SHIFT;
            let q = t - SHIFT;
            let r = ((x - q * PIO2[0]) - q * PIO2[1]) - q * PIO2[2];
            let z = r * r;
            let ps = ((((1.589_623_015_765_465_7e-10 * z - 2.505_074_776_285_780_7e-8) * z
                + 2.755_731_362_138_572_5e-6)
                * z
                - 1.984_126_982_958_954e-4)
                * z
                + 8.333_333_333_322_118e-3)
                * z
                - 1.666_666_666_666_663e-1;
            let sr = r + r * z * ps;
            let pc = ((((-1.135_853_652_138_768_2e-11 * z + 2.087_570_084_197_473e-9) * z
                - 2.755_731_417_929_674e-7)
                * z
                + 2.480_158_728_885_170_5e-5)
                * z
                - 1.388_888_888_887_305_6e-3)
                * z
                + 4.166_666_666_666_659_3e-2;
            let cr = 1.0 - 0.5 * z + z * z * pc;
            // Quadrant q mod 4: (sin, cos) = (s, c), (c, −s), (−s, −c), (−c, s).
            let k = t.to_bits();
            let odd = (k & 1).wrapping_neg();
            let (sb, cb) = (sr.to_bits(), cr.to_bits());
            let sin = (sb & !odd) | (cb & odd);
            let cos = (cb & !odd) | (sb & odd);
            let sin_sign = (k & 2) << 62;
            let cos_sign = (k.wrapping_add(1) & 2) << 62;
            *s = T::of(f64::from_bits(sin ^ sin_sign));
            *co = T::of(f64::from_bits(cos ^ cos_sign));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three kernels against the formulas in f64 with the C library's exp, in f32
    /// (1e-6 relative) and f64 (1e-14), on z spanning ±40; the gradient's tolerance adds the
    /// rounding of 1 + z (1 − s), about ε (1 + |z|), which both sides share.
    #[test]
    fn kernels_match_the_formulas() {
        fn check<T: Real + Into<f64>>(tol: f64) {
            let h = 7;
            let u: Vec<f64> = (0..h * 13)
                .map(|i| (i as f64 * 0.731).sin() * 40.0)
                .collect();
            let b: Vec<f64> = (0..h).map(|j| j as f64 * 0.3 - 1.0).collect();
            let g: Vec<f64> = (0..h * 13).map(|i| (i as f64 * 1.37).cos()).collect();
            let (ut, bt, gt): (Vec<T>, Vec<T>, Vec<T>) = (
                u.iter().map(|&x| T::of(x)).collect(),
                b.iter().map(|&x| T::of(x)).collect(),
                g.iter().map(|&x| T::of(x)).collect(),
            );
            let mut y = ut.clone();
            silu_in_place(&mut y, &bt);
            let (mut s, mut hk) = (ut.clone(), vec![T::ZERO; ut.len()]);
            silu_keep(&mut s, &bt, &mut hk);
            let mut dz = gt.clone();
            silu_grad_kept(&mut dz, &s, &hk);
            for i in 0..u.len() {
                // z as the kernel rounds it: e^{−z} carries z's rounding times |z|.
                let z: f64 = (ut[i] + bt[i % h]).into();
                let sig = 1.0 / (1.0 + (-z).exp());
                let want = z * sig;
                for (got, what) in [(y[i].into(), "in place"), (hk[i].into(), "kept")] {
                    let got: f64 = got;
                    assert!(
                        (got - want).abs() <= tol * want.abs(),
                        "y[{i}] {what}: {got:e} vs {want:e}"
                    );
                }
                let got: f64 = s[i].into();
                assert!((got - sig).abs() <= tol * sig, "s[{i}]: {got:e} vs {sig:e}");
                let gi: f64 = gt[i].into();
                let want = gi * sig * (1.0 + z * (1.0 - sig));
                let got: f64 = dz[i].into();
                let floor = gi.abs() * (1.0 + z.abs());
                assert!(
                    (got - want).abs() <= tol * (want.abs() + floor),
                    "dz[{i}]: {got:e} vs {want:e}"
                );
            }
        }
        check::<f32>(1e-6);
        check::<f64>(1e-14);
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

    /// The embedding's sin and cos against the C library's, over levels to ±10⁴ and the
    /// frequencies of E = 128 and P = 10⁴: within 2 ulp of 1, and exactly the C library's
    /// beyond ±10⁶.
    #[test]
    fn sin_cos_is_within_two_ulp_of_libm() {
        let freqs: Vec<f64> = (0..64)
            .map(|k| (-(1e4f64).ln() * k as f64 / 64.0).exp())
            .collect();
        let mut worst: f64 = 0.0;
        let mut out = vec![0.0f64; 128];
        for i in 0..=20_000 {
            let c = -1e4 + 2e4 * f64::from(i) / 20_000.0 + 1e-3;
            sin_cos_into(c, &freqs, &mut out);
            for (k, w) in freqs.iter().enumerate() {
                let (s, co) = (c * w).sin_cos();
                worst = worst.max((out[k] - s).abs()).max((out[64 + k] - co).abs());
            }
        }
        assert!(worst <= 2.0 * f64::EPSILON, "worst {worst:e}");
        sin_cos_into(3e7, &freqs, &mut out);
        assert_eq!(out[5], (3e7 * freqs[5]).sin());
    }
}
