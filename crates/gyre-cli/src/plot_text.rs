//! `gyre eval --language --grid FILE`: test images beside their top corpus texts in the learned
//! shared space (the auto-paired texts), two columns of one image per class.

use crate::plot::{err, register_font};
use crate::plot_dense::Canvas;
use gyre_train::language_eval::LanguageReport;
use plotters::prelude::*;
use std::path::Path;

const ZOOM: usize = 4;
const CELL_W: usize = 760;
const CELL_H: usize = 136;
const TOP: usize = 40;
/// Characters per text line before it is cut with "…".
const LINE: usize = 86;

/// Draws the report's examples (up to 20) into `path`.
pub fn text_grid(path: &Path, title: &str, report: &LanguageReport) -> anyhow::Result<()> {
    register_font();
    let set = &report.images;
    let (h, w, c) = (set.height, set.width, set.channels);
    let shown: Vec<_> = report.examples.iter().take(20).collect();
    let rows = shown.len().div_ceil(2);
    let mut canvas = Canvas::new(2 * CELL_W, TOP + rows * CELL_H);
    let side = h.max(w) * ZOOM;
    for (k, e) in shown.iter().enumerate() {
        let img = set.image(e.index)?;
        // Grey or RGB to RGB, square images only (Fashion-MNIST, CIFAR-10).
        let rgb: Vec<u8> = (0..h * w)
            .flat_map(|p| {
                if c == 1 {
                    [img[p]; 3]
                } else {
                    [img[p * c], img[p * c + 1], img[p * c + 2]]
                }
            })
            .collect();
        let (x0, y0) = ((k % 2) * CELL_W + 8, TOP + (k / 2) * CELL_H + 8);
        canvas.paste(&rgb, h, (x0, y0), ZOOM, None);
    }
    canvas.save(path, |root| {
        root.draw(&Text::new(
            title.to_string(),
            (8, 12),
            ("sans-serif", 20).into_font().color(&BLACK),
        ))
        .map_err(err)?;
        for (k, e) in shown.iter().enumerate() {
            let (x0, y0) = ((k % 2) * CELL_W + 8 + side + 12, TOP + (k / 2) * CELL_H + 8);
            let head = format!("test image {} (class: {})", e.index, e.class);
            root.draw(&Text::new(
                head,
                (x0 as i32, y0 as i32),
                ("sans-serif", 15).into_font().color(&RGBColor(60, 60, 160)),
            ))
            .map_err(err)?;
            for (j, (text, cos)) in e.texts.iter().enumerate() {
                let mut line = format!("{}. ({cos:.2}) {text}", j + 1);
                if line.chars().count() > LINE {
                    line = line.chars().take(LINE - 1).collect::<String>() + "…";
                }
                root.draw(&Text::new(
                    line,
                    (x0 as i32, (y0 + 24 + 26 * j) as i32),
                    ("sans-serif", 14).into_font().color(&BLACK),
                ))
                .map_err(err)?;
            }
        }
        Ok(())
    })
}
