//! Files written atomically: a checkpoint is never left half-written.

use std::path::{Path, PathBuf};

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
