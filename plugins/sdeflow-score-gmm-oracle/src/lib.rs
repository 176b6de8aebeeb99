//! The Gaussian-mixture oracle: a score "model" that returns the exact answer.
//!
//! # Formula
//! MATH.md §7: for p₀ = Σ_k w_k N(m_k, S_k) and any linear SDE,
//! p_t = Σ_k w_k N(α m_k, C_k), C_k = α² S_k + σ² I, so with responsibilities r_k(x)
//! `ŝ = Σ_k r_k (−C_k⁻¹ (x − α m_k))` and
//! `∇·ŝ = Σ_k r_k (‖C_k⁻¹(x − α m_k)‖² − tr C_k⁻¹) − ‖ŝ‖²`, all in f64 on the host.
//! It reads α and σ from the [`TimeCoefs`] alone (it needs no SDE plugin), one pair per call or
//! one per row, and predicts in its own target, the score (the registered `score`
//! parameterization, resolved through the registry): the denoiser converts to whatever a solver
//! reads, and `sdeflow_kernel::Retarget` reports it in any other target.
//!
//!
//! Class-conditional (data `gmm(labels: true)`, whose rows are labelled by their component):
//! a row with label k gets the score of component k's marginal alone, N(α m_k, C_k), so
//! `ŝ(x, k) = −C_k⁻¹ (x − α m_k)`; a row with the label ∅ (`null_label(K)`), or no labels at
//! all, gets the mixture's. Classifier-free guidance then combines the two in ε (MATH.md §9),
//! and at w = 0 each class is sampled from its component's law exactly.
//!
//! # Parameters
//! The mixture p₀ is the exact law of the config's data (`data: gmm(...)`, read through the
//! model's build context), so a config names it once: `model: gmm_oracle()`. Built without
//! such data (in code, or a config with no `data:`), the oracle takes the mixture as its own
//! parameters, the same fields as the `gmm` data plugin; naming it in both places is an error.
//! - `weights`: the mixture weights, non-negative, summing to 1. Default `[]` (the data's).
//! - `means`: one d-vector per component. Default `[]` (the data's).
//! - `covariances`: per component `isotropic(s)` (S = s² I), `diagonal([v, ...])` (variances)
//!   or `full([[...], ...])` (symmetric positive definite). Default `[]` (the data's).
//!
//! # Claims
//! Exact to f64 rounding, per call and per row (a row at its own time gets the score of the
//! marginal at that time, bit for bit what a call at that time gives it); rows are
//! independent (no batch coupling), so chunking is skipped; no trainable variables; with
//! labelled data, each label's rows get their component's exact score and ∅'s the
//! mixture's (likelihoods, which pass no labels, are the mixture's). It also draws exact samples of p_t and gives log p_t (for
//! likelihood checks) through [`GmmOracle::marginal`].
//!
//! # References
//! Song et al., ICLR 2021, §4 and Appendix D.2 (exact likelihoods); the closed form of a
//! Gaussian convolved with a Gaussian.

use candle_core::{DType, Tensor};
use sdeflow_kernel::{
    At, Error, ModelContext, ParamEntry, PerRow, Registry, Result, Rows, ScoreModel, Time,
    TimeCoefs,
    mixture::{Covariance, GaussianMixture, Marginal},
    register_model,
    registry::ParamKind,
};
use serde::{Deserialize, Serialize};

/// The mixture p₀, when the config's data does not give it (all empty: read the data's law).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Mixture weights.
    pub weights: Vec<f64>,
    /// Component means.
    pub means: Vec<Vec<f64>>,
    /// Component covariances.
    pub covariances: Vec<Covariance>,
}

impl Params {
    /// Whether the parameters name a mixture (any field given).
    pub fn names_a_mixture(&self) -> bool {
        !(self.weights.is_empty() && self.means.is_empty() && self.covariances.is_empty())
    }
}

/// The oracle.
#[derive(Debug, Clone)]
pub struct GmmOracle {
    mixture: GaussianMixture,
    target: ParamEntry,
    /// Each class's law (component k alone) when the data labels rows by component.
    classes: Option<Vec<GaussianMixture>>,
}

/// The registered parameterization the oracle predicts in.
pub const TARGET: &str = "score";

impl GmmOracle {
    /// An oracle for `mixture`, predicting the score (the `score` parameterization of the
    /// registry in scope, or of the global one).
    pub fn new(mixture: GaussianMixture) -> Result<Self> {
        let target = Registry::current()?
            .entry::<ParamKind>(TARGET, "()", &())
            .map_err(|e| {
                Error::Msg(format!(
                    "gmm_oracle predicts the score through the registered `{TARGET}` parameterization: {e}"
                ))
            })?;
        Ok(Self {
            mixture,
            target,
            classes: None,
        })
    }

    /// This oracle conditional on the component: label k's law is component k alone.
    pub fn conditional(mut self) -> Result<Self> {
        let laws = (0..self.mixture.components())
            .map(|k| self.mixture.component(k))
            .collect::<Result<Vec<_>>>()?;
        self.classes = Some(laws);
        Ok(self)
    }

    /// Builds the oracle from its parameters, or from the exact law of the context's data
    /// (the oracle computes on the host in f64 and answers in its input's dtype and device).
    pub fn from_params(p: Params, ctx: &ModelContext) -> Result<Self> {
        let law = ctx.data.as_ref().and_then(|d| d.source().exact_law());
        if !p.names_a_mixture() {
            return match (law, &ctx.data) {
                (Some(law), Some(data)) if data.source().classes().is_some() => {
                    Self::new(law.clone())?.conditional()
                }
                (Some(law), _) => Self::new(law.clone()),
                (None, Some(_)) => Err(Error::invalid(
                    "gmm_oracle",
                    "weights",
                    "the config's data has no exact law to read; use `data: gmm(...)` (a Gaussian mixture), or a trained model",
                )),
                (None, None) => Err(Error::invalid(
                    "gmm_oracle",
                    "weights",
                    "no mixture: write `data: gmm(weights: ..., means: ..., covariances: ...)` and `model: gmm_oracle()`, or give the mixture here",
                )),
            };
        }
        if law.is_some() {
            return Err(Error::invalid(
                "gmm_oracle",
                "weights",
                "the mixture is named twice: the oracle reads the law of `data: gmm(...)`; write `model: gmm_oracle()`",
            ));
        }
        // The kernel's mixture names itself in errors; the user wrote `gmm_oracle`.
        let mixture =
            GaussianMixture::new(p.weights, p.means, p.covariances).map_err(|e| match e {
                Error::InvalidParam { field, reason, .. } => Error::InvalidParam {
                    plugin: "gmm_oracle".into(),
                    field,
                    reason,
                },
                other => other,
            })?;
        Self::new(mixture)
    }

    /// The mixture p₀.
    pub fn mixture(&self) -> &GaussianMixture {
        &self.mixture
    }

    /// The exact marginal at `c`: score, divergence, log-density, samples.
    pub fn marginal(&self, c: &TimeCoefs) -> Result<Marginal> {
        self.mixture.marginal(c.alpha, c.sigma)
    }

    /// The exact score ∇ log p_t(x) as an f64 tensor on `x`'s device.
    pub fn score(&self, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        let host = host_rows(x)?;
        let s = self.marginal(c)?.score(&host);
        Ok(Tensor::from_vec(s, x.shape(), x.device())?)
    }

    /// The exact score of each row of `x` at its own time, as an f64 tensor on `x`'s device.
    pub fn score_rows(&self, x: &Tensor, rows: &Rows<TimeCoefs>) -> Result<Tensor> {
        let coefs: Vec<(f64, f64)> = rows.values().iter().map(|c| (c.alpha, c.sigma)).collect();
        let s = self.mixture.score_rows(&coefs, &host_rows(x)?)?;
        Ok(Tensor::from_vec(s, x.shape(), x.device())?)
    }
}

/// `x` on the host in f64, row-major.
fn host_rows(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

impl ScoreModel for GmmOracle {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.mixture.dim()]
    }

    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        let d = self.mixture.dim();
        if x.rank() != 2 || x.dim(1)? != d {
            return Err(Error::Shape(format!(
                "gmm_oracle is {d}-dimensional but got input of shape {:?}",
                x.dims()
            )));
        }
        at.time.expect_rows(x.dim(0)?, "gmm_oracle")?;
        if let (Some(laws), Some(cond)) = (&self.classes, cond) {
            return self.class_scores(laws, x, &at.time, cond);
        }
        let score = match &at.time {
            PerRow::Call(c) => self.score(x, c)?,
            PerRow::Rows(rows) => self.score_rows(x, rows)?,
        };
        Ok(score.to_dtype(x.dtype())?)
    }

    fn classes(&self) -> Option<usize> {
        self.classes.as_ref().map(Vec::len)
    }

    fn target(&self) -> Option<ParamEntry> {
        Some(self.target.clone())
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn exact_law(&self) -> Option<&GaussianMixture> {
        Some(&self.mixture)
    }

    fn score_divergence(&self, x: &Tensor, time: &Time) -> Option<Result<(Tensor, Tensor)>> {
        Some(self.exact_rows(x, time, |m, row, out| {
            let e = m.eval_row(row, true);
            out.copy_from_slice(&e.score);
            e.divergence
        }))
    }

    fn score_jvp(
        &self,
        x: &Tensor,
        time: &Time,
        probes: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        Some(self.jvp(x, time, probes))
    }
}

impl GmmOracle {
    /// The score of each row of `x` under its label's law: component k for label k, the
    /// mixture for ∅, evaluated label by label on the rows that carry it.
    fn class_scores(
        &self,
        laws: &[GaussianMixture],
        x: &Tensor,
        time: &Time,
        cond: &Tensor,
    ) -> Result<Tensor> {
        let d = self.mixture.dim();
        let n = x.dim(0)?;
        let labels = cond.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let null = sdeflow_kernel::null_label(laws.len());
        if let Some(bad) = labels.iter().find(|&&y| y > null) {
            return Err(Error::invalid(
                "gmm_oracle",
                "cond",
                format!(
                    "label {bad} is not a class 0 … {} nor ∅ ({null})",
                    laws.len() - 1
                ),
            ));
        }
        let host = host_rows(x)?;
        let mut out = vec![0.0; n * d];
        for label in 0..=null {
            let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == label).collect();
            if rows.is_empty() {
                continue;
            }
            let law = laws.get(label as usize).unwrap_or(&self.mixture);
            let xs: Vec<f64> = rows
                .iter()
                .flat_map(|&i| host[i * d..(i + 1) * d].iter().copied())
                .collect();
            let coefs: Vec<(f64, f64)> = rows
                .iter()
                .map(|&i| {
                    let c = match time {
                        PerRow::Call(c) => c,
                        PerRow::Rows(r) => &r.values()[i],
                    };
                    (c.alpha, c.sigma)
                })
                .collect();
            let s = law.score_rows(&coefs, &xs)?;
            for (j, &i) in rows.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&s[j * d..(j + 1) * d]);
            }
        }
        Ok(Tensor::from_vec(out, x.shape(), x.device())?.to_dtype(x.dtype())?)
    }

    /// Per row of `x` at its time: `f(marginal, row, score_out) -> scalar`; returns the scores
    /// (`x`'s shape, f64) and the scalars (`[n]`, f64).
    fn exact_rows(
        &self,
        x: &Tensor,
        time: &Time,
        f: impl Fn(&Marginal, &[f64], &mut [f64]) -> f64 + Sync,
    ) -> Result<(Tensor, Tensor)> {
        let d = self.mixture.dim();
        let n = x.dim(0)?;
        time.expect_rows(n, "gmm_oracle")?;
        let host = host_rows(x)?;
        let mut score = vec![0.0; host.len()];
        let mut scalar = vec![0.0; n];
        let marginals = self.marginals(time, n)?;
        for (i, (row, out)) in host.chunks(d).zip(score.chunks_mut(d)).enumerate() {
            scalar[i] = f(&marginals[marginal_index(time, i)], row, out);
        }
        Ok((
            Tensor::from_vec(score, x.shape(), x.device())?,
            Tensor::from_vec(scalar, n, x.device())?,
        ))
    }

    /// One marginal per call, or one per row.
    fn marginals(&self, time: &Time, n: usize) -> Result<Vec<Marginal>> {
        match time {
            PerRow::Call(c) => Ok(vec![self.marginal(c)?]),
            PerRow::Rows(rows) => (0..n)
                .map(|i| {
                    self.mixture
                        .marginal(rows.values()[i].alpha, rows.values()[i].sigma)
                })
                .collect(),
        }
    }

    fn jvp(&self, x: &Tensor, time: &Time, probes: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = self.mixture.dim();
        let n = x.dim(0)?;
        let k = probes.dims().get(1).copied().unwrap_or(0);
        let host = host_rows(x)?;
        let v = probes
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if probes.dim(0)? != n || v.len() != k * n * d {
            return Err(Error::Shape(format!(
                "probes of shape {:?} for {n} rows of dimension {d}",
                probes.dims()
            )));
        }
        let marginals = self.marginals(time, n)?;
        let mut score = vec![0.0; n * d];
        let mut jv = vec![0.0; k * n * d];
        for i in 0..n {
            let row_probes: Vec<&[f64]> = (0..k)
                .map(|j| &v[(i * k + j) * d..(i * k + j + 1) * d])
                .collect();
            let (s, jvps) =
                marginals[marginal_index(time, i)].jvp_row(&host[i * d..(i + 1) * d], &row_probes);
            score[i * d..(i + 1) * d].copy_from_slice(&s);
            for (j, p) in jvps.iter().enumerate() {
                jv[(i * k + j) * d..(i * k + j + 1) * d].copy_from_slice(p);
            }
        }
        Ok((
            Tensor::from_vec(score, x.shape(), x.device())?,
            Tensor::from_vec(jv, probes.shape(), x.device())?,
        ))
    }
}

/// The index of row `i`'s marginal in [`GmmOracle::marginals`].
fn marginal_index(time: &Time, i: usize) -> usize {
    match time {
        PerRow::Call(_) => 0,
        PerRow::Rows(_) => i,
    }
}

register_model!(
    "gmm_oracle",
    "exact score of a Gaussian mixture under any linear SDE (the reference for every check)",
    Params,
    GmmOracle::from_params,
);
