//! `cargo xtask conformance`.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use sdeflow_conformance::{Mode, Options};
use sdeflow_kernel::{Error, Result};

/// Runs the selected contracts and prints the table.
pub fn run(
    quick: bool,
    kind: Option<String>,
    plugin: Option<String>,
    json: Option<PathBuf>,
) -> Result<ExitCode> {
    let registry = sdeflow_plugins::registry()?;
    if let Some(k) = &kind {
        const KINDS: [&str; 5] = ["model", "param", "sde", "solver", "weighting"];
        if !KINDS.contains(&k.as_str()) {
            return Err(Error::invalid(
                "conformance",
                "--kind",
                format!("`{k}` is not a kind; use one of {}", KINDS.join(", ")),
            ));
        }
    }
    if let Some(p) = &plugin {
        let known: Vec<String> = registry
            .infos()
            .into_iter()
            .map(|(k, i)| format!("{k}/{}", i.name))
            .collect();
        if !registry.infos().iter().any(|(_, i)| i.name == p) {
            return Err(Error::UnknownPlugin {
                kind: "any",
                name: p.clone(),
                known,
            });
        }
    }
    let mode = if quick { Mode::Quick } else { Mode::Full };
    let start = Instant::now();
    let report = sdeflow_conformance::run(registry, &Options { mode, kind, plugin });
    println!("{report}");
    println!(
        "({mode:?} pass, {:.1} s, RAYON_NUM_THREADS={})",
        start.elapsed().as_secs_f64(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Msg(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })?;
    }
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
