//! The tableau satisfies every order condition up to 3 (its embedding up to 2), is FSAL, and
//! the solver claims what the kernel's adaptive loop needs.

use sdeflow_kernel::{AdaptiveParams, Equation, Order, Result, Solver, rk::RkSolver};
use sdeflow_solver_bosh3::TABLEAU;

#[test]
fn the_pair_is_order_3_with_an_order_2_estimate_and_fsal() -> Result<()> {
    TABLEAU.validate()?;
    assert_eq!(TABLEAU.order, 3);
    assert_eq!(TABLEAU.embedded.map(|e| e.order), Some(2));
    assert!(TABLEAU.is_fsal());
    let solver = RkSolver::adaptive(&TABLEAU, &AdaptiveParams::default())?;
    let claims = solver.claims();
    assert_eq!(claims.order, Order::Ode(3.0));
    assert_eq!(claims.nfe_per_step, 3, "4 stages, the first reused");
    assert!(!claims.stochastic && !claims.affine);
    assert_eq!(claims.equation, Equation::ProbabilityFlowOde);
    assert!(solver.integrates_likelihood());
    let a = solver.adaptive().expect("adaptive");
    assert_eq!((a.tolerances.rtol, a.tolerances.atol), (1e-5, 1e-5));
    assert!((a.controller.beta1 - 0.7 / 3.0).abs() < 1e-15);
    assert_eq!(format!("{solver:?}"), "bosh3(rtol: 1e-5, atol: 1e-5)");
    let bad = RkSolver::adaptive(
        &TABLEAU,
        &AdaptiveParams {
            atol: 0.0,
            ..AdaptiveParams::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(bad.starts_with("bosh3: invalid `atol`"), "{bad}");
    Ok(())
}
