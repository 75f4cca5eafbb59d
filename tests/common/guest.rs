//! A VMM run the test talks to while it runs: the guest's console lines arrive as they are
//! printed, the test waits for a line with a deadline, acts (orders a prefetch, kills the
//! backend), then waits for the exit. Never a sleep: every wait is for a condition.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    process::{Child, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use crate::{Outcome, Vmm, DEADLINE};

/// A running VMM whose console is read line by line.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    transcript: Vec<String>,
    deadline: Instant,
}

impl Guest {
    /// Starts `vmm`; the whole run (every wait together) must end within [`DEADLINE`].
    pub fn spawn(vmm: Vmm) -> Self {
        let mut cmd = vmm.into_command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Self {
            child,
            lines,
            stderr,
            transcript: Vec::new(),
            deadline: Instant::now() + DEADLINE,
        }
    }

    /// Every console line so far.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Console lines so far that start with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.transcript
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits for a console line that satisfies `pred` and returns it; fails the test with the
    /// transcript if the guest ends or the run's deadline passes first.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.transcript.push(line.clone());
                    if hit {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "no console line {what} within {DEADLINE:?}:\n{}",
                        self.transcript()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let rest = self.finish();
                    panic!(
                        "the VM ended (code {:?}) before a console line {what}:\n{}\n--- stderr\n{}",
                        rest.code, rest.stdout, rest.stderr
                    );
                }
            }
        }
    }

    /// Waits for the VMM to exit (within the run's deadline) and returns the whole run.
    pub fn finish(&mut self) -> Outcome {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.transcript.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "the VM did not end within {DEADLINE:?}:\n{}",
                        self.transcript()
                    );
                }
            }
        }
        // stdout is closed: the VMM is exiting; its stderr closes with it.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let stderr = self
            .stderr
            .recv_timeout(left.max(Duration::from_secs(1)))
            .unwrap_or_default();
        let status = self.child.wait().expect("wait for see-vmm");
        Outcome {
            code: status.code(),
            stdout: self.transcript(),
            stderr,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// The first line of `console` that starts with `prefix`; fails the test if there is none.
pub fn line<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no console line starts with {prefix:?}:\n{console}"))
}

/// The `key=value` fields of a console line (tokens without `=` are skipped).
pub fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .collect()
}

/// A numeric field of a console line; fails the test if it is missing or not a number.
pub fn field_u64(line: &str, key: &str) -> u64 {
    fields(line)
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("console line lacks a numeric {key}=: {line:?}"))
}

/// A field of a console line as text; fails the test if it is missing.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    fields(line)
        .get(key)
        .copied()
        .unwrap_or_else(|| panic!("console line lacks {key}=: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_claim_line() {
        let l = "see: claim app=1 task=7 res=3 ver=2 len=65536 sha384=ab staged=1 ns=900";
        assert_eq!(field_u64(l, "task"), 7);
        assert_eq!(field(l, "sha384"), "ab");
        assert_eq!(fields(l).len(), 8);
    }

    #[test]
    #[should_panic(expected = "lacks a numeric ver=")]
    fn a_missing_field_fails() {
        field_u64("see: claim app=1", "ver");
    }
}
