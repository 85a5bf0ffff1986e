//! `compare --plot`: one band per model and batch, its latency distributions on the left
//! (every timed run as a dot, the box from the 25th to the 75th percentile, whiskers from
//! the 5th to the 95th, the median as a bar; log scale, since backends differ by orders of
//! magnitude) and images per second on the right.

use crate::compare::Row;
use accel::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1200;
const LATENCY_WIDTH: u32 = 680;
const ROW_HEIGHT: u32 = 30;
const BAND_MARGIN: u32 = 90;

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    accel_planner::measure::percentile(sorted, p)
}

fn failed(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("cannot draw {}: {e}", path.display()))
}

pub fn draw(path: &Path, rows: &[Row]) -> Result<()> {
    // Bands in the rows' order, each with its measured backends.
    let mut bands: Vec<((String, usize), Vec<&Row>)> = Vec::new();
    for r in rows {
        let key = (r.model.clone(), r.result.batch);
        let at = match bands.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                bands.push((key, Vec::new()));
                bands.len() - 1
            }
        };
        if r.result.status == "ok" && !r.result.samples_ms.is_empty() {
            bands[at].1.push(r);
        }
    }
    bands.retain(|(_, rs)| !rs.is_empty());
    if bands.is_empty() {
        return Err(failed(path, "no backend was measured"));
    }
    let height: u32 = bands
        .iter()
        .map(|(_, rs)| BAND_MARGIN + ROW_HEIGHT * rs.len() as u32)
        .sum();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(path, e))?;
    let mut rest = root.clone();
    for ((model, batch), rs) in &bands {
        let h = BAND_MARGIN + ROW_HEIGHT * rs.len() as u32;
        let (band, below) = rest.split_vertically(h);
        rest = below;
        let (left, right) = band.split_horizontally(LATENCY_WIDTH);
        latency(&left, &format!("{model}, batch {batch}: latency (ms)"), rs)
            .map_err(|e| failed(path, e))?;
        throughput(&right, &format!("{model}, batch {batch}: images/s"), rs)
            .map_err(|e| failed(path, e))?;
    }
    root.present().map_err(|e| failed(path, e))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn ms_label(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}")
    } else if x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// The backends' labels on a y axis of row indices.
fn row_label(labels: &[String], y: f64) -> String {
    let i = y.round();
    if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
        labels[i as usize].clone()
    } else {
        String::new()
    }
}

fn latency(area: &Area, title: &str, rows: &[&Row]) -> DrawResult {
    let labels: Vec<String> = rows.iter().map(|r| r.result.label()).collect();
    let sorted: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut s = r.result.samples_ms.clone();
            s.sort_by(f64::total_cmp);
            s
        })
        .collect();
    let lo = sorted.iter().map(|s| s[0]).fold(f64::INFINITY, f64::min);
    let hi = sorted.iter().map(|s| s[s.len() - 1]).fold(0.0f64, f64::max);
    let n = rows.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), -0.6..n - 0.4)?;
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|y| row_label(&labels, *y))
        .x_labels(12)
        .x_label_formatter(&|x| ms_label(*x))
        .disable_y_mesh()
        .draw()?;
    for (i, s) in sorted.iter().enumerate() {
        let y = i as f64;
        let color = Palette99::pick(i);
        // Every run, spread a little in y so that equal times stay visible.
        chart.draw_series(s.iter().enumerate().map(|(k, &v)| {
            let jitter = ((k * 37) % 100) as f64 / 100.0 * 0.36 - 0.18;
            Circle::new((v, y + jitter), 2, color.mix(0.45).filled())
        }))?;
        let (p5, p25, p50, p75, p95) = (
            pct(s, 5.0),
            pct(s, 25.0),
            pct(s, 50.0),
            pct(s, 75.0),
            pct(s, 95.0),
        );
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(p5, y), (p95, y)],
            BLACK.stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(p25, y - 0.28), (p75, y + 0.28)],
            BLACK.stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(p50, y - 0.32), (p50, y + 0.32)],
            BLACK.stroke_width(3),
        )))?;
    }
    Ok(())
}

fn throughput(area: &Area, title: &str, rows: &[&Row]) -> DrawResult {
    let labels: Vec<String> = rows.iter().map(|r| r.result.label()).collect();
    let values: Vec<f64> = rows
        .iter()
        .map(|r| r.result.throughput_ips.unwrap_or(0.0))
        .collect();
    let hi = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    let n = rows.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..hi * 1.3, -0.6..n - 0.4)?;
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|y| row_label(&labels, *y))
        .disable_y_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (i, &v) in values.iter().enumerate() {
        let y = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y - 0.32), (v, y + 0.32)],
            Palette99::pick(i).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.1}"),
            (v + hi * 0.02, y + 0.15),
            ("sans-serif", 13),
        )))?;
    }
    Ok(())
}
