//! The synthetic function platform (`--catalogue-preset faas`) in the VM, on real KVM: a small
//! platform (4 apps x 6 functions, 32 resources) with a store below the replayed working set,
//! two modes, a handful of requests. The daemon loads the catalogue the demo writes, the guest
//! boots with its app registry on the command line, and every request completes with every
//! task's result checked against the host's and none wrong. Skipped without /dev/kvm unless
//! SEE_REQUIRE_KVM is set.

use std::process::Command;

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

#[test]
fn the_function_platform_boots_and_serves_in_the_vm() {
    if !see_e2e::kvm_available() {
        return;
    }
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_see-demo"))
        .arg("--vmm")
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
        .arg(see_e2e::audit_keys().1)
        .args(["--catalogue-preset", "faas", "--apps", "4"])
        .args(["--modes", &MODES.join(",")])
        .args(["--requests", &REQUESTS.to_string(), "--reps", "1"])
        .args(["--sessions", "60", "--size-scale", "0.125"])
        .args(["--budget-mib", "0.5", "--memory-mib", "128"])
        .args(["--think-ms", "20", "--timeout-s", "30", "--settle"])
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
    assert!(
        stdout.contains("workload: synthetic function-platform workload (4 apps x 6 functions"),
        "the workload is called synthetic:\n{stdout}"
    );
    assert!(
        stdout.contains("catalogue faas-synthetic: 24 request types, 32 resources"),
        "{stdout}"
    );
    // The store holds less than the replayed requests need.
    let policy = line(&stdout, |w| w.first() == Some(&"policy:"));
    let share = policy
        .iter()
        .position(|w| *w == "%")
        .and_then(|i| policy[i - 1].parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no share of the working set in {policy:?}"));
    assert!(share < 100.0, "budget {share} % of the working set");
    // The daemon read the catalogue the demo wrote.
    let written = std::fs::read_to_string(out.path().join("catalogue.toml")).expect("written");
    assert!(written.contains("faas-synthetic"), "{written}");
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
}
