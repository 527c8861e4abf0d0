//! Image folders: `root/<class>/<file>` (labelled, classes in sorted folder-name order, files
//! found recursively) or any flat or nested folder of images (unlabelled). JPEG and PNG, grey or
//! RGB (an alpha channel is dropped), decoded in parallel (`image`, whose JPEG decoder is
//! zune-jpeg) into one in-memory u8 [`ImageSet`] — or, when the decoded set would exceed the
//! memory budget ([`Residency`]), checked once and then decoded again on every read, so data
//! larger than memory trains with memory independent of the dataset's size.
//!
//! Every image must end up with the dataset's channel count (the option, else the first image's)
//! and size: with `size = Some(s)` each image is resized (shorter side to s, triangle filter) and
//! centre-cropped to s×s; without, every image must have the first one's size. Anything else —
//! an undecodable or truncated file, a non-image, a wrong channel count or size, an empty class
//! folder — is a bad sample, handled by [`OnBadSample`]. Hidden files (`.name`) are ignored.

use crate::bad_sample::{BadSamples, OnBadSample};
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

/// One decoded image: HWC bytes, height, width, channels.
type Decoded = (Vec<u8>, usize, usize, usize);

fn decode(path: &Path, size: Option<usize>) -> Result<Decoded, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
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
    let color = img.color();
    let grey = !color.has_color();
    Ok(if grey {
        (img.into_luma8().into_raw(), h, w, 1)
    } else {
        (img.into_rgb8().into_raw(), h, w, 3)
    })
}

/// Reads a folder into memory; returns the set and what was skipped.
pub fn load_image_folder(
    root: &Path,
    name: &str,
    opts: FolderOptions,
) -> Result<(ImageSet, BadSamples), DataError> {
    if !root.is_dir() {
        return Err(DataError::file(root, "not a folder"));
    }
    let mut bad = BadSamples::default();
    let policy = opts.on_bad_sample;
    // (path, label) of every candidate file.
    let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
    let mut classes = Vec::new();
    if opts.labelled {
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
        for (c, d) in dirs.iter().enumerate() {
            let class_files = files_under(d)?;
            if class_files.is_empty() {
                bad.handle(policy, d, "empty class folder")?;
            }
            files.extend(class_files.into_iter().map(|f| (f, Some(c as u32))));
            classes.push(
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
    } else {
        files = files_under(root)?.into_iter().map(|f| (f, None)).collect();
    }
    let keep = match opts.residency {
        Residency::Memory => true,
        Residency::Disk => false,
        Residency::Auto { budget_bytes } => {
            // The first readable image's decoded size stands for every image's.
            let per = files
                .iter()
                .find_map(|(p, _)| decode(p, opts.size).ok())
                .map_or(0, |(px, ..)| px.len() as u64);
            per * files.len() as u64 <= budget_bytes
        }
    };
    // Every file is decoded once (checked); its pixels are kept only in memory mode.
    let decoded: Vec<Result<Decoded, String>> = files
        .par_iter()
        .map(|(p, _)| {
            decode(p, opts.size).map(|(px, h, w, c)| (if keep { px } else { Vec::new() }, h, w, c))
        })
        .collect();
    let mut shape: Option<(usize, usize, usize)> = None;
    let mut pixels = Vec::new();
    let mut good = Vec::new();
    let mut labels = Vec::new();
    for ((path, label), d) in files.iter().zip(decoded) {
        let (px, h, w, c) = match d {
            Ok(x) => x,
            Err(reason) => {
                bad.handle(policy, path, reason)?;
                continue;
            }
        };
        let want_c = opts.channels.unwrap_or(shape.map_or(c, |s| s.2));
        if c != want_c {
            bad.handle(
                policy,
                path,
                format!("has {c} channel(s), the dataset has {want_c}"),
            )?;
            continue;
        }
        let (h0, w0, _) = *shape.get_or_insert((h, w, c));
        if (h, w) != (h0, w0) {
            bad.handle(
                policy,
                path,
                format!("is {h}×{w}, the dataset's images are {h0}×{w0} (set data.image_size to resize)"),
            )?;
            continue;
        }
        if keep {
            pixels.extend_from_slice(&px);
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
                bad.count
            ),
        ));
    };
    let labels = opts.labelled.then_some(labels);
    let set = if keep {
        ImageSet::new(name, (h, w, c), pixels, labels, classes)?
    } else {
        let files = FolderFiles {
            paths: good,
            size: opts.size,
            shape: (h, w, c),
        };
        ImageSet::lazy(name, (h, w, c), Arc::new(files), labels, classes)?
    };
    Ok((set, bad))
}

/// The checked image files of a folder, decoded on every read (the [`Residency::Disk`] storage).
#[derive(Debug)]
struct FolderFiles {
    paths: Vec<PathBuf>,
    size: Option<usize>,
    /// (h, w, c) every file decoded to when the folder was opened.
    shape: (usize, usize, usize),
}

impl LazySource for FolderFiles {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, DataError> {
        let path = &self.paths[i];
        let (px, h, w, c) = decode(path, self.size).map_err(|r| DataError::file(path, r))?;
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
        assert_eq!(bad, BadSamples::default());
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
        assert_eq!(bad.count, 0);
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
        // A truncated PNG, a corrupt JPEG, a non-image, a grey image, a wrong size, an empty class.
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
        assert!(e.contains("corrupt.jpg: not a readable image"), "{e}");
        let e = fail("a/notes.txt");
        assert!(e.contains("notes.txt: not a readable image"), "{e}");
        let e = fail("b/grey.png");
        assert!(
            e.contains("grey.png: has 1 channel(s), the dataset has 3"),
            "{e}"
        );
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
        let (set, bad) = load_image_folder(&root, "s", opts).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(bad.count, 6);
        assert_eq!(bad.first.len(), 5);
        // Kept on disk: the checking pass finds the same bad samples; the rest read the same.
        let disk = FolderOptions {
            residency: Residency::Disk,
            ..opts
        };
        let (lazy, bad_lazy) = load_image_folder(&root, "s", disk).unwrap();
        assert!(!lazy.in_memory());
        assert_eq!(bad_lazy, bad);
        assert_eq!(lazy.image(1).unwrap(), set.image(1).unwrap());
        // Listing finds the empty class first, then decoding the files in path order.
        assert!(
            bad.first[0].ends_with("c_empty: empty class folder"),
            "{:?}",
            bad.first
        );
        assert!(
            bad.first[1].contains("a/corrupt.jpg: not a readable image"),
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
