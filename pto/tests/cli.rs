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

/// `pto generate ARGS` as sessions of (request type, timestamp), in file order.
fn generated(dir: &Path, args: &[&str]) -> Vec<Vec<(String, i64)>> {
    let mut all = vec!["generate", "--sessions", "300"];
    all.extend(args);
    let out = ok(dir, &all);
    let mut sessions: Vec<(String, Vec<(String, i64)>)> = Vec::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["session"].as_str().unwrap().to_owned();
        let r = (
            v["request_type"].as_str().unwrap().to_owned(),
            v["timestamp"].as_i64().unwrap(),
        );
        match sessions.last_mut() {
            Some((k, s)) if *k == key => s.push(r),
            _ => sessions.push((key, vec![r])),
        }
    }
    sessions.into_iter().map(|(_, s)| s).collect()
}

fn mean_gap_ms(sessions: &[Vec<(String, i64)>]) -> f64 {
    let gaps: Vec<i64> = sessions
        .iter()
        .flat_map(|s| s.windows(2).map(|w| w[1].1 - w[0].1))
        .collect();
    gaps.iter().sum::<i64>() as f64 / gaps.len() as f64
}

/// The most distinct successors any request type has.
fn most_successors(sessions: &[Vec<(String, i64)>]) -> usize {
    let mut next: std::collections::HashMap<&str, std::collections::HashSet<&str>> =
        Default::default();
    for s in sessions {
        for w in s.windows(2) {
            next.entry(&w[0].0).or_default().insert(&w[1].0);
        }
    }
    next.values().map(|n| n.len()).max().unwrap()
}

#[test]
fn generate_overrides_change_the_workload_structure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let markov = ["--workload", "markov"];
    let preset = generated(d, &markov);
    let gap = mean_gap_ms(&preset);
    assert!((3000.0..5000.0).contains(&gap), "preset think time {gap}");
    assert!(most_successors(&preset) > 3, "noise and order 2");

    let fast = generated(d, &[&markov[..], &["--think-ms", "50"]].concat());
    let gap = mean_gap_ms(&fast);
    assert!((40.0..60.0).contains(&gap), "--think-ms 50 gives {gap}");

    let chain = generated(
        d,
        &[
            &markov[..],
            &["--order", "1", "--branching", "1", "--noise", "0"],
        ]
        .concat(),
    );
    assert_eq!(
        most_successors(&chain),
        1,
        "first order, one successor, no noise: a fixed chain"
    );
    let two = generated(
        d,
        &[
            &markov[..],
            &["--order", "1", "--branching", "2", "--noise", "0"],
        ]
        .concat(),
    );
    assert_eq!(most_successors(&two), 2);

    let goals = generated(
        d,
        &[&markov[..], &["--goals", "2", "--goal-strength", "1"]].concat(),
    );
    let firsts: std::collections::HashSet<&str> = goals.iter().map(|s| s[0].0.as_str()).collect();
    let preset_firsts: std::collections::HashSet<&str> =
        preset.iter().map(|s| s[0].0.as_str()).collect();
    assert_eq!(firsts.len(), 2, "the first request names one of 2 goals");
    assert!(preset_firsts.len() > 2);

    // The overrides reach the commands that generate through the data options.
    let err = fails(d, &["eval", "--workload", "goal", "--order", "7"]);
    assert!(err.contains("--order 7: want 1 to 4"), "{err}");
    let err = fails(d, &["eval", "--db", "h.db", "--noise", "0.5"]);
    assert!(err.contains("use them with --workload"), "{err}");
}

#[test]
fn generate_the_synthetic_function_platform() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faas = generated(d, &["--catalogue-preset", "faas", "--seed", "3"]);
    assert_eq!(faas.len(), 300);
    assert_eq!(
        faas,
        generated(d, &["--catalogue-preset", "faas", "--seed", "3"])
    );
    let types: std::collections::HashSet<&str> =
        faas.iter().flatten().map(|r| r.0.as_str()).collect();
    assert!(
        types.iter().all(|t| t.starts_with('a') && t.contains("-f")),
        "{types:?}"
    );
    assert!(types.len() > 100, "a long tail of types: {}", types.len());
    // Fewer apps, fewer types; a uniform popularity reaches more of them.
    let few = generated(d, &["--catalogue-preset", "faas", "--apps", "2"]);
    let few: std::collections::HashSet<&str> = few.iter().flatten().map(|r| r.0.as_str()).collect();
    assert!(few.len() <= 12, "{few:?}");
    // The preset has its own session model: the markov and goal options do not apply.
    let err = fails(
        d,
        &["generate", "--catalogue-preset", "faas", "--noise", "0.5"],
    );
    assert!(err.contains("not --catalogue-preset faas"), "{err}");
    let err = fails(
        d,
        &["generate", "--catalogue-preset", "faas", "--zipf", "-1"],
    );
    assert!(err.contains("zipf exponent -1"), "{err}");
    let out = pto(
        d,
        &[
            "generate",
            "--catalogue-preset",
            "faas",
            "--workload",
            "goal",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "conflicting options: a usage error"
    );
    let out = pto(d, &["generate", "--zipf", "1.2"]);
    assert_eq!(out.status.code(), Some(2), "--zipf needs the preset");
}

#[test]
fn generate_overrides_out_of_range_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["--order", "0"][..], "--order 0: want 1 to 4"),
        (&["--order", "5"], "--order 5: want 1 to 4"),
        (
            &["--branching", "0"],
            "--branching 0: want 1 to 19 (the catalogue's request types)",
        ),
        (
            &["--branching", "20"],
            "--branching 20: want 1 to 19 (the catalogue's request types)",
        ),
        (
            &["--noise", "1.5"],
            "--noise 1.5: want a probability, 0 to 1",
        ),
        (
            &["--noise", "NaN"],
            "--noise NaN: want a probability, 0 to 1",
        ),
        (&["--think-ms", "0"], "--think-ms 0: want more than 0"),
        (&["--think-ms", "-5"], "--think-ms -5: want more than 0"),
        (&["--think-ms", "inf"], "--think-ms inf: want more than 0"),
        (
            &["--goals", "20"],
            "--goals 20: want 0 to 19 (the catalogue's request types)",
        ),
        (
            &["--goal-strength", "-0.1"],
            "--goal-strength -0.1: want 0 to 1",
        ),
    ] {
        let mut all = vec!["generate", "--sessions", "5"];
        all.extend(args);
        let err = fails(dir.path(), &all);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = pto(dir.path(), &["generate", "--order", "two"]);
    assert_eq!(out.status.code(), Some(2), "not a number: a usage error");
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
    // The hybrid over the history, with the count model `pto train` chose on validation.
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("m.json")).unwrap()).unwrap();
    let counts = &side["mix"]["counts"];
    let name = match counts["kind"].as_str() {
        Some("ppm") => format!("ppm{}", counts["order"]),
        Some("markov1") => "markov1".into(),
        Some("context-ppm") => format!("ctx-ppm{}[", counts["order"]),
        _ => panic!("no count model recorded: {side}"),
    };
    assert!(
        out.starts_with(&format!("predictor lstm+{name}")),
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
    for row in ["| reactive |", "| markov1 |", "| ppm4 |", "| lstm |"] {
        assert!(out.contains(row), "{row} missing: {out}");
    }
    // The mixture with the count model chosen on validation (ppm4, markov1 or ctx-PPM).
    assert!(
        ["| lstm+ppm4 |", "| lstm+markov1 |", "| lstm+ctx-ppm"]
            .iter()
            .any(|row| out.contains(row)),
        "the mixture is missing: {out}"
    );
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
        "| ctx-ppm4[",
        "against the Bayes limit's top-1",
    ] {
        assert!(out.contains(row), "{row} missing: {out}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("e.json")).unwrap()).unwrap();
    assert_eq!(
        json.as_array().unwrap().len(),
        11,
        "the context-aware PPM included"
    );
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
    assert!(
        err.contains("--db, --input, --workload or --catalogue-preset"),
        "{err}"
    );
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

#[test]
fn data_commands_take_the_import_column_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("sid,what,when,platform\n");
    for s in 0..30 {
        for (i, k) in ["home", "search", "cart"].iter().enumerate() {
            csv.push_str(&format!("s{s},{k},{},web\n", s * 100 + i));
        }
    }
    std::fs::write(dir.path().join("t.csv"), &csv).unwrap();
    // Without the column options the error names the flag, and the flag is accepted.
    let err = fails(dir.path(), &["eval", "--input", "t.csv", "--no-train"]);
    assert!(err.contains("--type-column"), "{err}");
    let cols = [
        "--session-column",
        "sid",
        "--type-column",
        "what",
        "--time-column",
        "when",
    ];
    let args: Vec<&str> = ["eval", "--input", "t.csv", "--no-train"]
        .iter()
        .chain(&cols)
        .chain(FEW_CALLS)
        .copied()
        .collect();
    let out = ok(dir.path(), &args);
    assert!(out.contains("markov1"), "{out}");
    let args: Vec<&str> = [
        "import",
        "t.csv",
        "--db",
        "h.db",
        "--attribute-columns",
        "platform",
    ]
    .iter()
    .chain(&cols)
    .copied()
    .collect();
    let out = ok(dir.path(), &args);
    assert!(out.contains("attributes: platform (1 values)"), "{out}");
    // Column options without --input are refused, whatever the sessions' source, by every
    // command that takes them.
    for source in [
        &["--db", "h.db"][..],
        &["--workload", "markov", "--sessions", "30"][..],
    ] {
        for cmd in [
            &["eval", "--no-train"][..],
            &["train", "--model", "lstm", "--out", "m", "--epochs", "1"][..],
        ] {
            let args: Vec<&str> = cmd
                .iter()
                .chain(source)
                .chain(&["--type-column", "what"])
                .copied()
                .collect();
            let err = fails(dir.path(), &args);
            assert!(err.contains("read an --input file"), "{args:?}: {err}");
        }
    }
    // `pto predict` with a count model and no data at all.
    let err = fails(
        dir.path(),
        &["predict", "--predictor", "static-graph", "--strict", "home"],
    );
    assert!(err.contains("read an --input file"), "{err}");
}

#[test]
fn the_cohort_workload_carries_its_attribute() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate",
            "--workload",
            "cohort",
            "--sessions",
            "60",
            "--out",
            "c.jsonl",
        ],
    );
    let text = std::fs::read_to_string(dir.path().join("c.jsonl")).unwrap();
    assert!(text.lines().all(|l| l.contains("\"cohort\":\"c")), "{text}");
    let out = ok(dir.path(), &["import", "c.jsonl", "--db", "h.db"]);
    assert!(out.contains("attributes: cohort (4 values)"), "{out}");
}
