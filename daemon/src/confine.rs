//! The daemon's confinement (SECURITY.md): the Landlock file rules and the seccomp
//! allow list of each kind of thread, built with [`see_sandbox`].
//!
//! `see-daemon` (its `main`) applies them in this order: it fills the store while it is still
//! unconfined and single-threaded ([`prepare`]), sets `no_new_privs` and the Landlock rules of
//! [`file_rules`], drops to `--user` when root, then [`crate::start_confined`] starts the
//! threads, each installing the filter of its kind as it starts ([`ThreadFilters::install`]):
//!
//! - `http`: the front door's tokio workers (accept, read and write connections);
//! - `engine`: the PTO (SQLite history, audit log, store reads, orders to the backend);
//! - `events`: the thread moving device events to the engine;
//! - `vhost`: the backend thread that accepts the VMM and the vhost-user protocol thread it
//!   starts (the only list that may create threads: that one);
//! - `device`: the device thread that reads the guest's queues;
//! - `fetch`: the fetch pool's workers (store reads, the modelled origin's sleeps);
//! - `seal`: the sealing thread (signs bundles);
//! - `main`: installed once every other thread runs; it waits for SIGINT/SIGTERM and stops
//!   the daemon.
//!
//! No list allows exec, `ptrace`, changing ids, mounting or making executable memory; only
//! `main` may open a socket (a Unix one, to wake the backend at shutdown). Anything else kills
//! the daemon with `SIGSYS`. The lists were found by running the daemon's tests and the demo
//! under `strace -f`; each group says why it is there.

use std::path::{Path, PathBuf};

use see_prefetch_backend::BackendThread;
use see_sandbox::{AllowList, Enforcement, FileRules, SandboxError, ThreadFilter};

use crate::{config::Listen, Config};

/// The kinds of daemon thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread, once everything runs.
    Main,
    /// The front door's async workers.
    Http,
    /// The PTO engine.
    Engine,
    /// The device-event forwarder.
    Events,
    /// The backend's vhost-user threads.
    Vhost,
    /// The backend's device thread.
    Device,
    /// A fetch pool worker.
    Fetch,
    /// The sealing thread.
    Seal,
}

impl ThreadKind {
    /// Its name in logs and in the test hook's variable.
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Http => "http",
            Self::Engine => "engine",
            Self::Events => "events",
            Self::Vhost => "vhost",
            Self::Device => "device",
            Self::Fetch => "fetch",
            Self::Seal => "seal",
        }
    }

    /// Every kind.
    pub const ALL: [ThreadKind; 8] = [
        Self::Main,
        Self::Http,
        Self::Engine,
        Self::Events,
        Self::Vhost,
        Self::Device,
        Self::Fetch,
        Self::Seal,
    ];
}

impl From<BackendThread> for ThreadKind {
    fn from(t: BackendThread) -> Self {
        match t {
            BackendThread::Vhost => Self::Vhost,
            BackendThread::Device => Self::Device,
            BackendThread::Fetch => Self::Fetch,
            BackendThread::Seal => Self::Seal,
        }
    }
}

/// The compiled filters, one per kind of thread.
#[derive(Clone, Debug)]
pub struct ThreadFilters {
    filters: Vec<(ThreadKind, ThreadFilter)>,
}

impl ThreadFilters {
    /// Compiles every list.
    pub fn compile() -> Result<Self, SandboxError> {
        let filters = ThreadKind::ALL
            .into_iter()
            .map(|k| -> Result<_, SandboxError> { Ok((k, allow_list(k).compile()?)) })
            .collect::<Result<_, SandboxError>>()?;
        Ok(Self { filters })
    }

    /// Installs the filter of `kind` on the calling thread. A thread that cannot be confined
    /// must not run: the process aborts (the error is logged first).
    pub fn install(&self, kind: ThreadKind) {
        let Some((_, filter)) = self.filters.iter().find(|(k, _)| *k == kind) else {
            return;
        };
        if let Err(e) = filter.install() {
            log::error!("{e}: stopping rather than running unconfined");
            std::process::abort();
        }
        test_hook(kind);
    }
}

/// Installs the filter of `kind` when there are filters; runs the test hook either way.
pub(crate) fn enter(filters: Option<&ThreadFilters>, kind: ThreadKind) {
    match filters {
        Some(f) => f.install(kind),
        None => test_hook(kind),
    }
}

/// The directory a file lives in (`.` for a bare name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The paths the daemon may open once Landlock is on. It reads the store, its key, the audit
/// key and the catalogue, model, oracle and task module files it was given, and `/dev/urandom` (SQLite's
/// seed); it reads and writes the directories of the history (SQLite adds its journal beside
/// the database), of the audit log, of the vhost-user socket and of a Unix front door (it
/// creates and removes the sockets there).
pub fn file_rules(config: &Config) -> FileRules {
    let mut rules = FileRules::new()
        .read_only(&config.store)
        .read_only(&config.key)
        .read_only("/dev/urandom");
    for path in [
        &config.audit_key,
        &config.catalogue,
        &config.oracle_trace,
        &config.task_module,
    ]
    .into_iter()
    .flatten()
    {
        rules = rules.read_only(path);
    }
    // A checkpoint is a prefix (`model/lstm`): its files (`lstm.json`, the weights) sit
    // beside it, so its directory is what may be read.
    if let Some(model) = &config.model {
        rules = rules.read_only(dir_of(model));
    }
    rules = rules
        .read_write(dir_of(&config.history))
        .read_write(dir_of(&config.audit))
        .read_write(dir_of(&config.floors_file()))
        .read_write(dir_of(&config.socket));
    if let Listen::Unix(path) = &config.listen {
        rules = rules.read_write(dir_of(path));
    }
    rules
}

/// The work done before confinement, which needs more than the confined daemon may do: fills
/// the store with the catalogue's missing resources (the confined daemon only reads it) and
/// creates the directories the rules name.
pub fn prepare(config: &Config) -> Result<(), crate::DaemonError> {
    let cat = config.load_catalogue()?;
    let module = config.load_task_module(&cat)?;
    crate::guest::open_filled(&cat, &config.store, module.as_ref())?;
    let mut dirs = vec![
        dir_of(&config.history),
        dir_of(&config.audit),
        dir_of(&config.floors_file()),
        dir_of(&config.socket),
    ];
    if let Listen::Unix(path) = &config.listen {
        dirs.push(dir_of(path));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).map_err(|source| crate::DaemonError::Start {
            what: "a directory of the history, audit log or sockets",
            source,
        })?;
    }
    Ok(())
}

/// Sets `no_new_privs` and the Landlock rules of [`file_rules`]; checks seccomp and compiles
/// the thread filters (`None` when the kernel has no seccomp and `mode` lets the daemon run
/// without it). Call it while the process has one thread.
pub fn confine_process(
    config: &Config,
    mode: Enforcement,
) -> Result<Option<ThreadFilters>, SandboxError> {
    see_sandbox::set_no_new_privs()?;
    let status = see_sandbox::restrict_files(&file_rules(config), mode)?;
    log::debug!("Landlock: {status:?}");
    if !see_sandbox::seccomp_available(mode)? {
        return Ok(None);
    }
    ThreadFilters::compile().map(Some)
}

/// Syscalls every thread makes whatever it does.
fn common(list: AllowList) -> AllowList {
    use libc::*;
    let no_exec = PROT_EXEC as u64;
    // Memory: the allocator's heaps and arenas, a thread's stack at its end; never PROT_EXEC.
    list.allow_arg_without(SYS_mmap, 2, no_exec)
        .allow_arg_without(SYS_mprotect, 2, no_exec)
        .allow(&[SYS_munmap, SYS_madvise, SYS_mremap, SYS_brk])
        // Locks, condition variables, channels, parking.
        .allow(&[SYS_futex, SYS_sched_yield])
        // Time and sleeps (Instant::now without the vDSO, the modelled origin, back-offs).
        .allow(&[SYS_clock_gettime, SYS_clock_nanosleep, SYS_nanosleep])
        // Log lines to stderr; eventfd wake-ups (read to drain, write to signal).
        .allow(&[SYS_write, SYS_writev, SYS_read])
        // Dropping fds; debug builds check an fd is open.
        .allow(&[SYS_close])
        .allow_arg(SYS_fcntl, 1, &[F_GETFD as u64, F_GETFL as u64])
        // A std HashMap's keys (per thread), ECDSA nonces' extra entropy.
        .allow(&[SYS_getrandom])
        // A thread's end; signal returns; abort() on a fatal error.
        .allow(&[
            SYS_sigaltstack,
            SYS_rt_sigprocmask,
            SYS_exit,
            SYS_rt_sigreturn,
        ])
        .allow(&[SYS_getpid, SYS_gettid, SYS_tgkill])
        // std's available_parallelism (the CPUs this thread may run on), which thread pools
        // ask as they size themselves: it reads the affinity mask, it cannot change it.
        .allow(&[SYS_sched_getaffinity])
}

/// Reading files beneath the Landlock rules.
fn read_files(list: AllowList) -> AllowList {
    use libc::*;
    list.allow(&[SYS_openat, SYS_statx, SYS_newfstatat, SYS_fstat, SYS_lseek])
        .allow(&[SYS_pread64])
}

/// The allow list of `kind`.
pub fn allow_list(kind: ThreadKind) -> AllowList {
    use libc::*;
    let list = common(AllowList::new(kind.name()));
    match kind {
        ThreadKind::Main => list
            // Waits for SIGINT/SIGTERM in the async runtime and stops it.
            .allow(&[SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_ctl])
            // The shutdown: wake the backend's accept with a connect on its Unix socket,
            // close the vhost-user connection, remove the sockets.
            .allow_arg(SYS_socket, 0, &[AF_UNIX as u64])
            .allow(&[SYS_connect, SYS_shutdown, SYS_unlink, SYS_unlinkat])
            // What main writes on those Unix sockets (send(), which is sendto).
            .allow(&[SYS_sendto])
            .allow(&[SYS_exit_group]),
        ThreadKind::Http => list
            // The tokio reactor and the connections it accepts.
            .allow(&[SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_ctl])
            .allow(&[
                SYS_accept4,
                SYS_recvfrom,
                SYS_sendto,
                SYS_recvmsg,
                SYS_sendmsg,
            ])
            .allow(&[SYS_shutdown, SYS_setsockopt, SYS_getsockopt])
            .allow(&[SYS_getsockname, SYS_getpeername]),
        ThreadKind::Engine => read_files(list)
            // The SQLite history and the audit log: files and journals in their directories,
            // locks, syncs.
            .allow(&[SYS_pwrite64, SYS_fsync, SYS_fdatasync, SYS_ftruncate])
            .allow(&[
                SYS_unlink,
                SYS_unlinkat,
                SYS_fchmod,
                SYS_fchown,
                SYS_geteuid,
            ])
            .allow(&[
                SYS_access,
                SYS_faccessat,
                SYS_faccessat2,
                SYS_getcwd,
                SYS_readlink,
            ])
            .allow_arg(
                SYS_fcntl,
                1,
                &[
                    F_SETLK,
                    F_SETLKW,
                    F_GETLK,
                    F_SETFD,
                    F_SETFL,
                    F_OFD_SETLK,
                    F_OFD_GETLK,
                ]
                .map(|c| c as u64),
            ),
        ThreadKind::Events => list
            // The device thread's epoll loop (queue kicks, commands, finished work).
            .allow(&[SYS_epoll_wait, SYS_epoll_pwait]),
        ThreadKind::Seal => read_files(list)
            .allow(&[SYS_epoll_wait, SYS_epoll_pwait])
            // The signer's client: a Unix stream to see-signer's socket, (re)connected as
            // needed, with read and write timeouts.
            .allow_arg(SYS_socket, 0, &[AF_UNIX as u64])
            .allow(&[SYS_connect, SYS_sendto, SYS_recvfrom])
            .allow_arg(SYS_setsockopt, 2, &[SO_RCVTIMEO as u64, SO_SNDTIMEO as u64]),
        ThreadKind::Device => read_files(list)
            .allow(&[SYS_epoll_wait, SYS_epoll_pwait])
            // Raising a version floor when a version is first signed: the floors file is
            // rewritten beside itself, synced and renamed over (Landlock limits this to the
            // floors file's directory).
            .allow(&[SYS_fsync, SYS_rename, SYS_renameat, SYS_renameat2]),
        ThreadKind::Fetch => read_files(list),
        // std's available_parallelism reads the cgroup's CPU quota files in whichever thread
        // asks first (the model's thread pool, sized on first use): Landlock keeps those
        // reads to what the rules name, so opening is allowed and denied reads are harmless.
        ThreadKind::Vhost => read_files(list)
            // Accepts the VMM, then speaks vhost-user: messages with fds, the shared window's
            // memfd mapped (MAP_SHARED, never executable), the queues' eventfds in the device
            // thread's epoll set, the connection closed at the end.
            .allow(&[
                SYS_accept4,
                SYS_accept,
                SYS_recvmsg,
                SYS_sendmsg,
                SYS_shutdown,
            ])
            .allow(&[SYS_epoll_ctl, SYS_fstat, SYS_statx, SYS_newfstatat])
            // The listener removes its socket file when it drops (Landlock: the socket's
            // directory only).
            .allow(&[SYS_unlink, SYS_unlinkat])
            .allow_arg(
                SYS_fcntl,
                1,
                &[F_DUPFD_CLOEXEC as u64, F_SETFL as u64, F_SETFD as u64],
            )
            // The protocol thread, started once the VMM is in: pthread_create and the new
            // thread's set-up (robust list, rseq, its name).
            .allow(&[SYS_clone3, SYS_set_robust_list, SYS_rseq])
            // std's set_nonblocking on the socket.
            .allow_arg(SYS_ioctl, 1, &[FIONBIO])
            .allow_arg_with(SYS_clone, 0, CLONE_THREAD as u64)
            .allow_arg(SYS_prctl, 0, &[PR_SET_NAME as u64]),
    }
}

/// The test hook's environment variable: a thread kind's name.
#[cfg(feature = "test-hooks")]
pub const FORBIDDEN_SYSCALL_ENV: &str = "SEE_DAEMON_TEST_FORBIDDEN_SYSCALL";
/// The test hook's environment variable: a path the main thread tries to read once confined.
#[cfg(feature = "test-hooks")]
pub const READ_PATH_ENV: &str = "SEE_DAEMON_TEST_READ";

/// Called by each thread where it installs its filter (also when it has none). With the
/// `test-hooks` feature and `SEE_DAEMON_TEST_FORBIDDEN_SYSCALL` naming this kind of thread,
/// it opens a TCP socket, which no list allows: the daemon must die with `SIGSYS`. Without
/// the feature it does nothing.
pub fn test_hook(kind: ThreadKind) {
    #[cfg(feature = "test-hooks")]
    {
        if std::env::var(FORBIDDEN_SYSCALL_ENV).is_ok_and(|v| v == kind.name()) {
            log::warn!(
                "test hook: the {} thread calls socket(), which is off its list",
                kind.name()
            );
            // SAFETY: socket() takes integers only; the fd, if any, is leaked on purpose.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = kind;
}

/// With the `test-hooks` feature and `SEE_DAEMON_TEST_READ` set, the main thread reads that
/// path once confined and logs what happened (`test hook: read PATH: ...`). Without the
/// feature it does nothing.
pub fn read_hook() {
    #[cfg(feature = "test-hooks")]
    {
        if let Some(path) = std::env::var_os(READ_PATH_ENV) {
            match std::fs::read(&path) {
                Ok(bytes) => log::warn!(
                    "test hook: read {}: {} bytes",
                    Path::new(&path).display(),
                    bytes.len()
                ),
                Err(e) => log::warn!("test hook: read {}: {e}", Path::new(&path).display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_thread_may_exec_trace_or_change_ids_and_only_vhost_makes_threads() {
        let forbidden = [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_setuid,
            libc::SYS_setresuid,
            libc::SYS_mount,
            libc::SYS_memfd_create,
            libc::SYS_process_vm_writev,
        ];
        for kind in ThreadKind::ALL {
            let list = allow_list(kind);
            for nr in forbidden {
                assert!(!list.contains(nr), "{} allows syscall {nr}", list.name());
            }
            if kind != ThreadKind::Vhost {
                assert!(!list.contains(libc::SYS_clone3), "{}", list.name());
                assert!(!list.contains(libc::SYS_clone), "{}", list.name());
            }
            // Main wakes the backend at shutdown; the sealing thread reaches the signer.
            if kind != ThreadKind::Main && kind != ThreadKind::Seal {
                assert!(!list.contains(libc::SYS_socket), "{}", list.name());
                assert!(!list.contains(libc::SYS_connect), "{}", list.name());
            }
        }
        // Only the threads that read files open them; the guest-facing ones do not, but for
        // the device thread, which rewrites the floors file (Landlock keeps it to that file's
        // directory) and may still neither delete nor link anything.
        assert!(!allow_list(ThreadKind::Http).contains(libc::SYS_openat));
        let device = allow_list(ThreadKind::Device);
        for nr in [
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_link,
            libc::SYS_linkat,
        ] {
            assert!(
                !device.contains(nr),
                "the device thread allows syscall {nr}"
            );
        }
        ThreadFilters::compile().unwrap();
    }

    #[test]
    fn the_rules_name_the_store_the_keys_and_the_writable_directories() {
        let config = Config {
            store: "/s".into(),
            key: "/k/pto.pem".into(),
            audit_key: Some("/k/audit.pem".into()),
            history: "/h/history.sqlite".into(),
            audit: "/a/audit.jsonl".into(),
            floors: "/f/floors.json".into(),
            socket: "/r/prefetch.sock".into(),
            listen: Listen::Unix("/l/front.sock".into()),
            ..Config::default()
        };
        assert_eq!(
            file_rules(&config),
            FileRules::new()
                .read_only("/s")
                .read_only("/k/pto.pem")
                .read_only("/dev/urandom")
                .read_only("/k/audit.pem")
                .read_write("/h")
                .read_write("/a")
                .read_write("/f")
                .read_write("/r")
                .read_write("/l")
        );
        assert_eq!(dir_of(Path::new("history.sqlite")), PathBuf::from("."));
    }
}
