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
        requests: vec![Request {
            kind: vocab.get(first).unwrap(),
            at_ms: 0,
        }],
        truth: Vec::new(),
    };
    let past = Trace {
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
