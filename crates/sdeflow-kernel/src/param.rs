//! The [`Parameterization`] trait and the conversions between a network's output, ε̂, x̂₀ and ŝ
//! (MATH.md §3, §9), written once here so that every solver works with every SDE and every
//! parameterization, per call or per row.
//!
//! Every parameterization is linear in (x, out): a plugin states its coefficients as data,
//! [`Lin`] pairs at one [`TimeCoefs`], and the kernel applies them — as scalars when a call
//! has one time, as per-row columns broadcast over each sample when every row has its own
//! ([`Conversions`]). No conversion formula is written twice.

use std::fmt::Debug;

use candle_core::Tensor;

use crate::{PerRow, Result, Time, TimeCoefs, ops::lin2};

/// A linear map `out·u + x·x` at one time: ε̂ or x̂₀ from a network output `u` and its input `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lin {
    /// The coefficient of the network output.
    pub out: f64,
    /// The coefficient of the noisy input x.
    pub x: f64,
}

/// A training target `x0·x₀ + eps·ε` at one time, for `x_t = α x₀ + σ ε`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetLin {
    /// The coefficient of the clean data x₀.
    pub x0: f64,
    /// The coefficient of the noise ε.
    pub eps: f64,
}

/// What a network predicts, as coefficients (MATH.md §9): ε̂ = a·out + b·x, x̂₀ = a′·out + b′·x,
/// target = c·x₀ + d·ε; and what the network sees (c_in·x and c_noise).
///
/// x̂₀ has its own pair because reading it off ε̂ divides by α: `v` and `flow` compute it
/// directly for accuracy at small α. The inverse map (the output that gives a wanted ε̂), ŝ
/// and the loss scale follow from the ε̂ pair in the kernel ([`Conversions`]).
pub trait Parameterization: Send + Sync + Debug {
    /// ε̂ = `out`·u + `x`·x at `c`.
    fn eps(&self, c: &TimeCoefs) -> Lin;

    /// The training target `x0`·x₀ + `eps`·ε at `c`.
    fn target(&self, c: &TimeCoefs) -> TargetLin;

    /// x̂₀ = `out`·u + `x`·x at `c`; by default read off ε̂ through x̂₀ = (x − σ ε̂)/α.
    fn x0(&self, c: &TimeCoefs) -> Lin {
        let e = self.eps(c);
        Lin {
            out: -c.sigma / c.alpha * e.out,
            x: (1.0 - c.sigma * e.x) / c.alpha,
        }
    }

    /// The factor k(t) with ‖out − target‖ = k ‖ε̂ − ε‖ at a fixed x (MATH.md §4), so that a
    /// weight w on ‖ε̂ − ε‖² is w/k² on the target's squared error. By default 1/|a| of the
    /// ε̂ pair.
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64 {
        1.0 / self.eps(c).out.abs()
    }

    /// c_in(t): the network sees c_in·x_t instead of x_t (input preconditioning). Default 1.
    fn c_in(&self, _c: &TimeCoefs) -> f64 {
        1.0
    }

    /// c_noise(t): the network's noise-level input. Default the half log-SNR λ, which does
    /// not depend on how an SDE parameterizes time.
    fn c_noise(&self, c: &TimeCoefs) -> f64 {
        c.lambda
    }
}

/// The ŝ pair from the ε̂ pair: ŝ = −ε̂/σ.
fn score_lin(e: Lin, c: &TimeCoefs) -> Lin {
    Lin {
        out: -e.out / c.sigma,
        x: -e.x / c.sigma,
    }
}

/// The inverse of the ε̂ pair: the output u with a·u + b·x = ε̂ is u = ε̂/a − (b/a)·x.
fn inverse_lin(e: Lin) -> Lin {
    Lin {
        out: 1.0 / e.out,
        x: -e.x / e.out,
    }
}

/// `l.out·u + l.x·x` per call, or per row with the pairs as columns broadcast over each
/// sample. Per call, a pair (1, 0) returns `u` itself and (a, 0) one scaling.
fn apply(time: &Time, lin: impl Fn(&TimeCoefs) -> Lin, u: &Tensor, x: &Tensor) -> Result<Tensor> {
    match time {
        PerRow::Call(c) => {
            let l = lin(c);
            if l.x != 0.0 {
                lin2(l.out, u, l.x, x)
            } else if l.out == 1.0 {
                Ok(u.clone())
            } else {
                Ok(u.affine(l.out, 0.0)?)
            }
        }
        PerRow::Rows(_) => {
            time.expect_rows(u.dim(0)?, "a conversion")?;
            let pairs = time.map(lin);
            let col = |f: fn(&Lin) -> f64| -> Result<Tensor> {
                pairs
                    .map(f)
                    .column(u.rank(), u.dtype(), u.device())?
                    .ok_or_else(|| crate::Error::Msg("per-row pairs without rows".into()))
            };
            let (a, b) = (col(|l| l.out)?, col(|l| l.x)?);
            Ok((u.broadcast_mul(&a)? + x.broadcast_mul(&b)?)?)
        }
    }
}

/// Scales `x` by `f(c)` per call or per row (identity where `f` is 1 for a call).
pub(crate) fn scale(time: &Time, f: impl Fn(&TimeCoefs) -> f64, x: &Tensor) -> Result<Tensor> {
    match time {
        PerRow::Call(c) => {
            let s = f(c);
            Ok(if s == 1.0 {
                x.clone()
            } else {
                x.affine(s, 0.0)?
            })
        }
        PerRow::Rows(_) => {
            time.expect_rows(x.dim(0)?, "a scaling")?;
            let col = time
                .map(f)
                .column(x.rank(), x.dtype(), x.device())?
                .ok_or_else(|| crate::Error::Msg("per-row scale without rows".into()))?;
            Ok(x.broadcast_mul(&col)?)
        }
    }
}

/// The conversions every [`Parameterization`] gets from its coefficients, on tensors, per call
/// or per row ([`Time`]). Implemented for every parameterization; not meant to be overridden.
pub trait Conversions {
    /// ε̂ from the network output `out` at the input `x`.
    fn to_eps(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor>;
    /// x̂₀ from the network output.
    fn to_x0(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor>;
    /// ŝ from the network output.
    fn to_score(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor>;
    /// The network output that gives ε̂ at `x`: the inverse of [`to_eps`](Self::to_eps), which
    /// reports an exact model in this target.
    #[allow(
        clippy::wrong_self_convention,
        reason = "the inverse of `to_eps`: the output this parameterization reads as ε̂"
    )]
    fn from_eps(&self, eps: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor>;
    /// The training target for `x_t = α x₀ + σ ε`.
    fn target_of(&self, x0: &Tensor, eps: &Tensor, time: &Time) -> Result<Tensor>;
    /// What the network sees: c_in·x.
    fn input(&self, x: &Tensor, time: &Time) -> Result<Tensor>;
    /// x from what the network sees: the inverse of [`input`](Self::input).
    fn undo_input(&self, x_in: &Tensor, time: &Time) -> Result<Tensor>;
    /// The noise-level input c_noise per call or per row.
    fn noise_level(&self, time: &Time) -> PerRow<f64>;
}

impl<P: Parameterization + ?Sized> Conversions for P {
    fn to_eps(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor> {
        apply(time, |c| self.eps(c), out, x)
    }
    fn to_x0(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor> {
        apply(time, |c| self.x0(c), out, x)
    }
    fn to_score(&self, out: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor> {
        apply(time, |c| score_lin(self.eps(c), c), out, x)
    }
    fn from_eps(&self, eps: &Tensor, x: &Tensor, time: &Time) -> Result<Tensor> {
        apply(time, |c| inverse_lin(self.eps(c)), eps, x)
    }
    fn target_of(&self, x0: &Tensor, eps: &Tensor, time: &Time) -> Result<Tensor> {
        apply(
            time,
            |c| {
                let t = self.target(c);
                Lin {
                    out: t.x0,
                    x: t.eps,
                }
            },
            x0,
            eps,
        )
    }
    fn input(&self, x: &Tensor, time: &Time) -> Result<Tensor> {
        scale(time, |c| self.c_in(c), x)
    }
    fn undo_input(&self, x_in: &Tensor, time: &Time) -> Result<Tensor> {
        scale(time, |c| 1.0 / self.c_in(c), x_in)
    }
    fn noise_level(&self, time: &Time) -> PerRow<f64> {
        time.map(|c| self.c_noise(c))
    }
}

/// The exact conversions between ε̂, x̂₀ and ŝ given `x` and the time coefficients
/// (MATH.md §3, with `x = α x₀ + σ ε`), per call or per row.
pub mod convert {
    use super::*;

    /// x̂₀ = (x − σ ε̂)/α.
    pub fn x0_from_eps(x: &Tensor, eps: &Tensor, time: &Time) -> Result<Tensor> {
        apply(
            time,
            |c| Lin {
                out: -c.sigma / c.alpha,
                x: 1.0 / c.alpha,
            },
            eps,
            x,
        )
    }

    /// ε̂ = (x − α x̂₀)/σ.
    pub fn eps_from_x0(x: &Tensor, x0: &Tensor, time: &Time) -> Result<Tensor> {
        apply(
            time,
            |c| Lin {
                out: -c.alpha / c.sigma,
                x: 1.0 / c.sigma,
            },
            x0,
            x,
        )
    }

    /// ŝ = −ε̂/σ.
    pub fn score_from_eps(eps: &Tensor, time: &Time) -> Result<Tensor> {
        scale(time, |c| -1.0 / c.sigma, eps)
    }

    /// ε̂ = −σ ŝ.
    pub fn eps_from_score(score: &Tensor, time: &Time) -> Result<Tensor> {
        scale(time, |c| -c.sigma, score)
    }

    /// The noisy sample x_t = α x₀ + σ ε.
    pub fn noisy(x0: &Tensor, eps: &Tensor, time: &Time) -> Result<Tensor> {
        apply(
            time,
            |c| Lin {
                out: c.alpha,
                x: c.sigma,
            },
            x0,
            eps,
        )
    }
}
