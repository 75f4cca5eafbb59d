use super::*;
use crate::trace::Request;

fn trace() -> Trace {
    let vocab = Vocabulary::from_names(["home", "cart"]);
    let s = |key: &str, kinds: &[u32]| Session {
        key: key.into(),
        user: Some("u".into()),
        requests: kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Request {
                kind,
                at_ms: i as i64 * 10,
            })
            .collect(),
        truth: Vec::new(),
    };
    Trace {
        vocab,
        sessions: vec![s("s1", &[1, 2, 1]), s("s2", &[2])],
    }
}

#[test]
fn a_trace_round_trips_through_a_file_and_is_imported_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let mut h = History::open(&path).unwrap();
    assert_eq!(h.import_trace("ecom", &trace()).unwrap(), 2);
    assert_eq!(
        h.import_trace("ecom", &trace()).unwrap(),
        0,
        "same keys are not duplicated"
    );
    assert_eq!(h.import_trace("other", &trace()).unwrap(), 2);
    drop(h);
    let h = History::open(&path).unwrap();
    let back = h.load_trace(Some("ecom"), Vocabulary::new()).unwrap();
    assert_eq!(back.sessions, trace().sessions);
    assert_eq!(
        h.load_trace(None, Vocabulary::new())
            .unwrap()
            .sessions
            .len(),
        4
    );
    assert!(h
        .load_trace(Some("nope"), Vocabulary::new())
        .unwrap()
        .sessions
        .is_empty());
    let sources = h.sources().unwrap();
    assert_eq!(
        sources[0],
        SourceInfo {
            source: "ecom".into(),
            sessions: 2,
            requests: 4
        }
    );
}

#[test]
fn online_feedback_is_recorded_and_summarised() {
    let mut h = History::open_in_memory().unwrap();
    let s = h.begin_session("live", "vm1-7", None).unwrap();
    assert_eq!(h.begin_session("live", "vm1-7", None).unwrap(), s);
    let r1 = h.record_request(s, "home", 1).unwrap();
    let r2 = h.record_request(s, "brand-new-type", 2).unwrap();
    assert_ne!(r1, r2);
    let t = h.load_trace(Some("live"), Vocabulary::new()).unwrap();
    assert_eq!(t.sessions[0].requests.len(), 2);
    assert_eq!(
        t.vocab.name(t.sessions[0].requests[1].kind),
        Some("brand-new-type")
    );
    h.record_task(&TaskExecution {
        request: r1,
        task: "render".into(),
        started_us: 0,
        duration_us: 250,
        wait_us: 3,
        staged: true,
        bytes: 4096,
        ok: true,
    })
    .unwrap();
    assert_eq!(h.task_count().unwrap(), 1);
    let mut o = PrefetchOutcome {
        session: Some(s),
        request: Some(r1),
        predictor: "lstm".into(),
        resource: "renderer-code".into(),
        version: 7,
        outcome: Outcome::Hit,
        bytes: 1000,
        probability: Some(0.8),
        predicted_us: Some(1),
        staged_us: Some(2),
        resolved_us: Some(3),
    };
    h.record_prefetch(&o).unwrap();
    o.outcome = Outcome::Wasted;
    o.bytes = 50;
    h.record_prefetch(&o).unwrap();
    o.outcome = Outcome::Miss;
    o.predictor = "markov1".into();
    h.record_prefetch(&o).unwrap();
    let lstm = h.prefetch_summary(Some("lstm")).unwrap();
    assert_eq!(
        lstm,
        PrefetchSummary {
            hits: 1,
            misses: 0,
            wasted: 1,
            hit_bytes: 1000,
            wasted_bytes: 50
        }
    );
    assert_eq!(h.prefetch_summary(None).unwrap().misses, 1);
    // a task for a request that does not exist violates the foreign key
    let bad = TaskExecution {
        request: 999,
        task: "x".into(),
        started_us: 0,
        duration_us: 0,
        wait_us: 0,
        staged: false,
        bytes: 0,
        ok: false,
    };
    assert!(h.record_task(&bad).is_err());
    o.bytes = u64::MAX;
    assert!(matches!(
        h.record_prefetch(&o),
        Err(HistoryError::TooLarge(_))
    ));
}

#[test]
fn a_corrupt_or_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42; 8192]).unwrap();
    let err = History::open(&junk).unwrap_err();
    assert!(err.to_string().contains("history database"), "{err}");
    let newer = dir.path().join("newer.db");
    drop(History::open(&newer).unwrap());
    let c = Connection::open(&newer).unwrap();
    c.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(c);
    assert!(matches!(
        History::open(&newer),
        Err(HistoryError::Schema { .. })
    ));
}
