//! The sub-VP SDE's parameters: MATH.md §1's defaults, the validation of `SubVp::new` (each bad value
//! an `InvalidParam` naming its field), and the `sub_vp` registration read from RON.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result};
use sdeflow_sde_sub_vp::{Params, SubVp};

/// MATH.md §1: "Defaults: β_min 0.1, β_max 20, T 1", and §1's "Sampling stops at t_ε (VP/sub-VP 1e-3)".
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!(
        (p.beta_min, p.beta_max, p.t_max, p.t_eps),
        (0.1, 20.0, 1.0, 1e-3)
    );
    let sde = SubVp::new(p)?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0, 1e-3));
    Ok(())
}

/// The field named by the error of `SubVp::new(p)`, which must be `InvalidParam` for plugin `sub_vp`.
fn rejected_field(p: Params) -> String {
    match SubVp::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "sub_vp", "{p:?}");
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
    let inf = f64::INFINITY;
    let cases = [
        (
            Params {
                beta_min: -0.1,
                ..d
            },
            "beta_min",
        ),
        (Params { beta_min: nan, ..d }, "beta_min"),
        (Params { beta_min: inf, ..d }, "beta_min"),
        (Params { beta_max: 0.1, ..d }, "beta_max"),
        (
            Params {
                beta_max: 0.05,
                ..d
            },
            "beta_max",
        ),
        (Params { beta_max: nan, ..d }, "beta_max"),
        (Params { beta_max: inf, ..d }, "beta_max"),
        (Params { t_max: 0.0, ..d }, "t_max"),
        (Params { t_max: -1.0, ..d }, "t_max"),
        (Params { t_max: nan, ..d }, "t_max"),
        (Params { t_max: inf, ..d }, "t_max"),
        (Params { t_eps: 1.0, ..d }, "t_eps"),
        (Params { t_eps: 2.0, ..d }, "t_eps"),
        (Params { t_eps: 0.0, ..d }, "t_eps"),
        (Params { t_eps: -1e-3, ..d }, "t_eps"),
        (Params { t_eps: nan, ..d }, "t_eps"),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // The boundary values that are valid: β_min = 0 and t_ε just below T.
    SubVp::new(Params { beta_min: 0.0, ..d })?;
    SubVp::new(Params { t_eps: 0.999, ..d })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md).
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = SubVp::new(Params {
        beta_max: 0.01,
        ..Params::default()
    })
    .expect_err("β_max < β_min")
    .to_string();
    assert!(msg.starts_with("sub_vp: invalid `beta_max`"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// The registration: `sub_vp` builds from RON, missing fields take the defaults, an unknown field
/// is a configuration error, and an invalid value is refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("sub_vp", "()")?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0, 1e-3));
    // α(1) = exp(−B(1)/2), B(1) = β_min + ½(β_max − β_min) = 0.1 + 9.95 (defaults).
    assert!((sde.alpha(1.0) / (-(0.1f64 + 9.95) / 2.0).exp() - 1.0).abs() <= 1e-14);
    // σ(1) = 1 − e^{−B(1)}, not VP's square root of it.
    assert!((sde.sigma(1.0) / -(-(0.1f64 + 9.95)).exp_m1() - 1.0).abs() <= 1e-14);

    // β_max = 10: B(1) = 0.1 + 4.95.
    let sde = reg.sde("sub_vp", "(beta_max: 10.0)")?;
    assert!((sde.alpha(1.0) / (-(0.1f64 + 4.95) / 2.0).exp() - 1.0).abs() <= 1e-14);

    assert!(matches!(
        reg.sde("sub_vp", "(beta_mx: 10.0)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("sub_vp", "(t_eps: 0.0)").is_err());
    Ok(())
}
