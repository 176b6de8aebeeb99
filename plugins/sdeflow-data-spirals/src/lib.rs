//! Interleaved 2-D spirals, one per class, as unbounded exact draws (FFJORD's `2spirals`,
//! generalised to any number of arms).
//!
//! # Formula
//! No MATH.md section: the law is defined here. With A = `arms` and T = 2π · `turns`, row i of
//! a split reads its own draws of the kernel's noise source: the arm k = ⌊A u₀⌋ (its label),
//! the angle θ = √u₁ · T, and with z the row's two standard normals (draws 0 and 1)
//! x = R(2πk/A) (−θ cos θ, θ sin θ) / scale + noise · z, R(φ) the rotation by φ.
//! FFJORD's `2spirals` is A = 2, 1.5 turns (540°), scale 3, but with uniform jitter on
//! [0, ½]² before the scaling where this has Gaussian noise after it.
//!
//! The moments are exact in closed form. One arm's b = (−θ cos θ, θ sin θ) has θ with density
//! 2θ/T² on [0, T], so with s = θ/T, cos² θ = ½ (1 + cos 2θ) and sin θ cos θ = ½ sin 2θ,
//! E b = 2T (−C₂(T), S₂(T)), E b₁² = T² (¼ + C₃(2T)), E b₂² = T² (¼ − C₃(2T)),
//! E b₁b₂ = −T² S₃(2T), where C_p(w) = ∫₀¹ sᵖ cos ws ds and S_p(w) = ∫₀¹ sᵖ sin ws ds are, from
//! the antiderivatives of θᵖ cos θ and θᵖ sin θ,
//! C₂(w) = (w² sin w + 2w cos w − 2 sin w) / w³, S₂(w) = (2w sin w − (w² − 2) cos w − 2) / w³,
//! C₃(w) = (w³ sin w + 3w² cos w − 6w sin w − 6 cos w + 6) / w⁴,
//! S₃(w) = (3w² sin w − 6 sin w − w³ cos w + 6w cos w) / w⁴.
//! For w ≤ 2, where these cancel (relative error up to about 30ε/w⁴), they are their Taylor
//! series instead: ∫₀¹ sᵖ (ws)ʲ/j! ds = wʲ / (j! (p + j + 1)), the even j (signs +, −, …) for
//! C_p and the odd j for S_p, up to j = 29 (the next term below 1e-23).
//! With m = E b, S = E b bᵀ and R_k = R(2πk/A), the arms average to E x = m,
//! E x xᵀ = S for A = 1; E x = 0, E x xᵀ = S for A = 2 (R₁ = −I); E x = 0, E x xᵀ = ½ tr S · I
//! for A ≥ 3 (Σ_k R_k = 0, Σ_k R_k S R_kᵀ = ½ A tr S · I). Then, with noise² on the diagonal,
//! Cov x = (E x xᵀ − E x E xᵀ) / scale² + noise² I.
//!
//! # Parameters
//! - `arms`: the number of spirals A, each a class, ≥ 1. Default 2.
//! - `turns`: the turns of each spiral, finite and > 0. Default 1.5 (540°).
//! - `scale`: what the spiral is divided by, finite and > 0. Default 3.
//! - `noise`: the standard deviation of the isotropic Gaussian noise, finite and ≥ 0.
//!   Default 0.1.
//!
//! # Claims
//! Rows of shape `[2]` labelled with their arm (0 … A − 1), unbounded, finite; row i the same
//! for any batch split, shard or rerun; `moments()` the closed forms above (within 1e-10,
//! relative to the law's size, of an independent composite Simpson quadrature), and the mean
//! and covariance of 20,000 rows within 4 standard errors of them; with noise 0 a row rotated
//! back by its label's angle lies on the first spiral, and every value lies in the declared
//! range ±T/scale (with noise > 0 there is no range).
//!
//! # References
//! Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form Continuous Dynamics
//! for Scalable Reversible Generative Models", ICLR 2019 (the `2spirals` toy of its code).

use std::f64::consts::TAU;

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Moments, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The spirals' shape and noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The number of spirals, each a class.
    pub arms: u32,
    /// The turns of each spiral.
    pub turns: f64,
    /// What the spiral is divided by.
    pub scale: f64,
    /// The standard deviation of the Gaussian noise added to each point.
    pub noise: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            arms: 2,
            turns: 1.5,
            scale: 3.0,
            noise: 0.1,
        }
    }
}

/// The spirals law.
#[derive(Debug, Clone, Copy)]
pub struct Spirals {
    p: Params,
}

impl Spirals {
    /// The spirals `p` names; an error for no arms, turns or a scale that is not finite and
    /// positive, or a noise level that is negative or not finite.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field, reason: String| Err(Error::invalid("spirals", field, reason));
        if p.arms == 0 {
            return bad("arms", "must be ≥ 1, got 0".into());
        }
        if !(p.turns.is_finite() && p.turns > 0.0) {
            return bad("turns", format!("must be finite and > 0, got {}", p.turns));
        }
        if !(p.scale.is_finite() && p.scale > 0.0) {
            return bad("scale", format!("must be finite and > 0, got {}", p.scale));
        }
        if !(p.noise.is_finite() && p.noise >= 0.0) {
            return bad("noise", format!("must be finite and ≥ 0, got {}", p.noise));
        }
        Ok(Self { p })
    }

    /// The largest angle T = 2π turns.
    pub fn theta_max(&self) -> f64 {
        TAU * self.p.turns
    }
}

/// (C_p(w), S_p(w)) = (∫₀¹ sᵖ cos ws ds, ∫₀¹ sᵖ sin ws ds) for p ∈ {2, 3} and w > 0: the
/// closed forms of the crate doc for w > 2, their Taylor series for w ≤ 2.
fn power_cos_sin(p: u8, w: f64) -> (f64, f64) {
    if w <= 2.0 {
        // Σ_j wʲ / (j! (p + j + 1)) with signs +, +, −, − on j mod 4 = 0, 1, 2, 3.
        let (mut sum, mut term) = ([0.0; 2], 1.0);
        for j in 0..30u8 {
            let sign = if j % 4 < 2 { 1.0 } else { -1.0 };
            sum[usize::from(j % 2)] += sign * term / f64::from(p + j + 1);
            term *= w / f64::from(j + 1);
        }
        return (sum[0], sum[1]);
    }
    let (sin, cos) = w.sin_cos();
    let w2 = w * w;
    if p == 2 {
        let c = (w2 * sin + 2.0 * w * cos - 2.0 * sin) / (w2 * w);
        let s = (2.0 * w * sin - (w2 - 2.0) * cos - 2.0) / (w2 * w);
        (c, s)
    } else {
        let c = (w2 * w * sin + 3.0 * w2 * cos - 6.0 * w * sin - 6.0 * cos + 6.0) / (w2 * w2);
        let s = (3.0 * w2 * sin - 6.0 * sin - w2 * w * cos + 6.0 * w * cos) / (w2 * w2);
        (c, s)
    }
}

impl DataSource for Spirals {
    fn sample_shape(&self) -> Vec<usize> {
        vec![2]
    }

    fn extent(&self) -> Extent {
        Extent::Unbounded
    }

    fn classes(&self) -> Option<usize> {
        Some(self.p.arms as usize)
    }

    fn range(&self) -> Option<(f64, f64)> {
        // A rotation keeps |x|∞ ≤ |x|₂ = θ/scale ≤ T/scale; Gaussian noise has no bounds.
        let r = self.theta_max() / self.p.scale;
        (self.p.noise == 0.0).then_some((-r, r))
    }

    fn moments(&self) -> Option<Moments> {
        // One arm's E b and E b bᵀ in the closed forms of the crate doc.
        let t = self.theta_max();
        let ((cos_2, sin_2), (cos_3, sin_3)) = (power_cos_sin(2, t), power_cos_sin(3, 2.0 * t));
        let (ex, ey) = (-2.0 * t * cos_2, 2.0 * t * sin_2);
        let t2 = t * t;
        let (exx, eyy, exy) = (t2 * (0.25 + cos_3), t2 * (0.25 - cos_3), -t2 * sin_3);
        // (E x, [E x₁², E x₂², E x₁x₂]) averaged over the arms.
        let (m, [s11, s22, s12]) = match self.p.arms {
            1 => ([ex, ey], [exx, eyy, exy]),
            2 => ([0.0; 2], [exx, eyy, exy]),
            _ => ([0.0; 2], [(exx + eyy) / 2.0, (exx + eyy) / 2.0, 0.0]),
        };
        let (s, s2) = (self.p.scale, self.p.noise * self.p.noise);
        let cov = (s12 - m[0] * m[1]) / (s * s);
        Some(Moments {
            mean: vec![m[0] / s, m[1] / s],
            covariance: vec![
                vec![(s11 - m[0] * m[0]) / (s * s) + s2, cov],
                vec![cov, (s22 - m[1] * m[1]) / (s * s) + s2],
            ],
        })
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let noise = match at {
            RowRef::Draw(noise) => noise,
            RowRef::Stored(j) => {
                return Err(Error::Msg(format!(
                    "spirals has no stored rows (asked for row {j})"
                )));
            }
        };
        let arms = self.p.arms;
        let k = ((f64::from(arms) * noise.uniform(0)) as u32).min(arms - 1);
        let theta = noise.uniform(1).sqrt() * self.theta_max();
        let (sin, cos) = theta.sin_cos();
        let (a, b) = (-theta * cos / self.p.scale, theta * sin / self.p.scale);
        let (sin_phi, cos_phi) = (TAU * f64::from(k) / f64::from(arms)).sin_cos();
        out[0] = a * cos_phi - b * sin_phi;
        out[1] = a * sin_phi + b * cos_phi;
        if self.p.noise > 0.0 {
            let mut z = [0.0; 2];
            noise.normals(0, &mut z);
            out[0] += self.p.noise * z[0];
            out[1] += self.p.noise * z[1];
        }
        Ok(Some(k))
    }
}

register_data!(
    "spirals",
    "interleaved 2-D spirals, one per labelled arm, plus Gaussian noise (FFJORD's 2spirals)",
    Params,
    Spirals::new,
);
