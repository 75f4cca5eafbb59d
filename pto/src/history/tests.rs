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
            .map(|(i, &kind)| Request::new(kind, i as i64 * 10))
            .collect(),
        truth: Vec::new(),
    };
    Trace {
        attributes: Default::default(),
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
        guest_reported: true,
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
        guest_reported: true,
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
        guest_reported: false,
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

/// The schema of version 1 files: no `guest_reported` columns.
const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE request_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, source TEXT NOT NULL, key TEXT NOT NULL,
    user TEXT, UNIQUE (source, key));
CREATE TABLE requests (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL, type_id INTEGER NOT NULL REFERENCES request_types(id),
    at_ms INTEGER NOT NULL, UNIQUE (session_id, seq));
CREATE TABLE task_executions (id INTEGER PRIMARY KEY, request_id INTEGER NOT NULL REFERENCES requests(id),
    task TEXT NOT NULL, started_us INTEGER NOT NULL, duration_us INTEGER NOT NULL,
    wait_us INTEGER NOT NULL, staged INTEGER NOT NULL, bytes INTEGER NOT NULL, ok INTEGER NOT NULL);
CREATE TABLE prefetch_outcomes (id INTEGER PRIMARY KEY, session_id INTEGER REFERENCES sessions(id),
    request_id INTEGER REFERENCES requests(id), predictor TEXT NOT NULL, resource TEXT NOT NULL,
    version INTEGER NOT NULL, outcome TEXT NOT NULL CHECK (outcome IN ('hit', 'miss', 'wasted')),
    bytes INTEGER NOT NULL, probability REAL, predicted_us INTEGER, staged_us INTEGER,
    resolved_us INTEGER);
CREATE TABLE request_results (request_id INTEGER PRIMARY KEY REFERENCES requests(id),
    http_status INTEGER NOT NULL, guest_status INTEGER, host_us INTEGER NOT NULL, guest_us INTEGER);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO request_types VALUES (1, 'home'), (2, 'cart');
INSERT INTO sessions VALUES (1, 'ecom', 'imported', NULL), (2, 'live', 'served', NULL);
INSERT INTO requests VALUES (1, 1, 0, 1, 0), (2, 1, 1, 2, 10), (3, 2, 0, 2, 0);
INSERT INTO task_executions VALUES (1, 3, 'task-a', 0, 5, 1, 1, 100, 1);
INSERT INTO prefetch_outcomes VALUES (1, 2, NULL, 'markov', 'r1', 1, 'hit', 100, NULL, NULL, NULL, NULL);
INSERT INTO request_results VALUES (3, 200, 0, 50, 40);
";

#[test]
fn a_version_1_file_is_migrated_and_its_guest_rows_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(SCHEMA_V1)
        .unwrap();
    let h = History::open(&path).unwrap();
    // Every row version 1 wrote from the guest's reports is marked: 1 task execution,
    // 1 prefetch outcome, 1 result with a guest status.
    assert_eq!(h.guest_reported_count().unwrap(), 3);
    let all = h.load_trace(None, Vocabulary::new()).unwrap();
    assert_eq!(all.sessions.len(), 2);
    drop(h);
    // Reopening finds version 2: nothing is migrated twice.
    let h = History::open(&path).unwrap();
    let version: String = h
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    assert_eq!(h.guest_reported_count().unwrap(), 3);
    // An unknown version is still refused.
    h.conn
        .execute(
            "UPDATE meta SET value = '9' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    drop(h);
    let err = History::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version 9"), "{err}");
}

#[test]
fn training_can_leave_out_sessions_with_guest_reported_rows() {
    let mut h = History::open_in_memory().unwrap();
    h.import_trace("ecom", &trace()).unwrap();
    let live = h.begin_session("live", "served", None).unwrap();
    let request = h.record_request(live, "home", 0).unwrap();
    let other = h.begin_session("live", "unreported", None).unwrap();
    h.record_request(other, "cart", 0).unwrap();
    h.record_task(&TaskExecution {
        request,
        task: "t".into(),
        started_us: 0,
        duration_us: 1,
        wait_us: 0,
        staged: true,
        bytes: 1,
        ok: true,
        guest_reported: true,
    })
    .unwrap();
    fn keys(h: &History, options: LoadOptions) -> Vec<String> {
        h.load_trace_with(None, Vocabulary::new(), options)
            .unwrap()
            .sessions
            .into_iter()
            .map(|s| s.key)
            .collect()
    }
    assert_eq!(
        keys(&h, LoadOptions::default()),
        ["s1", "s2", "served", "unreported"]
    );
    let exclude = LoadOptions {
        exclude_guest_reported: true,
    };
    assert_eq!(keys(&h, exclude), ["s1", "s2", "unreported"]);
    // A guest-reported result marks its session as well.
    let request = h.record_request(other, "home", 1).unwrap();
    h.record_result(&RequestResult {
        request,
        http_status: 200,
        guest_status: Some(0),
        host_us: 10,
        guest_us: Some(5),
    })
    .unwrap();
    assert_eq!(keys(&h, exclude), ["s1", "s2"]);
}

#[test]
fn attributes_round_trip_and_a_version_2_file_is_migrated() {
    use crate::context::Attributes;
    // A version 2 file: the version 1 schema with the guest_reported columns, no attributes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(SCHEMA_V1).unwrap();
        c.execute_batch(MIGRATE_1_TO_2).unwrap();
        let v: String = c
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, "2");
    }
    let mut h = History::open(&path).unwrap();
    let version: String = h
        .conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "3");
    // The old sessions load without attributes.
    let old = h.load_trace(None, Vocabulary::new()).unwrap();
    assert_eq!(old.sessions.len(), 2);
    assert!(old.attributes.is_empty());
    // New sessions with attributes round-trip by name.
    let mut t = trace();
    t.attributes = Attributes::new(&["platform", "cohort"]).unwrap();
    let desktop = t.attributes.intern(0, Some(b"desktop"));
    let c2 = t.attributes.intern(1, Some(b"c2"));
    t.sessions[0].requests[0].attrs.0[0] = desktop;
    t.sessions[0].requests[1].attrs.0[1] = c2;
    assert_eq!(h.import_trace("new", &t).unwrap(), 2);
    drop(h);
    let h = History::open(&path).unwrap();
    let back = h.load_trace(Some("new"), Vocabulary::new()).unwrap();
    assert_eq!(back.attributes.names(), ["platform", "cohort"]);
    let name = |s: &Session, r: usize, a: usize| {
        let id = s.requests[r].attrs.get(a);
        back.attributes
            .values(a)
            .unwrap()
            .name(u32::from(id))
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(&back.sessions[0], 0, 0), "desktop");
    assert_eq!(name(&back.sessions[0], 1, 1), "c2");
    assert_eq!(back.sessions[0].requests[1].attrs.get(0), 0);
    assert!(back.sessions[1].requests[0].attrs.is_unknown());
    // The old source still carries none.
    let old = h.load_trace(Some("ecom"), Vocabulary::new()).unwrap();
    assert!(old.attributes.is_empty());
}
