//! `cargo xtask test`: the project's whole test suite, the one command CI runs.

use std::process::Command;

use clap::Args;

use crate::{image, repo_root, run_step};

/// Options of `cargo xtask test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// Skip the format and lint checks (for a quick local run).
    #[arg(long)]
    pub no_lint: bool,
    /// Seconds each fuzz target runs (0 skips fuzzing).
    #[arg(long, default_value_t = 10)]
    pub fuzz_seconds: u64,
}

/// Runs every check in the order that fails fastest.
pub fn run(args: &TestArgs) -> Result<(), String> {
    let root = repo_root();
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root);
        c
    };
    if !args.no_lint {
        run_step(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?;
        run_step(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        run_step(
            "cargo fmt --check (guest image)",
            &mut image::kernel_cargo(&["fmt", "--", "--check"])?,
        )?;
        run_step(
            "cargo clippy (guest image)",
            &mut image::kernel_cargo(&["clippy", "--release", "--locked", "--", "-D", "warnings"])?,
        )?;
        run_step(
            "cargo clippy (test image)",
            &mut image::kernel_cargo(&[
                "clippy",
                "--release",
                "--locked",
                "--features",
                "test-ops",
                "--target-dir",
                "target/test-ops",
                "--",
                "-D",
                "warnings",
            ])?,
        )?;
        run_step(
            "cargo doc",
            cargo()
                .args(["doc", "--workspace", "--no-deps", "--locked"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
    }
    // The no_std crates shared with the guest must build for the guest's target.
    image::ensure_guest_target()?;
    run_step(
        "cargo build (no_std crates, x86_64-unknown-none)",
        cargo().args([
            "build",
            "--locked",
            "--target",
            image::GUEST_TARGET,
            "-p",
            "virtio-prefetch-wire",
            "-p",
            "see-guest-driver",
            "-p",
            "see-workload",
            "-p",
            "see-abi",
            "-p",
            "see-task",
        ]),
    )?;
    // tests/qemu.rs boots the image on QEMU too.
    let qemu = crate::deps::ensure_qemu()?;
    // The C task modules: built and checked here; the tests that run them build them again
    // and, with SEE_REQUIRE_CLANG set, fail rather than skip without the toolchain.
    crate::tasks::build()?;
    // The end-to-end tests boot the release VMM on the guest image: build both first.
    let kernel = image::build_image()?;
    let test_kernel = image::build_test_image()?;
    let vmm = image::build_vmm()?;
    // The prefetch tests kill a backend process with SIGKILL (tests/prefetch/failure.rs).
    run_step(
        "build the virtio-prefetch backend (release)",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "see-prefetch-backend",
        ]),
    )?;
    // The daemon alone, release: what `see up` and the demo run, with no test feature unified
    // into it (the service tests check that).
    run_step(
        "build see-daemon (release)",
        cargo().args(["build", "--release", "--locked", "-p", "see-daemon"]),
    )?;
    // The signer the daemon's service tests and the demo start beside it.
    run_step(
        "build see-signer (release)",
        cargo().args(["build", "--release", "--locked", "-p", "see-signer"]),
    )?;
    run_step(
        "cargo test",
        cargo()
            .args(["test", "--workspace", "--locked"])
            .env("SEE_VMM_BIN", vmm)
            .env("SEE_KERNEL_IMAGE", kernel)
            .env("SEE_TEST_KERNEL_IMAGE", test_kernel)
            .env("SEE_QEMU_BIN", qemu)
            .env(see_task_c::REQUIRE_ENV, "1")
            .env(
                "SEE_BACKEND_BIN",
                image::target_dir().join("release/see-prefetch-backend"),
            )
            .env(
                "SEE_RELEASE_DAEMON_BIN",
                image::target_dir().join("release/see-daemon"),
            )
            .env(
                "SEE_SIGNER_BIN",
                image::target_dir().join("release/see-signer"),
            ),
    )?;
    if args.fuzz_seconds > 0 {
        crate::fuzz::run(&crate::fuzz::FuzzArgs {
            seconds: args.fuzz_seconds,
            targets: Vec::new(),
        })?;
    }
    Ok(())
}
