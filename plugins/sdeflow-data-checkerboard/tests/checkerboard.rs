//! The `checkerboard` data: rows against the exact moments, the moments against the board's
//! cells enumerated one by one, every point in a filled cell, parameter validation and the
//! registration.

use std::sync::Arc;

use sdeflow_data_checkerboard::{Checkerboard, Params};
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
        .expect("checkerboard declares its moments");
    let rows = data.batch(Split::Train, seed, 0, ROWS)?.values;
    Ok(moments_deviation(&rows, data.dim(), &law).0)
}

fn board(cells: u32, half_width: f64) -> Result<Checkerboard> {
    Checkerboard::new(Params { cells, half_width })
}

#[test]
fn rows_match_the_exact_moments() -> Result<()> {
    for (cells, half_width, seed) in [(4, 4.0, 1), (2, 1.0, 2), (3, 1.5, 3), (7, 2.0, 4)] {
        let data = Data::new(Arc::new(board(cells, half_width)?))?;
        let worst = worst_standard_error(&data, seed)?;
        assert!(worst <= 4.0, "{cells} cells: {worst} standard errors");
    }
    Ok(())
}

/// The defaults' closed form (4 × 4 on [−4, 4]², w = 2): each column holds two filled cells,
/// so each coordinate is uniform on [−4, 4] (variance 8²/12 = 16/3), and the centres'
/// Σ_{i+j even} a_i a_j = ½ (Σ (−1)^i a_i)² = ½ · 4² over 8 cells gives Cov = 1 = w²/4.
#[test]
fn default_moments_are_the_closed_form() -> Result<()> {
    let m = Checkerboard::new(Params::default())?
        .moments()
        .expect("moments");
    assert!(m.mean.iter().all(|v| v.abs() < 1e-15), "{m:?}");
    assert!((m.covariance[0][0] - 16.0 / 3.0).abs() < 1e-13, "{m:?}");
    assert!((m.covariance[1][1] - 16.0 / 3.0).abs() < 1e-13, "{m:?}");
    assert!((m.covariance[0][1] - 1.0).abs() < 1e-13, "{m:?}");
    Ok(())
}

/// The moments against a direct enumeration of the filled cells (i + j even): the centres'
/// mean and covariance, plus w²/12 on the diagonal for the uniform offset in a cell.
#[test]
fn moments_match_the_enumerated_cells() -> Result<()> {
    for cells in 2..=9u32 {
        let h = 1.7;
        let b = board(cells, h)?;
        let w = 2.0 * h / f64::from(cells);
        let centres: Vec<[f64; 2]> = (0..cells)
            .flat_map(|i| (0..cells).map(move |j| (i, j)))
            .filter(|(i, j)| (i + j) % 2 == 0)
            .map(|(i, j)| [(f64::from(i) + 0.5) * w - h, (f64::from(j) + 0.5) * w - h])
            .collect();
        let f = centres.len() as f64;
        assert_eq!(centres.len() as u64, b.filled());
        let mean = [0, 1].map(|d| centres.iter().map(|c| c[d]).sum::<f64>() / f);
        let m = b.moments().expect("moments");
        for d in 0..2 {
            assert!((m.mean[d] - mean[d]).abs() < 1e-13, "{cells}: {m:?}");
            for e in 0..2 {
                let cov = centres
                    .iter()
                    .map(|c| (c[d] - mean[d]) * (c[e] - mean[e]))
                    .sum::<f64>()
                    / f
                    + if d == e { w * w / 12.0 } else { 0.0 };
                assert!((m.covariance[d][e] - cov).abs() < 1e-13, "{cells}: {m:?}");
            }
        }
        // The numbering of the filled cells visits each once.
        let mut seen: Vec<(u64, u64)> = (0..b.filled()).map(|k| b.filled_cell(k)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len() as u64, b.filled(), "{cells}");
        assert!(
            seen.iter()
                .all(|(i, j)| (i + j) % 2 == 0 && *i < u64::from(cells) && *j < u64::from(cells))
        );
    }
    Ok(())
}

#[test]
fn every_point_lies_in_a_filled_cell() -> Result<()> {
    for (cells, h) in [(4, 4.0), (5, 1.0)] {
        let data = Data::new(Arc::new(board(cells, h)?))?;
        let batch = data.batch(Split::Heldout, 7, 0, 4_000)?;
        assert!(batch.labels.is_none());
        let w = 2.0 * h / f64::from(cells);
        let mut hits = vec![vec![0usize; cells as usize]; cells as usize];
        for x in batch.values.chunks(2) {
            assert!(x.iter().all(|v| (-h..=h).contains(v)), "{x:?}");
            let [i, j] = [0, 1].map(|d| ((x[d] + h) / w).floor() as u32);
            assert!(
                i < cells && j < cells && (i + j).is_multiple_of(2),
                "{x:?} in cell ({i}, {j})"
            );
            hits[i as usize][j as usize] += 1;
        }
        // Every filled cell is hit: 4,000 rows over at most 13 cells, ≥ 307 expected in each.
        for (i, column) in hits.iter().enumerate() {
            for (j, &k) in column.iter().enumerate() {
                assert!((i + j) % 2 == 1 || k > 200, "{hits:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn stored_rows_are_an_error() -> Result<()> {
    let mut out = [0.0; 2];
    let got = board(4, 4.0)?.row(RowRef::Stored(0), &mut out);
    assert!(matches!(got, Err(Error::Msg(_))), "{got:?}");
    Ok(())
}

#[test]
fn invalid_params_name_the_field() -> Result<()> {
    let cases = [
        (0, 4.0, "cells"),
        (1, 4.0, "cells"),
        (1025, 4.0, "cells"),
        (4, 0.0, "half_width"),
        (4, -1.0, "half_width"),
        (4, f64::NAN, "half_width"),
        (4, f64::INFINITY, "half_width"),
    ];
    for (cells, half_width, want) in cases {
        match board(cells, half_width) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("checkerboard", want))
            }
            other => panic!("cells {cells} half_width {half_width}: {other:?}"),
        }
    }
    board(2, 1e-3)?;
    board(1024, 1e3)?;
    let msg = board(1, 4.0).unwrap_err().to_string();
    assert!(
        msg.starts_with("checkerboard: invalid `cells`") && !msg.ends_with('.'),
        "{msg}"
    );
    Ok(())
}

#[test]
fn registration_reads_params_from_ron() -> Result<()> {
    let reg = Registry::global()?;
    let data = reg.data("checkerboard", "()")?;
    assert_eq!(
        (data.sample_shape(), data.source().classes()),
        (vec![2], None)
    );
    assert_eq!(data.source().range(), Some((-4.0, 4.0)));
    let data = reg.data("checkerboard", "(cells: 6, half_width: 3.0)")?;
    assert_eq!(data.source().range(), Some((-3.0, 3.0)));
    assert!(matches!(
        reg.data("checkerboard", "(cell: 4)"),
        Err(Error::Config { .. })
    ));
    assert!(reg.data("checkerboard", "(cells: 1)").is_err());
    Ok(())
}
