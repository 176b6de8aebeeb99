//! Class conditioning and classifier-free guidance on the class-conditional oracle (the
//! `ring` mixture with each row labelled by its component): the guided prediction is
//! `(1 + w) ε̂(x, y) − w ε̂(x, ∅)` in every target, a guided evaluation costs two NFE, at w = 0
//! each class is sampled from its own component's law — on a grid and through an adaptive
//! solver that moves rows around — and label dropout is keyed by (seed, step, row).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_conformance::mixtures::ring;
use sdeflow_kernel::{
    Data, Denoiser, Dsm, ModelContext, Pipeline, Result, Retarget, ScoreModel, Time,
    data::MixtureData, null_label, ops::host_f64 as host,
};

/// The ring's labelled oracle in `dtype`.
fn oracle(dtype: DType) -> Result<Arc<dyn ScoreModel>> {
    let r = sdeflow_plugins::registry()?;
    let data = Data::new(Arc::new(MixtureData::new(ring().mixture()?, true)?))?;
    let ctx = ModelContext::new(Device::Cpu, dtype).with_data(data);
    r.model("gmm_oracle", "()", &ctx)
}

/// Labels 0, 1, …, K − 1, 0, … for n rows.
fn cycle(n: usize, k: usize) -> Result<Tensor> {
    let y: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    Ok(Tensor::from_vec(y, n, &Device::Cpu)?)
}

/// In each registered target, the guided denoiser's ε̂ is (1 + w) ε̂(x, y) − w ε̂(x, ∅) (to
/// f64 rounding), its x̂₀ is the one that ε̂ implies, it counts two NFE per evaluation, and
/// w = 0 is the conditional model alone (one NFE).
#[test]
fn guidance_combines_in_eps_in_every_target() -> Result<()> {
    let r = sdeflow_plugins::registry()?;
    let model = oracle(DType::F64)?;
    let k = model
        .classes()
        .expect("a labelled ring gives a conditional oracle");
    assert_eq!(k, ring().mixture()?.components());
    let sde = r.sde("vp", "()")?;
    let n = 16;
    let x = Tensor::from_vec(
        (0..n * 2).map(|i| (i as f64 * 0.37).sin() * 2.0).collect(),
        (n, 2),
        &Device::Cpu,
    )?;
    let y = cycle(n, k)?;
    let null = Tensor::full(null_label(k), n, &Device::Cpu)?;
    let w = 1.5;
    for name in ["eps", "x0", "score", "v", "flow", "edm"] {
        let target = r.entry::<sdeflow_kernel::registry::ParamKind>(name, "()", &())?;
        let m: Arc<dyn ScoreModel> = Arc::new(Retarget::new(model.clone(), target.clone())?);
        let plain = Denoiser::new(m.clone(), target.plugin.clone(), None, None);
        let guided = Denoiser::new(m, target.plugin.clone(), None, None).guided(Some(w))?;
        for t in [0.05, 0.5, 1.0] {
            let time: Time = sde.coefs(t).into();
            let eps_c = host(&plain.eval_cond(&x, &time, Some(&y))?.eps()?)?;
            let eps_u = host(&plain.eval_cond(&x, &time, Some(&null))?.eps()?)?;
            let g = guided.eval_cond(&x, &time, Some(&y))?;
            let (eps, x0) = (host(&g.eps()?)?, host(&g.x0()?)?);
            let c = sde.coefs(t);
            for i in 0..eps.len() {
                let want = (1.0 + w) * eps_c[i] - w * eps_u[i];
                assert!(
                    (eps[i] - want).abs() <= 1e-9 * (1.0 + want.abs()),
                    "{name} at t = {t}: ε̂ {} vs {want}",
                    eps[i]
                );
                let xi = host(&x)?[i];
                let x0_want = (xi - c.sigma * want) / c.alpha;
                assert!(
                    (x0[i] - x0_want).abs() <= 1e-8 * (1.0 + x0_want.abs()),
                    "{name} at t = {t}: x̂₀ {} vs {x0_want}",
                    x0[i]
                );
            }
        }
        assert_eq!(
            guided.nfe(),
            2 * 3,
            "{name}: a guided evaluation is two NFE"
        );
        let zero = Denoiser::new(
            Arc::new(Retarget::new(model.clone(), target.clone())?),
            target.plugin.clone(),
            None,
            None,
        )
        .guided(Some(0.0))?;
        let time: Time = sde.coefs(0.3).into();
        let a = host(&zero.eval_cond(&x, &time, Some(&y))?.eps()?)?;
        let b = host(&plain.eval_cond(&x, &time, Some(&y))?.eps()?)?;
        assert_eq!(a, b, "{name}: w = 0 is the conditional model");
        assert_eq!(zero.nfe(), 1);
    }
    Ok(())
}

/// Sampling with labels at w = 0 draws each class from its component: every class's sample
/// mean is within 5 standard errors of its component's mean (8 classes × 250 rows, VP),
/// with DPM-Solver++(2M) on a grid and with dopri5, whose rows finish at different attempts
/// and are compacted and reassembled (the labels must follow them); a guided run reports
/// twice the NFE.
#[test]
fn each_class_is_sampled_from_its_component_at_w_zero() -> Result<()> {
    let r = sdeflow_plugins::registry()?;
    let model = oracle(DType::F64)?;
    let law = ring().mixture()?;
    let k = law.components();
    let n = 250 * k;
    for (solver, guidance) in [("dpmpp_2m", Some(0.0)), ("dopri5", None)] {
        let mut b = Pipeline::builder()
            .sde(r.sde("vp", "()")?)
            .model(model.clone())
            .solver(
                r.solver(solver, "(rtol: 1e-6, atol: 1e-6)")
                    .or_else(|_| r.solver(solver, "()"))?,
            )
            .dtype(DType::F64)
            .guidance(guidance)
            .seed(5);
        if solver == "dpmpp_2m" {
            b = b.steps(100);
        }
        let p = b.build()?;
        let state = p.prior_state(0, n)?.with_cond(cycle(n, k)?)?;
        let out = p.run(state)?;
        let xs = host(&out.state.x)?;
        for c in 0..k {
            let comp = law.component(c)?;
            let (m, cov) = (comp.mean(), comp.covariance());
            let rows: Vec<&[f64]> = (c..n).step_by(k).map(|i| &xs[2 * i..2 * i + 2]).collect();
            for (dim, want) in m.iter().enumerate() {
                let got = rows.iter().map(|r| r[dim]).sum::<f64>() / rows.len() as f64;
                let se = (cov[dim][dim] / rows.len() as f64).sqrt();
                assert!(
                    (got - want).abs() <= 5.0 * se,
                    "{solver}: class {c}, dim {dim}: mean {got} vs {want} (se {se})"
                );
            }
        }
        if solver == "dpmpp_2m" {
            assert_eq!(out.nfe, 100, "w = 0 costs one NFE per step");
            let guided = Pipeline::builder()
                .sde(r.sde("vp", "()")?)
                .model(model.clone())
                .solver(r.solver(solver, "()")?)
                .dtype(DType::F64)
                .guidance(Some(2.0))
                .steps(10)
                .build()?;
            assert_eq!(guided.claimed_nfe(), Some(20));
            let out = guided.run(guided.prior_state(0, 8)?.with_cond(cycle(8, k)?)?)?;
            assert_eq!(out.nfe, 20, "a guided step is two NFE");
        }
    }
    Ok(())
}

/// Label dropout replaces a fraction p of labels by ∅, keyed by (seed, step, row): the same
/// labels in one batch and in two halves.
#[test]
fn label_dropout_is_keyed_by_row() -> Result<()> {
    let (k, n, p) = (10, 4000, 0.2);
    let y = cycle(n, k)?;
    let whole = Dsm::drop_labels(&y, k, p, (3, 7, 0))?.to_vec1::<u32>()?;
    let first = Dsm::drop_labels(&y.narrow(0, 0, 1000)?, k, p, (3, 7, 0))?.to_vec1::<u32>()?;
    let rest = Dsm::drop_labels(&y.narrow(0, 1000, 3000)?, k, p, (3, 7, 1000))?.to_vec1::<u32>()?;
    assert_eq!(whole, [first, rest].concat());
    let dropped = whole.iter().filter(|&&l| l == null_label(k)).count() as f64 / n as f64;
    let se = (p * (1.0 - p) / n as f64).sqrt();
    assert!((dropped - p).abs() <= 4.0 * se, "{dropped}");
    let kept_right = whole
        .iter()
        .enumerate()
        .all(|(i, &l)| l == null_label(k) || l == (i % k) as u32);
    assert!(kept_right);
    let other_step = Dsm::drop_labels(&y, k, p, (3, 8, 0))?.to_vec1::<u32>()?;
    assert_ne!(whole, other_step);
    Ok(())
}
