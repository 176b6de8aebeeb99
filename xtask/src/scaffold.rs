//! `cargo xtask new-plugin KIND NAME`: a plugin crate in the house shape (STYLE.md), correct
//! as generated — it builds, passes `cargo xtask tidy` and its kind's conformance before its
//! author changes a line — added to the workspace and to `sdeflow-plugins`.
//!
//! The templates are working plugins: a solver is Euler's method on the probability-flow ODE
//! (order 1); an SDE is the variance-preserving SDE with constant β; a parameterization is
//! ε-prediction; a weighting is the constant one; a model is a linear map of x and the
//! log-SNR with trainable weights; a data source draws points uniform on a square. Each comes
//! with a contract test.

use std::path::Path;

use crate::tidy::crate_prefix;

/// The kinds `new-plugin` scaffolds: those with templates, which a test holds equal to the
/// kernel's `KINDS` (xtask reads files only, so it does not link the kernel to ask it).
pub fn kinds() -> impl Iterator<Item = &'static str> {
    TEMPLATES.iter().map(|(kind, _, _)| *kind)
}

/// An error naming what to change.
#[derive(Debug)]
pub struct ScaffoldError(pub String);

impl std::fmt::Display for ScaffoldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// What `new-plugin` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The crate's name.
    pub crate_name: String,
    /// The files written or edited, relative to the root.
    pub files: Vec<String>,
}

/// Creates `plugins/<crate>/` for `kind`/`name` under `root` and links it.
pub fn new_plugin(root: &Path, kind: &str, name: &str) -> Result<Created, ScaffoldError> {
    if !kinds().any(|k| k == kind) {
        return Err(ScaffoldError(format!(
            "`{kind}` is not a plugin kind; use one of {}",
            kinds().collect::<Vec<_>>().join(", ")
        )));
    }
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(ScaffoldError(format!(
            "`{name}` is not a plugin name: use snake_case (lowercase letters, digits, `_`, starting with a letter), e.g. my_solver"
        )));
    }
    let krate = format!("{}{}", crate_prefix(kind), name.replace('_', "-"));
    let dir = root.join("plugins").join(&krate);
    if dir.exists() {
        return Err(ScaffoldError(format!("{} exists already", dir.display())));
    }
    let ident = krate.replace('-', "_");
    let ty = camel(name);
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{ident}}", &ident)
            .replace("{{Type}}", &ty)
    };
    let (_, lib, test) = TEMPLATES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .ok_or_else(|| ScaffoldError(format!("no template for `{kind}`")))?;
    let extra = if kind == "model" {
        "candle-nn.workspace = true\n"
    } else {
        ""
    };
    let manifest = format!(
        "[package]\nname = \"{krate}\"\ndescription = \"The `{name}` {kind} plugin\"\nversion.workspace = true\nedition.workspace = true\nrust-version.workspace = true\nlicense.workspace = true\npublish.workspace = true\n\n[dependencies]\nsdeflow-kernel.workspace = true\ncandle-core.workspace = true\n{extra}serde.workspace = true\n\n[lints]\nworkspace = true\n"
    );
    let io = |e: std::io::Error| ScaffoldError(format!("cannot write the plugin: {e}"));
    std::fs::create_dir_all(dir.join("src")).map_err(io)?;
    std::fs::create_dir_all(dir.join("tests")).map_err(io)?;
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(io)?;
    std::fs::write(dir.join("src/lib.rs"), fill(lib)).map_err(io)?;
    std::fs::write(dir.join(format!("tests/{name}.rs")), fill(test)).map_err(io)?;
    // The workspace dependency, the linker's dependency, `use` line and BUILT_IN row.
    let edit = |rel: &str, f: &dyn Fn(&str) -> Option<String>| -> Result<(), ScaffoldError> {
        let path = root.join(rel);
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let new = f(&text).ok_or_else(|| {
            ScaffoldError(format!(
                "{rel}: cannot find where to add `{krate}`; add it by hand"
            ))
        })?;
        std::fs::write(&path, new).map_err(io)
    };
    edit("Cargo.toml", &|t| {
        let anchor = "sdeflow-kernel = { path = \"crates/sdeflow-kernel\" }\n";
        t.contains(anchor).then(|| {
            t.replacen(
                anchor,
                &format!("{anchor}{krate} = {{ path = \"plugins/{krate}\" }}\n"),
                1,
            )
        })
    })?;
    edit("crates/sdeflow-plugins/Cargo.toml", &|t| {
        let anchor = "sdeflow-kernel.workspace = true\n";
        t.contains(anchor)
            .then(|| t.replacen(anchor, &format!("{anchor}{krate}.workspace = true\n"), 1))
    })?;
    edit("crates/sdeflow-plugins/src/lib.rs", &|t| {
        let use_anchor = "// One line per built-in plugin crate.\n";
        let row_anchor = "pub const BUILT_IN: &[(&str, &str, &str)] = &[\n";
        (t.contains(use_anchor) && t.contains(row_anchor)).then(|| {
            t.replacen(use_anchor, &format!("{use_anchor}use {ident} as _;\n"), 1)
                .replacen(
                    row_anchor,
                    &format!("{row_anchor}    (\"{kind}\", \"{name}\", \"{krate}\"),\n"),
                    1,
                )
        })
    })?;
    Ok(Created {
        files: vec![
            format!("plugins/{krate}/Cargo.toml"),
            format!("plugins/{krate}/src/lib.rs"),
            format!("plugins/{krate}/tests/{name}.rs"),
            "Cargo.toml".into(),
            "crates/sdeflow-plugins/Cargo.toml".into(),
            "crates/sdeflow-plugins/src/lib.rs".into(),
        ],
        crate_name: krate,
    })
}

/// The templates of each kind, sorted by kind, `xtask/templates/<kind>/{lib,test}.rs.template`: (kind, the
/// crate's `src/lib.rs`, its `tests/<name>.rs`), with `{{name}}`, `{{crate}}`, `{{ident}}`
/// and `{{Type}}` filled in.
const TEMPLATES: [(&str, &str, &str); 6] = [
    (
        "data",
        include_str!("../templates/data/lib.rs.template"),
        include_str!("../templates/data/test.rs.template"),
    ),
    (
        "model",
        include_str!("../templates/model/lib.rs.template"),
        include_str!("../templates/model/test.rs.template"),
    ),
    (
        "param",
        include_str!("../templates/param/lib.rs.template"),
        include_str!("../templates/param/test.rs.template"),
    ),
    (
        "sde",
        include_str!("../templates/sde/lib.rs.template"),
        include_str!("../templates/sde/test.rs.template"),
    ),
    (
        "solver",
        include_str!("../templates/solver/lib.rs.template"),
        include_str!("../templates/solver/test.rs.template"),
    ),
    (
        "weighting",
        include_str!("../templates/weighting/lib.rs.template"),
        include_str!("../templates/weighting/test.rs.template"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each template names the placeholders it is filled with (a template that lost
    /// `{{name}}` would register nothing under the user's name). That every kind has its
    /// templates is `xtask/tests/scaffold.rs`, against the kernel's list.
    #[test]
    fn every_template_has_its_placeholders() {
        for (kind, lib, test) in TEMPLATES {
            assert!(
                lib.contains("{{name}}") && lib.contains("{{Type}}"),
                "{kind}"
            );
            assert!(
                lib.contains("# Formula") && lib.contains("# References"),
                "{kind}"
            );
            assert!(test.contains("{{ident}}"), "{kind}");
        }
    }
}
