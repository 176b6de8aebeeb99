//! `npy`: arrays read back exactly, and every bad file an error naming the file and the
//! problem.

use std::{path::PathBuf, sync::Arc};

use sdeflow_data_npy::{NpyData, Params, npy_bytes};
use sdeflow_kernel::{
    Data, Error, Result, Split,
    data::{DataSource, RowRef},
};

/// A fresh directory for one test.
fn dir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sdeflow-npy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::Msg(e.to_string()))?;
    Ok(d)
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| Error::Msg(e.to_string()))?;
    Ok(p.display().to_string())
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read(path: &str, edit: impl FnOnce(&mut Params)) -> Result<NpyData> {
    let mut p = Params {
        path: path.into(),
        ..Params::default()
    };
    edit(&mut p);
    NpyData::new(p)
}

/// The message of an `InvalidParam` on `field`, else a panic.
fn message(r: Result<NpyData>, field: &str) -> String {
    match r {
        Err(Error::InvalidParam {
            field: f, reason, ..
        }) if f == field => reason,
        other => panic!("expected an error on `{field}`, got {other:?}"),
    }
}

/// A big-endian f32 array of shape [6, 2, 2] reads back as scale · A[j] + shift, row by row;
/// its split holds out round(0.5 · 6) = 3 rows; the first epoch of each split visits each of
/// its rows once.
#[test]
fn rows_are_the_array_scaled() -> Result<()> {
    let d = dir("roundtrip")?;
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_be_bytes()).collect();
    let path = write(&d, "a.npy", &npy_bytes(">f4", false, &[6, 2, 2], &bytes))?;
    let src = read(&path, |p| {
        (p.scale, p.shift, p.heldout) = (2.0, 1.0, 0.5);
    })?;
    assert_eq!(src.sample_shape(), vec![2, 2]);
    let mut row = [0.0; 4];
    for j in 0..6 {
        src.row(RowRef::Stored(j), &mut row)?;
        let want: Vec<f64> = (0..4)
            .map(|k| 2.0 * f64::from(values[j as usize * 4 + k]) + 1.0)
            .collect();
        assert_eq!(row.to_vec(), want);
    }
    let data = Data::new(Arc::new(src))?;
    assert_eq!(
        (data.len(Split::Train), data.len(Split::Heldout)),
        (Some(3), Some(3))
    );
    let b = data.batch(Split::Heldout, 9, 0, 3)?;
    let mut got: Vec<i64> = b
        .values
        .chunks(4)
        .map(|r| ((r[0] - 1.0) / 2.0 / 2.0 + 1.5) as i64)
        .collect();
    got.sort_unstable();
    let mut want: Vec<i64> = data
        .stored(Split::Heldout)
        .unwrap_or(&[])
        .iter()
        .map(|&j| j as i64)
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}

/// Each bad file is an error on `path` (or the field it breaks) that names the file and says
/// what is wrong.
#[test]
fn bad_files_are_errors_naming_the_file() -> Result<()> {
    let d = dir("bad")?;
    let good = npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 6]));
    let mut bad_magic = good.clone();
    bad_magic[1] = b'X';
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.npy", bad_magic, "not a .npy file"),
        (
            "int.npy",
            npy_bytes("<i4", false, &[3, 2], &[0; 24]),
            "dtype `<i4` is not supported",
        ),
        (
            "fortran.npy",
            npy_bytes("<f8", true, &[3, 2], &f64s(&[0.0; 6])),
            "Fortran order",
        ),
        (
            "short.npy",
            npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 5])),
            "truncated",
        ),
        (
            "huge.npy",
            npy_bytes("<f8", false, &[1 << 40, 1 << 30], &[]),
            "truncated",
        ),
        (
            "big.npy",
            npy_bytes("<f8", false, &[1 << 20, 1 << 20], &[]),
            "truncated",
        ),
        (
            "long.npy",
            npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 7])),
            "bytes after the data",
        ),
        (
            "one.npy",
            npy_bytes("<f8", false, &[1, 2], &f64s(&[0.0; 2])),
            "at least 2 rows",
        ),
        (
            "nan.npy",
            npy_bytes(
                "<f8",
                false,
                &[3, 2],
                &f64s(&[0.0, 0.0, 0.0, f64::NAN, 0.0, 0.0]),
            ),
            "row 1, column 1 is NaN",
        ),
        ("empty.npy", Vec::new(), "not a .npy file"),
    ];
    for (name, bytes, what) in cases {
        let path = write(&d, name, &bytes)?;
        let msg = message(read(&path, |_| {}), "path");
        assert!(msg.contains(&path) && msg.contains(what), "{name}: {msg}");
    }
    let missing = d.join("missing.npy").display().to_string();
    let msg = message(read(&missing, |_| {}), "path");
    assert!(
        msg.contains(&missing) && msg.contains("cannot read"),
        "{msg}"
    );
    assert!(message(read("", |_| {}), "path").contains("give the .npy file"));
    // A value outside the declared range, and one off the declared levels.
    let path = write(
        &d,
        "range.npy",
        &npy_bytes("<f8", false, &[3, 1], &f64s(&[0.0, 0.5, 1.5])),
    )?;
    let msg = message(read(&path, |p| p.range = Some(vec![0.0, 1.0])), "range");
    assert!(
        msg.contains(&path) && msg.contains("row 2, column 0 is 1.5"),
        "{msg}"
    );
    let msg = message(
        read(&path, |p| {
            (p.range, p.levels) = (Some(vec![0.0, 2.0]), Some(3))
        }),
        "levels",
    );
    assert!(msg.contains("row 1, column 0 is 0.5"), "{msg}");
    message(read(&path, |p| p.levels = Some(3)), "levels");
    message(read(&path, |p| p.scale = 0.0), "scale");
    message(read(&path, |p| p.range = Some(vec![1.0, 0.0])), "range");
    message(read(&path, |p| p.range = Some(vec![0.0])), "range");
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}
