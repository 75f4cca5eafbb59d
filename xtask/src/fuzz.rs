//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a bounded time.
//!
//! cargo-fuzz needs a nightly toolchain (for the sanitizer and coverage flags); this step
//! installs nightly (minimal profile) and cargo-fuzz itself when they are missing, so a fresh
//! machine needs nothing by hand.
//!
//! The fuzz crate is its own workspace with its own committed `fuzz/Cargo.lock`. `cargo fuzz
//! run` has no `--locked` (cargo-fuzz 0.13, rust-fuzz/cargo-fuzz#312), so this step first
//! resolves the fuzz workspace with `cargo metadata --locked`: a lock that no longer matches
//! the manifests fails the step instead of being rewritten by the fuzz build.

use std::process::Command;

use clap::Args;

use crate::{repo_root, run_step};

/// Options of `cargo xtask fuzz`.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Targets to run (default: every target in fuzz/).
    pub targets: Vec<String>,
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs nightly and cargo-fuzz if needed.
fn ensure_tools() -> Result<(), String> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run_step(
            "rustup toolchain install nightly (for cargo-fuzz)",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    if !succeeds(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        run_step(
            "cargo install cargo-fuzz",
            Command::new("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"]),
        )?;
    }
    Ok(())
}

/// Fails unless `fuzz/Cargo.lock` is committed and matches the fuzz manifests.
fn check_lock(dir: &std::path::Path) -> Result<(), String> {
    if !dir.join("Cargo.lock").is_file() {
        return Err(
            "fuzz/Cargo.lock is missing: the fuzz build is locked, commit it \
                    (cd fuzz && cargo +nightly generate-lockfile)"
                .into(),
        );
    }
    let output = Command::new("cargo")
        .current_dir(dir)
        .args(["+nightly", "metadata", "--locked", "--format-version", "1"])
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cargo metadata --locked in fuzz/: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "fuzz/Cargo.lock does not match the fuzz manifests; update it with \
             `cd fuzz && cargo +nightly update --workspace` and commit it:\n{}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(())
}

/// Runs the selected targets, each for `args.seconds`.
pub fn run(args: &FuzzArgs) -> Result<(), String> {
    ensure_tools()?;
    let dir = repo_root().join("fuzz");
    check_lock(&dir)?;
    let targets = if args.targets.is_empty() {
        let output = Command::new("cargo")
            .args(["+nightly", "fuzz", "list"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cargo fuzz list: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo fuzz list failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    } else {
        args.targets.clone()
    };
    if targets.is_empty() {
        return Err("no fuzz targets found in fuzz/".into());
    }
    let logs = repo_root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    for target in &targets {
        eprintln!("xtask: == fuzz {target} ({} s)", args.seconds);
        // The working corpus (kept between local runs, ignored by git) plus the committed
        // seeds (valid encodings, kept valid by virtio-prefetch-wire's tests), so a short run
        // on a fresh machine starts past the magic and length checks.
        let corpus = format!("corpus/{target}");
        std::fs::create_dir_all(dir.join(&corpus)).map_err(|e| format!("{corpus}: {e}"))?;
        let seeds = format!("seeds/{target}");
        let mut corpora = vec![corpus];
        if dir.join(&seeds).is_dir() {
            corpora.push(seeds);
        }
        let output = Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "run", target])
            .args(&corpora)
            .args([
                "--",
                &format!("-max_total_time={}", args.seconds),
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ])
            .output()
            .map_err(|e| format!("cargo fuzz run {target}: {e}"))?;
        let log = logs.join(format!("{target}.log"));
        let text = String::from_utf8_lossy(&output.stderr);
        let _ = std::fs::write(&log, text.as_bytes());
        if !output.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            return Err(format!(
                "fuzz target {target} failed (whole log: {})",
                log.display()
            ));
        }
        // One summary line per target: how many inputs it ran.
        if let Some(done) = text.lines().find(|l| l.starts_with("Done ")) {
            eprintln!("xtask: {target}: {done}");
        }
    }
    Ok(())
}
