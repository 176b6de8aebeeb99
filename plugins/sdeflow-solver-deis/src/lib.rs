//! DEIS (tAB): the multistep exponential integrator of the PF-ODE in ε̂, with ε̂ extrapolated
//! by a Lagrange polynomial in t.
//!
//! # Formula
//! MATH.md §2, §3 and §5. With ∇log p = −ε/σ the PF-ODE is dx/dt = f x + (g²/(2σ)) ε̂, whose
//! linear part integrates exactly (∫ f = log α). A step t → s < t reads
//! `x_s = (α_s/α_t) x_t + Σ_j C_j ε̂_j`,  `C_j = ∫_t^s (α_s/α_τ) (g²(τ)/(2σ_τ)) ℓ_j(τ) dτ`,
//! with ε̂_0 = ε̂(x_t, t) this step's ONE model evaluation, ε̂_1, ε̂_2 the previous steps' (the
//! state's history, at t_1 > t_2 above t) and ℓ_j the Lagrange basis in t through the q nodes
//! t, t_1, …. Since (α_s/α_τ) g²/(2σ_τ) = α_s dσ̃/dτ (σ̃ = σ/α, and g² = −2σ² dλ/dt):
//! `C_j = D ∫_s^t w ℓ_j dτ / ∫_s^t w dτ`, w = dσ̃/dτ = g²/(2σα) > 0,
//! `D = α_s (σ̃_s − σ̃_t) = −σ_s expm1(h)`, h = λ_s − λ_t,
//! so Σ_j C_j = D exactly and q = 1 is DDIM(η = 0): `x_s = (α_s/α_t) x_t − σ_s expm1(h) ε̂_0`.
//!
//! The integrals (no closed form in t on a general SDE) are computed together by adaptive
//! 8-point Gauss–Legendre in t, split at the SDE's knots, the basis evaluated on offsets from
//! t (so the rounding of τ − t_k does not enter it). A piece is accepted when its value and
//! its halves' agree within 10⁻¹² of the step's largest integral, prorated by length, and the
//! halves' are kept: their error is below that difference, and ~2⁻¹⁶ of it where the
//! integrand is smooth over the piece (Gauss error ∝ length¹⁷), so ~10⁻¹⁷ of the integral,
//! against a local error of the method above 10⁻⁸ of the step at N = 4,096. Work is capped
//! at 200 bisections per step (then the last halves are kept).
//!
//! Warm-up and the final steps: q = min(`order`, step + 1); with fewer than 15 steps the last
//! step has q = 1 and the one before q ≤ 2 (diffusers' `lower_order_final`). At `order` 3 the
//! warm-up's first (DDIM) step leaves a local error O(h² dε̂/dλ|_T) = O(h² SNR(T)), which makes
//! the global error O(h²) as N grows: the tail fit reads 2.30 on ve's λ-uniform grid and 2.45
//! on the OU test SDE's (SNR(T) = 0.16). So at order 3, step 1 (at t, after t_1 = T) also
//! corrects step 0 by the linear polynomial through (t_1, ε̂_1) and (t, ε̂_0) on [t, t_1], the
//! trapezoid rule of this basis evaluated once (no extra NFE): it adds
//! `(α_s/α_t) D_1 W (ε̂_0 − ε̂_1)`, `D_1 = −σ_t expm1(λ_t − λ_1)`,
//! `W = ∫_t^{t_1} w ℓ / ∫_t^{t_1} w`, ℓ(τ) = (τ − t_1)/(t − t_1).
//! Step 0 then has local error O(h³) (ε̂_0 was read at its uncorrected end, an O(h²) offset
//! that later steps weigh by O(h)), and the global order is 3. Neither peer does this.
//! The returned history holds the last `order` − 1 evaluations (`HistoryEntry::both`, ε̂ with
//! its t), oldest first; the input state is never changed.
//!
//! # Parameters
//! - `order`: q, the number of ε̂ values the polynomial passes through, 1..=3; 1 is DDIM.
//!   Default 3.
//!
//! # Claims
//! ODE order `order` on the probability-flow ODE, on the Karras grid (ρ = 7); 1 NFE per
//! step; deterministic; not a one-step affine map (the step reads the previous ε̂).
//! Measured tail fits (N ≤ 4,096, the conformance single Gaussian) at order 3 on the Karras
//! grid: edm 2.99, linear_flow 3.00, sub_vp 3.00, ve 3.00, vp 2.99, vp_cosine 2.99; orders 1
//! and 2 read 0.999 and 2.00 on every SDE. On the λ-uniform grid ve reads 3.72 (its errors
//! fall nearly like N⁻⁴ down to the 1e-11 floor: the N⁻³ term is small there), the others 2.99–3.00;
//! on the t-uniform grid the λ-steps near t_ε do not shrink like 1/N (vp 2.43, ve 1.21).
//! Default: 60 Karras (ρ = 7) steps (60 NFE), the fewest of 30, 40, …, 100 whose paired RMS
//! error against RK4 stays within half the SW2 floor's bar on every SDE and mixture. At 60:
//! the worst is mix8 on edm, 0.028 against 0.073 (trajectories that end in another mode;
//! vp_cosine 0.019, the rest ≤ 0.012), ring ≤ 0.0045 against 0.139; SW2 ring
//! 0.055–0.060 and mix8 0.015–0.020, against bars 0.139 and 0.073. At 50, edm's mix8 reads
//! 0.051 (0.70 of its bar); on the λ-uniform grid mix8 needs 80 steps.
//!
//! # References
//! Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR 2023
//! (tAB-DEIS: the exponential integrator in ε̂ with its C_ij from the Lagrange basis in t);
//! their code github:qsh-zh/deis, `th_deis/multistep.py` `get_ab_eps_coef` (the C_ij by a
//! 10,000-point left Riemann sum in t, first order in its spacing; warm-up by orders 1, 2, …;
//! its `ab_order` r is `order` − 1 here) and `sampler.py` `get_rev_ts` (`ts_phase="rho"`: the
//! Karras grid). diffusers `DEISMultistepScheduler` (`solver_order` = `order`; its `logrho`
//! variant puts the polynomial in log σ̃ and integrates it in σ̃ in closed form, a different
//! method; `lower_order_final` below 15 steps, followed here).

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, HistoryEntry, Order, Result, Solver,
    SolverClaims, State, Step, StepContext,
    ops::{lin2, lin3},
    previous_evaluations, register_solver,
};
use serde::{Deserialize, Serialize};

/// DEIS's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The number of ε̂ values the extrapolating polynomial passes through, 1..=3.
    pub order: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self { order: 3 }
    }
}

/// DEIS tAB of a given order.
#[derive(Debug, Clone, Copy)]
pub struct Deis {
    order: usize,
}

impl Deis {
    /// Checks `order` ∈ 1..=3.
    pub fn new(p: Params) -> Result<Self> {
        if !(1..=3).contains(&p.order) {
            return Err(Error::invalid(
                "deis",
                "order",
                format!(
                    "order = {} must be 1, 2 or 3 (1 is DDIM, 3 the third-order tAB)",
                    p.order
                ),
            ));
        }
        Ok(Self { order: p.order })
    }

    /// The order.
    pub fn order(&self) -> usize {
        self.order
    }
}

impl Default for Deis {
    fn default() -> Self {
        Self { order: 3 }
    }
}

/// 8-point Gauss–Legendre on [−1, 1]: the positive nodes and their weights.
const GAUSS_X: [f64; 4] = [
    0.183_434_642_495_649_8,
    0.525_532_409_916_329,
    0.796_666_477_413_626_7,
    0.960_289_856_497_536_3,
];
const GAUSS_W: [f64; 4] = [
    0.362_683_783_378_362,
    0.313_706_645_877_887_3,
    0.222_381_034_453_374_5,
    0.101_228_536_290_376_3,
];
/// A piece is accepted when its value and its halves' agree within this fraction of the
/// step's largest integral, prorated by length.
const TOL: f64 = 1e-12;
/// Bisections allowed per step.
const MAX_SPLITS: usize = 200;

/// The quadrature of one step: t, the nodes as offsets d_k = t_k − t (d_0 = 0), and how many
/// more pieces it may split (a bound on the work whatever the integrand).
struct Quadrature<'c, 'a> {
    ctx: &'c StepContext<'a>,
    t: f64,
    offsets: Vec<f64>,
    splits_left: usize,
}

impl Quadrature<'_, '_> {
    /// `[∫ w, ∫ w ℓ_0, ∫ w ℓ_1, ∫ w ℓ_2]` over τ ∈ t + [a, b] by 8-point Gauss–Legendre,
    /// w = dσ̃/dτ = g²/(2σα). The basis is evaluated on offsets from t, so that the rounding of
    /// τ − t_k (1e-16 t, against steps down to 1e-4 t) does not enter it.
    fn gauss(&self, a: f64, b: f64) -> [f64; 4] {
        let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
        let mut out = [0.0; 4];
        for (x, wt) in GAUSS_X.iter().zip(GAUSS_W) {
            for o in [mid - half * x, mid + half * x] {
                let c = self.ctx.coefs(self.t + o);
                let w = wt * half * c.g2 / (2.0 * c.sigma * c.alpha);
                out[0] += w;
                for (j, &dj) in self.offsets.iter().enumerate() {
                    let basis: f64 = self
                        .offsets
                        .iter()
                        .filter(|&&dk| dk != dj)
                        .map(|&dk| (o - dk) / (dj - dk))
                        .product();
                    out[j + 1] += w * basis;
                }
            }
        }
        out
    }

    /// Adds the integrals over t + [a, b] (whose one-piece value is `whole`) to `sum`,
    /// bisecting until a piece and its halves agree within `tol`.
    fn adapt(&mut self, (a, b): (f64, f64), whole: [f64; 4], tol: f64, sum: &mut [f64; 4]) {
        let m = 0.5 * (a + b);
        let (left, right) = (self.gauss(a, m), self.gauss(m, b));
        let diff = (0..4).map(|k| (whole[k] - left[k] - right[k]).abs());
        if self.splits_left == 0 || diff.fold(0.0, f64::max) <= tol {
            (0..4).for_each(|k| sum[k] += left[k] + right[k]);
        } else {
            self.splits_left -= 1;
            self.adapt((a, m), left, 0.5 * tol, sum);
            self.adapt((m, b), right, 0.5 * tol, sum);
        }
    }
}

/// `∫_s^t w ℓ_j / ∫_s^t w` for the Lagrange basis through `nodes`.
fn weights(ctx: &StepContext<'_>, nodes: &[f64], (s, t): (f64, f64)) -> Vec<f64> {
    let mut cuts = vec![s - t];
    let knots = ctx.sde.knots().into_iter().filter(|&k| s < k && k < t);
    cuts.extend(knots.map(|k| k - t));
    cuts.push(0.0);
    let offsets = nodes.iter().map(|&tk| tk - t).collect();
    let mut quad = Quadrature {
        ctx,
        t,
        offsets,
        splits_left: MAX_SPLITS,
    };
    let mut sum = [0.0; 4];
    for piece in cuts.windows(2) {
        let whole = quad.gauss(piece[0], piece[1]);
        let scale = whole.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
        let tol = TOL * scale * (piece[1] - piece[0]) / (t - s);
        quad.adapt((piece[0], piece[1]), whole, tol, &mut sum);
    }
    (0..nodes.len()).map(|j| sum[j + 1] / sum[0]).collect()
}

impl Solver for Deis {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Ode(self.order as f64),
            nfe_per_step: 1,
            stochastic: false,
            affine: false,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::Karras { rho: 7.0 },
        }
    }

    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 60,
            grid: GridKind::Karras { rho: 7.0 },
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (from, to) = (&ctx.from, &ctx.to);
        let want = (self.order - 1).min(ctx.step);
        let prev = previous_evaluations(&state.history, from, want, true, "deis")?;
        let mut q = self.order.min(prev.len() + 1);
        if ctx.steps < 15 && ctx.step < ctx.steps {
            q = q.min(ctx.steps - ctx.step);
        }
        let pred = ctx.eval(&state.x, from)?;
        let eps = pred.eps()?;
        let x_coef = to.alpha / from.alpha;
        // c[j]: the coefficient of ε̂_j (ε̂_0 now, ε̂_1, ε̂_2 the history's, newest first).
        let d = -to.sigma * (to.lambda - from.lambda).exp_m1();
        let mut c = vec![d];
        if q > 1 {
            let nodes: Vec<f64> = std::iter::once(from.t)
                .chain(prev[..q - 1].iter().map(|e| e.t))
                .collect();
            c = weights(ctx, &nodes, (to.t, from.t))
                .iter()
                .map(|w| d * w)
                .collect();
        }
        if let (3, 1, Some(p)) = (self.order, ctx.step, prev.first()) {
            // Correct step 0 (DDIM from t_1 = p.t) by the linear polynomial through (t_1, ε̂_1)
            // and (t, ε̂_0) on [t, t_1], carried to s by α_s/α_t (see # Formula).
            let d1 = -from.sigma * (from.lambda - p.lambda).exp_m1();
            let k = x_coef * d1 * weights(ctx, &[p.t, from.t], (from.t, p.t))[1];
            c.resize(2, 0.0);
            c[0] += k;
            c[1] -= k;
        }
        let eps_of = |j: usize| prev[j - 1].eps_hat.as_ref().expect("checked by `previous`");
        let x = match c[..] {
            [c0] => lin2(x_coef, &state.x, c0, &eps)?,
            [c0, c1] => lin3(x_coef, &state.x, c0, &eps, c1, eps_of(1))?,
            [c0, c1, c2] => {
                let older = lin2(c1, eps_of(1), c2, eps_of(2))?;
                lin3(x_coef, &state.x, c0, &eps, 1.0, &older)?
            }
            _ => unreachable!("order ≤ 3"),
        };
        let mut next = state.with_x(x);
        let mut history: Vec<HistoryEntry> = prev.into_iter().rev().cloned().collect();
        history.push(HistoryEntry::both(from, pred.x0()?, eps));
        next.history = history.split_off(history.len().saturating_sub(self.order - 1));
        Ok(Step::to(next))
    }
}

register_solver!(
    "deis",
    "DEIS tAB: multistep exponential integrator of the PF-ODE in ε̂, order 1–3, 1 NFE per step",
    Params,
    Deis::new
);
