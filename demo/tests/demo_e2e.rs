//! The demo end to end on real KVM with a tiny workload, through the PTO service (a daemon
//! and an SEE per mode and repetition, requests over HTTP): every mode completes every request
//! with correct results (every task's reported result checked against the host's, none
//! wrong), the oracle's staged-hit rate is 100% and reactive's 0%, every audit log verifies,
//! and a single altered record is detected. Skipped without /dev/kvm unless SEE_REQUIRE_KVM is set.

use std::process::Command;

use see_pto::audit;

mod common;
use common::results;

const REQUESTS: usize = 6;
const REPS: usize = 2;
const MODES: [&str; 7] = [
    "reactive-nocache",
    "reactive",
    "push",
    "static",
    "markov",
    "learned",
    "oracle",
];

/// A table row: mode, then the numbers of `ModeSummary`'s columns.
fn row<'a>(stdout: &'a str, mode: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 11 && w[0] == mode && w[1].parse::<u64>().is_ok())
        .unwrap_or_else(|| panic!("no table row for {mode} in:\n{stdout}"))
}

#[test]
fn every_mode_completes_every_request_and_the_audit_logs_hold() {
    if !see_e2e::kvm_available() {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let run = common::demo()
        .args(["--modes", &MODES.join(",")])
        .args(["--requests", &REQUESTS.to_string()])
        .args(["--reps", &REPS.to_string()])
        .args([
            "--sessions",
            "200",
            "--epochs",
            "2",
            "--size-scale",
            "0.0625",
        ])
        .args(["--think-ms", "50", "--timeout-s", "30", "--settle"])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("see-demo runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "see-demo failed: {}\n{stdout}\n{stderr}",
        run.status
    );
    for mode in MODES {
        let r = row(&stdout, mode);
        assert_eq!(
            r[1],
            (REQUESTS * REPS).to_string(),
            "{mode} completed every request of every repetition: {r:?}"
        );
    }
    let hit = |mode| row(&stdout, mode)[5].parse::<f64>().expect("hit %");
    assert_eq!(
        hit("oracle"),
        100.0,
        "the oracle had everything staged:\n{stdout}"
    );
    assert_eq!(
        row(&stdout, "oracle")[8],
        "0",
        "the oracle never demand-fetched"
    );
    // Reactive stages nothing: its hits are all from the guest's cache, and nothing it moved
    // into the guest was prefetched.
    let reactive_wire = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 9 && w[0] == "reactive" && w[1] == "prefetched")
        .unwrap_or_else(|| panic!("no wire line for reactive in:\n{stdout}"));
    assert_eq!(
        reactive_wire[2], "0.0",
        "reactive stages nothing:\n{stdout}"
    );
    assert!(
        hit("reactive") < 100.0,
        "reactive misses its first claims:\n{stdout}"
    );
    for mode in MODES {
        // The orchestrator knows what the guest still holds (the wire has no evict): it never
        // orders a second copy of it.
        let wire = stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() == 9 && w[0] == mode && w[1] == "prefetched")
            .unwrap_or_else(|| panic!("no wire line for {mode} in:\n{stdout}"));
        assert_eq!(
            (wire[7], wire[8]),
            ("skipped", "0"),
            "{mode} ordered a resource the guest held:\n{stdout}"
        );
    }
    assert!(
        out.path().join("latency.png").is_file(),
        "the report is written"
    );

    for mode in MODES {
        let mut tasks = 0;
        for rep in 1..=REPS {
            let dir = out.path().join(format!("rep{rep}"));
            let path = dir.join(format!("audit-{mode}.jsonl"));
            let v = audit::verify(&path)
                .expect("audit log readable")
                .unwrap_or_else(|b| panic!("{mode}: audit log broken at {b}"));
            assert!(v.records > REQUESTS as u64, "{mode}: a record per event");
            // The guest's feedback reached the SQLite history: a task execution per task run.
            let history =
                see_pto::history::History::open(&dir.join(format!("history-{mode}.sqlite")))
                    .unwrap_or_else(|e| panic!("{mode}: history: {e}"));
            let n = history.task_count().expect("count task executions");
            assert!(
                n >= REQUESTS as u64,
                "{mode} rep {rep}: {n} task executions recorded for {REQUESTS} requests"
            );
            tasks += n;
        }
        // Every task run reported a result, the host checked each one, none was wrong.
        let (checked, dispatched, wrong) = results(&stdout, mode);
        assert_eq!(
            (checked, wrong),
            (dispatched, 0),
            "{mode}: every dispatched task's result checked and right:\n{stdout}"
        );
        assert_eq!(
            checked, tasks,
            "{mode}: a checked result per task execution recorded"
        );
    }
    // The raw records: a row per request of every mode and repetition, and the figures
    // recomputed from them alone.
    let csv = out.path().join("requests.csv");
    let rows = std::fs::read_to_string(&csv).expect("requests.csv written");
    assert_eq!(rows.lines().count(), 1 + MODES.len() * REPS * REQUESTS);
    let again = Command::new(env!("CARGO_BIN_EXE_see-demo"))
        .arg("--from-csv")
        .arg(&csv)
        .output()
        .expect("see-demo --from-csv runs");
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again_out}");
    let headline = |text: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("latency at the host"))
            .take_while(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(headline(&stdout).len() > MODES.len(), "{stdout}");
    assert_eq!(
        headline(&again_out),
        headline(&stdout),
        "the CSV gives the same headline"
    );
    let total = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results checked: "))
        .unwrap_or_else(|| panic!("no results total in:\n{stdout}"));
    assert!(total.ends_with(" tasks, 0 wrong"), "{total}");
    // Alter one value of one record in the middle of the oracle's log: detected there.
    let path = out.path().join("rep1").join("audit-oracle.jsonl");
    let text = std::fs::read_to_string(&path).expect("read the log");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let k = lines.len() / 2;
    let mut rec: serde_json::Value = serde_json::from_str(&lines[k]).expect("a JSON record");
    let seq = rec["seq"].as_u64().expect("seq");
    let fields = rec["fields"].as_object_mut().expect("fields");
    let (name, value) = fields
        .iter_mut()
        .find(|(_, v)| v.is_u64())
        .expect("a numeric field");
    let name = name.clone();
    *value = serde_json::json!(value.as_u64().unwrap_or(0) + 1);
    lines[k] = serde_json::to_string(&rec).expect("serialise");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the log");
    let broken = audit::verify(&path)
        .expect("audit log readable")
        .expect_err(&format!("altering {name} of record {seq} must be detected"));
    assert_eq!(
        broken.seq,
        Some(seq),
        "the altered record is named: {broken}"
    );
    assert!(broken.to_string().contains("bad hash"), "{broken}");
}
