//! [`TimeCoefs`]: everything a conversion, a model or a solver needs to know about one time.

/// The coefficients of a linear forward SDE at one time `t` (MATH.md §1):
/// `x_t = α x₀ + σ ε`, `dx = f x dt + g dw`, `λ = log(α/σ)`.
///
/// The kernel computes them once per evaluation time from the [`ForwardSde`](crate::ForwardSde)
/// and hands them to whoever needs time; nothing outside the SDE plugin evaluates α(t) itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeCoefs {
    /// The time.
    pub t: f64,
    /// The signal scale α(t).
    pub alpha: f64,
    /// The noise scale σ(t).
    pub sigma: f64,
    /// The drift coefficient f(t) = d log α / dt.
    pub f: f64,
    /// The squared diffusion g(t)² = dσ²/dt − 2 f σ².
    pub g2: f64,
    /// The half log-SNR λ(t) = log(α/σ).
    pub lambda: f64,
}

impl TimeCoefs {
    /// The "VE-equivalent" noise level σ̃ = σ/α = e^{−λ}.
    pub fn sigma_tilde(&self) -> f64 {
        self.sigma / self.alpha
    }

    /// The signal-to-noise ratio α²/σ².
    pub fn snr(&self) -> f64 {
        (2.0 * self.lambda).exp()
    }

    /// dα/dt = f α (MATH.md §3).
    pub fn d_alpha(&self) -> f64 {
        self.f * self.alpha
    }

    /// dσ/dt = (g² + 2 f σ²) / (2σ) (MATH.md §3).
    pub fn d_sigma(&self) -> f64 {
        (self.g2 + 2.0 * self.f * self.sigma * self.sigma) / (2.0 * self.sigma)
    }

    /// The PF-ODE drift coefficients: `F = f x − ½ g² ŝ` returned as `(f, ½ g²)`.
    pub fn ode_coefs(&self) -> (f64, f64) {
        (self.f, 0.5 * self.g2)
    }
}

/// The forward transition from s to t > s of a linear SDE (MATH.md §5):
/// `x_t | x_s ~ N(α_{t|s} x_s, σ²_{t|s} I)` with `α_{t|s} = α_t/α_s` and
/// `σ²_{t|s} = σ_t² − α_{t|s}² σ_s²`, which DDPM, DDIM(η) and reverse diffusion step through.
///
/// Since `α_{t|s}² σ_s² = σ_t² e^{−2h}` with `h = λ_s − λ_t`, the variance is computed as
/// `σ²_{t|s} = −σ_t² expm1(−2h)`: nothing cancels when s ≈ t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// `h = λ_s − λ_t`, positive when s is nearer the data.
    pub h: f64,
    /// `α_{t|s} = α_t/α_s`.
    pub alpha: f64,
    /// `σ²_{t|s}/σ_t² = 1 − e^{−2h}`, in [0, 1] for h ≥ 0.
    pub var_rel: f64,
    /// `σ²_{t|s}`.
    pub var: f64,
}

impl Transition {
    /// The transition between the noisier time `t` and the cleaner time `s` (t > s).
    pub fn between(t: &TimeCoefs, s: &TimeCoefs) -> Self {
        let h = s.lambda - t.lambda;
        let var_rel = -(-2.0 * h).exp_m1();
        Self {
            h,
            alpha: t.alpha / s.alpha,
            var_rel,
            var: t.sigma * t.sigma * var_rel,
        }
    }

    /// The transition of a step from `t` toward the data at `s`, or an error naming `plugin`'s
    /// grid when the step goes the other way (λ_s < λ_t) or λ is not finite at its ends.
    pub fn toward_data(plugin: &str, t: &TimeCoefs, s: &TimeCoefs) -> crate::Result<Self> {
        let tr = Self::between(t, s);
        if tr.h.is_nan() || tr.h < 0.0 {
            return Err(crate::Error::invalid(
                plugin,
                "grid",
                format!(
                    "the step t = {:e} → s = {:e} must go toward the data (λ_s ≥ λ_t); h = {:e}",
                    t.t, s.t, tr.h
                ),
            ));
        }
        Ok(tr)
    }

    /// `σ_{t|s}`.
    pub fn std(&self) -> f64 {
        self.var.sqrt()
    }
}

/// One value for a whole model call, or one per row of its batch (MATH.md §9): sampling
/// evaluates every row at one time, training draws a time per row.
///
/// Per-row values are shared, so cloning and [`narrow`](Self::narrow)ing are cheap.
#[derive(Debug, Clone, PartialEq)]
pub enum PerRow<T> {
    /// One value for every row.
    Call(T),
    /// One value per row.
    Rows(Rows<T>),
}

/// The time coefficients of a model call: per call or per row.
pub type Time = PerRow<TimeCoefs>;

/// Values, one per row: a window `start..start + len` of a shared slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows<T> {
    all: std::sync::Arc<[T]>,
    start: usize,
    len: usize,
}

impl<T> Rows<T> {
    /// One value per row.
    pub fn new(values: Vec<T>) -> Self {
        let len = values.len();
        Self {
            all: values.into(),
            start: 0,
            len,
        }
    }

    /// The values, row by row.
    pub fn values(&self) -> &[T] {
        &self.all[self.start..self.start + self.len]
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Rows<TimeCoefs> {
    /// The coefficients of `sde` at each row's time.
    pub fn at(sde: &dyn crate::ForwardSde, ts: &[f64]) -> Self {
        Self::new(ts.iter().map(|&t| sde.coefs(t)).collect())
    }
}

impl<T: Clone> PerRow<T> {
    /// The number of rows it is for: `None` for one value per call.
    pub fn rows(&self) -> Option<usize> {
        match self {
            Self::Call(_) => None,
            Self::Rows(r) => Some(r.len),
        }
    }

    /// `f` of each value: per call stays per call.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> PerRow<U> {
        match self {
            Self::Call(v) => PerRow::Call(f(v)),
            Self::Rows(r) => PerRow::Rows(Rows::new(r.values().iter().map(f).collect())),
        }
    }

    /// Rows `start..start + len` (a per-call value is every row's).
    pub fn narrow(&self, start: usize, len: usize) -> crate::Result<Self> {
        match self {
            Self::Call(_) => Ok(self.clone()),
            Self::Rows(r) if start + len <= r.len => Ok(Self::Rows(Rows {
                all: r.all.clone(),
                start: r.start + start,
                len,
            })),
            Self::Rows(r) => Err(crate::Error::Shape(format!(
                "rows {start}..{} of {} per-row values",
                start + len,
                r.len
            ))),
        }
    }

    /// `pad` more rows repeating the last (padding rows' outputs are dropped; they need only
    /// be finite).
    pub fn padded(&self, pad: usize) -> Self {
        match self {
            Self::Call(_) => self.clone(),
            Self::Rows(r) => {
                let v = r.values();
                let mut all = v.to_vec();
                if let Some(last) = v.last() {
                    all.extend(std::iter::repeat_n(last.clone(), pad));
                }
                Self::Rows(Rows::new(all))
            }
        }
    }

    /// Checks that per-row values are for `n` rows, naming `what` otherwise.
    pub fn expect_rows(&self, n: usize, what: &str) -> crate::Result<()> {
        match self.rows() {
            Some(m) if m != n => Err(crate::Error::Shape(format!(
                "{what}: {m} per-row times for a batch of {n} rows"
            ))),
            _ => Ok(()),
        }
    }
}

impl PerRow<f64> {
    /// The per-row values as a column `[n, 1, …, 1]` of rank `rank` (to broadcast over each
    /// sample's dimensions) in `dtype` on `device`; `None` for a per-call value.
    pub fn column(
        &self,
        rank: usize,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> crate::Result<Option<candle_core::Tensor>> {
        let Self::Rows(r) = self else {
            return Ok(None);
        };
        let mut shape = vec![1; rank.max(1)];
        shape[0] = r.len;
        let col = candle_core::Tensor::from_slice(r.values(), r.len, device)?
            .to_dtype(dtype)?
            .reshape(shape)?;
        Ok(Some(col))
    }
}

impl From<TimeCoefs> for Time {
    fn from(c: TimeCoefs) -> Self {
        Self::Call(c)
    }
}

impl From<&TimeCoefs> for Time {
    fn from(c: &TimeCoefs) -> Self {
        Self::Call(*c)
    }
}

impl From<Rows<TimeCoefs>> for Time {
    fn from(r: Rows<TimeCoefs>) -> Self {
        Self::Rows(r)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    fn c(t: f64) -> TimeCoefs {
        TimeCoefs {
            t,
            alpha: 1.0,
            sigma: t,
            f: 0.0,
            g2: 2.0 * t,
            lambda: -t.ln(),
        }
    }

    /// Narrowing keeps the window, padding repeats the last row, a window past the end is a
    /// shape error, and a per-call value is every row's.
    #[test]
    fn per_row_values_narrow_and_pad() -> crate::Result<()> {
        let rows: Time = PerRow::Rows(Rows::new(vec![c(0.1), c(0.2), c(0.3), c(0.4)]));
        let mid = rows.narrow(1, 2)?;
        assert_eq!(mid.rows(), Some(2));
        let ts = |p: &Time| match p {
            PerRow::Rows(r) => r.values().iter().map(|c| c.t).collect::<Vec<_>>(),
            PerRow::Call(c) => vec![c.t],
        };
        assert_eq!(ts(&mid), vec![0.2, 0.3]);
        assert_eq!(ts(&mid.padded(2)), vec![0.2, 0.3, 0.3, 0.3]);
        assert!(rows.narrow(3, 2).is_err());
        assert!(rows.expect_rows(5, "x").is_err());
        let call: Time = c(0.5).into();
        assert_eq!(call.narrow(7, 9)?, call);
        assert_eq!(call.padded(3), call);
        assert!(call.expect_rows(123, "x").is_ok());
        Ok(())
    }

    /// A per-row column is [n, 1, …, 1] of the requested rank and dtype; per call there is none.
    #[test]
    fn columns_broadcast_over_samples() -> crate::Result<()> {
        let rows: Time = PerRow::Rows(Rows::new(vec![c(0.5), c(2.0)]));
        let col = rows
            .map(|c| c.sigma)
            .column(4, DType::F32, &Device::Cpu)?
            .expect("rows");
        assert_eq!(col.dims(), &[2, 1, 1, 1]);
        assert_eq!(col.dtype(), DType::F32);
        assert_eq!(col.flatten_all()?.to_vec1::<f32>()?, vec![0.5, 2.0]);
        let call: Time = c(0.5).into();
        assert!(
            call.map(|c| c.t)
                .column(2, DType::F64, &Device::Cpu)?
                .is_none()
        );
        Ok(())
    }
}
