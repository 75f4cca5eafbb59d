//! Helpers for the end-to-end tests: find (or build, once) the release `see-vmm` binary and the
//! guest image, decide whether KVM tests run, and run the VMM with a deadline.
//!
//! `cargo xtask test` builds the artefacts first and passes them in `SEE_VMM_BIN`,
//! `SEE_KERNEL_IMAGE` and `SEE_TEST_KERNEL_IMAGE` (the test image); without those variables the first test that needs them builds them with
//! nested cargo (`--release`, a different profile directory than the test build).

#![warn(missing_docs)]

pub mod guest;
pub mod profile;
pub mod rig;
pub mod task_host;

use std::{
    io::Read,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{mpsc, OnceLock},
    time::Duration,
};

/// How long one VMM run may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is one level below the root")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build(what: &str, cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(status.success(), "building {what} failed ({status})");
}

/// The release `see-vmm` binary.
pub fn vmm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("SEE_VMM_BIN") {
            return PathBuf::from(path);
        }
        build(
            "see-vmm",
            cargo().current_dir(repo_root()).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-vmm",
            ]),
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => repo_root().join(dir),
            None => repo_root().join("target"),
        };
        target.join("release/see-vmm")
    })
}

/// The release `see-prefetch-backend` binary (for the tests that kill it with SIGKILL):
/// `SEE_BACKEND_BIN`, or built once with nested cargo.
pub fn backend_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("SEE_BACKEND_BIN") {
            return PathBuf::from(path);
        }
        build(
            "see-prefetch-backend",
            cargo().current_dir(repo_root()).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-prefetch-backend",
            ]),
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => repo_root().join(dir),
            None => repo_root().join("target"),
        };
        target.join("release/see-prefetch-backend")
    })
}

/// The release `see-daemon` binary, built alone so that no test feature is unified into it:
/// `SEE_RELEASE_DAEMON_BIN`, or built once with nested cargo.
pub fn daemon_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("SEE_RELEASE_DAEMON_BIN") {
            return PathBuf::from(path);
        }
        build(
            "see-daemon",
            cargo().current_dir(repo_root()).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-daemon",
            ]),
        );
        // The demo starts the signer found beside the daemon.
        signer_bin();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => repo_root().join(dir),
            None => repo_root().join("target"),
        };
        target.join("release/see-daemon")
    })
}

/// The release `see-signer` binary, built alone (it goes beside `see-daemon`, where the demo
/// looks for it): `SEE_SIGNER_BIN`, or built once with nested cargo.
pub fn signer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("SEE_SIGNER_BIN") {
            return PathBuf::from(path);
        }
        build(
            "see-signer",
            cargo().current_dir(repo_root()).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-signer",
            ]),
        );
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
            Some(dir) => repo_root().join(dir),
            None => repo_root().join("target"),
        };
        target.join("release/see-signer")
    })
}

/// The guest kernel image (the default image: no test ops).
pub fn kernel_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| guest_image("SEE_KERNEL_IMAGE", None))
}

/// The test image: the guest kernel with the `test-ops` feature (the serve app's hostile ops,
/// `OP_BAD_DESCRIPTOR` and `OP_VICTIM`), built in its own target directory.
pub fn test_kernel_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| guest_image("SEE_TEST_KERNEL_IMAGE", Some("test-ops")))
}

/// The image named in `variable`, or one built with nested cargo (with `feature`, in
/// `target/<feature>` then).
fn guest_image(variable: &str, feature: Option<&str>) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let dir = repo_root().join("images/see-kernel");
    let mut command = cargo();
    command
        .current_dir(&dir)
        .args(["build", "--release", "--locked"])
        .env("SEE_PTO_VERIFYING_KEY", &pto_keys().1)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    let target = match feature {
        Some(feature) => {
            let target = format!("target/{feature}");
            command.args(["--features", feature, "--target-dir", &target]);
            dir.join(target)
        }
        None => dir.join("target"),
    };
    build("the guest image", &mut command);
    target.join("x86_64-unknown-none/release/see-kernel")
}

/// The development audit key pair (secret PEM, public SEC1) that signs and checks the audit
/// logs' checkpoints; `cargo xtask keys` creates it with the PTO's pair.
pub fn audit_keys() -> (PathBuf, PathBuf) {
    // Creates both pairs when either is missing (unless SEE_PTO_SIGNING_KEY names the PTO's).
    pto_keys();
    let dir = repo_root().join("target/see-keys");
    (dir.join("audit.key"), dir.join("audit.pub"))
}

/// The development key pair the guest image embeds (secret PEM, verifying SEC1), created by
/// `cargo xtask keys` on first use. `SEE_PTO_SIGNING_KEY` names another secret key; the image
/// must then have been built with its verifying key.
pub fn pto_keys() -> &'static (PathBuf, PathBuf) {
    static KEYS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = repo_root().join("target/see-keys");
        let pair = (dir.join("pto.key"), dir.join("pto.pub"));
        if let Some(secret) = std::env::var_os("SEE_PTO_SIGNING_KEY") {
            return (PathBuf::from(secret), pair.1);
        }
        let files = [
            &pair.0,
            &pair.1,
            &dir.join("audit.key"),
            &dir.join("audit.pub"),
        ];
        if files.iter().any(|f| !f.is_file()) {
            build(
                "the development keys",
                cargo()
                    .current_dir(repo_root())
                    .args(["run", "--locked", "-q", "-p", "xtask", "--", "keys"]),
            );
        }
        pair
    })
}

/// Whether KVM tests run: true if /dev/kvm can be opened read-write. Without it the test is
/// skipped (returns false) unless `SEE_REQUIRE_KVM` is set, when the test fails.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) if std::env::var_os("SEE_REQUIRE_KVM").is_some() => {
            panic!("SEE_REQUIRE_KVM is set but /dev/kvm cannot be opened: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: /dev/kvm cannot be opened ({e}); set SEE_REQUIRE_KVM=1 to fail instead"
            );
            false
        }
    }
}

/// QEMU's x86_64 system emulator, for the tests that boot the image on another PVH loader:
/// `SEE_QEMU_BIN`, or `qemu-system-x86_64` on the PATH (`cargo xtask test` installs Debian's
/// `qemu-system-x86` when it is missing). None (the test is skipped) when there is none,
/// unless `SEE_REQUIRE_KVM` is set, when the test fails.
pub fn qemu_bin() -> Option<PathBuf> {
    let found = match std::env::var_os("SEE_QEMU_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("qemu-system-x86_64"))
                .find(|p| p.is_file())
        }),
    };
    match found {
        Some(path) if path.is_file() => Some(path),
        other => {
            let why = match other {
                Some(path) => format!("{} does not exist", path.display()),
                None => "qemu-system-x86_64 is not on the PATH".into(),
            };
            assert!(
                std::env::var_os("SEE_REQUIRE_KVM").is_none(),
                "SEE_REQUIRE_KVM is set but {why}: install qemu-system-x86 (cargo xtask test does)"
            );
            eprintln!("skipped: {why}; install qemu-system-x86 or set SEE_QEMU_BIN");
            None
        }
    }
}

/// How a VMM run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output (the serial console by default).
    pub stdout: String,
    /// Standard error (the VMM's messages).
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code (one of `see_abi::exit`'s), showing both streams on failure.
    pub fn assert_code(&self, code: u8) -> &Self {
        assert_eq!(
            self.code,
            Some(i32::from(code)),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the VMM panicked:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stdout has a line containing `text`.
    pub fn assert_stdout(&self, text: &str) -> &Self {
        assert!(
            self.stdout.lines().any(|l| l.contains(text)),
            "stdout lacks {text:?}:\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that stderr contains `text`.
    pub fn assert_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Whether this process runs as root (so file permissions alone do not stop it).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A see-vmm invocation.
#[derive(Debug)]
pub struct Vmm {
    cmd: Command,
}

impl Vmm {
    /// `see-vmm` with no arguments.
    pub fn bare(binary: &Path) -> Self {
        let mut cmd = Command::new(binary);
        cmd.env("RUST_LOG", "warn");
        Self { cmd }
    }

    /// `see-vmm --kernel <the guest image>`.
    pub fn boot() -> Self {
        Self::bare(vmm_bin()).arg("--kernel").arg(kernel_image())
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Sets an environment variable of the VMM (e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    /// Runs as user and group `nobody` when the tests run as root, so that a file's permission
    /// bits take effect (root ignores them).
    pub fn unprivileged(mut self) -> Self {
        if is_root() {
            self.cmd.uid(65534).gid(65534);
        }
        self
    }

    /// The command, for callers that run it themselves ([`guest::Guest`]).
    pub fn into_command(self) -> Command {
        self.cmd
    }

    /// Runs to completion, failing the test if it takes longer than [`DEADLINE`].
    pub fn run(mut self) -> Outcome {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A binary just copied into a sandbox can be briefly "busy": another test thread's fork
        // may hold the copy's write descriptor until that child execs (it is close-on-exec).
        let busy_until = std::time::Instant::now() + Duration::from_secs(5);
        let mut child = loop {
            match self.cmd.spawn() {
                Ok(child) => break child,
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY)
                        && std::time::Instant::now() < busy_until =>
                {
                    std::thread::yield_now()
                }
                Err(e) => panic!("cannot start {:?}: {e}", self.cmd.get_program()),
            }
        };
        let pid = child.id();
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stdout, mut stderr) = (String::new(), String::new());
            let reader = std::thread::spawn(move || {
                let _ = err.read_to_string(&mut stderr);
                stderr
            });
            let _ = out.read_to_string(&mut stdout);
            let stderr = reader.join().unwrap_or_default();
            let status = child.wait();
            let _ = tx.send((status, stdout, stderr));
        });
        match rx.recv_timeout(DEADLINE) {
            Ok((status, stdout, stderr)) => Outcome {
                code: status.expect("wait for see-vmm").code(),
                stdout,
                stderr,
            },
            Err(_) => {
                // SAFETY: kill(2) on the child's pid (not yet reaped: the waiter has not
                // returned) with a valid signal.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!(
                    "{:?} did not finish within {DEADLINE:?}",
                    self.cmd.get_program()
                );
            }
        }
    }
}

/// A world-readable temporary directory holding copies of the VMM and the guest image, for
/// runs as an unprivileged user (who may not reach the build directories).
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Copies the VMM and the image into a fresh directory (mode 0755).
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(vmm_bin(), dir.path().join("see-vmm")).expect("copy see-vmm");
        std::fs::copy(kernel_image(), dir.path().join("see-kernel")).expect("copy the image");
        std::fs::set_permissions(
            dir.path().join("see-kernel"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Self { dir }
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file with the given permission bits.
    pub fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// The sandboxed VMM, unprivileged, with `--kernel <kernel>`.
    pub fn vmm(&self, kernel: &Path) -> Vmm {
        Vmm::bare(&self.path("see-vmm"))
            .unprivileged()
            .arg("--kernel")
            .arg(kernel)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A minimal ELF64 x86_64 executable without a PVH note: one loadable segment at 1 MiB.
pub fn elf_without_pvh_note() -> Vec<u8> {
    let mut f = vec![0u8; 0x110];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut f[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&0x100u64.to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&0x10u64.to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&0x10u64.to_le_bytes()); // p_memsz
    f[0x100..0x110].fill(0xf4); // hlt
    f
}
