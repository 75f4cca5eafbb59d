//! The demo with Wasm tasks on real KVM (`--task-module`, what `cargo xtask run` passes by
//! default): every task's code resource holds the C shop task built from `tasks/shop.c`, the
//! guest compiles and runs it over the task's data, and the host checks every result by
//! running the same module over the store. A guest that ran the native tasks instead would
//! report other results (the native work folds the code resource in too), so "none wrong"
//! shows the modules ran. Skipped without /dev/kvm unless SEE_REQUIRE_KVM is set, and without
//! clang-19 unless SEE_REQUIRE_CLANG is set.

mod common;
use common::{demo, results};

const MODES: [&str; 2] = ["reactive", "oracle"];
const REQUESTS: usize = 4;

#[test]
fn wasm_tasks_run_in_the_guest_and_their_results_check_out() {
    if !see_e2e::kvm_available() {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let Some(module) = common::shop_module(out.path()) else {
        return;
    };
    let run = demo()
        .arg("--task-module")
        .arg(&module)
        .args(["--modes", &MODES.join(",")])
        .args(["--requests", &REQUESTS.to_string(), "--reps", "1"])
        .args([
            "--sessions",
            "200",
            "--epochs",
            "1",
            "--size-scale",
            "0.0625",
        ])
        .args(["--think-ms", "50", "--timeout-s", "60", "--settle"])
        .arg("--out")
        .arg(out.path().join("demo"))
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
        let (checked, dispatched, wrong) = results(&stdout, mode);
        assert!(
            dispatched >= REQUESTS as u64,
            "{mode}: tasks ran:\n{stdout}"
        );
        assert_eq!(
            (checked, wrong),
            (dispatched, 0),
            "{mode}: every Wasm task's result checked against the host's run and right:\n{stdout}"
        );
    }
}

#[test]
fn a_module_that_is_not_a_task_is_refused_before_anything_starts() {
    // The faas preset takes its Wasm shape (one module per task), then the module itself is
    // checked: an empty module exports no `run`. The demo says so before it starts anything.
    let out = tempfile::tempdir().expect("tempdir");
    std::fs::write(out.path().join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let run = demo()
        .args(["--catalogue-preset", "faas", "--task-module"])
        .arg(out.path().join("m.wasm"))
        .arg("--out")
        .arg(out.path().join("demo"))
        .output()
        .expect("see-demo runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("m.wasm is refused") && !stderr.contains("code resources"),
        "{stderr}"
    );
}
