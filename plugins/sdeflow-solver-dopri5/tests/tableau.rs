//! The tableau satisfies every order condition up to 5 (its embedding up to 4), is FSAL, and
//! the solver claims what the kernel's adaptive loop needs.

use sdeflow_kernel::{AdaptiveParams, Equation, Order, Result, Solver, rk::RkSolver};
use sdeflow_solver_dopri5::TABLEAU;

#[test]
fn the_pair_is_order_5_with_an_order_4_estimate_and_fsal() -> Result<()> {
    TABLEAU.validate()?;
    assert_eq!(TABLEAU.order, 5);
    assert_eq!(TABLEAU.embedded.map(|e| e.order), Some(4));
    assert!(TABLEAU.is_fsal());
    let solver = RkSolver::adaptive(&TABLEAU, &AdaptiveParams::default())?;
    let claims = solver.claims();
    assert_eq!(claims.order, Order::Ode(5.0));
    assert_eq!(claims.nfe_per_step, 6, "7 stages, the first reused");
    assert!(!claims.stochastic && !claims.affine);
    assert_eq!(claims.equation, Equation::ProbabilityFlowOde);
    assert!(solver.integrates_likelihood());
    let a = solver.adaptive().expect("adaptive");
    assert_eq!((a.tolerances.rtol, a.tolerances.atol), (1e-5, 1e-5));
    assert!((a.controller.beta1 - 0.14).abs() < 1e-15);
    assert_eq!(format!("{solver:?}"), "dopri5(rtol: 1e-5, atol: 1e-5)");
    let bad = RkSolver::adaptive(
        &TABLEAU,
        &AdaptiveParams {
            atol: 0.0,
            ..AdaptiveParams::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(bad.starts_with("dopri5: invalid `atol`"), "{bad}");
    Ok(())
}
