//! Image folders: `root/<class>/<file>` (labelled, classes in sorted folder-name order, files
//! found recursively) or any flat or nested folder of images (unlabelled). JPEG and PNG, grey or
//! RGB (an alpha channel is dropped), decoded in parallel (`image`, whose JPEG decoder is
//! zune-jpeg) into one in-memory u8 [`ImageSet`] — or, when the decoded set would exceed the
//! memory budget ([`Residency`]), checked once and then decoded again on every read, so data
//! larger than memory trains with memory independent of the dataset's size.
//!
//! Every image must end up with the dataset's channel count (the option, else RGB when any image
//! has colour) and size: a grey image in an RGB dataset is converted (as torchvision's loader
//! does; counted in the [`LoadReport`]); with `size = Some(s)` each image is resized (shorter side
//! to s, triangle filter) and centre-cropped to s×s; without, every image must have the first
//! one's size. Anything else — an undecodable or truncated file (a JPEG must reach its
//! end-of-image marker), a non-image, a colour image in a grey dataset, a wrong size, an empty
//! class folder — is a bad sample, handled by [`OnBadSample`]. Hidden files (`.name`) are
//! ignored. A `train/` and `test/` pair is read with one class list
//! ([`load_train_test_folders`]).

use crate::bad_sample::{LoadReport, OnBadSample};
use crate::dataset::{ImageSet, LazySource};
use crate::error::DataError;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a folder's decoded images live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    /// In memory when the decoded set takes at most `budget_bytes`, else on disk.
    Auto { budget_bytes: u64 },
    /// Decoded once into memory.
    Memory,
    /// Decoded once to check every file, then again on every read (each epoch).
    Disk,
}

impl Default for Residency {
    /// In memory up to 4 GiB decoded (CIFAR-10 is 184 MB; ImageNet at 224² is 193 GB).
    fn default() -> Self {
        Residency::Auto {
            budget_bytes: 4 << 30,
        }
    }
}

/// How to read a folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct FolderOptions {
    /// `root/<class>/…` gives the labels.
    pub labelled: bool,
    /// Resize and centre-crop every image to `size × size`.
    pub size: Option<usize>,
    /// Required channel count (1 or 3); default: the first image's.
    pub channels: Option<usize>,
    pub on_bad_sample: OnBadSample,
    pub residency: Residency,
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Every non-hidden file under `dir`, recursively, in sorted path order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| DataError::file(&d, format!("cannot list the folder: {e}")))?;
        for e in entries {
            let p = e
                .map_err(|e| DataError::file(&d, format!("cannot list the folder: {e}")))?
                .path();
            if hidden(&p) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One decoded image: HWC bytes, height, width, channels (1 or 3).
type Decoded = (Vec<u8>, usize, usize, usize);

/// Reads and decodes one file, resized and centre-cropped to `size` when given. A JPEG must be
/// whole ([`crate::jpeg::check_complete`]): the decoder would silently fill a truncated one.
fn decode(path: &Path, size: Option<usize>) -> Result<Decoded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if crate::jpeg::is_jpeg(&bytes) {
        crate::jpeg::check_complete(&bytes)?;
    }
    let img = image::load_from_memory(&bytes).map_err(|e| format!("not a readable image: {e}"))?;
    let img = match size {
        Some(s) => {
            let (w, h) = (img.width() as f64, img.height() as f64);
            let scale = s as f64 / w.min(h);
            let (nw, nh) = (
                ((w * scale).round() as u32).max(s as u32),
                ((h * scale).round() as u32).max(s as u32),
            );
            let r = if (nw, nh) == (img.width(), img.height()) {
                img
            } else {
                img.resize_exact(nw, nh, image::imageops::FilterType::Triangle)
            };
            let (x, y) = ((nw - s as u32) / 2, (nh - s as u32) / 2);
            r.crop_imm(x, y, s as u32, s as u32)
        }
        None => img,
    };
    let (w, h) = (img.width() as usize, img.height() as usize);
    let grey = !img.color().has_color();
    Ok(if grey {
        (img.into_luma8().into_raw(), h, w, 1)
    } else {
        (img.into_rgb8().into_raw(), h, w, 3)
    })
}

/// A grey image's pixels as RGB (each value three times), as PIL's `convert("RGB")`.
fn grey_to_rgb(px: &[u8]) -> Vec<u8> {
    px.iter().flat_map(|&v| [v, v, v]).collect()
}

/// The class folders under `root` (sorted, hidden ones skipped), as (name, path).
fn class_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::file(root, format!("cannot list the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !hidden(p))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(DataError::file(
            root,
            "no class folders: a labelled image folder is root/<class>/<image>",
        ));
    }
    Ok(dirs
        .into_iter()
        .map(|d| {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, d)
        })
        .collect())
}

/// Reads a folder into memory (or checks it, for disk residency); returns the set and what it
/// skipped and converted. A labelled folder's classes are its sorted class folders.
pub fn load_image_folder(
    root: &Path,
    name: &str,
    opts: FolderOptions,
) -> Result<(ImageSet, LoadReport), DataError> {
    if !root.is_dir() {
        return Err(DataError::file(root, "not a folder"));
    }
    let classes = if opts.labelled {
        Some(
            class_dirs(root)?
                .into_iter()
                .map(|c| c.0)
                .collect::<Vec<String>>(),
        )
    } else {
        None
    };
    load_with_classes(root, name, classes.as_deref(), opts)
}

/// A labelled dataset in `train/` and `test/` folders read with one class list, the training
/// split's: every test class must be a training class (an error names the first that is not),
/// and a training class with no test folder is a warning in the report (its images are in the
/// kNN bank but never queried). Without this, each split would number its own sorted folders
/// and the labels of the two would silently disagree.
pub fn load_train_test_folders(
    train: &Path,
    test: &Path,
    opts: FolderOptions,
) -> Result<(ImageSet, ImageSet, LoadReport), DataError> {
    for d in [train, test] {
        if !d.is_dir() {
            return Err(DataError::file(d, "not a folder"));
        }
    }
    let classes: Vec<String> = class_dirs(train)?.into_iter().map(|c| c.0).collect();
    let test_classes: Vec<String> = class_dirs(test)?.into_iter().map(|c| c.0).collect();
    if let Some(extra) = test_classes.iter().find(|c| !classes.contains(c)) {
        return Err(DataError::file(
            test.join(extra),
            format!(
                "class '{extra}' has no folder in {}: the labels come from the training classes ({})",
                train.display(),
                classes.join(", ")
            ),
        ));
    }
    let opts = FolderOptions {
        labelled: true,
        ..opts
    };
    let (tr, mut report) =
        load_with_classes(train, &train.display().to_string(), Some(&classes), opts)?;
    let (te, r) = load_with_classes(test, &test.display().to_string(), Some(&classes), opts)?;
    report.merge(r);
    for c in classes.iter().filter(|c| !test_classes.contains(c)) {
        report.warnings.push(format!(
            "{}: no folder for class '{c}' of {}: its images are in the kNN bank but never queried",
            test.display(),
            train.display()
        ));
    }
    Ok((tr, te, report))
}

/// The loader behind both: `classes` (labelled folders) are the class names in label order; a
/// class without a folder under `root` simply has no images here.
fn load_with_classes(
    root: &Path,
    name: &str,
    classes: Option<&[String]>,
    opts: FolderOptions,
) -> Result<(ImageSet, LoadReport), DataError> {
    let mut report = LoadReport::default();
    let policy = opts.on_bad_sample;
    // (path, label) of every candidate file.
    let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
    match classes {
        Some(classes) => {
            for (c, class) in classes.iter().enumerate() {
                let d = root.join(class);
                if !d.is_dir() {
                    continue;
                }
                let class_files = files_under(&d)?;
                if class_files.is_empty() {
                    report
                        .bad_samples
                        .handle(policy, &d, "empty class folder")?;
                }
                files.extend(class_files.into_iter().map(|f| (f, Some(c as u32))));
            }
        }
        None => files = files_under(root)?.into_iter().map(|f| (f, None)).collect(),
    }
    let keep = match opts.residency {
        Residency::Memory => true,
        Residency::Disk => false,
        Residency::Auto { budget_bytes } => {
            // The first readable image's decoded size stands for every image's.
            let per = files
                .iter()
                .find_map(|(p, _)| decode(p, opts.size).ok())
                .map_or(0, |(_, h, w, c)| {
                    (h * w * opts.channels.unwrap_or(c)) as u64
                });
            per * files.len() as u64 <= budget_bytes
        }
    };
    // Every file is decoded once (checked); its pixels are kept only in memory mode.
    let decoded: Vec<Result<Decoded, String>> = files
        .par_iter()
        .map(|(p, _)| decode(p, opts.size))
        .collect();
    // The dataset's channels: the option, else RGB as soon as one image has colour.
    let channels = opts.channels.unwrap_or_else(|| {
        if decoded.iter().any(|d| matches!(d, Ok((_, _, _, 3)))) {
            3
        } else {
            1
        }
    });
    let mut shape: Option<(usize, usize, usize)> = None;
    let mut pixels = Vec::new();
    let mut good = Vec::new();
    let mut labels = Vec::new();
    for ((path, label), d) in files.iter().zip(decoded) {
        let (px, h, w, c) = match d {
            Ok(x) => x,
            Err(reason) => {
                report.bad_samples.handle(policy, path, reason)?;
                continue;
            }
        };
        if c != channels && !(c == 1 && channels == 3) {
            report.bad_samples.handle(
                policy,
                path,
                format!("has {c} channel(s), the dataset has {channels}"),
            )?;
            continue;
        }
        let (h0, w0, _) = *shape.get_or_insert((h, w, channels));
        if (h, w) != (h0, w0) {
            report.bad_samples.handle(
                policy,
                path,
                format!("is {h}×{w}, the dataset's images are {h0}×{w0} (set data.image_size to resize)"),
            )?;
            continue;
        }
        if c != channels {
            report.converted(path);
        }
        if keep {
            if c == channels {
                pixels.extend_from_slice(&px);
            } else {
                pixels.extend(grey_to_rgb(&px));
            }
        } else {
            good.push(path.clone());
        }
        if let Some(l) = label {
            labels.push(*l);
        }
    }
    let Some((h, w, c)) = shape else {
        return Err(DataError::file(
            root,
            format!(
                "no usable images ({} files, {} bad)",
                files.len(),
                report.bad_samples.count
            ),
        ));
    };
    let class_names = classes.map(<[String]>::to_vec).unwrap_or_default();
    let labels = classes.is_some().then_some(labels);
    let set = if keep {
        ImageSet::new(name, (h, w, c), pixels, labels, class_names)?
    } else {
        let files = FolderFiles {
            paths: good,
            size: opts.size,
            shape: (h, w, c),
        };
        ImageSet::lazy(name, (h, w, c), Arc::new(files), labels, class_names)?
    };
    Ok((set, report))
}

/// The checked image files of a folder, decoded on every read (the [`Residency::Disk`] storage).
#[derive(Debug)]
struct FolderFiles {
    paths: Vec<PathBuf>,
    size: Option<usize>,
    /// (h, w, c) every file decoded to when the folder was opened (grey files of an RGB set are
    /// converted on every read).
    shape: (usize, usize, usize),
}

impl LazySource for FolderFiles {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, DataError> {
        let path = &self.paths[i];
        let (px, h, w, c) = decode(path, self.size).map_err(|r| DataError::file(path, r))?;
        let (px, c) = if c == 1 && self.shape.2 == 3 {
            (grey_to_rgb(&px), 3)
        } else {
            (px, c)
        };
        if (h, w, c) != self.shape {
            let (h0, w0, c0) = self.shape;
            return Err(DataError::file(
                path,
                format!(
                    "changed since the dataset was opened: now {h}×{w}×{c}, was {h0}×{w0}×{c0}"
                ),
            ));
        }
        Ok(px)
    }

    fn select(&self, indices: &[usize]) -> Arc<dyn LazySource> {
        Arc::new(FolderFiles {
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            size: self.size,
            shape: self.shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gyre-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn save(path: &Path, img: image::DynamicImage, fmt: image::ImageFormat) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save_with_format(path, fmt).unwrap();
    }

    fn rgb(w: u32, h: u32, v: u8) -> image::DynamicImage {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([v, (x * 10) as u8, (y * 10) as u8])
        }))
    }

    fn grey(w: u32, h: u32, v: u8) -> image::DynamicImage {
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(w, h, image::Luma([v])))
    }

    #[test]
    fn labelled_folder_reads_classes_in_order_with_pngs_exactly() {
        let root = tmp("labelled");
        save(
            &root.join("cat/b.png"),
            rgb(4, 3, 10),
            image::ImageFormat::Png,
        );
        save(
            &root.join("cat/a.png"),
            rgb(4, 3, 20),
            image::ImageFormat::Png,
        );
        save(
            &root.join("ant/deep/x.png"),
            rgb(4, 3, 30),
            image::ImageFormat::Png,
        );
        std::fs::write(root.join("cat/.DS_Store"), b"junk").unwrap();
        let opts = FolderOptions {
            labelled: true,
            ..Default::default()
        };
        let (set, bad) = load_image_folder(&root, "t", opts).unwrap();
        assert_eq!(bad, LoadReport::default());
        assert_eq!(set.classes, ["ant", "cat"]);
        assert_eq!(set.labels().unwrap(), [0, 1, 1]);
        assert_eq!(
            (set.height, set.width, set.channels, set.len()),
            (3, 4, 3, 3)
        );
        // Sorted paths: ant/deep/x, cat/a, cat/b; PNG is lossless.
        assert_eq!(&set.image(1).unwrap()[..3], &[20, 0, 0]);
        assert_eq!(&set.image(2).unwrap()[..3], &[10, 0, 0]);
        assert_eq!(&set.image(0).unwrap()[3..6], &[30, 10, 0]);
        // Unlabelled: the same files, no labels.
        let (u, _) = load_image_folder(&root, "u", FolderOptions::default()).unwrap();
        assert_eq!((u.len(), u.labels()), (3, None));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn jpeg_and_resize_to_a_square() {
        let root = tmp("resize");
        save(
            &root.join("a.jpg"),
            rgb(64, 48, 200),
            image::ImageFormat::Jpeg,
        );
        save(
            &root.join("b.jpg"),
            rgb(30, 40, 100),
            image::ImageFormat::Jpeg,
        );
        let opts = FolderOptions {
            size: Some(16),
            ..Default::default()
        };
        let (set, bad) = load_image_folder(&root, "r", opts).unwrap();
        assert_eq!(bad.bad_samples.count, 0);
        assert_eq!(
            (set.len(), set.height, set.width, set.channels),
            (2, 16, 16, 3)
        );
        // JPEG is lossy: the red channel of a flat 200 stays near 200.
        assert!(
            (set.image(0).unwrap()[0] as i32 - 200).abs() < 8,
            "{}",
            set.image(0).unwrap()[0]
        );
        std::fs::remove_dir_all(&root).ok();
    }

    /// Every kind of bad sample: "fail" names the file and the reason, "skip" counts them.
    #[test]
    fn bad_samples_fail_or_skip_with_paths() {
        let root = tmp("bad");
        save(
            &root.join("a/ok.png"),
            rgb(8, 8, 1),
            image::ImageFormat::Png,
        );
        save(
            &root.join("a/ok2.jpg"),
            rgb(8, 8, 2),
            image::ImageFormat::Jpeg,
        );
        // A truncated PNG, a corrupt JPEG, a JPEG cut to 70% of its bytes (which the decoder
        // accepts), a non-image, a wrong size, an empty class — and a grey image, which an RGB
        // dataset converts.
        let mut png = Vec::new();
        rgb(8, 8, 3)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(root.join("a/truncated.png"), &png[..png.len() / 2]).unwrap();
        let mut jpg = Vec::new();
        rgb(8, 8, 3)
            .write_to(
                &mut std::io::Cursor::new(&mut jpg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        // Keep the JPEG signature (so it is read as a JPEG), wreck the segments after it.
        jpg[4..60].fill(0xAB);
        std::fs::write(root.join("a/corrupt.jpg"), &jpg).unwrap();
        let mut whole = Vec::new();
        rgb(64, 64, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut whole),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let cut = &whole[..whole.len() * 7 / 10];
        assert!(
            image::load_from_memory(cut).is_ok(),
            "the decoder alone accepts it"
        );
        std::fs::write(root.join("a/cut.jpg"), cut).unwrap();
        std::fs::write(root.join("a/notes.txt"), b"not an image").unwrap();
        save(
            &root.join("b/grey.png"),
            grey(8, 8, 9),
            image::ImageFormat::Png,
        );
        save(
            &root.join("b/big.png"),
            rgb(9, 8, 1),
            image::ImageFormat::Png,
        );
        std::fs::create_dir_all(root.join("c_empty")).unwrap();

        let fail = |only: &str| {
            let r = tmp(&format!("bad-{only}"));
            let src = root.join(only);
            let dst = r.join(only);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            if src.is_dir() {
                std::fs::create_dir_all(&dst).unwrap();
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
            // One good image so that the dataset's shape is known first.
            save(
                &r.join("a/0good.png"),
                rgb(8, 8, 1),
                image::ImageFormat::Png,
            );
            let opts = FolderOptions {
                labelled: true,
                ..Default::default()
            };
            let e = load_image_folder(&r, "f", opts).unwrap_err().to_string();
            std::fs::remove_dir_all(&r).ok();
            e
        };
        let e = fail("a/truncated.png");
        assert!(e.contains("truncated.png: not a readable image"), "{e}");
        let e = fail("a/corrupt.jpg");
        assert!(e.contains("corrupt.jpg: truncated JPEG"), "{e}");
        let e = fail("a/cut.jpg");
        assert!(e.contains("cut.jpg: truncated JPEG: the data ends"), "{e}");
        let e = fail("a/notes.txt");
        assert!(e.contains("notes.txt: not a readable image"), "{e}");
        let e = fail("b/big.png");
        assert!(
            e.contains("big.png: is 8×9, the dataset's images are 8×8"),
            "{e}"
        );
        let e = fail("c_empty");
        assert!(e.contains("c_empty: empty class folder"), "{e}");

        let opts = FolderOptions {
            labelled: true,
            on_bad_sample: OnBadSample::Skip,
            ..Default::default()
        };
        let (set, report) = load_image_folder(&root, "s", opts).unwrap();
        // ok.png, ok2.jpg and the converted grey.png.
        assert_eq!(set.len(), 3);
        assert_eq!(report.grey_to_rgb, 1);
        assert!(report.grey_to_rgb_first[0].ends_with("b/grey.png"));
        // b/grey.png is the third image in path order: its grey value 9 in all three channels.
        assert_eq!(&set.image(2).unwrap()[..6], &[9, 9, 9, 9, 9, 9]);
        let bad = &report.bad_samples;
        assert_eq!(bad.count, 6);
        assert_eq!(bad.first.len(), 5);
        // Kept on disk: the checking pass finds the same bad samples; the rest read the same.
        let disk = FolderOptions {
            residency: Residency::Disk,
            ..opts
        };
        let (lazy, report_lazy) = load_image_folder(&root, "s", disk).unwrap();
        assert!(!lazy.in_memory());
        assert_eq!(report_lazy, report);
        assert_eq!(lazy.image(1).unwrap(), set.image(1).unwrap());
        assert_eq!(lazy.image(2).unwrap(), set.image(2).unwrap());
        // Listing finds the empty class first, then decoding the files in path order.
        assert!(
            bad.first[0].ends_with("c_empty: empty class folder"),
            "{:?}",
            bad.first
        );
        assert!(
            bad.first[1].contains("a/corrupt.jpg: truncated JPEG"),
            "{:?}",
            bad.first
        );
        // The empty class keeps its index: labels stay those of the folders.
        assert_eq!(set.classes, ["a", "b", "c_empty"]);
        // A folder with nothing usable is an error even under "skip".
        let none = tmp("none");
        std::fs::write(none.join("x.jpg"), b"nope").unwrap();
        let opts = FolderOptions {
            on_bad_sample: OnBadSample::Skip,
            ..Default::default()
        };
        let e = load_image_folder(&none, "n", opts).unwrap_err().to_string();
        assert!(e.contains("no usable images (1 files, 1 bad)"), "{e}");
        std::fs::remove_dir_all(&none).ok();
        std::fs::remove_dir_all(&root).ok();
    }

    /// Train and test read with one class list: a class missing from test keeps its label in
    /// train and is a warning; a class only in test is an error naming it.
    #[test]
    fn train_and_test_share_the_training_class_list() {
        let root = tmp("splits");
        for (split, classes) in [("train", &["a", "b", "c"][..]), ("test", &["a", "c"][..])] {
            for (k, c) in classes.iter().enumerate() {
                let v = 10 * (k as u8 + 1);
                let p = root.join(split).join(c).join("x.png");
                save(&p, rgb(4, 4, v), image::ImageFormat::Png);
            }
        }
        let opts = FolderOptions::default();
        let (tr, te, report) =
            load_train_test_folders(&root.join("train"), &root.join("test"), opts).unwrap();
        assert_eq!(tr.classes, ["a", "b", "c"]);
        assert_eq!(te.classes, tr.classes);
        assert_eq!(tr.labels().unwrap(), [0, 1, 2]);
        // Each split numbering its own folders would have given test/c the label 1 (b's).
        assert_eq!(te.labels().unwrap(), [0, 2]);
        assert_eq!(report.warnings.len(), 1);
        assert!(
            report.warnings[0].contains("no folder for class 'b'"),
            "{:?}",
            report.warnings
        );
        save(
            &root.join("test/d/y.png"),
            rgb(4, 4, 1),
            image::ImageFormat::Png,
        );
        let e = load_train_test_folders(&root.join("train"), &root.join("test"), opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test/d: class 'd' has no folder in") && e.contains("(a, b, c)"),
            "{e}"
        );
        // A grey dataset refuses a colour image (nothing converts RGB to grey).
        let grey_only = FolderOptions {
            channels: Some(1),
            labelled: true,
            ..Default::default()
        };
        let e = load_image_folder(&root.join("train"), "g", grey_only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 channel(s), the dataset has 1"), "{e}");
        std::fs::remove_dir_all(&root).ok();
    }

    /// 40 RGB images of 3 classes, PNG and JPEG, sizes 9×11 and 12×12 (resized to 8 by the options).
    fn mixed_folder(name: &str) -> PathBuf {
        let root = tmp(name);
        for k in 0..40u32 {
            let (w, h) = if k % 2 == 0 { (11, 9) } else { (12, 12) };
            let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(k * 6) as u8, (x * 20) as u8, (y * 25 + k) as u8])
            }));
            let (ext, fmt) = if k % 3 == 0 {
                ("jpg", image::ImageFormat::Jpeg)
            } else {
                ("png", image::ImageFormat::Png)
            };
            save(&root.join(format!("c{}/{k:02}.{ext}", k % 3)), img, fmt);
        }
        root
    }

    fn opts(residency: Residency) -> FolderOptions {
        FolderOptions {
            labelled: true,
            size: Some(8),
            residency,
            ..Default::default()
        }
    }

    #[test]
    fn disk_residency_reads_the_same_images_as_memory() {
        let root = mixed_folder("disk");
        let (mem, _) = load_image_folder(&root, "m", opts(Residency::Memory)).unwrap();
        let (disk, _) = load_image_folder(&root, "d", opts(Residency::Disk)).unwrap();
        assert!(mem.in_memory() && !disk.in_memory());
        assert_eq!(disk.len(), 40);
        assert_eq!(mem.labels(), disk.labels());
        for i in 0..40 {
            assert_eq!(mem.image(i).unwrap(), disk.image(i).unwrap(), "image {i}");
        }
        // A selection of a lazy set stays lazy and picks the same images.
        let sel = disk.select("s", &[7, 3]);
        assert!(!sel.in_memory());
        assert_eq!(sel.image(0).unwrap(), mem.image(7).unwrap());
        assert_eq!(
            sel.labels().unwrap(),
            &[mem.label(7).unwrap(), mem.label(3).unwrap()]
        );
        let a = mem.normalized_chw(5..12, &[0.5; 3], &[0.25; 3]).unwrap();
        let b = disk.normalized_chw(5..12, &[0.5; 3], &[0.25; 3]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn auto_residency_keeps_what_fits_in_the_budget() {
        let root = mixed_folder("auto");
        // 40 images of 8×8×3 = 7680 bytes.
        let fits = Residency::Auto { budget_bytes: 7680 };
        let too_big = Residency::Auto { budget_bytes: 7679 };
        assert!(load_image_folder(&root, "a", opts(fits))
            .unwrap()
            .0
            .in_memory());
        assert!(!load_image_folder(&root, "b", opts(too_big))
            .unwrap()
            .0
            .in_memory());
    }

    #[test]
    fn a_file_broken_after_opening_is_an_error_naming_it() {
        let root = mixed_folder("broken-later");
        let (disk, _) = load_image_folder(&root, "d", opts(Residency::Disk)).unwrap();
        let victim = root.join("c1/01.png");
        std::fs::write(&victim, b"no longer a png").unwrap();
        // Image 1 in sorted order is c0/03.jpg; find the victim's index through its label order:
        // c0 has 14 files (k = 0, 3, …, 39), so c1/01.png is index 14.
        let e = disk.image(14).unwrap_err().to_string();
        assert!(
            e.contains("c1/01.png") && e.contains("not a readable image"),
            "{e}"
        );
        assert!(disk.image(0).is_ok());
    }

    fn epoch_views(set: &ImageSet, threads: usize, prefetch: usize) -> Vec<Vec<Vec<f32>>> {
        use crate::{AugmentConfig, Loader, LoaderConfig, ViewPipeline};
        let aug = AugmentConfig {
            crop_scale: [0.2, 1.0],
            hflip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            ..AugmentConfig::identity(8)
        };
        let v = ViewPipeline::new(aug, &[0.5; 3], &[0.25; 3]).unwrap();
        let cfg = LoaderConfig {
            batch_size: 8,
            seed: 3,
            prefetch,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let l = Loader::new(Arc::new(set.clone()), vec![v.clone(), v], cfg).unwrap();
            l.epoch(1, 0).map(|b| b.unwrap().views).collect()
        })
    }

    /// Decoding every epoch changes nothing a model sees, at any thread count or prefetch depth.
    #[test]
    fn a_disk_set_gives_the_memory_sets_batches_at_one_and_two_threads() {
        let root = mixed_folder("batches");
        let (mem, _) = load_image_folder(&root, "m", opts(Residency::Memory)).unwrap();
        let (disk, _) = load_image_folder(&root, "d", opts(Residency::Disk)).unwrap();
        let reference = epoch_views(&mem, 1, 0);
        assert_eq!(reference.len(), 5);
        assert_eq!(epoch_views(&disk, 1, 0), reference);
        assert_eq!(epoch_views(&disk, 2, 3), reference);
    }

    /// The loader stops the epoch at a file that no longer decodes, with its path.
    #[test]
    fn the_loader_reports_a_file_broken_mid_training() {
        let root = mixed_folder("broken-loader");
        let (disk, _) = load_image_folder(&root, "d", opts(Residency::Disk)).unwrap();
        std::fs::write(root.join("c2/02.png"), b"").unwrap();
        let l = crate::Loader::new(
            Arc::new(disk),
            vec![crate::ViewPipeline::new(
                crate::AugmentConfig::identity(8),
                &[0.5; 3],
                &[0.25; 3],
            )
            .unwrap()],
            crate::LoaderConfig {
                batch_size: 40,
                seed: 0,
                prefetch: 1,
            },
        )
        .unwrap();
        let out: Vec<_> = l.epoch(0, 0).collect();
        assert_eq!(out.len(), 1);
        let e = out[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("c2/02.png"), "{e}");
    }
}
