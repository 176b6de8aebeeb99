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
}

fn points(rows: &[f64]) -> Vec<(f64, f64)> {
    let n = rows.len() / 2;
    let stride = n.div_ceil(MAX_POINTS).max(1);
    rows.chunks(2)
        .step_by(stride)
        .map(|r| (r[0], r[1]))
        .collect()
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("cannot draw the scatter plot: {e}"))
}

/// Writes `samples` (row-major n × 2) and, beside them, `exact` samples, on shared axes.
pub fn scatter_beside(
    path: &Path,
    samples: &[f64],
    exact: Option<&[f64]>,
    title: &str,
) -> Result<()> {
    register_font();
    let panels: Vec<Panel> = std::iter::once(Panel {
        name: "samples",
        points: points(samples),
        color: RGBColor(31, 119, 180),
    })
    .chain(exact.map(|e| Panel {
        name: "exact p(t_ε)",
        points: points(e),
        color: RGBColor(214, 39, 40),
    }))
    .collect();
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
    write_atomic(path, |tmp| {
        // The bitmap backend picks the encoder from the extension.
        let tmp_png = tmp.with_extension("png");
        {
            let root = BitMapBackend::new(&tmp_png, (width, 640)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let root = root.titled(title, ("sans-serif", 22)).map_err(plot_err)?;
            let areas = root.split_evenly((1, panels.len()));
            for (
                area,
                Panel {
                    name,
                    points: pts,
                    color,
                },
            ) in areas.iter().zip(&panels)
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
                    .draw_series(
                        pts.iter()
                            .map(|&(x, y)| Circle::new((x, y), 1, color.mix(0.5).filled())),
                    )
                    .map_err(plot_err)?;
            }
            root.present().map_err(plot_err)?;
        }
        std::fs::rename(&tmp_png, tmp).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
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
    write_atomic(path, |tmp| {
        let tmp_png = tmp.with_extension("png");
        {
            let root = BitMapBackend::new(&tmp_png, (720, 720)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
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
            root.present().map_err(plot_err)?;
        }
        std::fs::rename(&tmp_png, tmp).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}
