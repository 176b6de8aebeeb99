//! `list`, `describe` and `check`: what is registered, what a plugin claims, and what a
//! config will do, all before any model call.

use std::fmt::Write;

use sdeflow_kernel::{
    Config, Data, Dsm, Error, KINDS, Order, Registry, Result, SolverClaims, Split,
};

/// The registered plugins by kind; as a Markdown table with `markdown`.
pub fn list(registry: &Registry, markdown: bool) -> String {
    let mut s = String::new();
    if markdown {
        s.push_str("| kind | name | crate | what |\n|---|---|---|---|\n");
        for (kind, info) in registry.infos() {
            let _ = writeln!(
                s,
                "| {kind} | `{}` | `{}` | {} |",
                info.name,
                info.crate_name,
                // A `|` inside a cell would end it.
                info.summary.replace('|', "\\|")
            );
        }
        return s;
    }
    let mut last = "";
    for (kind, info) in registry.infos() {
        if kind != last {
            let _ = writeln!(s, "{kind}:");
            last = kind;
        }
        let _ = writeln!(s, "  {:<16} {}", info.name, info.summary);
    }
    s
}

/// A solver's claims in words.
pub fn claims_text(c: &SolverClaims) -> String {
    let order = match c.order {
        Order::Ode(p) => format!("order {p}"),
        Order::Sde { weak, strong } => format!("weak order {weak}, strong order {strong}"),
        Order::Plateau { snr } => {
            format!("no order: plateaus at the Langevin fixed point of snr r = {snr}")
        }
        Order::Unclaimed => "no order claimed: judged by sample quality at its defaults".into(),
    };
    format!(
        "{order}; {} NFE per step; {}; integrates the {}; converges on a {} grid",
        c.nfe_per_step,
        if c.stochastic {
            "stochastic"
        } else {
            "deterministic"
        },
        c.equation,
        c.natural_grid
    )
}

/// The `nll:` section in words: rows, trace, the solver and its steps or tolerances, the bound.
fn nll_text(spec: &sdeflow_kernel::config::NllSpec) -> Result<String> {
    use sdeflow_kernel::{config::DEFAULT_NLL_SOLVER, likelihood::Trace};
    let rows = match &spec.npy {
        Some(p) => format!("the rows of {}", p.display()),
        None => format!("{} {:?} rows", spec.rows, spec.split).to_lowercase(),
    };
    let trace = match spec.trace {
        Trace::Exact => "exact trace".to_string(),
        Trace::Hutchinson { probes, dist } => {
            format!("Hutchinson trace ({probes} {dist:?} probes)").to_lowercase()
        }
    };
    let (name, solver) = match &spec.solver {
        Some(s) => (s.name, s.plugin.clone()),
        None => (
            DEFAULT_NLL_SOLVER,
            sdeflow_plugins::registry()?.solver(DEFAULT_NLL_SOLVER, "()")?,
        ),
    };
    let stepping = match solver.adaptive() {
        Some(a) => a.to_string(),
        None => format!(
            "{} {} steps",
            spec.steps
                .unwrap_or(sdeflow_kernel::config::DEFAULT_NLL_STEPS),
            spec.grid.unwrap_or(sdeflow_kernel::GridKind::Uniform)
        ),
    };
    Ok(format!(
        "{rows}, {trace}, {name} ({stepping}){}{}; variational bound {}",
        if spec.dequantize {
            ", integer data dequantized"
        } else {
            ""
        },
        if spec.latents {
            ", latents written"
        } else {
            ""
        },
        spec.bound
            .map_or("off".into(), |k| format!("with {k} times per row")),
    ))
}

/// A conditional model's sampling: the classes drawn and the guidance.
fn guidance_text(g: &sdeflow_kernel::config::GuidanceSpec, classes: Option<usize>) -> String {
    use sdeflow_kernel::config::Classes;
    let k = classes.unwrap_or(0);
    let which = match &g.classes {
        Classes::None => return "unconditional: every label ∅ (no guidance)".into(),
        Classes::All => format!(
            "classes 0…{} in turn (sample i: class i mod {k})",
            k.saturating_sub(1)
        ),
        Classes::Only(list) => format!("classes {list:?} in turn"),
    };
    let scale = if g.search.is_empty() {
        format!("w = {}", g.scale)
    } else {
        format!(
            "w chosen from {:?} on {} samples of the next seed (the most 5-NN-accurate whose class-conditional pixel sliced W2 is within the floor of real images, or within its noise of the lowest)",
            g.search, g.search_samples
        )
    };
    format!("{which}; {scale}; ε̂ = (1 + w) ε̂(x, y) − w ε̂(x, ∅), 2 NFE per evaluation when w ≠ 0")
}

/// A solver's claims in words, and for an adaptive solver its stepping instead of a grid.
pub fn solver_text(solver: &dyn sdeflow_kernel::Solver) -> String {
    let c = solver.claims();
    if solver.adaptive().is_none() {
        return claims_text(&c);
    }
    let order = match c.order {
        Order::Ode(p) => format!("order {p}"),
        other => format!("{other:?}"),
    };
    format!(
        "{order}; adaptive: each sample on its own steps, {} NFE per attempted step; deterministic; integrates the {}",
        c.nfe_per_step, c.equation
    )
}

/// `describe KIND/NAME`: the plugin's documentation, default parameters and claims.
pub fn describe(registry: &Registry, what: &str) -> Result<String> {
    if what == "solver" {
        return Ok(format!(
            "{}{}",
            crate::advice::HEADING,
            crate::advice::markdown()
        ));
    }
    let (kind, name) = what.split_once('/').ok_or_else(|| {
        Error::invalid(
            "describe",
            "plugin",
            format!(
                "`{what}` is not KIND/NAME; for example `solver/euler_maruyama` (or `solver`: \
                 which solver at which budget)"
            ),
        )
    })?;
    let Some(kind) = KINDS.iter().copied().find(|k| *k == kind) else {
        return Err(Error::invalid(
            "describe",
            "kind",
            format!("`{kind}` is not a kind; use one of {}", KINDS.join(", ")),
        ));
    };
    let infos = registry.infos();
    let Some((_, info)) = infos.iter().find(|(k, i)| *k == kind && i.name == name) else {
        let known = infos
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, i)| i.name.to_string())
            .collect();
        return Err(Error::UnknownPlugin {
            kind,
            name: name.to_string(),
            known,
        });
    };
    let mut s = format!(
        "{kind}/{} — {} (crate {})\n\n",
        info.name, info.summary, info.crate_name
    );
    if let Some(target) = info.alias_of {
        let _ = write!(
            s,
            "`{}()` is another name for `{target}`: the documentation below is its crate's.\n\n",
            info.name
        );
    }
    s.push_str(&info.doc());
    let _ = write!(
        s,
        "\n\n## Default parameters\n{}({})\n",
        info.name,
        strip_parens(&(info.default_params)())
    );
    match kind {
        "solver" => {
            let solver = registry.solver(name, "()")?;
            let _ = writeln!(s, "\n## Declared claims\n{}", solver_text(&*solver));
            let _ = write!(
                s,
                "\n{}{}",
                crate::advice::HEADING,
                crate::advice::markdown()
            );
        }
        "sde" => {
            let sde = registry.sde(name, "()")?;
            let _ = writeln!(
                s,
                "\n## At the defaults\nT = {}, t_ε = {:e}, prior N(0, {}² I), default grid {}",
                sde.t_max(),
                sde.t_eps(),
                sde.prior_std(),
                sde.default_grid()
            );
        }
        "data" => {
            let _ = match registry.data(name, "()") {
                Ok(data) => writeln!(s, "\n## At the defaults\n{}", data_text(name, &data)),
                Err(e) => writeln!(
                    s,
                    "\n## At the defaults\nnot buildable without parameters: {e}"
                ),
            };
        }
        _ => {}
    }
    Ok(s)
}

fn strip_parens(ron: &str) -> &str {
    let t = ron.trim();
    t.strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(t)
}

/// `check`: the plan of a config — its parts, the grid with t, α, σ, λ per step, and NFE.
pub fn plan(config: &Config, all: bool) -> Result<String> {
    let pipeline = config.pipeline(candle_core::Device::Cpu)?;
    let sde = pipeline.sde();
    let claims = pipeline.solver().claims();
    let schedule = pipeline.discretization();
    let mut s = String::new();
    let _ = writeln!(s, "config  {}", config.file);
    if let Some(data) = &config.data {
        let _ = writeln!(s, "data    {}", data_text(data.name, &data.plugin));
    }
    let _ = writeln!(
        s,
        "sde     {} (T = {}, t_ε = {:e}, prior N(0, {}² I))",
        config.sde.name,
        sde.t_max(),
        sde.t_eps(),
        sde.prior_std()
    );
    let predicts = if config.model.plugin.target().is_some() {
        format!("{}() (the model's own target)", config.target_name())
    } else {
        format!("{}() (what the network learns)", config.target_name())
    };
    let _ = writeln!(s, "param   {predicts}");
    let shape = pipeline.model().sample_shape();
    let exact = if pipeline.model().exact_law().is_some() {
        ", exact law known"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "model   {} (sample shape {shape:?}{exact})",
        config.model.name
    );
    if let Some(g) = config.guidance_spec() {
        let _ = writeln!(
            s,
            "guide   {}",
            guidance_text(&g, pipeline.model().classes())
        );
    }
    let _ = writeln!(
        s,
        "solver  {}: {}",
        config.solver.name,
        solver_text(pipeline.solver())
    );
    let place = format!(
        "{} on {}, seed {}, model chunks {}",
        format!("{:?}", config.dtype).to_lowercase(),
        config.device,
        config.seed,
        config
            .chunk_rows
            .map_or("off".into(), |c| format!("of {c} rows")),
    );
    // The solver's evaluations, plus the final denoising step when the config asks for it.
    let adaptive = pipeline.solver().adaptive();
    match (adaptive, pipeline.claimed_nfe()) {
        (Some(a), _) => {
            let tol = a.tolerances;
            let _ = writeln!(
                s,
                "run     {} samples, adaptive steps per sample from t = {:e} to {:e}: rtol {:e}, atol {:e}, min step {:e}, at most {} NFE per sample, first step {}; {place}",
                config.samples,
                pipeline.times()[0],
                pipeline.times()[schedule.steps],
                tol.rtol,
                tol.atol,
                tol.min_step,
                tol.max_nfe,
                tol.first_step
                    .map_or("automatic (Hairer's, 2 NFE)".into(), |h| format!("{h:e}")),
            );
            let c = a.controller;
            let _ = writeln!(
                s,
                "        PI controller: safety {}, β₁ {:.4}, β₂ {:.4}, step factor in [{}, {}]",
                c.safety, c.beta1, c.beta2, c.min_factor, c.max_factor
            );
        }
        (None, Some(total_nfe)) => {
            let _ = writeln!(
                s,
                "run     {} samples, {} grid, {} steps, {} NFE per sample, {place}",
                config.samples, schedule.grid, schedule.steps, total_nfe,
            );
        }
        (None, None) => unreachable!("a solver on a grid claims its NFE"),
    }
    if let Some(path) = &config.latents {
        let _ = writeln!(
            s,
            "start   x_T from {} (instead of prior draws)",
            path.display()
        );
    }
    if config.jobs.contains(&sdeflow_kernel::config::Job::Train) || config.train.is_some() {
        let _ = writeln!(
            s,
            "train   {}",
            train_text(&config.train.clone().unwrap_or_default())
        );
    }
    if let (Some(k), true) = (
        pipeline.model().classes(),
        config.jobs.contains(&sdeflow_kernel::config::Job::Train),
    ) {
        let _ = writeln!(
            s,
            "        labels of {k} classes; each replaced by ∅ with probability {} (classifier-free guidance)",
            config.train.clone().unwrap_or_default().label_dropout
        );
    }
    if config.jobs.contains(&sdeflow_kernel::config::Job::Nll) || config.nll.is_some() {
        let _ = writeln!(
            s,
            "nll     {}",
            nll_text(&config.nll.clone().unwrap_or_default())?
        );
    }
    let jobs: Vec<String> = config
        .jobs
        .iter()
        .map(|j| format!("{j:?}").to_lowercase())
        .collect();
    let _ = writeln!(s, "jobs    {}", jobs.join(", "));
    if adaptive.is_some() {
        if let Some(w) = &config.weighting {
            loss_plan(&mut s, config, &pipeline, w);
        }
        return Ok(s);
    }
    let total_nfe = pipeline.claimed_nfe().unwrap_or_default();
    let _ = writeln!(
        s,
        "\n{:>6} {:>13} {:>13} {:>13} {:>10} {:>13} {:>6}",
        "step", "t", "α", "σ", "λ", "h", "NFE"
    );
    let times = pipeline.times();
    let n = schedule.steps;
    for (i, &t) in times.iter().enumerate() {
        if !all && n > 20 && (10..=n - 10).contains(&i) {
            if i == 10 {
                let _ = writeln!(s, "{:>6}", "…");
            }
            continue;
        }
        let c = sde.coefs(t);
        let h = if i < n {
            format!("{:13.6e}", t - times[i + 1])
        } else {
            format!("{:>13}", "—")
        };
        // Evaluations after step i + 1: the last step may cost less (Solver::nfe).
        let nfe = if i + 1 < n {
            (claims.nfe_per_step * (i + 1)) as u64
        } else if i < n {
            pipeline.solver().nfe(n) as u64
        } else {
            total_nfe
        };
        let _ = writeln!(
            s,
            "{i:>6} {t:13.6e} {:13.6e} {:13.6e} {:10.4} {h} {nfe:>6}",
            c.alpha, c.sigma, c.lambda
        );
    }
    if let Some(t) = pipeline.tuning() {
        let _ = writeln!(
            s,
            "\ntuned   the grid above: RMS endpoint error per coordinate {:.3e} on {} calibration rows (prior draws, seed XOR {:#x}), from {:.3e} on {}, the best plain grid; {} solver runs against RK4 on {} λ-uniform steps",
            t.rmse,
            t.rows,
            sdeflow_kernel::tune::CALIBRATION_SEED,
            t.start_rmse,
            t.started_from,
            t.runs,
            t.reference_steps
        );
    }
    if let Some(w) = &config.weighting {
        loss_plan(&mut s, config, &pipeline, w);
    }
    Ok(s)
}

/// What a data source gives: its shape, size and split, labels, range and levels, and
/// whether its law is known.
pub fn data_text(name: &str, data: &Data) -> String {
    let src = data.source();
    let size = match (data.len(Split::Train), data.len(Split::Heldout)) {
        (Some(tr), Some(he)) => {
            format!("{} stored rows ({tr} train, {he} held out, fixed)", tr + he)
        }
        _ => "unbounded draws (train and held-out: independent streams)".into(),
    };
    let labels = src
        .classes()
        .map_or("no labels".into(), |c| format!("{c} classes"));
    let range = src.range().map_or("unbounded values".into(), |(lo, hi)| {
        format!("values in [{lo}, {hi}]")
    });
    let levels = data.levels().map_or(String::new(), |l| {
        format!(
            ", {} levels (bits/dim offset {:.4})",
            l.levels,
            l.bits_offset()
        )
    });
    let law = if src.exact_law().is_some() {
        ", exact law known"
    } else if src.moments().is_some() {
        ", exact moments known"
    } else {
        ""
    };
    format!(
        "{name}: rows of shape {:?}, {size}, {labels}, {range}{levels}{law}",
        data.sample_shape()
    )
}

/// Draws `data`'s first train rows (seed `seed`) to `path`: a scatter of 5,000 rows for 2-D
/// rows, a grid of 64 images for image rows.
pub fn draw_data(name: &str, data: &Data, seed: u64, path: &std::path::Path) -> Result<()> {
    let shape = data.sample_shape();
    let title = format!("data {name}: {}", data_text(name, data));
    if shape == [2] {
        let rows = data.batch(Split::Train, seed, 0, 5_000)?;
        return crate::plot::scatter(
            path,
            "train rows",
            &rows.values,
            rows.labels.as_deref(),
            &format!("data {name}"),
        );
    }
    if matches!(shape.len(), 2 | 3) {
        let rows = data.batch(Split::Train, seed, 0, crate::plot::GRID_ROWS)?;
        let range = data.source().range().unwrap_or_else(|| {
            let lo = rows.values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rows
                .values
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        });
        return crate::plot::image_grid(path, &rows.values, &shape, range, 8);
    }
    Err(Error::invalid(
        "check",
        "--data-png",
        format!(
            "cannot draw {title}: only 2-D rows (a scatter) and images ([c, h, w] or [h, w]) are drawn"
        ),
    ))
}

/// The denoising loss a training run of this config minimises: where its t-density puts the
/// times (quantiles), the density there, the weight on ‖ε̂ − ε‖², and what the model's target
/// and its preconditioning make of them.
fn loss_plan(
    s: &mut String,
    config: &Config,
    pipeline: &sdeflow_kernel::Pipeline,
    w: &sdeflow_kernel::Entry<sdeflow_kernel::registry::WeightingKind>,
) {
    let sde = pipeline.sde();
    let param = pipeline.param();
    let dsm = Dsm::new(config.sde.plugin.clone(), w.plugin.clone());
    let density = if w
        .plugin
        .t_density(sde, &sde.coefs(0.5 * (sde.t_eps() + sde.t_max())))
        .is_some()
    {
        "the weighting's own t-density"
    } else {
        "t uniform on [t_ε, T]"
    };
    let objective = config
        .train
        .as_ref()
        .map(|t| t.objective)
        .unwrap_or_default();
    let _ = match objective {
        sdeflow_kernel::Objective::Dsm {} => writeln!(
            s,
            "\nloss    weighting {}(): E_t~p[w_ε(t) ‖ε̂ − ε‖²], {density}; in the {}() target \
             w_ε/k² on ‖out − target‖²",
            w.name,
            config.target_name()
        ),
        sdeflow_kernel::Objective::Ism {} => writeln!(
            s,
            "\nloss    implicit score matching under weighting {}(): E_t~p[2 w_ε σ² (½‖ŝ‖² + ∇·ŝ)], \
             {density}, the divergence exact ({} vector-Jacobian products per row, differentiated again); \
             DSM's objective less d E[w_ε]",
            w.name,
            pipeline.model().sample_shape().iter().product::<usize>()
        ),
        sdeflow_kernel::Objective::Ssm {
            projections,
            dist,
            variance_reduced,
        } => writeln!(
            s,
            "\nloss    sliced score matching{} under weighting {}(): E_t~p[2 w_ε σ² ({} + vᵀ(∂ŝ/∂x)v)], \
             {density}, {projections} {dist:?} projection{} per row; DSM's objective less d E[w_ε]",
            if variance_reduced {
                " (variance-reduced)"
            } else {
                ""
            },
            w.name,
            if variance_reduced {
                "½‖ŝ‖²"
            } else {
                "½(vᵀŝ)²"
            },
            if projections == 1 { "" } else { "s" }
        ),
    };
    let _ = writeln!(
        s,
        "\n{:>8} {:>13} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "quantile", "t", "p(t)", "w_ε", "w_ε/k²", "c_in", "c_noise"
    );
    for u in [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
        let c = sde.coefs(dsm.t_at(u));
        let k = param.eps_loss_scale(&c);
        let we = w.plugin.eps_weight(&c);
        let _ = writeln!(
            s,
            "{u:>8} {:13.6e} {:11.4e} {:11.4e} {:11.4e} {:11.4e} {:9.4}",
            c.t,
            dsm.t_density(&c),
            we,
            we / (k * k),
            param.c_in(&c),
            param.c_noise(&c)
        );
    }
}

/// One line saying how a run trains.
pub fn train_text(t: &sdeflow_kernel::TrainSpec) -> String {
    use sdeflow_kernel::train::{Decay, EmaRate};
    let decay = match t.decay {
        Decay::Constant => "then constant".to_string(),
        Decay::Cosine { final_fraction } => format!("then cosine to {final_fraction}×"),
    };
    let emas: Vec<String> = t
        .ema
        .iter()
        .map(|r| match r {
            EmaRate::Warmup { beta } => format!("min({beta}, (1+n)/(10+n))"),
            EmaRate::Power { gamma, power, max } => {
                format!("min({max}, 1 − (1 + n/{gamma})^−{power})")
            }
            EmaRate::HalfLife {
                samples,
                warmup_ratio,
            } => format!("half-life {samples} samples (warm-up ratio {warmup_ratio})"),
        })
        .collect();
    let o = &t.optimizer;
    format!(
        "{} steps × {} rows{}{}, AdamW(β = ({}, {}), ε = {:e}, decay {}) at lr {:e} (warm-up {} steps, {decay}), clip {}, EMA {}; eval every {} ({} held-out rows, {} samples), checkpoint every {} (keep {})",
        t.steps,
        t.batch,
        if t.accumulate > 1 {
            format!(" in {} micro-batches", t.accumulate)
        } else {
            String::new()
        },
        if t.objective.needs_divergence() {
            format!(" by {}()", t.objective.name())
        } else {
            String::new()
        },
        o.beta1,
        o.beta2,
        o.eps,
        o.weight_decay,
        t.lr,
        t.warmup,
        t.clip.map_or("off".into(), |c| c.to_string()),
        emas.join(" and "),
        t.eval.every,
        t.eval.rows,
        t.eval.samples,
        t.checkpoint.every,
        t.checkpoint.keep
    )
}
