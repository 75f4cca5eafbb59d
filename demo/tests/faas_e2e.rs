//! The synthetic function platform (`--catalogue-preset faas`) in the VM, on real KVM: a small
//! platform (4 apps x 6 functions) with a store below the replayed working set, two modes, a
//! handful of requests, once with Wasm tasks (`--task-module`, what `cargo xtask run` passes
//! by default: the platform's Wasm shape, every task running the C shop task built from
//! `tasks/shop.c`) and once with the native tasks (`--native-tasks`). The daemon loads the
//! catalogue the demo writes, the guest boots with its app registry on the command line, and
//! every request completes with every task's result checked against the host's and none
//! wrong (for Wasm tasks the host runs the same module over the store; a guest that ran the
//! native work instead would report other results). Skipped without /dev/kvm unless
//! SEE_REQUIRE_KVM is set, and the Wasm run without clang-19 unless SEE_REQUIRE_CLANG is set.

mod common;

const REQUESTS: usize = 10;
const MODES: [&str; 2] = ["reactive", "oracle"];

/// The first whitespace-split line whose words satisfy `pick`.
fn line(stdout: &str, pick: impl Fn(&[&str]) -> bool) -> Vec<&str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| pick(w))
        .unwrap_or_else(|| panic!("no such line in:\n{stdout}"))
}

/// Runs see-demo on the faas preset with `tasks` (the task arguments) and checks that it
/// served every request with every result right; its stdout.
fn serve(tasks: &[&std::ffi::OsStr], out: &std::path::Path) -> String {
    let run = common::demo()
        .args(tasks)
        .args(["--catalogue-preset", "faas", "--apps", "4"])
        .args(["--modes", &MODES.join(",")])
        .args(["--requests", &REQUESTS.to_string(), "--reps", "1"])
        .args(["--sessions", "60", "--size-scale", "0.125"])
        .args(["--budget-mib", "0.5", "--memory-mib", "128"])
        .args(["--think-ms", "20", "--timeout-s", "30", "--settle"])
        .arg("--out")
        .arg(out)
        .output()
        .expect("see-demo runs");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "see-demo failed: {}\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("workload: synthetic function-platform workload (4 apps x 6 functions"),
        "the workload is called synthetic:\n{stdout}"
    );
    // The store holds less than the replayed requests need.
    let policy = line(&stdout, |w| w.first() == Some(&"policy:"));
    let share = policy
        .iter()
        .position(|w| *w == "%")
        .and_then(|i| policy[i - 1].parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no share of the working set in {policy:?}"));
    assert!(share < 100.0, "budget {share} % of the working set");
    for mode in MODES {
        let row = line(&stdout, |w| {
            w.len() == 11 && w[0] == mode && w[1].parse::<u64>().is_ok()
        });
        assert_eq!(
            row[1],
            REQUESTS.to_string(),
            "{mode} completed every request"
        );
        // `<mode> checked N of T tasks  wrong M`: every dispatched task checked, none wrong.
        let r = line(&stdout, |w| {
            w.len() == 8 && w[0] == mode && w[1] == "checked"
        });
        let n = |i: usize| r[i].parse::<u64>().unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert!(
            n(4) >= REQUESTS as u64,
            "{mode}: a task or more per request"
        );
        assert_eq!(
            (n(2), n(7)),
            (n(4), 0),
            "{mode}: every task checked and right"
        );
    }
    let total = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results checked: "))
        .unwrap_or_else(|| panic!("no results total in:\n{stdout}"));
    assert!(total.ends_with(" tasks, 0 wrong"), "{total}");
    stdout
}

#[test]
fn the_function_platform_serves_native_tasks_in_the_vm() {
    if !see_e2e::kvm_available() {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let stdout = serve(&["--native-tasks".as_ref()], out.path());
    assert!(
        stdout.contains("catalogue faas-synthetic: 24 request types, 32 resources"),
        "{stdout}"
    );
    // The daemon read the catalogue the demo wrote.
    let written = std::fs::read_to_string(out.path().join("catalogue.toml")).expect("written");
    assert!(written.contains("faas-synthetic"), "{written}");
}

#[test]
fn the_function_platform_serves_wasm_tasks_in_the_vm() {
    if !see_e2e::kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(module) = common::shop_module(dir.path()) else {
        return;
    };
    let out = dir.path().join("demo");
    let stdout = serve(&["--task-module".as_ref(), module.as_os_str()], &out);
    // Every function has its module beside the apps' shared code and the functions' data.
    assert!(
        stdout.contains("catalogue faas-synthetic-wasm: 24 request types, 56 resources"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(out.join("catalogue.toml")).expect("written");
    assert!(written.contains("faas-synthetic-wasm"), "{written}");
}
