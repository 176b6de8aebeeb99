//! The conformance contracts as `cargo test` runs them: the quick pass over every built-in
//! plugin ([`quick`]) and the f32 contracts a device runs ([`f32`]), in one test binary so
//! that the harness runs all of their tests side by side (test binaries run one after another).

mod f32;
mod quick;

use sdeflow_conformance::{Mode, Options, run};
use sdeflow_kernel::Result;

/// Runs the quick pass of the `kind` plugins as `options` narrows it, prints the table, and
/// fails unless it ran checks and every one passed.
fn quick_pass(kind: &str, options: Options) -> Result<()> {
    let report = run(
        sdeflow_plugins::registry()?,
        &Options {
            mode: Mode::Quick,
            kind: Some(kind.into()),
            ..options
        },
    );
    println!("{report}");
    assert!(!report.rows.is_empty(), "conformance ran no check");
    assert!(report.all_passed(), "conformance failures:\n{report}");
    Ok(())
}
