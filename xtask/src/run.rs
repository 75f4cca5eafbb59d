//! `cargo xtask run`: builds the guest image and the VMM, boots the image and reports how the
//! VM ended.

use std::process::Command;

use clap::Args;

use crate::image;

/// Options of `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Extra arguments for see-vmm (after `--`), e.g. `-- --cpus 2 --cmdline see.selftest=0`.
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
        _ => "status written by the guest",
    }
}

/// Builds, boots and reports.
pub fn run(args: &RunArgs) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
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
