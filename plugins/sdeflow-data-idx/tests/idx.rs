//! `idx`: files read back exactly, plain or gzipped, and every bad file an error naming the
//! file and the problem.

use std::{path::PathBuf, sync::Arc};

use sdeflow_data_idx::{Idx, Params, gzip, idx_bytes, write_fixture};
use sdeflow_kernel::{
    Data, Error, Registry, Result, Split,
    data::{DataSource, RowRef},
};

fn dir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sdeflow-idx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::Msg(e.to_string()))?;
    Ok(d)
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| Error::Msg(e.to_string()))?;
    Ok(p.display().to_string())
}

/// The message of an `InvalidParam` on `field`, else a panic.
fn message(r: Result<Idx>, field: &str) -> String {
    match r {
        Err(Error::InvalidParam {
            field: f, reason, ..
        }) if f == field => reason,
        other => panic!("expected an error on `{field}`, got {other:?}"),
    }
}

/// Three 2 × 3 images, gzipped, with their labels: each row is 2k/255 − 1 of its bytes; a test
/// pair is held out after the training rows; `dir` finds the standard names, plain or `.gz`,
/// and without the test images holds out a fraction of the training rows.
#[test]
fn files_read_back_exactly() -> Result<()> {
    let d = dir("roundtrip")?;
    let pixels: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
    let images = write(
        &d,
        "train-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[3, 2, 3], &pixels))?,
    )?;
    let labels = write(&d, "train-labels-idx1-ubyte", &idx_bytes(&[3], &[7, 0, 2]))?;
    write(
        &d,
        "t10k-images-idx3-ubyte",
        &idx_bytes(&[1, 2, 3], &[255; 6]),
    )?;
    write(
        &d,
        "t10k-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[1], &[9]))?,
    )?;
    let src = Idx::new(Params {
        images,
        labels,
        ..Params::default()
    })?;
    assert_eq!(src.sample_shape(), vec![1, 2, 3]);
    assert_eq!(src.classes(), Some(8));
    let mut row = [0.0; 6];
    for j in 0..3 {
        let label = src.row(RowRef::Stored(j), &mut row)?;
        assert_eq!(label, Some([7, 0, 2][j as usize]));
        let want: Vec<f64> = pixels[j as usize * 6..][..6]
            .iter()
            .map(|&k| 2.0 * f64::from(k) / 255.0 - 1.0)
            .collect();
        assert_eq!(row.to_vec(), want);
    }
    let data = Data::new(Arc::new(Idx::new(Params {
        dir: d.display().to_string(),
        ..Params::default()
    })?))?;
    assert_eq!(data.stored(Split::Heldout), Some(&[3][..]));
    let held = data.batch(Split::Heldout, 0, 0, 1)?;
    assert_eq!((held.values, held.labels), (vec![1.0; 6], Some(vec![9])));
    // Without the test images, `dir` holds out round(3 / 6) = 1 training row.
    std::fs::remove_file(d.join("t10k-images-idx3-ubyte"))
        .map_err(|e| Error::Msg(e.to_string()))?;
    let data = Data::new(Arc::new(Idx::new(Params {
        dir: d.display().to_string(),
        ..Params::default()
    })?))?;
    assert_eq!(
        (data.len(Split::Train), data.len(Split::Heldout)),
        (Some(2), Some(1))
    );
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}

/// Each bad file is an error on the field that names it, with the file's path and the problem.
#[test]
fn bad_files_are_errors_naming_the_file() -> Result<()> {
    let d = dir("bad")?;
    let good_images = idx_bytes(&[2, 2, 2], &[0; 8]);
    let good_labels = write(&d, "labels", &idx_bytes(&[2], &[0, 1]))?;
    let mut magic = good_images.clone();
    magic[0] = 8;
    let mut int32 = good_images.clone();
    int32[2] = 0x0c;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", magic, "not an IDX file"),
        ("type", int32, "type 0x0c is not supported"),
        ("rank", idx_bytes(&[2, 4], &[0; 8]), "rank 2, expected 3"),
        (
            "short",
            idx_bytes(&[2, 2, 2], &[0; 7]),
            "truncated in its data",
        ),
        (
            "short.gz",
            gzip(&idx_bytes(&[2, 2, 2], &[0; 7]))?,
            "truncated in its data",
        ),
        ("head.gz", gzip(&[0, 0, 8])?, "truncated in its header"),
        (
            "huge",
            idx_bytes(&[65_535, 65_535, 65_535], &[]),
            "need more bytes than the file can hold",
        ),
        (
            "huge.gz",
            gzip(&idx_bytes(&[65_535, 65_535, 65_535], &[]))?,
            "need more bytes than the file can hold",
        ),
        (
            "long",
            idx_bytes(&[2, 2, 2], &[0; 9]),
            "extra bytes after the 8 values",
        ),
        (
            "cut.gz",
            {
                let z = gzip(&idx_bytes(&[2, 2, 2], &[7; 8]))?;
                z[..z.len() - 6].to_vec()
            },
            "truncated in its data",
        ),
        (
            "tail.gz",
            [gzip(&good_images)?, b"garbage".to_vec()].concat(),
            "7 extra bytes after its gzip stream",
        ),
        (
            // A gzip bomb: 8 values, then 4 MiB of zeros; decoding stops one byte past the 8.
            "bomb.gz",
            gzip(&[good_images.clone(), vec![0; 4 << 20]].concat())?,
            "extra bytes after the 8 values",
        ),
        (
            "none",
            idx_bytes(&[0, 2, 2], &[]),
            "0 images of 2 × 2 pixels: none to read",
        ),
        (
            "corrupt.gz",
            {
                // The CRC-32 of the decoded bytes, in the gzip trailer.
                let mut z = gzip(&good_images)?;
                let n = z.len();
                z[n - 8] ^= 0xff;
                z
            },
            "cannot decode",
        ),
    ];
    for (name, bytes, what) in cases {
        let images = write(&d, name, &bytes)?;
        let msg = message(
            Idx::new(Params {
                images: images.clone(),
                labels: good_labels.clone(),
                ..Params::default()
            }),
            "images",
        );
        assert!(msg.contains(&images) && msg.contains(what), "{name}: {msg}");
    }
    let images = write(&d, "images", &good_images)?;
    let three = write(&d, "three", &idx_bytes(&[3], &[0, 1, 2]))?;
    let with = |labels: &str, edit: &dyn Fn(&mut Params)| {
        let mut p = Params {
            images: images.clone(),
            labels: labels.into(),
            ..Params::default()
        };
        edit(&mut p);
        Idx::new(p)
    };
    let msg = message(with(&three, &|_| {}), "labels");
    assert!(
        msg.contains(&format!(
            "{three} holds 3 labels but {images} holds 2 images"
        )),
        "{msg}"
    );
    let missing = d.join("missing").display().to_string();
    let msg = message(with(&missing, &|_| {}), "labels");
    assert!(
        msg.contains(&missing) && msg.contains("cannot read"),
        "{msg}"
    );
    let wide = write(&d, "wide", &idx_bytes(&[1, 2, 3], &[0; 6]))?;
    let one = write(&d, "one", &idx_bytes(&[1], &[0]))?;
    let msg = message(
        with(&good_labels, &|p| {
            p.heldout_images = wide.clone();
            p.heldout_labels = one.clone();
        }),
        "heldout_images",
    );
    assert!(
        msg.contains("2 × 3 pixels") && msg.contains("2 × 2"),
        "{msg}"
    );
    message(
        with(&good_labels, &|p| p.heldout_images = wide.clone()),
        "heldout_images",
    );
    message(with(&good_labels, &|p| p.heldout = 1.0), "heldout");
    message(with(&good_labels, &|p| p.dir = "x".into()), "dir");
    message(Idx::new(Params::default()), "images");
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}

/// The fixture conformance runs reads through the registry with its test pair held out.
#[test]
fn the_fixture_reads() -> Result<()> {
    let d = dir("fixture")?;
    let data = Registry::global()?.data("idx", &write_fixture(&d)?)?;
    assert_eq!(
        (data.len(Split::Train), data.len(Split::Heldout)),
        (Some(24), Some(6))
    );
    assert_eq!(data.sample_shape(), vec![1, 6, 5]);
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}
