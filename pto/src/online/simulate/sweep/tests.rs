use std::sync::Arc;

use super::*;
use crate::{
    generate::{generate, Workload, WorkloadSpec},
    metadata::ServiceCatalogue,
    online::{
        origin::OriginModel,
        predictor_for,
        simulate::{replay_modes, working_set_bytes, SimConfig},
        Mode, Orchestrator, Policy,
    },
};

fn summary(mode: &str, p50_ms: f64) -> ModeSummary {
    ModeSummary {
        mode: mode.into(),
        requests: 1,
        p50_ms,
        p95_ms: p50_ms,
        p99_ms: p50_ms,
        hit_rate: 0.0,
        precision: None,
        wasted_bytes: 0,
        demand_fetches: 0,
        traffic_bytes: 0,
        prefetched_bytes: 0,
        plan_us: 0.0,
    }
}

#[test]
fn the_baseline_is_the_better_of_reactive_and_push() {
    let rows = [
        summary("reactive", 30.0),
        summary("reactive-nocache", 90.0),
        summary("markov", 20.0),
        summary("oracle", 10.0),
    ];
    assert_eq!(best_non_predictive(&rows), Some(0));
    assert_eq!(
        best_predictor(&rows),
        Some(2),
        "neither the oracle nor a baseline"
    );
    let mut with_push = rows.to_vec();
    with_push.push(summary("push", 25.0));
    assert_eq!(best_non_predictive(&with_push), Some(4));
    with_push[4].p50_ms = 35.0;
    assert_eq!(best_non_predictive(&with_push), Some(0));
    assert_eq!(best_non_predictive(&rows[2..]), None);
    assert!(!is_predictor("push") && !is_predictor("oracle") && is_predictor("learned"));
}

/// Replays of fixed per-session latencies (ms) for `analyse`.
fn fixed(mode: &str, sessions: &[&[u64]]) -> Replay {
    let sessions: Vec<Vec<u64>> = sessions
        .iter()
        .map(|s| s.iter().map(|ms| ms * 1_000_000).collect())
        .collect();
    let mut all: Vec<u64> = sessions.iter().flatten().copied().collect();
    all.sort_unstable();
    Replay {
        summary: summary(mode, percentile(&all, 0.5) as f64 / 1e6),
        host: sessions.clone(),
        reps: vec![sessions.len()],
        sessions,
    }
}

fn point() -> Point {
    Point {
        latency_ms: 20.0,
        bandwidth_mib: 100.0,
        budget_share: 0.5,
        think_ms: 200.0,
        size_scale: 0.25,
    }
}

#[test]
fn analyse_gives_intervals_around_the_speedup() {
    let reactive = fixed("reactive", &[&[40, 40, 40], &[44, 44], &[36, 38, 40, 42]]);
    let markov = fixed("markov", &[&[20, 20, 20], &[22, 22], &[18, 19, 20, 21]]);
    let r = analyse(
        Param::OriginLatency,
        point(),
        1 << 20,
        &[reactive, markov],
        500,
    );
    assert_eq!(r.best_predictor.as_deref(), Some("markov"));
    assert_eq!(r.baseline.as_deref(), Some("reactive"));
    let s = r.speedup.unwrap();
    assert!((s.estimate - 2.0).abs() < 0.01, "{s}");
    assert!(
        s.lo <= s.estimate && s.estimate <= s.hi && s.lo > 1.5,
        "{s}"
    );
    assert_eq!(verdict(&s), "prediction wins");
    assert_eq!(r.oracle_speedup, None);
    for m in &r.modes {
        assert!(m.p50.lo <= m.p50.estimate && m.p50.estimate <= m.p50.hi);
        assert!(m.p95.estimate >= m.p50.estimate);
    }
    let t = table(std::slice::from_ref(&r));
    assert!(t.contains("speedup of markov over reactive"), "{t}");
    assert!(t.contains("--latency-ms 20"), "{t}");
    // The same replays always print the same intervals.
    let again = analyse(
        Param::OriginLatency,
        point(),
        1 << 20,
        &[
            fixed("reactive", &[&[40, 40, 40], &[44, 44], &[36, 38, 40, 42]]),
            fixed("markov", &[&[20, 20, 20], &[22, 22], &[18, 19, 20, 21]]),
        ],
        500,
    );
    assert_eq!(again, r);
    // Equal modes: no difference.
    let same = analyse(
        Param::OriginLatency,
        point(),
        1,
        &[
            fixed("reactive", &[&[5, 6], &[7]]),
            fixed("ppm", &[&[5, 6], &[7]]),
        ],
        200,
    );
    assert_eq!(verdict(&same.speedup.unwrap()), "no difference");
}

#[test]
fn points_validate_and_name_the_demo_flags() {
    let p = point().with(Param::Budget, 0.1).with(Param::ThinkCap, 50.0);
    assert_eq!((p.get(Param::Budget), p.think_ms), (0.1, 50.0));
    assert!(p.validate().is_ok());
    assert_eq!(p.budget_bytes(10 << 20), 1 << 20);
    let flags = p.demo_flags(1 << 20);
    assert_eq!(
        flags,
        "--latency-ms 20 --bandwidth-mib 100 --size-scale 0.25 --think-ms 50 --budget-mib 1.0000"
    );
    for bad in [
        point().with(Param::OriginLatency, -1.0),
        point().with(Param::Budget, 0.0),
        point().with(Param::SizeScale, f64::NAN),
        point().with(Param::ThinkCap, f64::INFINITY),
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    assert_eq!("think-cap".parse::<Param>().unwrap(), Param::ThinkCap);
    assert!("latency".parse::<Param>().is_err());
    for p in Param::ALL {
        assert_eq!(p.default_points().len(), 4);
    }
}

#[test]
fn vm_figures_parse_and_compare() {
    let text = "param,value,mode,p50_ms\n# from see-demo\n\norigin-latency,20,reactive,30\norigin-latency,20,markov,100\nbudget,0.5,reactive,1\n";
    let vm = parse_vm_figures(text).unwrap();
    assert_eq!(vm.len(), 3);
    assert_eq!(vm[0].param, Param::OriginLatency);
    assert!(parse_vm_figures("budget,x,reactive,1").is_err());
    assert!(parse_vm_figures("budget,1,reactive").is_err());
    let e = parse_vm_figures("ok\nnope,1,reactive,2").unwrap_err();
    assert_eq!(e.line, 1);
    let r = analyse(
        Param::OriginLatency,
        point(),
        1,
        &[
            fixed("reactive", &[&[32, 32], &[32]]),
            fixed("markov", &[&[20, 20], &[20]]),
        ],
        100,
    );
    let out = compare_vm(&[r], &vm);
    // reactive: 32 against 30 is within 15 %; markov: 20 against 100 is not; budget was
    // not simulated.
    assert!(out.contains("1 of 2 simulated p50s within 15%"), "{out}");
    assert!(out.contains("not simulated"), "{out}");
}

/// A toy sweep of the origin latency: reactive, markov and the oracle on a short replay.
fn latency_sweep(latencies: &[f64]) -> Vec<PointResult> {
    let cat = Arc::new(ServiceCatalogue::default_catalogue());
    let mut trace = generate(
        &cat.vocabulary(),
        &WorkloadSpec::preset(Workload::Goal, 120, 5),
    )
    .unwrap();
    let test = trace.sessions.split_off(100);
    let ws = working_set_bytes(&cat, &test);
    let base = point().with(Param::SizeScale, 1.0);
    latencies
        .iter()
        .map(|&l| {
            let p = base.with(Param::OriginLatency, l);
            let budget = p.budget_bytes(ws);
            let policy = Policy {
                budget_bytes: budget,
                ..Policy::default()
            };
            // No costs but the origin's and the work: at zero latency and a fast link,
            // prediction has nothing to save.
            let cfg = SimConfig {
                origin: OriginModel::new(std::time::Duration::from_secs_f64(l / 1e3), 1e12)
                    .unwrap(),
                claim_ns: 0,
                demand_rtt_ns: 0,
                verify_sig_ns: 0,
                verify_ns_per_byte: 0.0,
                work_ns_per_byte: 1.0,
                think_cap_ms: p.think_ms,
                session_gap_ms: p.think_ms,
                store_budget: budget,
                ..SimConfig::default()
            };
            let replays = replay_modes(
                &cat,
                std::slice::from_ref(&test),
                &[Mode::Reactive, Mode::Markov, Mode::Oracle],
                &cfg,
                &mut |m, order| {
                    if m == Mode::Oracle {
                        Orchestrator::oracle(cat.clone(), policy.clone(), order)
                    } else {
                        let pr = predictor_for(m, &cat, &trace, None)?;
                        Ok(Orchestrator::new(cat.clone(), m, pr, policy.clone())?
                            .with_starts(&trace))
                    }
                },
            )
            .unwrap();
            analyse(Param::OriginLatency, p, budget, &replays, 200)
        })
        .collect()
}

#[test]
fn a_toy_sweep_is_sane_and_draws_its_png() {
    let r = latency_sweep(&[0.0, 20.0, 50.0]);
    // No latency, a fast link: prediction gains nothing (within 2 %).
    let zero = r[0].speedup.unwrap();
    assert!((zero.estimate - 1.0).abs() < 0.02, "{zero}");
    let oracle0 = r[0].oracle_speedup.unwrap();
    assert!((oracle0.estimate - 1.0).abs() < 0.02, "{oracle0}");
    // The oracle's gain grows with the latency, and at 50 ms it wins clearly.
    let o: Vec<f64> = r
        .iter()
        .map(|p| p.oracle_speedup.unwrap().estimate)
        .collect();
    assert!(o[0] <= o[1] && o[1] <= o[2], "{o:?}");
    assert!(r[2].oracle_speedup.unwrap().lo > 1.2, "{}", table(&r));
    // The best predictor never beats the oracle.
    for p in &r {
        assert!(p.speedup.unwrap().estimate <= p.oracle_speedup.unwrap().estimate + 1e-9);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin-latency.png");
    crate::plot::sweep::speedup(&r, "toy", &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 5_000, "a real picture: {} bytes", bytes.len());
    assert!(crate::plot::sweep::speedup(&[], "t", &path).is_err());
    let bad = dir.path().join("no/such/dir/x.png");
    assert!(crate::plot::sweep::speedup(&r, "t", &bad).is_err());
}

/// Push's guest latency leaves out its wait at the host: the modes are ranked and the speedups
/// taken on the host's latencies, and the VM is compared on the guest's, the median over the
/// repetitions of each one's p50.
#[test]
fn speedups_are_at_the_host_and_the_vm_check_in_the_guest() {
    let reactive = fixed("reactive", &[&[30, 30], &[30], &[30, 30]]);
    let mut push = fixed("push", &[&[12, 12], &[12], &[16, 16]]);
    // At the host push waited 25 ms for its set before each request.
    push.host = push
        .sessions
        .iter()
        .map(|s| s.iter().map(|ns| ns + 25_000_000).collect())
        .collect();
    // Three repetitions: sessions 1, 2 and 3 each.
    push.reps = vec![1, 1, 1];
    let ppm = fixed("ppm", &[&[20, 20], &[20], &[20, 20]]);
    let r = analyse(
        Param::OriginLatency,
        point(),
        1,
        &[reactive, push, ppm],
        100,
    );
    assert_eq!(
        r.baseline.as_deref(),
        Some("reactive"),
        "push is slower at the host"
    );
    let s = r.speedup.unwrap();
    assert!((s.estimate - 1.5).abs() < 1e-9, "{s}");
    let push = &r.modes[1];
    assert!((push.p50.estimate - 37.0).abs() < 1e-9, "{:?}", push.p50);
    // The median of the repetitions' guest p50s (12, 12, 16).
    assert_eq!(push.guest_p50, 12.0);
    let vm =
        parse_vm_figures("origin-latency,20,push,12.5\norigin-latency,20,reactive,40").unwrap();
    let out = compare_vm(&[r], &vm);
    assert!(out.contains("1 of 2 simulated p50s within 15%"), "{out}");
}
