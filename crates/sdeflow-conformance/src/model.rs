//! Score-model contracts (DESIGN.md "Conformance"), each model built with its defaults in a
//! context whose data is the `ring` mixture: output shape equals input shape and is
//! finite at batch sizes 1, 7 and 1,030 across the SDE's time range; each row at its own time
//! gives what a call at that time gives it (per-row time, MATH.md §9); save then load into a
//! model whose variables were overwritten reproduces the outputs bit for bit; the kernel's
//! denoising score-matching loss, with a time per row, sends a non-zero gradient to every
//! trainable variable. A model without trainable variables (an oracle) reports so and skips the
//! last two. A model that fixes its target (the oracle: the score) is read in it; a network in
//! the run parameterization.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    At, Data, ForwardSde, ModelContext, Parameterization, Registry, Result, ScoreModel, TimeCoefs,
    data::MixtureData,
    noise::{Stream, philox_key, philox_normal_tensor},
};

use crate::{
    Target,
    report::{Report, num},
};

/// Batch sizes of the shape check (1,030 crosses the pipeline's 1,024-row chunk).
const BATCHES: [usize; 3] = [1, 7, 1030];

/// Runs the model contracts for the registered model `name` built with `()` on `target`.
pub fn check(
    report: &mut Report,
    registry: &Registry,
    name: &str,
    param: Arc<dyn Parameterization>,
    sde: &Arc<dyn ForwardSde>,
    target: &Target,
) {
    let plugin = format!("model/{name}");
    // Built as in a config whose data is the `ring` mixture (an oracle reads its law).
    // Labelled by component, so that an oracle is class-conditional (its labels checked too).
    let ctx = match crate::mixtures::ring()
        .mixture()
        .and_then(|law| MixtureData::new(law, true))
        .and_then(|d| Data::new(Arc::new(d)))
    {
        Ok(data) => ModelContext::new(target.device.clone(), target.dtype).with_data(data),
        Err(e) => return report.error(&plugin, "builds the ring data", e),
    };
    let build = || registry.model(name, "()", &ctx);
    let model = match build() {
        Ok(m) => m,
        Err(e) => return report.error(&plugin, "builds with default parameters", e),
    };
    let (a, b) = (sde.t_eps(), sde.t_max());
    let param = model.target().map_or(param, |t| t.plugin);
    let times: Vec<(TimeCoefs, At)> = [0.0, 0.1, 0.5, 1.0]
        .iter()
        .map(|u| {
            let c = sde.coefs(a + (b - a) * u);
            (c, At::new(c.into(), &*param))
        })
        .collect();
    shapes(report, &plugin, &*model, &times, target);
    let coefs: Vec<TimeCoefs> = times.iter().map(|(c, _)| *c).collect();
    let check = "each row at its own time = a call at that time (7 rows, 4 times)";
    let tol = target.tol(1e-12, 1e3);
    match input(&*model, 7, target)
        .and_then(|x| crate::loss::rows_match_calls(&*model, &*param, &coefs, &x))
    {
        Ok(e) => report.push(
            &plugin,
            check,
            num(e),
            "0",
            format!("≤ {tol:e} (norm-relative per row)"),
            e <= tol,
            "the per-row path of forward differs from the per-call path",
        ),
        Err(e) => report.error(&plugin, check, e),
    }
    // A conditional model: the one built, or the plugin built with `classes: Some(3)` when it
    // takes that parameter.
    let conditional = if model.classes().is_some() {
        Some(model.clone())
    } else {
        registry.model(name, "(classes: Some(3))", &ctx).ok()
    };
    if let Some(m) = conditional {
        conditioning(report, &plugin, &*m, &times, target);
    }
    if model.varmap().is_none() {
        report.push(
            &plugin,
            "trainable variables",
            "none",
            "none (an exact model)",
            "-",
            true,
            "",
        );
        return;
    }
    if let Err(e) = round_trip(report, &plugin, &*model, &build, &times, target) {
        report.error(&plugin, "save then load reproduces the outputs", e);
    }
    if let Err(e) = gradients(report, &plugin, &model, param, sde, target) {
        report.error(&plugin, "gradients reach every parameter", e);
    }
}

/// A conditional model's labels: on each row and at each time, two different labels give
/// different outputs (the label reaches every row), and no labels give exactly what the label
/// ∅ gives.
fn conditioning(
    report: &mut Report,
    plugin: &str,
    model: &dyn ScoreModel,
    times: &[(TimeCoefs, At)],
    target: &Target,
) {
    let Some(k) = model.classes() else {
        return;
    };
    let check = format!("labels of {k} classes reach every row; no labels = ∅ bit for bit");
    let n = 7;
    let outcome = (|| -> Result<(usize, usize)> {
        let x = input(model, n, target)?;
        let device = x.device().clone();
        let labels = |shift: usize| -> Result<Tensor> {
            let y: Vec<u32> = (0..n).map(|i| ((i + shift) % k) as u32).collect();
            Ok(Tensor::from_vec(y, n, &device)?)
        };
        let null = Tensor::full(sdeflow_kernel::null_label(k), n, &device)?;
        let (mut same_rows, mut none_differs) = (0, 0);
        for (_, at) in times {
            let rows = |y: Option<&Tensor>| -> Result<Vec<Vec<f64>>> {
                let out = Target::host(&model.forward(&x, at, y)?.reshape((n, ()))?)?;
                Ok(out.to_vec2::<f64>()?)
            };
            let (a, b) = (rows(Some(&labels(0)?))?, rows(Some(&labels(1)?))?);
            same_rows += a.iter().zip(&b).filter(|(p, q)| p == q).count();
            let (none, empty) = (rows(None)?, rows(Some(&null))?);
            let bits =
                |v: &[Vec<f64>]| -> Vec<u64> { v.iter().flatten().map(|f| f.to_bits()).collect() };
            none_differs += usize::from(bits(&none) != bits(&empty));
        }
        Ok((same_rows, none_differs))
    })();
    match outcome {
        Ok((same_rows, none_differs)) => report.push(
            plugin,
            check,
            format!("{same_rows} rows unmoved by their label, {none_differs} times None ≠ ∅"),
            "0, 0",
            "exact",
            same_rows == 0 && none_differs == 0,
            if same_rows > 0 {
                "some rows give the same output for two labels: the label does not reach them"
            } else {
                "evaluating without labels differs from evaluating with the label ∅"
            },
        ),
        Err(e) => report.error(plugin, &check, e),
    }
}

fn input(model: &dyn ScoreModel, n: usize, target: &Target) -> Result<Tensor> {
    let shape = model.sample_shape();
    let cols: usize = shape.iter().product();
    let x = target.put(&philox_normal_tensor(
        philox_key(17, Stream::Exact),
        0,
        n,
        cols,
        0,
        DType::F64,
        &Device::Cpu,
    )?)?;
    Ok(x.reshape([vec![n], shape].concat())?)
}

fn shapes(
    report: &mut Report,
    plugin: &str,
    model: &dyn ScoreModel,
    times: &[(TimeCoefs, At)],
    target: &Target,
) {
    let mut failures = Vec::new();
    for n in BATCHES {
        for (c, at) in times {
            let outcome = input(model, n, target).and_then(|x| {
                let y = model.forward(&x, at, None)?;
                let finite = Target::host(&y.flatten_all()?)?
                    .to_vec1::<f64>()?
                    .iter()
                    .all(|v| v.is_finite());
                Ok((x.dims() == y.dims(), finite, y.dims().to_vec()))
            });
            match outcome {
                Ok((true, true, _)) => {}
                Ok((false, _, dims)) => {
                    failures.push(format!("n = {n}, t = {}: shape {dims:?}", num(c.t)))
                }
                Ok((true, false, _)) => {
                    failures.push(format!("n = {n}, t = {}: not finite", num(c.t)))
                }
                Err(e) => failures.push(format!("n = {n}, t = {}: {e}", num(c.t))),
            }
        }
    }
    let total = BATCHES.len() * times.len();
    report.push(
        plugin,
        format!(
            "output shape = input shape {:?}, finite",
            model.sample_shape()
        ),
        format!("{}/{total}", total - failures.len()),
        format!("{total}/{total}"),
        "batches 1, 7, 1030 × 4 times",
        failures.is_empty(),
        failures.join("; "),
    );
}

/// The outputs' bits (exact in f64 whatever the run's dtype).
fn outputs(model: &dyn ScoreModel, times: &[(TimeCoefs, At)], target: &Target) -> Result<Vec<u64>> {
    let x = input(model, 7, target)?;
    let mut bits = Vec::new();
    for (_, at) in times {
        let y = Target::host(&model.forward(&x, at, None)?.flatten_all()?)?.to_vec1::<f64>()?;
        bits.extend(y.iter().map(|v| v.to_bits()));
    }
    Ok(bits)
}

fn round_trip(
    report: &mut Report,
    plugin: &str,
    model: &dyn ScoreModel,
    build: &dyn Fn() -> Result<Arc<dyn ScoreModel>>,
    times: &[(TimeCoefs, At)],
    target: &Target,
) -> Result<()> {
    let want = outputs(model, times, target)?;
    let path = std::env::temp_dir().join(format!(
        "sdeflow-conformance-{}-{}.safetensors",
        std::process::id(),
        plugin.replace('/', "-")
    ));
    model.save(&path)?;
    let other = build()?;
    // Overwrite every variable so that only the load can bring the outputs back.
    if let Some(vm) = other.varmap() {
        for var in vm.all_vars() {
            var.set(&var.as_tensor().ones_like()?)?;
        }
    }
    let scrambled = outputs(&*other, times, target)? != want;
    let loaded = other.load(&path);
    let _ = std::fs::remove_file(&path);
    loaded?;
    let got = outputs(&*other, times, target)?;
    let same = got == want;
    report.push(
        plugin,
        "save, overwrite every variable, load: outputs bit-identical",
        if same { "identical" } else { "differ" },
        "identical",
        "bitwise",
        same && scrambled,
        if scrambled {
            "loading does not restore what was saved"
        } else {
            "overwriting the variables did not change the outputs: the forward pass does not read them"
        },
    );
    Ok(())
}

fn gradients(
    report: &mut Report,
    plugin: &str,
    model: &Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    sde: &Arc<dyn ForwardSde>,
    target: &Target,
) -> Result<()> {
    let Some(vm) = model.varmap() else {
        return Ok(());
    };
    let x0 = input(&**model, 64, target)?;
    let loss = crate::loss::model_loss(model.clone(), param, sde, &x0)?;
    let grads = loss.backward()?;
    let vars = vm.all_vars();
    let mut missing = 0;
    for var in &vars {
        let reached = match grads.get(var.as_tensor()) {
            Some(g) => Target::host(&g.abs()?.flatten_all()?.max(0)?)?.to_scalar::<f64>()? > 0.0,
            None => false,
        };
        if !reached {
            missing += 1;
        }
    }
    report.push(
        plugin,
        "gradients reach every parameter (the DSM loss, 64 rows at their own times)",
        format!("{}/{}", vars.len() - missing, vars.len()),
        format!("{}/{}", vars.len(), vars.len()),
        "non-zero gradient on each variable",
        missing == 0,
        format!("{missing} variables get no gradient: they are not used by forward, or used through a detached copy"),
    );
    Ok(())
}
