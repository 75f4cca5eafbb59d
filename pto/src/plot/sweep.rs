//! A sweep as a PNG: the speedup of the best predictor over the best non-predictive mode at
//! each point, on the host's p50 (push's wait for its set included), with its 95 % interval,
//! beside the oracle's (the most prediction could win).

use std::path::Path;

use plotters::prelude::*;

use super::{font, PlotError};
use crate::online::simulate::sweep::{Interval, PointResult};

/// Which speedup of a point a series draws.
type Pick = fn(&PointResult) -> Option<Interval>;

/// Draws the speedups of `points` (one sweep, in order) to a PNG at `path`.
pub fn speedup(points: &[PointResult], title: &str, path: &Path) -> Result<(), PlotError> {
    let first = points.first().ok_or(PlotError::Empty)?;
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    font().map_err(|e| err(&e))?;
    let n = points.len();
    let top = points
        .iter()
        .flat_map(|p| [p.speedup, p.oracle_speedup])
        .flatten()
        .map(|s| s.hi)
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let labels: Vec<String> = points.iter().map(|p| p.param.show(p.value())).collect();
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&label)
        .x_desc(first.param.axis())
        .y_desc("host p50 speedup over the best non-predictive mode (x)")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
    let series: [(&str, RGBColor, f64, Pick); 2] = [
        ("best predictor", RGBColor(31, 119, 180), -0.06, |p| {
            p.speedup
        }),
        ("oracle", RGBColor(150, 150, 150), 0.06, |p| {
            p.oracle_speedup
        }),
    ];
    for (name, color, shift, get) in series {
        let pts: Vec<(f64, Interval)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| get(p).map(|s| (i as f64 + shift, s)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, s)| (x, s.estimate)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        // The interval: a vertical bar with caps, and a dot at the estimate.
        let cap = 0.04;
        for &(x, s) in &pts {
            chart
                .draw_series([
                    PathElement::new([(x, s.lo), (x, s.hi)], color.stroke_width(2)),
                    PathElement::new([(x - cap, s.lo), (x + cap, s.lo)], color.stroke_width(2)),
                    PathElement::new([(x - cap, s.hi), (x + cap, s.hi)], color.stroke_width(2)),
                ])
                .map_err(|e| err(&e))?;
        }
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, s)| Circle::new((x, s.estimate), 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
