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
