use std::{collections::HashSet, sync::Arc};

use super::*;
use crate::{
    audit::{verify, AuditLog, FsyncPolicy},
    history::History,
    metadata::ServiceCatalogue,
    predict::{Ppm, Predictor, Reactive},
};

fn cat() -> Arc<ServiceCatalogue> {
    Arc::new(ServiceCatalogue::default_catalogue())
}

fn ids_of(cat: &ServiceCatalogue, name: &str) -> Vec<u64> {
    let mut v: Vec<u64> = cat
        .resources_of(name)
        .iter()
        .map(|r| cat.resource_wire_id(r).unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn reactive_dispatches_with_wire_ids_and_never_prefetches() {
    let cat = cat();
    let p = Box::new(Reactive::new(Arc::new(cat.vocabulary())));
    let mut o = Orchestrator::new(cat.clone(), Mode::Reactive, p, Policy::default()).unwrap();
    let plan = o.on_request(9, "search", 5_000).unwrap();
    assert!(plan.prefetch.is_empty() && plan.evict.is_empty());
    let d = &plan.dispatch;
    assert_eq!(
        (d.request_id, d.session, d.app_id, d.name.as_str()),
        (1, 9, 1, "search")
    );
    assert_eq!(cat.vocabulary().name(d.request_type), Some("search"));
    assert_eq!(
        o.on_request(9, "home", 6_000).unwrap().dispatch.request_id,
        2
    );
    assert!(matches!(
        o.on_request(9, "teleport", 0),
        Err(OnlineError::UnknownRequest(_))
    ));
    let bad = Report {
        kind: ReportKind::ClaimHit,
        reason: None,
        app_id: 1,
        task_id: 1,
        resource_id: 10_000,
        version: 1,
        latency_ns: 0,
    };
    // The guest's mistakes (or lies) are counted, never errors.
    o.on_report(&bad).unwrap();
    let follow = o
        .on_completion(&Completion {
            request_id: 77,
            ..Completion::default()
        })
        .unwrap();
    assert!(follow.prefetch.is_empty() && follow.evict.is_empty());
    let faults = o.guest_faults();
    assert_eq!((faults.unknown_resources, faults.unknown_requests), (1, 1));
    assert_eq!(WireIds::resource_index(0), None);
}

#[test]
fn oracle_stages_the_next_request_and_keeps_what_the_guest_caches() {
    let cat = cat();
    let future = [(1, "home"), (1, "catalog"), (1, "catalog")].map(|(s, n)| (s, n.to_string()));
    let mut o = Orchestrator::oracle(cat.clone(), Policy::default(), future).unwrap();
    let home = ids_of(&cat, "home");
    let catalog = ids_of(&cat, "catalog");
    let plan = o.on_request(1, "home", 0).unwrap();
    // Now: catalog's resources that home does not claim; after home completes: the shared ones.
    let mut now: Vec<u64> = plan.prefetch.iter().map(|p| p.resource_id).collect();
    now.sort_unstable();
    let expect_now: Vec<u64> = catalog
        .iter()
        .copied()
        .filter(|r| !home.contains(r))
        .collect();
    assert_eq!(now, expect_now);
    assert!(plan
        .prefetch
        .iter()
        .all(|p| p.probability == 1.0 && p.for_request == "catalog"));
    let f = o
        .on_completion(&Completion {
            request_id: 1,
            ..Completion::default()
        })
        .unwrap();
    let mut later: Vec<u64> = f.prefetch.iter().map(|p| p.resource_id).collect();
    later.sort_unstable();
    let shared: Vec<u64> = catalog
        .iter()
        .copied()
        .filter(|r| home.contains(r))
        .collect();
    assert!(!shared.is_empty());
    assert_eq!(later, shared);
    // catalog -> catalog: everything it claims is needed again, so all of it waits.
    let plan = o.on_request(1, "catalog", 10).unwrap();
    assert!(plan.prefetch.is_empty(), "{:?}", plan.prefetch);
    // Claims leave the copies in the guest's cache.
    for id in &catalog {
        o.on_report(&Report {
            kind: ReportKind::ClaimHit,
            reason: None,
            app_id: 1,
            task_id: 1,
            resource_id: *id,
            version: 1,
            latency_ns: 10,
        })
        .unwrap();
    }
    assert!(o.staging().is_empty());
    let f = o
        .on_completion(&Completion {
            request_id: 2,
            ..Completion::default()
        })
        .unwrap();
    // The next catalog needs them again: the guest still caches them, so they are staged
    // again without a transfer.
    assert!(f.prefetch.is_empty(), "{:?}", f.prefetch);
    assert!(catalog
        .iter()
        .all(|&id| o.staging().contains(WireIds::resource_index(id).unwrap())));
    assert_eq!(o.metrics().readopted, catalog.len() as u64);
    assert_eq!(o.metrics().useful, catalog.len() as u64);
    // Their second claims are cache hits: not useful twice, and never wasted.
    for id in &catalog {
        o.on_report(&Report {
            kind: ReportKind::CacheHit,
            reason: None,
            app_id: 1,
            task_id: 1,
            resource_id: *id,
            version: 1,
            latency_ns: 10,
        })
        .unwrap();
    }
    let summary = o.finish().unwrap();
    assert_eq!(o.metrics().useful, catalog.len() as u64);
    assert_eq!(
        (o.metrics().cache_hits, summary.wasted_bytes),
        (catalog.len() as u64, 0)
    );
}

#[test]
fn markov_prefetches_above_threshold_and_evicts_what_went_stale() {
    let cat = cat();
    let vocab = Arc::new(cat.vocabulary());
    let mut m = Ppm::markov1(vocab.clone());
    // Teach: home -> search always; search -> product_view always.
    let home = vocab.get("home").unwrap();
    let search = vocab.get("search").unwrap();
    let pv = vocab.get("product_view").unwrap();
    for _ in 0..20 {
        m.observe(&crate::predict::SessionContext::from_ids(&[home]), search);
        m.observe(
            &crate::predict::SessionContext::from_ids(&[home, search]),
            pv,
        );
    }
    let policy = Policy {
        threshold: 0.5,
        top_k: 1,
        ..Policy::default()
    };
    let mut o = Orchestrator::new(cat.clone(), Mode::Markov, Box::new(m), policy).unwrap();
    let plan = o.on_request(1, "home", 0).unwrap();
    assert!(!plan.prefetch.is_empty());
    assert!(plan
        .prefetch
        .iter()
        .all(|p| p.for_request == "search" && p.probability > 0.5));
    o.on_completion(&Completion {
        request_id: 1,
        ..Completion::default()
    })
    .unwrap();
    // The user goes elsewhere: search's staged resources that nobody wants now are stale.
    let staged_before = o.staging().bytes();
    assert!(staged_before > 0);
    let plan = o.on_request(1, "account_page", 1).unwrap();
    assert!(!plan.evict.is_empty());
    let search_only: Vec<u64> = ids_of(&cat, "search")
        .into_iter()
        .filter(|r| !ids_of(&cat, "account_page").contains(r))
        .collect();
    for e in &plan.evict {
        assert!(search_only.contains(&e.resource_id), "{e:?}");
    }
    // The orchestrator sends no Evict: the guest keeps what it was sent, so nothing is wasted yet, and
    // a given-up resource the guest claims after all counts as useful.
    assert_eq!(o.metrics().wasted, 0);
    let late = plan.evict[0].resource_id;
    o.on_report(&Report {
        kind: ReportKind::ClaimHit,
        reason: None,
        app_id: 1,
        task_id: 1,
        resource_id: late,
        version: 1,
        latency_ns: 1,
    })
    .unwrap();
    assert_eq!(o.metrics().useful, 1);
    o.finish().unwrap();
    let m = o.metrics();
    assert_eq!(m.wasted, m.prefetched - 1, "{m:?}");
    let given_up: u64 = plan.evict.iter().map(|e| e.bytes).sum();
    assert!(m.wasted_bytes >= given_up - plan.evict[0].bytes, "{m:?}");
}

#[test]
fn a_given_up_resource_the_guest_still_holds_is_not_sent_again() {
    let cat = cat();
    let vocab = Arc::new(cat.vocabulary());
    let mut m = Ppm::markov1(vocab.clone());
    let home = vocab.get("home").unwrap();
    let search = vocab.get("search").unwrap();
    let pv = vocab.get("product_view").unwrap();
    for _ in 0..20 {
        m.observe(&crate::predict::SessionContext::from_ids(&[home]), search);
        m.observe(
            &crate::predict::SessionContext::from_ids(&[home, search]),
            pv,
        );
    }
    let policy = Policy {
        threshold: 0.5,
        top_k: 1,
        ..Policy::default()
    };
    let mut o = Orchestrator::new(cat.clone(), Mode::Markov, Box::new(m), policy).unwrap();
    let first = o.on_request(1, "home", 0).unwrap();
    let mut orders = first.prefetch.len();
    let sent: HashSet<u64> = first.prefetch.iter().map(|p| p.resource_id).collect();
    let follow = o
        .on_completion(&Completion {
            request_id: first.dispatch.request_id,
            ..Completion::default()
        })
        .unwrap();
    orders += follow.prefetch.len();
    let away = o.on_request(1, "account_page", 1).unwrap();
    assert!(!away.evict.is_empty());
    let follow = o
        .on_completion(&Completion {
            request_id: away.dispatch.request_id,
            ..Completion::default()
        })
        .unwrap();
    orders += away.prefetch.len() + follow.prefetch.len();
    // Another session predicts search again: what the guest still holds is staged again
    // without a second copy on the wire.
    let again = o.on_request(2, "home", 2).unwrap();
    for p in &again.prefetch {
        assert!(!sent.contains(&p.resource_id), "sent twice: {p:?}");
    }
    assert_eq!(o.metrics().readopted, away.evict.len() as u64);
    orders += again.prefetch.len();
    assert_eq!(o.metrics().prefetched, orders as u64);
    for e in &away.evict {
        assert!(o
            .staging()
            .contains(WireIds::resource_index(e.resource_id).unwrap()));
    }
}

#[test]
fn feedback_lands_in_the_history_and_a_verifiable_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let cat = cat();
    let audit_path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&audit_path, FsyncPolicy::OnSync).unwrap();
    let future = [(1, "home"), (1, "search")].map(|(s, n)| (s, n.to_string()));
    let mut o = Orchestrator::oracle(cat.clone(), Policy::default(), future)
        .unwrap()
        .with_history(History::open_in_memory().unwrap(), "live")
        .with_audit(log);
    let plan = o.on_request(1, "home", 0).unwrap();
    let first = plan.prefetch[0].clone();
    o.on_signature(first.resource_id, first.version, 1, 1, &[7u8; 48])
        .unwrap();
    let home = ids_of(&cat, "home")[0];
    for (kind, id) in [(ReportKind::Miss, home), (ReportKind::DemandServed, home)] {
        o.on_report(&Report {
            kind,
            reason: None,
            app_id: 1,
            task_id: 1,
            resource_id: id,
            version: 1,
            latency_ns: 5,
        })
        .unwrap();
    }
    o.on_demand(1, 1, home, 3).unwrap();
    o.on_completion(&Completion {
        request_id: 1,
        status: 0,
        total_ns: 4_000_000,
        tasks: vec![TaskTiming {
            task_id: 1,
            claim_ns: 1000,
            fetch_ns: 2000,
            work_ns: 3000,
            hits: 0,
            misses: 1,
            result: 0,
        }],
    })
    .unwrap();
    o.on_request(1, "search", 10).unwrap();
    o.on_report(&Report {
        kind: ReportKind::ClaimHit,
        reason: None,
        app_id: 1,
        task_id: first.task_id,
        resource_id: first.resource_id,
        version: first.version,
        latency_ns: 5,
    })
    .unwrap();
    let summary = o.finish().unwrap();
    assert_eq!((summary.demand_fetches, summary.requests), (1, 1));
    let prefetched = o.metrics().prefetched;
    drop(o);
    let v = verify(&audit_path).unwrap().unwrap();
    // 2 dispatches, the prefetches, 1 signature, 3 reports, 1 demand, 1 completion.
    assert_eq!(v.records, 2 + prefetched + 1 + 3 + 1 + 1);
    let text = std::fs::read_to_string(&audit_path).unwrap();
    for kind in [
        "dispatch",
        "prefetch",
        "signature",
        "claim",
        "demand_fetch",
        "completion",
    ] {
        assert!(text.contains(&format!("\"kind\":\"{kind}\"")), "{kind}");
    }
}

#[test]
fn history_records_outcomes() {
    let cat = cat();
    let future = [(1, "home"), (1, "search")].map(|(s, n)| (s, n.to_string()));
    let mut o = Orchestrator::oracle(cat.clone(), Policy::default(), future)
        .unwrap()
        .with_history(History::open_in_memory().unwrap(), "live");
    let plan = o.on_request(1, "home", 0).unwrap();
    let n = plan.prefetch.len() as u64;
    o.on_report(&Report {
        kind: ReportKind::ClaimHit,
        reason: None,
        app_id: 1,
        task_id: plan.prefetch[0].task_id,
        resource_id: plan.prefetch[0].resource_id,
        version: 1,
        latency_ns: 1,
    })
    .unwrap();
    o.finish().unwrap();
    assert_eq!(o.metrics().useful, 1);
    assert_eq!(o.metrics().wasted, n - 1);
}

#[test]
fn the_orchestrator_can_move_to_the_backend_thread() {
    fn send<T: Send>() {}
    send::<Orchestrator>();
    send::<crate::online::origin::Throttled<crate::online::origin::DirSource>>();
}

#[test]
fn a_session_end_stages_the_likeliest_start() {
    use crate::trace::{Request, Session, Trace};
    let cat = cat();
    let vocab = cat.vocabulary();
    let session = |first: &str| Session {
        key: first.into(),
        user: None,
        requests: vec![Request::new(vocab.get(first).unwrap(), 0)],
        truth: Vec::new(),
    };
    let past = Trace {
        attributes: Default::default(),
        vocab: vocab.clone(),
        sessions: vec![
            session("home"),
            session("home"),
            session("home"),
            session("search"),
        ],
    };
    let m = Box::new(Ppm::markov1(Arc::new(vocab.clone())));
    let policy = Policy {
        threshold: 0.5,
        ..Policy::default()
    };
    let mut o = Orchestrator::new(cat.clone(), Mode::Markov, m, policy.clone())
        .unwrap()
        .with_starts(&past);
    let f = o.end_session(42).unwrap();
    let mut got: Vec<u64> = f.prefetch.iter().map(|p| p.resource_id).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        ids_of(&cat, "home"),
        "search (25 %) is below the threshold"
    );
    assert!(f.prefetch.iter().all(|p| p.probability == 0.75));
    // Nothing twice; the next session's first request claims them.
    assert!(o.end_session(43).unwrap().prefetch.is_empty());
    let r = Box::new(Reactive::new(Arc::new(vocab)));
    let mut reactive = Orchestrator::new(cat, Mode::Reactive, r, policy)
        .unwrap()
        .with_starts(&past);
    assert!(reactive.end_session(1).unwrap().prefetch.is_empty());
}

/// (task, resource) wire ids of request type `name`, in claim order, each resource once.
fn claim_order(cat: &ServiceCatalogue, name: &str) -> Vec<(u64, u64)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for &t in &cat.request(name).unwrap().tasks {
        for &r in &cat.tasks[t].resources {
            if seen.insert(r) {
                out.push((WireIds::task(t), WireIds::resource(r)));
            }
        }
    }
    out
}

fn report(kind: ReportKind, task_id: u64, resource_id: u64) -> Report {
    Report {
        kind,
        reason: None,
        app_id: 1,
        task_id,
        resource_id,
        version: 1,
        latency_ns: 0,
    }
}

#[test]
fn push_stages_exactly_the_recorded_set() {
    let cat = cat();
    let p = Box::new(Reactive::new(Arc::new(cat.vocabulary())));
    let policy = Policy {
        budget_bytes: 1 << 30,
        ..Policy::default()
    };
    let mut o = Orchestrator::new(cat.clone(), Mode::Push, p, policy).unwrap();
    // Nothing recorded yet: the first request of a type runs as in reactive.
    let plan = o.on_request(1, "home", 0).unwrap();
    assert!(plan.push.is_empty() && plan.prefetch.is_empty());
    assert_eq!(o.recorded("home"), None);
    // The guest claims part of what the catalogue lists, in its own order: one resource
    // served on demand, one cache hit, and the rest never claimed.
    let all = claim_order(&cat, "home");
    assert!(all.len() >= 3, "{all:?}");
    let used = vec![all[2], all[0]];
    o.on_report(&report(ReportKind::Miss, used[0].0, used[0].1))
        .unwrap();
    o.on_report(&report(ReportKind::DemandServed, used[0].0, used[0].1))
        .unwrap();
    o.on_report(&report(ReportKind::CacheHit, used[1].0, used[1].1))
        .unwrap();
    // A claim of the same resource again is recorded once.
    o.on_report(&report(ReportKind::CacheHit, used[0].0, used[0].1))
        .unwrap();
    o.on_completion(&Completion {
        request_id: 1,
        ..Completion::default()
    })
    .unwrap();
    assert_eq!(o.recorded("home"), Some(used.clone()));
    // The guest lets them go, so the next push must send them all.
    for &(t, r) in &used {
        o.on_report(&report(ReportKind::Evict, t, r)).unwrap();
    }
    // Another session's request of the same type: exactly the recorded set, in claim order,
    // pushed for this request; nothing predicted beyond it.
    let plan = o.on_request(2, "home", 10).unwrap();
    let pushed: Vec<(u64, u64)> = plan
        .push
        .iter()
        .map(|p| (p.task_id, p.resource_id))
        .collect();
    assert_eq!(pushed, used);
    assert!(plan
        .push
        .iter()
        .all(|p| p.probability == 1.0 && p.for_request == "home"));
    assert!(plan.prefetch.is_empty());
    // A type with no record pushes nothing; a failed request records nothing.
    let search = o.on_request(2, "search", 20).unwrap();
    assert!(search.push.is_empty());
    let (t, r) = claim_order(&cat, "search")[0];
    o.on_report(&report(ReportKind::DemandServed, t, r))
        .unwrap();
    o.on_completion(&Completion {
        request_id: search.dispatch.request_id,
        status: 7,
        ..Completion::default()
    })
    .unwrap();
    assert_eq!(o.recorded("search"), None);
    // What the guest still holds is staged without being sent again.
    for &(t, r) in &used {
        o.on_report(&report(ReportKind::ClaimHit, t, r)).unwrap();
    }
    o.on_completion(&Completion {
        request_id: plan.dispatch.request_id,
        ..Completion::default()
    })
    .unwrap();
    let again = o.on_request(3, "home", 30).unwrap();
    assert!(again.push.is_empty(), "{:?}", again.push);
    assert_eq!(o.staging().len(), o.recorded("home").unwrap().len());
    assert_eq!(o.metrics().prefetched, used.len() as u64);
    // Push predicts nothing for a next session.
    assert!(o.end_session(3).unwrap().prefetch.is_empty());
}

#[test]
fn without_the_guest_cache_nothing_stays_in_the_mirror() {
    let cat = cat();
    let p = Box::new(Reactive::new(Arc::new(cat.vocabulary())));
    let mut o =
        Orchestrator::new(cat.clone(), Mode::ReactiveNocache, p, Policy::default()).unwrap();
    let plan = o.on_request(1, "home", 0).unwrap();
    assert!(plan.push.is_empty() && plan.prefetch.is_empty());
    for (t, r) in claim_order(&cat, "home") {
        o.on_report(&report(ReportKind::DemandServed, t, r))
            .unwrap();
    }
    assert_eq!(o.recorded("home"), None, "only push records");
    // Nothing is held: the mirror of the guest's cache stays empty; with the cache it holds
    // every demanded resource.
    assert_eq!(o.guest_store().bytes(), 0);
    let p = Box::new(Reactive::new(Arc::new(cat.vocabulary())));
    let mut cached = Orchestrator::new(cat.clone(), Mode::Reactive, p, Policy::default()).unwrap();
    cached.on_request(1, "home", 0).unwrap();
    for (t, r) in claim_order(&cat, "home") {
        cached
            .on_report(&report(ReportKind::DemandServed, t, r))
            .unwrap();
        assert!(cached
            .guest_store()
            .contains(WireIds::resource_index(r).unwrap()));
    }
    let home: u64 = cat.resources_of("home").iter().map(|r| r.size).sum();
    assert_eq!(cached.guest_store().bytes(), home);
    assert!(Mode::ALL
        .iter()
        .all(|m| m.guest_cache() != m.serial_demands()));
    assert_eq!(
        Mode::ALL.iter().filter(|m| m.is_baseline()).count(),
        2,
        "reactive and push"
    );
}

/// On a generated cohort workload the next request depends on the session's cohort and on
/// the last gap. The orchestrator must hand both to the predictor: with them its top
/// prediction is the true distribution's likeliest type nearly always; without the
/// attributes (or with the context dropped anywhere on the way) it cannot be.
#[test]
fn the_request_context_reaches_the_predictor_online() {
    use crate::{
        context::ContextKey,
        generate::{generate, Workload, WorkloadSpec},
        predict::{observe_sessions, ContextPpm},
    };

    let cat = cat();
    let trace = generate(
        &cat.vocabulary(),
        &WorkloadSpec::preset(Workload::Cohort, 3000, 11),
    )
    .unwrap();
    let (train, test) = trace.sessions.split_at(2800);
    let vocab = Arc::new(trace.vocab.clone());
    let keys = [ContextKey::Attribute(0), ContextKey::Gap];
    let mut model = ContextPpm::new(vocab.clone(), &trace.attributes, 2, &keys);
    observe_sessions(&mut model, train);
    let policy = Policy {
        threshold: 0.0,
        ..Policy::default()
    };
    // Fraction of positions whose top online prediction is the truth's likeliest type; and
    // the number of request types whose first-request prediction differs between cohorts.
    let run = |with_attributes: bool| {
        let p = Box::new(model.clone());
        let mut o = Orchestrator::new(cat.clone(), Mode::Learned, p, policy.clone()).unwrap();
        let (mut agree, mut n) = (0, 0);
        for (i, s) in test.iter().enumerate() {
            let cohort = trace
                .attributes
                .values(0)
                .unwrap()
                .name(u32::from(s.requests[0].attrs.get(0)))
                .unwrap()
                .to_owned();
            for (t, r) in s.requests.iter().enumerate().take(s.truth.len()) {
                let name = trace.vocab.name(r.kind).unwrap();
                let now_us = (r.at_ms * 1000) as u64;
                let session = i as u64 + 1;
                if with_attributes {
                    o.on_request_with(session, name, now_us, &[("cohort", &cohort)])
                        .unwrap();
                } else {
                    o.on_request(session, name, now_us).unwrap();
                }
                let top = o.predictions(session).unwrap()[0].0.clone();
                let truth = trace.vocab.name(s.truth[t][0].0).unwrap();
                n += 1;
                agree += usize::from(top == truth);
            }
        }
        let mut varies = 0;
        let mut session = 1_000_000;
        for kind in 1..trace.vocab.len() as u32 {
            let name = trace.vocab.name(kind).unwrap();
            let mut tops = HashSet::new();
            for c in 0..4 {
                session += 1;
                let cohort = format!("c{c}");
                if with_attributes {
                    o.on_request_with(session, name, 0, &[("cohort", &cohort)])
                        .unwrap();
                } else {
                    o.on_request(session, name, 0).unwrap();
                }
                tops.insert(o.predictions(session).unwrap()[0].0.clone());
            }
            varies += usize::from(tops.len() > 1);
        }
        (agree as f64 / n as f64, varies)
    };
    let (with, varies_with) = run(true);
    let (without, varies_without) = run(false);
    assert!(with > 0.8, "with the context: {with}");
    assert!(without < with - 0.25, "{without} vs {with}");
    assert!(
        varies_with > 5,
        "the same first request, other cohorts, other predictions: {varies_with}"
    );
    assert_eq!(
        varies_without, 0,
        "without attributes the cohort cannot matter"
    );
}
