//! Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT, Zalando SE): 28×28 grey, 10 classes, 60k train
//! and 10k test images in IDX files. The 10k test split is embedded in the binary as the default
//! data; the full split is found on disk.

use crate::dataset::ImageSet;
use crate::error::DataError;
use crate::idx::{parse_idx, read_idx};
use std::path::{Path, PathBuf};

pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Mean and standard deviation of the training pixels, in [0, 1] units.
pub const MEAN: f32 = 0.2860;
pub const STD: f32 = 0.3530;

/// The official source, for users with internet access (`cargo xtask data fashion-mnist` uses it
/// when Debian's package is out of reach).
pub const UPSTREAM_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// sha256 of the four decompressed files (identical in Debian's package and upstream).
pub const RAW_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

static EMBEDDED_IMAGES: &[u8] =
    include_bytes!("../../../data/embedded/fashion-mnist/t10k-images-idx3-ubyte.gz");
static EMBEDDED_LABELS: &[u8] =
    include_bytes!("../../../data/embedded/fashion-mnist/t10k-labels-idx1-ubyte.gz");

fn classes() -> Vec<String> {
    CLASSES.iter().map(|s| s.to_string()).collect()
}

fn build(
    name: &str,
    images: crate::idx::IdxArray,
    labels: crate::idx::IdxArray,
    img_path: &Path,
    lbl_path: &Path,
) -> Result<ImageSet, DataError> {
    if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 {
        return Err(DataError::file(
            img_path,
            format!(
                "expected [n, 28, 28] images, found dimensions {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(DataError::file(
            lbl_path,
            format!(
                "expected {} labels, found dimensions {:?}",
                images.dims[0], labels.dims
            ),
        ));
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(DataError::file(
            lbl_path,
            format!("label {bad} is out of range 0–9"),
        ));
    }
    let labels = labels.data.iter().map(|&l| l as u32).collect();
    ImageSet::new(name, (28, 28, 1), images.data, Some(labels), classes())
}

/// The 10k test split embedded in the binary.
pub fn embedded() -> Result<ImageSet, DataError> {
    let ip = Path::new("<embedded>/t10k-images-idx3-ubyte.gz");
    let lp = Path::new("<embedded>/t10k-labels-idx1-ubyte.gz");
    build(
        "fashion-mnist-embedded",
        parse_idx(EMBEDDED_IMAGES, ip)?,
        parse_idx(EMBEDDED_LABELS, lp)?,
        ip,
        lp,
    )
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::file(
        dir.join(stem),
        "missing (neither the raw file nor its .gz is there)",
    ))
}

/// Loads one split (`"train"` or `"t10k"`) from `dir`.
pub fn load_split(dir: &Path, split: &str) -> Result<ImageSet, DataError> {
    let ip = find_file(dir, &format!("{split}-images-idx3-ubyte"))?;
    let lp = find_file(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let name = if split == "t10k" {
        "fashion-mnist-test"
    } else {
        "fashion-mnist-train"
    };
    build(name, read_idx(&ip)?, read_idx(&lp)?, &ip, &lp)
}

/// Where the full dataset is: `root` if given; else `$GYRE_DATA/fashion-mnist`, `./data/fashion-mnist`
/// (where `cargo xtask data fashion-mnist` puts it), or `/usr/share/datasets/fashion-mnist` (Debian's
/// `dataset-fashion-mnist` package), the first that exists.
pub fn locate(root: Option<&Path>) -> Result<PathBuf, DataError> {
    if let Some(r) = root {
        if r.is_dir() {
            return Ok(r.to_path_buf());
        }
        return Err(DataError::NotFound {
            name: "fashion-mnist".into(),
            hint: format!("data folder {} does not exist", r.display()),
        });
    }
    let mut tried = Vec::new();
    if let Some(d) = std::env::var_os("GYRE_DATA") {
        tried.push(PathBuf::from(d).join("fashion-mnist"));
    }
    tried.push(PathBuf::from("data/fashion-mnist"));
    tried.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
    for t in &tried {
        if t.is_dir() {
            return Ok(t.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(DataError::NotFound {
        name: "fashion-mnist".into(),
        hint: format!(
            "looked in {}; run `cargo xtask data fashion-mnist` (or `apt-get install dataset-fashion-mnist`, or set GYRE_DATA)",
            list.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_test_split_is_the_official_one() {
        let t = embedded().unwrap();
        assert_eq!(t.len(), 10_000);
        let mut counts = [0usize; 10];
        for &l in t.labels().unwrap() {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [1000; 10]);
        // The official test split starts with an ankle boot, a pullover and a trouser.
        assert_eq!(&t.labels().unwrap()[..3], &[9, 2, 1]);
        let mean = (0..t.len())
            .flat_map(|i| t.image(i).unwrap().into_owned())
            .map(|p| p as f64)
            .sum::<f64>()
            / (t.len() * 784) as f64;
        assert!((mean / 255.0 - 0.2868).abs() < 1e-3, "{}", mean / 255.0);
    }

    #[test]
    fn missing_folder_says_how_to_get_it() {
        let e = locate(Some(Path::new("/nonexistent/fm")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/fm does not exist"), "{e}");
        let e = load_split(Path::new("/tmp"), "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("train-images-idx3-ubyte: missing"), "{e}");
    }
}
