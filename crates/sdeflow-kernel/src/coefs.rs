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
