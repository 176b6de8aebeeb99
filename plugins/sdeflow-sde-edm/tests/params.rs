//! The EDM SDE's parameters: MATH.md §1's defaults, the validation of `Edm::new` (each bad value
//! an `InvalidParam` naming its field), and the `edm` registration read from RON.

use sdeflow_kernel::{Error, ForwardSde, GridKind, Registry, Result};
use sdeflow_sde_edm::{Edm, Params};

/// MATH.md §1: "edm uses T = 80, t_ε = 0.002 (σ in EDM's units), a Karras grid", and §5's ρ = 7.
#[test]
fn defaults_are_math_md_values() -> Result<()> {
    let p = Params::default();
    assert_eq!((p.t_max, p.t_eps, p.rho), (80.0, 0.002, 7.0));
    let sde = Edm::new(p)?;
    assert_eq!((sde.t_max(), sde.t_eps()), (80.0, 0.002));
    assert_eq!(sde.default_grid(), GridKind::Karras { rho: 7.0 });
    Ok(())
}

/// The field named by the error of `Edm::new(p)`, which must be `InvalidParam` for plugin `edm`.
fn rejected_field(p: Params) -> String {
    match Edm::new(p) {
        Err(Error::InvalidParam { plugin, field, .. }) => {
            assert_eq!(plugin, "edm", "{p:?}");
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
        (Params { t_max: 0.0, ..d }, "t_max"),
        (Params { t_max: -80.0, ..d }, "t_max"),
        (Params { t_max: nan, ..d }, "t_max"),
        (Params { t_max: inf, ..d }, "t_max"),
        (Params { t_eps: 80.0, ..d }, "t_eps"),
        (Params { t_eps: 100.0, ..d }, "t_eps"),
        (Params { t_eps: 0.0, ..d }, "t_eps"),
        (Params { t_eps: -0.002, ..d }, "t_eps"),
        (Params { t_eps: nan, ..d }, "t_eps"),
        (Params { rho: 0.0, ..d }, "rho"),
        (Params { rho: -7.0, ..d }, "rho"),
        (Params { rho: nan, ..d }, "rho"),
        (Params { rho: inf, ..d }, "rho"),
    ];
    for (p, field) in cases {
        assert_eq!(rejected_field(p), field, "{p:?}");
    }
    // Valid boundaries: a tiny ρ, t_ε just below T.
    Edm::new(Params { rho: 1e-3, ..d })?;
    Edm::new(Params { t_eps: 79.9, ..d })?;
    Ok(())
}

/// The error message says what was wrong, lowercase, with no final period (STYLE.md).
#[test]
fn invalid_param_message_names_plugin_and_field() -> Result<()> {
    let msg = Edm::new(Params {
        rho: 0.0,
        ..Params::default()
    })
    .expect_err("ρ = 0")
    .to_string();
    assert!(msg.starts_with("edm: invalid `rho`"), "{msg}");
    assert!(!msg.ends_with('.'), "{msg}");
    Ok(())
}

/// `edm` builds from RON, missing fields take the defaults, an unknown field is a configuration
/// error, and an invalid value is refused through the registry too.
#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let sde = reg.sde("edm", "()")?;
    assert_eq!(
        (sde.t_max(), sde.t_eps(), sde.prior_std()),
        (80.0, 0.002, 80.0)
    );
    let sde = reg.sde("edm", "(t_max: 160.0, rho: 5.0)")?;
    assert_eq!(sde.prior_std(), 160.0);
    assert_eq!(sde.default_grid(), GridKind::Karras { rho: 5.0 });
    assert!(matches!(
        reg.sde("edm", "(sigma_max: 80.0)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.sde("edm", "(rho: -1.0)").is_err());
    Ok(())
}
