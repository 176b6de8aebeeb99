//! `cargo xtask tidy` as a test: the tree holds every rule, and a minimal tree breaking each
//! rule in turn fails with that rule (and only that one).

use std::path::{Path, PathBuf};

use xtask::tidy::{Registration, Violation, check, registrations};

/// The workspace, with the registrations its plugins' sources declare.
#[test]
fn the_tree_is_tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let violations = check(&root, &registrations(&root));
    assert!(violations.is_empty(), "{violations:#?}");
}

/// What tidy reads off the sources is what the registry holds: every built-in registration,
/// no more, with its kind and crate.
#[test]
fn the_sources_declare_what_the_registry_holds() -> sdeflow_kernel::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let key = |r: &Registration| (r.kind.clone(), r.name.clone(), r.crate_name.clone());
    let mut scanned: Vec<_> = registrations(&root).iter().map(key).collect();
    let mut registered: Vec<_> = sdeflow_plugins::registry()?
        .infos()
        .into_iter()
        .map(|(kind, info)| (kind.into(), info.name.into(), info.crate_name.into()))
        .collect();
    scanned.sort();
    registered.sort();
    assert_eq!(scanned, registered);
    Ok(())
}

/// The scan reads `register_*!` calls, skipping comments.
#[test]
fn registrations_are_read_off_the_source() {
    let (root, _) = tree("scan", |r| {
        replace(
            r,
            "plugins/sdeflow-solver-good/src/lib.rs",
            "fn step() {}",
            "fn step() {}\n// register_solver!(\"commented\", ...);\nregister_solver!(\n    \"good\",\n    \"summary\",\n    Params,\n    Good::new\n);\nsdeflow_kernel::register_weighting!(\"w\", \"s\", P, W::new);\n",
        )
    });
    let got: Vec<(String, String)> = registrations(&root)
        .into_iter()
        .map(|r| (r.kind, r.name))
        .collect();
    assert_eq!(
        got,
        [
            ("solver".to_string(), "good".to_string()),
            ("weighting".to_string(), "w".to_string())
        ]
    );
}

const GOOD_LIB: &str = "//! A solver.\n//!\n//! # Formula\n//! x.\n//!\n//! # Parameters\n//! None.\n//!\n//! # Claims\n//! Order 1.\n//!\n//! # References\n//! None.\n\nfn step() {}\n";
const GOOD_MANIFEST: &str = "[package]\nname = \"sdeflow-solver-good\"\n\n[dependencies]\nsdeflow-kernel.workspace = true\nserde.workspace = true\n\n[dev-dependencies]\ncandle-core.workspace = true\n";
const LINKER_LIB: &str = "use sdeflow_solver_good as _;\n\npub const BUILT_IN: &[(&str, &str, &str)] = &[\n    (\"solver\", \"good\", \"sdeflow-solver-good\"),\n];\n";
const LINKER_MANIFEST: &str = "[package]\nname = \"sdeflow-plugins\"\n\n[dependencies]\nsdeflow-kernel.workspace = true\nsdeflow-solver-good.workspace = true\n";

/// A minimal tree with one plugin crate, `sdeflow-solver-good`, and its linker, under a fresh
/// directory named after `test`; `edit` changes one file before the check.
fn tree(test: &str, edit: impl FnOnce(&Path)) -> (PathBuf, Vec<Registration>) {
    let root = std::env::temp_dir().join(format!("sdeflow-tidy-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("plugins/sdeflow-solver-good/Cargo.toml", GOOD_MANIFEST);
    write("plugins/sdeflow-solver-good/src/lib.rs", GOOD_LIB);
    write("crates/sdeflow-plugins/Cargo.toml", LINKER_MANIFEST);
    write("crates/sdeflow-plugins/src/lib.rs", LINKER_LIB);
    edit(&root);
    let regs = vec![Registration {
        kind: "solver".into(),
        name: "good".into(),
        crate_name: "sdeflow-solver-good".into(),
        alias: false,
    }];
    (root, regs)
}

fn rules(v: &[Violation]) -> Vec<u8> {
    v.iter().map(|v| v.rule).collect()
}

fn replace(root: &Path, rel: &str, from: &str, to: &str) {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{rel} lacks {from:?}");
    std::fs::write(path, text.replace(from, to)).expect("write");
}

#[test]
fn a_good_tree_passes() {
    let (root, regs) = tree("good", |_| {});
    assert_eq!(check(&root, &regs), vec![]);
}

/// Rule 1: a registered name that is not the crate's suffix.
#[test]
fn rule_1_name_must_be_the_crate_suffix() {
    let (root, mut regs) = tree("rule1", |_| {});
    regs[0].name = "better".into();
    let v = check(&root, &regs);
    assert_eq!(rules(&v), vec![1], "{v:#?}");
    assert!(v[0].message.contains("sdeflow-solver-better"), "{}", v[0]);
}

/// Rule 2: a plugin crate missing from the linker (its use line, its dependency, its row) or
/// registering nothing.
#[test]
fn rule_2_every_plugin_crate_is_linked() {
    for (i, (rel, from)) in [
        (
            "crates/sdeflow-plugins/src/lib.rs",
            "use sdeflow_solver_good as _;",
        ),
        (
            "crates/sdeflow-plugins/Cargo.toml",
            "sdeflow-solver-good.workspace = true",
        ),
        (
            "crates/sdeflow-plugins/src/lib.rs",
            "(\"solver\", \"good\", \"sdeflow-solver-good\"),",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (root, regs) = tree(&format!("rule2-{i}"), |r| replace(r, rel, from, ""));
        let v = check(&root, &regs);
        assert_eq!(rules(&v), vec![2], "{from}: {v:#?}");
    }
    let (root, _) = tree("rule2-unregistered", |_| {});
    let v = check(&root, &[]);
    assert_eq!(rules(&v), vec![2], "{v:#?}");
    assert!(v[0].message.contains("registration"), "{}", v[0]);
}

/// Rule 3: each of the four doc headings is required.
#[test]
fn rule_3_doc_has_the_four_headings() {
    for heading in ["# Formula", "# Parameters", "# Claims", "# References"] {
        let (root, regs) = tree(&format!("rule3-{}", &heading[2..]), |r| {
            replace(
                r,
                "plugins/sdeflow-solver-good/src/lib.rs",
                heading,
                "# Notes",
            );
        });
        let v = check(&root, &regs);
        assert_eq!(rules(&v), vec![3], "{heading}: {v:#?}");
        assert!(v[0].message.contains(heading), "{}", v[0]);
    }
}

/// Rule 4: a plugin drawing its own noise; a mention in a comment is not code.
#[test]
fn rule_4_no_plugin_draws_noise_itself() {
    for code in [
        "let z = x.randn_like(0.0, 1.0)?;",
        "let z = PhiloxNoise.standard_normal(&req, dt, &dev)?;",
        "let k = philox_key(seed, Stream::Sampling);",
    ] {
        let (root, regs) = tree(&format!("rule4-{}", code.len()), |r| {
            replace(
                r,
                "plugins/sdeflow-solver-good/src/lib.rs",
                "fn step() {}",
                &format!("fn step() {{ {code} }}"),
            );
        });
        let v = check(&root, &regs);
        assert_eq!(rules(&v), vec![4], "{code}: {v:#?}");
        assert!(v[0].place.ends_with("lib.rs:15"), "{}", v[0]);
    }
    let (root, regs) = tree("rule4-comment", |r| {
        replace(
            r,
            "plugins/sdeflow-solver-good/src/lib.rs",
            "fn step() {}",
            "fn step() {} // not PhiloxNoise",
        );
    });
    assert_eq!(check(&root, &regs), vec![]);
}

/// Rule 5: a plugin (dev-)depending on another plugin or on sdeflow-plugins.
#[test]
fn rule_5_no_plugin_depends_on_another() {
    for (i, dep) in [
        "sdeflow-solver-euler.workspace = true",
        "sdeflow-plugins = { path = \"../../crates/sdeflow-plugins\" }",
    ]
    .into_iter()
    .enumerate()
    {
        let (root, regs) = tree(&format!("rule5-{i}"), |r| {
            replace(
                r,
                "plugins/sdeflow-solver-good/Cargo.toml",
                "candle-core.workspace = true",
                &format!("candle-core.workspace = true\n{dep}"),
            );
        });
        let v = check(&root, &regs);
        assert_eq!(rules(&v), vec![5], "{dep}: {v:#?}");
    }
}
