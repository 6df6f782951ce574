//! The search's plots, drawn with plotters' SVG backend: fitness per trial with the best-so-far line
//! and generation bands, and the best recipe as a heat map (models × layer groups, one panel per
//! merge parameter). Files are replaced atomically.

use std::path::Path;

use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: {0}")]
    Empty(&'static str),
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// One finished trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialPoint {
    pub trial: u64,
    pub generation: u64,
    /// `None`: the trial failed.
    pub fitness: Option<f64>,
}

/// Values of the best genome: `parameters[p].1[model][group]`; NaN where a model has no gene.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeGrid {
    pub models: Vec<String>,
    pub groups: Vec<String>,
    pub parameters: Vec<(String, Vec<Vec<f64>>)>,
    /// The search bounds of each parameter (the colour scale).
    pub bounds: Vec<(f64, f64)>,
}

fn draw_err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError::Draw { path: path.display().to_string(), message }
}

/// Render into a string with `draw`, then write it to `path` atomically.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>) -> Result<(), PlotError> {
    render_svg(path, size, draw).map(|_| ())
}

/// [`render`], returning the SVG text too.
fn render_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path)(e.to_string()))?;
        draw(&root).map_err(draw_err(path))?;
        root.present().map_err(|e| draw_err(path)(e.to_string()))?;
    }
    crate::export::write_atomic(path, svg.as_bytes())
        .map_err(|e| PlotError::Io { path: path.display().to_string(), source: std::io::Error::other(e.to_string()) })?;
    Ok(svg)
}

/// Rasterise an SVG drawn here into a PNG at `path` (text in the system's fonts; where a machine has
/// none, the PNG has no text and the SVG beside it has all of it).
fn write_png(svg: &str, path: &Path) -> Result<(), PlotError> {
    let err = |message: String| PlotError::Draw { path: path.display().to_string(), message };
    let mut options = resvg::usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // plotters asks for the generic `sans-serif`: map it to a sans face the machine has.
    let family = {
        let names: Vec<String> = fonts.faces().flat_map(|f| f.families.iter().map(|(n, _)| n.clone())).collect();
        ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"]
            .iter()
            .map(|s| s.to_string())
            .find(|n| names.contains(n))
            .or_else(|| names.iter().find(|n| n.contains("Sans") && !n.contains("Mono")).cloned())
            .or_else(|| names.first().cloned())
    };
    let svg = match family {
        Some(f) => {
            fonts.set_sans_serif_family(f);
            std::borrow::Cow::Borrowed(svg)
        }
        None => std::borrow::Cow::Owned(without_text(svg)),
    };
    let tree = resvg::usvg::Tree::from_str(&svg, &options).map_err(|e| err(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| err("empty image".into()))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let png = pixmap.encode_png().map_err(|e| err(e.to_string()))?;
    crate::export::write_atomic(path, &png)
        .map_err(|e| PlotError::Io { path: path.display().to_string(), source: std::io::Error::other(e.to_string()) })
}

/// `fitness.svg`: one point per trial (failed trials as red crosses on the lower edge), the
/// best-so-far step line, and alternating bands per generation.
pub fn fitness_svg(points: &[TrialPoint], metric: &str, path: &Path) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::Empty("no finished trial"));
    }
    let values: Vec<f64> = points.iter().filter_map(|p| p.fitness).filter(|f| f.is_finite()).collect();
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-9);
    let (lo, hi) = (lo - pad, hi + pad);
    let last = points.iter().map(|p| p.trial).max().unwrap_or(0) as f64 + 1.0;
    render(path, (900, 500), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(format!("fitness per trial ({metric}; higher is better)"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..last - 0.5, lo..hi)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc(metric)
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .disable_mesh()
            .draw()
            .map_err(|x| e(&x))?;
        // Generation bands.
        let mut start = 0usize;
        while start < points.len() {
            let g = points[start].generation;
            let end = points[start..].iter().position(|p| p.generation != g).map_or(points.len(), |k| start + k);
            if g % 2 == 1 {
                let (a, b) = (points[start].trial as f64 - 0.5, points[end - 1].trial as f64 + 0.5);
                chart.draw_series(std::iter::once(Rectangle::new([(a, lo), (b, hi)], RGBColor(235, 240, 250).filled()))).map_err(|x| e(&x))?;
            }
            start = end;
        }
        chart
            .draw_series(points.iter().filter_map(|p| p.fitness.filter(|f| f.is_finite()).map(|f| Circle::new((p.trial as f64, f), 3, BLUE.filled()))))
            .map_err(|x| e(&x))?
            .label("trial")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, BLUE.filled()));
        let failed: Vec<_> = points.iter().filter(|p| p.fitness.is_none_or(|f| !f.is_finite())).collect();
        if !failed.is_empty() {
            chart
                .draw_series(failed.iter().map(|p| Cross::new((p.trial as f64, lo + pad * 0.5), 4, RED.stroke_width(2))))
                .map_err(|x| e(&x))?
                .label("failed")
                .legend(|(x, y)| Cross::new((x + 8, y), 4, RED.stroke_width(2)));
        }
        let mut best = f64::NEG_INFINITY;
        let mut line = Vec::new();
        for p in points {
            if let Some(f) = p.fitness.filter(|f| f.is_finite()) {
                if f > best {
                    if best.is_finite() {
                        line.push((p.trial as f64, best));
                    }
                    best = f;
                }
            }
            if best.is_finite() {
                line.push((p.trial as f64, best));
            }
        }
        chart
            .draw_series(LineSeries::new(line, GREEN.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN.stroke_width(2)));
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw().map_err(|x| e(&x))?;
        Ok(())
    })
}

/// `recipe.svg`: per merge parameter, a heat map of models × layer groups with the values written
/// in the cells (white: low end of the parameter's bounds, dark blue: high end).
pub fn recipe_svg(grid: &RecipeGrid, path: &Path) -> Result<(), PlotError> {
    if grid.parameters.is_empty() || grid.models.is_empty() || grid.groups.is_empty() {
        return Err(PlotError::Empty("no genes"));
    }
    let cell_w = (640 / grid.groups.len().max(1)).clamp(40, 120) as i32;
    let cell_h = 36i32;
    let label_w = 12 + 8 * grid.models.iter().map(|m| m.chars().count()).max().unwrap_or(4) as i32;
    let panel_h = 50 + cell_h * grid.models.len() as i32 + 30;
    let width = (label_w + cell_w * grid.groups.len() as i32 + 40).max(360) as u32;
    let height = (panel_h * grid.parameters.len() as i32 + 20) as u32;
    render(path, (width, height), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
        for (p, (name, values)) in grid.parameters.iter().enumerate() {
            let (lo, hi) = grid.bounds.get(p).copied().unwrap_or((0.0, 1.0));
            let top = 10 + panel_h * p as i32;
            root.draw(&Text::new(format!("{name} (colour scale {lo} to {hi})"), (10, top), text(16))).map_err(|x| e(&x))?;
            for (g, group) in grid.groups.iter().enumerate() {
                let x = label_w + cell_w * g as i32;
                root.draw(&Text::new(group.clone(), (x + 4, top + 24), text(12))).map_err(|x| e(&x))?;
            }
            for (m, model) in grid.models.iter().enumerate() {
                let y = top + 40 + cell_h * m as i32;
                root.draw(&Text::new(model.clone(), (6, y + cell_h / 2 - 6), text(13))).map_err(|x| e(&x))?;
                for g in 0..grid.groups.len() {
                    let x = label_w + cell_w * g as i32;
                    let v = values.get(m).and_then(|row| row.get(g)).copied().unwrap_or(f64::NAN);
                    let (fill, label) = if v.is_finite() {
                        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
                        let c = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
                        (RGBColor(c(247.0, 8.0), c(251.0, 48.0), c(255.0, 107.0)), format!("{v:.3}"))
                    } else {
                        (RGBColor(230, 230, 230), "-".to_string())
                    };
                    root.draw(&Rectangle::new([(x, y), (x + cell_w - 2, y + cell_h - 2)], fill.filled())).map_err(|x| e(&x))?;
                    let ink = if v.is_finite() && (v - lo) / (hi - lo) > 0.55 { WHITE } else { BLACK };
                    root.draw(&Text::new(label, (x + 6, y + cell_h / 2 - 7), ("sans-serif", 13).into_font().color(&ink))).map_err(|x| e(&x))?;
                }
            }
        }
        Ok(())
    })
}

/// One hop of a data-flow path, for [`path_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct PathHop {
    /// Index into the pool.
    pub pool_layer: usize,
    /// Index into the models (colour).
    pub model: usize,
    pub scale: f64,
}

/// The SVG without its `<text>…</text>` elements.
fn without_text(svg: &str) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("</text>") {
            Some(end) => &rest[start + end + "</text>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// `path.svg` and `path.png` beside it: a data-flow path as the paper's Figure 4: hop on x, pool layer
/// on y, colour by source model, marker size by the hop's scale.
pub fn path_svg(hops: &[PathHop], models: &[String], pool_len: usize, path: &Path) -> Result<(), PlotError> {
    if hops.is_empty() {
        return Err(PlotError::Empty("a path without hops"));
    }
    const COLOURS: [RGBColor; 6] =
        [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];
    let max_scale = hops.iter().map(|h| h.scale.abs()).fold(0.0f64, f64::max).max(1e-9);
    let n = hops.len() as f64;
    let width = (600.0 + 14.0 * n).min(2400.0) as u32;
    let svg = render_svg(path, (width, 500), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(format!("layer path: {} hops over a pool of {pool_len} layers (marker size: scale)", hops.len()), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..n - 0.5, -0.5f64..pool_len as f64 - 0.5)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("hop")
            .y_desc("pool layer")
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| format!("{}", y.round() as i64))
            .draw()
            .map_err(|x| e(&x))?;
        let line: Vec<(f64, f64)> = hops.iter().enumerate().map(|(t, h)| (t as f64, h.pool_layer as f64)).collect();
        chart.draw_series(LineSeries::new(line, RGBColor(180, 180, 180).stroke_width(1))).map_err(|x| e(&x))?;
        for (m, label) in models.iter().enumerate() {
            let colour = COLOURS[m % COLOURS.len()];
            chart
                .draw_series(hops.iter().enumerate().filter(|(_, h)| h.model == m).map(|(t, h)| {
                    let radius = (2.0 + 7.0 * h.scale.abs() / max_scale).round() as i32;
                    Circle::new((t as f64, h.pool_layer as f64), radius, colour.filled())
                }))
                .map_err(|x| e(&x))?
                .label(label.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw().map_err(|x| e(&x))?;
        Ok(())
    })?;
    write_png(&svg, &path.with_extension("png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_plots_are_svg_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let points: Vec<TrialPoint> = (0..12)
            .map(|t| TrialPoint { trial: t, generation: t / 4, fitness: (t != 5).then_some((t as f64).sin()) })
            .collect();
        let fitness = dir.path().join("fitness.svg");
        fitness_svg(&points, "loglik", &fitness).unwrap();
        let text = std::fs::read_to_string(&fitness).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..40.min(text.len())]);
        assert!(text.contains("best so far") && text.contains("failed") && text.contains("trial"));

        let grid = RecipeGrid {
            models: vec!["shisa".into(), "abel".into()],
            groups: vec!["0-15".into(), "16-31".into()],
            parameters: vec![("density".into(), vec![vec![0.9, 0.8], vec![0.2, f64::NAN]]), ("weight".into(), vec![vec![0.5, 0.4], vec![0.3, 0.1]])],
            bounds: vec![(0.01, 1.0), (0.0, 1.0)],
        };
        let recipe = dir.path().join("recipe.svg");
        recipe_svg(&grid, &recipe).unwrap();
        let text = std::fs::read_to_string(&recipe).unwrap();
        assert!(text.starts_with("<svg") && text.contains("shisa") && text.contains("16-31") && text.contains("0.900"));
    }

    #[test]
    fn empty_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(fitness_svg(&[], "x", &dir.path().join("f.svg")), Err(PlotError::Empty(_))));
        let grid = RecipeGrid { models: vec![], groups: vec![], parameters: vec![], bounds: vec![] };
        assert!(matches!(recipe_svg(&grid, &dir.path().join("r.svg")), Err(PlotError::Empty(_))));
    }

    #[test]
    fn path_plot_writes_svg_and_png_and_text_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let hops = [
            PathHop { pool_layer: 0, model: 0, scale: 1.0 },
            PathHop { pool_layer: 5, model: 1, scale: 0.5 },
            PathHop { pool_layer: 3, model: 0, scale: 1.5 },
        ];
        let svg = dir.path().join("path.svg");
        path_svg(&hops, &["a".into(), "b".into()], 8, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<text") && text.contains("layer path: 3 hops"));
        let png = std::fs::read(dir.path().join("path.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let bare = without_text(&text);
        assert!(!bare.contains("<text") && !bare.contains("</text>") && bare.contains("<circle"));
    }
}
