//! Errors that point at the fix: unknown names list the registered ones, unknown fields and
//! invalid values name the field with a position.

use sdeflow_kernel::{Error, Result};
use sdeflow_tests::registry;

#[test]
fn an_unknown_solver_lists_the_registered_solvers() -> Result<()> {
    let err = registry()?
        .solver("euler_maruyam", "()")
        .expect_err("unknown name");
    let Error::UnknownPlugin { kind, name, known } = &err else {
        panic!("wrong error: {err}")
    };
    assert_eq!((*kind, name.as_str()), ("solver", "euler_maruyam"));
    assert!(known.iter().any(|k| k == "euler_maruyama"));
    let msg = err.to_string();
    let listed = msg
        .split_once("registered solver plugins: ")
        .map(|(_, l)| l)
        .unwrap_or("");
    assert!(
        known.iter().all(|k| listed.split(", ").any(|l| l == k))
            && msg.contains("did you mean `euler_maruyama`?"),
        "{err}"
    );
    Ok(())
}

#[test]
fn an_unknown_field_is_named_with_its_position() -> Result<()> {
    let err = registry()?
        .sde("vp", "(\n  beta_mn: 0.2,\n)")
        .expect_err("unknown field");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Config {
                line: 2,
                col: 3,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("beta_mn") && msg.contains("beta_min"), "{msg}");
    Ok(())
}

#[test]
fn an_invalid_value_names_plugin_field_and_reason() -> Result<()> {
    let err = registry()?
        .sde("vp", "(beta_min: 5.0, beta_max: 1.0)")
        .expect_err("β_min ≥ β_max");
    let msg = err.to_string();
    assert!(
        msg.contains("vp: invalid `beta_max`") && msg.contains("must exceed beta_min"),
        "{msg}"
    );
    let err = registry()?.sde("vp", "(t_eps: 2.0)").expect_err("t_ε ≥ T");
    assert!(err.to_string().contains("invalid `t_eps`"), "{err}");
    Ok(())
}

#[test]
fn an_invalid_mixture_is_rejected() -> Result<()> {
    let r = registry()?;
    let ctx = sdeflow_kernel::ModelContext::new(candle_core::Device::Cpu, candle_core::DType::F32);
    let bad_weights = "(weights: [0.7, 0.7], means: [[0.0], [1.0]], covariances: [isotropic(1.0), isotropic(1.0)])";
    let err = r
        .model("gmm_oracle", bad_weights, &ctx)
        .expect_err("weights sum to 1.4");
    assert!(err.to_string().contains("weights sum to 1.4"), "{err}");
    let not_pd =
        "(weights: [1.0], means: [[0.0, 0.0]], covariances: [full([[1.0, 2.0], [2.0, 1.0]])])";
    let err = r
        .model("gmm_oracle", not_pd, &ctx)
        .expect_err("indefinite covariance");
    assert!(
        err.to_string().contains("not symmetric positive definite"),
        "{err}"
    );
    Ok(())
}

#[test]
fn zero_steps_is_an_error_not_a_panic() -> Result<()> {
    let err = sdeflow_tests::ring_pipeline("euler_maruyama", 0, 1)?
        .build()
        .expect_err("0 steps");
    assert!(err.to_string().contains("steps"), "{err}");
    Ok(())
}
