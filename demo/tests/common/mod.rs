//! What the demo's end-to-end tests share: see-demo wired to the VMM, kernel, daemon and keys
//! the test run builds, the C shop task, and the reading of the demo's results lines.

#![allow(dead_code)] // each test file uses its own part of this

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// see-demo with the VMM, kernel image, daemon and keys the tests use.
pub fn demo() -> Command {
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

/// `tasks/shop.c` built into `dir`: the module's path, or `None` (test skipped, said on
/// stderr) when clang-19 and lld-19 are absent and SEE_REQUIRE_CLANG is unset.
pub fn shop_module(dir: &Path) -> Option<PathBuf> {
    let Some(toolchain) = see_task_c::Toolchain::find_or_skip()
        .expect("clang-19 and lld-19 (SEE_REQUIRE_CLANG is set)")
    else {
        eprintln!("SKIPPED: clang-19/lld-19 are not installed (`cargo xtask deps`)");
        return None;
    };
    toolchain.build("shop", dir).expect("tasks/shop.c builds");
    Some(dir.join("shop.wasm"))
}

/// A mode's checked results: (tasks checked, tasks dispatched, wrong), from its line
/// `<mode> checked N of T tasks  wrong M`.
pub fn results(stdout: &str, mode: &str) -> (u64, u64, u64) {
    let w = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 8 && w[0] == mode && w[1] == "checked")
        .unwrap_or_else(|| panic!("no results line for {mode} in:\n{stdout}"));
    let n = |i: usize| w[i].parse::<u64>().unwrap_or_else(|e| panic!("{w:?}: {e}"));
    (n(2), n(4), n(7))
}
