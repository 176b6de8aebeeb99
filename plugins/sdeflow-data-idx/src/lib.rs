//! MNIST-style IDX files (MNIST, Fashion-MNIST, EMNIST, KMNIST) as labelled 8-bit grey images.
//!
//! # Formula
//! An image file holds n unsigned-byte images of h × w pixels k ∈ {0, …, 255}; row j is image
//! j as a [1, h, w] array x = 2k/255 − 1 on [−1, 1] (256 levels: bits per dimension take the
//! offset 7, docs/math.md §10), its label the byte j of the label file. With a test pair
//! (`heldout_images`, `heldout_labels`, or the `t10k` files of `dir`) the held-out split is
//! exactly the test set, stored after the training rows; without one, a fixed pseudo-random
//! fraction of the training file, the same for every seed. Files are plain or gzip (detected
//! by the magic bytes 1f 8b, decoded in pure Rust, never past one byte beyond the size the
//! dimensions give, which are themselves capped at deflate's 1,032-fold expansion of the file).
//!
//! IDX: two zero bytes, a type byte (0x08: unsigned byte, the only one read here), the rank r,
//! r big-endian u32 dimensions, then the values in C order.
//!
//! Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`) installs
//! the real Fashion-MNIST files, gzipped, as `/usr/share/datasets/fashion-mnist/`
//! `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (60,000 training and 10,000 test images of
//! 28 × 28, 10 classes): `data: idx(dir: "/usr/share/datasets/fashion-mnist")`, or
//! `data: idx(images: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
//! labels: "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")` to hold out a
//! fraction of the training set instead.
//!
//! # Parameters
//! - `dir`: a directory with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` and, when
//!   `t10k-images-idx3-ubyte` is there, the test pair `t10k-…`, each plain or `.gz`. Default
//!   `""` (none); give `dir` or `images` and `labels`.
//! - `images`, `labels`: the training files. Default `""`.
//! - `heldout_images`, `heldout_labels`: the test pair (both or neither). Default `""` (none).
//! - `heldout`: the fraction of the training file held out when there is no test pair, in
//!   [0, 1). Default 1/6 (MNIST's 10,000 of 60,000).
//!
//! # Claims
//! Rows of shape [1, h, w], labels 0 … max label; every value on the 256-level grid of
//! [−1, 1]; a file with the wrong magic, type, rank or size, truncated or followed by extra
//! bytes, holding no images, or images and labels of different counts, is an error naming the
//! file and the problem, before anything is allocated for a size the file cannot hold; so is
//! a test pair whose images differ in size from the training images.
//!
//! # References
//! LeCun, Cortes & Burges, "The MNIST database of handwritten digits" (the IDX format);
//! Xiao, Rasul & Vollgraf, "Fashion-MNIST", arXiv:1708.07747, 2017.

use std::{
    cmp::Ordering,
    io::Read,
    path::{Path, PathBuf},
};

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Holdout, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// Where the files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// A directory holding the four standard files (`""`: none).
    pub dir: String,
    /// The training images.
    pub images: String,
    /// The training labels.
    pub labels: String,
    /// The test images, held out (`""`: none).
    pub heldout_images: String,
    /// The test labels (`""`: none).
    pub heldout_labels: String,
    /// The fraction held out when there is no test pair.
    pub heldout: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            dir: String::new(),
            images: String::new(),
            labels: String::new(),
            heldout_images: String::new(),
            heldout_labels: String::new(),
            heldout: 1.0 / 6.0,
        }
    }
}

/// The images and labels, training rows first.
#[derive(Debug, Clone)]
pub struct Idx {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    h: usize,
    w: usize,
    holdout: Holdout,
    classes: usize,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::invalid("idx", field, reason)
}

/// The deflate format expands at most ~1,032-fold: a gzip file cannot hold more.
const MAX_GZIP_RATIO: u64 = 1032;

/// The dimensions and values of the unsigned-byte IDX file at `path`, of rank `rank`. Nothing
/// is allocated beyond what the file's size allows, and a gzip stream is decoded only up to
/// one byte past the size its dimensions give (so a gzip bomb stops there).
pub fn read_idx(path: &Path, rank: usize, field: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |what: String| invalid(field, format!("{}: {what}", path.display()));
    // The bytes and the decoded values (a gzip stream's expansion is checked below).
    let bytes = sdeflow_kernel::io::read_bounded(path, 2).map_err(|e| match e {
        sdeflow_kernel::Error::File { problem, .. } => bad(problem),
        sdeflow_kernel::Error::Io { source, .. } => bad(format!("cannot read: {source}")),
        other => bad(format!("cannot read: {other}")),
    })?;
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let limit = (bytes.len() as u64).saturating_mul(if gz { MAX_GZIP_RATIO } else { 1 });
    let (mut plain, mut unzip) = (&bytes[..], flate2::bufread::GzDecoder::new(&bytes[..]));
    let reader: &mut dyn Read = if gz { &mut unzip } else { &mut plain };
    let failed = |e: std::io::Error, what: &str| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(format!("truncated in its {what}")),
        _ => bad(format!("cannot decode its {what}: {e}")),
    };
    let mut head = [0u8; 4];
    reader
        .read_exact(&mut head)
        .map_err(|e| failed(e, "header"))?;
    if head[..2] != [0, 0] {
        let (a, b) = (head[0], head[1]);
        return Err(bad(format!(
            "not an IDX file (magic {a:02x} {b:02x}, expected 00 00)"
        )));
    }
    if head[2] != 0x08 {
        let only = "only unsigned bytes (0x08)";
        return Err(bad(format!(
            "type 0x{:02x} is not supported: {only}",
            head[2]
        )));
    }
    if usize::from(head[3]) != rank {
        let axes = if rank == 3 { "n, height, width" } else { "n" };
        return Err(bad(format!("rank {}, expected {rank} ({axes})", head[3])));
    }
    let mut dims = vec![0u8; 4 * rank];
    reader
        .read_exact(&mut dims)
        .map_err(|e| failed(e, "dimensions"))?;
    let dims: Vec<usize> = dims
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    let Some(count) = count.filter(|&c| c <= limit).map(|c| c as usize) else {
        let what = "need more bytes than the file can hold";
        return Err(bad(format!("truncated: dimensions {dims:?} {what}")));
    };
    let mut decoded = sdeflow_kernel::resources::Estimate::new();
    decoded.add("the decoded values", count as u128, 1);
    decoded.ensure("use a smaller file, or a machine with more memory", bad)?;
    let mut values = Vec::with_capacity(count.min(bytes.len().saturating_mul(8)));
    Read::take(reader, count as u64 + 1)
        .read_to_end(&mut values)
        .map_err(|e| failed(e, "data"))?;
    // A gzip stream read to its end leaves what follows it (a plain file's extra bytes are read).
    let after = if gz { unzip.get_ref().len() } else { 0 };
    match values.len().cmp(&count) {
        Ordering::Equal if after == 0 => Ok((dims, values)),
        Ordering::Equal => Err(bad(format!(
            "{after} extra bytes after its gzip stream (only one stream is read)"
        ))),
        Ordering::Less => Err(bad(format!(
            "truncated in its data: dimensions {dims:?} need {count} bytes, it holds {}",
            values.len()
        ))),
        Ordering::Greater => Err(bad(format!(
            "extra bytes after the {count} values its dimensions {dims:?} describe"
        ))),
    }
}

/// Images (rank 3, at least one, of at least 1 × 1 pixels) and labels (rank 1) of equal count.
fn read_pair(
    images: &Path,
    labels: &Path,
    fields: [&str; 2],
) -> Result<(Vec<usize>, Vec<u8>, Vec<u8>)> {
    let (dims, pixels) = read_idx(images, 3, fields[0])?;
    let (n, shown) = (dims[0], images.display());
    if dims.contains(&0) {
        let (h, w) = (dims[1], dims[2]);
        let what = format!("{shown}: {n} images of {h} × {w} pixels: none to read");
        return Err(invalid(fields[0], what));
    }
    let (ldims, labs) = read_idx(labels, 1, fields[1])?;
    if ldims[0] != n {
        let has = format!("{} holds {} labels", labels.display(), ldims[0]);
        return Err(invalid(
            fields[1],
            format!("{has} but {shown} holds {n} images"),
        ));
    }
    Ok((dims, pixels, labs))
}

/// `dir/stem`, or `dir/stem.gz` when only that exists (`None`: neither does).
fn in_dir(dir: &Path, stem: &str) -> Option<String> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .map(|path| path.display().to_string())
}

impl Idx {
    /// Reads and checks the files `p` names.
    pub fn new(mut p: Params) -> Result<Self> {
        if !p.dir.is_empty() {
            if !(p.images.is_empty()
                && p.labels.is_empty()
                && p.heldout_images.is_empty()
                && p.heldout_labels.is_empty())
            {
                return Err(invalid("dir", "give `dir` or the files, not both"));
            }
            let dir = PathBuf::from(&p.dir);
            let train = |stem: &str| {
                in_dir(&dir, stem).unwrap_or_else(|| dir.join(stem).display().to_string())
            };
            p.images = train("train-images-idx3-ubyte");
            p.labels = train("train-labels-idx1-ubyte");
            // The test pair when its images are there (else a fraction of the training file).
            if let Some(images) = in_dir(&dir, "t10k-images-idx3-ubyte") {
                p.heldout_images = images;
                p.heldout_labels = in_dir(&dir, "t10k-labels-idx1-ubyte")
                    .unwrap_or_else(|| dir.join("t10k-labels-idx1-ubyte").display().to_string());
            }
        }
        if p.images.is_empty() || p.labels.is_empty() {
            return Err(invalid(
                "images",
                "give `dir: \"...\"` or `images: \"...\"` and `labels: \"...\"` (IDX files, plain or .gz)",
            ));
        }
        let (dims, mut pixels, mut labels) =
            read_pair(p.images.as_ref(), p.labels.as_ref(), ["images", "labels"])?;
        let (h, w) = (dims[1], dims[2]);
        let none = |s: &String| s.is_empty();
        let holdout = match (&p.heldout_images, &p.heldout_labels) {
            (hi, hl) if !none(hi) && !none(hl) => {
                let (tdims, tp, tl) = read_pair(
                    hi.as_ref(),
                    hl.as_ref(),
                    ["heldout_images", "heldout_labels"],
                )?;
                if (tdims[1], tdims[2]) != (h, w) {
                    return Err(invalid(
                        "heldout_images",
                        format!(
                            "{hi}: images of {} × {} pixels, but {} holds {h} × {w}",
                            tdims[1], tdims[2], p.images
                        ),
                    ));
                }
                pixels.extend(tp);
                labels.extend(tl);
                Holdout::Last(tdims[0] as u64)
            }
            (hi, hl) if none(hi) && none(hl) && (0.0..1.0).contains(&p.heldout) => {
                Holdout::Fraction(p.heldout)
            }
            (hi, hl) if none(hi) && none(hl) => {
                return Err(invalid(
                    "heldout",
                    format!("{} is not a fraction in [0, 1)", p.heldout),
                ));
            }
            _ => {
                return Err(invalid(
                    "heldout_images",
                    "give both `heldout_images` and `heldout_labels`, or neither",
                ));
            }
        };
        let classes = labels
            .iter()
            .copied()
            .max()
            .map_or(1, |m| usize::from(m) + 1);
        Ok(Self {
            pixels,
            labels,
            h,
            w,
            holdout,
            classes,
        })
    }
}

impl DataSource for Idx {
    fn sample_shape(&self) -> Vec<usize> {
        vec![1, self.h, self.w]
    }

    fn extent(&self) -> Extent {
        Extent::Stored {
            rows: self.labels.len() as u64,
            heldout: self.holdout,
        }
    }

    fn classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    fn range(&self) -> Option<(f64, f64)> {
        Some((-1.0, 1.0))
    }

    fn levels(&self) -> Option<u32> {
        Some(256)
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let d = self.h * self.w;
        match at {
            RowRef::Stored(j) if (j as usize) < self.labels.len() => {
                let j = j as usize;
                for (x, &k) in out.iter_mut().zip(&self.pixels[j * d..(j + 1) * d]) {
                    *x = 2.0 * f64::from(k) / 255.0 - 1.0;
                }
                Ok(Some(u32::from(self.labels[j])))
            }
            other => Err(Error::Msg(format!("idx: no row {other:?}"))),
        }
    }
}

/// The bytes of an unsigned-byte IDX file of dimensions `dims` (for fixtures and tests).
pub fn idx_bytes(dims: &[usize], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend(values);
    out
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, bytes).map_err(|e| Error::Msg(e.to_string()))?;
    enc.finish().map_err(|e| Error::Msg(e.to_string()))
}

/// Writes 24 training and 6 test images of 6 × 5 pixels (the training images gzipped) into
/// `dir`, and returns the parameters that read them.
pub fn write_fixture(dir: &Path) -> Result<String> {
    let (h, w) = (6, 5);
    let image = |i: usize| (0..h * w).map(move |p| ((i * 37 + p * 11) % 256) as u8);
    let write = |name: &str, bytes: Vec<u8>| -> Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(format!("{:?}", path.display().to_string()))
    };
    let train: Vec<u8> = (0..24).flat_map(image).collect();
    let test: Vec<u8> = (24..30).flat_map(image).collect();
    let images = write("train-images.gz", gzip(&idx_bytes(&[24, h, w], &train))?)?;
    let labels = write(
        "train-labels",
        idx_bytes(&[24], &(0..24).map(|i| (i % 10) as u8).collect::<Vec<_>>()),
    )?;
    let test_images = write("test-images", idx_bytes(&[6, h, w], &test))?;
    let test_labels = write("test-labels", idx_bytes(&[6], &[3, 1, 4, 1, 5, 9]))?;
    Ok(format!(
        "(images: {images}, labels: {labels}, heldout_images: {test_images}, heldout_labels: {test_labels})"
    ))
}

register_data!(
    "idx",
    "MNIST / Fashion-MNIST IDX files (plain or .gz) as labelled 8-bit images on [-1, 1]",
    Params,
    Idx::new,
    fixture: write_fixture,
);
