//! `State`: save/load round trips through safetensors (x, time, counters, history, extras),
//! atomic writes that leave no temporary file, clear errors on bad files; `State::with_x`;
//! the `ScoreModel` default `save`.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{TempDir, flat, normals};
use sdeflow_kernel::{At, Error, HistoryEntry, Result, ScoreModel, State, io::write_atomic};

fn full_state() -> Result<State> {
    let dev = Device::Cpu;
    let mut s = State::new(
        normals(1, 4, 3)?.to_dtype(DType::F32)?,
        0.123_456_789_012_345,
        0,
    );
    s.step = 17;
    // Above i64::MAX: the file stores the counters as i64 bit patterns.
    s.sample_offset = u64::MAX - 5;
    s.draws = (1 << 40) + 3;
    for (k, lambda) in [-1.25, 0.5, 3.75].into_iter().enumerate() {
        let x0_hat = normals(10 + k as u64, 4, 3)?.to_dtype(DType::F32)?;
        s.history.push(HistoryEntry {
            t: 0.25 * k as f64,
            lambda,
            // Every other entry keeps ε̂ too: both shapes must survive the round trip.
            eps_hat: (k % 2 == 0).then(|| &x0_hat * 2.0).transpose()?,
            x0_hat,
        });
    }
    s.extras
        .insert("log_det".into(), normals(20, 4, 1)?.squeeze(1)?);
    s.extras.insert(
        "counts.per_row".into(),
        Tensor::new(&[1u32, 2, 3, 4], &dev)?,
    );
    Ok(s)
}

fn assert_same(a: &State, b: &State) -> Result<()> {
    assert_eq!(a.x.dtype(), b.x.dtype());
    assert_eq!(a.x.dims(), b.x.dims());
    assert_eq!(flat(&a.x)?, flat(&b.x)?);
    assert_eq!(a.t.to_bits(), b.t.to_bits());
    assert_eq!(
        (a.step, a.sample_offset, a.draws),
        (b.step, b.sample_offset, b.draws)
    );
    assert_eq!(a.history.len(), b.history.len());
    for (h, g) in a.history.iter().zip(&b.history) {
        assert_eq!(h.t.to_bits(), g.t.to_bits());
        assert_eq!(h.lambda.to_bits(), g.lambda.to_bits());
        assert_eq!(h.x0_hat.dtype(), g.x0_hat.dtype());
        assert_eq!(flat(&h.x0_hat)?, flat(&g.x0_hat)?);
        match (&h.eps_hat, &g.eps_hat) {
            (Some(e), Some(f)) => assert_eq!(flat(e)?, flat(f)?),
            (None, None) => {}
            _ => panic!("ε̂ lost or invented in the round trip"),
        }
    }
    let keys = |m: &BTreeMap<String, Tensor>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a.extras), keys(&b.extras));
    for (k, v) in &a.extras {
        assert_eq!(v.dtype(), b.extras[k].dtype(), "extra {k}");
        assert_eq!(flat(v)?, flat(&b.extras[k])?, "extra {k}");
    }
    Ok(())
}

#[test]
fn save_and_load_round_trip_every_field() -> Result<()> {
    let dir = TempDir::new("state")?;
    let s = full_state()?;
    let path = dir.join("run/nested/state.safetensors");
    s.save(&path)?;
    let back = State::load(&path, &Device::Cpu)?;
    assert_same(&s, &back)?;
    // Only the state file is left: the temporary file was renamed into place.
    let names: Vec<String> = std::fs::read_dir(dir.join("run/nested"))
        .map_err(|source| Error::Io {
            path: dir.join("run/nested"),
            source,
        })?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|source| Error::Io {
            path: dir.0.clone(),
            source,
        })?;
    assert_eq!(names, vec!["state.safetensors".to_string()]);
    Ok(())
}

#[test]
fn a_fresh_state_round_trips_and_saving_overwrites() -> Result<()> {
    let dir = TempDir::new("state-fresh")?;
    let path = dir.join("s.safetensors");
    full_state()?.save(&path)?;
    let fresh = State::new(normals(2, 3, 2)?, 1.0, 42);
    fresh.save(&path)?;
    let back = State::load(&path, &Device::Cpu)?;
    assert_same(&fresh, &back)?;
    assert!(back.history.is_empty() && back.extras.is_empty());
    assert_eq!(back.x.dtype(), DType::F64);
    Ok(())
}

#[test]
fn with_x_replaces_only_the_samples() -> Result<()> {
    let s = full_state()?;
    let x = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
    let t = s.with_x(x.clone());
    assert_eq!(flat(&t.x)?, flat(&x)?);
    assert_eq!(
        (t.t, t.step, t.sample_offset, t.draws),
        (s.t, s.step, s.sample_offset, s.draws)
    );
    assert_eq!(t.history.len(), 3);
    assert_eq!(t.extras.len(), 2);
    assert_eq!(s.rows()?, 4);
    Ok(())
}

#[test]
fn loading_bad_files_fails_with_the_path() -> Result<()> {
    let dir = TempDir::new("state-bad")?;
    let missing = dir.join("missing.safetensors");
    assert!(State::load(&missing, &Device::Cpu).is_err());
    // A safetensors file without `x`.
    let partial = dir.join("partial.safetensors");
    let mut map = std::collections::HashMap::new();
    map.insert("t".to_string(), Tensor::new(&[0.5f64], &Device::Cpu)?);
    candle_core::safetensors::save(&map, &partial)?;
    match State::load(&partial, &Device::Cpu) {
        Err(Error::Msg(m)) => {
            assert!(
                m.contains("partial.safetensors") && m.contains("`x`"),
                "{m}"
            );
        }
        other => panic!("expected a message naming `x`, got {other:?}"),
    }
    Ok(())
}

/// `write_atomic` removes its temporary file when the write fails and leaves any previous
/// file untouched.
#[test]
fn failed_atomic_write_leaves_the_old_file() -> Result<()> {
    let dir = TempDir::new("atomic")?;
    let path = dir.join("f.bin");
    write_atomic(&path, |tmp| {
        std::fs::write(tmp, b"old").map_err(|source| Error::Io {
            path: tmp.into(),
            source,
        })
    })?;
    let r = write_atomic(&path, |tmp| {
        std::fs::write(tmp, b"half").map_err(|source| Error::Io {
            path: tmp.into(),
            source,
        })?;
        Err(Error::Msg("disk full".into()))
    });
    assert!(matches!(r, Err(Error::Msg(_))));
    assert_eq!(std::fs::read(&path).ok(), Some(b"old".to_vec()));
    let count = std::fs::read_dir(&dir.0).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 1, "the temporary file was left behind");
    Ok(())
}

/// A model with a `VarMap` writes it through the default `save`; one without writes nothing.
struct WithVars(Option<VarMap>);

impl std::fmt::Debug for WithVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithVars")
    }
}

impl ScoreModel for WithVars {
    fn sample_shape(&self) -> Vec<usize> {
        vec![2]
    }
    fn forward(&self, x: &Tensor, _at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn varmap(&self) -> Option<&VarMap> {
        self.0.as_ref()
    }
}

#[test]
fn score_model_default_save_writes_its_varmap() -> Result<()> {
    let dir = TempDir::new("varmap")?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let w = vb.get_with_hints((3, 2), "layer.weight", candle_nn::Init::Const(0.25))?;
    let path = dir.join("model.safetensors");
    let model = WithVars(Some(vm));
    model.save(&path)?;
    let saved = candle_core::safetensors::load(&path, &Device::Cpu)?;
    assert_eq!(flat(&saved["layer.weight"])?, flat(&w)?);
    // Loading into a fresh model with the same variable restores the values.
    let vm2 = VarMap::new();
    let vb2 = VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu);
    let w2 = vb2.get_with_hints((3, 2), "layer.weight", candle_nn::Init::Const(0.0))?;
    let fresh = std::sync::Arc::new(WithVars(Some(vm2)));
    // Behind an Arc, as the pipeline holds a model: no `Arc::get_mut`.
    fresh.load(&path)?;
    assert_eq!(flat(&w2)?, vec![0.25; 6]);
    let none = dir.join("none.safetensors");
    WithVars(None).save(&none)?;
    assert!(!none.exists());
    Ok(())
}

/// Loading is all or nothing: a file that lacks one of the model's variables, or holds one
/// in another shape, is an error naming the variable and the file, and no variable changes.
#[test]
fn loading_weights_is_all_or_nothing() -> Result<()> {
    let dir = TempDir::new("varmap-partial")?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let a = vb.get_with_hints((2, 2), "a", candle_nn::Init::Const(1.0))?;
    let b = vb.get_with_hints(3, "b", candle_nn::Init::Const(2.0))?;
    let model = WithVars(Some(vm));
    type Case<'a> = (&'a str, Vec<(&'a str, Tensor)>, &'a str);
    let cases: [Case<'_>; 2] = [
        (
            "only-a.safetensors",
            vec![("a", Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?)],
            "no variable `b`",
        ),
        (
            "b-misshapen.safetensors",
            vec![
                ("a", Tensor::zeros((2, 2), DType::F32, &Device::Cpu)?),
                ("b", Tensor::zeros(4, DType::F32, &Device::Cpu)?),
            ],
            "`b` has shape [4] but the model's is [3]",
        ),
    ];
    for (name, entries, want) in cases {
        let path = dir.join(name);
        let map: std::collections::HashMap<String, Tensor> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        candle_core::safetensors::save(&map, &path)?;
        let msg = model.load(&path).unwrap_err().to_string();
        assert!(msg.contains(want) && msg.contains(name), "{msg}");
        assert_eq!(flat(&a)?, vec![1.0; 4], "{name}: `a` must be untouched");
        assert_eq!(flat(&b)?, vec![2.0; 3], "{name}: `b` must be untouched");
    }
    // An f64 file loads into f32 variables.
    let path = dir.join("f64.safetensors");
    let map: std::collections::HashMap<String, Tensor> = [
        ("a".to_string(), Tensor::full(0.5f64, (2, 2), &Device::Cpu)?),
        ("b".to_string(), Tensor::full(-1.0f64, 3, &Device::Cpu)?),
    ]
    .into();
    candle_core::safetensors::save(&map, &path)?;
    model.load(&path)?;
    assert_eq!((flat(&a)?, flat(&b)?), (vec![0.5; 4], vec![-1.0; 3]));
    Ok(())
}

/// A state file is a user's: scalars that are not one finite value, counters that are not
/// one i64 (the bits of a u64), and a history x̂₀ whose rows disagree with `x` are errors naming the
/// file and the entry, never an index panic or a wrapped-around count.
#[test]
fn loading_a_malformed_state_names_the_entry() -> Result<()> {
    let dir = TempDir::new("state-malformed")?;
    let cpu = Device::Cpu;
    let mut good = State::new(Tensor::zeros((4, 2), DType::F32, &cpu)?, 0.5, 0);
    good.history.push(HistoryEntry {
        t: 0.5,
        lambda: 1.0,
        x0_hat: Tensor::zeros((4, 2), DType::F32, &cpu)?,
        eps_hat: None,
    });
    let base = dir.join("good.safetensors");
    good.save(&base)?;
    let edits: [(&str, Tensor, &str); 6] = [
        (
            "step",
            Tensor::new(&[3u32], &cpu)?,
            "`step` must be one i64",
        ),
        (
            "draws",
            Tensor::new(&[1.5f64], &cpu)?,
            "`draws` must be one i64",
        ),
        (
            "t",
            Tensor::new(&[f64::NAN], &cpu)?,
            "`t` is NaN, not a finite number",
        ),
        (
            "t",
            Tensor::zeros(0, DType::F64, &cpu)?,
            "`t` must hold one value",
        ),
        (
            "history.000000.x0_hat",
            Tensor::zeros((3, 2), DType::F32, &cpu)?,
            "`history.000000.x0_hat` has shape [3, 2], but `x` has 4 rows",
        ),
        ("x", Tensor::new(0.0f32, &cpu)?, "`x` must be a batch"),
    ];
    for (i, (key, value, want)) in edits.into_iter().enumerate() {
        let mut map = candle_core::safetensors::load(&base, &cpu)?;
        map.insert(key.to_string(), value);
        let path = dir.join(&format!("bad{i}.safetensors"));
        candle_core::safetensors::save(&map, &path)?;
        let msg = State::load(&path, &cpu).unwrap_err().to_string();
        assert!(
            msg.contains(want) && msg.contains(&format!("bad{i}")),
            "{msg}"
        );
    }
    Ok(())
}

/// A trained network's file records the target it learned: loading it as that target works,
/// as another target is an error naming both (and loads nothing), and a file without the
/// record (a plain `save`) is refused by `load_trained`.
#[test]
fn a_trained_checkpoint_records_its_target() -> Result<()> {
    use sdeflow_kernel::io::{load_trained, recorded_target, save_trained};
    let dir = TempDir::new("trained")?;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    vb.get_with_hints((2, 2), "w", candle_nn::Init::Const(0.5))?;
    let path = dir.join("model.safetensors");
    save_trained(&vm, "v", &path)?;
    assert_eq!(recorded_target(&path)?.as_deref(), Some("v"));
    let vm2 = VarMap::new();
    let w2 = VarBuilder::from_varmap(&vm2, DType::F32, &Device::Cpu).get_with_hints(
        (2, 2),
        "w",
        candle_nn::Init::Const(0.0),
    )?;
    let err = load_trained(&vm2, "eps", &path).expect_err("trained as v, read as eps");
    let msg = err.to_string();
    assert!(
        msg.contains("trained to predict `v()`") && msg.contains("read as `eps()`"),
        "{msg}"
    );
    assert_eq!(flat(&w2)?, vec![0.0; 4], "a refused load changes nothing");
    load_trained(&vm2, "v", &path)?;
    assert_eq!(flat(&w2)?, vec![0.5; 4]);
    let plain = dir.join("plain.safetensors");
    WithVars(Some(vm)).save(&plain)?;
    assert_eq!(recorded_target(&plain)?, None);
    assert!(load_trained(&vm2, "v", &plain).is_err());
    Ok(())
}

/// `previous_evaluations`: the last `want` entries, newest first, when each is earlier in λ
/// than the next evaluation; a history that cannot be this run's (not below, not finite,
/// without a needed ε̂) is an error naming the solver and the entry.
#[test]
fn previous_evaluations_accepts_this_runs_history_only() -> Result<()> {
    use sdeflow_kernel::{TimeCoefs, previous_evaluations};
    let x = Tensor::zeros((2, 1), DType::F64, &Device::Cpu)?;
    let at = |t: f64, lambda: f64, eps: bool| HistoryEntry {
        t,
        lambda,
        x0_hat: x.clone(),
        eps_hat: eps.then(|| x.clone()),
    };
    let from = TimeCoefs {
        t: 0.5,
        alpha: 1.0,
        sigma: 0.5,
        f: 0.0,
        g2: 1.0,
        lambda: 0.7,
    };
    let good = vec![at(0.9, -1.0, true), at(0.7, 0.1, true)];
    let got = previous_evaluations(&good, &from, 5, true, "s")?;
    let lambdas: Vec<f64> = got.iter().map(|e| e.lambda).collect();
    assert_eq!(lambdas, [0.1, -1.0]);
    assert_eq!(previous_evaluations(&good, &from, 1, true, "s")?.len(), 1);
    for (bad, need_eps, what) in [
        (vec![at(0.5, 0.7, false)], false, "λ = 7e-1"),
        (
            vec![at(0.9, 0.2, false), at(0.7, 0.1, false)],
            false,
            "λ = 2e-1",
        ),
        (vec![at(0.9, f64::NAN, false)], false, "NaN"),
        (vec![at(0.7, 0.1, false)], true, "without ε̂"),
    ] {
        let err = previous_evaluations(&bad, &from, 5, need_eps, "mysolver").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("mysolver: ") && msg.contains(what) && msg.contains("empty history"),
            "{msg}"
        );
    }
    Ok(())
}
