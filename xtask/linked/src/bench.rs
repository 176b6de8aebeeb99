//! `cargo xtask bench`: what the framework costs beside the model (issue "the framework must
//! vanish behind the model"), measured side by side in one run on the CPU.
//!
//! For every registered solver (and each registered parameter variant), sampling `--batch`
//! samples of the `mlp` score model (untrained, default shape: 3 hidden layers of 256) under
//! VP, in f32, with the pipeline's default 1,024-row chunks:
//! - the overhead ratio = sampling wall time / (NFE × the model's own time on the same chunked
//!   calls), with the padding waste (padded rows / rows) beside it;
//! - samples per second at NFE 10, 20, 50 and 100 (the fastest of `--repeats` runs);
//! - the solver's own time per step with a free model (zeros out, no arithmetic): everything
//!   the framework does per step — noise included.
//!
//! **How the ratio is measured.** The model's own time on the pipeline's calls is taken call by
//! call: in the timed runs the model is wrapped so that each call the pipeline makes is made
//! again at once, on the same chunk and time (its *twin*, output dropped), and both are
//! clocked. The sampling wall time is the run's, less its twins'. The two halves of the ratio
//! are then measured milliseconds apart, so the seconds-long swings of a shared VM's speed
//! (±3% between runs here) fall on both alike. The median over `--repeats` runs is printed
//! with its range, and split in two factors:
//! - *outside the model*: the run's time outside the model's calls over its time inside them:
//!   the framework's own work — solver arithmetic, chunking, noise not hidden by the
//!   prefetch, the finiteness checks — with the model present, cold caches included;
//! - *model in run ÷ model alone*: the pipeline's calls over their twins. It is 1 unless the
//!   framework slows the model down (caches, memory, the noise thread).
//!
//! Built in release: from a debug build it re-runs itself with `cargo run --release`.

use std::{
    process::{Command, ExitCode},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    At, Error, ModelContext, Pipeline, Result, ScoreModel,
    denoiser::DEFAULT_CHUNK_ROWS,
    noise::{Stream, philox_key, philox_normal_tensor},
};

/// NFE budgets of the throughput columns.
const BUDGETS: [usize; 4] = [10, 20, 50, 100];

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Samples per run.
    pub batch: usize,
    /// Threads (RAYON_NUM_THREADS for candle and the noise).
    pub threads: usize,
    /// Runs per timing.
    pub repeats: usize,
    /// Only this solver (and its variants).
    pub solver: Option<String>,
}

/// Re-runs in release when built without optimizations, with the thread count pinned.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let mut line = vec![
        "bench".to_string(),
        "--batch".into(),
        args.batch.to_string(),
        "--threads".into(),
        args.threads.to_string(),
        "--repeats".into(),
        args.repeats.to_string(),
    ];
    if let Some(s) = &args.solver {
        line.extend(["--solver".into(), s.clone()]);
    }
    if let Some(code) = pinned(args.threads, &line)? {
        return Ok(code);
    }
    measure(&args)?;
    Ok(ExitCode::SUCCESS)
}

/// Re-runs `args` (an `xtask-linked` command line) in a release build with RAYON_NUM_THREADS
/// pinned to `threads`, unless this is already that process (then `None`).
pub fn pinned(threads: usize, args: &[String]) -> Result<Option<ExitCode>> {
    let is_pinned = std::env::var("RAYON_NUM_THREADS").ok() == Some(threads.to_string());
    if !cfg!(debug_assertions) && is_pinned {
        return Ok(None);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask-linked",
            "--",
        ])
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .status()
        .map_err(|e| Error::Msg(format!("cannot run cargo for the release build: {e}")))?;
    Ok(Some(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }))
}

/// Runs `line(k)` (an `xtask-linked` command line) in its own pinned release process for each
/// thread count k of 1 and 2 ([`pinned`]), in turn; the first failure's code.
pub(crate) fn each_thread_count<L: AsRef<[String]>>(line: impl Fn(usize) -> L) -> Result<ExitCode> {
    for k in [1, 2] {
        if let Some(code) = pinned(k, line(k).as_ref())?
            && code != ExitCode::SUCCESS
        {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A model that costs nothing: zeros out.
#[derive(Debug)]
struct Free(usize);

impl ScoreModel for Free {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.0]
    }
    fn forward(&self, x: &Tensor, _at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.zeros_like()?)
    }
}

/// A model that clocks its calls and, after each, makes the very same call again (its twin)
/// and clocks that too: the twin is the model's own time on exactly the call the pipeline
/// made, taken a few milliseconds after it, so that a drift of the machine's speed — seconds
/// long on a shared VM — shows in both halves alike.
#[derive(Debug)]
struct Clocked {
    inner: Arc<dyn ScoreModel>,
    /// Nanoseconds inside the pipeline's own calls.
    inside: AtomicU64,
    /// Nanoseconds inside the twins.
    twin: AtomicU64,
}

impl Clocked {
    /// Seconds inside the pipeline's calls and inside their twins since the last call, and
    /// starts again from zero.
    fn take(&self) -> (f64, f64) {
        let secs = |a: &AtomicU64| a.swap(0, Ordering::Relaxed) as f64 * 1e-9;
        (secs(&self.inside), secs(&self.twin))
    }
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl ScoreModel for Clocked {
    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }
    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        let start = Instant::now();
        let out = self.inner.forward(x, at, cond)?;
        self.inside.fetch_add(nanos_since(start), Ordering::Relaxed);
        let start = Instant::now();
        // Detached as it comes, as the denoiser does with the pipeline's own output.
        drop(self.inner.forward(x, at, cond)?.detach());
        self.twin.fetch_add(nanos_since(start), Ordering::Relaxed);
        Ok(out)
    }
    fn rows_independent(&self) -> bool {
        self.inner.rows_independent()
    }
}

/// One sampling run with twins.
#[derive(Debug, Clone, Copy)]
struct TwinRun {
    /// The run's wall time, less its twins'.
    wall: f64,
    /// The time the run spent inside the model's calls.
    inside: f64,
    /// The model's own time on the same calls: the twins'.
    twins: f64,
}

impl TwinRun {
    fn ratio(&self) -> f64 {
        self.wall / self.twins
    }
    /// The run's time outside the model, over its time inside.
    fn outside(&self) -> f64 {
        (self.wall - self.inside) / self.inside
    }
    /// The model's time inside the run, over its twins'.
    fn model_drift(&self) -> f64 {
        self.inside / self.twins
    }
}

/// The median of `v` and its range.
pub(crate) fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The fastest of `repeats` runs of `f`, in seconds.
fn timed<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn measure(args: &BenchArgs) -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let param = registry.param("eps", "()")?;
    let sde = registry.sde("vp", "()")?;
    let ctx = ModelContext::new(Device::Cpu, DType::F32);
    // The copy sampling evaluates: weights off autograd's graph (the pipeline samples with
    // it too), so the model's time is the sampling path's, with no activations kept.
    let trained = registry.model("mlp", "()", &ctx)?;
    let mlp = trained.frozen().unwrap_or(trained);
    if let Some(name) = &args.solver {
        registry.solvers.get(name)?; // an unknown name: the error lists the registered ones
    }
    let d = mlp.sample_shape().iter().product::<usize>();
    let chunk = DEFAULT_CHUNK_ROWS;
    let chunks = args.batch.div_ceil(chunk);
    let padded = chunks * chunk - args.batch;

    // The model's own time per NFE on the chunks the pipeline makes (the last one padded).
    let x = philox_normal_tensor(
        philox_key(1, Stream::Exact),
        0,
        chunks * chunk,
        d,
        0,
        DType::F32,
        &Device::Cpu,
    )?;
    let parts: Vec<Tensor> = (0..chunks)
        .map(|i| x.narrow(0, i * chunk, chunk))
        .collect::<candle_core::Result<_>>()?;
    let c = At::new(sde.coefs(0.5).into(), &*param);
    for p in &parts {
        mlp.forward(p, &c, None)?; // warm-up
    }
    // Each chunk's output detached as it comes, as the denoiser does: the mlp's weights are
    // `Var`s, and a tracked output would keep the chunk's activations alive until the end.
    let model_once = || {
        parts
            .iter()
            .map(|p| Ok(mlp.forward(p, &c, None)?.detach()))
            .collect::<Result<Vec<_>>>()
    };
    let model_time = timed(args.repeats.max(5), model_once)?;
    // One step's noise for the batch, in f32, on one thread: what the prefetch thread computes
    // while the model runs.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::Msg(format!("cannot start a thread pool: {e}")))?;
    let noise_time = one_thread.install(|| {
        timed(args.repeats.max(5) * 10, || {
            philox_normal_tensor(
                philox_key(0, Stream::Sampling),
                0,
                args.batch,
                d,
                2,
                DType::F32,
                &Device::Cpu,
            )
        })
    })?;
    println!(
        "CPU, {} threads (RAYON_NUM_THREADS; candle reports {}), batch {}, f32, vp × eps, mlp {}",
        args.threads,
        candle_core::utils::get_num_threads(),
        args.batch,
        (registry.models.get("mlp")?.info.default_params)(),
    );
    println!(
        "model: {:.3} ms per NFE on {chunks} chunks of {chunk} rows; padding waste {padded}/{} rows = {:.2}%; fastest of {} runs",
        model_time * 1e3,
        args.batch,
        100.0 * padded as f64 / args.batch as f64,
        args.repeats
    );
    println!(
        "noise: {:.3} ms per step's draw ({} × {d} f32 normals, {:.1} ns each, one thread; fastest of {} runs)\n",
        noise_time * 1e3,
        args.batch,
        noise_time * 1e9 / (args.batch * d) as f64,
        args.repeats.max(5) * 10
    );
    println!(
        "| solver | steps at NFE 100 | wall (s) | NFE × model (s) | overhead ratio (range over runs) | outside the model (worst run) | model in run ÷ model alone (range) | samples/s at NFE 10 | 20 | 50 | 100 | free-model time per step (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for p in registry.solvers.all() {
        if args.solver.as_deref().is_some_and(|s| s != p.info.name) {
            continue;
        }
        let sets = std::iter::once("()").chain(p.info.variants.iter().copied());
        for params in sets {
            let label = if params == "()" {
                p.info.name.to_string()
            } else {
                format!("{}{params}", p.info.name)
            };
            let solver = registry.solver(p.info.name, params)?;
            if solver.adaptive().is_some() {
                // Its NFE follow its tolerances, not a budget: no row in a table by NFE.
                println!(
                    "| {label} | adaptive (NFE per sample set by rtol, atol) | | | | | | | | | | |"
                );
                continue;
            }
            let per_step = solver.claims().nfe_per_step;
            let grid = solver.default_discretization(&*sde).grid;
            let pipeline = |model: Arc<dyn ScoreModel>, budget: usize| -> Result<Pipeline> {
                Pipeline::builder()
                    .sde(sde.clone())
                    .param(param.clone())
                    .model(model)
                    .solver(solver.clone())
                    .steps((budget / per_step).max(1))
                    .grid(grid)
                    .dtype(DType::F32)
                    .seed(0)
                    .build()
            };
            let mut rates = Vec::new();
            for budget in &BUDGETS[..BUDGETS.len() - 1] {
                let pl = pipeline(mlp.clone(), *budget)?;
                let wall = timed(args.repeats, || pl.sample(args.batch))?;
                rates.push(args.batch as f64 / wall);
            }
            // At NFE 100: the throughput column, then the ratio from runs whose every model
            // call has its twin.
            let pl = pipeline(mlp.clone(), BUDGETS[BUDGETS.len() - 1])?;
            let steps = pl.discretization().steps;
            let wall = timed(args.repeats, || pl.sample(args.batch))?;
            rates.push(args.batch as f64 / wall);
            let clocked = Arc::new(Clocked {
                inner: mlp.clone(),
                inside: AtomicU64::new(0),
                twin: AtomicU64::new(0),
            });
            let pl = pipeline(clocked.clone(), BUDGETS[BUDGETS.len() - 1])?;
            let mut runs = Vec::new();
            for _ in 0..args.repeats.max(1) {
                clocked.take();
                let start = Instant::now();
                pl.sample(args.batch)?;
                let wall = start.elapsed().as_secs_f64();
                let (inside, twins) = clocked.take();
                runs.push(TwinRun {
                    wall: wall - twins,
                    inside,
                    twins,
                });
            }
            let (ratio, low, high) = median_range(runs.iter().map(TwinRun::ratio).collect());
            let (outside, _, outside_high) =
                median_range(runs.iter().map(TwinRun::outside).collect());
            let (drift, drift_low, drift_high) =
                median_range(runs.iter().map(TwinRun::model_drift).collect());
            let model_total = median_range(runs.iter().map(|p| p.twins).collect()).0;
            worst = worst.max(ratio);
            let free = pipeline(Arc::new(Free(d)), 100)?;
            let free_time = timed(args.repeats, || free.sample(args.batch))? / steps as f64;
            println!(
                "| {label} | {steps} | {wall:.3} | {model_total:.3} | {ratio:.4} ({low:.4}–{high:.4}) | {:.2}% (≤ {:.2}%) | {drift:.4} ({drift_low:.4}–{drift_high:.4}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} |",
                outside * 100.0,
                outside_high * 100.0,
                rates[0],
                rates[1],
                rates[2],
                rates[3],
                free_time * 1e3
            );
        }
    }
    println!("\nworst overhead ratio (median of its runs): {worst:.4} (target ≤ 1.01)");
    if !worst.is_finite() {
        return Err(Error::Msg("a ratio is not finite".into()));
    }
    Ok(())
}
