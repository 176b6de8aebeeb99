//! The registry as a binary that names no plugin crate sees it: collected without error,
//! every catalog empty, and every lookup an `UnknownPlugin` error naming the kind.

use sdeflow_kernel::{Error, Registry, Result};

#[test]
fn global_registry_is_empty_without_plugins() -> Result<()> {
    let r = Registry::global()?;
    assert!(r.sdes.all().is_empty());
    assert!(r.params.all().is_empty());
    assert!(r.models.all().is_empty());
    assert!(r.solvers.all().is_empty());
    assert!(r.weightings.all().is_empty());
    assert!(r.sdes.names().is_empty());
    assert!(r.infos().is_empty());
    // Collected once: the same registry every time.
    assert!(std::ptr::eq(r, Registry::global()?));
    Ok(())
}

#[test]
fn unknown_names_are_errors_naming_the_kind() -> Result<()> {
    let r = Registry::global()?;
    match r.sdes.get("vp") {
        Err(Error::UnknownPlugin { kind, name, known }) => {
            assert_eq!((kind, name.as_str()), ("sde", "vp"));
            assert!(known.is_empty());
        }
        other => panic!("expected UnknownPlugin, got {other:?}"),
    }
    let kinds = [
        ("sde", r.sde("vp", "()").err()),
        ("param", r.param("eps", "()").err()),
        ("solver", r.solver("ddim", "(eta: 0.0)").err()),
        ("weighting", r.weighting("simple", "()").err()),
    ];
    for (kind, err) in kinds {
        match err {
            Some(e @ Error::UnknownPlugin { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("unknown {kind} plugin `")),
                    "{msg}"
                );
            }
            other => panic!("{kind}: expected UnknownPlugin, got {other:?}"),
        }
    }
    assert!(r.models.get("gmm_oracle").is_err());
    Ok(())
}
