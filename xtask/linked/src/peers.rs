//! `peers`: sdeflow's few-step solvers side by side with diffusers' and k-diffusion's, on one
//! problem with an exact score (docs/peers.md; `xtask/peers/run.sh` runs every part).
//!
//! **The problem.** DDPM's discrete VP schedule (sdeflow's `vp_discrete`: linear β from 1e-4 to
//! 0.02 over 1,000 steps, which diffusers' schedulers implement), from T (train step 999) to
//! t_ε (train step 0), on the exact score of the `ring` and `mix8` mixtures. Every sampler
//! starts from the same [`SAMPLES`] exact draws of p_T and stops at σ̃ = σ̃(t_ε): one endpoint
//! for everyone.
//!
//! **The metrics,** computed here for every row, sdeflow's and the peers': for deterministic
//! samplers the RMS per coordinate to the exact PF-ODE endpoint of the first [`PAIRED`]
//! starts; and the sliced W2 against the exact PF-ODE endpoints of all [`SAMPLES`] starts.
//! The starts are exact draws of p_T, so those endpoints are exact samples of p_{t_ε}; each
//! is tied to its start, so a deterministic sampler's SW2 against them is free of the
//! sampling noise that an independent reference adds (an exact deterministic sampler reads
//! 0, an exact stochastic one the floor printed beside it), and the same on each half of the
//! starts shows what it resolves. The PF-ODE in (x/α, σ̃) does not depend on the schedule,
//! so the endpoints are solved on EDM's SDE over the same σ̃ range, which is smooth (RK4,
//! 2^13 λ-uniform steps, f64), where `vp_discrete`'s knots would cost a step-based solver
//! its order.
//!
//! **SW2 against independent exact samples, out of sample on [`LARGE`] samples,** is printed
//! too (with the floor of exact samplers). With [`SAMPLES`] samples it is the floor's noise
//! (± 0.018 on `ring`) for any good sampler, and the lowest of hundreds of rows is the
//! luckiest draw; so each library's [`CANDIDATES`] best rows by it per mixture and budget, and
//! its [`PAIRED_CANDIDATES`] best deterministic ones by paired error, run again on one fresh
//! set of [`LARGE`] starts (fresh noise too), scored against a reference and a floor of that
//! size (`ring`: 0.053 ± 0.009 against 0.084 ± 0.018). Even there every good sampler sits
//! within about one floor-sd, which is why the verdict reads SW2 against the endpoints.
//!
//! - `peers export DIR`: writes `DIR/problem.json`, the starts and the large fresh start set
//!   for the Python side.
//! - `peers select DIR`: scores the peers' rows of `DIR/peers.json` and writes their
//!   candidates to `DIR/rescore.json` (which `peers.py --rescore` runs on the large set).
//! - `peers table DIR [--only-sdeflow] [--solvers a,b]`: runs sdeflow's solvers (every
//!   registered grid solver and variant, or those named; deterministic ones on plain grids
//!   and on a tuned grid) at NFE 5, 10, 20 and 50 and its candidates on the large set, reads
//!   `DIR/peers.json` and `DIR/rescore-peers.json`, and prints one table per mixture and
//!   budget, then the summary the issue asks for; every row goes to `DIR/table.json`. The
//!   exact endpoints are kept in `DIR/<mixture>/endpoints-….npy` for the next run.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::{
    mixtures::{MixtureSpec, mix8, ring},
    sw2::{FLOOR_SETS, Floor, SlicedW2, reference_and_floor},
};
use sdeflow_kernel::{
    Error, ForwardSde, GridKind, ModelContext, Pipeline, Registry, Result, ScoreModel, Solver,
    State, mixture::Covariance, ops::host_f64,
};

/// Starts per mixture (every sampler runs all of them; SW2 reads all).
pub const SAMPLES: usize = sdeflow_conformance::sw2::SAMPLES;
/// Starts whose endpoints are compared with the exact PF-ODE endpoint.
pub const PAIRED: usize = 2_000;
/// The NFE budgets.
pub const BUDGETS: [usize; 4] = [5, 10, 20, 50];
/// The seed of the starts (set 0, scored for SW2 and the paired error).
const START_SEED: u64 = 7_000;
/// Starts of the large fresh set (set 1: seed START_SEED + 1, noise seed 1): each library's
/// candidates run again on it, so that the SW2 compared is out of sample and less noisy.
pub const LARGE: usize = 200_000;
/// Candidates per library, mixture and budget re-run on the large set (the best by SW2 on set 0).
pub const CANDIDATES: usize = 5;
/// Deterministic candidates per library, mixture and budget by paired error.
pub const PAIRED_CANDIDATES: usize = 2;
/// Steps of the RK4 reference on EDM's SDE.
const REFERENCE_STEPS: usize = 1 << 13;

/// The SDE of the problem: DDPM's schedule.
fn problem_sde(registry: &Registry) -> Result<Arc<dyn ForwardSde>> {
    registry.sde("vp_discrete", "()")
}

fn mixtures() -> Vec<MixtureSpec> {
    vec![ring(), mix8()]
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}: {e}", path.display()))
}

/// The exact p_T draws of start set `set` of `spec` under `sde`: [`SAMPLES`] rows for set 0,
/// [`LARGE`] for set 1; `[n, d]` f64.
fn starts(spec: &MixtureSpec, sde: &dyn ForwardSde, set: u64) -> Result<Tensor> {
    let c = sde.coefs(sde.t_max());
    let n = if set == 0 { SAMPLES } else { LARGE };
    let x = spec
        .mixture()?
        .marginal(c.alpha, c.sigma)?
        .sample(START_SEED + set, 0, n);
    Ok(Tensor::from_vec(x, (n, spec.dim()), &Device::Cpu)?)
}

/// Full covariance matrices of `spec`'s components.
fn covariances(spec: &MixtureSpec) -> Vec<Vec<Vec<f64>>> {
    let d = spec.dim();
    spec.covariances
        .iter()
        .map(|c| match c {
            Covariance::Isotropic(s) => (0..d)
                .map(|i| (0..d).map(|j| if i == j { s * s } else { 0.0 }).collect())
                .collect(),
            Covariance::Diagonal(v) => (0..d)
                .map(|i| (0..d).map(|j| if i == j { v[i] } else { 0.0 }).collect())
                .collect(),
            Covariance::Full(m) => m.clone(),
        })
        .collect()
}

/// `peers export DIR`.
pub fn export(dir: &Path) -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let sde = problem_sde(registry)?;
    let (top, end) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    let mut mixes = Vec::new();
    for spec in mixtures() {
        let sub = dir.join(spec.name);
        std::fs::create_dir_all(&sub).map_err(|e| io_err(&sub, e))?;
        let path = sub.join("starts.npy");
        starts(&spec, &*sde, 0)?
            .write_npy(&path)
            .map_err(|e| io_err(&path, e))?;
        let path = sub.join("starts-large.npy");
        starts(&spec, &*sde, 1)?
            .write_npy(&path)
            .map_err(|e| io_err(&path, e))?;
        let fresh = [format!("{}/starts-large.npy", spec.name)];
        mixes.push(serde_json::json!({
            "name": spec.name,
            "dim": spec.dim(),
            "weights": spec.weights,
            "means": spec.means,
            "covs": covariances(&spec),
            "starts": format!("{}/starts.npy", spec.name),
            "fresh_starts": fresh,
        }));
    }
    let problem = serde_json::json!({
        "schedule": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"},
        "sigma_max": top.sigma_tilde(),
        "sigma_min": end.sigma_tilde(),
        "alpha_max": top.alpha,
        "alpha_min": end.alpha,
        "budgets": BUDGETS,
        "seed": 0,
        "mixtures": mixes,
    });
    let path = dir.join("problem.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&problem).map_err(|e| io_err(&path, e))?,
    )
    .map_err(|e| io_err(&path, e))?;
    eprintln!(
        "wrote {} (σ̃ from {:.6} to {:.6}, α from {:.6e} to {:.6})",
        path.display(),
        top.sigma_tilde(),
        end.sigma_tilde(),
        top.alpha,
        end.alpha
    );
    Ok(())
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    library: String,
    sampler: String,
    schedule: String,
    budget: usize,
    nfe: u64,
    stochastic: bool,
    sw2: f64,
    paired: Option<f64>,
    /// SW2 against the exact endpoints of the same starts (`peers table` only).
    coupled_sw2: Option<f64>,
    /// The same on each half of the starts.
    halves: Option<[f64; 2]>,
    /// SW2 on the large fresh set (candidates only).
    large_sw2: Option<f64>,
    /// How to run it again: sdeflow's pipeline, or the peer's row of `peers.json`.
    again: Again,
}

/// How a row is run again on the large set.
#[derive(Debug, Clone)]
enum Again {
    Sdeflow(Pipeline),
    Peer(serde_json::Value),
}

impl Row {
    fn key(&self) -> (String, String, String, usize) {
        (
            self.library.clone(),
            self.sampler.clone(),
            self.schedule.clone(),
            self.budget,
        )
    }
}

/// What every row of one mixture is scored against.
struct Truth {
    sw: SlicedW2,
    floor: Floor,
    /// SW2 against [`LARGE`] exact samples and its floor (when asked for).
    large: Option<(SlicedW2, Floor)>,
    /// The exact PF-ODE endpoints of the starts and the metrics read against them (when
    /// asked for).
    endpoints: Option<Endpoints>,
    d: usize,
}

/// The exact PF-ODE endpoints of all [`SAMPLES`] starts, and SW2 against them.
struct Endpoints {
    /// Row-major, `d` columns.
    values: Vec<f64>,
    /// SW2 against the endpoints.
    sw: SlicedW2,
    /// The floor of independent exact sets against them.
    floor: Floor,
    /// SW2 against each half: the spread between the halves shows what the SW2 resolves.
    halves: [SlicedW2; 2],
}

/// The exact PF-ODE endpoints of start set 0 of `spec` (row-major), read from `cache` when a
/// previous run left them there, else solved (and written there).
fn endpoints(
    registry: &Registry,
    spec: &MixtureSpec,
    sde: &dyn ForwardSde,
    cache: Option<&Path>,
) -> Result<Vec<f64>> {
    // The file name holds everything the endpoints depend on besides the code.
    let path = cache.map(|dir| {
        dir.join(spec.name).join(format!(
            "endpoints-seed{START_SEED}-n{SAMPLES}-rk4x{REFERENCE_STEPS}.npy"
        ))
    });
    if let Some(path) = path.as_ref().filter(|p| p.exists()) {
        let x = Tensor::read_npy(path).map_err(|e| io_err(path, e))?;
        if x.dims() == [SAMPLES, spec.dim()] && x.dtype() == DType::F64 {
            eprintln!("{}: endpoints from {}", spec.name, path.display());
            return host_f64(&x);
        }
        eprintln!(
            "{}: {} holds {:?} {:?}, not [{SAMPLES}, {}] f64: solving again",
            spec.name,
            path.display(),
            x.dims(),
            x.dtype(),
            spec.dim()
        );
    }
    let (top, end) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    // The exact PF-ODE endpoint in (x/α, σ̃), solved on EDM's SDE over the same σ̃ range.
    let edm = registry.sde(
        "edm",
        &format!(
            "(t_max: {:e}, t_eps: {:e})",
            top.sigma_tilde(),
            end.sigma_tilde()
        ),
    )?;
    let x_tilde = (starts(spec, sde, 0)? / top.alpha)?;
    let x = Pipeline::builder()
        .sde(edm.clone())
        .model(oracle(registry, spec)?)
        .solver(registry.solver("rk4", "()")?)
        .steps(REFERENCE_STEPS)
        .grid(GridKind::LogSnr)
        .dtype(DType::F64)
        .build()?
        .run(State::new(x_tilde, edm.t_max(), 0))?
        .state
        .x;
    let x = (x * end.alpha)?;
    if let Some(path) = &path {
        // Written whole, then renamed: an interrupted run leaves no half file behind.
        let tmp = path.with_extension("npy.tmp");
        x.write_npy(&tmp).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    }
    host_f64(&x)
}

/// The seed of the independent exact sets in the coupled SW2's floor (apart from the floor
/// seeds of [`reference_and_floor`]).
const COUPLED_FLOOR_SEED: u64 = 3_000;

/// One row's scores.
struct Scores {
    sw2: f64,
    paired: Option<f64>,
    coupled_sw2: Option<f64>,
    halves: Option<[f64; 2]>,
}

impl Truth {
    /// `cache`: the folder where the endpoints are kept between runs (solving them is about a
    /// third of a `table` run's time), when `paired`.
    fn new(
        registry: &Registry,
        spec: &MixtureSpec,
        sde: &dyn ForwardSde,
        paired: bool,
        cache: Option<&Path>,
    ) -> Result<Self> {
        let end = sde.coefs(sde.t_eps());
        let target = spec.mixture()?.marginal(end.alpha, end.sigma)?;
        let (sw, floor) = reference_and_floor(&target, SAMPLES)?;
        if !paired {
            return Ok(Self {
                sw,
                floor,
                large: None,
                endpoints: None,
                d: spec.dim(),
            });
        }
        let large = Some(reference_and_floor(&target, LARGE)?);
        let reference = endpoints(registry, spec, sde, cache)?;
        // The endpoints are exact samples of p_{t_ε} (the PF-ODE carries p_T to it), each
        // tied to its start: a deterministic sampler's SW2 against them has none of the
        // sampling noise of an independent reference, which every row's would share anyway.
        let coupled_sw = SlicedW2::new(&reference, spec.dim());
        let vals = (0..FLOOR_SETS as u64)
            .map(|k| coupled_sw.distance(&target.sample(COUPLED_FLOOR_SEED + k, 0, SAMPLES)))
            .collect::<Result<Vec<f64>>>()?;
        let half = SAMPLES / 2 * spec.dim();
        let halves = [
            SlicedW2::new(&reference[..half], spec.dim()),
            SlicedW2::new(&reference[half..], spec.dim()),
        ];
        Ok(Self {
            sw,
            floor,
            large,
            endpoints: Some(Endpoints {
                values: reference,
                sw: coupled_sw,
                floor: Floor::of(&vals),
                halves,
            }),
            d: spec.dim(),
        })
    }

    /// SW2 of `x` (`SAMPLES` rows); when the endpoints were solved, its SW2 against them and,
    /// when `paired`, the RMS per coordinate of its first [`PAIRED`] rows to theirs.
    fn score(&self, x: &[f64], paired: bool) -> Result<Scores> {
        let sw2 = self.sw.distance(x)?;
        let (coupled_sw2, halves) = match &self.endpoints {
            Some(e) => {
                let half = SAMPLES / 2 * self.d;
                let [a, b] = &e.halves;
                (
                    Some(e.sw.distance(x)?),
                    Some([a.distance(&x[..half])?, b.distance(&x[half..])?]),
                )
            }
            None => (None, None),
        };
        let paired = self.endpoints.as_ref().filter(|_| paired).map(|e| {
            let reference = &e.values;
            let n = PAIRED * self.d;
            let s: f64 = x[..n]
                .iter()
                .zip(reference)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            (s / n as f64).sqrt()
        });
        Ok(Scores {
            sw2,
            paired,
            coupled_sw2,
            halves,
        })
    }
}

/// The exact score of `spec` (sdeflow's `gmm_oracle`), in f64 on the CPU.
fn oracle(registry: &Registry, spec: &MixtureSpec) -> Result<Arc<dyn ScoreModel>> {
    registry.model(
        "gmm_oracle",
        &spec.oracle_params(),
        &ModelContext::new(Device::Cpu, DType::F64),
    )
}

/// The plain grids of sdeflow's rows.
const GRIDS: [GridKind; 4] = [
    GridKind::LogSnr,
    GridKind::Karras { rho: 7.0 },
    GridKind::Uniform,
    GridKind::Quadratic,
];

/// Every grid solver and variant (of `only` when not empty), as (label, solver).
fn grid_solvers(registry: &Registry, only: &[String]) -> Result<Vec<(String, Arc<dyn Solver>)>> {
    for name in only {
        registry.solvers.get(name)?;
    }
    let mut out = Vec::new();
    for p in registry.solvers.all() {
        if p.info.alias_of.is_some() || !(only.is_empty() || only.iter().any(|n| n == p.info.name))
        {
            continue;
        }
        for params in std::iter::once("()").chain(p.info.variants.iter().copied()) {
            let solver = registry.solver(p.info.name, params)?;
            if solver.adaptive().is_some() {
                continue;
            }
            let label = if params == "()" {
                format!("{}()", p.info.name)
            } else {
                format!("{}{params}", p.info.name)
            };
            out.push((label, solver));
        }
    }
    Ok(out)
}

/// sdeflow's rows for `spec` under `sde`.
fn sdeflow_rows(
    registry: &Registry,
    spec: &MixtureSpec,
    sde: &Arc<dyn ForwardSde>,
    truth: &Truth,
    only: &[String],
) -> Result<Vec<Row>> {
    let model = oracle(registry, spec)?;
    let start = starts(spec, &**sde, 0)?;
    let mut rows = Vec::new();
    for (label, solver) in grid_solvers(registry, only)? {
        let claims = solver.claims();
        for budget in BUDGETS {
            let Some(steps) = (1..=budget).rev().find(|n| solver.nfe(*n) <= budget) else {
                continue;
            };
            let mut grids: Vec<GridKind> = GRIDS.to_vec();
            if !claims.stochastic {
                grids.push(GridKind::Tuned { rows: 256 });
            }
            for grid in grids {
                let built = Pipeline::builder()
                    .sde(sde.clone())
                    .model(model.clone())
                    .solver(solver.clone())
                    .steps(steps)
                    .grid(grid)
                    .dtype(DType::F64)
                    .seed(0)
                    .build();
                let pipeline = match built {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("  {label} {grid} {steps} steps: {e}");
                        continue;
                    }
                };
                let out = match pipeline.run(State::new(start.clone(), sde.t_max(), 0)) {
                    Ok(o) => o,
                    Err(e) => {
                        eprintln!("  {label} {grid} {steps} steps: {e}");
                        continue;
                    }
                };
                let x = host_f64(&out.state.x)?;
                let Scores {
                    sw2,
                    paired,
                    coupled_sw2,
                    halves,
                } = truth.score(&x, !claims.stochastic)?;
                rows.push(Row {
                    library: "sdeflow".into(),
                    sampler: label.clone(),
                    schedule: format!("{grid}, {steps} steps"),
                    budget,
                    nfe: out.nfe,
                    stochastic: claims.stochastic,
                    sw2,
                    paired,
                    coupled_sw2,
                    halves,
                    large_sw2: None,
                    again: Again::Sdeflow(pipeline),
                });
            }
        }
        eprintln!("  sdeflow {label}: done");
    }
    Ok(rows)
}

/// The rows of `library` run again on the large set, at each budget: the [`CANDIDATES`] with
/// the lowest SW2 on set 0, and the [`PAIRED_CANDIDATES`] deterministic ones with the lowest
/// paired error (on set 0 every deterministic sampler shares the starts' one SW2 draw, so only
/// their paired error, the distance to the exact map, tells them apart there).
fn candidates<'a>(rows: &'a [Row], library: &str) -> Vec<&'a Row> {
    let mut out: Vec<&Row> = Vec::new();
    for budget in BUDGETS {
        let mut at: Vec<&Row> = rows
            .iter()
            .filter(|r| r.library == library && r.budget == budget)
            .collect();
        at.sort_by(|a, b| a.sw2.total_cmp(&b.sw2));
        out.extend(at.iter().take(CANDIDATES));
        at.retain(|r| r.paired.is_some_and(f64::is_finite));
        at.sort_by(|a, b| {
            let k = |r: &Row| r.paired.unwrap_or(f64::INFINITY);
            k(a).total_cmp(&k(b))
        });
        for r in at.into_iter().take(PAIRED_CANDIDATES) {
            if !out.iter().any(|o| o.key() == r.key()) {
                out.push(r);
            }
        }
    }
    out
}

/// sdeflow's candidates run again on the large set (fresh starts, fresh noise rows).
fn rescore_sdeflow(
    rows: &mut [Row],
    spec: &MixtureSpec,
    sde: &dyn ForwardSde,
    truth: &Truth,
) -> Result<()> {
    let Some(large) = &truth.large else {
        return Ok(());
    };
    let keys: Vec<_> = candidates(rows, "sdeflow")
        .iter()
        .map(|r| r.key())
        .collect();
    for row in rows.iter_mut().filter(|r| keys.contains(&r.key())) {
        let Again::Sdeflow(pipeline) = &row.again else {
            continue;
        };
        let start = starts(spec, sde, 1)?;
        // Row numbers past set 0's: other noise rows for a stochastic solver.
        let out = pipeline.run(State::new(start, sde.t_max(), SAMPLES as u64))?;
        row.large_sw2 = Some(large.0.distance(&host_f64(&out.state.x)?)?);
    }
    Ok(())
}

/// The peers' candidates' SW2 on the large set, from `DIR/rescore-peers.json` (absent: none).
fn rescore_peers(dir: &Path, rows: &mut [Row], spec: &MixtureSpec, truth: &Truth) -> Result<()> {
    let Some(large) = &truth.large else {
        return Ok(());
    };
    let path = dir.join("rescore-peers.json");
    if !path.exists() {
        eprintln!("  no {}: the peers' SW2 is on set 0 only", path.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
    let mut by_key = std::collections::BTreeMap::new();
    for r in json["rows"].as_array().into_iter().flatten() {
        if r["mixture"].as_str() != Some(spec.name) {
            continue;
        }
        let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let file = dir.join(field("samples"));
        let x = Tensor::read_npy(&file).map_err(|e| io_err(&file, e))?;
        let key = (
            field("library"),
            field("sampler"),
            field("schedule"),
            r["budget"].as_u64().unwrap_or(0) as usize,
        );
        if x.dims() != [LARGE, spec.dim()] {
            return Err(io_err(
                &file,
                format!("has shape {:?}, not [{LARGE}, {}]", x.dims(), spec.dim()),
            ));
        }
        by_key.insert(key, large.0.distance(&host_f64(&x)?)?);
    }
    for row in rows.iter_mut() {
        row.large_sw2 = by_key.get(&row.key()).copied().or(row.large_sw2);
    }
    Ok(())
}

/// `peers select DIR`: the peers' candidates for the large set, by SW2 on set 0, written to
/// `DIR/rescore.json` for `peers.py --rescore`.
pub fn select(dir: &Path) -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let sde = problem_sde(registry)?;
    let mut chosen = Vec::new();
    for spec in mixtures() {
        let truth = Truth::new(registry, &spec, &*sde, false, None)?;
        let (rows, _) = peer_rows(dir, &spec, &truth)?;
        for lib in ["diffusers", "k-diffusion"] {
            for r in candidates(&rows, lib) {
                if let Again::Peer(v) = &r.again {
                    chosen.push(v.clone());
                }
            }
        }
    }
    let path = dir.join("rescore.json");
    let json = serde_json::json!({"sets": 1, "samples": LARGE, "rows": chosen});
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).map_err(|e| io_err(&path, e))?,
    )
    .map_err(|e| io_err(&path, e))?;
    eprintln!("wrote {}: {} candidates", path.display(), chosen.len());
    Ok(())
}

/// The peers' rows for `spec` from `DIR/peers.json`.
fn peer_rows(dir: &Path, spec: &MixtureSpec, truth: &Truth) -> Result<(Vec<Row>, String)> {
    let path = dir.join("peers.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
    let versions = json["versions"].to_string();
    let mut rows = Vec::new();
    for r in json["rows"].as_array().into_iter().flatten() {
        if r["mixture"].as_str() != Some(spec.name) {
            continue;
        }
        let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let file: PathBuf = dir.join(field("samples"));
        let x = Tensor::read_npy(&file).map_err(|e| io_err(&file, e))?;
        if x.dims() != [SAMPLES, spec.dim()] {
            return Err(io_err(
                &file,
                format!("has shape {:?}, not [{SAMPLES}, {}]", x.dims(), spec.dim()),
            ));
        }
        let stochastic = r["stochastic"].as_bool().unwrap_or(false);
        let Scores {
            sw2,
            paired,
            coupled_sw2,
            halves,
        } = truth.score(&host_f64(&x)?, !stochastic)?;
        rows.push(Row {
            library: field("library"),
            sampler: field("sampler"),
            schedule: field("schedule"),
            budget: r["budget"].as_u64().unwrap_or(0) as usize,
            nfe: r["nfe"].as_u64().unwrap_or(0),
            stochastic,
            sw2,
            paired,
            coupled_sw2,
            halves,
            large_sw2: None,
            again: Again::Peer(r.clone()),
        });
    }
    Ok((rows, versions))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.3e}"))
}

/// The floors as the tables print them: set 0's, then the large set's.
fn floors(truth: &Truth) -> String {
    let mut s = format!("{:.4} ± {:.4}", truth.floor.mean, truth.floor.sd);
    if let Some((_, f)) = &truth.large {
        let _ = write!(s, "; at {LARGE}: {:.4} ± {:.4}", f.mean, f.sd);
    }
    s
}

fn fmt_sw2(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.4}"))
}

/// The best row of `library` (any library when `None`) at `budget` by `key`.
fn best<'a>(
    rows: &'a [Row],
    library: Option<&str>,
    budget: usize,
    stochastic: Option<bool>,
    key: impl Fn(&Row) -> Option<f64>,
) -> Option<(&'a Row, f64)> {
    rows.iter()
        .filter(|r| r.budget == budget)
        .filter(|r| library.is_none_or(|l| r.library == l))
        .filter(|r| stochastic.is_none_or(|s| r.stochastic == s))
        .filter_map(|r| key(r).map(|k| (r, k)))
        .filter(|(_, k)| k.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The lower of two libraries' bests.
fn lowest(bests: [Option<(&Row, f64)>; 2]) -> Option<(&Row, f64)> {
    bests
        .into_iter()
        .flatten()
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The coupled floor as the tables print it.
fn coupled_floor(truth: &Truth) -> String {
    truth.endpoints.as_ref().map_or("—".into(), |e| {
        format!("{:.4} ± {:.4}", e.floor.mean, e.floor.sd)
    })
}

fn fmt_halves(v: Option<[f64; 2]>) -> String {
    v.map_or("—".into(), |[a, b]| format!("{a:.2e} / {b:.2e}"))
}

/// `peers table DIR`.
pub fn table(dir: &Path, only_sdeflow: bool, top: usize, solvers: &[String]) -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let sde = problem_sde(registry)?;
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "\n## Summary: the best of each library\n\n\
         Paired: RMS per coordinate to the exact PF-ODE endpoint of the first {PAIRED} starts, \
         deterministic samplers. SW2: against the exact PF-ODE endpoints of all {SAMPLES} \
         starts, which are exact samples of p at the endpoint, best over every sampler \
         (halves: the same on each half of the starts; an exact stochastic sampler reads the \
         floor).\n"
    );
    let _ = writeln!(
        summary,
        "| mixture | NFE | paired: sdeflow | diffusers | k-diffusion | SW2: sdeflow | diffusers | k-diffusion | SW2 floor of exact stochastic sampling |"
    );
    let _ = writeln!(summary, "|---|---|---|---|---|---|---|---|---|");
    let mut independent = String::new();
    let _ = writeln!(
        independent,
        "\n## SW2 against independent exact samples: chosen on set 0, read on {LARGE} fresh starts\n"
    );
    let _ = writeln!(
        independent,
        "| mixture | NFE | sdeflow | diffusers | k-diffusion | floor: set 0; large set |"
    );
    let _ = writeln!(independent, "|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    let mut dump = Vec::new();
    for spec in mixtures() {
        eprintln!("{}: exact reference and floor", spec.name);
        let truth = Truth::new(registry, &spec, &*sde, true, Some(dir))?;
        let mut rows = sdeflow_rows(registry, &spec, &sde, &truth, solvers)?;
        rescore_sdeflow(&mut rows, &spec, &*sde, &truth)?;
        if !only_sdeflow {
            let (mut peers, versions) = peer_rows(dir, &spec, &truth)?;
            rescore_peers(dir, &mut peers, &spec, &truth)?;
            if spec.name == "ring" {
                println!("peers: {versions}");
            }
            rows.extend(peers);
        }
        dump.extend(rows.iter().map(|r| {
            serde_json::json!({
                "mixture": spec.name,
                "library": r.library,
                "sampler": r.sampler,
                "schedule": r.schedule,
                "budget": r.budget,
                "nfe": r.nfe,
                "stochastic": r.stochastic,
                "sw2": r.sw2,
                "paired": r.paired,
                "coupled_sw2": r.coupled_sw2,
                "coupled_sw2_halves": r.halves,
                "large_sw2": r.large_sw2,
            })
        }));
        for budget in BUDGETS {
            let mut at: Vec<&Row> = rows.iter().filter(|r| r.budget == budget).collect();
            at.sort_by(|a, b| {
                let k = |r: &Row| r.coupled_sw2.unwrap_or(f64::INFINITY);
                k(a).total_cmp(&k(b)).then(a.sw2.total_cmp(&b.sw2))
            });
            println!(
                "\n### {} at NFE ≤ {budget} (SW2 floor {}; against the endpoints {}; the best {top} per library by SW2 against the endpoints)\n",
                spec.name,
                floors(&truth),
                coupled_floor(&truth)
            );
            println!(
                "| library | sampler | schedule | NFE | paired error | SW2 vs endpoints | halves | SW2 | SW2 at {LARGE} |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            for lib in ["sdeflow", "diffusers", "k-diffusion"] {
                for r in at.iter().filter(|r| r.library == lib).take(top) {
                    println!(
                        "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {} |",
                        r.library,
                        r.sampler,
                        r.schedule,
                        r.nfe,
                        fmt_opt(r.paired),
                        fmt_opt(r.coupled_sw2),
                        fmt_halves(r.halves),
                        r.sw2,
                        fmt_sw2(r.large_sw2)
                    );
                }
            }
            let det = |lib: &str| best(&rows, Some(lib), budget, Some(false), |r| r.paired);
            let coupled = |lib: &str| best(&rows, Some(lib), budget, None, |r| r.coupled_sw2);
            // Against independent samples the best SW2 is chosen on set 0 and read on the
            // large set, where it exists.
            let sw = |lib: &str| {
                best(&rows, Some(lib), budget, None, |r| r.large_sw2)
                    .or_else(|| best(&rows, Some(lib), budget, None, |r| Some(r.sw2)))
            };
            let cell = |b: Option<(&Row, f64)>| {
                b.map_or("—".into(), |(r, v)| {
                    format!("{v:.3e} ({}, {})", r.sampler, r.schedule)
                })
            };
            let coupled_cell = |b: Option<(&Row, f64)>| {
                b.map_or("—".into(), |(r, v)| {
                    format!(
                        "{v:.3e} (halves {}; {}, {})",
                        fmt_halves(r.halves),
                        r.sampler,
                        r.schedule
                    )
                })
            };
            let sw_cell = |b: Option<(&Row, f64)>| {
                b.map_or("—".into(), |(r, _)| {
                    format!(
                        "{} (set 0: {:.4}; {}, {})",
                        fmt_sw2(r.large_sw2),
                        r.sw2,
                        r.sampler,
                        r.schedule
                    )
                })
            };
            let _ = writeln!(
                summary,
                "| {} | {budget} | {} | {} | {} | {} | {} | {} | {} |",
                spec.name,
                cell(det("sdeflow")),
                cell(det("diffusers")),
                cell(det("k-diffusion")),
                coupled_cell(coupled("sdeflow")),
                coupled_cell(coupled("diffusers")),
                coupled_cell(coupled("k-diffusion")),
                coupled_floor(&truth)
            );
            let _ = writeln!(
                independent,
                "| {} | {budget} | {} | {} | {} | {} |",
                spec.name,
                sw_cell(sw("sdeflow")),
                sw_cell(sw("diffusers")),
                sw_cell(sw("k-diffusion")),
                floors(&truth)
            );
            if !only_sdeflow && (budget == 10 || budget == 20) {
                let ours = det("sdeflow");
                let theirs = lowest([det("diffusers"), det("k-diffusion")]);
                let ours_sw = coupled("sdeflow");
                let theirs_sw = lowest([coupled("diffusers"), coupled("k-diffusion")]);
                let below = matches!((ours, theirs), (Some(o), Some(t)) if o.1 < t.1);
                let no_worse = matches!((ours_sw, theirs_sw), (Some(o), Some(t)) if o.1 <= t.1);
                // The order on each half of the starts, so that a verdict within the metric's
                // resolution shows as such.
                let on_halves = match (ours_sw, theirs_sw) {
                    (Some((o, _)), Some((t, _))) => match (o.halves, t.halves) {
                        (Some(a), Some(b)) => {
                            let held = (0..2).filter(|&h| (a[h] <= b[h]) == no_worse).count();
                            format!("{held} of 2 halves agree")
                        }
                        _ => "halves —".into(),
                    },
                    _ => "halves —".into(),
                };
                let v = |b: Option<(&Row, f64)>, p: usize| {
                    b.map_or("—".into(), |b| format!("{:.p$e}", b.1))
                };
                let verdict = format!(
                    "{} NFE {budget}: paired {} vs best peer {} → {}; SW2 against the endpoints {} vs best peer {} → {} ({on_halves}; an exact stochastic sampler reads {})",
                    spec.name,
                    v(ours, 3),
                    v(theirs, 3),
                    if below { "sdeflow below" } else { "NOT below" },
                    v(ours_sw, 3),
                    v(theirs_sw, 3),
                    if no_worse { "no worse" } else { "WORSE" },
                    coupled_floor(&truth)
                );
                eprintln!("verdict: {verdict}");
                verdicts.push(verdict);
            }
        }
    }
    let path = dir.join("table.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&dump).map_err(|e| io_err(&path, e))?,
    )
    .map_err(|e| io_err(&path, e))?;
    eprintln!("wrote {} ({} rows)", path.display(), dump.len());
    println!("{summary}");
    for v in verdicts {
        println!("- {v}");
    }
    println!("{independent}");
    Ok(())
}
