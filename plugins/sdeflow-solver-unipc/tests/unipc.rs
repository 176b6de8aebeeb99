//! UniPC against hand computations of its formulas (the crate doc's `# Formula`) on the OU SDE
//! with the exact x̂₀ of a Gaussian (sdeflow_kernel::testing): UniP-1 is DDIM(η = 0) in both
//! B(h) variants, UniP-2 with bh2 is DPM-Solver++(2M), UniP-3 solves its 2 × 2 system, UniC
//! redoes the previous step with the new evaluation; the history and `unipc.x_prev` are
//! threaded through the state and a foreign history is an error; parameters are validated;
//! through the pipeline the pathwise error falls at the claimed order on λ-uniform grids.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Pipeline, Result, Solver,
    SolverClaims, State, TimeCoefs,
    testing::{
        Gaussian, Ou, assert_close, normals, ou_entry, ou_pipeline, ou_step, pathwise_errors, rows,
        tail_order,
    },
};
use sdeflow_solver_unipc::{Params, Unipc, Variant, X_PREV};

fn unipc(order: usize, variant: Variant, corrector: bool) -> Result<Unipc> {
    Unipc::new(Params {
        order,
        variant,
        corrector,
        lower_order_final: true,
    })
}

/// The exact x̂₀ of every entry of `x` at `c`.
fn x0_of(x: &[Vec<f64>], c: &TimeCoefs) -> Vec<Vec<f64>> {
    let model = Gaussian::default();
    x.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, &v)| model.x0(v, j, c))
                .collect()
        })
        .collect()
}

/// φ_k(z) = (e^z − Σ_{j<k} z^j/j!)/z^k in closed form (|z| ≥ 0.2 here: no cancellation).
fn phi(k: i32, z: f64) -> f64 {
    let mut partial = 0.0;
    let mut term = 1.0;
    for j in 0..k {
        partial += term;
        term *= z / f64::from(j + 1);
    }
    (z.exp() - partial) / z.powi(k)
}

/// x_s = (σ_s/σ_t) x + α_s (1 − e^{−h}) m0 + α_s B̄ Σ_k a_k (m_k − m0)/r_k, entry by entry.
fn hand_update(
    (ct, cs): (&TimeCoefs, &TimeCoefs),
    x: &[Vec<f64>],
    m0: &[Vec<f64>],
    terms: &[(f64, f64, &[Vec<f64>])],
    b_bar: f64,
) -> Vec<Vec<f64>> {
    let h = cs.lambda - ct.lambda;
    x.iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .enumerate()
                .map(|(j, &v)| {
                    let d: f64 = terms
                        .iter()
                        .map(|(a, rk, m)| a * (m[i][j] - m0[i][j]) / rk)
                        .sum();
                    cs.sigma / ct.sigma * v
                        + cs.alpha * (1.0 - (-h).exp()) * m0[i][j]
                        + cs.alpha * b_bar * d
                })
                .collect()
        })
        .collect()
}

fn max_gap(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// The first step is UniP-1, DDIM(η = 0)'s step, in both variants (B(h) multiplies nothing
/// there), a stale history handed in is ignored, and the returned state holds [(λ_t, x̂₀)] and
/// the start point as `unipc.x_prev`; the input state is left alone.
#[test]
fn first_step_is_ddim() -> Result<()> {
    let x = normals(1, 6, 2)?;
    let (t, s) = (1.0, 0.8);
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let m0 = x0_of(&rows(&x)?, &ct);
    let want = hand_update((&ct, &cs), &rows(&x)?, &m0, &[], 0.0);
    let mut stale = State::new(x.clone(), t, 0);
    stale.history = vec![ou_entry(0.5, normals(9, 6, 2)?)];
    stale.extras.insert(X_PREV.into(), normals(8, 6, 2)?);
    for variant in [Variant::Bh1, Variant::Bh2] {
        for state in [State::new(x.clone(), t, 0), stale.clone()] {
            let (next, nfe) = ou_step(&unipc(3, variant, true)?, &state, (t, s), 0, 10)?;
            assert_eq!(nfe, 1);
            assert_close(&rows(&next.x)?, &want, 1e-12, "UniP-1");
            assert_eq!(next.history.len(), 1);
            assert_eq!(next.history[0].lambda, ct.lambda);
            assert_close(&rows(&next.history[0].x0_hat)?, &m0, 1e-12, "x̂₀");
            assert_eq!(rows(&next.extras[X_PREV])?, rows(&x)?);
        }
    }
    assert_eq!(stale.history.len(), 1);
    assert_eq!(stale.history[0].lambda, Ou.log_snr(0.5));
    Ok(())
}

/// Without the corrector, a middle step of order 2 is UniP-2 with a₁ = 1/2: with bh2 it is
/// DPM-Solver++(2M), D = (1 + 1/(2r)) x̂₀_now − (1/(2r)) x̂₀_prev, r = h_prev/h; with bh1 the
/// correction is scaled by h instead of 1 − e^{−h}. No `unipc.x_prev` is kept.
#[test]
fn uni_p_2_is_dpm_solver_pp_2m_with_bh2() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let prev = normals(7, 5, 2)?;
    let (t_prev, t, s) = (0.6, 0.5, 0.35);
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![ou_entry(t_prev, prev.clone())];
    let h = cs.lambda - ct.lambda;
    let r = (ct.lambda - Ou.log_snr(t_prev)) / h;
    let (xr, pr) = (rows(&x)?, rows(&prev)?);
    let m0 = x0_of(&xr, &ct);
    let dpmpp: Vec<Vec<f64>> = xr
        .iter()
        .zip(&m0)
        .zip(&pr)
        .map(|((xs, ms), ps)| {
            xs.iter()
                .zip(ms)
                .zip(ps)
                .map(|((v, m), p)| {
                    let d = (1.0 + 0.5 / r) * m - 0.5 / r * p;
                    cs.sigma / ct.sigma * v + cs.alpha * (1.0 - (-h).exp()) * d
                })
                .collect()
        })
        .collect();
    let (next, nfe) = ou_step(&unipc(2, Variant::Bh2, false)?, &state, (t, s), 4, 20)?;
    assert_eq!(nfe, 1);
    assert_close(&rows(&next.x)?, &dpmpp, 1e-12, "UniP-2, bh2");
    assert!(!next.extras.contains_key(X_PREV));
    let bh1 = hand_update((&ct, &cs), &xr, &m0, &[(0.5, -r, &pr)], h);
    let (next, _) = ou_step(&unipc(2, Variant::Bh1, false)?, &state, (t, s), 4, 20)?;
    assert_close(&rows(&next.x)?, &bh1, 1e-12, "UniP-2, bh1");
    assert!(max_gap(&bh1, &dpmpp) > 1e-4, "bh1 and bh2 agree");
    assert_eq!(next.history.len(), 2);
    assert_eq!(next.history[0].lambda, Ou.log_snr(t_prev));
    assert_eq!(next.history[1].lambda, ct.lambda);
    Ok(())
}

/// UniP-3 solves a₁ + a₂ = b₁, a₁ r₁ + a₂ r₂ = b₂ with b_j = j! φ_{j+1}(−h)/β (β = 1 for bh1,
/// φ₁(−h) for bh2): here by Cramer's rule.
#[test]
fn uni_p_3_solves_its_system() -> Result<()> {
    let x = normals(4, 5, 2)?;
    let (m2, m1) = (normals(10, 5, 2)?, normals(11, 5, 2)?);
    let (t2, t1, t, s) = (0.9, 0.7, 0.5, 0.3);
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![ou_entry(t2, m2.clone()), ou_entry(t1, m1.clone())];
    let h = cs.lambda - ct.lambda;
    let (r1, r2) = (
        (Ou.log_snr(t1) - ct.lambda) / h,
        (Ou.log_snr(t2) - ct.lambda) / h,
    );
    let xr = rows(&x)?;
    let m0 = x0_of(&xr, &ct);
    let (m1r, m2r) = (rows(&m1)?, rows(&m2)?);
    for (variant, beta, b_bar) in [
        (Variant::Bh1, 1.0, h),
        (Variant::Bh2, phi(1, -h), 1.0 - (-h).exp()),
    ] {
        let (b1, b2) = (phi(2, -h) / beta, 2.0 * phi(3, -h) / beta);
        let a1 = (b1 * r2 - b2) / (r2 - r1);
        let a2 = (b2 - b1 * r1) / (r2 - r1);
        let want = hand_update(
            (&ct, &cs),
            &xr,
            &m0,
            &[(a1, r1, &m1r), (a2, r2, &m2r)],
            b_bar,
        );
        let (next, _) = ou_step(&unipc(3, variant, false)?, &state, (t, s), 5, 20)?;
        assert_close(
            &rows(&next.x)?,
            &want,
            1e-12,
            &format!("UniP-3 {variant:?}"),
        );
        assert_eq!(next.history.len(), 3);
    }
    Ok(())
}

/// On step 1 the corrector UniC-1 (c₁ = 1/2) redoes step 0 from `unipc.x_prev` with the new
/// evaluation x̂₀(x_t, t) at the predicted point,
/// `x^c = (σ_t/σ_p) x_p + α_t (1 − e^{−h'}) m_p + α_t B̄(h') (m_now − m_p)/2`; the predictor
/// then starts from x^c with the same m_now, and x^c is the next `unipc.x_prev`. Still one NFE.
#[test]
fn corrector_redoes_the_previous_step() -> Result<()> {
    let (x_prev, x) = (normals(12, 4, 2)?, normals(13, 4, 2)?);
    let (tp, t, s) = (0.8, 0.6, 0.45);
    let (cp, ct, cs) = (Ou.coefs(tp), Ou.coefs(t), Ou.coefs(s));
    let xpr = rows(&x_prev)?;
    let mp = x0_of(&xpr, &cp);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![ou_entry(tp, Tensor::new(mp.clone(), x.device())?)];
    state.extras.insert(X_PREV.into(), x_prev.clone());
    let m_now = x0_of(&rows(&x)?, &ct);
    for (variant, b_bar) in [
        (Variant::Bh1, ct.lambda - cp.lambda),
        (Variant::Bh2, 1.0 - (cp.lambda - ct.lambda).exp()),
    ] {
        let xc = hand_update((&cp, &ct), &xpr, &mp, &[(0.5, 1.0, &m_now)], b_bar);
        let want = hand_update((&ct, &cs), &xc, &m_now, &[], 0.0);
        let (next, nfe) = ou_step(&unipc(1, variant, true)?, &state, (t, s), 1, 20)?;
        assert_eq!(nfe, 1);
        assert_close(
            &rows(&next.x)?,
            &want,
            1e-12,
            &format!("UniC-1 {variant:?}"),
        );
        assert_close(&rows(&next.extras[X_PREV])?, &xc, 1e-12, "x_prev");
        let (plain, _) = ou_step(&unipc(1, variant, false)?, &state, (t, s), 1, 20)?;
        let unc = hand_update((&ct, &cs), &rows(&x)?, &m_now, &[], 0.0);
        assert_close(&rows(&plain.x)?, &unc, 1e-12, "uncorrected");
        assert!(max_gap(&want, &unc) > 1e-3, "the corrector changed nothing");
    }
    // Order 2, step 2: UniC-2 over nodes r₁ = (λ_{p2} − λ_p)/h' and 1, then UniP-2.
    let tp2 = 0.95;
    let cp2 = Ou.coefs(tp2);
    let mp2 = rows(&normals(14, 4, 2)?)?;
    state
        .history
        .insert(0, ou_entry(tp2, Tensor::new(mp2.clone(), x.device())?));
    let hp = ct.lambda - cp.lambda;
    let r1 = (cp2.lambda - cp.lambda) / hp;
    let (b1, b2) = (phi(2, -hp) / phi(1, -hp), 2.0 * phi(3, -hp) / phi(1, -hp));
    let c1 = (b1 - b2) / (1.0 - r1);
    let c2 = (b2 - b1 * r1) / (1.0 - r1);
    let b_bar = 1.0 - (-hp).exp();
    let xc = hand_update(
        (&cp, &ct),
        &xpr,
        &mp,
        &[(c1, r1, &mp2), (c2, 1.0, &m_now)],
        b_bar,
    );
    let h = cs.lambda - ct.lambda;
    let want = hand_update(
        (&ct, &cs),
        &xc,
        &m_now,
        &[(0.5, -hp / h, &mp)],
        1.0 - (-h).exp(),
    );
    let (next, _) = ou_step(&unipc(2, Variant::Bh2, true)?, &state, (t, s), 2, 20)?;
    assert_close(&rows(&next.x)?, &want, 1e-12, "UniC-2 then UniP-2");
    assert_eq!(next.history.len(), 2);
    assert_eq!(next.history[1].lambda, ct.lambda);
    Ok(())
}

/// Warm-up: step i runs order min(order, i + 1); with `lower_order_final` a run of fewer than
/// 15 steps ends with orders 2 and 1 (diffusers' UniPCMultistepScheduler), longer runs do not.
#[test]
fn warm_up_and_lower_order_final() -> Result<()> {
    let orders = |s: &Unipc, n: usize| (0..n).map(|i| s.step_order(i, n)).collect::<Vec<_>>();
    let three = unipc(3, Variant::Bh2, true)?;
    assert_eq!(orders(&three, 6), [1, 2, 3, 3, 2, 1]);
    assert_eq!(orders(&three, 15)[12..], [3, 3, 3]);
    assert_eq!(orders(&three, 2), [1, 1]);
    let no_lof = Unipc::new(Params {
        lower_order_final: false,
        ..Params::default()
    })?;
    assert_eq!(orders(&no_lof, 6), [1, 2, 3, 3, 3, 3]);
    assert_eq!(orders(&unipc(1, Variant::Bh1, true)?, 4), [1, 1, 1, 1]);
    Ok(())
}

/// A history that is not this run's is an error naming the history: an entry not below λ_t,
/// entries out of order, evaluations without `unipc.x_prev` when correcting, or an x_prev of
/// another shape.
#[test]
fn foreign_history_is_an_error() -> Result<()> {
    let x = normals(5, 3, 2)?;
    let solver = Unipc::default();
    let with = |ts: &[f64], x_prev: Option<Tensor>| -> State {
        let mut st = State::new(x.clone(), 0.5, 0);
        st.history = ts.iter().map(|&t| ou_entry(t, x.clone())).collect();
        if let Some(xp) = x_prev {
            st.extras.insert(X_PREV.into(), xp);
        }
        st
    };
    let cases = [
        with(&[0.5], Some(x.clone())),
        with(&[0.4], Some(x.clone())),
        with(&[0.6, 0.7], Some(x.clone())),
        with(&[0.7], None),
        with(&[0.7], Some(normals(6, 4, 2)?)),
    ];
    for state in cases {
        let err = ou_step(&solver, &state, (0.5, 0.35), 4, 20).unwrap_err();
        assert!(err.to_string().contains("unipc") && err.to_string().contains("history"));
    }
    Ok(())
}

/// Each parameter is checked: an order outside 1..=3, an unknown variant or field is an error
/// naming it; the claims follow the parameters.
#[test]
fn parameters_and_claims() -> Result<()> {
    for order in [0, 4] {
        let err = Unipc::new(Params {
            order,
            ..Params::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParam { plugin, field, .. } if plugin == "unipc" && field == "order"),
            "{err}"
        );
    }
    let reg = sdeflow_kernel::Registry::global()?;
    for (ron, field) in [
        ("(variant: bh3)", "variant"),
        ("(steps: 10)", "steps"),
        ("(order: 5)", "order"),
    ] {
        let err = reg.solver("unipc", ron).unwrap_err().to_string();
        assert!(err.contains(field), "{ron}: {err}");
    }
    let err = reg
        .solver("unipc", "(variant: bh3)")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bh1") && err.contains("bh2"), "{err}");
    assert_eq!(
        reg.solver("unipc", "()")?.claims(),
        Unipc::default().claims()
    );
    for (ron, p) in [
        ("()", 4.0),
        ("(corrector: false)", 2.0),
        ("(order: 2)", 3.0),
        ("(order: 2, corrector: false)", 2.0),
        ("(order: 1, variant: bh1)", 2.0),
        ("(order: 1, corrector: false)", 1.0),
    ] {
        let claims = reg.solver("unipc", ron)?.claims();
        assert_eq!(
            claims,
            SolverClaims {
                order: Order::Ode(p),
                nfe_per_step: 1,
                stochastic: false,
                affine: false,
                equation: Equation::ProbabilityFlowOde,
                natural_grid: GridKind::LogSnr,
            },
            "{ron}"
        );
    }
    for (ron, steps) in [
        ("()", 50),
        ("(order: 2)", 100),
        ("(corrector: false)", 200),
        ("(order: 1)", 200),
        ("(order: 1, corrector: false)", 500),
    ] {
        assert_eq!(
            reg.solver("unipc", ron)?.default_discretization(&Ou),
            Discretization {
                steps,
                grid: GridKind::LogSnr
            },
            "{ron}"
        );
    }
    Ok(())
}

fn pipeline(solver: Unipc, steps: usize) -> Result<Pipeline> {
    ou_pipeline(Arc::new(solver), steps)
}

/// The largest pathwise error at t_ε of `solver` from four starts through the pipeline on an
/// N-step λ-uniform grid, against the closed-form PF-ODE flow map; NFE counted = N, no noise.
fn flow_error(solver: Unipc, n: usize) -> Result<f64> {
    let errors = pathwise_errors(
        Arc::new(Ou),
        Arc::new(solver),
        GridKind::LogSnr,
        &normals(5, 4, 2)?,
        &[n],
        |n, _, out| assert_eq!((out.nfe, out.state.draws), (n as u64, 0)),
    )?;
    Ok(errors[0])
}

/// Through the pipeline on λ-uniform grids the pathwise error falls at the claimed order (tail
/// fit ± 0.25 over N = 16 … 256): p + 1 with the corrector, p without, and 2 for `order: 3`
/// without it, whose first UniP-1 step caps it (on OU, λ_T = −0.93, the cap shows early).
#[test]
fn converges_at_the_claimed_order() -> Result<()> {
    let steps = [16, 32, 64, 128, 256];
    for (order, corrector) in [
        (1, false),
        (1, true),
        (2, false),
        (2, true),
        (3, false),
        (3, true),
    ] {
        let solver = unipc(order, Variant::Bh2, corrector)?;
        let errors = steps
            .iter()
            .map(|&n| flow_error(solver, n))
            .collect::<Result<Vec<_>>>()?;
        let Order::Ode(claim) = solver.claims().order else {
            unreachable!("an ODE claim")
        };
        let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
        eprintln!("unipc order {order}, corrector {corrector}: errors {errors:?}, order {p:.3}");
        assert!(
            (p - claim).abs() <= 0.25,
            "order {p}, claimed {claim}, errors {errors:?}"
        );
    }
    Ok(())
}

/// Warm-up caps the default's order: its first step (UniP-1 corrected by UniC-1) leaves an
/// O(h³) error, so on OU the error ratio per doubling, 16 at order 4, falls toward 8 (order 3)
/// as N grows: 14.6, 13.9, 12.8 from N = 128 to 1024 (errors ≥ 1e-11, far above rounding).
#[test]
fn warm_up_caps_the_default_order() -> Result<()> {
    let errors = [128, 256, 512, 1024]
        .iter()
        .map(|&n| flow_error(Unipc::default(), n))
        .collect::<Result<Vec<_>>>()?;
    let ratios: Vec<f64> = errors.windows(2).map(|e| e[0] / e[1]).collect();
    assert!(
        ratios.windows(2).all(|r| r[1] < r[0]) && ratios[2] < 13.5 && ratios[2] > 8.0,
        "ratios {ratios:?}, errors {errors:?}"
    );
    Ok(())
}

/// The history is threaded through the state: two runs give the same bits, and so does a
/// hand-written loop passing each returned state to the next step.
#[test]
fn history_is_threaded_and_reruns_are_identical() -> Result<()> {
    let n = 25;
    let x_t = normals(6, 4, 2)?;
    let solver = Unipc::default();
    let p = pipeline(solver, n)?;
    let bits = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(rows(x)?.iter().flatten().map(|v| v.to_bits()).collect())
    };
    let a = bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?;
    assert_eq!(a, bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?);
    let mut state = State::new(x_t, 1.0, 0);
    for i in 0..n {
        let (next, _) = ou_step(&solver, &state, (p.times()[i], p.times()[i + 1]), i, n)?;
        assert_eq!(next.history.len(), (i + 1).min(3));
        state = next;
    }
    assert_eq!(bits(&state.x)?, a);
    Ok(())
}
