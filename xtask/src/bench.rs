//! `cargo xtask bench`: what the framework costs beside the model (issue "the framework must
//! vanish behind the model"), measured side by side in one run on the CPU.
//!
//! For every registered solver (and each registered parameter variant), sampling `--batch`
//! samples of the `mlp` score model (untrained, default shape: 3 hidden layers of 256) under
//! VP, in f32, with the pipeline's default 1,024-row chunks:
//! - the overhead ratio = sampling wall time / (NFE × the model's own time on the same chunked
//!   calls), the model's time measured by calling `forward` on the same chunks (the last one
//!   zero-padded) outside the pipeline; the padding waste (padded rows / rows) beside it;
//! - samples per second at NFE 10, 20, 50 and 100;
//! - the solver's own time per step with a free model (zeros out, no arithmetic): everything
//!   the framework does per step — noise included.
//!
//! The ratio is measured in pairs: each sampling run at NFE 100 is followed by the same number
//! of the model's own calls, and the median of the `--repeats` ratios is reported with their
//! range, so that a drift of the machine's speed shows in both halves of a pair. The model's
//! one-call time in the header and the throughput columns at NFE 10, 20 and 50 are the fastest
//! of `--repeats` runs. Built in release: from a debug build it re-runs itself with
//! `cargo run --release`.

use std::{
    path::Path,
    process::{Command, ExitCode},
    sync::{Arc, Mutex},
    time::Instant,
};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Error, ModelContext, Pipeline, Result, ScoreModel, TimeCoefs,
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
    let pinned = std::env::var("RAYON_NUM_THREADS").ok() == Some(args.threads.to_string());
    if cfg!(debug_assertions) || !pinned {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "xtask",
                "--",
                "bench",
            ])
            .args(["--batch", &args.batch.to_string()])
            .args(["--threads", &args.threads.to_string()])
            .args(["--repeats", &args.repeats.to_string()])
            .args(args.solver.iter().flat_map(|s| ["--solver", s]))
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            .status()
            .map_err(|e| Error::Msg(format!("cannot run cargo for the release build: {e}")))?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    measure(&args)?;
    Ok(ExitCode::SUCCESS)
}

/// A model that costs nothing: zeros out.
#[derive(Debug)]
struct Free(usize);

impl ScoreModel for Free {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.0]
    }
    fn forward(&self, x: &Tensor, _c: &TimeCoefs, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.zeros_like()?)
    }
    fn load(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
}

/// A model that records the calls it gets (each chunk and its time), passing them on.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn ScoreModel>,
    calls: Mutex<Vec<(Tensor, TimeCoefs)>>,
}

impl ScoreModel for Recorder {
    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }
    fn forward(&self, x: &Tensor, c: &TimeCoefs, cond: Option<&Tensor>) -> Result<Tensor> {
        self.calls
            .lock()
            .map_err(|_| Error::Msg("the recorder's lock is poisoned".into()))?
            .push((x.detach(), *c)); // not the graph a tracked x may carry
        self.inner.forward(x, c, cond)
    }
    fn rows_independent(&self) -> bool {
        self.inner.rows_independent()
    }
    fn load(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
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
    let ctx = ModelContext {
        param: param.clone(),
        device: Device::Cpu,
        dtype: DType::F32,
    };
    let mlp = registry.model("mlp", "()", &ctx)?;
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
    let c = sde.coefs(0.5);
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
    println!(
        "CPU, {} threads (RAYON_NUM_THREADS; candle reports {}), batch {}, f32, vp × eps, mlp {}",
        args.threads,
        candle_core::utils::get_num_threads(),
        args.batch,
        (registry.models.get("mlp")?.info.default_params)(),
    );
    println!(
        "model: {:.3} ms per NFE on {chunks} chunks of {chunk} rows; padding waste {padded}/{} rows = {:.2}%; fastest of {} runs\n",
        model_time * 1e3,
        args.batch,
        100.0 * padded as f64 / args.batch as f64,
        args.repeats
    );
    println!(
        "| solver | steps at NFE 100 | wall (s) | NFE × model (s) | overhead ratio (range over runs) | samples/s at NFE 10 | 20 | 50 | 100 | free-model time per step (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
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
            let per_step = solver.claims().nfe_per_step;
            let grid = solver.default_schedule(&*sde).grid;
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
            // At NFE 100: the calls the pipeline makes of the model (its chunks, padded, at
            // its times), recorded in one run; then each sampling run beside the model's own
            // time on exactly those calls, one ratio per pair, so that a drift of the
            // machine's speed shows in both halves.
            let recorder = Arc::new(Recorder {
                inner: mlp.clone(),
                calls: Mutex::new(Vec::new()),
            });
            pipeline(recorder.clone(), BUDGETS[BUDGETS.len() - 1])?.sample(args.batch)?;
            let calls = std::mem::take(
                &mut *recorder
                    .calls
                    .lock()
                    .map_err(|_| Error::Msg("the recorder's lock is poisoned".into()))?,
            );
            let pl = pipeline(mlp.clone(), BUDGETS[BUDGETS.len() - 1])?;
            let steps = pl.schedule().steps;
            let mut pairs = Vec::new();
            for _ in 0..args.repeats.max(1) {
                let start = Instant::now();
                pl.sample(args.batch)?;
                let wall = start.elapsed().as_secs_f64();
                let start = Instant::now();
                for (x, c) in &calls {
                    // Detached as it comes, as the denoiser does.
                    drop(mlp.forward(x, c, None)?.detach());
                }
                pairs.push((wall, start.elapsed().as_secs_f64()));
            }
            pairs.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
            let (wall, model_total) = pairs[pairs.len() / 2];
            let ratio = wall / model_total;
            let (low, high) = (
                pairs[0].0 / pairs[0].1,
                pairs[pairs.len() - 1].0 / pairs[pairs.len() - 1].1,
            );
            rates.push(args.batch as f64 / wall);
            worst = worst.max(ratio);
            let free = pipeline(Arc::new(Free(d)), 100)?;
            let free_time = timed(args.repeats, || free.sample(args.batch))? / steps as f64;
            println!(
                "| {label} | {steps} | {wall:.3} | {model_total:.3} | {ratio:.4} ({low:.4}–{high:.4}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} |",
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
