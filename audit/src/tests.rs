use virtio_prefetch_wire::ReportKind;

use super::*;

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

fn signer(seed: u8) -> KeySigner {
    KeySigner::new(p384::ecdsa::SigningKey::from_slice(&[seed; 48]).unwrap())
}

fn trusting(seed: u8) -> TrustedKeys {
    TrustedKeys::none().with(signer(seed).verifying_key())
}

/// A closed log of every event kind, a checkpoint every 4 records, signed by key `seed`.
fn signed_log(dir: &Path, seed: u8) -> (PathBuf, Vec<String>) {
    let path = dir.join(format!("signed-{seed}.jsonl"));
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync)
        .unwrap()
        .with_checkpoints(Box::new(signer(seed)), 4);
    for (i, e) in events().iter().enumerate() {
        log.append_at(1_000 + i as u64, e).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.split_inclusive('\n').map(str::to_owned).collect();
    (path, lines)
}

/// Re-hashes line `i` (after an edit) with the chain before it.
fn rehash(lines: &mut [String], i: usize) {
    let mut v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    let prev = parse_hash(v["prev"].as_str().unwrap()).unwrap();
    let body = serde_json::json!({"kind": v["kind"], "fields": v["fields"]});
    let h = record_hash(
        v["seq"].as_u64().unwrap(),
        v["at_us"].as_u64().unwrap(),
        &prev,
        &body,
    );
    v["hash"] = hex(&h).into();
    lines[i] = format!("{v}\n");
}

fn anchored(lines: &[String], seed: u8) -> Result<Verified, Broken> {
    verify_anchored(lines.concat().as_bytes(), &trusting(seed))
}

#[test]
fn an_honest_signed_log_verifies_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = signed_log(dir.path(), 1);
    let n = events().len() as u64;
    // A checkpoint after every 4 events, and the closing one.
    let checkpoints = n.div_ceil(4);
    let v = verify_file_anchored(&path, &trusting(1)).unwrap().unwrap();
    assert_eq!((v.records, v.checkpoints), (n + checkpoints, checkpoints));
    assert!(v.closed(), "{v:?}");
    assert_eq!(v.require_closed(), Ok(()));
    assert!(lines.last().unwrap().contains("\"closing\":true"));
    // The chain alone verifies too, and the writer continues it.
    assert!(verify_bytes(lines.concat().as_bytes()).unwrap().closed());
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync)
        .unwrap()
        .with_checkpoints(Box::new(signer(1)), 4);
    log.append(&events()[0]).unwrap();
    drop(log);
    let v = verify_file_anchored(&path, &trusting(1)).unwrap().unwrap();
    assert_eq!(v.records, n + checkpoints + 2);
    assert!(v.closed());
    // Checkpoints are the log's own: appending one is refused.
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync).unwrap();
    let forged = AuditEvent::Checkpoint {
        closing: true,
        key: "00".repeat(32),
        signature: "00".repeat(96),
    };
    assert!(matches!(
        log.append(&forged),
        Err(AuditError::Reserved { .. })
    ));
}

#[test]
fn truncation_is_detected_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = signed_log(dir.path(), 1);
    // Cut after record 6: records 0-3, checkpoint 4, then records 5 and 6.
    let cut = &lines[..7];
    let v = anchored(cut, 1).unwrap();
    let err = v.require_closed().unwrap_err();
    assert_eq!(err.unanchored, 2);
    assert_eq!(
        err.last_checkpoint,
        Some(CheckpointAt {
            seq: 4,
            closing: false
        })
    );
    let msg = err.to_string();
    assert!(
        msg.contains("not closed cleanly") && msg.contains("2 records follow"),
        "{msg}"
    );
    // Cut right after a checkpoint: nothing unanchored, but not a closing one.
    let err = anchored(&lines[..5], 1)
        .unwrap()
        .require_closed()
        .unwrap_err();
    assert_eq!(err.unanchored, 0);
    // Cut before the first checkpoint: nothing anchored at all.
    let err = anchored(&lines[..3], 1)
        .unwrap()
        .require_closed()
        .unwrap_err();
    assert_eq!((err.unanchored, err.last_checkpoint), (3, None));
    assert!(err.to_string().contains("no signed checkpoint"));
    // An unsigned log (written without a key) is never closed.
    let (_, unsigned) = clean_log(dir.path());
    assert!(!anchored(&unsigned, 1).unwrap().closed());
}

#[test]
fn a_full_rewrite_with_another_key_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, forged) = signed_log(dir.path(), 2);
    let b = anchored(&forged, 1).unwrap_err();
    assert_eq!(b.line, 5, "the first checkpoint");
    assert!(matches!(b.reason, Reason::UntrustedKey { .. }), "{b}");
    assert!(b.to_string().contains("not a trusted audit key"));
    // Claiming the trusted key's id does not help: the signature does not verify under it.
    let (_, honest) = signed_log(dir.path(), 1);
    let trusted_id: serde_json::Value = serde_json::from_str(&honest[4]).unwrap();
    let mut forged = forged;
    let mut v: serde_json::Value = serde_json::from_str(&forged[4]).unwrap();
    v["fields"]["key"] = trusted_id["fields"]["key"].clone();
    forged[4] = format!("{v}\n");
    rehash(&mut forged, 4);
    let b = anchored(&forged[..5], 1).unwrap_err();
    assert_eq!((b.line, b.reason), (5, Reason::BadSignature));
}

#[test]
fn a_tampered_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = signed_log(dir.path(), 1);
    // Cut after the first checkpoint and mark it closing, hash fixed: a truncation posing as
    // a clean close.
    let mut cut = lines[..5].to_vec();
    cut[4] = cut[4].replace("\"closing\":false", "\"closing\":true");
    rehash(&mut cut, 4);
    assert!(
        verify_bytes(cut.concat().as_bytes()).is_ok(),
        "the chain holds"
    );
    assert_eq!(anchored(&cut, 1).unwrap_err().reason, Reason::BadSignature);
    // A record before a checkpoint altered and the whole chain re-hashed from there: the
    // checkpoint signed the old head.
    let mut edited = lines.clone();
    edited[2] = edited[2].replace("\"version\":3", "\"version\":4");
    for i in 2..edited.len() {
        if i > 2 {
            let prev: serde_json::Value = serde_json::from_str(&edited[i - 1]).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&edited[i]).unwrap();
            v["prev"] = prev["hash"].clone();
            edited[i] = format!("{v}\n");
        }
        rehash(&mut edited, i);
    }
    assert!(verify_bytes(edited.concat().as_bytes()).is_ok());
    let b = anchored(&edited, 1).unwrap_err();
    assert_eq!((b.line, b.reason), (5, Reason::BadSignature));
    // A malformed signature is named.
    let mut bad = lines[..5].to_vec();
    let mut v: serde_json::Value = serde_json::from_str(&bad[4]).unwrap();
    v["fields"]["signature"] = "zz".into();
    bad[4] = format!("{v}\n");
    rehash(&mut bad, 4);
    assert!(anchored(&bad, 1)
        .unwrap_err()
        .to_string()
        .contains("signature is not"));
}

#[test]
fn duplicate_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = clean_log(dir.path());
    // A second "bytes" in the fields: serde_json alone would keep the last and verify.
    let mut dup = lines.clone();
    dup[1] = dup[1].replace("\"bytes\":65536", "\"bytes\":65536,\"bytes\":1");
    let b = broken(&dup);
    assert_eq!(b.line, 2);
    assert!(b.to_string().contains("duplicate key \"bytes\""), "{b}");
    // At the top level too.
    let mut dup = lines;
    dup[0] = dup[0].replacen("{\"seq\":0,", "{\"seq\":0,\"seq\":0,", 1);
    assert!(broken(&dup).to_string().contains("duplicate key"));
}

#[test]
fn the_fuzz_seeds_are_what_they_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/audit_record");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(verify_bytes(&read("two_records")).unwrap().records, 2);
    let v = verify_bytes(&read("chain_with_checkpoint")).unwrap();
    assert_eq!((v.records, v.checkpoints), (3, 1));
    // Its checkpoint is signed by no real key.
    let b = verify_anchored(&read("chain_with_checkpoint"), &trusting(1)).unwrap_err();
    assert!(matches!(b.reason, Reason::UntrustedKey { .. }));
    assert!(verify_bytes(&read("duplicate_key"))
        .unwrap_err()
        .to_string()
        .contains("duplicate key"));
}
