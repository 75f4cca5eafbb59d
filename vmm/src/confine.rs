//! The VMM's confinement (SECURITY.md): what each of its threads may do, in
//! Landlock file rules and seccomp allow lists built with [`see_sandbox`].
//!
//! The VMM has three kinds of thread. The main thread builds the VM, then runs the event loop
//! (the exit event and the vhost-user socket's hang-up) and at the end stops the vCPUs,
//! flushes the serial console and measures memory. Each vCPU thread runs `KVM_RUN` and emulates
//! the port I/O and MMIO the guest does, including the virtio-mmio transport, whose register
//! writes turn into vhost-user requests to the backend (the device's data path runs in the
//! backend process: the VMM has no device thread). The prefault thread, unless `--prefault
//! off`, populates guest RAM with `madvise` and ends ([`crate::prefault`]).
//!
//! The lists were found by running the VMM under `strace -f` on the guest image with and
//! without the prefetch device, and each group of syscalls says why it is there.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
};

use see_sandbox::{AllowList, Enforcement, FileRules, SandboxError, ThreadFilter};

use crate::config::{SerialOutput, VmConfig};

/// The KVM ioctl numbers the vCPU list names (kvm-ioctls keeps its own private).
mod kvm {
    #![allow(missing_docs)]
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, kvm_bindings::KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(
        KVM_GET_REGS,
        kvm_bindings::KVMIO,
        0x81,
        kvm_bindings::kvm_regs
    );
}

/// The compiled filters, one per kind of thread.
#[derive(Clone, Debug)]
pub struct ThreadFilters {
    /// Installed by each vCPU thread before its first `KVM_RUN`.
    pub vcpu: ThreadFilter,
    /// Installed by the main thread once every vCPU thread has started.
    pub main: ThreadFilter,
    /// Installed by the prefault thread before it touches guest memory.
    pub prefault: ThreadFilter,
}

impl ThreadFilters {
    /// Compiles the allow lists.
    pub fn compile() -> Result<Self, SandboxError> {
        Ok(Self {
            vcpu: vcpu_allow_list().compile()?,
            main: main_allow_list().compile()?,
            prefault: prefault_allow_list().compile()?,
        })
    }
}

/// The paths the VMM may open once Landlock is on: it reads the kernel image, writes the
/// serial file, and opens the KVM device read-write (ioctl included); with `boot_report` it
/// also reads its own /proc entries (smaps and status). The vhost-user socket needs no rule:
/// Landlock up to ABI 5 does not cover `connect` on a Unix socket.
pub fn file_rules(config: &VmConfig) -> FileRules {
    let mut rules = FileRules::new()
        .read_only(&config.kernel)
        .read_write(&config.kvm_device);
    if let SerialOutput::File(path) = &config.serial {
        rules = rules.read_write(path);
    }
    if config.measure_memory {
        rules = rules.read_only(own_proc_dir());
    }
    rules
}

/// This process's directory in /proc (what /proc/self points to now).
fn own_proc_dir() -> PathBuf {
    Path::new("/proc").join(std::process::id().to_string())
}

/// Syscalls every thread makes whatever it does.
fn common(list: AllowList) -> AllowList {
    use libc::*;
    // Memory: the allocator maps, grows, shrinks and trims its heaps, and a thread's end frees
    // its stacks; never with PROT_EXEC, so a compromised thread cannot make code.
    let no_exec = PROT_EXEC as u64;
    list.allow_arg_without(SYS_mmap, 2, no_exec)
        .allow_arg_without(SYS_mprotect, 2, no_exec)
        .allow(&[SYS_munmap, SYS_madvise, SYS_mremap])
        // Mutexes, condition variables and channels between the threads.
        .allow(&[SYS_futex])
        // Instant::now where the vDSO falls back to the syscall (boot progress times).
        .allow(&[SYS_clock_gettime])
        // Log lines to stderr, the serial console (file or stdout), eventfd signals (the exit
        // event, the device's interrupt).
        .allow(&[SYS_write])
        // Dropping an fd (a vCPU's at its thread's end, the VM's at the end of the run);
        // debug builds first check that it is open.
        .allow(&[SYS_close])
        .allow_arg(SYS_fcntl, 1, &[F_GETFD as u64])
        // A thread's end: Rust removes its signal stack and blocks signals, then exit.
        .allow(&[SYS_sigaltstack, SYS_rt_sigprocmask, SYS_exit])
        // Returning from a signal handler (the vCPU kick, SIGRTMIN).
        .allow(&[SYS_rt_sigreturn])
        // abort() on a fatal error: SIGABRT to the process itself.
        .allow(&[SYS_getpid, SYS_tgkill])
}

/// What a vCPU thread may do.
pub fn vcpu_allow_list() -> AllowList {
    use libc::*;
    common(AllowList::new("vcpu"))
        // Run the guest; read its registers to report a failure. No other KVM ioctl: the VM
        // and the vCPU were set up before the thread started.
        .allow_arg(
            SYS_ioctl,
            1,
            &[kvm::KVM_RUN(), kvm::KVM_GET_REGS()].map(u64::from),
        )
        // vhost-user requests when the guest's driver brings the device up or resets it
        // (eventfds and the shared window's memfd go as SCM_RIGHTS), and their replies.
        .allow(&[SYS_sendmsg, SYS_recvmsg])
}

/// What the prefault thread may do ([`crate::prefault`]): `madvise` on guest RAM and its own
/// end, which the common list covers, and nothing more.
pub fn prefault_allow_list() -> AllowList {
    common(AllowList::new("prefault"))
}

/// What the main thread may do once the vCPUs run.
pub fn main_allow_list() -> AllowList {
    use libc::*;
    common(AllowList::new("main"))
        // The event loop: wait, drain the exit eventfd, stop watching a hung-up socket.
        .allow(&[SYS_epoll_wait, SYS_epoll_ctl, SYS_read])
        // --boot-report reads /proc/self/{smaps,status} (Landlock allows nothing else).
        .allow(&[SYS_openat, SYS_statx])
        // The end of the process.
        .allow(&[SYS_exit_group])
}

/// Sets up the process's confinement before anything is opened: `no_new_privs`, then the
/// Landlock rules of [`file_rules`]; then checks seccomp and compiles the thread filters
/// (`None` when the kernel has no seccomp and `mode` lets the VMM run without it).
pub fn confine_process(
    config: &VmConfig,
    mode: Enforcement,
) -> Result<Option<ThreadFilters>, SandboxError> {
    see_sandbox::set_no_new_privs()?;
    if let SerialOutput::File(path) = &config.serial {
        // The rule names the file, so it must exist; the console truncates it later. A failure
        // here shows up, with its own message, when the console opens the file.
        let _ = OpenOptions::new().append(true).create(true).open(path);
    }
    let status = see_sandbox::restrict_files(&file_rules(config), mode)?;
    log::debug!("Landlock: {status:?}");
    if !see_sandbox::seccomp_available(mode)? {
        return Ok(None);
    }
    ThreadFilters::compile().map(Some)
}

/// The kinds of VMM thread, for the test hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread (event loop).
    Main,
    /// A vCPU thread.
    Vcpu,
}

/// The test hook's environment variable: `vcpu` or `main`.
#[cfg(feature = "test-hooks")]
pub const FORBIDDEN_SYSCALL_ENV: &str = "SEE_VMM_TEST_FORBIDDEN_SYSCALL";

/// Called by each thread where it installs its filter (also when it has none). With the
/// `test-hooks` feature and `SEE_VMM_TEST_FORBIDDEN_SYSCALL` naming this kind of thread, it
/// opens a TCP socket, which no list allows: the process must die with `SIGSYS`. Without the
/// feature it does nothing.
pub fn test_hook(thread: ThreadKind) {
    #[cfg(feature = "test-hooks")]
    {
        let wanted = match thread {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
        };
        if std::env::var(FORBIDDEN_SYSCALL_ENV).is_ok_and(|v| v == wanted) {
            log::warn!("test hook: the {wanted} thread calls socket(), which is off its list");
            // SAFETY: socket() takes integers only; the fd, if any, is leaked on purpose.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = thread;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_thread_may_exec_open_sockets_or_change_ids() {
        let forbidden = [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_ptrace,
            libc::SYS_setuid,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_memfd_create,
        ];
        for list in [vcpu_allow_list(), main_allow_list(), prefault_allow_list()] {
            for nr in forbidden {
                assert!(!list.contains(nr), "{} allows syscall {nr}", list.name());
            }
        }
        // Only vCPU threads touch KVM, only the main thread opens files.
        assert!(!main_allow_list().contains(libc::SYS_ioctl));
        assert!(!vcpu_allow_list().contains(libc::SYS_openat));
        for nr in [libc::SYS_ioctl, libc::SYS_openat, libc::SYS_sendmsg] {
            assert!(!prefault_allow_list().contains(nr), "prefault allows {nr}");
        }
        assert!(prefault_allow_list().contains(libc::SYS_madvise));
        ThreadFilters::compile().unwrap();
    }

    #[test]
    fn the_rules_name_the_kernel_the_device_and_the_serial_file() {
        let mut config = VmConfig::new("/k");
        config.serial = SerialOutput::File("/s".into());
        let rules = file_rules(&config);
        assert_eq!(
            rules,
            FileRules::new()
                .read_only("/k")
                .read_write("/dev/kvm")
                .read_write("/s")
        );
        config.measure_memory = true;
        assert_eq!(file_rules(&config), rules.read_only(own_proc_dir()));
    }
}
