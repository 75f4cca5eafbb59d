//! `pto audit verify` and `pto simulate` end to end.

use std::{
    path::Path,
    process::{Command, Output},
};

use see_pto::audit::{AuditEvent, AuditLog, FsyncPolicy};

fn pto(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pto"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the pto binary runs")
}

#[test]
fn audit_verify_accepts_a_clean_log_and_names_the_altered_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync).unwrap();
    for i in 0..5 {
        log.append(&AuditEvent::Completion {
            request: i,
            status: 0,
            total_ns: 1000 * i,
        })
        .unwrap();
    }
    let head = see_pto::audit::hex(&log.head_hash());
    drop(log);
    // Unsigned: the chain alone, on request; without a key the verifier refuses to guess.
    assert_eq!(
        pto(dir.path(), &["audit", "verify", "audit.jsonl"])
            .status
            .code(),
        Some(2)
    );
    let out = pto(
        dir.path(),
        &["audit", "verify", "--chain-only", "audit.jsonl"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok, 5 records (0 signed checkpoints, NOT closed), head seq 4")
            && stdout.contains(&head),
        "{stdout}"
    );
    let out = pto(
        dir.path(),
        &[
            "audit",
            "verify",
            "--chain-only",
            "audit.jsonl",
            "--expect-head",
            &head,
        ],
    );
    assert!(out.status.success());

    // Cut the last record: the chain holds, the expected head does not.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    std::fs::write(&path, lines[..4].concat()).unwrap();
    let out = pto(
        dir.path(),
        &[
            "audit",
            "verify",
            "--chain-only",
            "audit.jsonl",
            "--expect-head",
            &head,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut off the end"));

    // Alter record 2 (line 3).
    let altered = lines
        .concat()
        .replace("\"total_ns\":2000", "\"total_ns\":1");
    std::fs::write(&path, altered).unwrap();
    let out = pto(
        dir.path(),
        &["audit", "verify", "--chain-only", "audit.jsonl"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken at line 3 (seq 2): bad hash"),
        "{stderr}"
    );

    let out = pto(
        dir.path(),
        &["audit", "verify", "--chain-only", "missing.jsonl"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn audit_verify_with_the_key_needs_a_closed_log() {
    use see_pto::audit::{checkpoint, CheckpointSigner, KeySigner};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let signer = KeySigner::new(p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).unwrap());
    std::fs::write(
        dir.path().join("audit.pub"),
        checkpoint::sec1(&signer.verifying_key()),
    )
    .unwrap();
    let mut log = AuditLog::open(&path, FsyncPolicy::OnSync)
        .unwrap()
        .with_checkpoints(Box::new(signer), 2);
    for i in 0..5 {
        log.append(&AuditEvent::Completion {
            request: i,
            status: 0,
            total_ns: 1000 * i,
        })
        .unwrap();
    }
    drop(log);
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--key", "audit.pub", "audit.jsonl"];
        args.extend_from_slice(extra);
        pto(dir.path(), &args)
    };
    let out = verify(&[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 signed checkpoints, closed"), "{stdout}");
    // Cut the closing checkpoint: one record follows the checkpoint at seq 5.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    std::fs::write(&path, lines[..7].concat()).unwrap();
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not closed cleanly: 1 records follow the last checkpoint (seq 5)"),
        "{stderr}"
    );
    assert!(verify(&["--allow-unclosed"]).status.success());
}

#[test]
fn simulate_prints_the_per_mode_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = pto(
        dir.path(),
        &[
            "simulate",
            "--workload",
            "markov",
            "--sessions",
            "150",
            "--work-ns-per-byte",
            "2",
            "--epochs",
            "2",
            "--embed",
            "8",
            "--hidden",
            "8",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("origin: 20 ms + 100 MiB/s"), "{stdout}");
    for mode in ["reactive", "static", "markov", "learned", "oracle"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(mode)),
            "{mode}: {stdout}"
        );
    }
    let oracle = stdout.lines().find(|l| l.starts_with("oracle")).unwrap();
    let cols: Vec<&str> = oracle.split_whitespace().collect();
    // All hits but for a prefetch still on the link when its request starts (sent at the
    // previous completion, as the daemon sends it): the guest demands that one, as in the VM.
    let (hits, demands): (f64, u64) = (cols[5].parse().unwrap(), cols[8].parse().unwrap());
    let requests: u64 = cols[1].parse().unwrap();
    assert!(
        hits >= 99.0 && demands * 100 <= requests,
        "oracle: all hits but late ones, next to no demands: {oracle}"
    );
    assert!(stdout.contains("best predictor:"));
    // Reactive prefetches nothing: its precision is no number.
    let reactive = stdout.lines().find(|l| l.starts_with("reactive")).unwrap();
    assert_eq!(
        reactive.split_whitespace().nth(6),
        Some("n/a"),
        "{reactive}"
    );
    assert!(stdout.contains("x the working set"), "{stdout}");
    // Bad policy values are refused with a message.
    let out = pto(
        dir.path(),
        &["simulate", "--workload", "markov", "--threshold", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("threshold"));
}

#[test]
fn simulate_the_synthetic_function_platform() {
    let dir = tempfile::tempdir().unwrap();
    let out = pto(
        dir.path(),
        &[
            "simulate",
            "--catalogue-preset",
            "faas",
            "--sessions",
            "200",
            "--modes",
            "reactive,markov,oracle",
            "--work-ns-per-byte",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("synthetic function-platform workload (40 apps x 6 functions"),
        "{stdout}"
    );
    assert!(
        stdout.contains("catalogue faas-synthetic: 240 request types, 320 resources"),
        "{stdout}"
    );
    // The working set of the replay is larger than the 16 MiB budget.
    let ws: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("working set of the first repetition's requests: "))
        .and_then(|l| l.strip_suffix(" MiB"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ws > 16.0, "{stdout}");
    for mode in ["reactive", "markov", "oracle"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(mode)),
            "{mode}: {stdout}"
        );
    }
    assert!(stdout.contains("best predictor: markov"), "{stdout}");
}

#[test]
fn simulate_sweeps_print_tables_draw_pngs_and_compare_with_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vm.csv"),
        "param,value,mode,p50_ms\nbudget,0.5,reactive,20\nbudget,0.5,oracle,1000\n",
    )
    .unwrap();
    let args = [
        "simulate",
        "--workload",
        "goal",
        "--sessions",
        "200",
        "--requests",
        "80",
        "--size-scale",
        "0.25",
        "--work-ns-per-byte",
        "10",
        "--modes",
        "reactive,markov,oracle",
        "--sweep",
        "budget",
        "--points",
        "0.25,0.5",
        "--resamples",
        "50",
        "--plot-dir",
        "plots",
        "--demo-commands",
        "--vm-figures",
        "vm.csv",
    ];
    let out = pto(dir.path(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("budget = 25%") && stdout.contains("budget = 50%"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("speedup of markov over reactive (host p50)")
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("demo: budget"))
            .count(),
        2
    );
    assert!(
        stdout.contains("--requests 80 --reps 3 --modes reactive,markov,oracle"),
        "{stdout}"
    );
    // Three repetitions of 80 requests, as the demo runs them, each from a cold guest.
    assert!(
        stdout.contains("3 repetitions of 80, each mode and repetition from a cold guest"),
        "{stdout}"
    );
    assert!(stdout.contains("guest p50"), "{stdout}");
    // The oracle's 1000 ms is far from anything simulated.
    assert!(
        stdout.contains("of 2 simulated p50s within 15%"),
        "{stdout}"
    );
    assert!(stdout.contains("NO"), "{stdout}");
    let png = std::fs::read(dir.path().join("plots/sweep-budget.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000);
    // --points with two sweeps, and a point that cannot run, are refused.
    let mut two = args.to_vec();
    two[14] = "budget,think-cap";
    let out = pto(dir.path(), &two);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("single --sweep"));
    let mut bad = args.to_vec();
    bad[16] = "0,0.5";
    let out = pto(dir.path(), &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be positive"));
}

/// On the segments workload the next request depends on the cohort and the gap: the
/// context-aware PPM is the best count model there. `pto train` must record it as the
/// checkpoint's mixture's count model, and `pto simulate` must mix with it, from that
/// checkpoint and when it trains the model itself, even where the learned model reads no
/// context (as with --no-context): a mixture with the context-blind PPM fails here.
#[test]
fn train_and_simulate_mix_with_the_context_aware_count_model_where_it_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = ["--workload", "segments", "--sessions", "800"];
    let tiny = [
        "--no-context",
        "--epochs",
        "1",
        "--embed",
        "8",
        "--hidden",
        "8",
    ];
    let train = [
        &["train", "--model", "lstm", "--out", "m"][..],
        &data,
        &tiny,
    ]
    .concat();
    let out = pto(dir.path(), &train);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(chosen: ctx-ppm4["), "{stderr}");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.json")).unwrap()).unwrap();
    let counts = &side["mix"]["counts"];
    assert_eq!(counts["kind"], "context-ppm", "{counts}");
    assert!(
        counts["on"]
            .as_array()
            .is_some_and(|on| on.iter().any(|k| k == "gap")),
        "{counts}"
    );
    let simulate = [
        "simulate",
        "--modes",
        "learned",
        "--work-ns-per-byte",
        "2",
        "--replay",
        "10",
    ];
    for how in [&["--model", "m"][..], &tiny[..]] {
        let out = pto(dir.path(), &[&simulate[..], &data, how].concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{how:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("the learned mode's predictor: lstm+ctx-ppm4["),
            "{how:?}: {stdout}"
        );
    }
}
