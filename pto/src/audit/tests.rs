use virtio_prefetch_wire::ReportKind;

use super::{verify::Reason, *};

fn events() -> Vec<AuditEvent> {
    let mut v = Vec::new();
    for i in 0..4u64 {
        v.push(AuditEvent::Dispatch {
            session: 7,
            request: i,
            request_type: "home".into(),
        });
        v.push(AuditEvent::Prefetch {
            session: 7,
            request: i,
            app: 1,
            task: 2,
            resource: 10 + i,
            version: 3,
            bytes: 65536,
            probability_ppm: 420_000,
        });
        v.push(AuditEvent::Signature {
            resource: 10 + i,
            version: 3,
            seq: i + 1,
            epoch: 1,
            statement_sha384: "ab".repeat(48),
        });
        v.push(AuditEvent::Claim {
            report: ReportKind::ClaimHit,
            reason: 0,
            app: 1,
            task: 2,
            resource: 10 + i,
            version: 3,
            latency_ns: 1200,
        });
    }
    v.push(AuditEvent::DemandFetch {
        app: 1,
        task: 3,
        resource: 99,
        version: 1,
        bytes: 4096,
        cookie: 5,
    });
    v.push(AuditEvent::Completion {
        request: 3,
        status: 0,
        total_ns: 5_000_000,
    });
    v
}

/// A clean log of every event kind, as lines (each with its line break).
fn clean_log(dir: &Path) -> (PathBuf, Vec<String>) {
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(&path, FsyncPolicy::EveryRecord).unwrap();
    for (i, e) in events().iter().enumerate() {
        assert_eq!(log.append_at(1_000 + i as u64, e).unwrap(), i as u64);
    }
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.split_inclusive('\n').map(str::to_owned).collect();
    (path, lines)
}

fn broken(lines: &[String]) -> Broken {
    verify_bytes(lines.concat().as_bytes()).unwrap_err()
}

#[test]
fn clean_log_verifies_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = clean_log(dir.path());
    let n = events().len() as u64;
    let v = verify(&path).unwrap().unwrap();
    assert_eq!(v.records, n);
    let head = v.head.unwrap();
    assert_eq!(head.seq, n - 1);
    // The head hash is the last line's.
    assert!(lines.last().unwrap().contains(&hex(&head.hash)));
    // Reopening continues the chain from the head.
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync).unwrap();
    assert_eq!(log.next_seq(), n);
    assert_eq!(log.head_hash(), head.hash);
    log.append(&events()[0]).unwrap();
    log.sync().unwrap();
    drop(log);
    assert_eq!(verify(&path).unwrap().unwrap().records, n + 1);
    // An empty log is valid.
    assert_eq!(verify_bytes(b"").unwrap().records, 0);
}

#[test]
fn key_order_and_spacing_do_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = clean_log(dir.path());
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let mut relaid = lines.clone();
    relaid[1] = format!(
        "{}\n",
        serde_json::to_string_pretty(&v).unwrap().replace('\n', " ")
    );
    assert_ne!(relaid[1], lines[1]);
    assert!(verify_bytes(relaid.concat().as_bytes()).is_ok());
}

#[test]
fn a_changed_field_is_a_bad_hash_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut lines) = clean_log(dir.path());
    lines[5] = lines[5].replace("\"bytes\":65536", "\"bytes\":65537");
    let b = broken(&lines);
    assert_eq!((b.line, b.seq), (6, Some(5)));
    assert!(matches!(b.reason, Reason::BadHash { .. }), "{b}");
    assert!(b.to_string().contains("altered"));
}

#[test]
fn a_rehashed_change_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut lines) = clean_log(dir.path());
    // Alter record 2 and fix its own hash: the chain breaks at record 3.
    let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    v["fields"]["version"] = 2.into();
    let prev = parse_hash(v["prev"].as_str().unwrap()).unwrap();
    let body = serde_json::json!({"kind": v["kind"], "fields": v["fields"]});
    let h = record_hash(2, v["at_us"].as_u64().unwrap(), &prev, &body);
    v["hash"] = hex(&h).into();
    lines[2] = format!("{v}\n");
    let b = broken(&lines);
    assert_eq!((b.line, b.seq, b.reason), (4, Some(3), Reason::BrokenLink));
}

#[test]
fn a_deleted_record_is_a_gap_at_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut lines) = clean_log(dir.path());
    lines.remove(4);
    let b = broken(&lines);
    assert_eq!(
        (b.line, b.seq, b.reason),
        (5, Some(5), Reason::Gap { expected: 4 })
    );
}

#[test]
fn a_swapped_pair_is_caught_at_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut lines) = clean_log(dir.path());
    lines.swap(7, 8);
    let b = broken(&lines);
    assert_eq!(
        (b.line, b.seq, b.reason),
        (8, Some(8), Reason::Gap { expected: 7 })
    );
}

#[test]
fn a_truncated_tail_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = clean_log(dir.path());
    let last = lines.len() - 1;
    lines[last].truncate(40);
    let b = broken(&lines);
    assert_eq!((b.line, b.reason.clone()), (last + 1, Reason::Truncated));
    // Even a complete record without its line break counts as torn.
    let mut lines2 = lines.clone();
    let whole = std::fs::read_to_string(&path).unwrap();
    lines2[last] = whole.lines().last().unwrap().to_owned();
    assert_eq!(broken(&lines2).reason, Reason::Truncated);
    // The writer refuses to continue a broken log.
    std::fs::write(&path, lines.concat()).unwrap();
    let err = AuditLog::open(&path, FsyncPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("broken at line"), "{err}");
}

#[test]
fn malformed_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = clean_log(dir.path());
    for (bad, what) in [
        ("not json\n", "not JSON"),
        ("[1,2]\n", "not a JSON object"),
        ("\n", "not JSON"),
    ] {
        let mut l = lines.clone();
        l[3] = bad.into();
        let b = broken(&l);
        assert_eq!(b.line, 4);
        assert!(b.to_string().contains(what), "{b}");
    }
    // An unknown kind with a correct hash is still refused.
    let mut v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    v["kind"] = "teleport".into();
    let body = serde_json::json!({"kind": v["kind"], "fields": v["fields"]});
    v["hash"] = hex(&record_hash(
        0,
        v["at_us"].as_u64().unwrap(),
        &[0; 32],
        &body,
    ))
    .into();
    let b = broken(&[format!("{v}\n")]);
    assert!(b.to_string().contains("unknown kind"), "{b}");
}

#[test]
fn report_kinds_keep_their_snake_case_names() {
    // The audit log spelled the PTO's own ReportKind in snake_case before it used the wire
    // type; old logs must still verify and new ones read the same.
    let names = [
        "claim_hit",
        "miss",
        "evict",
        "reject",
        "demand_served",
        "cache_hit",
    ];
    assert_eq!(
        ReportKind::ALL.len(),
        names.len(),
        "a kind without a pinned name"
    );
    for (kind, name) in ReportKind::ALL.iter().zip(names) {
        let event = AuditEvent::Claim {
            report: *kind,
            reason: 0,
            app: 1,
            task: 2,
            resource: 3,
            version: 4,
            latency_ns: 5,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"kind\":\"claim\",\"fields\":{{\"report\":\"{name}\",\"reason\":0,\"app\":1,\
                 \"task\":2,\"resource\":3,\"version\":4,\"latency_ns\":5}}}}"
            )
        );
        assert_eq!(serde_json::from_str::<AuditEvent>(&json).unwrap(), event);
    }
    let bad = r#"{"kind":"claim","fields":{"report":"ClaimHit","reason":0,"app":1,"task":2,"resource":3,"version":4,"latency_ns":5}}"#;
    assert!(serde_json::from_str::<AuditEvent>(bad).is_err());
}
