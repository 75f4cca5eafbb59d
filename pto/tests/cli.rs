//! The `pto` binary end to end on small data: import, generate, train, predict, eval, and its
//! answers to bad input.

use std::{
    path::Path,
    process::{Command, Output},
};

fn pto(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pto"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the pto binary runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = pto(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pto {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = pto(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "pto {args:?} should fail with 1"
    );
    String::from_utf8(out.stderr).unwrap()
}

const TINY: &[&str] = &[
    "--epochs", "2", "--embed", "8", "--hidden", "8", "--heads", "2",
];
const FEW_CALLS: &[&str] = &["--latency-calls", "10"];

#[test]
fn import_skips_or_refuses_malformed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv =
        "session_id,event,timestamp\ns1,home,2024-01-01 00:00:00\ns1,cart,2024-01-01 00:00:05\n\
               s1,,2024-01-01 00:00:09\ns2,home,not-a-time\ns2,search,10\n";
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let out = ok(dir.path(), &["import", "t.csv", "--db", "h.db"]);
    assert!(
        out.contains("5 rows, 2 skipped as malformed; 2 sessions, 3 requests"),
        "{out}"
    );
    assert!(out.contains("skipped line 4: empty request type"), "{out}");
    let again = ok(dir.path(), &["import", "t.csv", "--db", "h.db"]);
    assert!(again.contains("0 new sessions"), "{again}");
    let err = fails(
        dir.path(),
        &["import", "t.csv", "--db", "h2.db", "--strict"],
    );
    assert!(
        err.contains(
            "t.csv:4: empty request type (rerun without --strict to skip and count such rows)"
        ),
        "{err}"
    );
    let err = fails(dir.path(), &["import", "missing.csv"]);
    assert!(err.contains("missing.csv"), "{err}");
}

#[test]
fn an_out_of_range_date_is_a_malformed_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "session_id,event,timestamp\ns1,home,2024-01-01 00:00:00\n\
               s1,cart,300000000-01-01 00:00:00\ns1,search,2024-01-01 00:00:05\n";
    std::fs::write(dir.path().join("t.csv"), csv).unwrap();
    let out = ok(dir.path(), &["import", "t.csv", "--db", "h.db"]);
    assert!(
        out.contains("3 rows, 1 skipped as malformed; 1 sessions, 2 requests"),
        "{out}"
    );
    assert!(
        out.contains("skipped line 3: timestamp \"300000000-01-01 00:00:00\" out of range"),
        "{out}"
    );
    let err = fails(
        dir.path(),
        &["import", "t.csv", "--db", "h2.db", "--strict"],
    );
    assert!(
        err.contains("t.csv:3: timestamp \"300000000-01-01 00:00:00\" out of range"),
        "{err}"
    );
}

#[test]
fn generate_import_train_predict_and_eval_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "generate",
            "--workload",
            "goal",
            "--sessions",
            "300",
            "--out",
            "w.jsonl",
        ],
    );
    let out = ok(d, &["import", "w.jsonl", "--db", "h.db", "--source", "gen"]);
    assert!(
        out.contains("0 skipped") && out.contains("300 new sessions"),
        "{out}"
    );

    let mut train = vec!["train", "--model", "lstm", "--db", "h.db", "--out", "m"];
    train.extend(TINY);
    let out = ok(d, &train);
    assert!(
        d.join("m.safetensors").exists() && d.join("m.json").exists(),
        "{out}"
    );

    let out = ok(
        d,
        &["predict", "--model", "m.json", "-k", "3", "home", "catalog"],
    );
    assert_eq!(
        out.lines().count(),
        5,
        "name, header and three predictions: {out}"
    );
    assert!(out.starts_with("predictor lstm:"), "{out}");
    let out = ok(
        d,
        &["predict", "--model", "m", "--db", "h.db", "home", "catalog"],
    );
    assert!(
        out.starts_with("predictor lstm+ppm4:"),
        "the hybrid over the history: {out}"
    );
    let out = pto(d, &["predict", "--model", "m", "home", "no-such-page"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"no-such-page\" is unknown"));
    assert!(out.status.success());

    std::fs::write(d.join("junk.json"), "{}").unwrap();
    let out = pto(
        d,
        &[
            "predict",
            "--model",
            "junk",
            "--predictor",
            "markov1",
            "--db",
            "h.db",
            "home",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("falling back to markov1"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("   1  "));

    let out = ok(
        d,
        &[
            "eval",
            "--db",
            "h.db",
            "--no-train",
            "--load",
            "m",
            "--plot",
            "e.png",
        ],
    );
    for row in [
        "| reactive |",
        "| markov1 |",
        "| ppm4 |",
        "| lstm |",
        "| lstm+ppm4 |",
    ] {
        assert!(out.contains(row), "{row} missing: {out}");
    }
    assert!(std::fs::read(d.join("e.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let err = fails(
        d,
        &[
            "eval",
            "--db",
            "h.db",
            "--no-train",
            "--load",
            "m",
            "--split-seed",
            "7",
        ],
    );
    assert!(err.contains("trained with split"), "{err}");
}

#[test]
fn eval_on_a_generated_workload_trains_both_models_and_prints_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "eval",
        "--workload",
        "markov",
        "--sessions",
        "200",
        "--json",
        "e.json",
    ];
    args.extend(TINY);
    args.extend(FEW_CALLS);
    let out = ok(dir.path(), &args);
    for row in [
        "| lstm |",
        "| transformer |",
        "| transformer+ppm4 |",
        "| bayes-optimal (limit) |",
    ] {
        assert!(out.contains(row), "{row} missing: {out}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("e.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 10);
}

#[test]
fn usage_errors_and_missing_data_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = pto(dir.path(), &["eval", "--db", "x.db", "--workload", "goal"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap rejects conflicting sources"
    );
    let err = fails(dir.path(), &["eval", "--no-train"]);
    assert!(err.contains("--db, --input or --workload"), "{err}");
    let err = fails(dir.path(), &["eval", "--db", "empty.db"]);
    assert!(err.contains("run `pto import` first"), "{err}");
    let err = fails(
        dir.path(),
        &[
            "train",
            "--model",
            "transformer",
            "--workload",
            "goal",
            "--sessions",
            "50",
            "--heads",
            "5",
            "--out",
            "m",
        ],
    );
    assert!(err.contains("heads = 5 does not divide embed"), "{err}");
}
