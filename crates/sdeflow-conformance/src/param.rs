//! Parameterization contracts (MATH.md §3, §4): round trips through every pair of targets,
//! the training target against the converted target, and matched weightings' equal losses.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Conversions, ForwardSde, Parameterization, Result, Time, TimeCoefs, Weighting, convert,
    noise::{Stream, philox_key, philox_normal_tensor},
};

use crate::{
    Target,
    report::{Report, num},
};

const ROWS: usize = 64;
const COLS: usize = 3;

/// Tolerance of every row in epsilons of the run's dtype off the reference target (f64: 1e-10).
/// The conversions divide by α or σ ≥ 0.03 at the interior times, which costs ~30 ε; the
/// worst f32 row on the CPU measured 2.4e-6 (20 ε).
const EPS_UNITS: f64 = 1e3;

fn normals(seed: u64, target: &Target) -> Result<Tensor> {
    target.put(&philox_normal_tensor(
        philox_key(seed, Stream::Exact),
        0,
        ROWS,
        COLS,
        0,
        DType::F64,
        &Device::Cpu,
    )?)
}

/// Σ t², on the host in f64.
fn sum_sq(t: &Tensor) -> Result<f64> {
    Ok(Target::host(&t.sqr()?.sum_all()?)?.to_scalar::<f64>()?)
}

fn rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (Target::host(a)?, Target::host(b)?);
    let num = sum_sq(&(&a - &b)?)?.sqrt();
    let den = sum_sq(&b)?.sqrt();
    Ok(num / den.max(f64::MIN_POSITIVE))
}

/// Interior coefficients of `sde`, clear of α = 0 and σ = 0.
pub(crate) fn interior(sde: &dyn ForwardSde) -> Vec<TimeCoefs> {
    let (a, b) = (sde.t_eps(), sde.t_max());
    (1..10)
        .map(|i| sde.coefs(a + (b - a) * i as f64 / 10.0))
        .collect()
}

/// Worst norm-relative round-trip error P → Q → P over `sdes`.
fn round_trip(
    p: &dyn Parameterization,
    q: &dyn Parameterization,
    sdes: &[&dyn ForwardSde],
    target: &Target,
) -> Result<f64> {
    let (x0, eps) = (normals(1, target)?, normals(2, target)?);
    let mut worst: f64 = 0.0;
    for sde in sdes {
        for tc in interior(*sde) {
            let c = Time::Call(tc);
            let x = convert::noisy(&x0, &eps, &c)?;
            let out_p = p.from_eps(&eps, &x, &c)?;
            let out_q = q.from_eps(&p.to_eps(&out_p, &x, &c)?, &x, &c)?;
            let back = p.from_eps(&q.to_eps(&out_q, &x, &c)?, &x, &c)?;
            worst = worst.max(rel(&back, &out_p)?);
            worst = worst.max(rel(&p.to_x0(&out_p, &x, &c)?, &x0)?);
            worst = worst.max(rel(
                &p.to_score(&out_p, &x, &c)?,
                &convert::score_from_eps(&eps, &c)?,
            )?);
        }
    }
    Ok(worst)
}

/// Worst error of the training target against the output converted from the true ε.
fn target_matches(
    p: &dyn Parameterization,
    sdes: &[&dyn ForwardSde],
    target: &Target,
) -> Result<f64> {
    let (x0, eps) = (normals(3, target)?, normals(4, target)?);
    let mut worst: f64 = 0.0;
    for sde in sdes {
        for tc in interior(*sde) {
            let c = Time::Call(tc);
            let x = convert::noisy(&x0, &eps, &c)?;
            worst = worst.max(rel(
                &p.target_of(&x0, &eps, &c)?,
                &p.from_eps(&eps, &x, &c)?,
            )?);
        }
    }
    Ok(worst)
}

/// Worst relative gap between the loss in `p`'s space with the matched weight and the loss on
/// ‖ε̂ − ε‖² with w_ε, for an imperfect prediction ε̂ = ε + δ.
fn matched_loss(
    p: &dyn Parameterization,
    w: &dyn Weighting,
    sdes: &[&dyn ForwardSde],
    target: &Target,
) -> Result<f64> {
    let (x0, eps, delta) = (
        normals(5, target)?,
        normals(6, target)?,
        normals(7, target)?,
    );
    let eps_hat = (&eps + delta.affine(0.1, 0.0)?)?;
    let mut worst: f64 = 0.0;
    for sde in sdes {
        for tc in interior(*sde) {
            let c = Time::Call(tc);
            let x = convert::noisy(&x0, &eps, &c)?;
            let eps_loss = w.eps_weight(&tc) * sum_sq(&(&eps_hat - &eps)?)?;
            let pred = p.from_eps(&eps_hat, &x, &c)?;
            let sq = sum_sq(&(&pred - p.target_of(&x0, &eps, &c)?)?)?;
            let target_loss = w.target_weight(&tc, p.eps_loss_scale(&tc)) * sq;
            worst =
                worst.max((target_loss - eps_loss).abs() / eps_loss.abs().max(f64::MIN_POSITIVE));
        }
    }
    Ok(worst)
}

/// Runs every parameterization contract for `p` (named `name`) against every other
/// registered parameterization, weighting and SDE.
pub fn check(
    report: &mut Report,
    name: &str,
    p: &dyn Parameterization,
    others: &[(&str, &dyn Parameterization)],
    weightings: &[(&str, &dyn Weighting)],
    sdes: &[&dyn ForwardSde],
    target: &Target,
) {
    let plugin = format!("param/{name}");
    let tol = target.tol(1e-10, EPS_UNITS);
    let dtype = target.label();
    for (other, q) in others {
        let check = format!("round trip {name} → {other} → {name}, x̂₀, ŝ");
        match round_trip(p, *q, sdes, target) {
            Ok(e) => report.push(
                &plugin,
                check,
                num(e),
                "0",
                format!("≤ {tol:e} (norm-relative, {dtype})"),
                e <= tol,
                "to_eps and from_eps are not inverse, or to_x0/to_score disagree with MATH.md §3",
            ),
            Err(e) => report.error(&plugin, check, e),
        }
    }
    match target_matches(p, sdes, target) {
        Ok(e) => report.push(
            &plugin,
            "target = output converted from the true ε",
            num(e),
            "0",
            format!("≤ {tol:e}"),
            e <= tol,
            "target() disagrees with from_eps() at the true ε",
        ),
        Err(e) => report.error(&plugin, "target = output converted from the true ε", e),
    }
    for (wname, w) in weightings {
        let check = format!("matched {wname} weighting: equal loss to the ε loss");
        match matched_loss(p, *w, sdes, target) {
            Ok(e) => report.push(
                &plugin,
                check,
                num(e),
                "0",
                format!("≤ {tol:e} (relative)"),
                e <= tol,
                "eps_loss_scale is not the factor k with ‖out − target‖ = k ‖ε̂ − ε‖ (MATH.md §4)",
            ),
            Err(e) => report.error(&plugin, check, e),
        }
    }
}
