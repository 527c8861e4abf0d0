//! Real dense ground truth, for evaluating correspondence only: two stereo pairs with true
//! disparity (Middlebury "Aloe" and "Motorcycle") and one image pair with its true homography
//! (Oxford "Graffiti" 1 → 3). `cargo xtask data dense-gt` puts the files (sha256-pinned, below)
//! into `data/dense-gt/`; docs/data.md names their sources and licences.
//!
//! Conventions, checked on the files themselves (docs/data.md): left pixel `(x, y)` shows the
//! same point as right pixel `(x − d, y)`, `d` in pixels at the images' resolution; Aloe's
//! 8-bit disparity is `d` itself with 0 = unknown, Motorcycle's float32 `.npy` has `inf` for
//! unknown; the Graffiti homography maps a `graf1.png` pixel position to `graf3.png`'s
//! (homogeneous, pixel indices as coordinates).

use crate::error::DataError;
use std::path::{Path, PathBuf};

/// Where a file comes from: a Debian package or a PyPI wheel, and the member's path in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `opencv-doc` 4.6.0+dfsg-12, under `usr/share/doc/opencv-doc/examples/data/`.
    OpencvDoc(&'static str),
    /// `scikit-image==0.26.0`'s wheel, `skimage/data/<name>`.
    SkimageWheel(&'static str),
    /// The `arr_0.npy` member of this wheel member (an `.npz`).
    SkimageNpz(&'static str),
}

/// The files of `data/dense-gt/`: name, sha256 of its bytes, origin.
pub const FILES: [(&str, &str, Origin); 9] = [
    (
        "aloeL.jpg",
        "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
        Origin::OpencvDoc("aloeL.jpg"),
    ),
    (
        "aloeR.jpg",
        "9b23100df31a846bc6e6a6545563b2b4120b948c9835c7d36cde00af77f4503e",
        Origin::OpencvDoc("aloeR.jpg"),
    ),
    (
        "aloeGT.png",
        "39ce4f3cb48d797d1091c5152f93361d8104298c337f8a1c134d87dda3442c04",
        Origin::OpencvDoc("aloeGT.png"),
    ),
    (
        "graf1.png",
        "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5",
        Origin::OpencvDoc("graf1.png"),
    ),
    (
        "graf3.png",
        "492e0e96f21748d093e1a29f4dbfd46528bd75966937e85ce7c8abc0f361fc15",
        Origin::OpencvDoc("graf3.png"),
    ),
    (
        "H1to3p.xml",
        "9cd961fef3542462153a95acad164bc0da784622034a4eaf384c9beeaa19588f",
        Origin::OpencvDoc("H1to3p.xml"),
    ),
    (
        "motorcycle_left.png",
        "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        Origin::SkimageWheel("motorcycle_left.png"),
    ),
    (
        "motorcycle_right.png",
        "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
        Origin::SkimageWheel("motorcycle_right.png"),
    ),
    (
        "motorcycle_disp.npy",
        "d9cb20944d66309b8a25bff2d7a5085ec6202cd52469034bbd0ba19a6c270940",
        Origin::SkimageNpz("motorcycle_disp.npz"),
    ),
];

/// An RGB image, HWC u8.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb {
    /// The image resized to `width` pixels wide, the aspect kept (height rounded; triangle
    /// filter).
    pub fn resized(&self, width: usize) -> Rgb {
        let h = ((self.height as f64 * width as f64 / self.width as f64).round() as usize).max(1);
        let buf =
            image::RgbImage::from_raw(self.width as u32, self.height as u32, self.pixels.clone())
                .expect("an Rgb holds width·height·3 bytes");
        let out = image::imageops::resize(
            &buf,
            width as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        Rgb {
            width,
            height: h,
            pixels: out.into_raw(),
        }
    }
}

/// A rectified stereo pair and the left image's true disparity (`NaN` = unknown).
#[derive(Debug, Clone)]
pub struct StereoPair {
    pub name: &'static str,
    pub left: Rgb,
    pub right: Rgb,
    /// `[height, width]`, pixels.
    pub disparity: Vec<f32>,
}

/// Two views of a plane and the homography from the first's pixel positions to the second's.
#[derive(Debug, Clone)]
pub struct HomographyPair {
    pub name: &'static str,
    pub first: Rgb,
    pub second: Rgb,
    pub h: [[f64; 3]; 3],
}

impl HomographyPair {
    /// Where pixel position `(x, y)` of the first image is in the second.
    pub fn map(&self, x: f64, y: f64) -> [f64; 2] {
        let h = &self.h;
        let w = h[2][0] * x + h[2][1] * y + h[2][2];
        [
            (h[0][0] * x + h[0][1] * y + h[0][2]) / w,
            (h[1][0] * x + h[1][1] * y + h[1][2]) / w,
        ]
    }
}

/// Decodes an image file into RGB.
pub fn read_rgb(path: &Path) -> Result<Rgb, DataError> {
    let img = decode(path)?.to_rgb8();
    Ok(Rgb {
        width: img.width() as usize,
        height: img.height() as usize,
        pixels: img.into_raw(),
    })
}

/// Decodes an image file; the error names it.
fn decode(path: &Path) -> Result<image::DynamicImage, DataError> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    image::load_from_memory(&bytes)
        .map_err(|e| DataError::file(path, format!("not a readable image: {e}")))
}

fn same_size(a: &Rgb, b: &Rgb, b_path: &Path, what: &str) -> Result<(), DataError> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(DataError::file(
            b_path,
            format!(
                "{what} is {}×{}, its image {}×{}",
                b.width, b.height, a.width, a.height
            ),
        ));
    }
    Ok(())
}

/// Middlebury "Aloe" (full size, 1282×1110) from `dir`.
pub fn aloe(dir: &Path) -> Result<StereoPair, DataError> {
    let (lp, rp, gp) = (
        dir.join("aloeL.jpg"),
        dir.join("aloeR.jpg"),
        dir.join("aloeGT.png"),
    );
    let left = read_rgb(&lp)?;
    let right = read_rgb(&rp)?;
    same_size(&left, &right, &rp, "the right image")?;
    let gt = decode(&gp)?.to_luma8();
    let (w, h) = (gt.width() as usize, gt.height() as usize);
    if (w, h) != (left.width, left.height) {
        return Err(DataError::file(
            &gp,
            format!(
                "the disparity map is {w}×{h}, its image {}×{}",
                left.width, left.height
            ),
        ));
    }
    let disparity = gt
        .into_raw()
        .into_iter()
        .map(|v| if v == 0 { f32::NAN } else { v as f32 })
        .collect();
    Ok(StereoPair {
        name: "middlebury-aloe",
        left,
        right,
        disparity,
    })
}

/// Middlebury 2014 "Motorcycle" (741×500, as scikit-image ships it) from `dir`.
pub fn motorcycle(dir: &Path) -> Result<StereoPair, DataError> {
    let (lp, rp, dp) = (
        dir.join("motorcycle_left.png"),
        dir.join("motorcycle_right.png"),
        dir.join("motorcycle_disp.npy"),
    );
    let left = read_rgb(&lp)?;
    let right = read_rgb(&rp)?;
    same_size(&left, &right, &rp, "the right image")?;
    let (shape, values) = read_npy_f32(&dp)?;
    if shape != [left.height, left.width] {
        return Err(DataError::file(
            &dp,
            format!(
                "the disparity map has shape {shape:?}, its image is {}×{} (height {}, width {})",
                left.width, left.height, left.height, left.width
            ),
        ));
    }
    let disparity = values
        .into_iter()
        .map(|v| if v.is_finite() { v } else { f32::NAN })
        .collect();
    Ok(StereoPair {
        name: "middlebury-motorcycle",
        left,
        right,
        disparity,
    })
}

/// Oxford "Graffiti" 1 → 3 (800×640) from `dir`.
pub fn graffiti(dir: &Path) -> Result<HomographyPair, DataError> {
    let (ap, bp, hp) = (
        dir.join("graf1.png"),
        dir.join("graf3.png"),
        dir.join("H1to3p.xml"),
    );
    let first = read_rgb(&ap)?;
    let second = read_rgb(&bp)?;
    let text = std::fs::read_to_string(&hp)
        .map_err(|e| DataError::file(&hp, format!("cannot read: {e}")))?;
    let h = parse_opencv_matrix3(&text).map_err(|p| DataError::file(&hp, p))?;
    Ok(HomographyPair {
        name: "oxford-graffiti-1-3",
        first,
        second,
        h,
    })
}

/// The 3×3 `<data>` of an OpenCV XML `opencv-matrix` with `rows`/`cols` 3.
fn parse_opencv_matrix3(text: &str) -> Result<[[f64; 3]; 3], String> {
    let field = |tag: &str| -> Result<&str, String> {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = text.find(&open).ok_or(format!("no <{tag}> element"))? + open.len();
        let end = text[start..]
            .find(&close)
            .ok_or(format!("<{tag}> is not closed"))?
            + start;
        Ok(text[start..end].trim())
    };
    if field("rows")? != "3" || field("cols")? != "3" {
        return Err("rows and cols: expected a 3×3 matrix".into());
    }
    let vals: Vec<f64> = field("data")?
        .split_whitespace()
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| format!("data: '{t}' is not a number"))
        })
        .collect::<Result<_, _>>()?;
    if vals.len() != 9 || vals.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "data: expected 9 finite numbers, found {}",
            vals.len()
        ));
    }
    Ok([
        [vals[0], vals[1], vals[2]],
        [vals[3], vals[4], vals[5]],
        [vals[6], vals[7], vals[8]],
    ])
}

/// A little-endian float32, C-order `.npy` file (format 1.0–3.0): its shape and values.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    parse_npy_f32(&bytes).map_err(|p| DataError::file(path, p))
}

fn parse_npy_f32(b: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = b
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!(
            "dtype: expected little-endian float32 ('<f4'), header {header}"
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err("fortran_order: only C order is read".into());
    }
    let shape_start = header.find("'shape': (").ok_or("no shape in the header")? + 10;
    let shape_end = header[shape_start..]
        .find(')')
        .ok_or("unterminated shape")?
        + shape_start;
    let shape: Vec<usize> = header[shape_start..shape_end]
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<usize>()
                .map_err(|_| format!("shape: '{t}' is not a size"))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let data = &b[start + header_len..];
    if data.len() != 4 * n {
        return Err(format!(
            "{} data bytes for shape {shape:?} ({} expected)",
            data.len(),
            4 * n
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

/// `data/dense-gt` under `root` (default: the current directory's `data/dense-gt`), or an
/// error saying how to get it.
pub fn locate(root: Option<&Path>) -> Result<PathBuf, DataError> {
    let dir = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("data/dense-gt"));
    if FILES.iter().all(|(n, _, _)| dir.join(n).is_file()) {
        return Ok(dir);
    }
    Err(DataError::NotFound {
        name: "dense-gt".into(),
        hint: format!(
            "{} lacks some of its files; run `cargo xtask data dense-gt`",
            dir.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &str, values: &[f32]) -> Vec<u8> {
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn npy_float32_files_are_read_and_bad_ones_named() {
        let (shape, v) =
            parse_npy_f32(&npy("(2, 3)", &[1.0, 2.0, 3.0, 4.0, f32::INFINITY, 6.0])).unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(v[4], f32::INFINITY);
        assert_eq!(v[5], 6.0);
        let (shape, _) = parse_npy_f32(&npy("(4,)", &[0.0; 4])).unwrap();
        assert_eq!(shape, [4]);
        let mut short = npy("(2, 3)", &[0.0; 6]);
        short.truncate(short.len() - 4);
        assert!(parse_npy_f32(&short)
            .unwrap_err()
            .contains("20 data bytes for shape [2, 3] (24 expected)"));
        let mut f8 = npy("(1,)", &[0.0]);
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at..at + 3].copy_from_slice(b"<f8");
        assert!(parse_npy_f32(&f8).unwrap_err().starts_with("dtype"));
        assert!(parse_npy_f32(b"PK\x03\x04 zip")
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn the_opencv_homography_parses_and_maps_points() {
        let xml = "<?xml version=\"1.0\"?>\n<opencv_storage>\n<H13 type_id=\"opencv-matrix\">\n  \
                   <rows>3</rows>\n  <cols>3</cols>\n  <dt>d</dt>\n  <data>\n\t2.0 0 10\n\t0 3 -5\n\t0 0 1 </data></H13>\n</opencv_storage>\n";
        let h = parse_opencv_matrix3(xml).unwrap();
        let pair = HomographyPair {
            name: "t",
            first: Rgb {
                width: 1,
                height: 1,
                pixels: vec![0; 3],
            },
            second: Rgb {
                width: 1,
                height: 1,
                pixels: vec![0; 3],
            },
            h,
        };
        assert_eq!(pair.map(1.0, 2.0), [12.0, 1.0]);
        // A projective row divides.
        let h2 = parse_opencv_matrix3(&xml.replace("0 0 1 ", "0 0 2 ")).unwrap();
        assert_eq!(HomographyPair { h: h2, ..pair }.map(1.0, 2.0), [6.0, 0.5]);
        assert!(parse_opencv_matrix3(&xml.replace("<rows>3", "<rows>2")).is_err());
        assert_eq!(
            parse_opencv_matrix3(&xml.replace("-5", "x")).unwrap_err(),
            "data: 'x' is not a number"
        );
    }

    #[test]
    fn a_ground_truth_file_whose_size_differs_from_its_image_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("gyre-dense-gt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = |name: &str, w: u32, h: u32| {
            image::RgbImage::from_pixel(w, h, image::Rgb([9, 9, 9]))
                .save(dir.join(name))
                .unwrap()
        };
        png("motorcycle_left.png", 6, 4);
        png("motorcycle_right.png", 6, 4);
        std::fs::write(dir.join("motorcycle_disp.npy"), npy("(4, 5)", &[1.0; 20])).unwrap();
        let e = motorcycle(&dir).unwrap_err().to_string();
        assert!(
            e.contains("motorcycle_disp.npy: the disparity map has shape [4, 5], its image is 6×4"),
            "{e}"
        );
        std::fs::write(
            dir.join("motorcycle_disp.npy"),
            npy("(4, 6)", &[1.0, f32::INFINITY].repeat(12)),
        )
        .unwrap();
        let ok = motorcycle(&dir).unwrap();
        assert_eq!(ok.disparity[0], 1.0);
        assert!(ok.disparity[1].is_nan());
        png("motorcycle_right.png", 5, 4);
        let e = motorcycle(&dir).unwrap_err().to_string();
        assert!(
            e.contains("motorcycle_right.png: the right image is 5×4, its image 6×4"),
            "{e}"
        );
        std::fs::write(dir.join("aloeL.jpg"), b"not a jpeg").unwrap();
        let e = aloe(&dir).unwrap_err().to_string();
        assert!(e.contains("aloeL.jpg: not a readable image"), "{e}");
        let e = locate(Some(&dir)).unwrap_err().to_string();
        assert!(e.contains("cargo xtask data dense-gt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
