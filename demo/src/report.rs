//! The demo's report: latency at the host with session-level bootstrap intervals (the
//! headline) and the guest's breakdown beside it, every mode's speedup over the best
//! non-predictive mode, the targets judged on their intervals ([`crate::analysis`]); then the
//! prefetch figures, what crossed into the guest and the checked results, pooled over the
//! repetitions; and the latency distribution of every mode as a PNG (one CDF line per mode),
//! drawn with plotters like `see_pto::plot`.

use std::{path::Path, sync::OnceLock};

use plotters::{prelude::*, style::FontStyle};

use see_pto::online::ModeSummary;

use crate::{
    analysis::{is_predictor, Analysis, LATENCY_STATS, NON_PREDICTIVE, ORACLE},
    bootstrap::{self, Verdict},
    client::ModeRun,
    records::Record,
    DemoError,
};

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

/// Prints the figures of the raw records with their intervals: the headline (latency at the
/// host), the guest's breakdown beside it, every mode's speedup over the best non-predictive
/// mode, and the targets (a missed target is a finding, not a failure of the demo).
pub fn print_analysis(a: &Analysis) {
    println!();
    println!(
        "latency at the host (the HTTP client: request sent to response read), ms: point [95 % interval]"
    );
    println!(
        "session-level bootstrap: {} sessions over {} repetitions, resampled {} times (seed {:#x}){}",
        a.sessions,
        a.reps,
        bootstrap::RESAMPLES,
        bootstrap::SEED,
        if a.dropped > 0 {
            format!(
                "; {} sessions some mode did not replay are left out of every mode",
                a.dropped
            )
        } else {
            String::new()
        }
    );
    let w = a.modes.iter().map(String::len).max().unwrap_or(4).max(4);
    println!(
        "{:<w$} {:>5}  {:<22} {:<22} {:<22} {:<22}",
        "mode", "reqs", "p50", "p95", "p99", "mean"
    );
    for (m, n) in a.modes.iter().zip(&a.requests) {
        let cells: Vec<String> = LATENCY_STATS
            .iter()
            .map(|&(k, _)| a.host(m, k).map_or_else(|| "n/a".into(), |i| i.show(2)))
            .collect();
        println!(
            "{m:<w$} {n:>5}  {:<22} {:<22} {:<22} {:<22}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
    println!();
    println!(
        "beside it, in the guest (as the guest measured), ms: p50 [95 % interval], mean; mean per request claiming staged or cached resources, demand-fetching, working; host mean minus guest mean"
    );
    for m in &a.modes {
        let p50 = a.guest(m, 0).map_or_else(|| "n/a".into(), |i| i.show(2));
        let mean = a.guest(m, 3).map_or(f64::NAN, |i| i.point);
        let [c, f, wk] = a.claim_fetch_work(m).unwrap_or([f64::NAN; 3]);
        let overhead = a.host(m, 3).map_or(f64::NAN, |i| i.point) - mean;
        println!(
            "{m:<w$} guest p50 {p50:<22} mean {mean:>7.2}  claim {c:>6.2} fetch {f:>7.2} work {wk:>7.2}  overhead {overhead:>5.2}"
        );
    }
    println!();
    match a.best_non_predictive() {
        Some(best) => {
            println!(
                "speedup over the best non-predictive mode (of {}; {best} at p50 as measured; in every resample the lower of them at each statistic): its latency over the mode's, point [95 % interval], and what the interval says",
                a.non_predictive().join(", ")
            );
            for m in &a.modes {
                let cells: Vec<String> = LATENCY_STATS
                    .iter()
                    .map(|&(k, name)| match a.speedup(m, k) {
                        Some(i) => {
                            format!("{name} {}x {}", i.show(2), Verdict::of_speedup(&i).as_str())
                        }
                        None => format!("{name} n/a"),
                    })
                    .collect();
                println!("{m:<w$} {}", cells.join("; "));
            }
            println!("(\"no difference\": the interval of the paired ratio contains 1)");
        }
        None => println!(
            "no non-predictive mode ({}) was run: no speedups",
            NON_PREDICTIVE.join(", ")
        ),
    }
    if a.modes.iter().any(|m| m == ORACLE) {
        let preds: Vec<&String> = a.modes.iter().filter(|m| is_predictor(m)).collect();
        if !preds.is_empty() {
            println!();
            println!(
                "predictors against the oracle: the predictor's latency over the oracle's, point [95 % interval]"
            );
            for m in preds {
                let cells: Vec<String> = LATENCY_STATS
                    .iter()
                    .map(|&(k, name)| {
                        a.ratio(m, ORACLE, k).map_or_else(
                            || format!("{name} n/a"),
                            |i| format!("{name} {}x", i.show(2)),
                        )
                    })
                    .collect();
                println!("{m:<w$} {}", cells.join("; "));
            }
        }
    }
    println!();
    let (targets, notes) = a.targets();
    println!(
        "targets, on host latencies; met only when the interval's bound meets the target{}",
        a.best_predictor()
            .map(|b| format!("; best predictor: {b} (lowest host p50 as measured)"))
            .unwrap_or_default()
    );
    for t in &targets {
        println!("  {}", t.line());
    }
    for n in &notes {
        println!("  {n}");
    }
    println!(
        "targets: {} of {} met{}",
        targets.iter().filter(|t| t.met() == Some(true)).count(),
        targets.len(),
        if notes.is_empty() {
            ""
        } else {
            "; some not evaluated (above)"
        }
    );
}

/// Every mode's runs pooled over the repetitions, in the order the modes first ran.
fn by_mode(runs: &[ModeRun]) -> Vec<(String, Vec<&ModeRun>)> {
    let mut out: Vec<(String, Vec<&ModeRun>)> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|(m, _)| *m == r.summary.mode) {
            Some((_, v)) => v.push(r),
            None => out.push((r.summary.mode.clone(), vec![r])),
        }
    }
    out
}

/// The table row of a mode's runs pooled: latencies over all their requests, counts summed.
pub fn pooled(mode: &str, runs: &[&ModeRun]) -> ModeSummary {
    let mut guest: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.records.iter().map(|x| x.guest_ns))
        .collect();
    guest.sort_unstable();
    let ms = |q| see_pto::online::percentile(&guest, q) as f64 / 1e6;
    let sum = |f: &dyn Fn(&ModeRun) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
    let hits = sum(&|r| r.stats.staged_hits + r.stats.cache_hits);
    let claims = hits + sum(&|r| r.stats.misses);
    let (useful, wasted) = (sum(&|r| r.outcomes.0), sum(&|r| r.outcomes.1));
    let requests = guest.len() as u64;
    ModeSummary {
        mode: mode.into(),
        requests,
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        hit_rate: if claims == 0 {
            0.0
        } else {
            hits as f64 / claims as f64
        },
        precision: (useful + wasted > 0).then(|| useful as f64 / (useful + wasted) as f64),
        wasted_bytes: sum(&|r| r.summary.wasted_bytes),
        demand_fetches: sum(&|r| r.stats.demand_fetches),
        traffic_bytes: sum(&|r| r.stats.traffic_bytes),
        prefetched_bytes: sum(&|r| r.stats.prefetched_bytes),
        plan_us: runs
            .iter()
            .map(|r| r.summary.plan_us * r.records.len() as f64)
            .sum::<f64>()
            / requests.max(1) as f64,
    }
}

/// Prints the report of `runs` (`working_set`: the bytes of the distinct resources each
/// repetition's requests need, summed over the repetitions; `csv`: where the raw records are) and draws `out/latency.png`; false when a
/// result was wrong, a target missed or the plot failed.
pub fn print(
    runs: &[ModeRun],
    working_set: u64,
    csv: &Path,
    a: &crate::Args,
    out: &Path,
) -> Result<bool, DemoError> {
    let mut ok = true;
    let mib = |b: u64| b as f64 / 1048576.0;
    let records: Vec<Record> = runs.iter().flat_map(|r| r.records.clone()).collect();
    if let Some(analysis) = Analysis::new(&records, bootstrap::RESAMPLES, bootstrap::SEED) {
        print_analysis(&analysis);
    }
    let modes = by_mode(runs);
    println!();
    println!(
        "the guest's latencies and the prefetch figures, all repetitions pooled (no intervals: see above for those)"
    );
    println!("{}", ModeSummary::header());
    for (m, rs) in &modes {
        println!("{}", pooled(m, rs));
    }
    println!(
        "working set of the replayed requests, summed over the repetitions (each starts cold): {:.1} MiB; traffic over it: {}",
        mib(working_set),
        modes
            .iter()
            .map(|(m, rs)| format!(
                "{m} {:.2}x",
                pooled(m, rs).traffic_bytes as f64 / working_set.max(1) as f64
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "what crossed into the guest, MiB: prefetched, prefetched never claimed, demanded; re-sends skipped because the guest still held the resource"
    );
    for (m, rs) in &modes {
        let sum = |f: &dyn Fn(&ModeRun) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
        println!(
            "{:<10} prefetched {:>7.1}  unclaimed {:>7.1}  demanded {:>7.1}  skipped {:>4}",
            m,
            mib(sum(&|r| r.stats.prefetched_bytes)),
            mib(sum(&|r| r.summary.wasted_bytes)),
            mib(sum(&|r| r.stats.demand_bytes)),
            sum(&|r| r.stats.skipped_resends)
        );
    }
    println!();
    println!(
        "task results, each checked against the host's own work on the store's bytes: checked of dispatched, wrong"
    );
    let (mut checked, mut wrong) = (0, 0);
    for (m, rs) in &modes {
        let (c, d, w) = rs.iter().fold((0, 0, 0), |(c, d, w), r| {
            (
                c + r.results.checked,
                d + r.results.dispatched,
                w + r.results.wrong,
            )
        });
        println!("{m:<10} checked {c:>5} of {d:>5} tasks  wrong {w:>3}");
        checked += c;
        wrong += w;
    }
    println!("results checked: {checked} tasks, {wrong} wrong");
    if wrong > 0 {
        ok = false;
        eprintln!("see-demo: {wrong} task results differ from the host's (logged above)");
    }
    println!(
        "raw per-request latencies: {} (recompute every figure above: see-demo --from-csv {})",
        csv.display(),
        csv.display()
    );
    let png = out.join("latency.png");
    let series: Vec<(String, Vec<u64>)> = modes
        .iter()
        .map(|(m, rs)| {
            (
                m.clone(),
                rs.iter()
                    .flat_map(|r| r.records.iter().map(|x| x.host_ns))
                    .collect(),
            )
        })
        .collect();
    let reps = runs.iter().map(|r| r.rep).max().unwrap_or(0);
    let title = format!(
        "see-demo: {} requests per mode over HTTP ({reps} repetitions), {}",
        a.requests * reps,
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
