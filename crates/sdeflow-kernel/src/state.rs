//! The solver [`State`]: one concrete, cloneable, serialisable value threaded through the loop.

use std::{collections::BTreeMap, collections::HashMap, path::Path};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// One entry of multistep history: the time and half log-SNR λ of an evaluation, its x̂₀, and
/// its ε̂ for a solver that extrapolates ε̂ (DEIS, iPNDM).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// t at the evaluation.
    pub t: f64,
    /// λ at the evaluation.
    pub lambda: f64,
    /// x̂₀ at the evaluation.
    pub x0_hat: Tensor,
    /// ε̂ at the evaluation, when the solver keeps it.
    pub eps_hat: Option<Tensor>,
}

impl HistoryEntry {
    /// The entry of an evaluation at `c` that gave `x0_hat` (no ε̂ kept).
    pub fn x0(c: &crate::TimeCoefs, x0_hat: Tensor) -> Self {
        Self {
            t: c.t,
            lambda: c.lambda,
            x0_hat,
            eps_hat: None,
        }
    }

    /// The entry of an evaluation at `c` that gave `x0_hat` and `eps_hat`.
    pub fn both(c: &crate::TimeCoefs, x0_hat: Tensor, eps_hat: Tensor) -> Self {
        Self {
            eps_hat: Some(eps_hat),
            ..Self::x0(c, x0_hat)
        }
    }
}

/// The last `want` entries of `history`, newest first, checked to be the run's previous
/// evaluations before a step that starts at `from`: each strictly earlier (lower λ, finite)
/// than the one after it and than `from`, and carrying ε̂ when `need_eps`. Otherwise the one
/// error every multistep solver gives for a history that is not this run's, naming `solver`:
/// a foreign history is refused, never silently extrapolated.
pub fn previous_evaluations<'h>(
    history: &'h [HistoryEntry],
    from: &crate::TimeCoefs,
    want: usize,
    need_eps: bool,
    solver: &str,
) -> Result<Vec<&'h HistoryEntry>> {
    let used: Vec<&HistoryEntry> = history.iter().rev().take(want).collect();
    let mut later = from.lambda;
    for e in &used {
        let missing_eps = need_eps && e.eps_hat.is_none();
        if !(e.lambda < later && e.lambda.is_finite()) || missing_eps {
            return Err(Error::Msg(format!(
                "{solver}: the state's history holds an entry at t = {:e}, λ = {:e}{} where the \
                 next evaluation is at λ = {later:e} (this step starts at t = {:e}): it is not \
                 this run's previous evaluations (each earlier{}); start from a state with an \
                 empty history",
                e.t,
                e.lambda,
                if missing_eps { " without ε̂" } else { "" },
                from.t,
                if need_eps { ", with ε̂" } else { "" },
            )));
        }
        later = e.lambda;
    }
    Ok(used)
}

/// The state of a run: samples, time, step index, the noise counter, multistep history and
/// named extra tensors (an augmented state for likelihoods, say). Solvers take `&self` and
/// return the next state; nothing leaks from one run into the next.
#[derive(Debug, Clone)]
pub struct State {
    /// The samples, `[n, ...]`.
    pub x: Tensor,
    /// The current time (of every row unless [`t_rows`](Self::t_rows) says otherwise).
    pub t: f64,
    /// Each row's own time, when the rows have drifted apart (an adaptive solve steps every
    /// sample on its own); `None` when every row is at [`t`](Self::t).
    pub t_rows: Option<Vec<f64>>,
    /// Steps taken.
    pub step: usize,
    /// The global index of row 0 (noise is keyed by it).
    pub sample_offset: u64,
    /// Standard normal draws each sample has consumed (the next draw index).
    pub draws: u64,
    /// Multistep history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Named extra tensors, rows-first (`[n, ...]`).
    pub extras: BTreeMap<String, Tensor>,
    /// dy/dt at this state, one tensor per integrated component (x, then the log-density
    /// change when the state carries one), when a solver has it: a first-same-as-last
    /// Runge–Kutta step's last stage, which the next step reuses as its first. A cache: it
    /// is dropped whenever x changes and is not saved.
    pub first_stage: Option<Vec<Tensor>>,
}

/// The extra holding each row's class label (`[n]` u32) in a conditional run.
pub const COND: &str = "cond";

impl State {
    /// Each row's class label in a conditional run ([`COND`]).
    pub fn cond(&self) -> Option<&Tensor> {
        self.extras.get(COND)
    }

    /// This state with each row's class label (`[n]` u32; [`crate::null_label`] for none),
    /// which every model call of the run receives and which follows the rows wherever the
    /// loop moves them.
    pub fn with_cond(mut self, labels: Tensor) -> Result<Self> {
        crate::ops::expect_rows(&labels, self.rows()?, "the labels")?;
        self.extras
            .insert(COND.into(), labels.to_dtype(DType::U32)?);
        Ok(self)
    }

    /// A fresh state at time `t` with rows numbered from `sample_offset`.
    pub fn new(x: Tensor, t: f64, sample_offset: u64) -> Self {
        Self {
            x,
            t,
            t_rows: None,
            step: 0,
            sample_offset,
            draws: 0,
            history: Vec::new(),
            extras: BTreeMap::new(),
            first_stage: None,
        }
    }

    /// The number of samples.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.x.dim(0)?)
    }

    /// The same state with `x` replaced (and the cached first stage, which was for the old
    /// x, dropped).
    pub fn with_x(&self, x: Tensor) -> Self {
        Self {
            x,
            first_stage: None,
            ..self.clone()
        }
    }

    /// Writes the state as safetensors, atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let cpu = Device::Cpu;
        let scalar_f64 = |v: f64| Tensor::new(&[v], &cpu);
        // A u64 counter as the i64 with the same bits (candle's safetensors has no u64).
        let scalar_i64 = |v: u64| Tensor::new(&[v.cast_signed()], &cpu);
        let mut map: HashMap<String, Tensor> = HashMap::new();
        map.insert("x".into(), self.x.to_device(&cpu)?);
        map.insert("t".into(), scalar_f64(self.t)?);
        if let Some(ts) = &self.t_rows {
            map.insert("t_rows".into(), Tensor::new(ts.as_slice(), &cpu)?);
        }
        map.insert("step".into(), scalar_i64(self.step as u64)?);
        map.insert("sample_offset".into(), scalar_i64(self.sample_offset)?);
        map.insert("draws".into(), scalar_i64(self.draws)?);
        for (i, h) in self.history.iter().enumerate() {
            map.insert(format!("history.{i:06}.t"), scalar_f64(h.t)?);
            map.insert(format!("history.{i:06}.lambda"), scalar_f64(h.lambda)?);
            map.insert(format!("history.{i:06}.x0_hat"), h.x0_hat.to_device(&cpu)?);
            if let Some(eps) = &h.eps_hat {
                map.insert(format!("history.{i:06}.eps_hat"), eps.to_device(&cpu)?);
            }
        }
        for (k, v) in &self.extras {
            map.insert(format!("extra.{k}"), v.to_device(&cpu)?);
        }
        crate::io::write_atomic(path, |tmp| Ok(candle_core::safetensors::save(&map, tmp)?))
    }

    /// Reads a state written by [`save`](Self::save) onto `device`. The file is a user's:
    /// per-row times, if any, one finite value per row; each scalar must be one finite value (the counters whole and non-negative), `x` a
    /// batch `[n, ...]`, each counter one i64 (the bits of a u64), and every history entry's x̂₀
    /// must have `x`'s rows (extras are free-form); anything else is an error naming the file and the entry.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |k: &str, why: String| Error::Msg(format!("{}: `{k}` {why}", path.display()));
        let map = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::Msg(format!("{}: cannot read safetensors: {e}", path.display())))?;
        let get = |k: &str| {
            map.get(k)
                .cloned()
                .ok_or_else(|| Error::Msg(format!("{}: no `{k}` in state file", path.display())))
        };
        let scalar = |k: &str| -> Result<f64> {
            let v = get(k)?;
            if v.elem_count() != 1 {
                return Err(bad(
                    k,
                    format!("must hold one value, not shape {:?}", v.dims()),
                ));
            }
            let v = v.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
            if !v.is_finite() {
                return Err(bad(k, format!("is {v}, not a finite number")));
            }
            Ok(v)
        };
        // Counters are u64, stored as the i64 with the same bits (candle's safetensors has
        // no u64): the cast is the format, lossless both ways.
        let count = |k: &str| -> Result<u64> {
            let t = get(k)?;
            if t.dtype() != DType::I64 || t.elem_count() != 1 {
                return Err(bad(
                    k,
                    format!(
                        "must be one i64 (a u64 counter's bits), not {:?} of shape {:?}",
                        t.dtype(),
                        t.dims()
                    ),
                ));
            }
            Ok(t.flatten_all()?.to_vec1::<i64>()?[0].cast_unsigned())
        };
        let x = get("x")?;
        let Some(&rows) = x.dims().first() else {
            return Err(bad("x", "must be a batch [n, ...], not a scalar".into()));
        };
        let same_rows = |k: &str, v: &Tensor| -> Result<()> {
            if v.dims().first() == Some(&rows) {
                Ok(())
            } else {
                Err(bad(
                    k,
                    format!("has shape {:?}, but `x` has {rows} rows", v.dims()),
                ))
            }
        };
        let mut history = Vec::new();
        while map.contains_key(&format!("history.{:06}.lambda", history.len())) {
            let i = history.len();
            let key = format!("history.{i:06}.x0_hat");
            let x0_hat = get(&key)?;
            same_rows(&key, &x0_hat)?;
            let eps_key = format!("history.{i:06}.eps_hat");
            let eps_hat = match map.get(&eps_key) {
                Some(e) => {
                    same_rows(&eps_key, e)?;
                    Some(e.clone())
                }
                None => None,
            };
            history.push(HistoryEntry {
                t: scalar(&format!("history.{i:06}.t"))?,
                lambda: scalar(&format!("history.{i:06}.lambda"))?,
                x0_hat,
                eps_hat,
            });
        }
        let extras = map
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("extra.").map(|n| (n.to_string(), v.clone())))
            .collect();
        let step = count("step")?;
        let t_rows = match map.get("t_rows") {
            None => None,
            Some(v) => {
                same_rows("t_rows", v)?;
                let ts = v.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                if ts.len() != rows || ts.iter().any(|t| !t.is_finite()) {
                    return Err(bad(
                        "t_rows",
                        format!("must hold one finite time per row ({rows}), not {ts:?}"),
                    ));
                }
                Some(ts)
            }
        };
        Ok(Self {
            x,
            t: scalar("t")?,
            t_rows,
            first_stage: None,
            step: usize::try_from(step).map_err(|_| bad("step", format!("{step} is too large")))?,
            sample_offset: count("sample_offset")?,
            draws: count("draws")?,
            history,
            extras,
        })
    }
}
