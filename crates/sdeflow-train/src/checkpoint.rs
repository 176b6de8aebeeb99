//! A training run's state on disk: one folder per checkpoint step under a run's root,
//! `step-<n>/` holding `model.safetensors`, `ema.safetensors` (and `ema-2.safetensors`, … for
//! further EMA rates), `optimizer.safetensors` (the AdamW moments) and `train.json` (the
//! [`Manifest`]). Each file is written to a temporary name, flushed and renamed
//! ([`write_atomic`]), then the folder is flushed; only then is the root's `latest` file,
//! naming the folder, replaced the same way. A crash at any instant leaves `latest` on a
//! whole, consistent checkpoint; older folders beyond the last `keep` are removed after it
//! moves. The weights files record the target the network predicts ([`save_tensors`]), so
//! `sample` reads them with [`sdeflow_kernel::io::load_trained`].
//!
//! The noise of a run is keyed by (seed, step, row), so the step is the only counter a
//! checkpoint needs: a restored run draws exactly what the uninterrupted one would have.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};
use sdeflow_kernel::{
    Error, Result,
    io::{fault_point, save_tensors, write_atomic},
};
use serde::{Deserialize, Serialize};

use crate::Trainer;

/// What `train.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Steps taken.
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
    /// A hash of the config the run was started from (a resume from another config is an
    /// error).
    pub config_hash: String,
    /// The parameterization the network predicts (`eps`, `x0`, …).
    pub target: String,
    /// How many EMAs the folder holds.
    pub emas: usize,
}

/// The name of the `latest` pointer in a run's root.
pub const LATEST: &str = "latest";

/// The file of EMA `k` (0-based) in a checkpoint folder.
pub fn ema_file(k: usize) -> String {
    if k == 0 {
        "ema.safetensors".into()
    } else {
        format!("ema-{}.safetensors", k + 1)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the trainer's state as `root/step-<n>/` and moves `latest` to it; keeps the last
/// `keep` (≥ 1) checkpoints. Returns the folder.
pub fn save(root: &Path, trainer: &Trainer, manifest: &Manifest, keep: usize) -> Result<PathBuf> {
    let name = format!("step-{:08}", manifest.step);
    let dir = root.join(&name);
    fault_point(&format!("checkpoint {name}: begin"));
    if dir.exists() {
        // A folder of this step that `latest` does not name is what a crash left: replace it.
        let current = latest_name(root)?;
        if current.as_deref() == Some(name.as_str()) {
            return Err(Error::file(
                dir,
                "is the latest checkpoint; a run does not write a step twice",
            ));
        }
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let vars = trainer.params().vars();
    let target = Some(manifest.target.as_str());
    let named = |ts: &[Tensor]| -> Vec<(String, Tensor)> {
        vars.iter()
            .map(|(n, _)| n.clone())
            .zip(ts.iter().cloned())
            .collect()
    };
    let weights: Vec<Tensor> = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
    save_tensors(&dir.join("model.safetensors"), named(&weights), target)?;
    for (k, ema) in trainer.emas().iter().enumerate() {
        save_tensors(&dir.join(ema_file(k)), named(ema.weights()), target)?;
    }
    let (moments, _) = trainer.optimizer().state()?;
    save_tensors(&dir.join("optimizer.safetensors"), moments, None)?;
    let json = serde_json::to_string_pretty(manifest).map_err(|e| Error::Msg(e.to_string()))?;
    let train = dir.join("train.json");
    write_atomic(&train, |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))?;
    sdeflow_kernel::io::sync_dir(Some(&dir))?;
    sdeflow_kernel::io::sync_dir(Some(root))?;
    fault_point(&format!("checkpoint {name}: folder synced"));
    let latest = root.join(LATEST);
    write_atomic(&latest, |tmp| std::fs::write(tmp, &name).map_err(io(tmp)))?;
    prune(root, keep.max(1), &name)?;
    Ok(dir)
}

/// Removes all but the newest `keep` `step-*` folders, never `current`.
fn prune(root: &Path, keep: usize, current: &str) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io(root))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    steps.sort();
    let old = steps.len().saturating_sub(keep);
    for dir in &steps[..old] {
        if dir.file_name().is_some_and(|n| n == current) {
            continue;
        }
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
        fault_point(&format!("checkpoint prune: removed {}", dir.display()));
    }
    Ok(())
}

fn latest_name(root: &Path) -> Result<Option<String>> {
    let pointer = root.join(LATEST);
    match std::fs::read_to_string(&pointer) {
        Ok(n) => Ok(Some(n.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&pointer)(e)),
    }
}

/// The folder `root/latest` names and its manifest, or `None` when the run has none yet.
pub fn latest(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let Some(name) = latest_name(root)? else {
        return Ok(None);
    };
    let dir = root.join(name);
    let manifest = manifest(&dir)?;
    Ok(Some((dir, manifest)))
}

/// The manifest of the checkpoint folder `dir`.
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let train = dir.join("train.json");
    let text = std::fs::read_to_string(&train).map_err(io(&train))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::file(train, format!("not a checkpoint manifest: {e}")))
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::file(path, format!("cannot read safetensors: {e}")))
}

/// A checkpoint folder read whole.
#[derive(Debug)]
pub struct Checkpoint {
    /// `train.json`.
    pub manifest: Manifest,
    /// The trained weights by name.
    pub model: HashMap<String, Tensor>,
    /// Each EMA's weights by name.
    pub emas: Vec<HashMap<String, Tensor>>,
    /// The optimizer moments (`m.<var>`, `v.<var>`).
    pub optimizer: HashMap<String, Tensor>,
}

/// Reads every file of the checkpoint folder `dir` and checks that they agree: the folder is
/// the manifest's step, every EMA and both moments hold the model's tensors with its shapes.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let manifest = manifest(dir)?;
    let expected = format!("step-{:08}", manifest.step);
    if dir.file_name().is_none_or(|n| n != expected.as_str()) {
        return Err(Error::file(
            dir,
            format!(
                "the manifest says step {}, the folder should be {expected}",
                manifest.step
            ),
        ));
    }
    let model = load_tensors(&dir.join("model.safetensors"))?;
    let emas = (0..manifest.emas)
        .map(|k| load_tensors(&dir.join(ema_file(k))))
        .collect::<Result<Vec<_>>>()?;
    let optimizer = load_tensors(&dir.join("optimizer.safetensors"))?;
    let agree = |file: String, map: &HashMap<String, Tensor>, prefix: &str| -> Result<()> {
        for (name, t) in &model {
            let keys: Vec<String> = if prefix.is_empty() {
                vec![name.clone()]
            } else {
                vec![format!("m.{name}"), format!("v.{name}")]
            };
            for key in keys {
                let other = map
                    .get(&key)
                    .ok_or_else(|| Error::file(dir.join(&file), format!("no tensor `{key}`")))?;
                if other.dims() != t.dims() {
                    return Err(Error::file(
                        dir.join(&file),
                        format!(
                            "tensor `{key}` has shape {:?}, the model's {:?}",
                            other.dims(),
                            t.dims()
                        ),
                    ));
                }
            }
        }
        if map.len() != model.len() * if prefix.is_empty() { 1 } else { 2 } {
            return Err(Error::file(
                dir.join(&file),
                format!("{} tensors for a model of {}", map.len(), model.len()),
            ));
        }
        Ok(())
    };
    for (k, ema) in emas.iter().enumerate() {
        agree(ema_file(k), ema, "")?;
    }
    agree("optimizer.safetensors".into(), &optimizer, "moments")?;
    Ok(Checkpoint {
        manifest,
        model,
        emas,
        optimizer,
    })
}

/// Restores the trainer from the checkpoint folder `dir` (weights, EMAs, optimizer moments
/// and step): every tensor must be present with its variable's shape, else an error naming
/// the tensor and the file, and then nothing is changed.
pub fn restore(dir: &Path, trainer: &mut Trainer) -> Result<Manifest> {
    let ckpt = load(dir)?;
    if ckpt.manifest.emas != trainer.emas().len() {
        return Err(Error::file(
            dir,
            format!(
                "holds {} EMAs, the run has {}",
                ckpt.manifest.emas,
                trainer.emas().len()
            ),
        ));
    }
    let pick = |file: &str, map: &HashMap<String, Tensor>| -> Result<Vec<Tensor>> {
        trainer
            .params()
            .vars()
            .iter()
            .map(|(name, var)| {
                let t = map
                    .get(name)
                    .ok_or_else(|| Error::file(dir.join(file), format!("no tensor `{name}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::file(
                        dir.join(file),
                        format!(
                            "tensor `{name}` has shape {:?}, the model's {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    ));
                }
                if !sdeflow_kernel::ops::all_finite(t)? {
                    return Err(Error::file(
                        dir.join(file),
                        format!("tensor `{name}` holds NaN or infinite values: a diverged run's state; resume from an earlier checkpoint"),
                    ));
                }
                Ok(t.to_dtype(var.dtype())?.to_device(var.device())?)
            })
            .collect()
    };
    let weights = pick("model.safetensors", &ckpt.model)?;
    let averages = ckpt
        .emas
        .iter()
        .enumerate()
        .map(|(k, m)| pick(&ema_file(k), m))
        .collect::<Result<Vec<_>>>()?;
    trainer
        .optimizer_mut()
        .load_state(&ckpt.optimizer, ckpt.manifest.step)?;
    for (ema, avg) in trainer.emas_mut().iter_mut().zip(averages) {
        ema.set_weights(avg)?;
    }
    for ((_, var), w) in trainer.params().vars().iter().zip(weights) {
        var.set(&w)?;
    }
    Ok(ckpt.manifest)
}
