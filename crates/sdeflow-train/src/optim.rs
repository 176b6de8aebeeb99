//! AdamW and global-norm clipping over a model's named variables.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var, backprop::GradStore};
use candle_nn::VarMap;
use sdeflow_kernel::{Error, Result, train::AdamWParams};

use crate::inplace::{self, Update};

/// A model's trainable variables by name, in name order.
#[derive(Debug, Clone)]
pub struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    /// The variables of `vm`, sorted by name.
    pub fn new(vm: &VarMap) -> Result<Self> {
        let data = vm
            .data()
            .lock()
            .map_err(|_| Error::Msg("the model's variables are poisoned by a panic".into()))?;
        let sorted: BTreeMap<String, Var> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Self {
            vars: sorted.into_iter().collect(),
        })
    }

    /// The variables, in name order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The gradient of each variable in `grads`, in name order; a variable without one is an
    /// error naming it (the loss does not reach it).
    pub fn grads(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        self.vars
            .iter()
            .map(|(name, var)| {
                grads.get(var.as_tensor()).cloned().ok_or_else(|| {
                    Error::Msg(format!(
                        "variable `{name}` received no gradient from the loss"
                    ))
                })
            })
            .collect()
    }
}

/// Scales `grads` (one per variable, in name order) by min(1, `max_norm`/‖g‖₂), ‖g‖₂ the norm
/// of all of them together, summed in f64 in that order; returns ‖g‖₂ before clipping. A
/// non-finite norm is an error naming the first variable whose gradient is not finite.
pub fn clip_global_norm(params: &Params, grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for ((name, _), g) in params.vars.iter().zip(grads.iter()) {
        let s = match inplace::sum_squares(g) {
            Some(s) => s,
            None => g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?,
        };
        if !s.is_finite() {
            return Err(Error::Msg(format!(
                "the gradient of `{name}` is not finite (its squared norm is {s})"
            )));
        }
        sq += s;
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let scale = max_norm / norm;
        for g in grads.iter_mut() {
            // Each gradient is its own tensor (autograd sums into a fresh one per variable),
            // so scaling it in place changes nothing else.
            if inplace::fits(&[g]) && !g.track_op() {
                g.inplace_op1(&Update::Scale(scale))?;
            } else {
                *g = g.affine(scale, 0.0)?;
            }
        }
    }
    Ok(norm)
}

/// AdamW (Loshchilov & Hutter 2019, Algorithm 2, as PyTorch computes it): with gradient g at
/// step n = 1, 2, …, m ← β₁ m + (1 − β₁) g, v ← β₂ v + (1 − β₂) g²,
/// θ ← θ − lr (m̂/(√v̂ + ε) + wd θ), m̂ = m/(1 − β₁ⁿ), v̂ = v/(1 − β₂ⁿ). The moments and n are
/// the checkpointable state ([`state`](Self::state), [`load_state`](Self::load_state)).
#[derive(Debug)]
pub struct AdamW {
    hp: AdamWParams,
    params: Params,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// An optimizer for `params` with zero moments at step 0; an error for hyperparameters
    /// outside their ranges (β in [0, 1), ε > 0, weight decay ≥ 0).
    pub fn new(params: Params, hp: AdamWParams) -> Result<Self> {
        hp.validate()?;
        let zeros = |(_, v): &(String, Var)| v.as_tensor().zeros_like();
        let m = params
            .vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = params
            .vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            hp,
            params,
            m,
            v,
            step: 0,
        })
    }

    /// The variables it steps.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One step with learning rate `lr` and `grads` (one per variable, in name order, as
    /// [`Params::grads`] gives them and [`clip_global_norm`] scales them).
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.params.vars.len() {
            return Err(Error::Msg(format!(
                "{} gradients for {} variables",
                grads.len(),
                self.params.vars.len()
            )));
        }
        self.step += 1;
        let n = self.step as i32;
        let AdamWParams {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.hp;
        let (bc1, bc2) = (1.0 - beta1.powi(n), 1.0 - beta2.powi(n));
        for (i, ((_, var), g)) in self.params.vars.iter().zip(grads).enumerate() {
            // The moments stay off autograd's graph (a gradient may carry one), or each
            // would hold the previous step's tensors alive.
            let g = &g.detach();
            let theta = var.as_tensor();
            if inplace::fits(&[theta, g, &self.m[i], &self.v[i]]) {
                // One pass each over m, v and θ, in place (θ's storage is the variable's).
                let moment = |beta, square| Update::Moment { beta, square };
                self.m[i].inplace_op2(g, &moment(beta1, false))?;
                self.v[i].inplace_op2(g, &moment(beta2, true))?;
                let adam = Update::Adam {
                    lr,
                    decay: weight_decay,
                    bc1,
                    bc2,
                    eps,
                };
                theta.inplace_op3(&self.m[i], &self.v[i], &adam)?;
                continue;
            }
            let m = self.m[i]
                .affine(beta1, 0.0)?
                .add(&g.affine(1.0 - beta1, 0.0)?)?;
            let v = self.v[i]
                .affine(beta2, 0.0)?
                .add(&g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let m_hat = m.affine(1.0 / bc1, 0.0)?;
            let denom = v.affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, eps)?;
            let next = theta
                .affine(1.0 - lr * weight_decay, 0.0)?
                .sub(&m_hat.div(&denom)?.affine(lr, 0.0)?)?;
            var.set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The checkpointable state: `m.<name>` and `v.<name>` for every variable, and the step.
    /// The tensors are copies: the moments are updated in place.
    pub fn state(&self) -> Result<(Vec<(String, Tensor)>, u64)> {
        let mut out = Vec::with_capacity(2 * self.m.len());
        for (i, (name, _)) in self.params.vars.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].copy()?));
            out.push((format!("v.{name}"), self.v[i].copy()?));
        }
        Ok((out, self.step))
    }

    /// Restores [`state`](Self::state): every moment must be present with its variable's shape
    /// (an error naming the tensor and both shapes otherwise), and then all are set at once.
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        let mut m = Vec::with_capacity(self.m.len());
        let mut v = Vec::with_capacity(self.v.len());
        for (name, var) in &self.params.vars {
            for (key, into) in [(format!("m.{name}"), &mut m), (format!("v.{name}"), &mut v)] {
                let t = tensors.get(&key).ok_or_else(|| {
                    Error::Msg(format!("the optimizer state has no tensor `{key}`"))
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::Shape(format!(
                        "optimizer tensor `{key}` has shape {:?}, its variable {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                // A copy of its own: the moments are updated in place.
                into.push(t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?);
            }
        }
        (self.m, self.v, self.step) = (m, v, step);
        Ok(())
    }
}
