//! Pieces of noise schedules that more than one SDE plugin uses (MATH.md §1), written once.

use crate::{Error, Result};

/// The linear β schedule of VP and sub-VP: β(t) = β_min + t (β_max − β_min) and its integral
/// B(t) = β_min t + ½ (β_max − β_min) t².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearBeta {
    /// β(0).
    pub beta_min: f64,
    /// β(1).
    pub beta_max: f64,
}

impl LinearBeta {
    /// Checks 0 ≤ β_min < β_max < ∞, naming `plugin` in the error.
    pub fn new(plugin: &str, beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min >= 0.0 && beta_min.is_finite()) {
            return Err(Error::invalid(
                plugin,
                "beta_min",
                format!("must be finite and ≥ 0, got {beta_min}"),
            ));
        }
        if !(beta_max > beta_min && beta_max.is_finite()) {
            return Err(Error::invalid(
                plugin,
                "beta_max",
                format!("must exceed beta_min = {beta_min}, got {beta_max}"),
            ));
        }
        Ok(Self { beta_min, beta_max })
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// B(t) = ∫₀ᵗ β.
    pub fn integral(&self, t: f64) -> f64 {
        self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
    }

    /// The t ≥ 0 with B(t) = `b`, in the form that loses no digits when β_max − β_min is
    /// small: t = 2B / (β_min + √(β_min² + 2 (β_max − β_min) B)).
    pub fn t_of_integral(&self, b: f64) -> f64 {
        let (b0, db) = (self.beta_min, self.beta_max - self.beta_min);
        2.0 * b / (b0 + (b0 * b0 + 2.0 * db * b).sqrt())
    }
}

/// Checks 0 < t_ε < T < ∞, naming `plugin` in the error.
pub fn check_times(plugin: &str, t_eps: f64, t_max: f64) -> Result<()> {
    if !(t_max > 0.0 && t_max.is_finite()) {
        return Err(Error::invalid(
            plugin,
            "t_max",
            format!("must be positive, got {t_max}"),
        ));
    }
    if !(t_eps > 0.0 && t_eps < t_max) {
        return Err(Error::invalid(
            plugin,
            "t_eps",
            format!("must lie in (0, t_max = {t_max}), got {t_eps}"),
        ));
    }
    Ok(())
}

/// softplus(x) = ln(1 + eˣ), without overflow for large x or lost digits for very negative x.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_beta_inverts_its_integral() -> Result<()> {
        let s = LinearBeta::new("test", 0.1, 20.0)?;
        for t in [0.0, 1e-7, 1e-3, 0.5, 1.0, 3.0] {
            assert!(
                (s.t_of_integral(s.integral(t)) - t).abs() <= 1e-15 * t.max(1.0),
                "{t}"
            );
        }
        assert!(LinearBeta::new("test", 2.0, 1.0).is_err());
        Ok(())
    }

    #[test]
    fn softplus_is_stable_at_both_ends() {
        // ln(1 + e^x) at x = ±800 is 800 and e^-800 ≈ 0 (closed form), where naive evaluation
        // overflows or underflows to 0 exactly.
        assert_eq!(softplus(800.0), 800.0);
        assert!(softplus(-30.0) > 0.0 && (softplus(-30.0) / (-30.0f64).exp() - 1.0).abs() < 1e-12);
        assert!((softplus(0.0) - std::f64::consts::LN_2).abs() < 1e-16);
    }
}
