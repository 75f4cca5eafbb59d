//! The PTO service end to end, with real parts: the VMM booting the guest on KVM, the daemon
//! process behind its vhost-user socket, and a real HTTP client. Skipped without /dev/kvm
//! unless SEE_REQUIRE_KVM is set.

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::{agent, count, kinds, start};
use see_daemon::{
    api::{ErrorBody, Health, RunResponse, Stats},
    config::PredictorKind,
};

fn error(text: &str) -> ErrorBody {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {text}"))
}

#[test]
fn eight_clients_get_correct_answers_and_one_record_set_per_request() {
    if !see_e2e::kvm_available() {
        return;
    }
    const CLIENTS: usize = 8;
    const EACH: usize = 50;
    let t = Arc::new(start(PredictorKind::Markov));
    let types = kinds(&t.catalogue);
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (t, types) = (t.clone(), types.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut ids = Vec::new();
                for i in 0..EACH {
                    let kind = &types[(c * 7 + i * 3) % types.len()];
                    let (status, text) = t.run(&a, &format!("client-{c}"), kind);
                    assert_eq!(status, 200, "client {c} request {i}: {text}");
                    let r: RunResponse = serde_json::from_str(&text).expect("RunResponse");
                    assert_eq!(&r.kind, kind);
                    assert!(r.timings.host_us >= r.timings.guest_us, "{r:?}");
                    t.check(&r);
                    ids.push(r.request_id);
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for h in handles {
        for id in h.join().expect("client") {
            assert!(ids.insert(id), "request id {id} answered twice");
        }
    }
    assert_eq!(ids.len(), CLIENTS * EACH);
    let stats: Stats = agent()
        .get(format!("{}/v1/stats", t.url()))
        .call()
        .expect("stats")
        .body_mut()
        .read_json()
        .expect("Stats");
    assert_eq!(stats.completed, (CLIENTS * EACH) as u64);
    let t = Arc::into_inner(t).expect("clients are done");
    let (history, audit) = (t.config.history.clone(), t.config.audit.clone());
    let (daemon, vmm) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success() && vmm.success(), "{daemon} {vmm}");
    let n = (CLIENTS * EACH) as i64;
    assert_eq!(count(&history, "SELECT COUNT(*) FROM requests"), n);
    assert_eq!(count(&history, "SELECT COUNT(*) FROM request_results"), n);
    assert_eq!(
        count(
            &history,
            "SELECT COUNT(*) FROM request_results WHERE http_status = 200"
        ),
        n
    );
    assert_eq!(
        count(
            &history,
            "SELECT COUNT(*) FROM requests r WHERE (SELECT COUNT(*) FROM task_executions t \
             WHERE t.request_id = r.id) = 0"
        ),
        0,
        "every request has its task executions"
    );
    let records = common::audit_records(&audit);
    let of = |kind: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| r["fields"]["request"].as_u64().expect("request id"))
            .collect::<Vec<_>>()
    };
    for kind in ["dispatch", "completion"] {
        let ids_of: Vec<u64> = of(kind);
        let unique: HashSet<u64> = ids_of.iter().copied().collect();
        assert_eq!(ids_of.len(), CLIENTS * EACH, "{kind} records");
        assert_eq!(unique, ids, "one {kind} record per request");
    }
    // Signed checkpoints every 64 records and the closing one: no head kept elsewhere needed.
    let verified = common::verify_audit(t.dir.path(), &audit);
    assert_eq!(verified.records as usize, records.len());
    assert!(verified.checkpoints as usize >= 2 * CLIENTS * EACH / 64);
}

#[test]
fn bad_input_gets_its_status_and_message_and_loses_nothing() {
    if !see_e2e::kvm_available() {
        return;
    }
    let t = start(PredictorKind::Static);
    let a = agent();
    let (s, _, text) = t.post_raw(&a, b"{\"session\": \"x\", \"app\": ");
    assert_eq!(s, 400, "{text}");
    assert!(error(&text).error.contains("malformed"), "{text}");
    let (s, _, text) = t.post_raw(
        &a,
        br#"{"session":"x","app":"shop","type":"home","colour":"red"}"#,
    );
    assert_eq!(s, 400, "{text}");
    assert!(
        error(&text).error.contains("colour"),
        "names the field: {text}"
    );
    let (s, _, text) = t.post_raw(&a, br#"{"session":"x","app":"shop"}"#);
    assert_eq!(s, 400, "{text}");
    assert!(
        error(&text).error.contains("type"),
        "names the missing field: {text}"
    );
    let (s, _, text) = t.post_raw(&a, br#"{"session":"","app":"shop","type":"home"}"#);
    assert_eq!(s, 400, "{text}");
    assert!(error(&text).error.contains("session"), "{text}");
    let long = format!(
        r#"{{"session":"x","app":"shop","type":"{}"}}"#,
        "t".repeat(129)
    );
    let (s, _, text) = t.post_raw(&a, long.as_bytes());
    assert_eq!(s, 400, "{text}");
    assert!(error(&text).error.contains("field `type`"), "{text}");
    let (s, _, text) = t.post_raw(&a, br#"{"session":"x","app":"shop","type":"teleport"}"#);
    assert_eq!(s, 404, "{text}");
    assert!(error(&text).error.contains("teleport"), "{text}");
    let (s, _, text) = t.post_raw(&a, br#"{"session":"x","app":"bank","type":"home"}"#);
    assert_eq!(s, 404, "{text}");
    assert!(error(&text).error.contains("bank"), "{text}");
    let big = format!(
        r#"{{"session":"{}","app":"shop","type":"home"}}"#,
        "x".repeat(t.config.body_limit)
    );
    let (s, _, text) = t.post_raw(&a, big.as_bytes());
    assert_eq!(s, 413, "{text}");
    assert!(error(&text).error.contains("limit"), "{text}");
    let r = a
        .get(format!("{}/v1/nothing-here", t.url()))
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404);
    // After all that, the service still serves, and kept no record of the refusals.
    let (s, text) = t.run(&a, "x", "home");
    assert_eq!(s, 200, "{text}");
    t.check(&serde_json::from_str(&text).expect("RunResponse"));
    let history = t.config.history.clone();
    let (daemon, _) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success());
    assert_eq!(count(&history, "SELECT COUNT(*) FROM requests"), 1);
    assert_eq!(count(&history, "SELECT COUNT(*) FROM request_results"), 1);
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    if !see_e2e::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path(), PredictorKind::None);
    // Every fetch takes 400 ms at the origin: the first request holds the one place.
    config.queue_depth = 1;
    config.origin_latency_ms = 400.0;
    let t = Arc::new(common::start_with(dir, config));
    let first = {
        let t = t.clone();
        std::thread::spawn(move || t.run(&agent(), "slow", "home"))
    };
    let a = agent();
    let mut saw_429 = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let (s, retry, text) = t.post_raw(&a, br#"{"session":"y","app":"shop","type":"home"}"#);
        if s == 429 {
            assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
            assert!(error(&text).error.contains("retry"), "{text}");
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "no 429 while the only place was taken");
    let (s, text) = first.join().expect("first");
    assert_eq!(s, 200, "{text}");
}

#[test]
fn a_task_the_guest_fails_is_a_502_with_its_status_and_the_see_serves_on() {
    if !see_e2e::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::config(dir.path(), PredictorKind::None);
    let catalogue = config.load_catalogue().expect("catalogue");
    // A newer version of home's first workload resource whose bytes do not process.
    let store = see_daemon::guest::open_filled(&catalogue, &config.store, None).expect("store");
    let home = catalogue.request("home").expect("home");
    let (index, resource) = home
        .tasks
        .iter()
        .flat_map(|&t| catalogue.tasks[t].resources.iter().copied())
        .map(|r| (r, &catalogue.resources[r]))
        .find(|(_, r)| catalogue.workload_spec(r).is_some())
        .expect("home uses a workload resource");
    let id = see_pto::online::WireIds::resource(index);
    let mut bad = catalogue.content(resource).expect("content");
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    store
        .add(
            id,
            resource.version + 1,
            virtio_prefetch_wire::ResourceKind::Data,
            1,
            &bad,
        )
        .expect("add");
    let t = common::start_with(dir, config);
    let a = agent();
    let (s, text) = t.run(&a, "z", "home");
    assert_eq!(s, 502, "{text}");
    let e = error(&text);
    assert_eq!(
        e.status,
        Some(see_daemon::guest::STATUS_WORK_FAILED),
        "{text}"
    );
    assert!(
        e.reason
            .as_deref()
            .unwrap_or("")
            .contains("failed processing"),
        "{text}"
    );
    assert!(e.request_id.is_some());
    let other = catalogue
        .requests
        .iter()
        .find(|r| {
            !r.tasks
                .iter()
                .any(|&t| catalogue.tasks[t].resources.contains(&index))
        })
        .expect("a request type that does not use the bad resource");
    let (s, text) = t.run(&a, "z", &other.name);
    assert_eq!(s, 200, "the next request is served: {text}");
    let history = t.config.history.clone();
    let (daemon, _) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success());
    assert_eq!(
        count(
            &history,
            "SELECT COUNT(*) FROM request_results WHERE http_status = 502 AND guest_status = 1"
        ),
        1
    );
}

#[test]
fn a_killed_vmm_gives_503_naming_the_cause() {
    if !see_e2e::kvm_available() {
        return;
    }
    let mut t = start(PredictorKind::Markov);
    let a = agent();
    let (s, text) = t.run(&a, "k", "home");
    assert_eq!(s, 200, "{text}");
    common::sigkill(t.see.vmm_pid());
    let mut last = (0, String::new());
    for _ in 0..100 {
        last = t.run(&a, "k", "search");
        if last.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(error(&last.1).error.contains("VMM"), "{}", last.1);
    let r = a
        .get(format!("{}/v1/health", t.url()))
        .call()
        .expect("health");
    assert_eq!(r.status().as_u16(), 503);
    let h: Health =
        serde_json::from_str(&r.into_body().read_to_string().expect("body")).expect("Health");
    assert_eq!(h.status, "down");
    assert!(h.reason.unwrap_or_default().contains("vhost-user"));
    assert!(
        t.daemon_log().contains("the SEE is unavailable"),
        "the log names the cause:\n{}",
        t.daemon_log()
    );
    // The daemon answers 503 as soon as the vhost-user connection drops; the launcher reaps
    // the killed VMM a moment later (on a loaded machine, after the health answer).
    let mut died = None;
    for _ in 0..100 {
        died = t.see.check();
        if died.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let died = died.expect("the VMM is gone");
    assert!(
        died.to_string().contains("see-vmm was killed by signal 9"),
        "{died}"
    );
}

#[test]
fn sigterm_under_load_answers_every_accepted_request_and_keeps_the_records_whole() {
    if !see_e2e::kvm_available() {
        return;
    }
    let t = Arc::new(start(PredictorKind::Ppm));
    let types = kinds(&t.catalogue);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (t, types) = (t.clone(), types.clone());
            std::thread::spawn(move || {
                let a = agent();
                let (mut ok, mut unavailable) = (0, 0);
                for i in 0..200 {
                    let kind = &types[(c + i) % types.len()];
                    let app = "shop";
                    let body = format!(r#"{{"session":"c{c}","app":"{app}","type":"{kind}"}}"#);
                    let r = a
                        .post(format!("{}/v1/requests", t.url()))
                        .header("content-type", "application/json")
                        .send(body.as_bytes());
                    match r.map(|r| r.status().as_u16()) {
                        Ok(200) => ok += 1,
                        Ok(503) => unavailable += 1,
                        Ok(other) => panic!("status {other} during shutdown"),
                        // The front door closed: the request was never accepted.
                        Err(_) => break,
                    }
                }
                (ok, unavailable)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    common::sigterm(t.see.daemon_pid());
    let mut answered = 0;
    for c in clients {
        let (ok, unavailable) = c.join().expect("client");
        answered += ok;
        let _ = unavailable;
    }
    assert!(answered > 0, "requests were served before the signal");
    let t = Arc::into_inner(t).expect("clients are done");
    let (history, audit) = (t.config.history.clone(), t.config.audit.clone());
    let (daemon, vmm) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success(), "the daemon stops cleanly: {daemon}");
    assert!(vmm.success(), "the guest was told to stop: {vmm}");
    let requests = count(&history, "SELECT COUNT(*) FROM requests");
    assert_eq!(
        count(&history, "SELECT COUNT(*) FROM request_results"),
        requests,
        "every accepted request has its result row"
    );
    assert_eq!(
        count(
            &history,
            "SELECT COUNT(*) FROM request_results WHERE http_status = 200"
        ),
        answered as i64
    );
    let records = common::audit_records(&audit);
    let n = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(
        n("dispatch"),
        n("completion"),
        "every dispatch has its completion"
    );
    assert_eq!(n("dispatch") as i64, requests);
    see_pto::audit::verify(&audit)
        .expect("audit log readable")
        .expect("audit chain intact");
}

#[test]
fn see_up_prints_the_url_and_exits_non_zero_naming_a_killed_vmm() {
    if !see_e2e::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_see"))
        .arg("up")
        .args(["--listen", "127.0.0.1:0", "--size-scale", "0.0625"])
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--history")
        .arg(dir.path().join("h.sqlite"))
        .arg("--audit")
        .arg(dir.path().join("a.jsonl"))
        .arg("--key")
        .arg(&see_e2e::pto_keys().0)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--vmm")
        .arg(see_e2e::vmm_bin())
        .arg("--daemon-bin")
        .arg(env!("CARGO_BIN_EXE_see-daemon"))
        .arg("--kernel")
        .arg(see_e2e::kernel_image())
        .args(["--memory", "128"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("see up");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("a line");
    let url = line
        .strip_prefix("SEE ready: ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ready line: {line:?}"))
        .to_owned();
    let vmm_pid: u32 = line
        .split("vmm pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no vmm pid in {line:?}"));
    let r = agent()
        .post(format!("{url}/v1/requests"))
        .header("content-type", "application/json")
        .send(br#"{"session":"u","app":"shop","type":"home"}"#.as_slice())
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    common::sigkill(vmm_pid);
    let status = child.wait().expect("see up ends");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(!status.success(), "see up exits non-zero when the VMM dies");
    assert!(err.contains("see-vmm was killed by signal 9"), "{err}");
}

#[test]
fn a_killed_daemon_is_named_by_the_launcher() {
    if !see_e2e::kvm_available() {
        return;
    }
    let mut t = start(PredictorKind::None);
    common::sigkill(t.see.daemon_pid());
    let mut died = None;
    for _ in 0..100 {
        died = t.see.check();
        if died.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let died = died.expect("the launcher sees the daemon die").to_string();
    assert!(died.contains("see-daemon was killed by signal 9"), "{died}");
}
