//! The discrete VP schedule's parameters: DDPM's defaults (MATH.md §1), t_ε = 1/N unless given,
//! the validation of `VpDiscrete::new` (each bad value an `InvalidParam` naming its field), and
//! the `vp_discrete` registration read from RON.

use sdeflow_kernel::{Error, ForwardSde, Registry, Result};
use sdeflow_sde_vp_discrete::{Params, VpDiscrete};

/// MATH.md §1: "linear betas 1e-4 → 0.02 over N = 1000", T = 1, and t_ε = 1/N = 1e-3 (DPM-Solver's
/// choice for discrete-time models, equal to §1's VP t_ε).
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!(
        (p.beta_start, p.beta_end, p.num_train_timesteps, p.t_eps),
        (1e-4, 0.02, 1000, None)
    );
    let sde = VpDiscrete::new(p)?;
    assert_eq!((sde.t_max(), sde.t_eps()), (1.0, 1e-3));
    Ok(())
}

/// t_ε follows N when not given (1/N = t_0), and a given t_ε is kept, including one in the
/// extrapolated piece below t_0 (above t* ≈ 1.66e-4 for the defaults, mpmath:
/// t* = (1 − la_0/(la_1 − la_0))/N = 0.000166118489868349).
#[test]
fn t_eps_defaults_to_one_over_n() -> Result<()> {
    let sde = VpDiscrete::new(Params {
        num_train_timesteps: 500,
        ..Params::default()
    })?;
    assert_eq!((sde.t_eps(), sde.knots()[0]), (2e-3, 2e-3));
    // ᾱ_499 for β from 1e-4 to 0.02 over 500 steps is 0.00635271079701505 (mpmath).
    assert!((sde.alpha(1.0).powi(2) / 0.006_352_710_797_015_05 - 1.0).abs() <= 1e-11);

    let sde = VpDiscrete::new(Params {
        t_eps: Some(2e-4),
        ..Params::default()
    })?;
    assert_eq!(sde.t_eps(), 2e-4);
    assert!(sde.alpha(2e-4) < 1.0 && sde.sigma(2e-4) > 0.0);
    Ok(())
}

/// The field named by the error of `VpDiscrete::new(p)`, which must be `InvalidParam` for plugin
/// `vp_discrete`.
fn rejected_field(p: Params) -> String {
    match VpDiscrete::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "vp_discrete", "{p:?}");
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
        (
            Params {
                beta_start: 0.0,
                ..d
            },
            "beta_start",
        ),
        (
            Params {
                beta_start: -1e-4,
                ..d
            },
            "beta_start",
        ),
        (
            Params {
                beta_start: 1.0,
                ..d
            },
            "beta_start",
        ),
        (
            Params {
                beta_start: nan,
                ..d
            },
            "beta_start",
        ),
        (Params { beta_end: 0.0, ..d }, "beta_end"),
        (Params { beta_end: 1.0, ..d }, "beta_end"),
        (Params { beta_end: 1.5, ..d }, "beta_end"),
        (Params { beta_end: nan, ..d }, "beta_end"),
        (
            Params {
                num_train_timesteps: 0,
                ..d
            },
            "num_train_timesteps",
        ),
        (
            Params {
                num_train_timesteps: 1,
                ..d
            },
            "num_train_timesteps",
        ),
        (
            Params {
                num_train_timesteps: 1_000_001,
                ..d
            },
            "num_train_timesteps",
        ),
        (
            Params {
                t_eps: Some(0.0),
                ..d
            },
            "t_eps",
        ),
        (
            Params {
                t_eps: Some(-1e-3),
                ..d
            },
            "t_eps",
        ),
        (
            Params {
                t_eps: Some(1.0),
                ..d
            },
            "t_eps",
        ),
        (
            Params {
                t_eps: Some(nan),
                ..d
            },
            "t_eps",
        ),
        // Below t* ≈ 1.66e-4 the continued line has α > 1.
        (
            Params {
                t_eps: Some(1.5e-4),
                ..d
            },
            "t_eps",
        ),
        (
            Params {
                t_eps: Some(1e-5),
                ..d
            },
            "t_eps",
        ),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // Valid boundary values: N = 2, decreasing betas, t_ε just above t* and just below T.
    VpDiscrete::new(Params {
        num_train_timesteps: 2,
        ..d
    })?;
    VpDiscrete::new(Params {
        beta_start: 0.02,
        beta_end: 1e-4,
        ..d
    })?;
    VpDiscrete::new(Params {
        t_eps: Some(1.7e-4),
        ..d
    })?;
    VpDiscrete::new(Params {
        t_eps: Some(0.999),
        ..d
    })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md), and for
/// t_ε names the lowest admissible value.
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = VpDiscrete::new(Params {
        t_eps: Some(1e-4),
        ..Params::default()
    })
    .expect_err("t_eps below t*")
    .to_string();
    assert!(msg.starts_with("vp_discrete: invalid `t_eps`"), "{msg}");
    assert!(msg.contains("1.66118"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// The registration: `vp_discrete` builds from RON, missing fields take the defaults, t_ε is
/// written `Some(…)`, an unknown field is a configuration error, and an invalid value is
/// refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("vp_discrete", "()")?;
    assert_eq!(
        (sde.t_max(), sde.t_eps(), sde.knots().len()),
        (1.0, 1e-3, 1000)
    );
    // α(t_0)² = 1 − β_0 = 0.9999.
    assert!((sde.alpha(1e-3).powi(2) / 0.9999 - 1.0).abs() <= 1e-14);

    let sde = reg.sde(
        "vp_discrete",
        "(num_train_timesteps: 4, beta_start: 0.1, beta_end: 0.4)",
    )?;
    // ᾱ_3 = 0.9 · 0.8 · 0.7 · 0.6 = 0.3024, by hand.
    assert!((sde.alpha(1.0).powi(2) / 0.3024 - 1.0).abs() <= 1e-14);
    assert_eq!(sde.t_eps(), 0.25);

    let sde = reg.sde("vp_discrete", "(t_eps: Some(0.002))")?;
    assert_eq!(sde.t_eps(), 2e-3);

    assert!(matches!(
        reg.sde("vp_discrete", "(beta_strat: 0.001)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("vp_discrete", "(num_train_timesteps: 1)").is_err());
    Ok(())
}
