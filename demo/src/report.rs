//! The demo's report: the table of every mode (latencies at the host and in the guest, the
//! prefetch figures), the targets, where the guest's time went, the checked results, and the
//! latency distribution of every mode as a PNG (one CDF line per mode), drawn with plotters
//! like `see_pto::plot`.

use std::{path::Path, sync::OnceLock};

use plotters::{prelude::*, style::FontStyle};

use see_pto::online::ModeSummary;

use crate::{client::ModeRun, DemoError};

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(80, 80, 80),
];

fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font does not load".to_owned())
        })
        .clone()
}

/// The empirical CDF of `ns` in ms: (latency, fraction at or below).
pub fn cdf(ns: &[u64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = ns.iter().map(|&x| x as f64 / 1e6).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect()
}

/// Draws the latency CDF of every (mode, latencies in ns) to `path`.
pub fn plot(runs: &[(String, Vec<u64>)], title: &str, path: &Path) -> Result<(), DemoError> {
    let err = |e: &dyn std::fmt::Display| DemoError::Io(format!("{}: {e}", path.display()));
    if runs.iter().all(|r| r.1.is_empty()) {
        return Err(DemoError::Io("no latencies to plot".into()));
    }
    font().map_err(|e| err(&e))?;
    let top = runs
        .iter()
        .flat_map(|r| r.1.iter())
        .map(|&x| x as f64 / 1e6)
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "request latency at the host (HTTP client): cumulative distribution per mode",
            ("sans-serif", 15),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..top, 0f64..1.02f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("request latency, ms")
        .y_desc("fraction of requests")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, ns)) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = cdf(ns);
        // A step line: each point repeats the previous fraction before rising.
        let mut steps = Vec::with_capacity(pts.len() * 2 + 1);
        let mut prev = 0.0;
        for &(x, y) in &pts {
            steps.push((x, prev));
            steps.push((x, y));
            prev = y;
        }
        let p50 = pts.iter().find(|p| p.1 >= 0.5).map_or(0.0, |p| p.0);
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{name} (p50 {p50:.1} ms)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn pcts(ns: &[u64]) -> [f64; 4] {
    let mut l = ns.to_vec();
    l.sort_unstable();
    let ms = |q| see_pto::online::percentile(&l, q) as f64 / 1e6;
    let mean = l.iter().sum::<u64>() as f64 / l.len().max(1) as f64 / 1e6;
    [ms(0.5), ms(0.95), ms(0.99), mean]
}

/// Prints the report of `runs` (`working_set`: the bytes of the distinct resources the replayed
/// requests need) and draws `out/latency.png`; false when a result was wrong or
/// the plot failed.
pub fn print(
    runs: &[ModeRun],
    requests: usize,
    working_set: u64,
    a: &crate::Args,
    out: &Path,
) -> Result<bool, DemoError> {
    let mut ok = true;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!();
    println!(
        "latency at the host (the HTTP client: request sent to response read) and in the guest, ms"
    );
    println!(
        "{:<10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "mode", "reqs", "host p50", "host p95", "host p99", "host mean", "guest p50", "overhead"
    );
    for r in runs {
        let [p50, p95, p99, mean] = pcts(&r.host_ns);
        let g = pcts(&r.guest_ns);
        println!(
            "{:<10} {:>5} {p50:>9.2} {p95:>9.2} {p99:>9.2} {mean:>9.2} {:>9.2} {:>9.2}",
            r.summary.mode,
            r.host_ns.len(),
            g[0],
            p50 - g[0]
        );
    }
    println!();
    println!("{}", ModeSummary::header());
    for r in runs {
        println!("{}", r.summary);
    }
    if let Some(t) = crate::targets(runs) {
        let t = t.with_working_set(&crate::rows(runs), working_set);
        println!("{t} (guest p50s)");
    }
    println!();
    println!("where the guest's time went, mean ms per request: claiming staged resources, demand fetches, work on the bytes");
    for r in runs {
        let n = r.guest_ns.len().max(1) as f64 * 1e3;
        let [c, f, w] = r.claim_fetch_work_us.map(|x| x / n);
        println!(
            "{:<10} claim {c:>7.2}  fetch {f:>7.2}  work {w:>7.2}",
            r.summary.mode
        );
    }
    println!();
    println!("what crossed into the guest, MiB: prefetched, prefetched never claimed, demanded; re-sends skipped because the guest still held the resource");
    for r in runs {
        let s = &r.stats;
        println!(
            "{:<10} prefetched {:>7.1}  unclaimed {:>7.1}  demanded {:>7.1}  skipped {:>4}",
            r.summary.mode,
            mib(s.prefetched_bytes),
            mib(r.summary.wasted_bytes),
            mib(s.demand_bytes),
            s.skipped_resends
        );
    }
    println!();
    println!("task results, each checked against the host's own work on the store's bytes: checked of dispatched, wrong");
    let (mut checked, mut wrong) = (0, 0);
    for r in runs {
        let t = &r.results;
        println!(
            "{:<10} checked {:>5} of {:>5} tasks  wrong {:>3}",
            r.summary.mode, t.checked, t.dispatched, t.wrong
        );
        checked += t.checked;
        wrong += t.wrong;
    }
    println!("results checked: {checked} tasks, {wrong} wrong");
    if wrong > 0 {
        ok = false;
        eprintln!("see-demo: {wrong} task results differ from the host's (logged above)");
    }
    let png = out.join("latency.png");
    let series: Vec<(String, Vec<u64>)> = runs
        .iter()
        .map(|r| (r.summary.mode.clone(), r.host_ns.clone()))
        .collect();
    let title = format!(
        "see-demo: {requests} requests per mode over HTTP, {}",
        crate::origin_desc(a.latency_ms, a.bandwidth_mib)
    );
    match plot(&series, &title, &png) {
        Ok(()) => println!("report: {}", png.display()),
        Err(e) => {
            ok = false;
            eprintln!("see-demo: report: {e}");
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_sorted_and_ends_at_one() {
        let c = cdf(&[3_000_000, 1_000_000, 2_000_000]);
        assert_eq!(c, vec![(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
        assert!(cdf(&[]).is_empty());
    }

    #[test]
    fn plot_writes_a_png_and_refuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.png");
        let runs = vec![
            ("reactive".to_owned(), vec![50_000_000, 60_000_000]),
            ("oracle".to_owned(), vec![5_000_000, 7_000_000]),
        ];
        plot(&runs, "t", &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(plot(&[("x".into(), vec![])], "t", &p).is_err());
    }
}
