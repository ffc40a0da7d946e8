//! SVG plots (plotters): the propagation latency distribution of each phase, as latency against
//! percentile on a "nines" axis (x = -log10(1 - q): p90 at 1, p99 at 2, p99.9 at 3), and the RSS of each watched process against
//! connected proxies.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::sample::Sample;

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

/// `curves`: (label, histogram of microseconds).
pub fn latency(path: &Path, title: &str, curves: &[(String, &Histogram<u64>)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = curves.iter().map(|(_, h)| h.max() as f64 / 1000.0).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..3.2f64, 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("API call → proxy received (ms)")
        .x_labels(4)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            _ => "p99.9".into(),
        })
        .draw()?;
    for (i, (label, h)) in curves.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = (0..=320)
            .map(|k| {
                let x = k as f64 / 100.0;
                let q = 1.0 - 10f64.powf(-x);
                (x, h.value_at_quantile(q.min(0.99999)) as f64 / 1000.0)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// RSS (MB) of each watched process against connected proxies, one point per second.
pub fn rss(path: &Path, title: &str, series: &[Sample]) -> anyhow::Result<()> {
    let names: Vec<String> =
        series.iter().flat_map(|s| s.procs.iter().map(|p| p.name.clone())).fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    if names.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = series.iter().map(|s| s.connected).max().unwrap_or(1).max(1) as f64 * 1.05;
    let max_y = series
        .iter()
        .flat_map(|s| s.procs.iter().map(|p| p.rss_bytes as f64 / 1048576.0))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
    chart.configure_mesh().x_desc("connected proxies").y_desc("RSS (MB)").draw()?;
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = series
            .iter()
            .filter_map(|s| {
                s.procs
                    .iter()
                    .find(|p| &p.name == name)
                    .map(|p| (s.connected as f64, p.rss_bytes as f64 / 1048576.0))
            })
            .collect();
        chart
            .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 3, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
