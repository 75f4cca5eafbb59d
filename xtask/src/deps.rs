//! System packages the tests and benches need, installed when missing, so that a fresh
//! machine needs nothing by hand: QEMU (Debian's `qemu-system-x86`), which boots the guest
//! image on a second PVH loader in tests/qemu.rs, and Debian's `clang-19` and `lld-19`, which
//! compile the C task modules in tasks/ to Wasm.
//!
//! Installation goes through the distribution's own client (`apt-get`, as root: the CI
//! machines run as root); `apt-get update` runs at most once per xtask run.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use crate::run_step;

/// QEMU's x86_64 system emulator.
pub const QEMU_BIN: &str = "qemu-system-x86_64";
/// The Debian package that provides [`QEMU_BIN`].
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Debian's package client.
const APT_GET: &str = "/usr/bin/apt-get";

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// The first file named `name` in the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Installs the Debian packages `packages` with apt-get (after one `apt-get update`).
fn apt_install(packages: &[&str]) -> Result<(), String> {
    let hint = |e: String| {
        format!(
            "{e}: run as root, or install {} by hand",
            packages.join(", ")
        )
    };
    if !Path::new(APT_GET).is_file() {
        return Err(format!(
            "{} missing and this system has no apt-get: install it with the system's package manager",
            packages.join(", ")
        ));
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run_step(
            "apt-get update",
            Command::new(APT_GET)
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .map_err(hint)?;
    }
    run_step(
        &format!("apt-get install {}", packages.join(" ")),
        Command::new(APT_GET)
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .map_err(hint)
}

/// The path of `qemu-system-x86_64`, installing `qemu-system-x86` first when it is missing.
pub fn ensure_qemu() -> Result<PathBuf, String> {
    if let Some(path) = find_on_path(QEMU_BIN) {
        return Ok(path);
    }
    apt_install(&[QEMU_PACKAGE])?;
    find_on_path(QEMU_BIN)
        .ok_or_else(|| format!("{QEMU_PACKAGE} is installed but {QEMU_BIN} is not on the PATH"))
}

/// The Debian packages of the C-to-Wasm toolchain: the compiler and `wasm-ld`.
const WASM_TOOLCHAIN_PACKAGES: [&str; 2] = ["clang-19", "lld-19"];

/// The path of `clang-19` able to link Wasm (with `wasm-ld` from lld-19), installing the
/// packages first when either is missing.
pub fn ensure_wasm_toolchain() -> Result<PathBuf, String> {
    if let Ok(toolchain) = see_task_c::Toolchain::find() {
        return Ok(toolchain.clang().to_path_buf());
    }
    apt_install(&WASM_TOOLCHAIN_PACKAGES)?;
    see_task_c::Toolchain::find()
        .map(|t| t.clang().to_path_buf())
        .map_err(|e| {
            format!(
                "{} are installed but: {e}",
                WASM_TOOLCHAIN_PACKAGES.join(", ")
            )
        })
}

/// `cargo xtask deps`: installs whatever is missing and says where it is.
pub fn run() -> Result<(), String> {
    let qemu = ensure_qemu()?;
    eprintln!("xtask: {QEMU_BIN}: {}", qemu.display());
    let clang = ensure_wasm_toolchain()?;
    eprintln!("xtask: clang-19: {}", clang.display());
    Ok(())
}
