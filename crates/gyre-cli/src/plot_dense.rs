//! `gyre plot` for dense runs: on a held-out scene clip, the nearest-neighbour matches of a grid
//! of points between two frames (green within 2 pixels of the true flow, red beyond), and the
//! CRW label propagation of the first frame's instance masks beside the true masks.

use crate::plot::{err, register_font, PALETTE};
use gyre_data::scenes::{generate, Clip, SceneConfig, SceneSources, HELD_OUT_SPLIT};
use gyre_train::dense_eval::correspondence::{nearest_pixels, scene_queries};
use gyre_train::dense_eval::propagation::{propagate, PropagationConfig};
use gyre_train::dense_eval::protocol::FeatureSource;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The match plot pairs frame 0 with this frame.
const MATCH_GAP: usize = 4;
/// A match within this many pixels of the true flow is drawn green.
const CORRECT_PX: f32 = 2.0;

/// An RGB canvas that images are pasted into before plotters draws lines and text on it.
pub(crate) struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    pub(crate) fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    /// Pastes an RGB `size × size` image at `(x0, y0)`, each pixel a `zoom × zoom` block, blended
    /// with `overlay` (an instance mask's colours, `alpha` of them) when given.
    pub(crate) fn paste(
        &mut self,
        img: &[u8],
        size: usize,
        (x0, y0): (usize, usize),
        zoom: usize,
        overlay: Option<(&[u8], f32)>,
    ) {
        for y in 0..size * zoom {
            for x in 0..size * zoom {
                let s = (y / zoom) * size + x / zoom;
                let mut rgb = [
                    img[s * 3] as f32,
                    img[s * 3 + 1] as f32,
                    img[s * 3 + 2] as f32,
                ];
                if let Some((mask, alpha)) = overlay {
                    if mask[s] > 0 {
                        let c = PALETTE[(mask[s] as usize - 1) % PALETTE.len()];
                        for (v, m) in rgb.iter_mut().zip([c.0, c.1, c.2]) {
                            *v = (1.0 - alpha) * *v + alpha * m as f32;
                        }
                    }
                }
                let d = ((y0 + y) * self.w + x0 + x) * 3;
                for (k, v) in rgb.iter().enumerate() {
                    self.px[d + k] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    pub(crate) fn save(
        self,
        path: &Path,
        draw: impl FnOnce(&crate::plot::Area<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut px = self.px;
        crate::plot::png_from(path, &mut px, (self.w as u32, self.h as u32), draw)
    }
}

/// Draws `dense_matches.png` and `dense_propagation.png` into `out` for held-out clip `clip` of
/// `sources`; returns the files.
pub fn dense_plots(
    out: &Path,
    title: &str,
    source: &FeatureSource,
    sources: &SceneSources,
    scene: &SceneConfig,
    clip: u64,
) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(out)?;
    let c = generate(scene, sources, 0, HELD_OUT_SPLIT, clip..clip + 1)?.remove(0);
    let s = c.size;
    let feats = source.features(&c.pixels, (s, s))?;
    let matches = out.join("dense_matches.png");
    match_plot(&matches, title, &c, &feats)?;
    let prop = out.join("dense_propagation.png");
    propagation_plot(&prop, title, &c, &feats)?;
    Ok(vec![matches, prop])
}

fn match_plot(
    path: &Path,
    title: &str,
    c: &Clip,
    feats: &[gyre_train::dense_eval::FeatureMap],
) -> anyhow::Result<()> {
    let (s, zoom, gap, top) = (c.size, 6usize, 24usize, 56usize);
    let (a, b) = (0, MATCH_GAP.min(c.frames - 1));
    let side = s * zoom;
    let mut canvas = Canvas::new(2 * side + gap, side + top + 8);
    canvas.paste(c.frame(a), s, (0, top), zoom, None);
    canvas.paste(c.frame(b), s, (side + gap, top), zoom, None);
    let (fa, fb) = (feats[a].resized(s, s), feats[b].resized(s, s));
    let q = scene_queries(&c.flow(a, b), 8);
    let found = nearest_pixels(&fa, &fb, &q.pixels)?;
    let correct = found
        .iter()
        .zip(&q.truth)
        .filter(|(&(x, y), t)| (x as f32 + 0.5 - t[0]).hypot(y as f32 + 0.5 - t[1]) <= CORRECT_PX)
        .count();
    let z = zoom as f32;
    canvas.save(path, |root| {
        let caption = format!(
            "{title}: frame {a} → frame {b}, {correct} of {} grid points within {CORRECT_PX} px (green)",
            q.pixels.len()
        );
        root.draw(&Text::new(caption, (8, 16), ("sans-serif", 18).into_font().color(&BLACK)))
            .map_err(err)?;
        for ((&(x, y), t), &(mx, my)) in q.pixels.iter().zip(&q.truth).zip(&found) {
            let ok = (mx as f32 + 0.5 - t[0]).hypot(my as f32 + 0.5 - t[1]) <= CORRECT_PX;
            let colour = if ok { RGBColor(20, 200, 60) } else { RGBColor(230, 30, 30) };
            let p0 = (((x as f32 + 0.5) * z) as i32, top as i32 + ((y as f32 + 0.5) * z) as i32);
            let p1 = (
                (side + gap) as i32 + ((mx as f32 + 0.5) * z) as i32,
                top as i32 + ((my as f32 + 0.5) * z) as i32,
            );
            root.draw(&PathElement::new(vec![p0, p1], colour.stroke_width(1)))
                .map_err(err)?;
            root.draw(&Circle::new(p0, 3, colour.filled())).map_err(err)?;
            root.draw(&Circle::new(p1, 3, colour.filled())).map_err(err)?;
        }
        Ok(())
    })
}

fn propagation_plot(
    path: &Path,
    title: &str,
    c: &Clip,
    feats: &[gyre_train::dense_eval::FeatureMap],
) -> anyhow::Result<()> {
    let (s, zoom, gap, top, left) = (c.size, 4usize, 8usize, 40usize, 110usize);
    let k = c.motion.tracks.len() + 1;
    let pred = propagate(
        feats,
        c.instance_mask(0),
        (s, s),
        k,
        &PropagationConfig::default(),
    );
    let shown: Vec<usize> = [0, c.frames / 3, 2 * c.frames / 3, c.frames - 1].to_vec();
    let side = s * zoom;
    let cols = shown.len();
    let mut canvas = Canvas::new(left + cols * (side + gap), top + 3 * (side + gap) + 24);
    for (j, &t) in shown.iter().enumerate() {
        let x = left + j * (side + gap);
        canvas.paste(c.frame(t), s, (x, top + 24), zoom, None);
        canvas.paste(
            c.frame(t),
            s,
            (x, top + 24 + side + gap),
            zoom,
            Some((c.instance_mask(t), 0.6)),
        );
        canvas.paste(
            c.frame(t),
            s,
            (x, top + 24 + 2 * (side + gap)),
            zoom,
            Some((&pred[t], 0.6)),
        );
    }
    canvas.save(path, |root| {
        let font = ("sans-serif", 18).into_font().color(&BLACK);
        root.draw(&Text::new(
            format!("{title}: label propagation from frame 0 (videowalk protocol)"),
            (8, 12),
            font.clone(),
        ))
        .map_err(err)?;
        for (j, &t) in shown.iter().enumerate() {
            root.draw(&Text::new(
                format!("frame {t}"),
                (
                    (left + j * (side + gap) + side / 2 - 30) as i32,
                    (top + 2) as i32,
                ),
                font.clone(),
            ))
            .map_err(err)?;
        }
        for (i, name) in ["frames", "true masks", "propagated"].iter().enumerate() {
            let y = top + 24 + i * (side + gap) + side / 2;
            root.draw(&Text::new(name.to_string(), (6, y as i32), font.clone()))
                .map_err(err)?;
        }
        Ok(())
    })
}
