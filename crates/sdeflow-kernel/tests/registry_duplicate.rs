//! A name registered twice for one kind makes the registry an error, naming both crates,
//! every time it is asked for (Bevy's rule: a repeated plugin is an error, not an override).

mod common;

use common::OdeEuler;
use sdeflow_kernel::{Registry, Result, register_solver};
use serde::{Deserialize, Serialize};

/// No parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

register_solver!("twin", "first", Empty, |_: Empty| Ok(OdeEuler));
register_solver!("twin", "second", Empty, |_: Empty| Ok(OdeEuler));

#[test]
fn duplicate_names_make_the_registry_an_error() -> Result<()> {
    for _ in 0..2 {
        match Registry::global() {
            Err(e) => assert_eq!(
                e.to_string(),
                "solver plugin `twin` is registered twice, by `sdeflow-kernel` and by `sdeflow-kernel`"
            ),
            Ok(r) => panic!("expected a duplicate error, got {:?}", r.solvers.names()),
        }
    }
    Ok(())
}
