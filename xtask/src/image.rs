//! `cargo xtask image`: builds the SEE guest kernel; also builds the release VMM for `run`,
//! `bench` and `test`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{repo_root, run_step};

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The guest kernel's crate directory.
pub fn kernel_dir() -> PathBuf {
    repo_root().join("images/see-kernel")
}

/// Where `cargo xtask image` puts the kernel (docs/ARCHITECTURE.md).
pub fn kernel_path() -> PathBuf {
    kernel_dir().join("target/x86_64-unknown-none/release/see-kernel")
}

/// Where the test image goes: the same kernel with the `test-ops` feature (the serve app's
/// hostile ops), in its own target directory so that the two builds do not undo each other.
pub fn test_kernel_path() -> PathBuf {
    kernel_dir().join("target/test-ops/x86_64-unknown-none/release/see-kernel")
}

/// The target the guest image and the no_std crates build for.
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Makes sure the toolchain has the guest target's standard library, adding it with rustup
/// when it is missing. rust-toolchain.toml lists the target, but rustup installs listed
/// targets only when it installs the toolchain itself: a toolchain that was already there (or
/// linked in under the pinned name) keeps only the targets it came with.
pub fn ensure_guest_target() -> Result<(), String> {
    let output = Command::new("rustc")
        .current_dir(repo_root())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("could not run rustc to find its sysroot: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if sysroot.join("lib/rustlib").join(GUEST_TARGET).is_dir() {
        return Ok(());
    }
    run_step(
        &format!("rustup target add {GUEST_TARGET} (the guest's target)"),
        Command::new("rustup")
            .current_dir(repo_root())
            .args(["target", "add", GUEST_TARGET]),
    )
    .map_err(|e| format!("{e}: install rustup, or add the target by hand"))
}

/// A cargo command for the guest kernel, run from its directory (so its `.cargo/config.toml`
/// applies) with the host build's target-dir and flags removed, and the PTO's verifying key
/// (created on first use) named in `SEE_PTO_VERIFYING_KEY` for the kernel's build script.
pub fn kernel_cargo(args: &[&str]) -> Result<Command, String> {
    ensure_guest_target()?;
    let key = crate::keys::ensure()?;
    let mut c = cargo();
    c.env("SEE_PTO_VERIFYING_KEY", key);
    c.current_dir(kernel_dir())
        .args(args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    Ok(c)
}

/// Builds the guest kernel and returns its path.
pub fn build_image() -> Result<PathBuf, String> {
    run_step(
        "build the guest image (images/see-kernel)",
        &mut kernel_cargo(&["build", "--release", "--locked"])?,
    )?;
    built(kernel_path())
}

/// Builds the test image (feature `test-ops`) and returns its path.
pub fn build_test_image() -> Result<PathBuf, String> {
    run_step(
        "build the test image (images/see-kernel, feature test-ops)",
        &mut kernel_cargo(&[
            "build",
            "--release",
            "--locked",
            "--features",
            "test-ops",
            "--target-dir",
            "target/test-ops",
        ])?,
    )?;
    built(test_kernel_path())
}

fn built(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the image build succeeded but {} is missing",
            path.display()
        ))
    }
}

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// Builds the release VMM and returns its path.
pub fn build_vmm() -> Result<PathBuf, String> {
    run_step(
        "build the VMM (release)",
        cargo()
            .current_dir(repo_root())
            .args(["build", "--release", "--locked", "-p", "see-vmm"]),
    )?;
    Ok(target_dir().join("release/see-vmm"))
}

/// `cargo xtask image`.
pub fn run() -> Result<(), String> {
    let path = build_image()?;
    eprintln!("xtask: guest image: {}", path.display());
    Ok(())
}
