//! The solver [`State`]: one concrete, cloneable, serialisable value threaded through the loop.

use std::{collections::BTreeMap, collections::HashMap, path::Path};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// One entry of multistep history: the half log-SNR λ of an evaluation and its x̂₀.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// λ at the evaluation.
    pub lambda: f64,
    /// x̂₀ at the evaluation.
    pub x0_hat: Tensor,
}

/// The state of a run: samples, time, step index, the noise counter, multistep history and
/// named extra tensors (an augmented state for likelihoods, say). Solvers take `&self` and
/// return the next state; nothing leaks from one run into the next.
#[derive(Debug, Clone)]
pub struct State {
    /// The samples, `[n, ...]`.
    pub x: Tensor,
    /// The current time.
    pub t: f64,
    /// Steps taken.
    pub step: usize,
    /// The global index of row 0 (noise is keyed by it).
    pub sample_offset: u64,
    /// Standard normal draws each sample has consumed (the next draw index).
    pub draws: u64,
    /// Multistep history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Named extra tensors.
    pub extras: BTreeMap<String, Tensor>,
}

impl State {
    /// A fresh state at time `t` with rows numbered from `sample_offset`.
    pub fn new(x: Tensor, t: f64, sample_offset: u64) -> Self {
        Self {
            x,
            t,
            step: 0,
            sample_offset,
            draws: 0,
            history: Vec::new(),
            extras: BTreeMap::new(),
        }
    }

    /// The number of samples.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.x.dim(0)?)
    }

    /// The same state with `x` replaced.
    pub fn with_x(&self, x: Tensor) -> Self {
        Self { x, ..self.clone() }
    }

    /// Writes the state as safetensors, atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let cpu = Device::Cpu;
        let scalar_f64 = |v: f64| Tensor::new(&[v], &cpu);
        let scalar_i64 = |v: u64| Tensor::new(&[v as i64], &cpu);
        let mut map: HashMap<String, Tensor> = HashMap::new();
        map.insert("x".into(), self.x.to_device(&cpu)?);
        map.insert("t".into(), scalar_f64(self.t)?);
        map.insert("step".into(), scalar_i64(self.step as u64)?);
        map.insert("sample_offset".into(), scalar_i64(self.sample_offset)?);
        map.insert("draws".into(), scalar_i64(self.draws)?);
        for (i, h) in self.history.iter().enumerate() {
            map.insert(format!("history.{i:06}.lambda"), scalar_f64(h.lambda)?);
            map.insert(format!("history.{i:06}.x0_hat"), h.x0_hat.to_device(&cpu)?);
        }
        for (k, v) in &self.extras {
            map.insert(format!("extra.{k}"), v.to_device(&cpu)?);
        }
        crate::io::write_atomic(path, |tmp| Ok(candle_core::safetensors::save(&map, tmp)?))
    }

    /// Reads a state written by [`save`](Self::save) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let map = candle_core::safetensors::load(path, device)?;
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| Error::Msg(format!("{}: no `{k}` in state file", path.display())))
        };
        let f = |k: &str| -> Result<f64> { Ok(get(k)?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0]) };
        let u = |k: &str| -> Result<u64> { Ok(get(k)?.to_vec1::<i64>()?[0] as u64) };
        let mut history = Vec::new();
        while map.contains_key(&format!("history.{:06}.lambda", history.len())) {
            let i = history.len();
            history.push(HistoryEntry {
                lambda: f(&format!("history.{i:06}.lambda"))?,
                x0_hat: get(&format!("history.{i:06}.x0_hat"))?,
            });
        }
        let extras = map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("extra.").map(|n| (n.to_string(), v.clone())))
            .collect();
        Ok(Self {
            x: get("x")?,
            t: f("t")?,
            step: u("step")? as usize,
            sample_offset: u("sample_offset")?,
            draws: u("draws")?,
            history,
            extras,
        })
    }
}
