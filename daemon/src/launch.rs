//! Starting an SEE with its PTO: the signer, the daemon and the VMM as three processes. The
//! signer first (it alone reads the PTO key; the daemon is pointed at its socket and never
//! opens the key), then the daemon (the VMM connects to its vhost-user socket), then the VMM
//! with the guest's command line for the daemon's configuration; ready once the guest's driver
//! is up. Without a signer binary the daemon holds the key itself (tests, development).
//! [`Launched`] watches them: when one dies the others are stopped and the caller learns which
//! and why; [`Launched::stop`] stops them cleanly (SIGTERM to the daemon, which tells the guest
//! to stop, then to the signer, which closes its audit log).

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{config::Config, guest, ConfigError};

/// The guest's line once its prefetch driver is up.
pub const READY_LINE: &str = "see: prefetch device ready";
/// The daemon's line once its front door listens.
pub const LISTENING_LINE: &str = "see-daemon: listening on ";

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The `see-daemon` binary.
    pub daemon_bin: PathBuf,
    /// The `see-vmm` binary.
    pub vmm_bin: PathBuf,
    /// The `see-signer` binary: started with the configuration's key and store, its socket,
    /// log and audit log in `run_dir`. `None`: the daemon signs with the key itself.
    pub signer_bin: Option<PathBuf>,
    /// The guest image.
    pub kernel: PathBuf,
    /// The daemon's configuration (its `socket` is replaced by one in `run_dir`).
    pub config: Config,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// Where the socket, the configuration file and the logs go (created).
    pub run_dir: PathBuf,
    /// Longest wait for the daemon to listen and the guest to be ready.
    pub ready_timeout: Duration,
    /// Send the daemon's log to `run_dir/daemon.log` instead of this process's stderr.
    pub daemon_log_to_file: bool,
    /// `RUST_LOG` for the daemon (None: inherit).
    pub daemon_log_level: Option<String>,
}

/// Why an SEE could not start, or what ended it.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or process operation.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process ended (or never got ready).
    #[error("{which} {how}{detail}")]
    Died {
        /// see-signer, see-daemon or see-vmm.
        which: &'static str,
        /// "exited with code N (meaning)", "was killed by signal N" or "is not ready".
        how: String,
        /// The last lines of its log or console.
        detail: String,
    },
}

/// A running SEE and its daemon.
#[derive(Debug)]
pub struct Launched {
    signer: Option<Child>,
    daemon: Child,
    vmm: Child,
    address: String,
    run_dir: PathBuf,
    console: Arc<Mutex<VecDeque<String>>>,
    daemon_log: Option<PathBuf>,
}

/// What a VMM exit code means (docs/ARCHITECTURE.md).
pub fn vmm_exit_meaning(code: i32) -> String {
    use see_abi::exit;
    match u8::try_from(code) {
        Ok(exit::VMM_ERROR) => "VMM error".into(),
        Ok(exit::USAGE) => "command-line usage error".into(),
        Ok(c) => exit::Status::from_code(c)
            .map_or_else(|| "status written by the guest".into(), |s| s.to_string()),
        Err(_) => "not an exit code".into(),
    }
}

fn describe(which: &'static str, status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) if which == "see-vmm" => {
            format!("exited with code {c} ({})", vmm_exit_meaning(c))
        }
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

fn tail_of_file(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends SIGTERM to `child` (if it still runs).
fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child,
            // not yet reaped (try_wait returned None), so it names no other process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Waits up to `timeout` for `child`, then kills it.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::io::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The signer's log in the run directory.
const SIGNER_LOG: &str = "signer.log";

/// Starts `see-signer` for `config`'s key and store (and audit key, which anchors its audit
/// log), listening on `socket`; returns once it accepts connections.
fn start_signer(
    bin: &Path,
    config: &Config,
    run_dir: &Path,
    socket: &Path,
    deadline: Instant,
) -> Result<Child, LaunchError> {
    let log_path = run_dir.join(SIGNER_LOG);
    let log = std::fs::File::create(&log_path)
        .map_err(io(format!("cannot create {}", log_path.display())))?;
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new(bin);
    if let Some(audit_key) = &config.audit_key {
        cmd.arg("--audit-key").arg(audit_key);
    }
    let mut child = cmd
        .process_group(0)
        .arg("--socket")
        .arg(socket)
        .arg("--key")
        .arg(&config.key)
        .arg("--store")
        .arg(&config.store)
        .arg("--audit")
        .arg(run_dir.join("signer-audit.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(format!(
            "cannot start {} (build it with `cargo build --release -p see-signer`)",
            bin.display()
        )))?;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(child);
        }
        let how = match child.try_wait() {
            Ok(Some(status)) => describe("see-signer", status),
            _ if Instant::now() >= deadline => "did not listen in time".into(),
            _ => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        return Err(LaunchError::Died {
            which: "see-signer",
            how,
            detail: format!(":\n{}", tail_of_file(&log_path, 20)),
        });
    }
}

/// SIGTERM to the signer (it closes its audit log), then waits a little for it.
fn stop_signer(signer: &mut Option<Child>) {
    if let Some(child) = signer.as_mut() {
        terminate(child);
        let _ = wait_or_kill(child, Duration::from_secs(5));
    }
}

impl Launched {
    /// Starts the signer (if any), the daemon, then the VMM; returns once the guest is ready.
    pub fn start(spec: &LaunchSpec) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(&spec.run_dir)
            .map_err(io(format!("cannot create {}", spec.run_dir.display())))?;
        let mut config = spec.config.clone();
        config.socket = spec.run_dir.join("prefetch.sock");
        config.validate()?;
        let deadline = Instant::now() + spec.ready_timeout;
        if spec.signer_bin.is_some() {
            config.signer = Some(spec.run_dir.join("signer.sock"));
        }
        let cat = config.load_catalogue()?;
        let cmdline = guest::cmdline_for(&cat, &config);
        let config_path = spec.run_dir.join("see-daemon.toml");
        let text = toml::to_string(&config).map_err(|e| LaunchError::Io {
            what: "cannot write the daemon's configuration".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&config_path, text)
            .map_err(io(format!("cannot write {}", config_path.display())))?;

        let mut cmd = Command::new(&spec.daemon_bin);
        // Their own process groups: a Ctrl-C at the terminal reaches the launcher only, which
        // stops them in order.
        cmd.process_group(0)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(level) = &spec.daemon_log_level {
            cmd.env("RUST_LOG", level);
        }
        let daemon_log = if spec.daemon_log_to_file {
            let path = spec.run_dir.join("daemon.log");
            let file = std::fs::File::create(&path)
                .map_err(io(format!("cannot create {}", path.display())))?;
            cmd.stderr(file);
            Some(path)
        } else {
            None
        };
        let mut signer = match (&spec.signer_bin, &config.signer) {
            (Some(bin), Some(socket)) => {
                Some(start_signer(bin, &config, &spec.run_dir, socket, deadline)?)
            }
            _ => None,
        };
        let mut daemon = match cmd.spawn() {
            Ok(d) => d,
            Err(e) => {
                stop_signer(&mut signer);
                return Err(io(format!(
                    "cannot start {} (build it with `cargo build --release -p see-daemon`)",
                    spec.daemon_bin.display()
                ))(e));
            }
        };
        let address = match Self::await_listening(&mut daemon, deadline) {
            Ok(a) => a,
            Err(how) => {
                let _ = daemon.kill();
                stop_signer(&mut signer);
                let status = daemon.wait().ok();
                return Err(LaunchError::Died {
                    which: "see-daemon",
                    how: status.map_or(how, |s| describe("see-daemon", s)),
                    detail: daemon_log
                        .as_deref()
                        .map(|p| format!(":\n{}", tail_of_file(p, 20)))
                        .unwrap_or_default(),
                });
            }
        };

        let vmm = Command::new(&spec.vmm_bin)
            .process_group(0)
            .arg("--kernel")
            .arg(&spec.kernel)
            .arg("--memory")
            .arg(spec.memory_mib.to_string())
            .arg("--prefetch-socket")
            .arg(&config.socket)
            .arg("--cmdline")
            .arg(&cmdline)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut vmm = match vmm {
            Ok(v) => v,
            Err(e) => {
                terminate(&mut daemon);
                let _ = wait_or_kill(&mut daemon, Duration::from_secs(10));
                stop_signer(&mut signer);
                return Err(io(format!(
                    "cannot start {} (build it with `cargo build --release -p see-vmm`)",
                    spec.vmm_bin.display()
                ))(e));
            }
        };
        let console = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        Self::pump_console(&mut vmm, &spec.run_dir, console.clone(), ready_tx)?;
        let mut launched = Self {
            signer,
            daemon,
            vmm,
            address,
            run_dir: spec.run_dir.clone(),
            console,
            daemon_log,
        };
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(launched);
            }
            if let Some(e) = launched.check() {
                launched.kill();
                return Err(e);
            }
            if Instant::now() >= deadline {
                let detail = format!(":\n{}", launched.console_tail(20));
                launched.kill();
                return Err(LaunchError::Died {
                    which: "see-vmm",
                    how: format!("did not bring the guest up within {:?}", spec.ready_timeout),
                    detail,
                });
            }
        }
    }

    fn await_listening(daemon: &mut Child, deadline: Instant) -> Result<String, String> {
        let out = daemon.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix(LISTENING_LINE) {
                    let _ = tx.send(address.trim().to_owned());
                    break;
                }
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        loop {
            if let Ok(address) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(address);
            }
            if let Ok(Some(_)) = daemon.try_wait() {
                return Err("exited before listening".into());
            }
            if Instant::now() >= deadline {
                return Err("did not listen in time".into());
            }
        }
    }

    fn pump_console(
        vmm: &mut Child,
        run_dir: &Path,
        console: Arc<Mutex<VecDeque<String>>>,
        ready: mpsc::Sender<()>,
    ) -> Result<(), LaunchError> {
        let path = run_dir.join("console.log");
        let mut log = std::fs::File::create(&path)
            .map_err(io(format!("cannot create {}", path.display())))?;
        let out = vmm.stdout.take();
        let err = vmm.stderr.take();
        let keep = move |console: &Mutex<VecDeque<String>>, line: String| {
            let mut c = console.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= 200 {
                c.pop_front();
            }
            c.push_back(line);
        };
        if let Some(err) = err {
            let console = console.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    keep(&console, format!("see-vmm: {line}"));
                }
            });
        }
        if let Some(out) = out {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                    if line.starts_with(READY_LINE) {
                        let _ = ready.send(());
                    }
                    keep(&console, line);
                }
            });
        }
        Ok(())
    }

    /// The front door: `http://HOST:PORT` or `unix:PATH`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The run directory (configuration, socket, `console.log`, `daemon.log`).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The daemon's process id.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.id()
    }

    /// The signer's process id (None when the daemon holds the key).
    pub fn signer_pid(&self) -> Option<u32> {
        self.signer.as_ref().map(Child::id)
    }

    /// The VMM's process id.
    pub fn vmm_pid(&self) -> u32 {
        self.vmm.id()
    }

    /// The last `n` lines of the guest's console (and the VMM's stderr).
    pub fn console_tail(&self, n: usize) -> String {
        let c = self.console.lock().unwrap_or_else(|p| p.into_inner());
        let skip = c.len().saturating_sub(n);
        c.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Which process has died, and why; None while both run. The daemon is looked at first:
    /// a VMM whose backend died ends soon after it (its guest sees the device break), while
    /// the daemon outlives a dead VMM (it answers 503).
    pub fn check(&mut self) -> Option<LaunchError> {
        if let Ok(Some(status)) = self.daemon.try_wait() {
            return Some(LaunchError::Died {
                which: "see-daemon",
                how: describe("see-daemon", status),
                detail: self
                    .daemon_log
                    .as_deref()
                    .map(|p| format!(":\n{}", tail_of_file(p, 20)))
                    .unwrap_or_default(),
            });
        }
        if let Some(Ok(Some(status))) = self.signer.as_mut().map(Child::try_wait) {
            return Some(LaunchError::Died {
                which: "see-signer",
                how: describe("see-signer", status),
                detail: format!(":\n{}", tail_of_file(&self.run_dir.join(SIGNER_LOG), 20)),
            });
        }
        if let Ok(Some(status)) = self.vmm.try_wait() {
            return Some(LaunchError::Died {
                which: "see-vmm",
                how: describe("see-vmm", status),
                detail: format!("; console:\n{}", self.console_tail(20)),
            });
        }
        None
    }

    /// Stops them: SIGTERM to the daemon (it finishes the request in the guest, flushes its
    /// history and audit log and tells the guest to stop), then waits for it and the VMM
    /// (killing what does not end within `timeout`), then stops the signer (SIGTERM: it closes
    /// its audit log). Returns the daemon's and the VMM's exit statuses.
    pub fn stop(mut self, timeout: Duration) -> Result<(ExitStatus, ExitStatus), LaunchError> {
        terminate(&mut self.daemon);
        let daemon =
            wait_or_kill(&mut self.daemon, timeout).map_err(io("waiting for see-daemon"))?;
        let vmm = wait_or_kill(&mut self.vmm, Duration::from_secs(5))
            .map_err(io("waiting for see-vmm"))?;
        stop_signer(&mut self.signer);
        Ok((daemon, vmm))
    }

    /// Kills them all at once.
    pub fn kill(&mut self) {
        for child in [
            Some(&mut self.vmm),
            Some(&mut self.daemon),
            self.signer.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}
