//! The linear-flow SDE's parameters: MATH.md §1's defaults, the validation of `LinearFlow::new`
//! (each bad value an `InvalidParam` naming its field), and the `linear_flow` registration.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result};
use sdeflow_sde_linear_flow::{LinearFlow, Params};

/// MATH.md §1: "linear_flow has f, g² → ∞ at t = 1, so T = 1 − 1e-3"; t_ε 1e-3 (the brief's
/// choice, the same as VP's).
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!((p.t_max, p.t_eps), (1.0 - 1e-3, 1e-3));
    let sde = LinearFlow::new(p)?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0 - 1e-3, 1e-3));
    Ok(())
}

/// The field named by the error of `LinearFlow::new(p)`, which must be `InvalidParam` for
/// plugin `linear_flow`.
fn rejected_field(p: Params) -> String {
    match LinearFlow::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "linear_flow", "{p:?}");
            field
        }
        Err(e) => panic!("{p:?}: expected InvalidParam, got {e}"),
        Ok(sde) => panic!("{p:?}: accepted as {sde:?}"),
    }
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let d = Params::default();
    let nan = f64::NAN;
    let cases = [
        (Params { t_max: 1.0, ..d }, "t_max"),
        (Params { t_max: 2.0, ..d }, "t_max"),
        (Params { t_max: 0.0, ..d }, "t_max"),
        (Params { t_max: -0.5, ..d }, "t_max"),
        (Params { t_max: nan, ..d }, "t_max"),
        (Params { t_eps: 0.999, ..d }, "t_eps"),
        (Params { t_eps: 0.0, ..d }, "t_eps"),
        (Params { t_eps: -1e-3, ..d }, "t_eps"),
        (Params { t_eps: nan, ..d }, "t_eps"),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // Valid boundaries: T just below 1, t_ε just below T.
    LinearFlow::new(Params {
        t_max: 1.0 - 1e-9,
        ..d
    })?;
    LinearFlow::new(Params { t_eps: 0.998, ..d })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md).
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = LinearFlow::new(Params {
        t_max: 1.0,
        ..Params::default()
    })
    .expect_err("f is infinite at T = 1")
    .to_string();
    assert!(msg.starts_with("linear_flow: invalid `t_max`"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// `linear_flow` builds from RON, missing fields take the defaults, an unknown field is a
/// configuration error, and an invalid value is refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("linear_flow", "()")?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0 - 1e-3, 1e-3));
    let sde = reg.sde("linear_flow", "(t_max: 0.99)")?;
    assert_eq!(sde.t_max(), 0.99);
    assert!(matches!(
        reg.sde("linear_flow", "(sigma_min: 0.0)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("linear_flow", "(t_max: 1.0)").is_err());
    Ok(())
}
