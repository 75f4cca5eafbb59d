//! Runs one test in a fresh child process: Landlock, seccomp and a privilege drop cannot be
//! undone, so the tests that apply them must not do it to the test harness itself.

use std::process::{Command, Output};

/// Set in the child: the name of the test it runs.
const CHILD_ENV: &str = "SEE_SANDBOX_TEST_CHILD";

/// Whether this process is the child running a confined test.
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs test `name` alone in a new copy of this test binary.
pub fn output(name: &str) -> Output {
    Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, name)
        .output()
        .expect("run the test binary")
}

/// In the parent, runs test `name` in a child, asserts that it passed and returns true (the
/// test then returns). In the child, returns false: the test goes on and does the
/// irreversible part.
pub fn run(name: &str) -> bool {
    if in_child() {
        return false;
    }
    let out = output(name);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child test {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child test {name} did not run:\n{stdout}"
    );
    true
}
