//! Time grids t_0 = T > t_1 > … > t_N = t_ε (MATH.md §5).

use serde::{Deserialize, Serialize};

use crate::{Error, ForwardSde, Result};

/// How the N steps are spaced between T and t_ε.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GridKind {
    /// Uniform in t.
    Uniform,
    /// t_i = t_ε + (T − t_ε)(1 − i/N)², finer near the data.
    Quadratic,
    /// Uniform in the half log-SNR λ, the natural grid of exponential integrators.
    LogSnr,
    /// EDM/Karras: uniform in σ̃^{1/ρ} between σ̃(T) and σ̃(t_ε), σ̃ = σ/α.
    Karras {
        /// The exponent ρ (EDM: 7).
        rho: f64,
    },
    /// Chosen for the model, the solver and the step count: the grid whose N-step solve lands
    /// closest to a fine reference solve of the PF-ODE from `rows` calibration draws
    /// ([`crate::tune`]). Deterministic solvers on a grid only; the pipeline chooses it when
    /// it is built.
    Tuned {
        /// Calibration rows, drawn from the prior with a seed of their own (default 256).
        #[serde(default = "default_tuning_rows")]
        rows: usize,
    },
}

fn default_tuning_rows() -> usize {
    crate::tune::DEFAULT_ROWS
}

impl std::fmt::Display for GridKind {
    /// The spelling a config uses: `uniform`, `quadratic`, `log_snr`, `karras(rho: 7)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Quadratic => f.write_str("quadratic"),
            Self::LogSnr => f.write_str("log_snr"),
            Self::Karras { rho } => write!(f, "karras(rho: {rho})"),
            Self::Tuned { rows } => write!(f, "tuned(rows: {rows})"),
        }
    }
}

impl GridKind {
    /// Checks the grid's own parameters (ρ positive and finite, at least one calibration
    /// row); the error says what would be valid. A config checks this as it reads the grid,
    /// so the message carries the line and column.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(rho > 0.0)` also rejects NaN"
    )]
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            GridKind::Karras { rho } if !(rho > 0.0 && rho.is_finite()) => Err(format!(
                "invalid `rho`: {rho}; the Karras grid's exponent must be positive and finite (EDM: karras(rho: 7.0))"
            )),
            GridKind::Tuned { rows: 0 } => Err(
                "invalid `rows`: 0; a tuned grid needs at least one calibration row (default tuned(rows: 256))".into(),
            ),
            _ => Ok(()),
        }
    }

    /// The N + 1 times of an N-step grid on `sde`, strictly decreasing from T to t_ε. A
    /// [`Tuned`](Self::Tuned) grid depends on the model and solver: the pipeline chooses it
    /// ([`crate::tune::tune`]), and here it is an error.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(a < b)` also rejects NaN, which `a >= b` would let through"
    )]
    pub fn times(&self, sde: &dyn ForwardSde, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(Error::invalid("grid", "steps", "must be at least 1"));
        }
        let (t_max, t_eps) = (sde.t_max(), sde.t_eps());
        if !(t_eps < t_max) {
            return Err(Error::invalid(
                "grid",
                "t_eps",
                format!("t_eps = {t_eps} must be below T = {t_max}"),
            ));
        }
        let n = steps as f64;
        let frac = |i: usize| i as f64 / n;
        let mut ts: Vec<f64> = match *self {
            GridKind::Uniform => (0..=steps)
                .map(|i| t_max + frac(i) * (t_eps - t_max))
                .collect(),
            GridKind::Quadratic => (0..=steps)
                .map(|i| t_eps + (t_max - t_eps) * (1.0 - frac(i)).powi(2))
                .collect(),
            GridKind::LogSnr => {
                let (l0, l1) = (sde.log_snr(t_max), sde.log_snr(t_eps));
                (0..=steps)
                    .map(|i| sde.t_of_log_snr(l0 + frac(i) * (l1 - l0)))
                    .collect()
            }
            GridKind::Karras { rho } => {
                if let Err(why) = self.validate() {
                    return Err(Error::invalid("grid", "rho", why));
                }
                let s_max = (-sde.log_snr(t_max)).exp().powf(1.0 / rho);
                let s_min = (-sde.log_snr(t_eps)).exp().powf(1.0 / rho);
                (0..=steps)
                    .map(|i| {
                        let s = (s_max + frac(i) * (s_min - s_max)).powf(rho);
                        sde.t_of_log_snr(-s.ln())
                    })
                    .collect()
            }
            GridKind::Tuned { .. } => {
                return Err(Error::invalid(
                    "grid",
                    "grid",
                    "a tuned grid is chosen for a model and a solver: build a pipeline with it",
                ));
            }
        };
        // The ends are exact whatever the inversions' rounding.
        ts[0] = t_max;
        ts[steps] = t_eps;
        if let Some(i) = (0..steps).find(|&i| !(ts[i] > ts[i + 1])) {
            return Err(Error::invalid(
                "grid",
                "steps",
                format!(
                    "the {self:?} grid with {steps} steps repeats a time (t_{i} = {:e}, t_{} = {:e}); \
                     use fewer steps or another grid",
                    ts[i],
                    i + 1,
                    ts[i + 1]
                ),
            ));
        }
        Ok(ts)
    }
}
