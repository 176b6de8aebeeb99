//! The cosine VP SDE's parameters: MATH.md §1's defaults, the validation of `VpCosine::new`
//! (each bad value an `InvalidParam` naming its field), and the `vp_cosine` registration.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result};
use sdeflow_sde_vp_cosine::{Params, VpCosine};

/// MATH.md §1: "cosine s = 0.008", "use T = 0.9946", and VP's t_ε 1e-3.
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!((p.s, p.t_max, p.t_eps), (0.008, 0.9946, 1e-3));
    let sde = VpCosine::new(p)?;
    assert_eq!((sde.t_max(), sde.t_eps()), (0.9946, 1e-3));
    Ok(())
}

/// The field named by the error of `VpCosine::new(p)`, which must be `InvalidParam` for
/// plugin `vp_cosine`.
fn rejected_field(p: Params) -> String {
    match VpCosine::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "vp_cosine", "{p:?}");
            field
        }
        Err(e) => panic!("{p:?}: expected InvalidParam, got {e}"),
        Ok(sde) => panic!("{p:?}: accepted as {sde:?}"),
    }
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let d = Params::default();
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let cases = [
        (Params { s: -1e-3, ..d }, "s"),
        (Params { s: nan, ..d }, "s"),
        (Params { s: inf, ..d }, "s"),
        (Params { t_max: 1.0, ..d }, "t_max"),
        (Params { t_max: 1.5, ..d }, "t_max"),
        (Params { t_max: 0.0, ..d }, "t_max"),
        (Params { t_max: -0.5, ..d }, "t_max"),
        (Params { t_max: nan, ..d }, "t_max"),
        (Params { t_eps: 0.9946, ..d }, "t_eps"),
        (Params { t_eps: 0.0, ..d }, "t_eps"),
        (Params { t_eps: -1e-3, ..d }, "t_eps"),
        (Params { t_eps: nan, ..d }, "t_eps"),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // Valid boundaries: s = 0 (α = cos(πt/2)), T just below 1, t_ε just below T.
    VpCosine::new(Params { s: 0.0, ..d })?;
    VpCosine::new(Params {
        t_max: 0.999_999,
        ..d
    })?;
    VpCosine::new(Params { t_eps: 0.99, ..d })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md).
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = VpCosine::new(Params {
        t_max: 1.0,
        ..Params::default()
    })
    .expect_err("T = 1 has α = 0")
    .to_string();
    assert!(msg.starts_with("vp_cosine: invalid `t_max`"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// `vp_cosine` builds from RON, missing fields take the defaults, an unknown field is a
/// configuration error, and an invalid value is refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("vp_cosine", "()")?;
    assert_eq!((sde.t_max(), sde.t_eps()), (0.9946, 1e-3));
    // s = 0: α = cos(πt/2), so α(0.5) = cos(π/4) = √½, by hand.
    let sde = reg.sde("vp_cosine", "(s: 0.0)")?;
    assert!((sde.alpha(0.5) - 0.5f64.sqrt()).abs() <= 4.0 * f64::EPSILON);
    assert!(matches!(
        reg.sde("vp_cosine", "(offset: 0.01)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("vp_cosine", "(t_max: 1.0)").is_err());
    Ok(())
}
