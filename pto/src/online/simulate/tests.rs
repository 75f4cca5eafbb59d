use super::*;
use crate::{
    generate::{generate, Workload, WorkloadSpec},
    online::{predictor_for, Policy},
    trace::Trace,
};

fn setup(sessions: usize) -> (Arc<ServiceCatalogue>, Trace, Vec<Session>) {
    let cat = Arc::new(ServiceCatalogue::default_catalogue());
    let mut trace = generate(
        &cat.vocabulary(),
        &WorkloadSpec::preset(Workload::Goal, sessions, 3),
    )
    .unwrap();
    let test = trace.sessions.split_off(sessions * 4 / 5);
    (cat, trace, test)
}

/// The bytes the replayed requests of `setup(sessions)` need: each request's distinct
/// resources, counted once per request.
fn needed_bytes(sessions: usize) -> u64 {
    let (cat, _, test) = setup(sessions);
    replay_order(&test, &cat.vocabulary())
        .iter()
        .map(|(_, name)| {
            let req = cat.request(name).unwrap();
            let mut ids: Vec<usize> = req
                .tasks
                .iter()
                .flat_map(|&t| cat.tasks[t].resources.iter().copied())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.iter().map(|&r| cat.resources[r].size).sum::<u64>()
        })
        .sum()
}

fn rows(modes: &[Mode], policy: &Policy) -> Vec<ModeSummary> {
    let cfg = SimConfig {
        store_budget: policy.budget_bytes,
        ..SimConfig::default()
    };
    rows_with(modes, policy, &cfg)
}

fn rows_with(modes: &[Mode], policy: &Policy, cfg: &SimConfig) -> Vec<ModeSummary> {
    let (cat, train, test) = setup(150);
    run_modes(&cat, &test, modes, cfg, &mut |m, order| {
        if m == Mode::Oracle {
            Orchestrator::oracle(cat.clone(), policy.clone(), order)
        } else {
            let p = predictor_for(m, &cat, &train, None)?;
            Ok(Orchestrator::new(cat.clone(), m, p, policy.clone())?.with_starts(&train))
        }
    })
    .unwrap()
}

#[test]
fn a_cache_that_holds_the_working_set_moves_each_resource_once() {
    let policy = Policy {
        budget_bytes: 1 << 30,
        ..Policy::default()
    };
    let r = rows(&[Mode::Reactive, Mode::Oracle], &policy);
    let (reactive, oracle) = (&r[0], &r[1]);
    // Reactive demand-fetches each resource once, then serves it from the cache.
    assert!(
        reactive.hit_rate > 0.9 && reactive.hit_rate < 1.0,
        "{reactive}"
    );
    assert_eq!(reactive.traffic_bytes, oracle.traffic_bytes);
    // The oracle prefetches each resource once and never misses.
    assert_eq!((oracle.hit_rate, oracle.demand_fetches), (1.0, 0));
    assert_eq!(
        (oracle.prefetched_bytes, oracle.wasted_bytes),
        (oracle.traffic_bytes, 0)
    );
    assert!(oracle.p99_ms <= reactive.p99_ms, "{oracle}\n{reactive}");
}

#[test]
fn oracle_beats_reactive_that_hits_only_its_cache() {
    let r = rows(
        &[Mode::Reactive, Mode::Static, Mode::Markov, Mode::Oracle],
        &Policy::default(),
    );
    let (reactive, oracle) = (&r[0], &r[3]);
    let requests = reactive.requests;
    assert!(requests > 100);
    assert!(
        r.iter().all(|x| x.requests == requests),
        "every mode completes every request"
    );
    // Reactive stages nothing: it demand-fetches what its cache lacks, never more than every
    // distinct resource of every request.
    let needed = needed_bytes(150);
    assert_eq!(reactive.prefetched_bytes, 0);
    assert!(
        reactive.traffic_bytes > 0 && reactive.traffic_bytes <= needed,
        "{reactive}: traffic {} of {needed} needed",
        reactive.traffic_bytes
    );
    // Reactive hits only its cache (the working set is larger than the 16 MiB budget, so
    // some resources are demanded again).
    assert!(
        reactive.hit_rate > 0.0 && reactive.hit_rate < 1.0,
        "{reactive}"
    );
    assert!(reactive.demand_fetches > requests);
    assert_eq!(reactive.precision, None, "reactive prefetches nothing");
    // The oracle wastes nothing and misses less than reactive; within this budget the cache
    // still pushes out some of what it staged (see the test above for a cache that holds
    // everything).
    assert!(oracle.hit_rate > reactive.hit_rate, "{oracle}\n{reactive}");
    assert!(oracle.demand_fetches < reactive.demand_fetches);
    assert_eq!((oracle.wasted_bytes, oracle.precision), (0, Some(1.0)));
    assert!(
        oracle.p50_ms * 3.0 < reactive.p50_ms,
        "{oracle}\n{reactive}"
    );
    let markov = &r[2];
    assert!(markov.hit_rate > 0.3 && markov.hit_rate < 1.0, "{markov}");
    assert!(markov.traffic_bytes >= oracle.traffic_bytes + markov.wasted_bytes);
    let t = Targets::from_rows(&r).unwrap();
    assert!(t.speedup > 1.0 && t.vs_oracle >= 1.0);
    assert!(t.to_string().contains("best predictor"));
    let best = r.iter().find(|x| x.mode == t.best).unwrap();
    assert_eq!(
        t.traffic_vs_oracle,
        best.traffic_bytes as f64 / oracle.traffic_bytes as f64
    );
    assert!(t.traffic_vs_oracle >= 1.0, "{t}");
    // The working set counts each resource once: less than what the requests claim in all.
    let (cat, _, test) = setup(150);
    let ws = working_set_bytes(&cat, &test);
    assert!(ws > 0 && ws < oracle.traffic_bytes);
    assert!(ws <= cat.resources.iter().map(|x| x.size).sum::<u64>());
    assert_eq!(t.traffic_vs_working_set, None);
    let t = t.with_working_set(&r, ws);
    assert_eq!(
        t.traffic_vs_working_set,
        Some(best.traffic_bytes as f64 / ws as f64)
    );
    assert!(t.to_string().contains("x the working set"), "{t}");
}

#[test]
fn budget_bounds_what_is_staged() {
    // A budget smaller than most requests' resources: fewer hits, never over budget.
    let small = Policy {
        budget_bytes: 2 << 20,
        ..Policy::default()
    };
    let (cat, _, test) = setup(40);
    let order = replay_order(&test, &cat.vocabulary());
    let mut orch = Orchestrator::oracle(cat.clone(), small.clone(), order.clone()).unwrap();
    let vocab = cat.vocabulary();
    for (s, name) in &order {
        let plan = orch.on_request(*s, name, 0).unwrap();
        assert!(orch.staging().bytes() <= small.budget_bytes);
        let staged_ids: Vec<u64> = plan.prefetch.iter().map(|o| o.resource_id).collect();
        let mut dedup = staged_ids.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            staged_ids.len(),
            "never the same resource twice"
        );
        let f = orch
            .on_completion(&Completion {
                request_id: plan.dispatch.request_id,
                ..Completion::default()
            })
            .unwrap();
        assert!(orch.staging().bytes() <= small.budget_bytes);
        assert!(f
            .prefetch
            .iter()
            .all(|o| !staged_ids.contains(&o.resource_id)));
        assert_eq!(vocab.name(plan.dispatch.request_type), Some(name.as_str()));
    }
    assert!(orch.metrics().skipped_budget > 0);
    assert_eq!(orch.oracle_misses(), 0);
}

#[test]
fn work_cost_is_measured() {
    // An error if see-workload cannot generate or process a resource, never a made-up cost.
    let ns = measure_work_ns_per_byte().unwrap();
    assert!(ns.is_finite() && ns > 0.0);
}

#[test]
fn learned_mode_loads_a_checkpoint_and_refuses_a_bad_one() {
    use crate::nn::{self, HyperParams, ModelKind};
    let (cat, train, test) = setup(60);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lstm");
    let hp = HyperParams {
        epochs: 2,
        embed: 8,
        hidden: 8,
        ..HyperParams::default_for(ModelKind::Lstm)
    };
    let trained = nn::train(
        &hp,
        Arc::new(train.vocab.clone()),
        &train.sessions,
        &[],
        &mut |_| {},
    )
    .unwrap();
    nn::save(&trained, &path, None, "test", None).unwrap();
    let p = predictor_for(Mode::Learned, &cat, &train, Some(&path)).unwrap();
    let mut orch = Orchestrator::new(cat.clone(), Mode::Learned, p, Policy::default()).unwrap();
    let row = simulate(&mut orch, &cat, &test[..5], &SimConfig::default()).unwrap();
    assert_eq!(row.mode, "learned");
    assert_eq!(
        row.requests as usize,
        test[..5].iter().map(|s| s.requests.len()).sum::<usize>()
    );
    assert!(orch.metrics().prefetched > 0);
    // No checkpoint, or a corrupt one: a clear configuration error.
    assert!(matches!(
        predictor_for(Mode::Learned, &cat, &train, None),
        Err(OnlineError::NoCheckpoint)
    ));
    std::fs::write(path.with_extension("safetensors"), b"junk").unwrap();
    let err = predictor_for(Mode::Learned, &cat, &train, Some(&path))
        .err()
        .unwrap();
    assert!(err.to_string().contains("retrain"), "{err}");
}

#[test]
fn the_oracle_scores_only_staged_or_cached_hits() {
    // With a cache that holds what it stages, every claim of the oracle's replay is a staged
    // hit or a cache hit: it never demands.
    let policy = Policy {
        budget_bytes: 1 << 30,
        ..Policy::default()
    };
    let r = rows(&[Mode::Oracle], &policy);
    let oracle = &r[0];
    assert!(oracle.requests > 100);
    assert_eq!(oracle.hit_rate, 1.0, "{oracle}");
    assert_eq!(oracle.demand_fetches, 0, "{oracle}");
}

#[test]
fn reactive_is_never_slower_than_reactive_nocache() {
    let r = rows(&[Mode::ReactiveNocache, Mode::Reactive], &Policy::default());
    let (naive, reactive) = (&r[0], &r[1]);
    assert_eq!(naive.requests, reactive.requests);
    // The naive guest keeps nothing: every claim is a demand fetch, none a hit.
    assert_eq!(naive.hit_rate, 0.0, "{naive}");
    assert!(naive.demand_fetches > reactive.demand_fetches);
    assert!(naive.traffic_bytes > reactive.traffic_bytes);
    assert_eq!((naive.prefetched_bytes, naive.wasted_bytes), (0, 0));
    for (n, c) in [
        (naive.p50_ms, reactive.p50_ms),
        (naive.p95_ms, reactive.p95_ms),
        (naive.p99_ms, reactive.p99_ms),
    ] {
        assert!(c <= n, "reactive {reactive}\nnaive {naive}");
    }
}

#[test]
fn push_stages_the_recorded_sets_at_dispatch() {
    let r = rows(&[Mode::Reactive, Mode::Push], &Policy::default());
    let (reactive, push) = (&r[0], &r[1]);
    assert_eq!(push.requests, reactive.requests);
    // After the first request of each type, push stages what the type claimed: more hits
    // than reactive, and what it pushes is claimed (the shop's request types always claim
    // the same set), unless the cache pushed it out first.
    assert!(push.prefetched_bytes > 0, "{push}");
    assert!(push.hit_rate > reactive.hit_rate, "{push}\n{reactive}");
    assert!(push.demand_fetches < reactive.demand_fetches);
    assert!(push.precision.is_some_and(|p| p > 0.9), "{push}");
}

#[test]
fn the_headline_compares_with_the_better_non_predictive_mode() {
    let row = |mode: &str, p50: f64, p95: f64| ModeSummary {
        mode: mode.into(),
        requests: 10,
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p95,
        hit_rate: 0.5,
        precision: None,
        wasted_bytes: 0,
        demand_fetches: 0,
        traffic_bytes: 100,
        prefetched_bytes: 0,
        plan_us: 0.0,
    };
    let mut r = vec![
        row("reactive-nocache", 100.0, 200.0),
        row("reactive", 40.0, 80.0),
        row("push", 30.0, 90.0),
        row("markov", 20.0, 50.0),
        row("oracle", 10.0, 20.0),
    ];
    let t = Targets::from_rows(&r).unwrap();
    // The naive baseline is shown beside, never the one compared with.
    assert_eq!((t.best.as_str(), t.baseline.as_str()), ("markov", "push"));
    assert_eq!(t.speedup, 1.5);
    assert_eq!(t.vs_naive, Some(5.0));
    assert_eq!(t.gain_p50, Some(0.5));
    assert_eq!(t.gain_p95, Some(40.0 / 70.0));
    assert!(!t.met(), "half the oracle's p50 gain is below 70 %");
    let text = t.to_string();
    assert!(
        text.contains("best non-predictive mode: push") && text.contains("reactive-nocache"),
        "{text}"
    );
    // Push slower than reactive: reactive is the baseline; no naive row, no comparison.
    r[2].p50_ms = 45.0;
    r.remove(0);
    let t = Targets::from_rows(&r).unwrap();
    assert_eq!((t.baseline.as_str(), t.vs_naive), ("reactive", None));
    assert_eq!(t.gain_p50, Some(2.0 / 3.0));
    // Without any non-predictive mode there is no headline.
    r.retain(|x| x.mode != "reactive" && x.mode != "push");
    assert_eq!(Targets::from_rows(&r), None);
}
