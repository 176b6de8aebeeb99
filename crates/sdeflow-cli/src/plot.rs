//! PNG scatter plots of 2-D samples beside exact data (plotters, pure Rust, with an embedded
//! DejaVu font so a fresh machine needs no system fonts).

use std::{path::Path, sync::Once};

use plotters::prelude::*;
use sdeflow_kernel::{Error, Result, io::write_atomic};

/// Points drawn per panel at most (a strided subset beyond that).
const MAX_POINTS: usize = 5_000;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans is valid OpenType; a failure here would only lose the labels.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// One panel: its name, its points and their colour.
struct Panel {
    name: &'static str,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// One class per point, coloured from a palette instead of `color`.
    classes: Option<Vec<u32>>,
}

/// Every `stride`-th label, matching [`points`].
fn point_classes(labels: &[u32]) -> Vec<u32> {
    let stride = labels.len().div_ceil(MAX_POINTS).max(1);
    labels.iter().step_by(stride).copied().collect()
}

fn points(rows: &[f64]) -> Vec<(f64, f64)> {
    let n = rows.len() / 2;
    let stride = n.div_ceil(MAX_POINTS).max(1);
    rows.chunks(2)
        .step_by(stride)
        .map(|r| (r[0], r[1]))
        .collect()
}

/// Draws a `size` PNG at `path` on a white background, atomically: `draw` fills the drawing
/// area, then the bitmap is encoded to a temporary `.png` (the backend picks the encoder from
/// the extension) that replaces `path`.
fn save_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    write_atomic(path, |tmp| {
        let tmp_png = tmp.with_extension("png");
        {
            let root = BitMapBackend::new(&tmp_png, size).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            draw(&root)?;
            root.present().map_err(plot_err)?;
        }
        std::fs::rename(&tmp_png, tmp).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("cannot draw the scatter plot: {e}"))
}

/// Writes `samples` (row-major n × 2) and, beside them, the reference rows (exact samples or
/// held-out data) under their panel name, on shared axes.
pub fn scatter_beside(
    path: &Path,
    samples: &[f64],
    exact: Option<(&'static str, &[f64])>,
    title: &str,
) -> Result<()> {
    let panels: Vec<Panel> = std::iter::once(Panel {
        name: "samples",
        points: points(samples),
        color: RGBColor(31, 119, 180),
        classes: None,
    })
    .chain(exact.map(|(name, e)| Panel {
        name,
        points: points(e),
        color: RGBColor(214, 39, 40),
        classes: None,
    }))
    .collect();
    draw_panels(path, &panels, title)
}

/// Writes one scatter of `rows` (row-major n × 2), its panel called `name`, each point
/// coloured by its class when `labels` are given.
pub fn scatter(
    path: &Path,
    name: &'static str,
    rows: &[f64],
    labels: Option<&[u32]>,
    title: &str,
) -> Result<()> {
    let panel = Panel {
        name,
        points: points(rows),
        color: RGBColor(31, 119, 180),
        classes: labels.map(point_classes),
    };
    draw_panels(path, &[panel], title)
}

/// Panels side by side on shared axes.
fn draw_panels(path: &Path, panels: &[Panel], title: &str) -> Result<()> {
    register_font();
    let all = panels.iter().flat_map(|p| p.points.iter());
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        lo = lo.min(x).min(y);
        hi = hi.max(x).max(y);
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(plot_err("no finite points"));
    }
    let pad = 0.05 * (hi - lo).max(1e-9);
    let range = (lo - pad)..(hi + pad);
    let width = 600 * panels.len() as u32;
    save_png(path, (width, 640), |root| {
        let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
        let areas = root.split_evenly((1, panels.len()));
        for (
            area,
            Panel {
                name,
                points: pts,
                color,
                classes,
            },
        ) in areas.iter().zip(panels)
        {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{name} ({} shown)", pts.len()), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d(range.clone(), range.clone())
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(pts.iter().enumerate().map(|(i, &(x, y))| {
                    let style = match classes {
                        Some(c) => Palette99::pick(c[i] as usize).mix(0.6).filled(),
                        None => color.mix(0.5).filled(),
                    };
                    Circle::new((x, y), 1, style)
                }))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// Paths drawn at most.
const MAX_PATHS: usize = 24;

/// Writes the 2-D paths of the first samples through `frames` (each row-major n × 2, first
/// to last time), coloured by sample, with their end points marked.
pub fn paths(path: &Path, frames: &[Vec<f64>], title: &str) -> Result<()> {
    register_font();
    let n = frames.first().map_or(0, |f| f.len() / 2).min(MAX_PATHS);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for f in frames {
        for v in &f[..2 * n] {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(plot_err("no finite points"));
    }
    let pad = 0.05 * (hi - lo).max(1e-9);
    let range = (lo - pad)..(hi + pad);
    save_png(path, (720, 720), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(range.clone(), range.clone())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for i in 0..n {
            let color = Palette99::pick(i).mix(0.8);
            let pts = frames.iter().map(|f| (f[2 * i], f[2 * i + 1]));
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(1)))
                .map_err(plot_err)?;
            if let Some(last) = frames.last() {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (last[2 * i], last[2 * i + 1]),
                        3,
                        color.filled(),
                    )))
                    .map_err(plot_err)?;
            }
        }
        Ok(())
    })
}

/// Rows of an image grid at most.
pub const GRID_ROWS: usize = 64;

/// Writes the first rows of `values` (each a `[c, h, w]` image, c = 1 or 3, or `[h, w]`) as a
/// grid of at most [`GRID_ROWS`] images, `cols` to a line, each pixel scaled up so an image is
/// at least 64 pixels wide, values mapped linearly from `range` to 0–255 (clamped), with a
/// 2-pixel white border between images.
pub fn image_grid(
    path: &Path,
    values: &[f64],
    shape: &[usize],
    range: (f64, f64),
    cols: usize,
) -> Result<()> {
    let (c, h, w) = match *shape {
        [c @ (1 | 3), h, w] => (c, h, w),
        [h, w] => (1, h, w),
        _ => {
            return Err(Error::Msg(format!(
                "cannot draw rows of shape {shape:?} as images: use [c, h, w] with c = 1 or 3, or [h, w]"
            )));
        }
    };
    let d = c * h * w;
    let n = (values.len() / d).min(GRID_ROWS);
    if n == 0 {
        return Err(plot_err("no rows to draw"));
    }
    let cols = cols.clamp(1, n);
    let lines = n.div_ceil(cols);
    let zoom = 64usize.div_ceil(w).max(1);
    let (tile_w, tile_h, border) = (w * zoom, h * zoom, 2);
    let width = cols * (tile_w + border) + border;
    let height = lines * (tile_h + border) + border;
    let (lo, hi) = range;
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    // A value that is not finite is a blank tile's (a short line of a grid by class).
    let byte = |v: f64| {
        if v.is_finite() {
            ((v - lo) * scale).round().clamp(0.0, 255.0) as u8
        } else {
            255
        }
    };
    let img = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let (col, px) = (
            (x.saturating_sub(border)) / (tile_w + border),
            x.saturating_sub(border) % (tile_w + border),
        );
        let (line, py) = (
            (y.saturating_sub(border)) / (tile_h + border),
            y.saturating_sub(border) % (tile_h + border),
        );
        let i = line * cols + col;
        if x < border || y < border || px >= tile_w || py >= tile_h || i >= n {
            return image::Rgb([255, 255, 255]);
        }
        let (r, q) = (py / zoom, px / zoom);
        let at = |ch: usize| byte(values[i * d + ch * h * w + r * w + q]);
        if c == 3 {
            image::Rgb([at(0), at(1), at(2)])
        } else {
            let g = at(0);
            image::Rgb([g, g, g])
        }
    });
    write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(plot_err)
    })
}

/// One curve of [`curves`]: its legend, its (x, y) points and its colour.
pub struct Curve<'a> {
    /// The legend.
    pub name: &'a str,
    /// The points, x increasing.
    pub points: Vec<(f64, f64)>,
    /// Drawn as markers (sparse evaluations) rather than a line.
    pub markers: bool,
}

/// Writes curves on shared axes, x labelled `x_label`, the y axis log-scaled when every point
/// is positive (losses span decades) and linear otherwise (implicit and sliced score matching
/// are DSM less a constant: their losses go negative); non-finite points are left out.
pub fn curves(path: &Path, curves: &[Curve<'_>], x_label: &str, title: &str) -> Result<()> {
    register_font();
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|c| c.points.iter().filter(finite).copied())
        .collect();
    if all.is_empty() {
        return Err(plot_err("no finite points"));
    }
    let positive = all.iter().all(|p| p.1 > 0.0);
    let (x0, x1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let x_range = x0..(x1.max(x0 + 1.0));
    macro_rules! draw {
        ($y_range:expr) => {
            save_png(path, (900, 540), |root| {
                let mut chart = ChartBuilder::on(root)
                    .caption(title, ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(36)
                    .y_label_area_size(56)
                    .build_cartesian_2d(x_range.clone(), $y_range)
                    .map_err(plot_err)?;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_desc("loss")
                    .draw()
                    .map_err(plot_err)?;
                for (i, c) in curves.iter().enumerate() {
                    let color = Palette99::pick(i);
                    let pts: Vec<(f64, f64)> = c.points.iter().filter(finite).copied().collect();
                    let legend = if c.markers {
                        chart.draw_series(
                            pts.iter()
                                .map(|&p| Circle::new(p, 4, color.filled()))
                                .collect::<Vec<_>>(),
                        )
                    } else {
                        chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    }
                    .map_err(plot_err)?;
                    legend.label(c.name).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled())
                    });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(plot_err)?;
                Ok(())
            })
        };
    }
    if positive {
        draw!(((y0 / 1.2)..(y1 * 1.2)).log_scale())
    } else {
        let pad = 0.05 * (y1 - y0).max(1e-12);
        draw!((y0 - pad)..(y1 + pad))
    }
}

/// Writes a histogram of `values` (40 bins over their finite range), with vertical lines at
/// the named `marks` (a mean, the exact mean), x labelled `x_label`.
pub fn histogram(
    path: &Path,
    values: &[f64],
    marks: &[(&str, f64)],
    x_label: &str,
    title: &str,
) -> Result<()> {
    register_font();
    const BINS: usize = 40;
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Err(plot_err("no finite values"));
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = ((hi - lo) / BINS as f64).max(1e-12);
    let mut counts = [0usize; BINS];
    for v in &finite {
        let b = (((v - lo) / width) as usize).min(BINS - 1);
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1) as f64 * 1.1;
    save_png(path, (900, 540), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..(lo + width * BINS as f64), 0.0..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("rows")
            .draw()
            .map_err(plot_err)?;
        let bar = RGBColor(31, 119, 180);
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], bar.mix(0.7).filled())
            }))
            .map_err(plot_err)?;
        for (i, (name, at)) in marks.iter().enumerate() {
            let color = Palette99::pick(i + 1);
            chart
                .draw_series(LineSeries::new(
                    [(*at, 0.0), (*at, top)],
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(format!("{name} {at:.4}"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled())
                });
        }
        if !marks.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    })
}
