//! The evaluation as a PNG: accuracy and prefetch figures per predictor, and inference cost;
//! [`sweep`] draws a simulated sweep's speedups.
//!
//! Rendering is pure Rust (plotters' bitmap backend with `ab_glyph` text and the DejaVu Sans
//! font from the `dejavu` crate): no system font libraries are needed.

use std::{path::Path, sync::OnceLock};

use plotters::{prelude::*, style::FontStyle};

use crate::eval::Metrics;

pub mod sweep;

/// Errors of drawing the plot.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed (typically: the file cannot be written).
    #[error("cannot draw {path}: {message}; check that the directory exists and is writable")]
    Draw {
        /// The PNG.
        path: String,
        /// plotters' message.
        message: String,
    },
    /// Nothing to draw.
    #[error("no predictor figures to plot")]
    Empty,
}

fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font does not load".to_owned())
        })
        .clone()
}

const SERIES: [(&str, RGBColor); 5] = [
    ("top-1", RGBColor(31, 119, 180)),
    ("top-3", RGBColor(255, 127, 14)),
    ("top-5", RGBColor(44, 160, 44)),
    ("MRR", RGBColor(148, 103, 189)),
    ("staged-hit", RGBColor(214, 39, 40)),
];

/// Draws `rows` to a PNG at `path`, titled `title`.
pub fn plot(rows: &[Metrics], title: &str, path: &Path) -> Result<(), PlotError> {
    if rows.is_empty() {
        return Err(PlotError::Empty);
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    font().map_err(|e| err(&e))?;
    let root = BitMapBackend::new(path, (1500, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(1000);
    let n = rows.len();
    let names: Vec<String> = rows
        .iter()
        .map(|m| m.name.replace(" (limit)", ""))
        .collect();
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };

    let mut chart = ChartBuilder::on(&left)
        .caption(
            "accuracy and prefetch hit rate (held-out sessions)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..1.2f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&label)
        .y_desc("fraction")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / SERIES.len() as f64;
    for (j, (series, color)) in SERIES.iter().enumerate() {
        let bars = rows.iter().enumerate().map(|(i, m)| {
            let v = [m.top1, m.top3, m.top5, m.mrr, m.staged_hit_rate][j];
            let x0 = i as f64 - 0.4 + j as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(*series)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;

    let timed: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|m| m.us_per_request.map(|u| (m.name.as_str(), u)))
        .collect();
    let t = timed.len().max(1);
    let top = timed.iter().map(|t| t.1).fold(1.0f64, f64::max) * 1.15;
    let tlabel = |y: &f64| {
        let i = y.round();
        if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < timed.len() {
            timed[i as usize].0.to_owned()
        } else {
            String::new()
        }
    };
    let mut cost = ChartBuilder::on(&right)
        .caption(
            "inference time per request (us, one core)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(130)
        .build_cartesian_2d(0f64..top, -0.5f64..(t as f64 - 0.5))
        .map_err(|e| err(&e))?;
    cost.configure_mesh()
        .disable_y_mesh()
        .y_labels(t + 1)
        .y_label_formatter(&tlabel)
        .x_desc("microseconds")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    cost.draw_series(timed.iter().enumerate().map(|(i, &(_, u))| {
        Rectangle::new(
            [(0.0, i as f64 - 0.3), (u, i as f64 + 0.3)],
            RGBColor(100, 100, 100).filled(),
        )
    }))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, x: f64, us: Option<f64>) -> Metrics {
        Metrics {
            name: name.into(),
            positions: 10,
            top1: x,
            top3: x,
            top5: x,
            mrr: x,
            staged_hit_rate: x,
            precision: Some(x),
            wasted_per_request: 1.0 - x,
            us_per_request: us,
            outcomes: Vec::new(),
            session_positions: Vec::new(),
            expected_top1: Vec::new(),
        }
    }

    #[test]
    fn writes_a_png_without_system_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.png");
        plot(
            &[
                m("markov1", 0.4, Some(1.0)),
                m("lstm", 0.6, Some(30.0)),
                m("bayes-optimal (limit)", 0.7, None),
            ],
            "test",
            &path,
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 10_000,
            "a real picture: {} bytes",
            bytes.len()
        );
        assert!(matches!(plot(&[], "t", &path), Err(PlotError::Empty)));
        let bad = dir.path().join("no/such/dir/x.png");
        assert!(plot(&[m("a", 0.1, None)], "t", &bad).is_err());
    }
}
