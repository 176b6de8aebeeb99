//! The `swiss_roll` data: rows against the moments, the closed-form moments against an
//! independent quadrature, noise-free rows on the roll, parameter validation and the
//! registration.

use std::{f64::consts::PI, sync::Arc};

use sdeflow_data_swiss_roll::{Params, SwissRoll, T_MAX, T_MIN};
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
        .expect("swiss_roll declares its moments");
    let rows = data.batch(Split::Train, seed, 0, ROWS)?.values;
    Ok(moments_deviation(&rows, data.dim(), &law).0)
}

fn roll(scale: f64, noise: f64) -> Result<SwissRoll> {
    SwissRoll::new(Params { scale, noise })
}

#[test]
fn rows_match_the_moments() -> Result<()> {
    for (scale, noise, seed) in [(5.0, 0.0, 1), (5.0, 0.3, 2), (1.0, 2.0, 3)] {
        let data = Data::new(Arc::new(roll(scale, noise)?))?;
        let worst = worst_standard_error(&data, seed)?;
        assert!(
            worst <= 4.0,
            "scale {scale} noise {noise}: {worst} standard errors"
        );
    }
    Ok(())
}

/// ∫ₐᵇ f by composite Simpson with `n` (even) intervals, for each of f's K components.
fn simpson<const K: usize>(a: f64, b: f64, n: usize, f: impl Fn(f64) -> [f64; K]) -> [f64; K] {
    let h = (b - a) / n as f64;
    let mut sum = [0.0; K];
    for i in 0..=n {
        // The weights 1, 4, 2, 4, …, 2, 4, 1.
        let w = if i == 0 || i == n {
            1.0
        } else {
            [2.0, 4.0][i % 2]
        };
        for (acc, v) in sum.iter_mut().zip(f(a + h * i as f64)) {
            *acc += w * v;
        }
    }
    sum.map(|acc| acc * h / 3.0)
}

/// `moments()` against E g(t) = (1/3π) ∫ g(t) dt over [1.5π, 4.5π] for the five moments
/// g ∈ {t cos t, t sin t, t² cos² t, t² sin² t, t² sin t cos t}, by composite Simpson with 2¹⁴
/// intervals (Burden & Faires, "Numerical Analysis", 9th ed., §4.4): the error of E g is at most
/// h⁴ max|g⁗| / 180 with h = 3π/2¹⁴ < 5.8e-4 and max|g⁗| ≤ 8t² + 32t + 24 < 2,100 on the
/// interval (t + 4 for the first moments): below 1.3e-12 (1.2e-14 for E x, E y), under 1e-12
/// relative to every entry (the smallest E y ≈ 0.21 and Cov xy ≈ 4.3), so 1e-10 relative
/// leaves room for rounding.
#[test]
fn moments_match_a_quadrature() -> Result<()> {
    let (a, b) = (1.5 * PI, 4.5 * PI);
    let [ex, ey, exx, eyy, exy] = simpson(a, b, 1 << 14, |t| {
        let (x, y) = (t * t.cos(), t * t.sin());
        [x, y, x * x, y * y, x * y].map(|g| g / (b - a))
    });
    let want_cov = [
        [exx - ex * ex, exy - ex * ey],
        [exy - ex * ey, eyy - ey * ey],
    ];
    for (scale, noise) in [(1.0, 0.0), (5.0, 0.5), (0.1, 0.0), (2.0, 3.0)] {
        let m = roll(scale, noise)?.moments().expect("moments");
        let close = |got: f64, want: f64| (got - want).abs() <= 1e-10 * want.abs();
        for (j, want) in [ex, ey].into_iter().enumerate() {
            let want = want / scale;
            assert!(
                close(m.mean[j], want),
                "scale {scale}: mean[{j}] {m:?} vs {want}"
            );
        }
        for (j, row) in want_cov.iter().enumerate() {
            for (k, want) in row.iter().enumerate() {
                let diag = if j == k { noise * noise } else { 0.0 };
                let want = want / (scale * scale) + diag;
                let got = m.covariance[j][k];
                assert!(
                    close(got, want),
                    "scale {scale}: cov[{j}][{k}] {got} vs {want}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn noise_free_rows_lie_on_the_roll() -> Result<()> {
    let scale = 5.0;
    let data = Data::new(Arc::new(roll(scale, 0.0)?))?;
    let (lo, hi) = data.source().range().expect("noise 0 has a range");
    assert_eq!((lo, hi), (-4.5 * PI / scale, 4.5 * PI / scale));
    let batch = data.batch(Split::Heldout, 7, 0, 2_000)?;
    assert!(batch.labels.is_none());
    for x in batch.values.chunks(2) {
        // The radius times scale is t, and the direction is (cos t, sin t).
        let t = x[0].hypot(x[1]) * scale;
        assert!(
            (T_MIN - 1e-12..=T_MAX + 1e-12).contains(&t),
            "{x:?}: t = {t}"
        );
        assert!((x[0] * scale - t * t.cos()).abs() < 1e-9, "{x:?}: t = {t}");
        assert!((x[1] * scale - t * t.sin()).abs() < 1e-9, "{x:?}: t = {t}");
        assert!(x.iter().all(|v| (lo..=hi).contains(v)), "{x:?}");
    }
    assert!(roll(scale, 0.1)?.range().is_none());
    Ok(())
}

#[test]
fn stored_rows_are_an_error() -> Result<()> {
    let mut out = [0.0; 2];
    let got = roll(5.0, 0.0)?.row(RowRef::Stored(0), &mut out);
    assert!(matches!(got, Err(Error::Msg(_))), "{got:?}");
    Ok(())
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let cases = [
        (0.0, 0.0, "scale"),
        (-1.0, 0.0, "scale"),
        (nan, 0.0, "scale"),
        (inf, 0.0, "scale"),
        (5.0, -0.1, "noise"),
        (5.0, nan, "noise"),
        (5.0, inf, "noise"),
    ];
    for (scale, noise, want) in cases {
        match roll(scale, noise) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("swiss_roll", want))
            }
            other => panic!("scale {scale} noise {noise}: {other:?}"),
        }
    }
    let msg = roll(0.0, 0.0).unwrap_err().to_string();
    assert!(
        msg.starts_with("swiss_roll: invalid `scale`") && !msg.ends_with('.'),
        "{msg}"
    );
    Ok(())
}

#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let data = reg.data("swiss_roll", "()")?;
    assert_eq!(
        (data.sample_shape(), data.source().classes()),
        (vec![2], None)
    );
    // Default scale 5, noise 0.05: no range; noise 0 bounds the roll by T_MAX / scale.
    assert_eq!(data.source().range(), None);
    assert_eq!(
        reg.data("swiss_roll", "(noise: 0.0)")?.source().range(),
        Some((-T_MAX / 5.0, T_MAX / 5.0))
    );
    assert!(matches!(
        reg.data("swiss_roll", "(scal: 1.0)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.data("swiss_roll", "(scale: 0.0)").is_err());
    Ok(())
}
