//! `npy`: arrays read back exactly, and every bad file an error naming the file and the
//! problem.

use std::{path::PathBuf, sync::Arc};

use sdeflow_data_npy::{NpyData, Params, npy_bytes, write_fixture};
use sdeflow_kernel::{
    Data, Error, Registry, Result, Split,
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

/// A big-endian f32 array of shape [6, 2, 2] reads back as scale · A[j] + shift, row by row,
/// directly and through `Data`: the held-out split is round(0.5 · 6) = 3 stored rows, and a
/// batch of 3 held-out rows is exactly those rows (one epoch), each scaled.
#[test]
fn rows_are_the_array_scaled() -> Result<()> {
    let d = dir("roundtrip")?;
    // Multiples of 0.5: exact in f32, and after · 2 + 1 in f64.
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_be_bytes()).collect();
    let path = write(&d, "a.npy", &npy_bytes(">f4", false, &[6, 2, 2], &bytes))?;
    let src = read(&path, |p| (p.scale, p.shift, p.heldout) = (2.0, 1.0, 0.5))?;
    assert_eq!(src.sample_shape(), vec![2, 2]);
    let want = |j: usize| -> Vec<f64> {
        (0..4)
            .map(|k| 2.0 * f64::from(values[j * 4 + k]) + 1.0)
            .collect()
    };
    let mut row = [0.0; 4];
    for j in 0..6 {
        assert_eq!(src.row(RowRef::Stored(j), &mut row)?, None);
        assert_eq!(row.to_vec(), want(j as usize));
    }
    assert!(src.row(RowRef::Stored(6), &mut row).is_err());
    let data = Data::new(Arc::new(src))?;
    let held = data.stored(Split::Heldout).unwrap_or(&[]).to_vec();
    assert_eq!((data.len(Split::Train), held.len()), (Some(3), 3));
    let b = data.batch(Split::Heldout, 9, 0, 3)?;
    assert_eq!(b.labels, None);
    let mut got: Vec<Vec<f64>> = b.values.chunks(4).map(<[f64]>::to_vec).collect();
    let mut rows: Vec<Vec<f64>> = held.iter().map(|&j| want(j as usize)).collect();
    got.sort_by(|a, b| a[0].total_cmp(&b[0]));
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    assert_eq!(got, rows);
    // A little-endian f64 vector: rows of shape [1].
    let path = write(
        &d,
        "v.npy",
        &npy_bytes("<f8", false, &[3], &f64s(&[0.25, -1.5, 1e300])),
    )?;
    let src = read(&path, |_| {})?;
    assert_eq!(src.sample_shape(), vec![1]);
    let mut one = [0.0];
    src.row(RowRef::Stored(2), &mut one)?;
    assert_eq!(one, [1e300]);
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}

/// f32 values a rounding off the declared levels are read as the levels exactly; the fixture
/// reads through the registry with its RON `range: Some([lo, hi])`.
#[test]
fn levels_snap_and_the_fixture_reads() -> Result<()> {
    let d = dir("levels")?;
    // k / 127.5 − 1 in f32: within f32 rounding of the 256 levels on [−1, 1].
    let values: Vec<f32> = (0..=255).map(|k| k as f32 / 127.5 - 1.0).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let path = write(&d, "img.npy", &npy_bytes("<f4", false, &[256], &bytes))?;
    let src = read(&path, |p| {
        (p.range, p.levels) = (Some(vec![-1.0, 1.0]), Some(256))
    })?;
    let mut x = [0.0];
    for k in 0..256 {
        src.row(RowRef::Stored(k), &mut x)?;
        assert_eq!(x[0], -1.0 + 2.0 * k as f64 / 255.0, "level {k}");
    }
    let data = Registry::global()?.data("npy", &write_fixture(&d)?)?;
    assert_eq!(data.source().range(), Some((-2.0, 2.0)));
    assert_eq!(data.sample_shape(), vec![3]);
    assert_eq!(
        (data.len(Split::Train), data.len(Split::Heldout)),
        (Some(58), Some(6))
    );
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}

/// Each bad file is an error on `path` (or the field it breaks) that names the file and says
/// what is wrong, without a panic and before allocating what a header claims.
#[test]
fn bad_files_are_errors_naming_the_file() -> Result<()> {
    let d = dir("bad")?;
    let good = npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 6]));
    let mut bad_magic = good.clone();
    bad_magic[1] = b'X';
    let mut long_header = good.clone();
    long_header[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    // A version 1.0 file with this header text and no data.
    let raw = |text: &str| {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((text.len() as u16).to_le_bytes());
        out.extend(text.as_bytes());
        out
    };
    // A `'shape'` inside a string before the real one, and a structured dtype with a field
    // named `shape` before it: the real shape claims 2⁷⁰ values, which would overflow.
    let decoy = raw(
        "{'descr': \"'shape': (3, 2)\", 'fortran_order': False, 'shape': (1099511627776, 1073741824), }\n",
    );
    let structured = raw(
        "{'descr': [('shape', '<f8')], 'fortran_order': False, 'shape': (1099511627776, 1073741824), }\n",
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.npy", bad_magic, "not a .npy file"),
        ("empty.npy", Vec::new(), "not a .npy file"),
        ("header.npy", long_header, "not a .npy file"),
        (
            "decoy.npy",
            decoy,
            "truncated: the header says shape (1099511627776",
        ),
        (
            "structured.npy",
            structured,
            "truncated: the header says shape (1099511627776",
        ),
        (
            "shapeless.npy",
            raw("{'descr': '<f8', 'fortran_order': False}\n"),
            "the header has no shape",
        ),
        (
            "int.npy",
            npy_bytes("<i4", false, &[3, 2], &[0; 24]),
            "dtype `<i4` is not supported; valid: <f4, >f4, <f8, >f8",
        ),
        (
            "fortran.npy",
            npy_bytes("<f8", true, &[3, 2], &f64s(&[0.0; 6])),
            "Fortran order; save it in C order: np.save(path, np.ascontiguousarray(a))",
        ),
        (
            "short.npy",
            npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 5])),
            "truncated: the header says [3, 2] (48 bytes of data), the file has 40",
        ),
        (
            "huge.npy",
            npy_bytes("<f8", false, &[1 << 40, 1 << 30], &[]),
            "truncated: the header says shape (1099511627776, 1073741824)",
        ),
        (
            "big.npy",
            npy_bytes("<f8", false, &[1 << 20, 1 << 20], &[]),
            "more values than the file has 0 bytes of data",
        ),
        (
            "long.npy",
            npy_bytes("<f8", false, &[3, 2], &f64s(&[0.0; 7])),
            "the file has 56: extra bytes after the data",
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
        (
            "inf.npy",
            npy_bytes("<f4", false, &[2], &f32::INFINITY.to_le_bytes().repeat(2)),
            "row 0, column 0 is inf",
        ),
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
        msg.contains(&path) && msg.contains("row 2, column 0 is 1.5 after scaling, outside [0, 1]"),
        "{msg}"
    );
    let msg = message(
        read(&path, |p| {
            (p.range, p.levels) = (Some(vec![0.0, 2.0]), Some(3))
        }),
        "levels",
    );
    assert!(
        msg.contains(&path)
            && msg.contains("row 1, column 0 is 0.5 after scaling, not one of the 3 levels"),
        "{msg}"
    );
    // The same values scaled by 2 are on the levels.
    read(&path, |p| {
        (p.range, p.levels, p.scale) = (Some(vec![0.0, 3.0]), Some(4), 2.0)
    })?;
    message(read(&path, |p| p.levels = Some(3)), "levels");
    message(read(&path, |p| p.range = Some(vec![0.0])), "range");
    message(
        read(&path, |p| {
            (p.range, p.levels) = (Some(vec![0.0, 1.0]), Some(1))
        }),
        "levels",
    );
    message(read(&path, |p| p.scale = 0.0), "scale");
    message(read(&path, |p| p.shift = f64::NAN), "scale");
    message(read(&path, |p| p.heldout = 1.0), "heldout");
    message(read(&path, |p| p.range = Some(vec![1.0, 0.0])), "range");
    message(
        read(&path, |p| p.range = Some(vec![0.0, f64::INFINITY])),
        "range",
    );
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}
