//! A training run's state on disk: one folder per checkpoint step under a run's root,
//! `step-<n>/` holding `model.safetensors`, `ema.safetensors`, `optimizer.safetensors` (the
//! AdamW moments) and `train.json` (the step and what the run is), each written to a temporary
//! name, flushed and renamed ([`write_atomic`]); then the root's `latest` file, naming the
//! folder, is replaced the same way. A crash at any instant leaves `latest` on a whole,
//! consistent checkpoint; older folders beyond the last `keep` are removed after it moves.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor};
use sdeflow_kernel::{Error, Result, io::write_atomic};
use serde::{Deserialize, Serialize};

use crate::Trainer;

/// What `train.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// The name of the `latest` pointer in a run's root.
pub const LATEST: &str = "latest";

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn save_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Result<()> {
    write_atomic(path, |tmp| {
        Ok(candle_core::safetensors::save(&tensors, tmp)?)
    })
}

/// Writes the trainer's state as `root/step-<n>/` and moves `latest` to it; keeps the last
/// `keep` (≥ 1) checkpoints. Returns the folder.
pub fn save(
    root: &Path,
    trainer: &mut Trainer,
    manifest: &Manifest,
    keep: usize,
) -> Result<PathBuf> {
    let name = format!("step-{:08}", manifest.step);
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let names: Vec<String> = trainer
        .params()
        .vars()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let model = trainer
        .params()
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    save_tensors(&dir.join("model.safetensors"), model)?;
    let ema = names
        .iter()
        .cloned()
        .zip(trainer.ema().weights().iter().cloned())
        .collect();
    save_tensors(&dir.join("ema.safetensors"), ema)?;
    let (moments, _) = trainer.optimizer_mut().state();
    save_tensors(
        &dir.join("optimizer.safetensors"),
        moments.into_iter().collect(),
    )?;
    let json = serde_json::to_string_pretty(manifest).map_err(|e| Error::Msg(e.to_string()))?;
    let train = dir.join("train.json");
    write_atomic(&train, |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))?;
    sdeflow_kernel::io::sync_dir(Some(&dir))?;
    let latest = root.join(LATEST);
    write_atomic(&latest, |tmp| std::fs::write(tmp, &name).map_err(io(tmp)))?;
    prune(root, keep.max(1))?;
    Ok(dir)
}

/// Removes all but the newest `keep` `step-*` folders.
fn prune(root: &Path, keep: usize) -> Result<()> {
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
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    Ok(())
}

/// The folder `root/latest` names and its manifest, or `None` when the run has none yet.
pub fn latest(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let pointer = root.join(LATEST);
    let name = match std::fs::read_to_string(&pointer) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&pointer)(e)),
    };
    let dir = root.join(name.trim());
    let train = dir.join("train.json");
    let text = std::fs::read_to_string(&train).map_err(io(&train))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        Error::Msg(format!(
            "{}: not a checkpoint manifest: {e}",
            train.display()
        ))
    })?;
    Ok(Some((dir, manifest)))
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: cannot read safetensors: {e}", path.display())))
}

/// Restores the trainer from the checkpoint folder `dir` (weights, EMA, optimizer moments and
/// step): every tensor must be present with its variable's shape, else an error naming the
/// tensor and the file, and then nothing is changed.
pub fn restore(dir: &Path, trainer: &mut Trainer, manifest: &Manifest) -> Result<()> {
    let model_path = dir.join("model.safetensors");
    let ema_path = dir.join("ema.safetensors");
    let model = load_tensors(&model_path)?;
    let ema = load_tensors(&ema_path)?;
    let optimizer = load_tensors(&dir.join("optimizer.safetensors"))?;
    let mut weights = Vec::new();
    let mut averages = Vec::new();
    for (name, var) in trainer.params().vars() {
        for (file, map, into) in [
            (&model_path, &model, &mut weights),
            (&ema_path, &ema, &mut averages),
        ] {
            let t = map
                .get(name)
                .ok_or_else(|| Error::Msg(format!("{}: no tensor `{name}`", file.display())))?;
            if t.dims() != var.dims() {
                return Err(Error::Shape(format!(
                    "{}: tensor `{name}` has shape {:?}, the model's {:?}",
                    file.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            into.push(t.to_dtype(var.dtype())?.to_device(var.device())?);
        }
    }
    trainer
        .optimizer_mut()
        .load_state(&optimizer, manifest.step)?;
    trainer.ema_mut().set_weights(averages)?;
    for ((_, var), w) in trainer.params().vars().iter().zip(weights) {
        var.set(&w)?;
    }
    Ok(())
}
