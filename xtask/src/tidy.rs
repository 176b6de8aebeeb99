//! `cargo xtask tidy`: the rules that keep plugins correct by construction (issue "authoring
//! plugins"), checked on the source tree alone — the registrations are read off each plugin's
//! `register_*!` lines ([`registrations`]), so tidy links neither the plugins nor candle;
//! that the registry sees each of them is `sdeflow-plugins`' own test (its `BUILT_IN` list):
//! 1. every registered name is its crate's suffix (`sdeflow-solver-euler_maruyama` spelled
//!    with `-`: `sdeflow-solver-euler-maruyama`; models live in `sdeflow-score-*`), except a
//!    registered alias (`alias_of:`), which lives with the plugin it names;
//! 2. every crate under `plugins/` is linked by `sdeflow-plugins` (its `use … as _;` line, its
//!    dependency, its `BUILT_IN` row) and registers at least one plugin;
//! 3. every plugin crate's `//!` doc has the four headings `# Formula`, `# Parameters`,
//!    `# Claims`, `# References`;
//! 4. no plugin draws noise itself: a plugin's `src/` never names the noise generators
//!    (`PhiloxNoise`, `BrownianNoise`, `philox_normal_tensor`, `fill_normals_*`,
//!    `Stream::Sampling`, candle's `randn`/`rand_like` and candle-nn's `ops::dropout`/`Dropout`,
//!    the `rand` crate, `RowNoise::new`);
//!    noise comes from `StepContext::standard_normal`, keyed by (seed, sample, draw), and a
//!    data source's from the `RowNoise` the kernel hands it, keyed by (seed, split, row), and a
//!    network's dropout from the `RowKey` a training step hands it (`RowKey::dropout`).
//!    (Seeded weight initialization through `Stream::Init` is not noise and is allowed.)
//! 5. no plugin depends on another plugin (nor dev-depends on `sdeflow-plugins`): a plugin's
//!    manifest names no `sdeflow-*` crate but `sdeflow-kernel`.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// One registration, as a plugin's source declares it and the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `data`, `sde`, `param`, `model`, `solver` or `weighting`.
    pub kind: String,
    /// The registered name.
    pub name: String,
    /// The registering crate.
    pub crate_name: String,
    /// Whether it is an alias of another plugin (`alias_of:` in its registration).
    pub alias: bool,
}

/// A broken rule: where, which rule, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule's number (module doc).
    pub rule: u8,
    /// The file or crate concerned.
    pub place: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: rule {}: {}", self.place, self.rule, self.message)
    }
}

/// The doc headings every plugin crate has (STYLE.md).
pub const HEADINGS: [&str; 4] = ["# Formula", "# Parameters", "# Claims", "# References"];

/// What a plugin's source must not name (rule 4).
pub const NOISE_TOKENS: [&str; 12] = [
    "PhiloxNoise",
    "BrownianNoise",
    "philox_normal_tensor",
    "fill_normals_f32",
    "fill_normals_f64",
    "Stream::Sampling",
    "randn",
    "rand_like",
    "rand::",
    "RowNoise::new",
    "ops::dropout",
    "Dropout::new",
];

/// The crate prefix of a plugin kind.
pub fn crate_prefix(kind: &str) -> String {
    match kind {
        "model" => "sdeflow-score-".into(),
        other => format!("sdeflow-{other}-"),
    }
}

fn read(path: &Path) -> Result<String, Violation> {
    std::fs::read_to_string(path).map_err(|e| Violation {
        rule: 0,
        place: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

/// The `[dependencies]`-like sections' crate names of a manifest (a line-based reading of the
/// keys, which is all a plugin manifest uses).
fn manifest_deps(text: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
            continue;
        }
        if in_deps && let Some((key, _)) = line.split_once('=') {
            let key = key.trim().split('.').next().unwrap_or("").trim();
            if !key.is_empty() && !key.starts_with('#') {
                deps.push(key.to_string());
            }
        }
    }
    deps
}

/// The plugin crates: directories under `plugins/` with a manifest, sorted.
fn plugin_crates(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
        .collect();
    out.sort();
    out
}

/// Checks every rule on the tree at `root` against `registrations`.
pub fn check(root: &Path, registrations: &[Registration]) -> Vec<Violation> {
    let mut v = Vec::new();
    // Rule 1.
    for r in registrations.iter().filter(|r| !r.alias) {
        let prefix = crate_prefix(&r.kind);
        let want = format!("{prefix}{}", r.name.replace('_', "-"));
        if r.crate_name != want {
            v.push(Violation {
                rule: 1,
                place: r.crate_name.clone(),
                message: format!(
                    "registers the {} plugin `{}`, whose crate must be `{want}` (the name is the crate's suffix, `_` spelled `-`)",
                    r.kind, r.name
                ),
            });
        }
    }
    let linker = root.join("crates/sdeflow-plugins");
    let (lib, manifest) = match (
        read(&linker.join("src/lib.rs")),
        read(&linker.join("Cargo.toml")),
    ) {
        (Ok(l), Ok(m)) => (l, m),
        (Err(e), _) | (_, Err(e)) => {
            v.push(e);
            return v;
        }
    };
    let linked_deps = manifest_deps(&manifest);
    for (krate, dir) in plugin_crates(root) {
        let ident = krate.replace('-', "_");
        // Rule 2.
        let mut missing = Vec::new();
        if !lib.contains(&format!("use {ident} as _;")) {
            missing.push(format!(
                "`use {ident} as _;` in crates/sdeflow-plugins/src/lib.rs"
            ));
        }
        if !linked_deps.contains(&krate) {
            missing.push(format!(
                "`{krate}.workspace = true` in crates/sdeflow-plugins/Cargo.toml"
            ));
        }
        if !lib.contains(&format!("\"{krate}\"")) {
            missing.push("its row in `BUILT_IN`".to_string());
        }
        if !registrations.iter().any(|r| r.crate_name == krate) {
            missing.push("a registration (`register_*!`) in its src/".to_string());
        }
        if !missing.is_empty() {
            v.push(Violation {
                rule: 2,
                place: krate.clone(),
                message: format!("is not linked: add {}", missing.join(", ")),
            });
        }
        // Rule 3.
        match read(&dir.join("src/lib.rs")) {
            Ok(src) => {
                let doc: Vec<&str> = src
                    .lines()
                    .filter_map(|l| l.trim_start().strip_prefix("//!"))
                    .map(str::trim)
                    .collect();
                let absent: Vec<&str> = HEADINGS
                    .iter()
                    .copied()
                    .filter(|h| !doc.contains(h))
                    .collect();
                if !absent.is_empty() {
                    v.push(Violation {
                        rule: 3,
                        place: format!("{krate}/src/lib.rs"),
                        message: format!(
                            "its `//!` doc lacks {} (each plugin states its formula, parameters with defaults, claims and references)",
                            absent.join(", ")
                        ),
                    });
                }
            }
            Err(e) => v.push(e),
        }
        // Rule 4.
        for file in rust_files(&dir.join("src")) {
            let Ok(src) = read(&file) else { continue };
            for (i, line) in src.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if let Some(tok) = NOISE_TOKENS.iter().find(|t| code.contains(*t)) {
                    v.push(Violation {
                        rule: 4,
                        place: format!("{}:{}", file.display(), i + 1),
                        message: format!(
                            "names `{tok}`: a plugin draws noise only through `ctx.standard_normal(state)` (a data source: the `RowNoise` of `RowRef::Draw`), so that samples are keyed by (seed, sample, draw)"
                        ),
                    });
                }
            }
        }
        // Rule 5.
        match read(&dir.join("Cargo.toml")) {
            Ok(m) => {
                for dep in manifest_deps(&m) {
                    if dep.starts_with("sdeflow-") && dep != "sdeflow-kernel" {
                        v.push(Violation {
                            rule: 5,
                            place: format!("{krate}/Cargo.toml"),
                            message: format!(
                                "depends on `{dep}`: a plugin depends on sdeflow-kernel only (name other plugins through the registry, test with sdeflow_kernel::testing)"
                            ),
                        });
                    }
                }
            }
            Err(e) => v.push(e),
        }
    }
    v
}

/// The registrations the plugin crates under `root/plugins` declare: every
/// `register_<kind>!("name", ...)` outside a comment in their `src/`, in crate order.
pub fn registrations(root: &Path) -> Vec<Registration> {
    let mut out = Vec::new();
    for (krate, dir) in plugin_crates(root) {
        for file in rust_files(&dir.join("src")) {
            let Ok(src) = read(&file) else { continue };
            let code: String = src
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for kind in crate::scaffold::kinds() {
                let mac = format!("register_{kind}!");
                for (at, _) in code.match_indices(&mac) {
                    let args = code[at + mac.len()..].trim_start();
                    let Some(args) = args.strip_prefix(['(', '{', '[']) else {
                        continue;
                    };
                    let Some(name) = args
                        .trim_start()
                        .strip_prefix('"')
                        .and_then(|n| n.split_once('"'))
                        .map(|(n, _)| n)
                    else {
                        continue;
                    };
                    // The registration's arguments run to the macro's closing `);`.
                    let body = args.split(");").next().unwrap_or(args);
                    out.push(Registration {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        crate_name: krate.clone(),
                        alias: body.contains("alias_of:"),
                    });
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}
