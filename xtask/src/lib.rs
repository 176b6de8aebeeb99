//! What `cargo xtask` runs that tests also need: the tidy rules and the plugin scaffold.

pub mod scaffold;
pub mod tidy;
