//! The signer's confinement, built with `see-sandbox` as the VMM's is: Landlock lets it read
//! its key and its store and write its audit log, nothing else; each thread installs a seccomp
//! allow list before it touches a connection.
//!
//! Two kinds of thread: the accepting (main) thread polls the listening socket, accepts, and
//! at shutdown closes the audit log; a worker reads requests, reads the store, signs, appends
//! to the audit log and writes replies. Neither may create threads or processes, open
//! sockets, exec, or map executable memory. The lists were found with `strace -f` on the
//! signer's tests.

use std::path::Path;

use see_sandbox::{AllowList, Enforcement, FileRules, SandboxError, ThreadFilter};

/// The paths the signer may open once Landlock is on.
pub fn file_rules(key: &Path, store: &Path, audit: &Path) -> FileRules {
    FileRules::new()
        .read_only(key)
        .read_only(store)
        .read_write(audit)
}

/// Syscalls both kinds of thread make.
fn common(list: AllowList) -> AllowList {
    use libc::*;
    // The allocator, never with PROT_EXEC.
    let no_exec = PROT_EXEC as u64;
    list.allow_arg_without(SYS_mmap, 2, no_exec)
        .allow_arg_without(SYS_mprotect, 2, no_exec)
        .allow(&[SYS_munmap, SYS_madvise, SYS_mremap, SYS_brk])
        // At shutdown, whichever thread drops the key last zeroizes and unlocks its page.
        .allow(&[SYS_munlock])
        // Locks and channels between the threads; the clocks (rate limits, audit times).
        .allow(&[SYS_futex, SYS_clock_gettime])
        // Log lines to stderr; the audit log's records and fsyncs; dropping fds.
        .allow(&[SYS_write, SYS_fsync, SYS_fdatasync, SYS_close])
        .allow_arg(
            SYS_fcntl,
            1,
            &[F_GETFD as u64, F_GETFL as u64, F_SETFL as u64],
        )
        // A thread's end, a signal's return, abort().
        .allow(&[
            SYS_sigaltstack,
            SYS_rt_sigprocmask,
            SYS_rt_sigreturn,
            SYS_exit,
        ])
        .allow(&[SYS_getpid, SYS_gettid, SYS_tgkill])
}

/// What a worker may do.
pub fn worker_allow_list() -> AllowList {
    use libc::*;
    common(AllowList::new("signer-worker"))
        // Requests in, replies out.
        .allow(&[SYS_read, SYS_recvfrom, SYS_sendto])
        // The store: its index and objects (and the index's mtime); Landlock limits the paths.
        .allow(&[SYS_openat, SYS_statx, SYS_newfstatat, SYS_fstat, SYS_lseek])
        // DiskStore::open makes sure the objects directory exists (it does: EEXIST).
        .allow(&[SYS_mkdir, SYS_mkdirat])
}

/// What the accepting thread may do.
pub fn accept_allow_list() -> AllowList {
    use libc::*;
    common(AllowList::new("signer-accept"))
        .allow(&[SYS_accept4, SYS_poll, SYS_ppoll])
        .allow_arg(SYS_ioctl, 1, &[FIONBIO])
        .allow(&[SYS_exit_group])
}

/// The compiled filters.
#[derive(Clone, Debug)]
pub struct Filters {
    /// Installed by each worker before it serves.
    pub worker: ThreadFilter,
    /// Installed by the main thread once the workers run.
    pub accept: ThreadFilter,
}

/// The environment variable that names the thread (`worker` or `accept`) the test hook makes
/// call a forbidden syscall.
#[cfg(feature = "test-hooks")]
pub const FORBIDDEN_SYSCALL_ENV: &str = "SEE_SIGNER_TEST_FORBIDDEN_SYSCALL";

/// Called by each thread right after it installs its filter. With the `test-hooks` feature
/// and `SEE_SIGNER_TEST_FORBIDDEN_SYSCALL` naming `thread`, it opens a TCP socket, which no
/// list allows: the process must die with `SIGSYS`. Without the feature it does nothing.
pub fn test_hook(thread: &str) {
    #[cfg(feature = "test-hooks")]
    if std::env::var(FORBIDDEN_SYSCALL_ENV).is_ok_and(|v| v == thread) {
        log::warn!("test hook: the {thread} thread calls socket(), which is off its list");
        // SAFETY: socket() takes integers only; the fd, if any, is leaked on purpose.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = thread;
}

/// no_new_privs and Landlock on the process (call while it has one thread); then checks
/// seccomp and compiles the filters (`None` when the kernel has no seccomp and `mode` lets
/// the signer run without it).
pub fn confine_process(
    rules: &FileRules,
    mode: Enforcement,
) -> Result<Option<Filters>, SandboxError> {
    see_sandbox::set_no_new_privs()?;
    let status = see_sandbox::restrict_files(rules, mode)?;
    log::debug!("Landlock: {status:?}");
    if !see_sandbox::seccomp_available(mode)? {
        return Ok(None);
    }
    Ok(Some(Filters {
        worker: worker_allow_list().compile()?,
        accept: accept_allow_list().compile()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_signer_thread_may_exec_fork_open_sockets_or_change_ids() {
        let forbidden = [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_fork,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_ptrace,
            libc::SYS_setuid,
            libc::SYS_prctl,
            libc::SYS_memfd_create,
        ];
        for list in [worker_allow_list(), accept_allow_list()] {
            for nr in forbidden {
                assert!(!list.contains(nr), "{} allows syscall {nr}", list.name());
            }
            list.compile().unwrap();
        }
        // Only workers open files; only the accepting thread accepts.
        assert!(!accept_allow_list().contains(libc::SYS_openat));
        assert!(!worker_allow_list().contains(libc::SYS_accept4));
    }
}
