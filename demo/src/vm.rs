//! One guest: the `see-vmm` process booting the image's `serve` app against the backend's
//! socket, its console read line by line in a thread, and its exit waited for with a deadline.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use crate::DemoError;

/// A running VMM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    transcript: Vec<String>,
}

impl Vm {
    /// Boots `kernel` in `vmm` with `cmdline`, the prefetch device on `socket`.
    pub fn boot(
        vmm: &Path,
        kernel: &Path,
        socket: &Path,
        cmdline: &str,
    ) -> Result<Self, DemoError> {
        let mut cmd = Command::new(vmm);
        cmd.arg("--kernel")
            .arg(kernel)
            .arg("--prefetch-socket")
            .arg(socket)
            .arg("--cmdline")
            .arg(cmdline)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            DemoError::Vm(format!(
            "cannot start {}: {e} (build it with `cargo build --release -p see-vmm` or pass --vmm)",
            vmm.display()
        ))
        })?;
        let (tx, lines) = mpsc::channel();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| DemoError::Vm("no stdout pipe".into()))?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child
            .stderr
            .take()
            .ok_or_else(|| DemoError::Vm("no stderr pipe".into()))?;
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Ok(Self {
            child,
            lines,
            stderr,
            transcript: Vec::new(),
        })
    }

    /// Console lines received so far (the last `n`).
    pub fn tail(&mut self, n: usize) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.transcript.push(l);
        }
        let from = self.transcript.len().saturating_sub(n);
        self.transcript[from..].join("\n")
    }

    /// Waits until a console line starts with `prefix`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.transcript.push(l.clone());
                    if l.starts_with(prefix) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(DemoError::Vm(format!(
                        "no {prefix:?} line within {timeout:?}; console:\n{}",
                        self.tail(20)
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DemoError::Vm(format!(
                        "the VM ended before {prefix:?}; console:\n{}\n{}",
                        self.tail(20),
                        self.stderr.try_recv().unwrap_or_default()
                    )))
                }
            }
        }
    }

    /// Whether the VMM process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the VMM to exit (killing it after `timeout`); returns its exit code.
    pub fn finish(mut self, timeout: Duration) -> Result<i32, DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return status
                        .code()
                        .ok_or_else(|| DemoError::Vm(format!("see-vmm was killed ({status})")))
                }
                Ok(None) if Instant::now() < deadline => {
                    // Drain the console meanwhile; a line or 20 ms, whichever first.
                    if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                        self.transcript.push(l);
                    }
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(DemoError::Vm(format!(
                        "the VM did not end within {timeout:?}; killed"
                    )));
                }
                Err(e) => return Err(DemoError::Vm(format!("waiting for see-vmm: {e}"))),
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The artefacts: a flag, else the environment variable, else the default path.
pub fn artefact(flag: Option<PathBuf>, env: &str, default: &str) -> PathBuf {
    flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}
