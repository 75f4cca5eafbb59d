//! Wasm tasks against native tasks in the same modes: `see-demo --compare-tasks DIR` reads the
//! requests files `cargo xtask bench tasks` leaves in `DIR` ([`round_file`]: one see-demo run
//! per task kind and round, the kinds interleaved) and computes, for every mode, the host's and
//! the guest's p50 and p95 of each kind and the Wasm / native ratio, with session-level paired
//! bootstrap intervals ([`crate::bootstrap`]).
//!
//! Both kinds of a round replay the same held-out sessions (the same workload seed), so the
//! bootstrap unit is a `(round, repetition, session)` triple: each resample draws triples, and
//! the native and Wasm statistics of a resample come from the same sessions (the ratio's
//! interval is paired). A triple that some mode or kind did not replay is left out of every
//! figure, and counted; two kinds that replayed different requests in a session are an error.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use crate::{
    bootstrap::{self, Interval, Resamples},
    records::Record,
    DemoError,
};

/// The task kinds, in the order of the table's columns.
pub const KINDS: [&str; 2] = ["native", "wasm"];

/// Where `cargo xtask bench tasks` puts the requests file of `kind` in `round` (from 1).
pub fn round_file(dir: &Path, round: u32, kind: &str) -> PathBuf {
    dir.join(format!("round{round}"))
        .join(kind)
        .join("requests.csv")
}

/// The figures of each mode and kind, in order within [`STATS`] base statistics.
const FIGURES: [&str; 5] = [
    "host p50 ms",
    "host p95 ms",
    "guest p50 ms",
    "guest p95 ms",
    "work mean ms",
];
const STATS: usize = FIGURES.len();

/// A bootstrap unit: round, repetition, session.
type Unit = (u32, u32, u32);

/// One mode's requests of one unit.
#[derive(Clone, Debug, Default)]
struct Cluster {
    host: Vec<u64>,
    guest: Vec<u64>,
    work_us: f64,
    types: Vec<String>,
}

/// One mode and kind's kept clusters, as the bootstrap reads them.
#[derive(Debug)]
struct Columns {
    host: Vec<Vec<u64>>,
    guest: Vec<Vec<u64>>,
    /// Each cluster's summed work (us) and its number of requests.
    work: Vec<(f64, f64)>,
}

impl Columns {
    fn new<'a>(clusters: impl Iterator<Item = &'a Cluster>) -> Self {
        let mut c = Columns {
            host: Vec::new(),
            guest: Vec::new(),
            work: Vec::new(),
        };
        for x in clusters {
            c.host.push(x.host.clone());
            c.guest.push(x.guest.clone());
            c.work.push((x.work_us, x.host.len() as f64));
        }
        c
    }
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The mode.
    pub mode: String,
    /// The figure ([`FIGURES`]).
    pub figure: &'static str,
    /// Native tasks.
    pub native: Option<Interval>,
    /// Wasm tasks.
    pub wasm: Option<Interval>,
    /// Wasm over native, paired.
    pub ratio: Option<Interval>,
}

/// The comparison of the two kinds.
#[derive(Debug)]
pub struct Comparison {
    /// The modes, in the order they first appear in the native records.
    pub modes: Vec<String>,
    /// Rounds.
    pub rounds: u32,
    /// Units every mode and kind replayed (the bootstrap's units).
    pub sessions: usize,
    /// Units some mode or kind did not replay, left out.
    pub dropped: usize,
    /// Requests of each mode in the kept units, per kind (the same for both).
    pub requests: Vec<usize>,
    /// The table: for every mode, every figure.
    pub rows: Vec<Row>,
}

/// Groups `records` (tagged with their round) by mode and unit.
fn clusters(records: &[(u32, Record)]) -> BTreeMap<String, BTreeMap<Unit, Cluster>> {
    let mut out: BTreeMap<String, BTreeMap<Unit, Cluster>> = BTreeMap::new();
    for (round, r) in records {
        let c = out
            .entry(r.mode.clone())
            .or_default()
            .entry((*round, r.rep, r.session))
            .or_default();
        c.host.push(r.host_ns);
        c.guest.push(r.guest_ns);
        c.work_us += r.work_us;
        c.types.push(r.kind.clone());
    }
    out
}

/// The comparison of `native` and `wasm` records, each tagged with its round; `None` when no
/// unit was replayed by every mode and kind.
pub fn compare(
    native: &[(u32, Record)],
    wasm: &[(u32, Record)],
    resamples: usize,
    seed: u64,
) -> Result<Option<Comparison>, DemoError> {
    let mut modes: Vec<String> = Vec::new();
    for (_, r) in native {
        if !modes.contains(&r.mode) {
            modes.push(r.mode.clone());
        }
    }
    let by_kind = [clusters(native), clusters(wasm)];
    let all: BTreeSet<Unit> = by_kind
        .iter()
        .flat_map(|k| k.values().flat_map(|m| m.keys().copied()))
        .collect();
    let empty = BTreeMap::new();
    let of = |k: usize, mode: &str| by_kind[k].get(mode).unwrap_or(&empty);
    let kept: Vec<Unit> = all
        .iter()
        .copied()
        .filter(|u| {
            !modes.is_empty()
                && modes
                    .iter()
                    .all(|m| (0..KINDS.len()).all(|k| of(k, m).contains_key(u)))
        })
        .collect();
    for m in &modes {
        for u in &kept {
            let (n, w) = (&of(0, m)[u], &of(1, m)[u]);
            if n.types != w.types {
                return Err(DemoError::Usage(format!(
                    "round {} session {} of mode {m}: the native and Wasm runs replayed different requests (the two kinds of a round must use the same workload and --seed)",
                    u.0, u.2
                )));
            }
        }
    }
    if kept.is_empty() {
        return Ok(None);
    }
    // Per mode and kind, the kept units' clusters in the order of `kept`.
    let table: Vec<[Columns; 2]> = modes
        .iter()
        .map(|m| [0, 1].map(|k| Columns::new(kept.iter().map(|u| &of(k, m)[u]))))
        .collect();
    let res: Resamples = bootstrap::resample(kept.len(), resamples, seed, |w| {
        let mut s = Vec::with_capacity(modes.len() * KINDS.len() * STATS);
        for kinds in &table {
            for c in kinds {
                let h = bootstrap::summary(&bootstrap::weighted_sorted(&c.host, w));
                let g = bootstrap::summary(&bootstrap::weighted_sorted(&c.guest, w));
                let (work, n) = c
                    .work
                    .iter()
                    .zip(w)
                    .fold((0.0, 0.0), |(a, b), (&(x, m), &k)| {
                        (a + x * f64::from(k), b + m * f64::from(k))
                    });
                s.extend([h[0], h[1], g[0], g[1], work / n * 1e3]);
            }
        }
        s
    });
    // Latencies are in ns and work in us (scaled by 1e3 above): all shown in ms.
    let ms = |i: usize| res.interval(|s| s[i] / 1e6);
    let mut rows = Vec::new();
    for (mi, mode) in modes.iter().enumerate() {
        for (fi, &figure) in FIGURES.iter().enumerate() {
            let at = |k: usize| (mi * KINDS.len() + k) * STATS + fi;
            let (n, w) = (at(0), at(1));
            rows.push(Row {
                mode: mode.clone(),
                figure,
                native: ms(n),
                wasm: ms(w),
                ratio: res.interval(|s| s[w] / s[n]),
            });
        }
    }
    let requests = table
        .iter()
        .map(|[n, _]| n.host.iter().map(Vec::len).sum())
        .collect();
    Ok(Some(Comparison {
        rounds: kept.iter().map(|u| u.0).collect::<BTreeSet<_>>().len() as u32,
        sessions: kept.len(),
        dropped: all.len() - kept.len(),
        requests,
        modes,
        rows,
    }))
}

/// Reads every round's requests files in `dir`, rounds from 1 until a round has neither; a
/// round with only one kind is an error (its run failed).
pub fn read_rounds(dir: &Path) -> Result<[Vec<(u32, Record)>; 2], DemoError> {
    let mut out: [Vec<(u32, Record)>; 2] = Default::default();
    for round in 1u32.. {
        let files = KINDS.map(|k| round_file(dir, round, k));
        let present = files.iter().filter(|f| f.is_file()).count();
        if present == 0 {
            break;
        }
        if present == 1 {
            let missing = files.iter().find(|f| !f.is_file()).expect("one is missing");
            return Err(DemoError::Usage(format!(
                "{} is missing: that run of round {round} failed; re-run the benchmark",
                missing.display()
            )));
        }
        for (k, f) in files.iter().enumerate() {
            out[k].extend(crate::records::read(f)?.into_iter().map(|r| (round, r)));
        }
    }
    if out[0].is_empty() {
        return Err(DemoError::Usage(format!(
            "{}: no round1/native/requests.csv (written by `cargo xtask bench tasks`)",
            dir.display()
        )));
    }
    Ok(out)
}

/// `--compare-tasks DIR`: reads the rounds and prints the table.
pub fn run(dir: &Path) -> Result<bool, DemoError> {
    let [native, wasm] = read_rounds(dir)?;
    let c = compare(&native, &wasm, bootstrap::RESAMPLES, bootstrap::SEED)?.ok_or_else(|| {
        DemoError::Usage(format!(
            "{}: no session was replayed in every mode by both kinds",
            dir.display()
        ))
    })?;
    print(&c);
    Ok(true)
}

/// Prints the comparison.
pub fn print(c: &Comparison) {
    println!(
        "Wasm tasks against native tasks, the same sessions in the same modes: {} rounds (the kinds interleaved, alternating which goes first), {} sessions kept ({} left out: not replayed by every mode and kind); session-level paired bootstrap, {} resamples (seed {:#x}); point [95 % interval]",
        c.rounds,
        c.sessions,
        c.dropped,
        bootstrap::RESAMPLES,
        bootstrap::SEED
    );
    println!(
        "host: the HTTP client, request sent to response read; guest: as the guest measured; work: the guest's mean time working on the bytes per request (for Wasm: instantiate and run, and compile when the module was not compiled at staging)"
    );
    for (mode, n) in c.modes.iter().zip(&c.requests) {
        let what = if crate::analysis::is_predictor(mode) {
            "predictor"
        } else {
            "non-predictive"
        };
        println!("{mode}: {what}, {n} requests per kind");
    }
    println!(
        "{:<10} {:<13} {:>26} {:>26} {:>24}",
        "mode", "figure", "native", "wasm", "wasm / native"
    );
    let show = |i: Option<Interval>, d: usize| i.map_or_else(|| "n/a".into(), |i| i.show(d));
    for r in &c.rows {
        println!(
            "{:<10} {:<13} {:>26} {:>26} {:>24}",
            r.mode,
            r.figure,
            show(r.native, 2),
            show(r.wasm, 2),
            show(r.ratio, 2) + "x"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sessions` sessions of 4 requests in `mode` for each of `rounds` rounds; host latency
    /// `ms(round, session, request)`, the guest 1 ms less, work 2 ms a request.
    fn records(
        mode: &str,
        rounds: u32,
        sessions: u32,
        ms: impl Fn(u32, u32, u32) -> f64,
    ) -> Vec<(u32, Record)> {
        let mut out = Vec::new();
        for round in 1..=rounds {
            for session in 1..=sessions {
                for request in 0..4 {
                    let host = (ms(round, session, request) * 1e6) as u64;
                    out.push((
                        round,
                        Record {
                            catalogue: "shop".into(),
                            mode: mode.into(),
                            rep: 1,
                            session,
                            request,
                            kind: format!("type{}", (session + request) % 3),
                            host_ns: host,
                            guest_ns: host - 1_000_000,
                            daemon_us: 0.0,
                            queue_us: 0.0,
                            claim_us: 0.0,
                            fetch_us: 0.0,
                            work_us: 2000.0,
                            staged_hits: 0,
                            demands: 0,
                            traffic_bytes: 0,
                        },
                    ));
                }
            }
        }
        out
    }

    fn lat(base: f64, scale: f64) -> impl Fn(u32, u32, u32) -> f64 {
        move |round, s, r| scale * (base + f64::from((round * 7 + s * 13 + r * 5) % 11))
    }

    #[test]
    fn a_known_slowdown_gets_its_ratio_in_every_resample() {
        let mut native = records("ppm", 3, 8, lat(20.0, 1.0));
        native.extend(records("reactive", 3, 8, lat(25.0, 1.0)));
        let mut wasm = records("ppm", 3, 8, lat(20.0, 3.0));
        wasm.extend(records("reactive", 3, 8, lat(25.0, 2.0)));
        for (_, r) in &mut wasm {
            r.work_us *= 5.0;
        }
        let c = compare(&native, &wasm, 300, 1).unwrap().unwrap();
        assert_eq!(c.modes, ["ppm", "reactive"]);
        assert_eq!((c.rounds, c.sessions, c.dropped), (3, 24, 0));
        assert_eq!(c.requests, [96, 96]);
        assert_eq!(c.rows.len(), 2 * FIGURES.len());
        let row = |mode: &str, figure: &str| {
            c.rows
                .iter()
                .find(|r| r.mode == mode && r.figure == figure)
                .unwrap()
                .clone()
        };
        // Host latencies scale exactly, in every resample: a zero-width interval at the scale.
        for (mode, scale) in [("ppm", 3.0), ("reactive", 2.0)] {
            for figure in ["host p50 ms", "host p95 ms"] {
                let r = row(mode, figure).ratio.unwrap();
                assert!((r.point - scale).abs() < 1e-6, "{mode} {figure}: {r:?}");
                assert!((r.hi - r.lo).abs() < 1e-6, "{mode} {figure}: {r:?}");
            }
            let work = row(mode, "work mean ms");
            assert!((work.native.unwrap().point - 2.0).abs() < 1e-9);
            assert!((work.ratio.unwrap().point - 5.0).abs() < 1e-9);
        }
        // The guest is 1 ms under the host: its ratio is not the host's.
        let n = row("ppm", "guest p50 ms").native.unwrap();
        let h = row("ppm", "host p50 ms").native.unwrap();
        assert!((h.point - n.point - 1.0).abs() < 1e-6, "{h:?} {n:?}");
        let g = row("ppm", "guest p50 ms").ratio.unwrap();
        assert!(g.point > 3.0, "{g:?}");
    }

    #[test]
    fn units_missing_in_a_kind_are_dropped_and_different_requests_refused() {
        let native = records("ppm", 2, 5, lat(20.0, 1.0));
        let mut wasm = records("ppm", 2, 5, lat(20.0, 2.0));
        wasm.retain(|(round, r)| !(*round == 2 && r.session == 5));
        let c = compare(&native, &wasm, 100, 2).unwrap().unwrap();
        assert_eq!((c.sessions, c.dropped), (9, 1));
        assert_eq!(c.requests, [36]);
        let mut other = records("ppm", 2, 5, lat(20.0, 2.0));
        other[3].1.kind = "checkout".into();
        let e = compare(&native, &other, 100, 2).unwrap_err().to_string();
        assert!(e.contains("different requests"), "{e}");
        assert!(compare(&native, &[], 100, 2).unwrap().is_none());
    }

    #[test]
    fn rounds_are_read_until_one_is_absent_and_a_half_round_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |round: u32, kind: &str| {
            let f = round_file(dir.path(), round, kind);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            let recs: Vec<Record> = records("ppm", 1, 2, lat(10.0, 1.0))
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            crate::records::write(&f, &recs).unwrap();
        };
        assert!(read_rounds(dir.path()).is_err(), "no round at all");
        for round in [1, 2] {
            write(round, "native");
            write(round, "wasm");
        }
        write(4, "native");
        let [n, w] = read_rounds(dir.path()).unwrap();
        assert_eq!((n.len(), w.len()), (16, 16));
        assert_eq!(n.last().unwrap().0, 2);
        write(3, "wasm");
        let e = read_rounds(dir.path()).unwrap_err().to_string();
        assert!(e.contains("round3/native") && e.contains("failed"), "{e}");
    }
}
