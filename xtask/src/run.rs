//! `cargo xtask run`: the demo. Builds the guest image, the release VMM and the release
//! `see-demo`, then runs `see-demo` on its embedded defaults (every prefetch mode on a generated
//! workload; `--demo -- ARGS` passes ARGS to see-demo instead). With arguments after `--` and no
//! `--demo`, it boots the image directly with those see-vmm arguments and reports how the VM
//! ended (as before the demo existed).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Args;

use crate::{image, keys, repo_root, run_step};

/// Options of `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Pass the arguments after `--` to see-demo (e.g. `--demo -- --trace
    /// ../shared/data/ecom.csv.gz`) instead of booting see-vmm with them.
    #[arg(long)]
    pub demo: bool,
    /// Extra arguments: for see-vmm (after `--`, e.g. `-- --cpus 2 --cmdline see.selftest=0`:
    /// boot the image alone), or for see-demo with `--demo`. None: run the demo.
    #[arg(last = true)]
    pub vmm_args: Vec<String>,
}

/// What an exit code means (docs/ARCHITECTURE.md).
pub fn meaning(code: i32) -> &'static str {
    match code {
        0 => "the guest ended with success",
        1 => "VMM error (see its message above)",
        2 => "command-line usage error",
        101 => "guest panic",
        102 => "guest CPU exception",
        103 => "guest self-test failure",
        104 => "guest app failure",
        105 => "guest refused its boot layout (overlapping RAM, shared window, devices, kernel or heap)",
        _ => "status written by the guest",
    }
}

/// Builds, then runs the demo, or boots the image with the given see-vmm arguments.
pub fn run(args: &RunArgs) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    if args.demo || args.vmm_args.is_empty() {
        return demo(&kernel, &vmm, &args.vmm_args);
    }
    eprintln!("xtask: == boot {}", kernel.display());
    let status = Command::new(&vmm)
        .arg("--kernel")
        .arg(&kernel)
        .args(&args.vmm_args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    let code = status
        .code()
        .ok_or_else(|| format!("see-vmm was killed ({status})"))?;
    eprintln!("xtask: see-vmm exited with {code}: {}", meaning(code));
    if code == 0 {
        Ok(())
    } else {
        Err(format!("the VM ended with exit code {code}"))
    }
}

/// Builds the release daemon (alone, so no test feature leaks into it), its signer and
/// see-demo.
pub fn build_service() -> Result<(), String> {
    for package in ["see-daemon", "see-signer", "see-demo"] {
        run_step(
            &format!("build {package} (release)"),
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(repo_root())
                .args(["build", "--release", "--locked", "-p", package]),
        )?;
    }
    Ok(())
}

/// The arguments that make the demo or the service run the tasks as Wasm modules: the shop
/// task built from `tasks/shop.c`, unless `args` choose the native tasks or a module already.
fn wasm_task_args(args: &[String]) -> Result<Vec<String>, String> {
    let chosen = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if chosen("--native-tasks") || chosen("--task-module") {
        return Ok(Vec::new());
    }
    Ok(vec![
        "--task-module".into(),
        shop_module()?.display().to_string(),
    ])
}

/// Builds the task modules and returns the shop task's, built from `tasks/shop.c`.
pub fn shop_module() -> Result<PathBuf, String> {
    crate::tasks::build()?
        .into_iter()
        .find(|m| m.file_stem().is_some_and(|s| s == "shop"))
        .ok_or_else(|| "tasks/shop.c did not build into shop.wasm".into())
}

/// Builds the release see-demo and runs it with the image, the VMM, the daemon and the
/// development key; the tasks run as Wasm modules unless `--native-tasks` is among the
/// demo's arguments.
fn demo(kernel: &Path, vmm: &Path, demo_args: &[String]) -> Result<(), String> {
    build_service()?;
    let tasks = wasm_task_args(demo_args)?;
    let bin = image::target_dir().join("release/see-demo");
    eprintln!("xtask: == run {}", bin.display());
    let status = demo_command(kernel, vmm)
        .args(tasks)
        .args(demo_args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("see-demo failed ({status})"))
    }
}

/// The release see-demo (built by [`build_service`]) with the image, the VMM, the release
/// daemon and the development keys, run from the repository root.
pub fn demo_command(kernel: &Path, vmm: &Path) -> Command {
    let mut cmd = Command::new(image::target_dir().join("release/see-demo"));
    cmd.current_dir(repo_root())
        .arg("--vmm")
        .arg(vmm)
        .arg("--kernel")
        .arg(kernel)
        .arg("--daemon")
        .arg(image::target_dir().join("release/see-daemon"))
        .arg("--key")
        .arg(keys::secret_key_path())
        .arg("--audit-key")
        .arg(keys::audit_key_path())
        .arg("--audit-pub")
        .arg(keys::audit_public_path());
    cmd
}

/// `cargo xtask serve`: builds everything and runs `see up` with the arguments after `--`
/// (default: `--listen 127.0.0.1:8080`).
pub fn serve(args: &[String]) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    build_service()?;
    let see = image::target_dir().join("release/see");
    let mut cmd = Command::new(&see);
    cmd.current_dir(repo_root())
        .arg("up")
        .arg("--vmm")
        .arg(&vmm)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--key")
        .arg(keys::secret_key_path())
        .arg("--audit-key")
        .arg(keys::audit_key_path());
    if args.is_empty() {
        cmd.args(["--listen", "127.0.0.1:8080"]);
    }
    cmd.args(wasm_task_args(args)?);
    eprintln!("xtask: == run {} up", see.display());
    let status = cmd
        .args(args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", see.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("see up failed ({status})"))
    }
}
