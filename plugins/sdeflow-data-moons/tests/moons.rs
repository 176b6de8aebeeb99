//! The `moons` data: rows against the exact moments, noise-free rows on their labelled half
//! circle, parameter validation and the registration.

use std::sync::Arc;

use sdeflow_data_moons::{Moons, Params};
use sdeflow_kernel::{
    Data, DataSource, Error, Registry, Result, Split, testing::moments_deviation,
};

/// Rows of the moment check (as the conformance suite).
const ROWS: usize = 20_000;

/// The largest deviation of the mean and covariance of `ROWS` train rows of `data` from its
/// `moments()`, in standard errors (estimated from the rows: sd of x_j, or of the centred
/// product (x_j − μ_j)(x_k − μ_k), over √n).
fn worst_standard_error(data: &Data, seed: u64) -> Result<f64> {
    let law = data.source().moments().expect("moons declares its moments");
    let rows = data.batch(Split::Train, seed, 0, ROWS)?.values;
    Ok(moments_deviation(&rows, data.dim(), &law).0)
}

fn data(noise: f64) -> Result<Data> {
    Data::new(Arc::new(Moons::new(Params { noise })?))
}

#[test]
fn rows_match_the_exact_moments() -> Result<()> {
    for (noise, seed) in [(0.05, 1), (0.0, 2), (0.5, 3)] {
        let worst = worst_standard_error(&data(noise)?, seed)?;
        assert!(worst <= 4.0, "noise {noise}: {worst} standard errors");
    }
    Ok(())
}

/// Closed form: mean (½, ¼), Var x₁ = ¾ + s², Var x₂ = 9/16 − 1/π + s², Cov = ⅛ − 1/π, from
/// E cos t = 0, E sin t = 2/π, E cos² t = E sin² t = ½, E sin t cos t = 0 on t ~ U[0, π].
#[test]
fn moments_are_the_closed_form() -> Result<()> {
    let m = Moons::new(Params { noise: 0.2 })?
        .moments()
        .expect("moments");
    let pi = std::f64::consts::PI;
    // Second raw moments per moon, averaged: E x₁² = (½ + 3/2)/2, E x₂² = (½ + ¾ − 2/π)/2,
    // E x₁x₂ = (0 + ½ − 2/π)/2.
    let want_var = [1.0 - 0.25 + 0.04, (1.25 - 2.0 / pi) / 2.0 - 0.0625 + 0.04];
    let want_cov = (0.5 - 2.0 / pi) / 2.0 - 0.125;
    assert_eq!(m.mean, vec![0.5, 0.25]);
    assert!((m.covariance[0][0] - want_var[0]).abs() < 1e-15);
    assert!((m.covariance[1][1] - want_var[1]).abs() < 1e-15);
    assert!((m.covariance[0][1] - want_cov).abs() < 1e-15);
    assert_eq!(m.covariance[0][1], m.covariance[1][0]);
    Ok(())
}

#[test]
fn noise_free_rows_lie_on_their_labelled_half_circle() -> Result<()> {
    let data = data(0.0)?;
    let batch = data.batch(Split::Heldout, 7, 0, 2_000)?;
    let labels = batch.labels.expect("moons rows carry labels");
    let (lo, hi) = data.source().range().expect("noise 0 has a range");
    let mut count = [0usize; 2];
    for (x, &c) in batch.values.chunks(2).zip(&labels) {
        let (cx, cy, above) = match c {
            0 => (0.0, 0.0, true),
            1 => (1.0, 0.5, false),
            _ => panic!("label {c}"),
        };
        count[c as usize] += 1;
        let r = (x[0] - cx).hypot(x[1] - cy);
        assert!((r - 1.0).abs() < 1e-12, "row {x:?} label {c}: radius {r}");
        assert_eq!(x[1] >= cy, above, "row {x:?} label {c}: wrong half");
        assert!(x.iter().all(|v| (lo..=hi).contains(v)), "{x:?}");
    }
    // Each label has probability ½: 1,000 ± 22 (sd) of 2,000.
    assert!(count.iter().all(|&k| k.abs_diff(1000) < 150), "{count:?}");
    Ok(())
}

#[test]
fn stored_rows_are_an_error() -> Result<()> {
    let moons = Moons::new(Params::default())?;
    let mut out = [0.0; 2];
    assert!(matches!(
        moons.row(sdeflow_kernel::data::RowRef::Stored(0), &mut out),
        Err(Error::Msg(_))
    ));
    Ok(())
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    for noise in [-0.1, f64::NAN, f64::INFINITY] {
        match Moons::new(Params { noise }) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("moons", "noise"))
            }
            other => panic!("noise {noise}: {other:?}"),
        }
    }
    let msg = Moons::new(Params { noise: -1.0 }).unwrap_err().to_string();
    assert!(
        msg.starts_with("moons: invalid `noise`") && !msg.ends_with('.'),
        "{msg}"
    );
    Ok(())
}

#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let data = reg.data("moons", "()")?;
    assert_eq!(
        (data.sample_shape(), data.source().classes()),
        (vec![2], Some(2))
    );
    assert!(data.source().range().is_none());
    assert!(
        reg.data("moons", "(noise: 0.0)")?
            .source()
            .range()
            .is_some()
    );
    assert!(matches!(
        reg.data("moons", "(nois: 0.1)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.data("moons", "(noise: -1.0)").is_err());
    Ok(())
}
