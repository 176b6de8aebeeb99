//! `digits`: the embedded set as the kernel reads it.

use std::sync::Arc;

use sdeflow_data_digits::{Digits, Params, ROWS};
use sdeflow_kernel::{Data, DataSource, Error, Result, Split, data::RowRef};

/// 1,797 rows, 180 held out at the default (round(0.1 · 1,797)); the first image is
/// scikit-learn's `load_digits().images[0]` (a 0), scaled to [−1, 1]; every value is on the
/// 17-level grid and every label a digit.
#[test]
fn the_set_reads_as_documented() -> Result<()> {
    let data = Data::new(Arc::new(Digits::new(Params::default())?))?;
    assert_eq!(data.len(Split::Train), Some(1617));
    assert_eq!(data.len(Split::Heldout), Some(180));
    let levels = data
        .levels()
        .ok_or_else(|| Error::Msg("no levels".into()))?;
    assert_eq!((levels.levels, levels.lo, levels.hi), (17, -1.0, 1.0));
    // sklearn.datasets.load_digits().images[0], row by row (the digit 0).
    let first: [u8; 64] = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
        0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
        0, 6, 13, 10, 0, 0, 0,
    ];
    let digits = Digits::new(Params::default())?;
    assert_eq!(digits.counts(0), first);
    // Stored row 0 is smartcore's first row k scaled to 2k/16 − 1, with its label (0).
    let set = smartcore::dataset::digits::load_dataset();
    let mut row = [0.0; 64];
    assert_eq!(digits.row(RowRef::Stored(0), &mut row)?, Some(0));
    let want: Vec<f64> = set.data[..64]
        .iter()
        .map(|&k| f64::from(k) / 8.0 - 1.0)
        .collect();
    assert_eq!(row.to_vec(), want);
    assert_eq!(set.target[0], 0.0);
    assert!(digits.row(RowRef::Stored(ROWS as u64), &mut row).is_err());
    let mut all = Vec::new();
    for split in Split::BOTH {
        let n = data.len(split).unwrap_or(0) as usize;
        let b = data.batch(split, 0, 0, n)?;
        assert!(b.values.iter().all(|&v| v == levels.value(levels.level(v))));
        let labels = b.labels.ok_or_else(|| Error::Msg("no labels".into()))?;
        assert!(labels.iter().all(|&l| l < 10));
        all.extend(labels);
    }
    assert_eq!(all.len(), ROWS);
    // Every digit is present about equally often (the set has 174–183 of each).
    for d in 0..10 {
        let c = all.iter().filter(|&&l| l == d).count();
        assert!((174..=183).contains(&c), "digit {d}: {c}");
    }
    Ok(())
}

#[test]
fn a_fraction_outside_zero_one_is_an_error_on_heldout() {
    for f in [-0.1, 1.0, f64::NAN] {
        match Digits::new(Params { heldout: f }) {
            Err(Error::InvalidParam { field, .. }) => assert_eq!(field, "heldout"),
            other => panic!("{f}: {other:?}"),
        }
    }
}
