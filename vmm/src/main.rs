//! `see-vmm`: boots a guest kernel (ELF with a PVH note) on KVM.
//!
//! Exit code: the guest's status from the exit port, 1 for a VMM error, 2 for a usage error
//! (see docs/ARCHITECTURE.md).
//!
//! Confinement (see `see_vmm::confine`): before anything is opened, no_new_privs and the
//! Landlock file rules; once the VM is built, the drop to `--user`; then each thread installs
//! its seccomp filter as it starts running guest-facing code. `--no-sandbox` turns all but
//! `--user` off, for debugging.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{builder::BoolishValueParser, ArgAction, Parser};
use see_sandbox::{Enforcement, UserSpec};
use see_vmm::{
    config::{DEFAULT_KVM_DEVICE, DEFAULT_MEMORY_MIB, DEFAULT_SHARED_MIB},
    confine,
    devices::legacy::{PROGRESS_ENTRY, PROGRESS_READY, PROGRESS_SELFTESTS},
    exit::VMM_ERROR_EXIT_CODE,
    virtio::prefetch,
    ExitReason, SerialOutput, Vm, VmConfig,
};

/// Boot a guest kernel on KVM through the PVH entry point.
#[derive(Debug, Parser)]
#[command(name = "see-vmm", version, about)]
struct Cli {
    /// The guest kernel: an ELF image with a PVH entry note.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Guest RAM in MiB (32 to 3072).
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Size of the shared window (the memory a device backend may see) in MiB (1 to 256).
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_SHARED_MIB)]
    shared_mem: u32,
    /// Kernel command line (space-separated key=value words).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Where the serial console goes: stdout, off or file:PATH.
    #[arg(long, value_name = "stdout|off|file:PATH", default_value = "stdout")]
    serial: SerialOutput,
    /// The KVM device node (for tests).
    #[arg(long, hide = true, default_value = DEFAULT_KVM_DEVICE)]
    kvm_device: PathBuf,
    /// Add the virtio-prefetch device (virtio-mmio slot 0, 0xd0000000, GSI 5), run by the
    /// vhost-user backend listening on this socket.
    #[arg(long, value_name = "PATH")]
    prefetch_socket: Option<PathBuf>,
    /// How long to retry connecting to the prefetch backend, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000, hide = true)]
    prefetch_connect_ms: u64,
    /// Populate guest RAM in the background once the guest reports ready, so that its first
    /// touch of a page does not wait for the host to allocate it (at the cost of all of
    /// --memory being resident): on or off.
    #[arg(long, value_name = "on|off", default_value = "on", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    prefault: bool,
    /// Back guest RAM with transparent huge pages where the host allows (MADV_HUGEPAGE), so
    /// that a first touch costs one fault per 2 MiB instead of one per 4 KiB: on or off.
    #[arg(long, value_name = "on|off", default_value = "on", action = ArgAction::Set,
          value_parser = BoolishValueParser::new())]
    huge_pages: bool,
    /// Print boot times and memory use to stderr at exit, as one `boot-report` line.
    #[arg(long)]
    boot_report: bool,
    /// When started as root, run as this user once the VM is built (NAME, NAME:GROUP or
    /// UID:GID; supplementary groups are cleared). Refused when not started as root, unless
    /// the VMM already runs as exactly that user and group.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<UserSpec>,
    /// Refuse to run when the kernel lacks Landlock (ABI 5) or seccomp, instead of warning and
    /// running less confined.
    #[arg(long, conflicts_with = "no_sandbox")]
    require_sandbox: bool,
    /// FOR DEBUGGING ONLY: run unconfined (no no_new_privs, Landlock or seccomp), e.g. to
    /// attach a debugger or find a syscall missing from a thread's list. --user still applies.
    #[arg(long)]
    no_sandbox: bool,
}

/// Prints `what` as a VMM error and gives the VMM's error exit code.
fn fail(what: impl std::fmt::Display) -> ExitCode {
    eprintln!("see-vmm: error: {what}");
    ExitCode::from(VMM_ERROR_EXIT_CODE)
}

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    let config = VmConfig {
        kernel: cli.kernel,
        memory_mib: cli.memory,
        cpus: cli.cpus,
        shared_mem_mib: cli.shared_mem,
        cmdline: cli.cmdline,
        serial: cli.serial,
        kvm_device: cli.kvm_device,
        measure_memory: cli.boot_report,
        prefault: cli.prefault,
        huge_pages: cli.huge_pages,
    };
    // Names are looked up before Landlock hides the user database.
    let credentials = match cli.user.as_ref().map(UserSpec::resolve).transpose() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(Err(e)) = credentials.map(see_sandbox::check_drop) {
        return fail(e);
    }
    let filters = if cli.no_sandbox {
        log::warn!("--no-sandbox: running without no_new_privs, Landlock or seccomp");
        None
    } else {
        let mode = Enforcement::from_require(cli.require_sandbox);
        match confine::confine_process(&config, mode) {
            Ok(filters) => filters,
            Err(e) => return fail(e),
        }
    };
    let mut vm = match Vm::new(config, start) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("see-vmm: error: {e}");
            return ExitCode::from(VMM_ERROR_EXIT_CODE);
        }
    };
    if let Some(socket) = &cli.prefetch_socket {
        let timeout = Duration::from_millis(cli.prefetch_connect_ms);
        if let Err(e) = prefetch::attach(&mut vm, socket, timeout) {
            eprintln!("see-vmm: error: virtio-prefetch: {e}");
            return ExitCode::from(VMM_ERROR_EXIT_CODE);
        }
    }
    // Everything root may be needed for (the KVM device, the files, the socket) is open now.
    if let Some(credentials) = credentials {
        if let Err(e) = see_sandbox::drop_privileges(credentials) {
            return fail(e);
        }
    }
    if let Some(filters) = filters {
        vm.confine_threads(filters);
    }
    let outcome = match vm.run() {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("see-vmm: error: {e}");
            return ExitCode::from(VMM_ERROR_EXIT_CODE);
        }
    };
    match &outcome.reason {
        ExitReason::Guest(_) => {}
        ExitReason::TripleFault { vcpu } => eprintln!(
            "see-vmm: vCPU {vcpu} triple-faulted: the guest hit an exception it could not handle"
        ),
        ExitReason::VcpuError { vcpu, message } => {
            eprintln!("see-vmm: error: vCPU {vcpu}: {message}")
        }
    }
    if cli.boot_report {
        let us = |code| {
            outcome
                .progress_at(code)
                .map_or_else(|| "-".to_string(), |d| d.as_micros().to_string())
        };
        let mem = outcome.memory.unwrap_or_default();
        eprintln!(
            "see-vmm: boot-report entry_us={} ready_us={} selftests_us={} exit_us={} exit_code={} rss_kib={} peak_kib={} guest_kib={} overhead_kib={}",
            us(PROGRESS_ENTRY),
            us(PROGRESS_READY),
            us(PROGRESS_SELFTESTS),
            outcome.ended_at.as_micros(),
            outcome.exit_code(),
            mem.rss_kib,
            mem.peak_kib,
            mem.guest_kib,
            mem.overhead_kib(),
        );
    }
    ExitCode::from(outcome.exit_code())
}
