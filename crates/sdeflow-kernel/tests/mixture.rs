//! Gaussian mixtures and their exact marginals (MATH.md §7): validation, closed-form moments,
//! score and divergence against finite differences, single-Gaussian closed forms, and exact
//! samples against their mean, covariance and component weights.

mod common;

use common::mean_var;
use sdeflow_kernel::{
    Error, Result,
    mixture::{Covariance, GaussianMixture, Marginal},
};

/// Three components in 2-D with isotropic, diagonal and full covariances.
fn three() -> Result<GaussianMixture> {
    GaussianMixture::new(
        vec![0.2, 0.5, 0.3],
        vec![vec![-1.0, 0.5], vec![0.3, -0.2], vec![1.5, 1.0]],
        vec![
            Covariance::Isotropic(0.4),
            Covariance::Diagonal(vec![0.3, 0.05]),
            Covariance::Full(vec![vec![0.2, 0.08], vec![0.08, 0.1]]),
        ],
    )
}

fn expect_invalid(r: Result<GaussianMixture>, field: &str, why: &str) {
    match r {
        Err(Error::InvalidParam {
            plugin,
            field: f,
            reason,
        }) => {
            assert_eq!(plugin, "gaussian mixture", "{why}");
            assert_eq!(f, field, "{why}: {reason}");
        }
        other => panic!("{why}: expected an invalid `{field}`, got {other:?}"),
    }
}

#[test]
fn new_rejects_invalid_mixtures() -> Result<()> {
    let iso = || Covariance::Isotropic(1.0);
    let m2 = || vec![0.0, 0.0];
    expect_invalid(
        GaussianMixture::new(vec![], vec![], vec![]),
        "weights",
        "no component",
    );
    expect_invalid(
        GaussianMixture::new(vec![1.5, -0.5], vec![m2(), m2()], vec![iso(), iso()]),
        "weights",
        "negative weight",
    );
    expect_invalid(
        GaussianMixture::new(vec![f64::NAN, 1.0], vec![m2(), m2()], vec![iso(), iso()]),
        "weights",
        "NaN weight",
    );
    expect_invalid(
        GaussianMixture::new(vec![0.5, 0.6], vec![m2(), m2()], vec![iso(), iso()]),
        "weights",
        "weights summing to 1.1",
    );
    expect_invalid(
        GaussianMixture::new(vec![0.5, 0.5], vec![m2()], vec![iso(), iso()]),
        "means",
        "one mean for two weights",
    );
    expect_invalid(
        GaussianMixture::new(vec![0.5, 0.5], vec![m2(), m2()], vec![iso()]),
        "means",
        "one covariance for two weights",
    );
    expect_invalid(
        GaussianMixture::new(vec![1.0], vec![vec![]], vec![iso()]),
        "means",
        "zero dimension",
    );
    expect_invalid(
        GaussianMixture::new(vec![0.5, 0.5], vec![m2(), vec![0.0; 3]], vec![iso(), iso()]),
        "means",
        "means of different dimensions",
    );
    expect_invalid(
        GaussianMixture::new(
            vec![1.0],
            vec![m2()],
            vec![Covariance::Diagonal(vec![1.0; 3])],
        ),
        "covariances",
        "diagonal of the wrong length",
    );
    expect_invalid(
        GaussianMixture::new(
            vec![1.0],
            vec![m2()],
            vec![Covariance::Full(vec![vec![1.0, 0.0]])],
        ),
        "covariances",
        "full covariance with one row",
    );
    for (cov, why) in [
        (
            Covariance::Full(vec![vec![1.0, 2.0], vec![2.0, 1.0]]),
            "indefinite",
        ),
        (
            Covariance::Full(vec![vec![1.0, 0.5], vec![0.4, 1.0]]),
            "not symmetric",
        ),
        (
            Covariance::Full(vec![vec![1.0, 1.0], vec![1.0, 1.0]]),
            "singular",
        ),
        (Covariance::Diagonal(vec![1.0, -0.1]), "negative variance"),
        (Covariance::Diagonal(vec![1.0, f64::NAN]), "NaN variance"),
        (Covariance::Isotropic(0.0), "zero std"),
    ] {
        expect_invalid(
            GaussianMixture::new(vec![1.0], vec![m2()], vec![cov]),
            "covariances",
            why,
        );
    }
    // A zero weight is allowed, and weights may be off by rounding.
    let ok = GaussianMixture::new(
        vec![0.1 + 0.2, 0.7, 0.0],
        vec![m2(), m2(), m2()],
        vec![iso(), iso(), iso()],
    )?;
    assert_eq!(ok.components(), 3);
    assert_eq!(ok.dim(), 2);
    Ok(())
}

/// Two 1-D components, w = (¼, ¾), m = (−1, 3), variances (1, 4): mean −¼ + 9/4 = 2, and
/// E x² = ¼ (1 + 1) + ¾ (4 + 9) = 10.25, so the variance is 10.25 − 4 = 6.25 (by hand).
#[test]
fn mean_and_covariance_by_hand() -> Result<()> {
    let g = GaussianMixture::new(
        vec![0.25, 0.75],
        vec![vec![-1.0], vec![3.0]],
        vec![Covariance::Isotropic(1.0), Covariance::Isotropic(2.0)],
    )?;
    assert!((g.mean()[0] - 2.0).abs() <= 1e-15);
    assert!((g.covariance()[0][0] - 6.25).abs() <= 1e-14);

    // 2-D: Σ w (S + m mᵀ) − m̄ m̄ᵀ written out for `three()`.
    let g = three()?;
    let w = [0.2, 0.5, 0.3];
    let m = [[-1.0, 0.5], [0.3, -0.2], [1.5, 1.0]];
    let s = [
        [[0.16, 0.0], [0.0, 0.16]],
        [[0.3, 0.0], [0.0, 0.05]],
        [[0.2, 0.08], [0.08, 0.1]],
    ];
    let mean = [0, 1].map(|j| (0..3).map(|k| w[k] * m[k][j]).sum::<f64>());
    let got = g.mean();
    for j in 0..2 {
        assert!((got[j] - mean[j]).abs() <= 1e-15);
    }
    let cov = g.covariance();
    for r in 0..2 {
        for c in 0..2 {
            let second: f64 = (0..3)
                .map(|k| w[k] * (s[k][r][c] + m[k][r] * m[k][c]))
                .sum();
            let want = second - mean[r] * mean[c];
            assert!((cov[r][c] - want).abs() <= 1e-14, "({r}, {c})");
        }
    }
    Ok(())
}

/// One isotropic Gaussian N(m, s² I): p_t = N(α m, (α² s² + σ²) I), so
/// ŝ = −(x − α m)/(α² s² + σ²), log p = −‖x − αm‖²/(2v) − (d/2) log(2π v) and
/// ∇·ŝ = −d/v with v = α² s² + σ².
#[test]
fn single_gaussian_closed_forms() -> Result<()> {
    let (m, s) = ([0.5, -2.0, 1.0], 0.3);
    let g = GaussianMixture::new(vec![1.0], vec![m.to_vec()], vec![Covariance::Isotropic(s)])?;
    for (alpha, sigma) in [(1.0, 0.0), (0.9, 0.2), (0.2, 0.98), (1.0, 5.0)] {
        let marg = g.marginal(alpha, sigma)?;
        assert_eq!(marg.dim(), 3);
        let v = alpha * alpha * s * s + sigma * sigma;
        for x in [[0.0, 0.0, 0.0], [1.0, -1.0, 2.5], [-3.0, 0.1, 0.2]] {
            let e = marg.eval_row(&x, true);
            let mut sq = 0.0;
            for j in 0..3 {
                let diff = x[j] - alpha * m[j];
                sq += diff * diff;
                let want = -diff / v;
                assert!((e.score[j] - want).abs() <= 1e-12 * (1.0 + want.abs()));
            }
            let lp = -sq / (2.0 * v) - 1.5 * (2.0 * std::f64::consts::PI * v).ln();
            assert!(
                (e.log_prob - lp).abs() <= 1e-12 * (1.0 + lp.abs()),
                "log p at α = {alpha}"
            );
            assert!(
                (e.divergence + 3.0 / v).abs() <= 1e-10 * (3.0 / v),
                "div at α = {alpha}"
            );
        }
    }
    Ok(())
}

/// A full 2-D covariance: ŝ = −C⁻¹(x − αm) with C = α² S + σ² I inverted by hand
/// (C⁻¹ = [[d, −b], [−b, a]]/(ad − b²)).
#[test]
fn full_covariance_score_by_hand() -> Result<()> {
    let (m, s) = ([1.0, -0.5], [[0.5, 0.2], [0.2, 0.3]]);
    let g = GaussianMixture::new(
        vec![1.0],
        vec![m.to_vec()],
        vec![Covariance::Full(vec![s[0].to_vec(), s[1].to_vec()])],
    )?;
    let (alpha, sigma) = (0.8, 0.6);
    let marg = g.marginal(alpha, sigma)?;
    let a = alpha * alpha * s[0][0] + sigma * sigma;
    let b = alpha * alpha * s[0][1];
    let d = alpha * alpha * s[1][1] + sigma * sigma;
    let det = a * d - b * b;
    for x in [[0.0, 0.0], [2.0, 1.0], [-1.0, 3.0]] {
        let (u, w) = (x[0] - alpha * m[0], x[1] - alpha * m[1]);
        let want = [-(d * u - b * w) / det, -(-b * u + a * w) / det];
        let e = marg.eval_row(&x, true);
        for (got, want) in e.score.iter().zip(want) {
            assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()));
        }
        // log N = −½ [u w] C⁻¹ [u w]ᵀ − ½ log det C − log 2π.
        let quad = (d * u * u - 2.0 * b * u * w + a * w * w) / det;
        let lp = -0.5 * quad - 0.5 * det.ln() - (2.0 * std::f64::consts::PI).ln();
        assert!((e.log_prob - lp).abs() <= 1e-12 * (1.0 + lp.abs()));
        assert!((e.divergence + (a + d) / det).abs() <= 1e-12 * (a + d) / det);
    }
    Ok(())
}

/// Central differences, f64, h = 1e-5: truncation O(h²) and rounding O(ε/h) leave ~1e-9;
/// 1e-6 (relative to the value, absolute below 1) is the bar.
fn check_against_finite_differences(marg: &Marginal, x: &[f64]) {
    let d = x.len();
    let h = 1e-5;
    let e = marg.eval_row(x, true);
    let mut div_fd = 0.0;
    for j in 0..d {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[j] += h;
        xm[j] -= h;
        let (ep, em) = (marg.eval_row(&xp, false), marg.eval_row(&xm, false));
        let grad = (ep.log_prob - em.log_prob) / (2.0 * h);
        assert!(
            (e.score[j] - grad).abs() <= 1e-6 * (1.0 + grad.abs()),
            "x = {x:?}, ∂_{j} log p: score {} vs {grad}",
            e.score[j]
        );
        div_fd += (ep.score[j] - em.score[j]) / (2.0 * h);
    }
    assert!(
        (e.divergence - div_fd).abs() <= 1e-6 * (1.0 + div_fd.abs()),
        "x = {x:?}: divergence {} vs {div_fd}",
        e.divergence
    );
}

#[test]
fn score_and_divergence_match_finite_differences() -> Result<()> {
    let g = three()?;
    // A diagonal-only mixture takes the diagonal fast path.
    let diag = GaussianMixture::new(
        vec![0.6, 0.4],
        vec![vec![1.0, 0.0, -1.0], vec![-1.0, 0.5, 0.0]],
        vec![
            Covariance::Diagonal(vec![0.2, 0.4, 0.1]),
            Covariance::Isotropic(0.5),
        ],
    )?;
    for (alpha, sigma) in [(1.0, 0.05), (0.9, 0.3), (0.5, 0.8), (1.0, 3.0)] {
        let m = g.marginal(alpha, sigma)?;
        for x in [
            [0.0, 0.0],
            [-1.0, 0.5],
            [1.0, 1.0],
            [0.2, -0.9],
            [3.0, -2.0],
        ] {
            check_against_finite_differences(&m, &x);
        }
        let m = diag.marginal(alpha, sigma)?;
        for x in [[0.0, 0.0, 0.0], [0.9, 0.1, -0.8], [-2.0, 1.0, 1.0]] {
            check_against_finite_differences(&m, &x);
        }
    }
    Ok(())
}

/// The batched `score` and `eval` agree with `eval_row` row by row, on both sides of the
/// parallel threshold.
#[test]
fn batched_evaluation_matches_rows() -> Result<()> {
    let m = three()?.marginal(0.7, 0.5)?;
    for n in [5usize, 3000] {
        let x: Vec<f64> = (0..2 * n).map(|k| (0.37 * k as f64).sin() * 2.0).collect();
        let scores = m.score(&x);
        let evals = m.eval(&x);
        assert_eq!(scores.len(), 2 * n);
        assert_eq!(evals.len(), n);
        for i in 0..n {
            let r = m.eval_row(&x[2 * i..2 * i + 2], true);
            assert_eq!(&scores[2 * i..2 * i + 2], r.score.as_slice());
            assert_eq!(evals[i].log_prob, r.log_prob);
            assert_eq!(evals[i].divergence, r.divergence);
        }
    }
    Ok(())
}

#[test]
fn singular_marginal_is_an_error() -> Result<()> {
    let g = three()?;
    assert!(matches!(g.marginal(0.0, 0.0), Err(Error::Msg(_))));
    // α = 0 with σ > 0 is the prior: N(0, σ² I) whatever the data.
    let prior = g.marginal(0.0, 2.0)?;
    let e = prior.eval_row(&[1.0, -1.0], true);
    assert!((e.score[0] + 0.25).abs() <= 1e-15 && (e.score[1] - 0.25).abs() <= 1e-15);
    Ok(())
}

/// n = 100,000 exact samples of p_t: the mean of each coordinate within 5 standard errors
/// √(C_jj/n) of α m̄, each covariance entry within 5 standard errors of α² Σ + σ² I (the SE
/// of a sample covariance estimated from the fourth moments of the same sample).
#[test]
fn exact_samples_have_the_marginal_mean_and_covariance() -> Result<()> {
    let g = three()?;
    let (alpha, sigma) = (0.8, 0.3);
    let n = 100_000usize;
    let x = g.marginal(alpha, sigma)?.sample(2024, 0, n);
    let mean = g.mean();
    let cov = g.covariance();
    let want_cov =
        |r: usize, c: usize| alpha * alpha * cov[r][c] + if r == c { sigma * sigma } else { 0.0 };
    let nf = n as f64;
    let cols: Vec<Vec<f64>> = (0..2)
        .map(|j| x.iter().skip(j).step_by(2).copied().collect())
        .collect();
    let means: Vec<f64> = cols.iter().map(|c| mean_var(c).0).collect();
    for j in 0..2 {
        let want = alpha * mean[j];
        let se = (want_cov(j, j) / nf).sqrt();
        assert!(
            (means[j] - want).abs() < 5.0 * se,
            "mean {j}: {} vs {want}",
            means[j]
        );
    }
    for r in 0..2 {
        for c in 0..2 {
            let prods: Vec<f64> = cols[r]
                .iter()
                .zip(&cols[c])
                .map(|(a, b)| (a - means[r]) * (b - means[c]))
                .collect();
            let (est, var_of_prod) = mean_var(&prods);
            let se = (var_of_prod / nf).sqrt();
            let want = want_cov(r, c);
            assert!(
                (est - want).abs() < 5.0 * se,
                "cov ({r}, {c}): {est} vs {want} (se {se})"
            );
        }
    }
    Ok(())
}

/// Well-separated components (means 10 apart, std 0.5): the share of samples nearest each
/// mean is its weight within 5 binomial standard errors.
#[test]
fn exact_samples_choose_components_by_weight() -> Result<()> {
    let w = [0.2, 0.5, 0.3];
    let g = GaussianMixture::new(
        w.to_vec(),
        vec![vec![-10.0, 0.0], vec![0.0, 0.0], vec![10.0, 0.0]],
        vec![Covariance::Isotropic(0.5); 3],
    )?;
    let n = 50_000usize;
    let x = g.marginal(1.0, 0.0)?.sample(5, 0, n);
    let mut counts = [0usize; 3];
    for row in x.chunks(2) {
        counts[((row[0] + 15.0) / 10.0).floor().clamp(0.0, 2.0) as usize] += 1;
    }
    for k in 0..3 {
        let share = counts[k] as f64 / n as f64;
        let se = (w[k] * (1.0 - w[k]) / n as f64).sqrt();
        assert!(
            (share - w[k]).abs() < 5.0 * se,
            "component {k}: {share} vs {}",
            w[k]
        );
    }
    // A zero-weight component is never drawn.
    let g = GaussianMixture::new(
        vec![0.0, 1.0, 0.0],
        vec![vec![-10.0], vec![0.0], vec![10.0]],
        vec![Covariance::Isotropic(0.5); 3],
    )?;
    let x = g.marginal(1.0, 0.0)?.sample(6, 0, 10_000);
    assert!(x.iter().all(|v| v.abs() < 5.0));
    Ok(())
}

/// Samples are a pure function of (seed, index): shards match one big draw; seeds differ.
#[test]
fn exact_samples_are_keyed_by_seed_and_index() -> Result<()> {
    let m = three()?.marginal(0.9, 0.1)?;
    let all = m.sample(1, 0, 1000);
    let mut parts = m.sample(1, 0, 123);
    parts.extend(m.sample(1, 123, 700));
    parts.extend(m.sample(1, 823, 177));
    assert_eq!(all, parts);
    let other = m.sample(2, 0, 1000);
    assert!(all.iter().zip(&other).all(|(a, b)| a != b));
    Ok(())
}
