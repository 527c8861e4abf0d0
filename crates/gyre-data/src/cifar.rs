//! CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in their official binary layout, and the
//! `cifar10-jpeg` image-folder copy.
//!
//! - `cifar-10-batches-bin/`: `data_batch_1.bin` … `data_batch_5.bin` (train), `test_batch.bin`;
//!   records of 1 label byte + 3072 bytes (the R, G, B planes of a 32×32 image); class names
//!   from `batches.meta.txt`.
//! - `cifar-100-binary/`: `train.bin`, `test.bin`; records of a coarse and a fine label byte +
//!   3072 bytes; the fine label is used; names from `fine_label_names.txt`.
//! - `cifar10-jpeg/`: `train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg` (a q75 re-encode of the
//!   official split; see its README), read with [`load_image_folder`].
//!
//! A file that is not a whole number of records is truncated: under `fail` the load stops with
//! its path; under `skip` the partial record is dropped and reported.

use crate::bad_sample::{BadSamples, LoadReport, OnBadSample};
use crate::dataset::ImageSet;
use crate::error::DataError;
use crate::image_folder::{load_image_folder, FolderOptions, Residency};
use std::path::{Path, PathBuf};

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    Hundred,
}

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Per-channel mean and std in [0, 1] units (the MoCo CIFAR demo's).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
/// CIFAR-100's (solo-learn's and lightly's CIFAR-100 settings).
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4865, 0.4409];
pub const CIFAR100_STD: [f32; 3] = [0.2673, 0.2564, 0.2762];

impl Cifar {
    /// The official folder name.
    pub fn folder(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Hundred => "cifar-100-binary",
        }
    }

    fn files(self, train: bool) -> Vec<&'static str> {
        match (self, train) {
            (Cifar::Ten, true) => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (Cifar::Ten, false) => vec!["test_batch.bin"],
            (Cifar::Hundred, true) => vec!["train.bin"],
            (Cifar::Hundred, false) => vec!["test.bin"],
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        }
    }

    fn classes(self, dir: &Path) -> Vec<String> {
        let (file, n) = match self {
            Cifar::Ten => ("batches.meta.txt", 10),
            Cifar::Hundred => ("fine_label_names.txt", 100),
        };
        let names: Vec<String> = std::fs::read_to_string(dir.join(file))
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if names.len() == n {
            names
        } else if self == Cifar::Ten {
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..n).map(|i| i.to_string()).collect()
        }
    }
}

const PIXELS: usize = 32 * 32 * 3;

/// Loads one split from the official binary folder.
pub fn load_cifar_bin(
    dir: &Path,
    which: Cifar,
    train: bool,
    on_bad_sample: OnBadSample,
) -> Result<(ImageSet, LoadReport), DataError> {
    let rec = which.label_bytes() + PIXELS;
    let classes = which.classes(dir);
    let mut bad = BadSamples::default();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in which.files(train) {
        let path = dir.join(f);
        let bytes = std::fs::read(&path)
            .map_err(|e| DataError::file(&path, format!("cannot read: {e}")))?;
        if !bytes.len().is_multiple_of(rec) {
            bad.handle(
                on_bad_sample,
                &path,
                format!(
                    "truncated: {} bytes is not a whole number of {rec}-byte records",
                    bytes.len()
                ),
            )?;
        }
        for r in bytes.chunks_exact(rec) {
            let label = r[which.label_bytes() - 1] as u32;
            if label as usize >= classes.len() {
                bad.handle(
                    on_bad_sample,
                    &path,
                    format!("label {label} out of range for {} classes", classes.len()),
                )?;
                continue;
            }
            labels.push(label);
            // CHW planes → HWC.
            let img = &r[which.label_bytes()..];
            for p in 0..1024 {
                pixels.extend_from_slice(&[img[p], img[1024 + p], img[2048 + p]]);
            }
        }
    }
    let name = format!(
        "{}/{}",
        which.folder(),
        if train { "train" } else { "test" }
    );
    let set = ImageSet::new(name, (32, 32, 3), pixels, Some(labels), classes)?;
    Ok((set, LoadReport::from_bad(bad)))
}

/// Loads one split of the `cifar10-jpeg` folder (`root/train` or `root/test`).
pub fn load_cifar10_jpeg(
    root: &Path,
    train: bool,
    on_bad_sample: OnBadSample,
    residency: Residency,
) -> Result<(ImageSet, LoadReport), DataError> {
    let split = if train { "train" } else { "test" };
    load_image_folder(
        &root.join(split),
        &format!("cifar10-jpeg/{split}"),
        FolderOptions {
            labelled: true,
            size: None,
            channels: Some(3),
            on_bad_sample,
            residency,
        },
    )
}

/// Finds a dataset folder named `folder`: `root` when given, else `$GYRE_DATA/<folder>`,
/// `data/<folder>`, `../shared/data/<folder>` (the shared copy of this workspace's machines).
pub fn locate(folder: &str, root: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(r) = root {
        return if r.is_dir() {
            Ok(r.to_path_buf())
        } else {
            Err(DataError::file(r, "not a folder (data.root)"))
        };
    }
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Ok(d) = std::env::var("GYRE_DATA") {
        candidates.push(PathBuf::from(d).join(folder));
    }
    candidates.push(PathBuf::from("data").join(folder));
    candidates.push(PathBuf::from("../shared/data").join(folder));
    for c in candidates {
        if c.is_dir() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(DataError::NotFound {
        name: folder.to_string(),
        hint: format!("looked in {}; set data.root", tried.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gyre-cifar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn record(label_bytes: &[u8], seed: u8) -> Vec<u8> {
        let mut r = label_bytes.to_vec();
        r.extend((0..PIXELS).map(|i| (i as u8).wrapping_mul(seed)));
        r
    }

    #[test]
    fn cifar10_binary_planes_become_hwc_and_truncation_is_reported() {
        let d = tmp("ten");
        for (i, f) in Cifar::Ten.files(true).iter().enumerate() {
            let mut bytes = record(&[i as u8], 3);
            bytes.extend(record(&[9], 5));
            std::fs::write(d.join(f), bytes).unwrap();
        }
        let (set, bad) = load_cifar_bin(&d, Cifar::Ten, true, OnBadSample::Fail).unwrap();
        assert_eq!(bad.bad_samples.count, 0);
        assert_eq!(
            (set.len(), set.height, set.width, set.channels),
            (10, 32, 32, 3)
        );
        assert_eq!(set.labels().unwrap(), [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(set.classes[0], "airplane");
        // Pixel (0, 1) of record 0: R = plane[1], G = plane[1025], B = plane[2049] (× 3, wrapping).
        let px = &set.image(0).unwrap()[3..6];
        assert_eq!(
            px,
            [3, (1025u32 * 3 % 256) as u8, (2049u32 * 3 % 256) as u8]
        );
        // Truncate the last batch: fail names it; skip drops the partial record.
        let last = d.join("data_batch_5.bin");
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.truncate(3073 + 100);
        std::fs::write(&last, bytes).unwrap();
        let e = load_cifar_bin(&d, Cifar::Ten, true, OnBadSample::Fail)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data_batch_5.bin: truncated: 3173 bytes is not a whole number of 3073-byte records"),
            "{e}"
        );
        let (set, bad) = load_cifar_bin(&d, Cifar::Ten, true, OnBadSample::Skip).unwrap();
        assert_eq!((set.len(), bad.bad_samples.count), (9, 1));
        // A missing file is an error naming it.
        let e = load_cifar_bin(&d, Cifar::Ten, false, OnBadSample::Skip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test_batch.bin: cannot read"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn cifar100_uses_the_fine_label() {
        let d = tmp("hundred");
        let mut bytes = record(&[3, 77], 1);
        bytes.extend(record(&[19, 5], 2));
        std::fs::write(d.join("test.bin"), bytes).unwrap();
        let (set, _) = load_cifar_bin(&d, Cifar::Hundred, false, OnBadSample::Fail).unwrap();
        assert_eq!(set.labels().unwrap(), [77, 5]);
        assert_eq!(set.classes.len(), 100);
        std::fs::remove_dir_all(&d).ok();
    }
}
