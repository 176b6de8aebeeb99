//! The quick conformance pass over every built-in plugin, as `cargo test` runs it.

use sdeflow_conformance::{Mode, Options, run};
use sdeflow_kernel::Result;

#[test]
fn every_built_in_plugin_passes_quick_conformance() -> Result<()> {
    let registry = sdeflow_plugins::registry()?;
    let report = run(
        registry,
        &Options {
            mode: Mode::Quick,
            ..Options::default()
        },
    );
    println!("{report}");
    assert!(!report.rows.is_empty(), "conformance ran no check");
    assert!(report.all_passed(), "conformance failures:\n{report}");
    Ok(())
}
