//! The conformance contracts as `cargo test` runs them: the quick pass over every built-in
//! plugin ([`quick`]) and the f32 contracts a device runs ([`f32`]), in one test binary so
//! that the harness runs all of their tests side by side (test binaries run one after another).

mod f32;
mod quick;
