//! UniPC: the unified predictor–corrector multistep exponential integrator of the PF-ODE in
//! x̂₀ (data prediction), 1 NFE per step.
//!
//! # Formula
//! MATH.md §5 (exponential integrators) on the grid t_0 = T > … > t_N = t_ε, in
//! λ = log(α/σ). Step i (t_i → t_{i+1}) evaluates the model ONCE, m_i = x̂₀(x̃_i, t_i), at the
//! point x̃_i the previous step predicted. Every update is one exponential-integrator step
//! E from t to s (h = λ_s − λ_t > 0) from x with the evaluation m₀ at t and nodes (λ_k, m_k):
//! `E = (σ_s/σ_t) x + α_s (1 − e^{−h}) m₀ + α_s B̄(h) Σ_k a_k D_k`,
//! `D_k = (m_k − m₀)/r_k`, `r_k = (λ_k − λ_t)/h`, with B̄(h) = −B(−h) (the paper's B(h) at the
//! data-prediction step −h): `bh1` B̄ = h, `bh2` B̄ = 1 − e^{−h} (= −expm1(−h)). The weights
//! solve `Σ_k a_k r_k^{j−1} = b_j`, j = 1..K, with `b_j = j! φ_{j+1}(−h)/β`, β = 1 (`bh1`) or
//! φ₁(−h) (`bh2`), φ_k(z) = (e^z − Σ_{j<k} z^j/j!)/z^k (its Taylor series for |z| < 1); a
//! single node takes a₁ = 1/2, as the reference code does (exact to O(h), enough for the order).
//! - UniC (`corrector`, step i ≥ 1): the previous step is redone from its corrected start with
//!   the new evaluation as the node r = 1:
//!   `x_i = E(t_{i−1} → t_i; x_{i−1}, m_{i−1}; (λ_{i−1−k}, m_{i−1−k}) k < q, (λ_i, m_i))`,
//!   q the previous step's predictor order (UniC-q, order q + 1). m_i stays the evaluation at
//!   the uncorrected x̃_i (the reference code's convention): NFE per step stays 1.
//! - UniP: `x̃_{i+1} = E(t_i → t_{i+1}; x_i, m_i; (λ_{i−k}, m_{i−k}), k = 1..p−1)`, order p.
//!   UniP-1 is DDIM(η = 0) in both variants; UniP-2 with `bh2` is DPM-Solver++(2M).
//! - Orders: p_i = min(`order`, i + 1) (warm-up: the history holds i evaluations), and with
//!   `lower_order_final` on runs of N < 15 steps p_i ≤ N − i (the last steps at orders 2, 1).
//!   The last step's result is not corrected (no further evaluation).
//!
//! The returned state's history holds the last `order` evaluations (λ, x̂₀), oldest first, and
//! `unipc.x_prev` the corrected start x_i of the step just taken (kept only with the
//! corrector). A history handed to step 0 is ignored; a later step errs on one that is not
//! this run's (λ not increasing below λ_t, evaluations without `unipc.x_prev`, another shape).
//!
//! # Parameters
//! - `order`: UniP's order p, 1, 2 or 3. Default 3 (measured below: at equal steps it is the
//!   more accurate; diffusers recommends 3 for unconditional sampling, 2 for guided).
//! - `variant`: `bh1` (B(h) = h) or `bh2` (B(h) = e^h − 1). Default `bh2`.
//! - `corrector`: UniC on each step's result. Default true.
//! - `lower_order_final`: lower the last orders on runs of fewer than 15 steps. Default true.
//!
//! # Claims
//! 1 NFE per step (N per run); deterministic; integrates the PF-ODE; not affine (it reads the
//! history); the order on the λ-uniform (log-SNR) grid: p + 1 with the corrector, p without,
//! except `order: 3` without it, claimed 2 (below). Conformance measures (pathwise error
//! against the Gaussian's exact flow, N = 16 … 4096, every smooth SDE): default 3.97–3.98;
//! `order: 2` 3.00; `order: 2, corrector: false` 2.00; `order: 1` 2.00; `bh1` as `bh2`.
//!
//! Warm-up caps the asymptotic order: step 0 is UniP-1, corrected by UniC-1 to a local error
//! O(h³) (O(h²) uncorrected), which caps a run at order 3 with the corrector and 2 without.
//! On the built-in SDEs the cap hides below 1e-11 for the default (α_T ≤ 0.02: x̂₀ barely
//! moves over the first steps), so it measures 4; on the OU SDE of the tests (λ_T = −0.93)
//! error ratios per doubling fall 14.8, 14.6, 13.9, 12.8, 11.4, 10.1 from N = 64 to 4096,
//! toward order 3 (ratio 8). Without the corrector, `order: 3` falls at order 4 and then bends to order 2 within
//! N ≤ 4096 (fits over N = 1024–4096: 0.9 on edm, 1.7 on ve, 3.6 on vp; OU: 2.00), so it
//! claims its asymptotic 2 and is not a registered variant.
//!
//! Default: λ-uniform steps by claimed order: 50 (order 4), 100 (3), 200 (2), 500 (1). At 50
//! steps the default's paired RMS error vs RK4 is at most 0.0042 on `ring` (floor threshold
//! 0.139) and 0.0198 on `mix8` (threshold 0.073), SW2 ≤ 0.061 on `ring` and ≤ 0.020 on `mix8`,
//! on every SDE; at 40 steps `mix8` reaches 0.043 (sub_vp), at 30 it fails (0.082). `order: 2`
//! at 50 steps reaches 0.060 on `mix8`, at 40 fails (0.081); at 10 steps (orders lowered at
//! the end) order 2 is the better: paired error on `ring` 0.035–0.18 against 0.098–0.37.
//!
//! # References
//! Zhao, Bai, Rao, Zhou & Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models", NeurIPS 2023, §3 (UniC-p, UniP-p, the B(h) choices) and the
//! multistep data-prediction algorithms of its appendix; the authors' code (wl-zhao/UniPC,
//! `uni_pc.py`, `multistep_uni_pc_bh_update`: warm-up with orders 1, 2, …, the 1 × 1 weights
//! 1/2, no corrector after the last step); diffusers' `UniPCMultistepScheduler` (corrector at
//! the start of the next step with the previous order, model output at the uncorrected point
//! kept). Both lower the final orders at every N; this plugin does so below 15 steps only,
//! as diffusers documents (and does for DPM-Solver multistep): at every N the last UniP-1 step
//! would cap the order at 2. Lu et al., "DPM-Solver++", 2022, Alg. 2 (UniP-2 with bh2).

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, HistoryEntry, Order, Result, Solver,
    SolverClaims, State, Step, StepContext, TimeCoefs,
    ops::{lin2, lin3},
    previous_evaluations, register_solver,
};
use serde::{Deserialize, Serialize};

/// The extra holding the corrected start point of the previous step, x^c_{t_{i−1}}.
pub const X_PREV: &str = "unipc.x_prev";

/// The lowest step count at which `lower_order_final` no longer lowers the last orders.
const LOWER_ORDER_FINAL_BELOW: usize = 15;

/// The choice of B(h) in the coefficient systems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "VariantName")]
pub enum Variant {
    /// B(h) = h.
    Bh1,
    /// B(h) = e^h − 1.
    #[default]
    Bh2,
}

/// A variant as written: anything but `bh1` and `bh2` is an error naming the field.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum VariantName {
    Bh1,
    Bh2,
    #[serde(other)]
    Other,
}

impl TryFrom<VariantName> for Variant {
    type Error = Error;
    fn try_from(name: VariantName) -> Result<Self> {
        match name {
            VariantName::Bh1 => Ok(Self::Bh1),
            VariantName::Bh2 => Ok(Self::Bh2),
            VariantName::Other => Err(Error::invalid(
                "unipc",
                "variant",
                "use `bh1` (B(h) = h) or `bh2` (B(h) = e^h − 1)",
            )),
        }
    }
}

/// UniPC's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The predictor's order p (1, 2 or 3).
    pub order: usize,
    /// B(h): `bh1` or `bh2`.
    pub variant: Variant,
    /// Whether UniC corrects each step's result with the next step's evaluation.
    pub corrector: bool,
    /// Whether runs of fewer than 15 steps lower the order of their last steps.
    pub lower_order_final: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            order: 3,
            variant: Variant::Bh2,
            corrector: true,
            lower_order_final: true,
        }
    }
}

/// UniPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unipc {
    p: Params,
}

impl Unipc {
    /// Checks the order: 1, 2 or 3.
    pub fn new(p: Params) -> Result<Self> {
        if !(1..=3).contains(&p.order) {
            return Err(Error::invalid(
                "unipc",
                "order",
                format!(
                    "order = {} is not supported: UniP's order must be 1, 2 or 3",
                    p.order
                ),
            ));
        }
        Ok(Self { p })
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.p
    }

    /// The predictor's order on step `step` of `steps`: `order`, lowered to `step + 1` while the
    /// history warms up and, with `lower_order_final` on fewer than 15 steps, to `steps − step`.
    pub fn step_order(&self, step: usize, steps: usize) -> usize {
        let mut p = self.p.order.min(step + 1);
        if self.p.lower_order_final && steps < LOWER_ORDER_FINAL_BELOW && step < steps {
            p = p.min(steps - step);
        }
        p
    }

    /// The claimed ODE order (`# Claims`): p + 1 with the corrector, p without, except p = 3
    /// without it, which the first step's UniP-1 caps at 2.
    pub fn order(&self) -> usize {
        match (self.p.order, self.p.corrector) {
            (3, false) => 2,
            (p, c) => p + usize::from(c),
        }
    }

    /// B̄(h) = −B(−h): h for `bh1`, 1 − e^{−h} for `bh2`.
    fn b_bar(&self, h: f64) -> f64 {
        match self.p.variant {
            Variant::Bh1 => h,
            Variant::Bh2 => -(-h).exp_m1(),
        }
    }

    /// The weights a_k of the differences D_k at the nodes `r` (r_k = (λ_k − λ_t)/h): the
    /// solution of Σ_k a_k r_k^{j−1} = b_j, j = 1..K, b_j = j! φ_{j+1}(−h)/β with β = 1 (`bh1`)
    /// or φ₁(−h) (`bh2`); a single node takes a₁ = 1/2.
    fn weights(&self, h: f64, r: &[f64]) -> Vec<f64> {
        if r.len() == 1 {
            return vec![0.5];
        }
        let beta = match self.p.variant {
            Variant::Bh1 => 1.0,
            Variant::Bh2 => phi(1, -h),
        };
        let mut factorial = 1.0;
        let b: Vec<f64> = (1..=r.len())
            .map(|j| {
                factorial *= j as f64;
                factorial * phi(j + 1, -h) / beta
            })
            .collect();
        let vandermonde: Vec<Vec<f64>> = (0..r.len())
            .map(|j| r.iter().map(|rk| rk.powi(j as i32)).collect())
            .collect();
        solve(vandermonde, b)
    }

    /// E (`# Formula`): one exponential-integrator step t → s from `x` with the evaluation
    /// `m0` at t and the nodes `others` = (λ_k, x̂₀_k).
    fn update(
        &self,
        t: &TimeCoefs,
        s: &TimeCoefs,
        x: &Tensor,
        m0: &Tensor,
        others: &[(f64, &Tensor)],
    ) -> Result<Tensor> {
        let h = s.lambda - t.lambda;
        let x_coef = s.sigma / t.sigma;
        let mut m0_coef = -s.alpha * (-h).exp_m1();
        if others.is_empty() {
            return lin2(x_coef, x, m0_coef, m0);
        }
        let r: Vec<f64> = others.iter().map(|(l, _)| (l - t.lambda) / h).collect();
        let scale = s.alpha * self.b_bar(h);
        let mut terms = Vec::with_capacity(others.len());
        for ((_, m), (a, rk)) in others.iter().zip(self.weights(h, &r).into_iter().zip(&r)) {
            m0_coef -= scale * a / rk;
            terms.push((scale * a / rk, *m));
        }
        let mut out = lin2(x_coef, x, m0_coef, m0)?;
        for pair in terms.chunks(2) {
            out = match pair {
                [(a, u), (b, v)] => lin3(1.0, &out, *a, u, *b, v)?,
                [(a, u)] => lin2(1.0, &out, *a, u)?,
                _ => unreachable!("chunks of two"),
            };
        }
        Ok(out)
    }
}

/// φ_k(z) = (e^z − Σ_{j<k} z^j/j!)/z^k (φ_k(0) = 1/k!), by its Taylor series for |z| < 1.
fn phi(k: usize, z: f64) -> f64 {
    if z.abs() < 1.0 {
        let (mut term, mut sum) = (1.0, 0.0);
        for j in 1..=k {
            term /= j as f64;
        }
        for j in 0..40 {
            sum += term;
            term *= z / (j + k + 1) as f64;
        }
        return sum;
    }
    let (mut partial, mut term) = (0.0, 1.0);
    for j in 0..k {
        partial += term;
        term *= z / (j + 1) as f64;
    }
    (z.exp() - partial) / z.powi(k as i32)
}

/// Solves the K × K system `a x = b` (K ≤ 3) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (pivot_row, pivot_b) = (a[col].clone(), b[col]);
        for (row, b_row) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            *b_row -= f * pivot_b;
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x
}

/// The error for a history that is not this run's.
fn foreign(why: String) -> Error {
    Error::Msg(format!(
        "unipc: {why}: the state's history is not from the previous step of this run; start \
         from a state with an empty history"
    ))
}

impl Solver for Unipc {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Ode(self.order() as f64),
            nfe_per_step: 1,
            stochastic: false,
            affine: false,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::LogSnr,
        }
    }

    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: match self.order() {
                4 => 50,
                3 => 100,
                2 => 200,
                _ => 500,
            },
            grid: GridKind::LogSnr,
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let from = &ctx.from;
        let m_now = ctx.eval(&state.x, from)?.x0()?;
        // The first step starts afresh: a history handed to it is not this run's.
        let history: &[HistoryEntry] = if ctx.step == 0 { &[] } else { &state.history };
        previous_evaluations(history, from, history.len(), false, "unipc")?;
        // UniC: redo the previous step from its corrected start with this evaluation included.
        let x = match (self.p.corrector, history.split_last()) {
            (true, Some((last, older))) => {
                let x_prev = state.extras.get(X_PREV).ok_or_else(|| {
                    foreign(format!("the history holds evaluations but no `{X_PREV}`"))
                })?;
                if x_prev.shape() != state.x.shape() {
                    return Err(foreign(format!(
                        "`{X_PREV}` has shape {:?}, x has {:?}",
                        x_prev.dims(),
                        state.x.dims()
                    )));
                }
                let q = self.step_order(ctx.step - 1, ctx.steps).min(history.len());
                let mut nodes: Vec<(f64, &Tensor)> = older
                    .iter()
                    .rev()
                    .take(q - 1)
                    .map(|e| (e.lambda, &e.x0_hat))
                    .collect();
                nodes.push((from.lambda, &m_now));
                let prev = ctx.coefs(last.t);
                self.update(&prev, from, x_prev, &last.x0_hat, &nodes)?
            }
            _ => state.x.clone(),
        };
        // UniP from the corrected start with the same evaluation.
        let p = self.step_order(ctx.step, ctx.steps).min(history.len() + 1);
        let nodes: Vec<(f64, &Tensor)> = history
            .iter()
            .rev()
            .take(p - 1)
            .map(|e| (e.lambda, &e.x0_hat))
            .collect();
        let x_next = self.update(from, &ctx.to, &x, &m_now, &nodes)?;
        let mut next = state.with_x(x_next);
        let keep = history.len().min(self.p.order - 1);
        next.history = history[history.len() - keep..].to_vec();
        next.history.push(HistoryEntry::x0(from, m_now));
        if self.p.corrector {
            next.extras.insert(X_PREV.into(), x);
        } else {
            next.extras.remove(X_PREV);
        }
        Ok(Step::to(next))
    }
}

register_solver!(
    "unipc",
    "UniPC: unified predictor–corrector multistep exponential integrator of the PF-ODE in x̂₀, 1 NFE per step",
    Params,
    Unipc::new,
    variants: ["(order: 2)", "(order: 2, corrector: false)", "(order: 1)", "(variant: bh1)"]
);
