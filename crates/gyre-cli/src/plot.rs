//! `gyre plot RUN_DIR`: PNG charts of a run, drawn with `plotters` and an embedded DejaVu Sans
//! (`assets/fonts`, no system font libraries): the loss and learning rate over steps, the kNN
//! top-1 over epochs, and a 2-D PCA of the test embeddings coloured by class.

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

pub(crate) fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is valid; a failure would show as missing text, not a crash.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Ten distinguishable colours (Tableau 10).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let span = (hi - lo).abs().max(1e-9);
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// The area every chart draws on (see [`png_from`]).
pub(crate) type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;

pub(crate) fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// The area every chart draws on: an RGB buffer of `w × h`, drawn by `draw`, then written to
/// `path` as PNG through `image` (one image crate in the build: plotters' own encoder would pull
/// a second, older one) — atomically, through a temporary file beside it.
pub(crate) fn png_from(
    path: &Path,
    px: &mut [u8],
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    {
        let root = BitMapBackend::with_buffer(px, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    let tmp = path.with_extension("png.tmp");
    image::save_buffer_with_format(
        &tmp,
        px,
        w,
        h,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", path.display()))
}

/// [`png_from`] on a white `w × h` canvas.
pub(crate) fn png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut px = vec![255u8; size.0 as usize * size.1 as usize * 3];
    png_from(path, &mut px, size, draw)
}
type Xy =
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

/// A titled chart on `root` over `x × y` in the charts' one style; `right`: the width of a right
/// axis's label area (0: none), for a secondary coordinate set before [`mesh`] draws the axes.
fn frame<'a, 'b>(
    root: &'a Area<'b>,
    title: &str,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    right: u32,
) -> anyhow::Result<ChartContext<'a, BitMapBackend<'b>, Xy>> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .right_y_label_area_size(right)
        .build_cartesian_2d(x, y)
        .map_err(err)
}

/// The grid and the two axis titles of `chart` (the primary axes of a dual-axis chart).
fn mesh(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Xy>,
    x: &str,
    y: &str,
) -> anyhow::Result<()> {
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 20))
        .draw()
        .map_err(err)
}

/// The legend box of a chart at `position`, in the charts' one style.
fn legend<'a, 'b, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    mut labels: plotters::chart::SeriesLabelStyle<'a, 'b, DB, CT>,
    font: u32,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    labels
        .label_font(("sans-serif", font))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(err)
}

/// Loss (left axis) and learning rate (right axis) over steps.
pub fn loss_chart(path: &Path, title: &str, steps: &[(f64, f64, f64)]) -> anyhow::Result<()> {
    register_font();
    png(path, (1000, 600), |root| {
        let xmax = steps.iter().map(|s| s.0).fold(1.0, f64::max);
        let (lmin, lmax) = steps
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| {
                (a.min(s.1), b.max(s.1))
            });
        let (lmin, lmax) = pad(lmin, lmax);
        let rmax = steps.iter().map(|s| s.2).fold(1e-9, f64::max) * 1.1;
        let ranges = (0f64..xmax, lmin..lmax);
        let mut chart = frame(root, title, ranges, 70)?.set_secondary_coord(0f64..xmax, 0f64..rmax);
        mesh(&mut chart, "step", "training loss")?;
        chart
            .configure_secondary_axes()
            .y_desc("learning rate")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 20))
            .draw()
            .map_err(err)?;
        let blue = PALETTE[0];
        let orange = PALETTE[1];
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|s| (s.0, s.1)),
                blue.stroke_width(2),
            ))
            .map_err(err)?
            .label("loss (left axis)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], blue.stroke_width(3))
            });
        chart
            .draw_secondary_series(LineSeries::new(
                steps.iter().map(|s| (s.0, s.2)),
                orange.stroke_width(2),
            ))
            .map_err(err)?
            .label("learning rate (right axis)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], orange.stroke_width(3))
            });
        legend(
            chart.configure_series_labels(),
            18,
            SeriesLabelPosition::UpperRight,
        )
    })
}

/// kNN top-1 (%) over epochs.
pub fn knn_chart(path: &Path, title: &str, points: &[(f64, f64)]) -> anyhow::Result<()> {
    register_font();
    png(path, (1000, 600), |root| {
        let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let (lo, hi) = pad(lo, hi);
        let ranges = (0f64..xmax + 0.5, lo..hi);
        let mut chart = frame(root, title, ranges, 0)?;
        mesh(&mut chart, "epoch", "kNN top-1 (%)")?;
        let c = PALETTE[2];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label("kNN top-1 on the test split")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
        legend(
            chart.configure_series_labels(),
            18,
            SeriesLabelPosition::LowerRight,
        )
    })
}

/// The top two principal directions of `x` (`[n, d]` row-major), by power iteration on the
/// covariance with deflation; returns the `[n, 2]` projections.
pub fn pca2(x: &[f32], d: usize) -> Vec<(f64, f64)> {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for r in x.chunks_exact(d) {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, v)| *m += *v as f64 / n as f64);
    }
    let mut cov = vec![0f64; d * d];
    for r in x.chunks_exact(d) {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(v, m)| *v as f64 - m).collect();
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += c[i] * c[j];
            }
        }
    }
    let mut dirs: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + ((i * 7 + k * 3) % 5) as f64).collect();
        for _ in 0..300 {
            let mut w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i * d + j] * v[j]).sum())
                .collect();
            for u in &dirs {
                let p: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
            }
            let nrm = w.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            v = w.into_iter().map(|a| a / nrm).collect();
        }
        dirs.push(v);
    }
    x.chunks_exact(d)
        .map(|r| {
            let p = |u: &[f64]| -> f64 {
                r.iter()
                    .zip(&mean)
                    .zip(u)
                    .map(|((v, m), w)| (*v as f64 - m) * w)
                    .sum()
            };
            (p(&dirs[0]), p(&dirs[1]))
        })
        .collect()
}

/// A scatter of 2-D points coloured by class, with a legend of class names.
pub fn pca_chart(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    labels: &[u32],
    classes: &[String],
) -> anyhow::Result<()> {
    register_font();
    png(path, (1000, 800), |root| {
        let (x0, x1) = pad(
            points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
            points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
        );
        let (y0, y1) = pad(
            points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
        );
        let mut chart = frame(root, title, (x0..x1, y0..y1), 0)?;
        mesh(&mut chart, "principal component 1", "principal component 2")?;
        for (c, name) in classes.iter().enumerate() {
            let col = PALETTE[c % PALETTE.len()];
            chart
                .draw_series(
                    points
                        .iter()
                        .zip(labels)
                        .filter(|(_, &l)| l as usize == c)
                        .map(|(&p, _)| Circle::new(p, 2, col.mix(0.6).filled())),
                )
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, col.filled()));
        }
        legend(
            chart.configure_series_labels(),
            16,
            SeriesLabelPosition::UpperRight,
        )
    })
}

/// Draws the loss/lr and kNN charts of a run from its `metrics.jsonl` into `<run>/plots/`;
/// returns the files written.
pub fn plot_metrics(run_dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mp = run_dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&mp).with_context(|| format!("{}: cannot read", mp.display()))?;
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let steps: Vec<(f64, f64, f64)> = lines
        .iter()
        .filter(|l| l["kind"] == "step")
        .filter_map(|l| Some((l["step"].as_f64()?, l["loss"].as_f64()?, l["lr"].as_f64()?)))
        .collect();
    let knn: Vec<(f64, f64)> = lines
        .iter()
        .filter(|l| l["kind"] == "knn")
        .filter_map(|l| Some((l["epoch"].as_f64()?, 100.0 * l["knn_top1"].as_f64()?)))
        .collect();
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut out = Vec::new();
    if !steps.is_empty() {
        let p = dir.join("loss.png");
        loss_chart(&p, &format!("{name}: loss and learning rate"), &steps)?;
        out.push(p);
    }
    if !knn.is_empty() {
        let p = dir.join("knn.png");
        knn_chart(&p, &format!("{name}: kNN top-1"), &knn)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_spread_directions() {
        // Points spread along (1, 1, 0) strongly and (1, −1, 0) weakly.
        let mut x = Vec::new();
        for i in 0..50 {
            let a = (i as f32 - 25.0) / 5.0;
            let b = ((i * 7) % 11) as f32 / 11.0 - 0.5;
            x.extend([a + b, a - b, 0.0]);
        }
        let p = pca2(&x, 3);
        let var = |k: usize| {
            p.iter()
                .map(|q| if k == 0 { q.0 * q.0 } else { q.1 * q.1 })
                .sum::<f64>()
        };
        // Projection variance on PC1 is 2·Var(a), on PC2 2·Var(b).
        assert!(var(0) > 50.0 * var(1), "{} vs {}", var(0), var(1));
    }

    #[test]
    fn charts_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("gyre-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("l.png");
        loss_chart(&p, "t", &[(1.0, 5.0, 0.1), (2.0, 4.0, 0.05)]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}
