//! Loss contracts (MATH.md §4, §9): the kernel's denoising score-matching loss against exact
//! answers, and the per-row time that training stands on.
//!
//! - On an SDE: on the single Gaussian N(m, s² I) at a fixed t, the exact model's loss is
//!   d α² s²/(α² s² + σ²) within 3 standard errors; a model off by δ in ε̂ pays d δ² more on
//!   the same draws. Its implicit and sliced score-matching terms are −d/(2(α² s² + σ²))
//!   within 3 standard errors; a score off by c pays ½ d c² more.
//! - On a parameterization: under each weighting, on each SDE, the oracle written in this
//!   target gives the loss it gives in its own (the score) on the same draws, to 1e-10
//!   relative; with every row at one t, per-row and per-call evaluation of every conversion
//!   and of the loss agree to 1e-12 relative.
//! - On a model: the loss's gradient reaches every trainable variable; each row at its own
//!   time gives what a call at that time gives it.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    At, Conversions, Denoiser, Draws, Dsm, ForwardSde, ModelContext, ParamEntry, Parameterization,
    PerRow, Registry, Result, Retarget, Rows, ScoreModel, Time, TimeCoefs, Weighting, convert,
};

use crate::{
    Target,
    mixtures::{MixtureSpec, ring, single_gaussian, single_law},
    report::{Report, num},
};

/// w_ε = 1 with t uniform: the loss whose value at one t is the closed form.
#[derive(Debug)]
pub struct Unweighted;

impl Weighting for Unweighted {
    fn eps_weight(&self, _c: &TimeCoefs) -> f64 {
        1.0
    }
}

/// The seed of every loss draw.
const SEED: u64 = 11;
/// Rows of the closed-form check: the standard error of the mean loss is ~1% of it.
const CLOSED_FORM_ROWS: usize = 20_000;
/// Rows of the equal-loss and per-row checks.
const ROWS: usize = 256;
/// The shift of the perturbed model's ε̂.
const DELTA: f64 = 0.05;

/// The oracle of `spec` on `on` (it predicts the score).
pub fn oracle(registry: &Registry, spec: &MixtureSpec, on: &Target) -> Result<Arc<dyn ScoreModel>> {
    let ctx = ModelContext::new(on.device.clone(), on.dtype);
    registry.model("gmm_oracle", &spec.oracle_params(), &ctx)
}

/// `n` exact draws of `spec`'s p₀ on `on`, from a stream of their own.
fn data(spec: &MixtureSpec, n: usize, on: &Target) -> Result<Tensor> {
    let x = spec.mixture()?.marginal(1.0, 0.0)?.sample(SEED + 1, 0, n);
    on.put(&Tensor::from_vec(x, (n, spec.dim()), &Device::Cpu)?)
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Target::host(t)?.flatten_all()?.to_vec1::<f64>()?)
}

fn mean_and_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// A model's ε̂ shifted by δ in every coordinate: its raw output (in its own target) moved by
/// δ/a, a the ε̂ coefficient of the output.
#[derive(Debug)]
struct Shifted(Arc<dyn ScoreModel>, ParamEntry);

impl ScoreModel for Shifted {
    fn sample_shape(&self) -> Vec<usize> {
        self.0.sample_shape()
    }
    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        let out = self.0.forward(x, at, cond)?;
        let c = at.call("the shifted oracle")?;
        Ok(out.affine(1.0, DELTA / self.1.plugin.eps(c).out)?)
    }
    fn target(&self) -> Option<ParamEntry> {
        Some(self.1.clone())
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

/// The exact score shifted by c in every coordinate, with its closed-form divergence and
/// Jacobian-vector products (the inner model's: a shift changes neither).
#[derive(Debug)]
struct ShiftedScore(Arc<dyn ScoreModel>, f64);

impl ShiftedScore {
    fn shift(&self, s: Tensor) -> Result<Tensor> {
        Ok(s.affine(1.0, self.1)?)
    }
}

impl ScoreModel for ShiftedScore {
    fn sample_shape(&self) -> Vec<usize> {
        self.0.sample_shape()
    }
    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        self.shift(self.0.forward(x, at, cond)?)
    }
    fn target(&self) -> Option<ParamEntry> {
        self.0.target()
    }
    fn rows_independent(&self) -> bool {
        true
    }
    fn score_divergence(&self, x: &Tensor, time: &Time) -> Option<Result<(Tensor, Tensor)>> {
        self.0
            .score_divergence(x, time)
            .map(|r| r.and_then(|(s, div)| Ok((self.shift(s)?, div))))
    }
    fn score_jvp(
        &self,
        x: &Tensor,
        time: &Time,
        probes: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        self.0
            .score_jvp(x, time, probes)
            .map(|r| r.and_then(|(s, jv)| Ok((self.shift(s)?, jv))))
    }
}

/// Implicit and sliced score matching on the single Gaussian N(m, s² I) at the same three
/// times as [`closed_form`]: the exact model's ISM term E[½‖s‖² + ∇·s] is −d/(2 (α² s² + σ²))
/// (= −½ E‖s‖², as E‖s‖² = −E[∇·s]) within 3 standard errors; SSM's (one Rademacher
/// projection) and SSM-VR's (one Gaussian) expectations are the same, within 3 standard
/// errors; a score shifted by c = 0.05 in every coordinate costs ½ d c² more in each, on the
/// same draws (its cross term averages out: E[s] = 0).
pub fn implicit_closed_form(
    report: &mut Report,
    registry: &Registry,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
    on: &Target,
) {
    use sdeflow_kernel::{Objective, likelihood::Probe};
    let plugin = format!("sde/{sde_name}");
    let check =
        "ISM and SSM terms of the exact model = −d/(2(α²s² + σ²)) (single Gaussian, 3 times)";
    let objectives = [
        ("ism", Objective::Ism {}),
        (
            "ssm",
            Objective::Ssm {
                projections: 1,
                dist: Probe::Rademacher,
                variance_reduced: false,
            },
        ),
        (
            "ssm-vr",
            Objective::Ssm {
                projections: 1,
                dist: Probe::Gaussian,
                variance_reduced: true,
            },
        ),
    ];
    let run = || -> Result<(Vec<String>, Vec<String>)> {
        let spec = single_gaussian();
        let law = single_law();
        let d = law.mean.len() as f64;
        let exact = oracle(registry, &spec, on)?;
        let shifted: Arc<dyn ScoreModel> = Arc::new(ShiftedScore(exact.clone(), DELTA));
        let (exact, shifted) = (
            Denoiser::of(exact, None, None)?,
            Denoiser::of(shifted, None, None)?,
        );
        let x0 = data(&spec, CLOSED_FORM_ROWS, on)?;
        let (mut misses, mut gaps) = (Vec::new(), Vec::new());
        let (a, b) = (sde.t_eps(), sde.t_max());
        for (name, objective) in objectives {
            let loss = Dsm::new(sde.clone(), Arc::new(Unweighted)).with_objective(objective);
            let draws = loss.draw(SEED, 2, 0, CLOSED_FORM_ROWS, &[2], on.dtype, &on.device)?;
            for u in [0.05, 0.5, 0.95] {
                let t = a + u * (b - a);
                let at = loss.at_time(&draws, t);
                let rows = host(&loss.row_objectives(&exact, &x0, None, &at)?)?;
                let (mean, se) = mean_and_se(&rows);
                let c = sde.coefs(t);
                let v = c.alpha * c.alpha * law.std * law.std + c.sigma * c.sigma;
                let want = -d / (2.0 * v);
                if (mean - want).abs() > 3.0 * se {
                    misses.push(format!(
                        "{name} at t = {}: {} ± {} vs {}",
                        num(t),
                        num(mean),
                        num(se),
                        num(want)
                    ));
                }
                let worse = host(&loss.row_objectives(&shifted, &x0, None, &at)?)?;
                let diff: Vec<f64> = worse.iter().zip(&rows).map(|(w, r)| w - r).collect();
                let (gap, se_gap) = mean_and_se(&diff);
                let expected = 0.5 * d * DELTA * DELTA;
                if gap <= 0.0 || (gap - expected).abs() > 3.0 * se_gap.max(1e-12 * expected) {
                    gaps.push(format!(
                        "{name} at t = {}: gap {} ± {} vs ½ d c² = {}",
                        num(t),
                        num(gap),
                        num(se_gap),
                        num(expected)
                    ));
                }
            }
        }
        Ok((misses, gaps))
    };
    match run() {
        Ok((misses, gaps)) => {
            report.push(
                &plugin,
                check,
                format!("{}/9 within", 9 - misses.len()),
                "9/9",
                "3 standard errors, 20,000 rows (ISM, SSM, SSM-VR)",
                misses.is_empty(),
                misses.join("; "),
            );
            report.push(
                &plugin,
                "ISM and SSM terms of a score off by c = 0.05 are larger by ½ d c²",
                format!("{}/9 within", 9 - gaps.len()),
                "9/9",
                "3 standard errors of the paired gap",
                gaps.is_empty(),
                gaps.join("; "),
            );
        }
        Err(e) => report.error(&plugin, check, e),
    }
}

/// The exact model's loss at t = t_ε + u (T − t_ε), u = 0.05, 0.5, 0.95, against the closed
/// form, and a perturbed model's gap against d δ², on `sde` (named `sde_name`).
pub fn closed_form(
    report: &mut Report,
    registry: &Registry,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
    on: &Target,
) {
    let plugin = format!("sde/{sde_name}");
    let check = "DSM loss of the exact model = d α²s²/(α²s² + σ²) (single Gaussian, 3 times)";
    let run = || -> Result<(Vec<String>, Vec<String>)> {
        let spec = single_gaussian();
        let law = single_law();
        let d = law.mean.len() as f64;
        let exact = oracle(registry, &spec, on)?;
        let target = exact
            .target()
            .ok_or_else(|| sdeflow_kernel::Error::Msg("the oracle fixes its target".into()))?;
        let shifted: Arc<dyn ScoreModel> = Arc::new(Shifted(exact.clone(), target));
        let (exact, shifted) = (
            Denoiser::of(exact, None, None)?,
            Denoiser::of(shifted, None, None)?,
        );
        let loss = Dsm::new(sde.clone(), Arc::new(Unweighted));
        let x0 = data(&spec, CLOSED_FORM_ROWS, on)?;
        let draws = loss.draw(SEED, 0, 0, CLOSED_FORM_ROWS, &[2], on.dtype, &on.device)?;
        let (mut misses, mut gaps) = (Vec::new(), Vec::new());
        let (a, b) = (sde.t_eps(), sde.t_max());
        for u in [0.05, 0.5, 0.95] {
            let t = a + u * (b - a);
            let at = loss.at_time(&draws, t);
            let rows = host(&loss.row_losses(&exact, &x0, None, &at)?)?;
            let (mean, se) = mean_and_se(&rows);
            let c = sde.coefs(t);
            let a2s2 = c.alpha * c.alpha * law.std * law.std;
            let want = d * a2s2 / (a2s2 + c.sigma * c.sigma);
            if (mean - want).abs() > 3.0 * se {
                misses.push(format!(
                    "t = {}: {} ± {} vs {}",
                    num(t),
                    num(mean),
                    num(se),
                    num(want)
                ));
            }
            let worse = host(&loss.row_losses(&shifted, &x0, None, &at)?)?;
            let diff: Vec<f64> = worse.iter().zip(&rows).map(|(w, r)| w - r).collect();
            let (gap, se_gap) = mean_and_se(&diff);
            if gap <= 0.0 || (gap - d * DELTA * DELTA).abs() > 3.0 * se_gap {
                gaps.push(format!(
                    "t = {}: gap {} ± {} vs d δ² = {}",
                    num(t),
                    num(gap),
                    num(se_gap),
                    num(d * DELTA * DELTA)
                ));
            }
        }
        Ok((misses, gaps))
    };
    match run() {
        Ok((misses, gaps)) => {
            report.push(
                &plugin,
                check,
                format!("{}/3 within", 3 - misses.len()),
                "3/3",
                "3 standard errors, 20,000 rows",
                misses.is_empty(),
                misses.join("; "),
            );
            report.push(
                &plugin,
                "DSM loss of a model off by δ = 0.05 in ε̂ is larger by d δ²",
                format!("{}/3 within", 3 - gaps.len()),
                "3/3",
                "3 standard errors of the paired gap",
                gaps.is_empty(),
                gaps.join("; "),
            );
        }
        Err(e) => report.error(&plugin, check, e),
    }
}

/// The worst relative gap between the loss of the oracle written in `p`'s target and in its
/// own, under `w`, over `sdes`, on the ring with per-row draws from `w`'s density.
fn equal_losses(
    registry: &Registry,
    p: &ParamEntry,
    w: &Arc<dyn Weighting>,
    sdes: &[(&str, Arc<dyn ForwardSde>)],
    on: &Target,
) -> Result<f64> {
    let spec = ring();
    let own = oracle(registry, &spec, on)?;
    let there = Denoiser::of(Arc::new(Retarget::new(own.clone(), p.clone())?), None, None)?;
    let own = Denoiser::of(own, None, None)?;
    let x0 = data(&spec, ROWS, on)?;
    let mut worst: f64 = 0.0;
    for (_, sde) in sdes {
        let loss = Dsm::new(sde.clone(), w.clone());
        let draws = loss.draw(SEED, 1, 0, ROWS, &[spec.dim()], on.dtype, &on.device)?;
        let a = host(&loss.loss(&own, &x0, None, &draws)?)?[0];
        let b = host(&loss.loss(&there, &x0, None, &draws)?)?[0];
        worst = worst.max((a - b).abs() / a.abs().max(f64::MIN_POSITIVE));
    }
    Ok(worst)
}

/// Per call against per row (every row at the same time), the worst relative gap of every
/// conversion and of the loss under `w`, over `sdes`' interior times.
fn per_row_agrees(
    p: &Arc<dyn Parameterization>,
    ws: &[(&str, Arc<dyn Weighting>)],
    sdes: &[(&str, Arc<dyn ForwardSde>)],
    on: &Target,
) -> Result<f64> {
    let normals = |seed: u64| -> Result<Tensor> {
        on.put(&sdeflow_kernel::noise::philox_normal_tensor(
            sdeflow_kernel::noise::philox_key(seed, sdeflow_kernel::noise::Stream::Exact),
            0,
            ROWS,
            3,
            0,
            DType::F64,
            &Device::Cpu,
        )?)
    };
    let (x0, eps, out) = (normals(21)?, normals(22)?, normals(23)?);
    let rel = |a: &Tensor, b: &Tensor| -> Result<f64> {
        let (a, b) = (host(a)?, host(b)?);
        let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        Ok((num / den.max(f64::MIN_POSITIVE)).sqrt())
    };
    let mut worst: f64 = 0.0;
    for (_, sde) in sdes {
        for c in crate::param::interior(&**sde) {
            let call = Time::Call(c);
            let rows = Time::Rows(Rows::new(vec![c; ROWS]));
            let x = convert::noisy(&x0, &eps, &call)?;
            let pairs: [(Tensor, Tensor); 6] = [
                (p.to_eps(&out, &x, &call)?, p.to_eps(&out, &x, &rows)?),
                (p.to_x0(&out, &x, &call)?, p.to_x0(&out, &x, &rows)?),
                (p.to_score(&out, &x, &call)?, p.to_score(&out, &x, &rows)?),
                (p.from_eps(&eps, &x, &call)?, p.from_eps(&eps, &x, &rows)?),
                (
                    p.target_of(&x0, &eps, &call)?,
                    p.target_of(&x0, &eps, &rows)?,
                ),
                (p.input(&x, &call)?, p.input(&x, &rows)?),
            ];
            for (a, b) in &pairs {
                worst = worst.max(rel(b, a)?);
            }
            if p.noise_level(&rows) != PerRow::Rows(Rows::new(vec![p.c_noise(&c); ROWS])) {
                worst = f64::INFINITY;
            }
            // The loss of a model that outputs `out` whatever it is asked.
            let d = Denoiser::new(Arc::new(Fixed(out.clone())), p.clone(), None, None);
            for (_, w) in ws {
                let loss = Dsm::new(sde.clone(), w.clone());
                let by_call = Draws {
                    time: call.clone(),
                    eps: eps.clone(),
                    dropout: None,
                    probes: None,
                };
                let by_rows = Draws {
                    time: rows.clone(),
                    eps: eps.clone(),
                    dropout: None,
                    probes: None,
                };
                let a = loss.row_losses(&d, &x0, None, &by_call)?;
                let b = loss.row_losses(&d, &x0, None, &by_rows)?;
                worst = worst.max(rel(&b, &a)?);
            }
        }
    }
    Ok(worst)
}

/// A model whose output is a fixed tensor, whatever it is asked.
#[derive(Debug)]
struct Fixed(Tensor);

impl ScoreModel for Fixed {
    fn sample_shape(&self) -> Vec<usize> {
        self.0.dims()[1..].to_vec()
    }
    fn forward(&self, _x: &Tensor, _at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.0.clone())
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

/// The loss contracts of the parameterization `name`: equal losses under every weighting, and
/// per-row evaluation equal to per-call.
pub fn check_param(
    report: &mut Report,
    registry: &Registry,
    name: &'static str,
    p: &Arc<dyn Parameterization>,
    weightings: &[(&str, Arc<dyn Weighting>)],
    sdes: &[(&str, Arc<dyn ForwardSde>)],
    on: &Target,
) {
    let plugin = format!("param/{name}");
    let entry = ParamEntry {
        name,
        plugin: p.clone(),
    };
    let tol = on.tol(1e-10, 1e3);
    for (wname, w) in weightings {
        let check = format!("DSM loss of the oracle in this target = in its own, under {wname}");
        match equal_losses(registry, &entry, w, sdes, on) {
            Ok(e) => report.push(
                &plugin,
                check,
                num(e),
                "0",
                format!("≤ {tol:e} (relative, ring, {ROWS} rows per SDE)"),
                e <= tol,
                "the target's loss factor w_ε/k² or its target disagree with its ε̂ pair (MATH.md §4)",
            ),
            Err(e) => report.error(&plugin, check, e),
        }
    }
    let tol = on.tol(1e-12, 1e2);
    let check = "per row = per call (conversions, input, c_noise, loss; rows at one t)";
    match per_row_agrees(p, weightings, sdes, on) {
        Ok(e) => report.push(
            &plugin,
            check,
            num(e),
            "0",
            format!("≤ {tol:e} (norm-relative)"),
            e <= tol,
            "the per-row form of a coefficient differs from its per-call form",
        ),
        Err(e) => report.error(&plugin, check, e),
    }
}

/// Each row at its own time against a call at that time, row by row: the worst relative gap.
pub fn rows_match_calls(
    model: &dyn ScoreModel,
    param: &dyn Parameterization,
    times: &[TimeCoefs],
    x: &Tensor,
) -> Result<f64> {
    let n = x.dim(0)?;
    let per_row: Vec<TimeCoefs> = (0..n).map(|i| times[i % times.len()]).collect();
    let rows = Time::Rows(Rows::new(per_row.clone()));
    let batch = host(&model.forward(x, &At::new(rows, param), None)?)?;
    let cols = batch.len() / n.max(1);
    let mut worst: f64 = 0.0;
    for (i, c) in per_row.iter().enumerate() {
        let one = host(&model.forward(&x.narrow(0, i, 1)?, &At::new((*c).into(), param), None)?)?;
        let got = &batch[i * cols..(i + 1) * cols];
        let num: f64 = got.iter().zip(&one).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = one.iter().map(|b| b * b).sum();
        worst = worst.max((num / den.max(f64::MIN_POSITIVE)).sqrt());
    }
    Ok(worst)
}

/// The DSM loss of `model` read through `param` on `sde` with per-row draws: what the model
/// contract differentiates.
pub fn model_loss(
    model: Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    sde: &Arc<dyn ForwardSde>,
    x0: &Tensor,
) -> Result<Tensor> {
    let shape = x0.dims()[1..].to_vec();
    let loss = Dsm::new(sde.clone(), Arc::new(Unweighted));
    let draws = loss.draw(SEED, 2, 0, x0.dim(0)?, &shape, x0.dtype(), x0.device())?;
    let d = Denoiser::new(model, param, None, None).keep_graph(true);
    loss.loss(&d, x0, None, &draws)
}
