//! PNG line charts (plotters, drawn into a buffer and encoded with `image`):
//! training loss and lr per step, accuracy per epoch, accuracy against test
//! resolution. Text needs a TrueType font: DejaVu Sans (Debian
//! `fonts-dejavu-core`) or the file named by `SRMAE_FONT`; without one the
//! plots are skipped with a warning.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::run_dir::read_metrics;

const FONT_PATHS: [&str; 2] = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

/// Registers a font once; false when none is available.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var("SRMAE_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (install fonts-dejavu-core or set SRMAE_FONT): plots are skipped");
        false
    })
}

/// One named series of (x, y) points, optionally with a ± error per point
/// (e.g. the standard deviation over seeds), drawn as a vertical bar.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Empty, or one half-width per point.
    pub errors: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points, errors: Vec::new() }
    }

    /// `(x, y, error)` per point, error 0 where none is given.
    fn with_errors(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.points.iter().enumerate().map(|(i, &(x, y))| (x, y, self.errors.get(i).copied().filter(|e| e.is_finite()).unwrap_or(0.0).abs()))
    }
}

const COLOURS: [RGBColor; 6] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

/// Draws `series` into a PNG at `path`. Returns false when skipped (no font, no data).
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<bool> {
    let pts = series.iter().flat_map(|s| s.with_errors()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y, e) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y - e), y1.max(y + e));
    }
    if x0 > x1 || !font_ready() {
        return Ok(false);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if series.iter().any(|s| s.errors.iter().any(|&e| e > 0.0)) {
        // Room for the shifted error bars (1.5 % of the range per series
        // from the middle one, caps 1 %) at both ends.
        let xpad = (x1 - x0) * (0.015 * (series.len() as f64 - 1.0) / 2.0 + 0.02).max(0.03);
        (x0, x1) = (x0 - xpad, x1 + xpad);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (w, h) = (800u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            if s.points.len() <= 20 {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|e| err(&e))?;
            }
            // Error bars: a vertical segment with caps 1 % of the x range
            // wide, each series' bars shifted a little so they do not overlap.
            let cap = (x1 - x0) * 0.01;
            let shift = (i as f64 - (series.len() as f64 - 1.0) / 2.0) * 1.5 * cap;
            let bars = s.with_errors().filter(|&(_, _, e)| e > 0.0).flat_map(|(x, y, e)| {
                let x = x + shift;
                [vec![(x, y - e), (x, y + e)], vec![(x - cap, y - e), (x + cap, y - e)], vec![(x - cap, y + e), (x + cap, y + e)]]
            });
            chart.draw_series(bars.map(|seg| PathElement::new(seg, c.stroke_width(1)))).map_err(|e| err(&e))?;
        }
        if series.len() > 1 || !series[0].name.is_empty() {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    image::save_buffer(path, &buf, w, h, image::ExtendedColorType::Rgb8).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

fn series(metrics: &[serde_json::Value], x: &str, y: &[&str]) -> Vec<(f64, f64)> {
    metrics
        .iter()
        .filter_map(|m| {
            let mut v = m;
            for k in y {
                v = v.get(k)?;
            }
            Some((m.get(x)?.as_f64()?, v.as_f64()?))
        })
        .collect()
}

/// `plots/loss.png`, `plots/lr.png` and, when evaluated, `plots/accuracy.png`
/// from a run directory's `metrics.jsonl`.
pub fn training_plots(run: &Path) -> Result<()> {
    let m = read_metrics(&run.join("metrics.jsonl"))?;
    let dir = run.join("plots");
    let s = |name: &str, points| Series::new(name, points);
    line_chart(&dir.join("loss.png"), "training loss", "step", "loss", &[s("", series(&m, "step", &["loss"]))])?;
    line_chart(&dir.join("lr.png"), "learning rate", "step", "lr", &[s("", series(&m, "step", &["lr"]))])?;
    let top1 = series(&m, "epoch_end", &["eval", "top1"]);
    if !top1.is_empty() {
        line_chart(&dir.join("accuracy.png"), "validation accuracy", "epoch", "top-1 (%)", &[s("top-1", top1)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bars_widen_the_range_and_default_to_none() {
        let mut s = Series::new("a", vec![(7.0, 60.0), (28.0, 85.0)]);
        assert_eq!(s.with_errors().map(|p| p.2).collect::<Vec<_>>(), [0.0, 0.0]);
        s.errors = vec![3.0, f64::NAN];
        assert_eq!(s.with_errors().map(|p| p.2).collect::<Vec<_>>(), [3.0, 0.0]);
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("e.png");
        if line_chart(&png, "t", "x", "y", &[s]).unwrap() {
            let img = image::open(&png).unwrap().to_rgb8();
            // The ±3 bar at 7 px is a vertical run of the series' colour far
            // longer than the point's circle or the (slanted) line gives.
            let (w, h) = img.dimensions();
            let c = COLOURS[0];
            let longest_run = (0..w)
                .map(|x| {
                    let (mut best, mut run) = (0, 0);
                    for y in 0..h {
                        run = if img.get_pixel(x, y).0 == [c.0, c.1, c.2] { run + 1 } else { 0 };
                        best = best.max(run);
                    }
                    best
                })
                .max()
                .unwrap_or(0);
            assert!(longest_run > 30, "no error bar drawn (longest vertical run {longest_run} px)");
        }
    }
}
