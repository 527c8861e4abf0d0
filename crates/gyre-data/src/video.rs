//! Real video as frame folders: the three example videos of Debian's `opencv-doc` (pedestrians,
//! a film trailer, a tree in wind), decoded once by `cargo xtask data opencv-video` into
//! `data/opencv-video/<video>/00000.png, 00001.png, …`, and read here with checks (a missing,
//! corrupt or differently sized frame, a video shorter than a clip: one line naming the file).
//! Image-level pairs are frames of one video `k` apart; clips are `T` consecutive frames.

use crate::dataset::ImageSet;
use crate::error::DataError;
use std::path::{Path, PathBuf};

/// One source video in `opencv-doc` 4.6.0+dfsg-12 (`usr/share/doc/opencv-doc/examples/data/`).
#[derive(Debug, Clone, Copy)]
pub struct SourceVideo {
    pub name: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
    /// The codec route (what the file holds, as ffprobe names it).
    pub codec: &'static str,
}

pub const VIDEOS: [SourceVideo; 3] = [
    SourceVideo {
        name: "vtest",
        file: "vtest.avi",
        sha256: "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
        codec: "msmpeg4v3 (DivX 3, fourcc div3), 768×576, 10 fps, 795 frames",
    },
    SourceVideo {
        name: "megamind",
        file: "Megamind.avi",
        sha256: "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
        codec: "mpeg4 (Xvid, fourcc XVID), 720×528, 23.976 fps, 270 frames",
    },
    SourceVideo {
        name: "tree",
        file: "tree.avi",
        sha256: "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
        codec: "cinepak (fourcc cvid), 320×240, 15 fps, 68 frames",
    },
];

/// The height frames are decoded at (width keeps the aspect, rounded to even).
pub const FRAME_HEIGHT: usize = 144;

/// A video's frames, in order, as one image set (RGB).
#[derive(Debug, Clone)]
pub struct VideoFrames {
    pub name: String,
    pub frames: ImageSet,
}

impl VideoFrames {
    pub fn width(&self) -> usize {
        self.frames.width
    }

    pub fn height(&self) -> usize {
        self.frames.height
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The first frames of every clip of `t` consecutive frames, one clip every `stride` frames;
    /// an error when the video is shorter than one clip.
    pub fn clip_starts(&self, t: usize, stride: usize) -> Result<Vec<usize>, DataError> {
        if t == 0 || stride == 0 {
            return Err(DataError::Loader(format!(
                "{}: clip length {t} and stride {stride} must be positive",
                self.name
            )));
        }
        if self.len() < t {
            return Err(DataError::Loader(format!(
                "{}: {} frames, shorter than one clip of {t}",
                self.name,
                self.len()
            )));
        }
        Ok((0..=self.len() - t).step_by(stride).collect())
    }

    /// Index pairs `(i, i + k)` of frames `k` apart: the image-level positives.
    pub fn pairs(&self, k: usize) -> Result<Vec<(usize, usize)>, DataError> {
        if k == 0 || self.len() <= k {
            return Err(DataError::Loader(format!(
                "{}: {} frames hold no pair {k} apart",
                self.name,
                self.len()
            )));
        }
        Ok((0..self.len() - k).map(|i| (i, i + k)).collect())
    }
}

impl VideoFrames {
    /// Every frame resized (shorter side to `size`, bilinear) and centre-cropped to a square, as
    /// an image folder's `size` does.
    pub fn squared(&self, size: usize) -> Result<ImageSet, DataError> {
        let (w, h) = (self.width(), self.height());
        if size == 0 {
            return Err(DataError::Loader(format!(
                "{}: frame size must be positive",
                self.name
            )));
        }
        let (nw, nh) = if w <= h {
            (size, (h * size).div_ceil(w))
        } else {
            ((w * size).div_ceil(h), size)
        };
        let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
        let mut pixels = Vec::with_capacity(self.len() * size * size * 3);
        for i in 0..self.len() {
            let raw = self.frames.image(i)?.into_owned();
            let img = image::RgbImage::from_raw(w as u32, h as u32, raw).expect("frame size");
            let r = image::imageops::resize(
                &img,
                nw as u32,
                nh as u32,
                image::imageops::FilterType::Triangle,
            );
            let c = image::imageops::crop_imm(&r, x0 as u32, y0 as u32, size as u32, size as u32)
                .to_image();
            pixels.extend_from_slice(c.as_raw());
        }
        ImageSet::new(
            format!("{}[{size}×{size}]", self.name),
            (size, size, 3),
            pixels,
            None,
            Vec::new(),
        )
    }
}

/// The folder `cargo xtask data opencv-video` writes (`root`, else `data/opencv-video`), when it
/// holds a frame folder for every video of [`VIDEOS`].
pub fn locate(root: Option<&Path>) -> Result<PathBuf, DataError> {
    let dir = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("data/opencv-video"));
    if VIDEOS.iter().all(|v| dir.join(v.name).is_dir()) {
        return Ok(dir);
    }
    Err(DataError::NotFound {
        name: "opencv-video".into(),
        hint: format!(
            "{} lacks a frame folder per video; run `cargo xtask data opencv-video`",
            dir.display()
        ),
    })
}

/// Reads the frames `00000.png`, `00001.png`, … of `dir` (other files are ignored). A gap in
/// the numbering, a frame that does not decode, or one of another size is an error naming the
/// file.
pub fn load_frames(dir: &Path, name: &str) -> Result<VideoFrames, DataError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::file(dir, format!("cannot list the frames: {e}")))?;
    let mut numbers = Vec::new();
    for e in entries {
        let e = e.map_err(|e| DataError::file(dir, format!("cannot list the frames: {e}")))?;
        let file = e.file_name();
        let file = file.to_string_lossy();
        if let Some(stem) = file.strip_suffix(".png") {
            if stem.len() == 5 && stem.bytes().all(|b| b.is_ascii_digit()) {
                numbers.push(stem.parse::<usize>().expect("five digits"));
            }
        }
    }
    numbers.sort_unstable();
    if numbers.is_empty() {
        return Err(DataError::file(dir, "no frames (00000.png, 00001.png, …)"));
    }
    let path = |i: usize| -> PathBuf { dir.join(format!("{i:05}.png")) };
    if let Some(gap) = (0..numbers.len()).find(|&i| numbers[i] != i) {
        return Err(DataError::file(
            path(gap),
            format!(
                "missing: the frames run to {:05}.png but this one is not there",
                numbers[numbers.len() - 1]
            ),
        ));
    }
    let mut size = None;
    let mut pixels = Vec::new();
    for i in 0..numbers.len() {
        let p = path(i);
        let bytes =
            std::fs::read(&p).map_err(|e| DataError::file(&p, format!("cannot read: {e}")))?;
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .map_err(|e| DataError::file(&p, format!("not a readable PNG frame: {e}")))?
            .to_rgb8();
        let wh = (img.width() as usize, img.height() as usize);
        match size {
            None => size = Some(wh),
            Some(s) if s != wh => {
                return Err(DataError::file(
                    &p,
                    format!(
                        "frame is {}×{}, the video's first frame {}×{}",
                        wh.0, wh.1, s.0, s.1
                    ),
                ))
            }
            _ => {}
        }
        pixels.extend_from_slice(img.as_raw());
    }
    let (width, height) = size.expect("at least one frame");
    let frames = ImageSet::new(name, (height, width, 3), pixels, None, Vec::new())?;
    Ok(VideoFrames {
        name: name.to_string(),
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gyre-video-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn frame(dir: &Path, i: usize, w: u32, h: u32) {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([i as u8, x as u8, y as u8]))
            .save(dir.join(format!("{i:05}.png")))
            .unwrap();
    }

    #[test]
    fn squared_frames_are_centre_crops() {
        let d = folder("sq");
        for i in 0..2 {
            frame(&d, i, 8, 4);
        }
        let v = load_frames(&d, "wide").unwrap();
        let sq = v.squared(4).unwrap();
        assert_eq!((sq.len(), sq.height, sq.width), (2, 4, 4));
        // Already 4 high: the crop keeps columns 2..6 unchanged (x, y in the green, blue bytes).
        let f1 = sq.image(1).unwrap();
        assert_eq!(&f1[..3], [1, 2, 0]);
        assert_eq!(&f1[(4 * 3 + 3) * 3..(4 * 3 + 3) * 3 + 3], [1, 5, 3]);
    }

    #[test]
    fn frames_load_in_order_and_give_clips_and_pairs() {
        let d = folder("ok");
        for i in 0..5 {
            frame(&d, i, 6, 4);
        }
        std::fs::write(d.join("notes.txt"), "ignored").unwrap();
        let v = load_frames(&d, "clip").unwrap();
        assert_eq!((v.len(), v.width(), v.height()), (5, 6, 4));
        let f3 = v.frames.image(3).unwrap();
        // Pixel (x 2, y 1) of frame 3 is (3, 2, 1).
        assert_eq!(&f3[(6 + 2) * 3..(6 + 2) * 3 + 3], [3, 2, 1]);
        assert_eq!(v.clip_starts(3, 1).unwrap(), [0, 1, 2]);
        assert_eq!(v.clip_starts(2, 2).unwrap(), [0, 2]);
        assert_eq!(v.pairs(3).unwrap(), [(0, 3), (1, 4)]);
        let e = v.clip_starts(6, 1).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid loader setting: clip: 5 frames, shorter than one clip of 6"
        );
        assert!(v.pairs(5).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_corrupt_or_resized_frame_is_an_error_naming_it() {
        let d = folder("bad");
        for i in [0, 1, 3] {
            frame(&d, i, 6, 4);
        }
        let e = load_frames(&d, "v").unwrap_err().to_string();
        assert!(
            e.ends_with(
                "00002.png: missing: the frames run to 00003.png but this one is not there"
            ),
            "{e}"
        );
        frame(&d, 2, 6, 4);
        let good = std::fs::read(d.join("00001.png")).unwrap();
        std::fs::write(d.join("00001.png"), &good[..good.len() / 2]).unwrap();
        let e = load_frames(&d, "v").unwrap_err().to_string();
        assert!(e.contains("00001.png: not a readable PNG frame"), "{e}");
        std::fs::write(d.join("00001.png"), &good).unwrap();
        frame(&d, 3, 5, 4);
        let e = load_frames(&d, "v").unwrap_err().to_string();
        assert!(
            e.ends_with("00003.png: frame is 5×4, the video's first frame 6×4"),
            "{e}"
        );
        let empty = folder("empty");
        let e = load_frames(&empty, "v").unwrap_err().to_string();
        assert!(e.contains("no frames"), "{e}");
        let e = load_frames(&d.join("nope"), "v").unwrap_err().to_string();
        assert!(e.contains("nope: cannot list the frames"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
