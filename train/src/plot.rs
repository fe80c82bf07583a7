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

/// One named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 6] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

/// Draws `series` into a PNG at `path`. Returns false when skipped (no font, no data).
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<bool> {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 || !font_ready() {
        return Ok(false);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
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
    let s = |name: &str, points| Series { name: name.into(), points };
    line_chart(&dir.join("loss.png"), "training loss", "step", "loss", &[s("", series(&m, "step", &["loss"]))])?;
    line_chart(&dir.join("lr.png"), "learning rate", "step", "lr", &[s("", series(&m, "step", &["lr"]))])?;
    let top1 = series(&m, "epoch_end", &["eval", "top1"]);
    if !top1.is_empty() {
        line_chart(&dir.join("accuracy.png"), "validation accuracy", "epoch", "top-1 (%)", &[s("top-1", top1)])?;
    }
    Ok(())
}
