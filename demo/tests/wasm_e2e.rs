//! The demo with Wasm tasks on real KVM (`--task-module`, what `cargo xtask run` passes by
//! default): every task's code resource holds the C shop task built from `tasks/shop.c`, the
//! guest compiles and runs it over the task's data, and the host checks every result by
//! running the same module over the store. A guest that ran the native tasks instead would
//! report other results (the native work folds the code resource in too), so "none wrong"
//! shows the modules ran. Skipped without /dev/kvm unless SEE_REQUIRE_KVM is set, and without
//! clang-19 unless SEE_REQUIRE_CLANG is set.

use std::process::Command;

const MODES: [&str; 2] = ["reactive", "oracle"];
const REQUESTS: usize = 4;

/// `<mode> checked N of T tasks  wrong M`: (N, T, M).
fn results(stdout: &str, mode: &str) -> (u64, u64, u64) {
    let w = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 8 && w[0] == mode && w[1] == "checked")
        .unwrap_or_else(|| panic!("no results line for {mode} in:\n{stdout}"));
    let n = |i: usize| w[i].parse::<u64>().unwrap_or_else(|e| panic!("{w:?}: {e}"));
    (n(2), n(4), n(7))
}

/// see-demo with the VM, daemon and keys the tests build.
fn demo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_see-demo"));
    c.arg("--vmm")
        .arg(see_e2e::vmm_bin())
        .arg("--kernel")
        .arg(see_e2e::kernel_image())
        .arg("--daemon")
        .arg(see_e2e::daemon_bin())
        .arg("--key")
        .arg(&see_e2e::pto_keys().0)
        .arg("--audit-key")
        .arg(see_e2e::audit_keys().0)
        .arg("--audit-pub")
        .arg(see_e2e::audit_keys().1);
    c
}

#[test]
fn wasm_tasks_run_in_the_guest_and_their_results_check_out() {
    if !see_e2e::kvm_available() {
        return;
    }
    let Some(toolchain) = see_task_c::Toolchain::find_or_skip()
        .expect("clang-19 and lld-19 (SEE_REQUIRE_CLANG is set)")
    else {
        eprintln!("SKIPPED: clang-19/lld-19 are not installed (`cargo xtask deps`)");
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    toolchain
        .build("shop", out.path())
        .expect("tasks/shop.c builds");
    let module = out.path().join("shop.wasm");
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
