//! What `cargo xtask` runs that tests also need: the tidy rules.

pub mod tidy;
