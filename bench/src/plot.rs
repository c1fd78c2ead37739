//! PNG plots with `plotters` (bitmap backend, text through `ab_glyph` with DejaVu Sans from
//! Debian's `fonts-dejavu-core`, so no fontconfig/freetype is needed).

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::stats::Fit;

/// Where `fonts-dejavu-core` installs the font.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font as "sans-serif" once (the bytes must live for the program's lifetime).
pub fn init_font() -> Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(FONT)
        .with_context(|| format!("{FONT} missing: apt-get install -y fonts-dejavu-core"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let _ = DONE.set(());
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// RSS (MiB) of the daemon vs connected peers, with the fitted line.
pub fn rss(path: &Path, points: &[(f64, f64)], fit: Option<Fit>, title: &str) -> Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymin = points
        .iter()
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .min(f64::MAX);
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let pad = ((ymax - ymin) * 0.1).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0.0..xmax + 1.0, (ymin - pad).max(0.0)..ymax + pad)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("connected remote peers")
        .y_desc("daemon VmRSS (MiB)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 4, BLUE.filled())),
        )
        .map_err(err)?
        .label("measured")
        .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
    if let Some(f) = fit {
        chart
            .draw_series(LineSeries::new(
                [0.0, xmax].iter().map(|&x| (x, f.slope * x + f.intercept)),
                RED.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!(
                "fit: {:.0} KiB/peer (R² {:.2})",
                f.slope * 1024.0,
                f.r2
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Throughput (MB/s, median) vs message size (log₂ x axis), one line per series.
pub fn throughput(path: &Path, series: &[(String, Vec<(usize, f64)>)]) -> Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| (p.0 as f64).log2()))
        .collect();
    let xmin = xs.iter().copied().fold(f64::MAX, f64::min);
    let xmax = xs.iter().copied().fold(0.0, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput vs message size (median)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(xmin - 0.5..xmax + 0.5, 0.0..ymax * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .y_desc("MB/s (10^6 bytes/s)")
        .x_label_formatter(&|x| {
            let b = 2f64.powf(*x);
            if b >= 1024.0 * 1024.0 {
                format!("{:.0} MiB", b / 1024.0 / 1024.0)
            } else {
                format!("{:.0} KiB", b / 1024.0)
            }
        })
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let data: Vec<(f64, f64)> = pts.iter().map(|p| ((p.0 as f64).log2(), p.1)).collect();
        chart
            .draw_series(LineSeries::new(data.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(data.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
