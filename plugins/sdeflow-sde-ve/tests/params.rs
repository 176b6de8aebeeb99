//! The VE SDE's parameters: MATH.md §1's defaults, the validation of `Ve::new` (each bad value
//! an `InvalidParam` naming its field), and the `ve` registration read from RON.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result};
use sdeflow_sde_ve::{Params, Ve};

/// MATH.md §1: "s_min 0.01, s_max 50", T 1, and "Sampling stops at t_ε (… VE 1e-5)".
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!(
        (p.sigma_min, p.sigma_max, p.t_max, p.t_eps),
        (0.01, 50.0, 1.0, 1e-5)
    );
    let sde = Ve::new(p)?;
    assert_eq!(
        (sde.t_max(), sde.t_eps(), sde.prior_std()),
        (1.0, 1e-5, 50.0)
    );
    Ok(())
}

/// The field named by the error of `Ve::new(p)`, which must be `InvalidParam` for plugin `ve`.
fn rejected_field(p: Params) -> String {
    match Ve::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "ve", "{p:?}");
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
                sigma_min: 0.0,
                ..d
            },
            "sigma_min",
        ),
        (
            Params {
                sigma_min: -0.01,
                ..d
            },
            "sigma_min",
        ),
        (
            Params {
                sigma_min: nan,
                ..d
            },
            "sigma_min",
        ),
        (
            Params {
                sigma_min: inf,
                ..d
            },
            "sigma_min",
        ),
        (
            Params {
                sigma_max: 0.01,
                ..d
            },
            "sigma_max",
        ),
        (
            Params {
                sigma_max: 0.001,
                ..d
            },
            "sigma_max",
        ),
        (
            Params {
                sigma_max: nan,
                ..d
            },
            "sigma_max",
        ),
        (
            Params {
                sigma_max: inf,
                ..d
            },
            "sigma_max",
        ),
        (Params { t_max: 0.0, ..d }, "t_max"),
        (Params { t_max: -1.0, ..d }, "t_max"),
        (Params { t_max: nan, ..d }, "t_max"),
        (Params { t_max: inf, ..d }, "t_max"),
        (Params { t_eps: 1.0, ..d }, "t_eps"),
        (Params { t_eps: 2.0, ..d }, "t_eps"),
        (Params { t_eps: 0.0, ..d }, "t_eps"),
        (Params { t_eps: -1e-5, ..d }, "t_eps"),
        (Params { t_eps: nan, ..d }, "t_eps"),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // Valid boundary values: t_ε just below T, s_max barely above s_min.
    Ve::new(Params { t_eps: 0.999, ..d })?;
    Ve::new(Params {
        sigma_max: 0.010_001,
        ..d
    })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md).
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = Ve::new(Params {
        sigma_max: 0.001,
        ..Params::default()
    })
    .expect_err("s_max < s_min")
    .to_string();
    assert!(msg.starts_with("ve: invalid `sigma_max`"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// The registration: `ve` builds from RON, missing fields take the defaults, an unknown field is
/// a configuration error, and an invalid value is refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("ve", "()")?;
    assert_eq!(
        (sde.t_max(), sde.t_eps(), sde.prior_std()),
        (1.0, 1e-5, 50.0)
    );
    // σ(1) = √(s_max² − s_min²) = √(2500 − 1e-4), by hand.
    assert!((sde.sigma(1.0) / (2500.0f64 - 1e-4).sqrt() - 1.0).abs() <= 1e-14);

    // s_max = 100: σ(1) = √(10⁴ − 1e-4), and the prior follows.
    let sde = reg.sde("ve", "(sigma_max: 100.0)")?;
    assert!((sde.sigma(1.0) / (1e4f64 - 1e-4).sqrt() - 1.0).abs() <= 1e-14);
    assert_eq!(sde.prior_std(), 100.0);

    assert!(matches!(
        reg.sde("ve", "(sigma_mx: 10.0)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("ve", "(t_eps: 0.0)").is_err());
    Ok(())
}
