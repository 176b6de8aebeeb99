//! Files written atomically: a checkpoint is never left half-written.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use crate::{Error, Result};

/// Runs `write` on a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tmp.set_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(io));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves a `VarMap` as safetensors, atomically.
pub fn save_varmap_atomic(vm: &VarMap, path: &Path) -> Result<()> {
    write_atomic(path, |tmp| Ok(vm.save(tmp)?))
}

/// Loads every variable of `vm` from the safetensors file at `path`, all or nothing: each
/// variable must be in the file with its shape (its values converted to the variable's dtype
/// and device); a missing or misshapen one is an error naming it and the file, and then no
/// variable has changed. Entries the model does not have are ignored. The variables are set
/// in place (they are shared), so a model behind an `Arc` loads without `Arc::get_mut`.
pub fn load_varmap(vm: &VarMap, path: &Path) -> Result<()> {
    let file = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::Msg(format!("{}: cannot read safetensors: {e}", path.display())))?;
    let vars = vm
        .data()
        .lock()
        .map_err(|_| Error::Msg("the model's variables are poisoned by a panic".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut staged = Vec::with_capacity(names.len());
    for name in names {
        let var = &vars[name];
        let Some(value) = file.get(name) else {
            return Err(Error::Msg(format!(
                "{}: no variable `{name}` (the model has {} variables; the file has {})",
                path.display(),
                vars.len(),
                file.len()
            )));
        };
        if value.dims() != var.dims() {
            return Err(Error::Msg(format!(
                "{}: `{name}` has shape {:?} but the model's is {:?}",
                path.display(),
                value.dims(),
                var.dims()
            )));
        }
        staged.push((var, value.to_dtype(var.dtype())?.to_device(var.device())?));
    }
    for (var, value) in staged {
        var.set(&value)?;
    }
    Ok(())
}
