//! Gaussian mixtures and their exact marginals under any linear SDE (MATH.md §7).
//!
//! If p₀ = Σ_k w_k N(m_k, S_k) then p_t = Σ_k w_k N(α m_k, α² S_k + σ² I), so the score, its
//! divergence, the log-density and exact samples of p_t are closed-form. The `gmm_oracle`
//! score model and the conformance suites are built on this.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    Error, Result,
    noise::{RowNoise, Stream, philox_key},
};

/// A component's covariance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Covariance {
    /// S = s² I.
    Isotropic(f64),
    /// S = diag(v), variances `v`.
    Diagonal(Vec<f64>),
    /// S as a row-major d × d matrix.
    Full(Vec<Vec<f64>>),
}

/// A Gaussian mixture Σ_k w_k N(m_k, S_k) in d dimensions.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<DVector<f64>>,
    covs: Vec<DMatrix<f64>>,
    diagonal: bool,
}

const PLUGIN: &str = "gaussian mixture";

impl GaussianMixture {
    /// A mixture; weights must be non-negative and sum to 1, covariances positive definite.
    #[allow(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "`!(a < b)` also rejects NaN, which `a >= b` would let through"
    )]
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covs: Vec<Covariance>) -> Result<Self> {
        let k = weights.len();
        if k == 0 {
            return Err(Error::invalid(
                PLUGIN,
                "weights",
                "needs at least one component",
            ));
        }
        if means.len() != k || covs.len() != k {
            return Err(Error::invalid(
                PLUGIN,
                "means",
                format!(
                    "{k} weights but {} means and {} covariances",
                    means.len(),
                    covs.len()
                ),
            ));
        }
        if let Some(w) = weights.iter().find(|w| !(**w >= 0.0) || !w.is_finite()) {
            return Err(Error::invalid(
                PLUGIN,
                "weights",
                format!("weight {w} is negative or not finite"),
            ));
        }
        let total: f64 = weights.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(Error::invalid(
                PLUGIN,
                "weights",
                format!("weights sum to {total}, not 1"),
            ));
        }
        let d = means[0].len();
        if d == 0 {
            return Err(Error::invalid(
                PLUGIN,
                "means",
                "dimension must be at least 1",
            ));
        }
        let mut mats = Vec::with_capacity(k);
        let mut diagonal = true;
        for (i, (m, c)) in means.iter().zip(&covs).enumerate() {
            if m.len() != d {
                return Err(Error::invalid(
                    PLUGIN,
                    "means",
                    format!("mean {i} has {} entries, mean 0 has {d}", m.len()),
                ));
            }
            let mat = match c {
                Covariance::Isotropic(s) => DMatrix::from_diagonal_element(d, d, s * s),
                Covariance::Diagonal(v) if v.len() == d => {
                    DMatrix::from_diagonal(&DVector::from_vec(v.clone()))
                }
                Covariance::Full(rows) if rows.len() == d && rows.iter().all(|r| r.len() == d) => {
                    diagonal = false;
                    DMatrix::from_fn(d, d, |r, c| rows[r][c])
                }
                _ => {
                    return Err(Error::invalid(
                        PLUGIN,
                        "covariances",
                        format!("covariance {i} is not {d}-dimensional"),
                    ));
                }
            };
            let symmetric = (0..d).all(|r| {
                (0..d)
                    .all(|c| (mat[(r, c)] - mat[(c, r)]).abs() <= 1e-12 * (1.0 + mat[(r, c)].abs()))
            });
            if !symmetric || mat.clone().cholesky().is_none() || mat.iter().any(|v| !v.is_finite())
            {
                return Err(Error::invalid(
                    PLUGIN,
                    "covariances",
                    format!("covariance {i} is not symmetric positive definite"),
                ));
            }
            mats.push(mat);
        }
        Ok(Self {
            weights,
            means: means.into_iter().map(DVector::from_vec).collect(),
            covs: mats,
            diagonal,
        })
    }

    /// The dimension d.
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// The number of components.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Component `k` alone, N(m_k, S_k): the law of class k when rows are labelled by their
    /// component (`gmm(labels: true)`).
    pub fn component(&self, k: usize) -> Result<Self> {
        if k >= self.components() {
            return Err(Error::invalid(
                PLUGIN,
                "component",
                format!("{k} is not below the {} components", self.components()),
            ));
        }
        Ok(Self {
            weights: vec![1.0],
            means: vec![self.means[k].clone()],
            covs: vec![self.covs[k].clone()],
            diagonal: self.diagonal,
        })
    }

    /// The mixture's mean Σ w_k m_k.
    pub fn mean(&self) -> Vec<f64> {
        let mut m = DVector::zeros(self.dim());
        for (w, mk) in self.weights.iter().zip(&self.means) {
            m += mk * *w;
        }
        m.as_slice().to_vec()
    }

    /// The mixture's covariance Σ w_k (S_k + m_k m_kᵀ) − m mᵀ, row-major.
    pub fn covariance(&self) -> Vec<Vec<f64>> {
        let d = self.dim();
        let m = DVector::from_vec(self.mean());
        let mut c = DMatrix::zeros(d, d);
        for ((w, mk), sk) in self.weights.iter().zip(&self.means).zip(&self.covs) {
            c += (sk + mk * mk.transpose()) * *w;
        }
        c -= &m * m.transpose();
        (0..d)
            .map(|r| (0..d).map(|col| c[(r, col)]).collect())
            .collect()
    }

    /// The marginal p_t = Σ_k w_k N(α m_k, α² S_k + σ² I), ready to evaluate.
    pub fn marginal(&self, alpha: f64, sigma: f64) -> Result<Marginal> {
        let d = self.dim();
        let mut comps = Vec::with_capacity(self.components());
        for ((w, m), s) in self.weights.iter().zip(&self.means).zip(&self.covs) {
            let cov = s * (alpha * alpha) + DMatrix::identity(d, d) * (sigma * sigma);
            let chol = cov.clone().cholesky().ok_or_else(|| {
                Error::Msg(format!(
                    "mixture marginal at α = {alpha}, σ = {sigma} is singular"
                ))
            })?;
            let log_det = 2.0 * chol.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
            let inv = chol.inverse();
            comps.push(Component {
                log_w: w.ln(),
                mean: m * alpha,
                inv_diag: inv.diagonal(),
                trace_inv: inv.trace(),
                inv,
                chol_l: chol.l(),
                log_norm: -0.5 * (log_det + d as f64 * (2.0 * std::f64::consts::PI).ln()),
            });
        }
        Ok(Marginal {
            comps,
            d,
            diagonal: self.diagonal,
            cum_weights: cumulative(&self.weights),
        })
    }
}

impl GaussianMixture {
    /// The score of every row of `x` (row-major, `n × d`) at its own (α, σ): row i under the
    /// marginal at `coefs[i]`. Consecutive rows at equal coefficients share one marginal;
    /// rows are spread over threads from 4,096 values on.
    pub fn score_rows(&self, coefs: &[(f64, f64)], x: &[f64]) -> Result<Vec<f64>> {
        let d = self.dim();
        if coefs.len() * d != x.len() {
            return Err(Error::Shape(format!(
                "{} per-row (α, σ) for {} values of dimension {d}",
                coefs.len(),
                x.len()
            )));
        }
        // Runs of equal coefficients: one marginal each.
        let mut runs = Vec::new();
        let mut start = 0;
        for i in 1..=coefs.len() {
            if i == coefs.len() || coefs[i] != coefs[start] {
                runs.push(start..i);
                start = i;
            }
        }
        let score_run = |r: &std::ops::Range<usize>| -> Result<Vec<f64>> {
            let (alpha, sigma) = coefs[r.start];
            Ok(self
                .marginal(alpha, sigma)?
                .score(&x[r.start * d..r.end * d]))
        };
        let parts: Vec<Vec<f64>> = if x.len() >= 4096 && runs.len() > 1 {
            runs.par_iter().map(score_run).collect::<Result<_>>()?
        } else {
            runs.iter().map(score_run).collect::<Result<_>>()?
        };
        Ok(parts.concat())
    }
}

/// log Σ_k e^{l_k}, stably.
fn log_sum_exp(logits: &[f64]) -> f64 {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

fn cumulative(w: &[f64]) -> Vec<f64> {
    w.iter()
        .scan(0.0, |acc, v| {
            *acc += v;
            Some(*acc)
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Component {
    log_w: f64,
    mean: DVector<f64>,
    inv: DMatrix<f64>,
    inv_diag: DVector<f64>,
    trace_inv: f64,
    chol_l: DMatrix<f64>,
    log_norm: f64,
}

/// Exact quantities of one row.
#[derive(Debug, Clone, Default)]
pub struct RowEval {
    /// ∇ log p_t(x).
    pub score: Vec<f64>,
    /// ∇·∇ log p_t(x).
    pub divergence: f64,
    /// log p_t(x).
    pub log_prob: f64,
}

/// A mixture's marginal at one (α, σ).
#[derive(Debug, Clone)]
pub struct Marginal {
    comps: Vec<Component>,
    d: usize,
    diagonal: bool,
    cum_weights: Vec<f64>,
}

impl Marginal {
    /// The dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Each component's log-weighted density log w_k + log N(x; μ_k, C_k) at one row `x`, and
    /// y_k = C_k⁻¹(x − μ_k).
    fn logits(&self, x: &[f64]) -> (Vec<f64>, Vec<DVector<f64>>) {
        let d = self.d;
        let mut logits = Vec::with_capacity(self.comps.len());
        let mut ys = Vec::with_capacity(self.comps.len());
        for c in &self.comps {
            let diff = DVector::from_iterator(d, x.iter().zip(c.mean.iter()).map(|(a, b)| a - b));
            let y = if self.diagonal {
                diff.component_mul(&c.inv_diag)
            } else {
                &c.inv * &diff
            };
            logits.push(c.log_w + c.log_norm - 0.5 * diff.dot(&y));
            ys.push(y);
        }
        (logits, ys)
    }

    /// Score, divergence and log-density of one row `x` (MATH.md §7):
    /// ŝ = Σ_k r_k (−C_k⁻¹(x − μ_k)), ∇·ŝ = Σ_k r_k (‖C_k⁻¹(x − μ_k)‖² − tr C_k⁻¹) − ‖ŝ‖².
    pub fn eval_row(&self, x: &[f64], want_div: bool) -> RowEval {
        let d = self.d;
        let (logits, ys) = self.logits(x);
        let log_prob = log_sum_exp(&logits);
        let mut score = vec![0.0; d];
        let mut div = 0.0;
        for ((l, y), c) in logits.iter().zip(&ys).zip(&self.comps) {
            let r = (l - log_prob).exp();
            for (s, yi) in score.iter_mut().zip(y.iter()) {
                *s -= r * yi;
            }
            if want_div {
                div += r * (y.norm_squared() - c.trace_inv);
            }
        }
        if want_div {
            div -= score.iter().map(|s| s * s).sum::<f64>();
        }
        RowEval {
            score,
            divergence: div,
            log_prob,
        }
    }

    /// The score of every row of `x` (row-major, `n × d`), in parallel over rows.
    pub fn score(&self, x: &[f64]) -> Vec<f64> {
        let d = self.d;
        let mut out = vec![0.0; x.len()];
        let run =
            |(xi, oi): (&[f64], &mut [f64])| oi.copy_from_slice(&self.eval_row(xi, false).score);
        if x.len() >= 4096 {
            x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(run);
        } else {
            x.chunks(d).zip(out.chunks_mut(d)).for_each(run);
        }
        out
    }

    /// The score s(x) and the Jacobian-vector products J v_j of one row `x` for probes `vs`
    /// (each of length d), J = ∂s/∂x = −Σ_k r_k C_k⁻¹ + Σ_k r_k u_k u_kᵀ − s sᵀ with
    /// u_k = −C_k⁻¹(x − μ_k) (a symmetric matrix: the Hessian of log p); its trace is
    /// [`eval_row`](Self::eval_row)'s divergence.
    pub fn jvp_row(&self, x: &[f64], vs: &[&[f64]]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let d = self.d;
        let (logits, ys) = self.logits(x);
        let us: Vec<DVector<f64>> = ys.into_iter().map(|y| -y).collect();
        let log_prob = log_sum_exp(&logits);
        let r: Vec<f64> = logits.iter().map(|l| (l - log_prob).exp()).collect();
        let mut s = DVector::zeros(d);
        for (rk, u) in r.iter().zip(&us) {
            s += *rk * u;
        }
        let jvps = vs
            .iter()
            .map(|v| {
                let v = DVector::from_column_slice(v);
                let mut out = -(s.dot(&v)) * &s;
                for ((rk, u), c) in r.iter().zip(&us).zip(&self.comps) {
                    let cv = if self.diagonal {
                        v.component_mul(&c.inv_diag)
                    } else {
                        &c.inv * &v
                    };
                    out += *rk * (u.dot(&v) * u - cv);
                }
                out.iter().copied().collect()
            })
            .collect();
        (s.iter().copied().collect(), jvps)
    }

    /// The most probable component of every row of `x` (row-major, `n × d`): the argmax of
    /// the posterior responsibilities r_k(x) ∝ w_k N(x; μ_k, C_k).
    pub fn assign(&self, x: &[f64]) -> Vec<usize> {
        x.par_chunks(self.d)
            .map(|xi| {
                let (logits, _) = self.logits(xi);
                (0..logits.len()).fold(0, |best, k| if logits[k] > logits[best] { k } else { best })
            })
            .collect()
    }

    /// The components' weights.
    pub fn weights(&self) -> Vec<f64> {
        self.comps.iter().map(|c| c.log_w.exp()).collect()
    }

    /// Score, divergence and log-density of every row.
    pub fn eval(&self, x: &[f64]) -> Vec<RowEval> {
        x.par_chunks(self.d)
            .map(|xi| self.eval_row(xi, true))
            .collect()
    }

    /// Exact samples `offset..offset + n` of p_t (row-major), keyed by `seed` in the exact
    /// stream: a component from one uniform, then μ_k + L_k z ([`draw`](Self::draw)).
    pub fn sample(&self, seed: u64, offset: u64, n: usize) -> Vec<f64> {
        let key = philox_key(seed, Stream::Exact);
        let mut out = vec![0.0; n * self.d];
        out.par_chunks_mut(self.d).enumerate().for_each(|(i, row)| {
            self.draw(&RowNoise::new(key, offset + i as u64), row);
        });
        out
    }

    /// One exact sample of p_t from one row's draws, written to `out` (d values); returns the
    /// component it came from: the component k whose cumulative weight first exceeds the
    /// row's uniform 0, then μ_k + L_k z with z the row's normals 0..d.
    pub fn draw(&self, noise: &RowNoise, out: &mut [f64]) -> usize {
        let u = noise.uniform(0);
        let k = self
            .cum_weights
            .iter()
            .position(|c| u < *c)
            .unwrap_or(self.comps.len() - 1);
        let mut z = vec![0.0; self.d];
        noise.normals(0, &mut z);
        let c = &self.comps[k];
        let x = &c.mean + &c.chol_l * DVector::from_vec(z);
        out.copy_from_slice(x.as_slice());
        k
    }
}
