//! Draws moving-object scene clips as a PNG to look at: per clip, a row of its frames, a row of
//! its class masks (a colour per class) and a row of its instance masks.
//!
//!     cargo run --release -p gyre-data --example scene_montage -- OUT.png [CIFAR10_JPEG_DIR] [SEED]
//!
//! Garments come from the embedded Fashion-MNIST split; colour objects and backgrounds from
//! `cifar10-jpeg/test` when given, else from other garments.

use gyre_data::bad_sample::OnBadSample;
use gyre_data::scenes::{generate, SceneConfig, SceneSources, HELD_OUT_SPLIT};
use gyre_data::{cifar, fashion_mnist, Residency};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .ok_or("usage: scene_montage OUT.png [CIFAR10_JPEG_DIR] [SEED]")?;
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let fm = fashion_mnist::embedded()?;
    let colour = match args.get(2) {
        Some(dir) => {
            cifar::load_cifar10_jpeg(Path::new(dir), false, OnBadSample::Fail, Residency::Memory)?.0
        }
        None => fm.select("colour", &(5000..10000).collect::<Vec<_>>()),
    };
    let sources = SceneSources::new(fm.head(5000), colour)?;
    let cfg = SceneConfig::default();
    let clips = generate(&cfg, &sources, seed, HELD_OUT_SPLIT, 0..4)?;
    let (s, t) = (cfg.size, cfg.frames);
    let (w, h) = ((s + 2) * t, (s + 2) * 3 * clips.len());
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let palette = |c: u8| -> [u8; 3] {
        if c == 0 {
            return [0, 0, 0];
        }
        let c = c as u32;
        [
            (c * 97 % 200 + 55) as u8,
            (c * 57 % 200 + 55) as u8,
            (c * 151 % 200 + 55) as u8,
        ]
    };
    for (k, clip) in clips.iter().enumerate() {
        for f in 0..t {
            for y in 0..s {
                for x in 0..s {
                    let i = y * s + x;
                    let px = (f * (s + 2) + x) as u32;
                    let base = k * 3 * (s + 2);
                    let rgb = &clip.frame(f)[i * 3..i * 3 + 3];
                    img.put_pixel(px, (base + y) as u32, image::Rgb([rgb[0], rgb[1], rgb[2]]));
                    img.put_pixel(
                        px,
                        (base + s + 2 + y) as u32,
                        image::Rgb(palette(clip.class_mask(f)[i])),
                    );
                    img.put_pixel(
                        px,
                        (base + 2 * (s + 2) + y) as u32,
                        image::Rgb(palette(clip.instance_mask(f)[i] * 40)),
                    );
                }
            }
        }
    }
    img.save(out)?;
    println!("{out}: {} clips of {t} frames ({s}×{s})", clips.len());
    Ok(())
}
