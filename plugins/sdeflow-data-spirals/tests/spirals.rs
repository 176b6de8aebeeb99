//! The `spirals` data: rows against the moments, the closed-form moments against an
//! independent quadrature, noise-free rows on their labelled arm, parameter validation and the
//! registration.

use std::{f64::consts::TAU, sync::Arc};

use sdeflow_data_spirals::{Params, Spirals};
use sdeflow_kernel::{
    Data, DataSource, Error, Registry, Result, Split, data::RowRef, testing::moments_deviation,
};

/// Rows of the moment check (as the conformance suite).
const ROWS: usize = 20_000;

/// The largest deviation of the mean and covariance of `ROWS` train rows of `data` from its
/// `moments()`, in standard errors (estimated from the rows: sd of x_j, or of the centred
/// product (x_j − μ_j)(x_k − μ_k), over √n).
fn worst_standard_error(data: &Data, seed: u64) -> Result<f64> {
    let law = data
        .source()
        .moments()
        .expect("spirals declares its moments");
    let rows = data.batch(Split::Train, seed, 0, ROWS)?.values;
    Ok(moments_deviation(&rows, data.dim(), &law).0)
}

fn spirals(arms: u32, turns: f64, scale: f64, noise: f64) -> Result<Spirals> {
    Spirals::new(Params {
        arms,
        turns,
        scale,
        noise,
    })
}

#[test]
fn rows_match_the_moments() -> Result<()> {
    let cases = [
        (2, 1.5, 3.0, 0.1, 1),
        (1, 1.5, 3.0, 0.0, 2),
        (3, 0.7, 1.0, 0.5, 3),
        (5, 3.0, 2.0, 0.0, 4),
    ];
    for (arms, turns, scale, noise, seed) in cases {
        let data = Data::new(Arc::new(spirals(arms, turns, scale, noise)?))?;
        let worst = worst_standard_error(&data, seed)?;
        assert!(
            worst <= 4.0,
            "{arms} arms, {turns} turns: {worst} standard errors"
        );
    }
    Ok(())
}

/// ∫₀ᵀ f by composite Simpson with `n` (even) intervals, for each of f's K components, each
/// summed with Neumaier's compensation (so rounding stays near ε, not n ε).
fn simpson<const K: usize>(t: f64, n: usize, f: impl Fn(f64) -> [f64; K]) -> [f64; K] {
    let h = t / n as f64;
    let (mut sum, mut carry) = ([0.0; K], [0.0; K]);
    for i in 0..=n {
        // The weights 1, 4, 2, 4, …, 2, 4, 1.
        let w = if i == 0 || i == n {
            1.0
        } else {
            [2.0, 4.0][i % 2]
        };
        for (k, v) in f(h * i as f64).into_iter().enumerate() {
            let (s, term) = (sum[k], w * v);
            sum[k] = s + term;
            carry[k] += if s.abs() >= term.abs() {
                (s - sum[k]) + term
            } else {
                (term - sum[k]) + s
            };
        }
    }
    std::array::from_fn(|k| (sum[k] + carry[k]) * h / 3.0)
}

/// One arm's E b and E b bᵀ for b = (−θ cos θ, θ sin θ), θ = T √u with density 2θ/T² on
/// [0, T], by composite Simpson of E g = (2/T²) ∫₀ᵀ θ g(θ) dθ with n = max(1024, 2⌈512 T⌉)
/// intervals, so h = T/n ≤ min(1, T) 2⁻¹⁰ (Burden & Faires, "Numerical Analysis", 9th ed.,
/// §4.4). Its error is at most h⁴ max|(θ g)⁗| / (90 T), with |(θ g)⁗| ≤ θ² + 8θ + 12 for the
/// first moments and ≤ 8θ³ + 48θ² + 72θ + 24 for the second (Leibniz on θ³ (1 ± cos 2θ)/2 and
/// θ³ sin 2θ / 2): relative to the law's size E|b|² = T²/2, at most
/// h⁴ (8 + 48/T + 72/T² + 24/T³)/45 ≤ 152 · 2⁻⁴⁰/45 < 3.1e-12, and less for E b against T/√2.
fn one_arm(t: f64) -> ([f64; 2], [[f64; 2]; 2]) {
    let n = (2 * (512.0 * t).ceil() as usize).max(1024);
    let [ex, ey, exx, eyy, exy] = simpson(t, n, |theta| {
        let (x, y) = (-theta * theta.cos(), theta * theta.sin());
        [x, y, x * x, y * y, x * y].map(|g| 2.0 * theta * g / (t * t))
    });
    ([ex, ey], [[exx, exy], [exy, eyy]])
}

/// `moments()` against the quadrature, averaged over the arms by summing the rotations
/// explicitly: E x = (1/A) Σ R_k m, E x xᵀ = (1/A) Σ R_k S R_kᵀ; within 1e-10 relative to the
/// law's size (E|x|² = T²/2 for the covariance, its root for the mean, over scale and scale²).
/// The turns span the Taylor (2T ≤ 2, T ≤ 2) and closed-form branches, and past 100.
#[test]
fn moments_match_a_quadrature() -> Result<()> {
    for (arms, turns, scale, noise) in [
        (1, 1.5, 1.0, 0.0),
        (2, 1.5, 3.0, 0.1),
        (3, 0.2, 1.0, 0.0),
        (7, 4.0, 2.0, 0.3),
        (1, 1e-4, 1.0, 0.0),
        (2, 0.05, 0.5, 0.2),
        (1, 0.3, 1.0, 0.0),
        (2, 150.0, 3.0, 0.1),
    ] {
        let t = TAU * turns;
        let (m, s) = one_arm(t);
        let (mut mean, mut second) = ([0.0; 2], [[0.0; 2]; 2]);
        for k in 0..arms {
            let (sn, cs) = (TAU * f64::from(k) / f64::from(arms)).sin_cos();
            let r = [[cs, -sn], [sn, cs]];
            for j in 0..2 {
                mean[j] += (r[j][0] * m[0] + r[j][1] * m[1]) / f64::from(arms);
                for l in 0..2 {
                    let rsr: f64 = (0..2)
                        .flat_map(|a| (0..2).map(move |b| (a, b)))
                        .map(|(a, b)| r[j][a] * s[a][b] * r[l][b])
                        .sum();
                    second[j][l] += rsr / f64::from(arms);
                }
            }
        }
        let got = spirals(arms, turns, scale, noise)?
            .moments()
            .expect("moments");
        let size = t * t / 2.0;
        let (tol_mean, tol_cov) = (1e-10 * size.sqrt() / scale, 1e-10 * size / (scale * scale));
        for j in 0..2 {
            let err = (got.mean[j] - mean[j] / scale).abs();
            assert!(
                err <= tol_mean,
                "{arms} arms, {turns} turns, mean[{j}]: {err:e}"
            );
            for l in 0..2 {
                let want = (second[j][l] - mean[j] * mean[l]) / (scale * scale)
                    + if j == l { noise * noise } else { 0.0 };
                let err = (got.covariance[j][l] - want).abs();
                assert!(
                    err <= tol_cov,
                    "{arms} arms, {turns} turns, cov[{j}][{l}]: {err:e}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn noise_free_rows_lie_on_their_labelled_arm() -> Result<()> {
    for arms in [1, 2, 3, 6] {
        let (turns, scale) = (1.5, 3.0);
        let data = Data::new(Arc::new(spirals(arms, turns, scale, 0.0)?))?;
        let (lo, hi) = data.source().range().expect("noise 0 has a range");
        assert_eq!((lo, hi), (-TAU * turns / scale, TAU * turns / scale));
        let batch = data.batch(Split::Heldout, 7, 0, 2_000)?;
        let labels = batch.labels.expect("spirals rows carry labels");
        let mut count = vec![0usize; arms as usize];
        for (x, &k) in batch.values.chunks(2).zip(&labels) {
            assert!(k < arms, "label {k}");
            count[k as usize] += 1;
            // Rotate back by the label's angle: the point must be (−θ cos θ, θ sin θ)/scale
            // with θ = scale · radius.
            let (sn, cs) = (TAU * f64::from(k) / f64::from(arms)).sin_cos();
            let (a, b) = (cs * x[0] + sn * x[1], -sn * x[0] + cs * x[1]);
            let theta = x[0].hypot(x[1]) * scale;
            assert!(theta <= TAU * turns + 1e-12, "{x:?}");
            assert!(
                (a * scale + theta * theta.cos()).abs() < 1e-9,
                "{x:?} label {k}"
            );
            assert!(
                (b * scale - theta * theta.sin()).abs() < 1e-9,
                "{x:?} label {k}"
            );
            assert!(x.iter().all(|v| (lo..=hi).contains(v)), "{x:?}");
        }
        // Each arm has probability 1/A of 2,000 rows (sd below 22).
        let want = 2000 / arms as usize;
        assert!(count.iter().all(|&c| c.abs_diff(want) < 150), "{count:?}");
    }
    assert!(spirals(2, 1.5, 3.0, 0.1)?.range().is_none());
    Ok(())
}

#[test]
fn stored_rows_are_an_error() -> Result<()> {
    let mut out = [0.0; 2];
    let got = Spirals::new(Params::default())?.row(RowRef::Stored(0), &mut out);
    assert!(matches!(got, Err(Error::Msg(_))), "{got:?}");
    Ok(())
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let cases = [
        (0, 1.5, 3.0, 0.1, "arms"),
        (2, 0.0, 3.0, 0.1, "turns"),
        (2, -1.0, 3.0, 0.1, "turns"),
        (2, nan, 3.0, 0.1, "turns"),
        (2, inf, 3.0, 0.1, "turns"),
        (2, 1.5, 0.0, 0.1, "scale"),
        (2, 1.5, -3.0, 0.1, "scale"),
        (2, 1.5, nan, 0.1, "scale"),
        (2, 1.5, inf, 0.1, "scale"),
        (2, 1.5, 3.0, -0.1, "noise"),
        (2, 1.5, 3.0, nan, "noise"),
        (2, 1.5, 3.0, inf, "noise"),
    ];
    for (arms, turns, scale, noise, want) in cases {
        match spirals(arms, turns, scale, noise) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("spirals", want))
            }
            other => panic!("{arms} {turns} {scale} {noise}: {other:?}"),
        }
    }
    let msg = spirals(0, 1.5, 3.0, 0.1).unwrap_err().to_string();
    assert!(
        msg.starts_with("spirals: invalid `arms`") && !msg.ends_with('.'),
        "{msg}"
    );
    Ok(())
}

#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let data = reg.data("spirals", "()")?;
    assert_eq!(
        (data.sample_shape(), data.source().classes()),
        (vec![2], Some(2))
    );
    assert!(data.source().range().is_none());
    let data = reg.data("spirals", "(arms: 4, noise: 0.0)")?;
    assert_eq!(data.source().classes(), Some(4));
    assert!(data.source().range().is_some());
    assert!(matches!(
        reg.data("spirals", "(arm: 4)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.data("spirals", "(arms: 0)").is_err());
    Ok(())
}
