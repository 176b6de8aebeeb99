//! The weak error by exact propagation (DESIGN.md "Measuring sample quality honestly" (a) and
//! "Decisions"): every affine solver maps the single Gaussian N(m, s² I) to a Gaussian, so the
//! law after N steps of the plugin's own step is propagated exactly and compared with the
//! exact marginal by the closed-form W2 — a weak error with no sampling noise. It must fall at
//! the claimed weak order; a predictor–corrector that claims a plateau is checked against the
//! closed-form Langevin plateau instead.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Denoiser, ForwardSde, GridKind, Result, RunContext, ScoreModel, Solver, State, StepSpan,
    TimeCoefs, bail,
    noise::{ConstantNoise, NoiseRequest, NoiseSource},
};

use super::{
    Case,
    fixture::{Fixture, RUN_SEED, rows_f64},
    order::{ORDER_STEPS, OrderFit, claimed_order, order_rows},
};
use crate::{
    Target,
    mixtures::{SINGLE_STD, single_gaussian, single_law},
    report::{Report, num},
};

/// Noise that is 1 on the `k`-th call of a step and 0 on the others: reads the coefficient of
/// each draw of a step separately.
#[derive(Debug)]
struct UnitDraw(u64);

impl NoiseSource for UnitDraw {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = if req.index_in_step == self.0 {
            1.0
        } else {
            0.0
        };
        Ok(Tensor::full(v, (req.rows, req.cols), device)?.to_dtype(dtype)?)
    }
}

/// The tensors a step carries forward besides x, in a fixed order: each history entry's x̂₀,
/// then its ε̂ when kept. A multistep method's next x is affine in x and these.
fn carried(state: &State) -> Vec<&Tensor> {
    state
        .history
        .iter()
        .flat_map(|h| std::iter::once(&h.x0_hat).chain(h.eps_hat.as_ref()))
        .collect()
}

/// `like`'s structure (history times, which entries keep ε̂) with x and every carried tensor
/// replaced from `values` (x first, then [`carried`]'s order), each `[rows, d]`.
fn with_values(like: &State, values: &[Tensor]) -> State {
    let mut state = like.with_x(values[0].clone());
    let mut next = values[1..].iter();
    for h in &mut state.history {
        if let Some(v) = next.next() {
            h.x0_hat = v.clone();
        }
        if h.eps_hat.is_some()
            && let Some(v) = next.next()
        {
            h.eps_hat = Some(v.clone());
        }
    }
    state
}

/// The law after `steps` steps on the single Gaussian, propagated exactly. The state a step
/// carries, v = (x, then the history's x̂₀ and ε̂ in [`carried`]'s order), is jointly Gaussian
/// per coordinate, and each step of the plugin is v' = b + M v + Σ_k c_k z_k. The step is read
/// off on probe rows — all zero, then each component of v one in turn — with all noise 0, then
/// from the zero row with the k-th draw 1 and the others 0; the mean and the covariance of v
/// then propagate without sampling. The history is threaded from step to step, so multistep
/// methods are measured too. Returns (mean, variance) of x per coordinate and the exact
/// marginal's coefficients at t_ε.
fn propagate_exactly(
    sde: &dyn ForwardSde,
    solver: &dyn Solver,
    model: Arc<dyn ScoreModel>,
    grid: GridKind,
    steps: usize,
    target: &Target,
) -> Result<(Vec<f64>, Vec<f64>, TimeCoefs)> {
    let law = single_law();
    let d = law.mean.len();
    let times = grid.times(sde, steps)?;
    let denoiser = Denoiser::of(model, None, None)?;
    let zero = ConstantNoise(0.0);
    let c0 = sde.coefs(times[0]);
    // Per coordinate: the mean vector and covariance matrix of v.
    let mut mean: Vec<Vec<f64>> = law.mean.iter().map(|v| vec![c0.alpha * v]).collect();
    let mut cov: Vec<Vec<Vec<f64>>> = vec![vec![vec![law.var(&c0)]]; d];
    // The structure of the carried state (its values are the probes').
    let mut like = State::new(
        Tensor::zeros((1, d), target.dtype, &target.device)?,
        times[0],
        0,
    );
    for i in 0..steps {
        let span = StepSpan {
            from: sde.coefs(times[i]),
            to: sde.coefs(times[i + 1]),
            step: i,
            steps,
        };
        let m = 1 + carried(&like).len();
        // Row 0 all zero; row 1 + r has component r of v one.
        let probe = |r: usize| -> Result<Tensor> {
            let rows: Vec<f64> = (0..=m)
                .flat_map(|row| std::iter::repeat_n(if row == r + 1 { 1.0 } else { 0.0 }, d))
                .collect();
            target.put(&Tensor::from_vec(rows, (m + 1, d), &Device::Cpu)?)
        };
        let probes = (0..m).map(probe).collect::<Result<Vec<_>>>()?;
        let mut start = with_values(&like, &probes);
        start.t = span.from.t;
        start.step = i;
        let ctx = RunContext::new(sde, &denoiser, &zero, RUN_SEED).step(span);
        let out = solver.step(&ctx, &start)?.state;
        let read = |s: &State| -> Result<Vec<Vec<Vec<f64>>>> {
            std::iter::once(&s.x)
                .chain(carried(s))
                .map(rows_f64)
                .collect()
        };
        // outs[c][row][j]: output component c on probe row `row`, coordinate j.
        let outs = read(&out)?;
        let draws = ctx.draw_calls();
        if ctx.draws_taken() != draws * d as u64 {
            bail!(
                "exact propagation reads one draw per coordinate per call; this step took {} draw indices in {draws} calls for {d} coordinates",
                ctx.draws_taken()
            );
        }
        let mut noise: Vec<Vec<Vec<f64>>> = Vec::new(); // [k][c][j]
        for k in 0..draws {
            let unit = UnitDraw(k);
            let ctx_k = RunContext::new(sde, &denoiser, &unit, RUN_SEED).step(span);
            let noisy = read(&solver.step(&ctx_k, &start)?.state)?;
            noise.push(
                noisy
                    .iter()
                    .zip(&outs)
                    .map(|(n, o)| (0..d).map(|j| n[0][j] - o[0][j]).collect())
                    .collect(),
            );
        }
        let m_out = outs.len();
        for j in 0..d {
            let b: Vec<f64> = (0..m_out).map(|c| outs[c][0][j]).collect();
            let a: Vec<Vec<f64>> = (0..m_out)
                .map(|c| (0..m).map(|r| outs[c][r + 1][j] - b[c]).collect())
                .collect();
            let mu: Vec<f64> = (0..m_out)
                .map(|c| b[c] + (0..m).map(|r| a[c][r] * mean[j][r]).sum::<f64>())
                .collect();
            let a_cov: Vec<Vec<f64>> = (0..m_out)
                .map(|c| {
                    (0..m)
                        .map(|q| (0..m).map(|r| a[c][r] * cov[j][r][q]).sum())
                        .collect()
                })
                .collect();
            let next: Vec<Vec<f64>> = (0..m_out)
                .map(|c| {
                    (0..m_out)
                        .map(|e| {
                            let drift: f64 = (0..m).map(|q| a_cov[c][q] * a[e][q]).sum();
                            let diffusion: f64 = noise.iter().map(|n| n[c][j] * n[e][j]).sum();
                            drift + diffusion
                        })
                        .collect()
                })
                .collect();
            mean[j] = mu;
            cov[j] = next;
        }
        like = out;
    }
    let mean_x = mean.iter().map(|m| m[0]).collect();
    let var_x = cov.iter().map(|c| c[0][0]).collect();
    Ok((mean_x, var_x, sde.coefs(times[steps])))
}

/// The weak error at `steps` on the single Gaussian, propagated exactly
/// ([`propagate_exactly`]): the closed-form W2 between the final Gaussian and the exact
/// marginal at t_ε. `model` lives on `target`, where the steps run.
pub fn exact_weak_error(
    sde: &dyn ForwardSde,
    solver: &dyn Solver,
    model: Arc<dyn ScoreModel>,
    grid: GridKind,
    steps: usize,
    target: &Target,
) -> Result<f64> {
    let (mean, var, c) = propagate_exactly(sde, solver, model, grid, steps, target)?;
    Ok(single_law().w2_to_marginal(&mean, &var, &c))
}

/// The W2 distance, per coordinate, between N(0, C) and the Langevin plateau
/// N(0, C/(1 − r² σ²/C)) of the batch-free step ε = 2 (r σ)² ([`Order::Plateau`](sdeflow_kernel::Order::Plateau)).
pub fn plateau_bias(c: f64, snr: f64, sigma: f64) -> f64 {
    let inflation = 1.0 / (1.0 - snr * snr * sigma * sigma / c);
    (c * inflation).sqrt() - c.sqrt()
}

/// The weak error on `sde` falls at the claimed weak order on the solver's natural grid
/// (tail fit over N ≤ 4096, ± 0.25).
pub(crate) fn weak_order(report: &mut Report, fixture: &Fixture<'_>, case: Case<'_>) {
    let (plugin, sde_name) = (case.plugin, case.sde_name);
    let (solver, sde) = (&**case.solver, &**case.sde);
    let claims = solver.claims();
    let Some(claim) = claimed_order(claims.order) else {
        return;
    };
    let check = format!(
        "weak order on {sde_name}, {} grid (single Gaussian, exact propagation)",
        claims.natural_grid
    );
    let run = |on: &Target| -> Result<Vec<f64>> {
        let model = fixture.oracle(&single_gaussian(), on, fixture.param.clone())?;
        ORDER_STEPS
            .iter()
            .map(|&n| exact_weak_error(sde, solver, model.clone(), claims.natural_grid, n, on))
            .collect()
    };
    let fit = OrderFit::tail(claim, "the weak error");
    order_rows(report, &fixture.target, plugin, sde, check, &fit, run);
}

/// An SDE stopped early: `inner` with t_ε replaced, so that grids end at `t_eps`.
#[derive(Debug)]
struct StoppedAt<'a> {
    inner: &'a dyn ForwardSde,
    t_eps: f64,
}

impl ForwardSde for StoppedAt<'_> {
    fn t_max(&self) -> f64 {
        self.inner.t_max()
    }
    fn t_eps(&self) -> f64 {
        self.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        self.inner.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.inner.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.inner.drift_coef(t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        self.inner.diffusion_sq(t)
    }
    fn prior_std(&self) -> f64 {
        self.inner.prior_std()
    }
    fn knots(&self) -> Vec<f64> {
        self.inner.knots()
    }
    fn default_grid(&self) -> GridKind {
        self.inner.default_grid()
    }
    fn log_snr(&self, t: f64) -> f64 {
        self.inner.log_snr(t)
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        self.inner.t_of_log_snr(lambda)
    }
}

/// The step counts of the plateau check: 256, 1,024 and 4,096 for a solver of up to 2 NFE
/// per step (pc's), fewer for a costlier step, so that the check spends as many NFE
/// (annealed Langevin's 100 per level: 5, 20 and 81 levels).
pub fn plateau_steps(nfe_per_step: usize) -> [usize; 3] {
    let scale = |n: usize| (n * 2 / nfe_per_step.max(2)).max(4);
    [scale(256), scale(1024), scale(4096)]
}

/// The plateau of a predictor–corrector on the single Gaussian N(m, s² I). Near t_ε the
/// corrector's relaxation per step, 2 r² σ²/v, vanishes, so the plateau is checked where it is
/// resolved: the run stops at t★ with σ̃ = s (σ² = v/2), where the closed form gives a W2 of
/// √d (√(v/(1 − r²/2)) − √v). The exactly propagated weak error must approach it: within 10%
/// at the largest N of [`plateau_steps`], and closer there than at the smallest.
pub(crate) fn plateau(report: &mut Report, fixture: &Fixture<'_>, case: Case<'_>, snr: f64) {
    let (plugin, sde_name) = (case.plugin, case.sde_name);
    let (solver, sde) = (&**case.solver, &**case.sde);
    let grid = solver.claims().natural_grid;
    let t_star = sde.t_of_log_snr(-SINGLE_STD.ln());
    let check = format!(
        "plateau on {sde_name}, {grid} grid, stopped at t★ = {} where σ² = v/2 (single Gaussian, exact propagation)",
        num(t_star)
    );
    let stopped = StoppedAt {
        inner: sde,
        t_eps: t_star,
    };
    let law = single_law();
    let c = sde.coefs(t_star);
    let d = law.mean.len() as f64;
    let want = d.sqrt() * plateau_bias(law.var(&c), snr, c.sigma);
    let steps = plateau_steps(solver.claims().nfe_per_step);
    let run = || -> Result<Vec<f64>> {
        let model = fixture.oracle(&single_gaussian(), &fixture.target, fixture.param.clone())?;
        steps
            .iter()
            .map(|&n| exact_weak_error(&stopped, solver, model.clone(), grid, n, &fixture.target))
            .collect()
    };
    match run() {
        Ok(errors) => {
            let gaps: Vec<f64> = errors.iter().map(|e| (e - want).abs()).collect();
            let pass = gaps[2] <= 0.1 * want && gaps[2] < gaps[0];
            report.push(
                plugin,
                check,
                format!(
                    "{} at N = {} ({:+.1}%)",
                    num(errors[2]),
                    steps[2],
                    100.0 * (errors[2] - want) / want
                ),
                format!("plateau {}", num(want)),
                "± 10%, approached as N grows",
                pass,
                format!(
                    "the corrector does not settle at its Langevin fixed point: weak error at N = {:?}: {}, {}, {}",
                    steps,
                    num(errors[0]),
                    num(errors[1]),
                    num(errors[2])
                ),
            );
        }
        Err(e) => report.error(plugin, check, e),
    }
}
