//! The PTO's audit log: an append-only, tamper-evident record of every prefetch, demand fetch,
//! signature and claim report (and every dispatch and completion).
//!
//! Format: JSON lines, one record per line:
//!
//! ```text
//! {"seq":0,"at_us":1764000000000000,"kind":"prefetch","fields":{...},"prev":"00..00","hash":"9f..."}
//! ```
//!
//! - `seq` counts from 0 without gaps;
//! - `prev` is the `hash` of the previous record (64 zero hex digits for the first);
//! - `hash` is SHA-256 (lowercase hex) over the canonical encoding of the record: the context
//!   `"SEE-PTO audit v1\0"`, then `seq` and `at_us` as little-endian u64, the 32 bytes of `prev`,
//!   then the canonical JSON of `{"fields":..,"kind":..}` (object keys sorted, no whitespace,
//!   integers only: the events carry no floats). Any JSON writer can therefore produce a
//!   verifiable log, and key order or spacing in the file does not matter.
//!
//! Changing a field breaks that record's hash; deleting, inserting or reordering records breaks
//! the sequence or the chain at the first affected record; a torn write leaves a last line
//! without its line break, reported as truncated. Removing whole records from the end is the
//! one change a chain cannot see on its own: compare the head [`verify`] prints (`seq`, `hash`)
//! with one kept elsewhere (the backend logs its head at shutdown), or pass `--expect-head`.
//!
//! Durability ([`FsyncPolicy`]): each record is written with one `write` of the whole line to
//! a file opened with `O_APPEND`, so a crash leaves at most one torn last line. The file is
//! `fsync`ed after every record (`EveryRecord`), after every `n` records (`Every(n)`, the default
//! with n = 32: a crash loses at most the last 31 records, never the chain's integrity), or only
//! on [`AuditLog::sync`] and drop (`OnSync`).
//!
//! Anchoring ([`checkpoint`]): a writer given an audit key ([`AuditLog::with_checkpoints`])
//! appends a signed `checkpoint` record every `n` records and a closing one when the log is
//! closed ([`AuditLog::close`], or drop). `pto audit verify --key audit.pub` then needs no
//! head kept elsewhere: a rewritten log fails on its first checkpoint (the forger lacks the
//! key), and a log that does not end with a closing checkpoint is reported as not closed
//! cleanly, with the number of records after its last checkpoint (records cut off the end, or
//! a writer that crashed). What a verifier cannot see is a log cut exactly at an earlier
//! closing checkpoint (whole runs removed from the end of a log continued across runs): keep
//! one log per run, or compare the printed head with one kept elsewhere.
//!
//! Parsing is strict (the `strict` module): a record that names a key twice is refused.

pub mod checkpoint;
mod event;
mod report_kind;
mod strict;
#[cfg(test)]
mod tests;
mod verify;

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

pub use checkpoint::{CheckpointSigner, KeySigner, TrustedKeys};
pub use event::AuditEvent;
use serde_json::Value;
use sha2::{Digest, Sha256};
pub use verify::{
    verify, verify_anchored, verify_bytes, verify_file_anchored, Broken, CheckpointAt, Head,
    Reason, Unclosed, Verified,
};

/// Domain separation for the record hash.
pub const CONTEXT: &[u8] = b"SEE-PTO audit v1\0";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log file could not be read, written or synced.
    #[error("audit log {path}: {source}; check the path and the disk")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The existing log is broken: refuse to append to it.
    #[error("audit log {path} is broken at {broken}; move it aside and start a new log")]
    Broken {
        /// The file.
        path: PathBuf,
        /// The first broken record.
        broken: Broken,
    },
    /// An event could not be encoded (cannot happen for the event types here).
    #[error("audit event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// The checkpoint signer failed.
    #[error("audit log {path}: the audit key could not sign a checkpoint: {source}")]
    Sign {
        /// The file.
        path: PathBuf,
        /// The signer's error.
        source: checkpoint::SignError,
    },
    /// Checkpoints are written by the log itself, never appended as events.
    #[error("audit log {path}: checkpoint records are written by the log, not appended")]
    Reserved {
        /// The file.
        path: PathBuf,
    },
}

/// When the writer calls `fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record.
    EveryRecord,
    /// After every `n` records (and on [`AuditLog::sync`] and drop).
    Every(u32),
    /// Only on [`AuditLog::sync`] and drop.
    OnSync,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::Every(32)
    }
}

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hash(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Appends the canonical JSON of `v` (sorted keys, no whitespace) to `out`.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of a record with these parts (`body` = `{"kind":..,"fields":..}`).
pub fn record_hash(seq: u64, at_us: u64, prev: &Hash, body: &Value) -> Hash {
    let mut canon = String::new();
    canonical_json(body, &mut canon);
    let mut h = Sha256::new();
    h.update(CONTEXT);
    h.update(seq.to_le_bytes());
    h.update(at_us.to_le_bytes());
    h.update(prev);
    h.update(canon.as_bytes());
    h.finalize().into()
}

/// The checkpoint signer of a log and its schedule.
#[derive(Debug)]
struct Anchor {
    signer: Box<dyn CheckpointSigner>,
    key_id: Hash,
    every: u32,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The audit log writer. Appends records; never rewrites.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    policy: FsyncPolicy,
    next_seq: u64,
    prev: Hash,
    unsynced: u32,
    anchor: Option<Anchor>,
    /// Records since the last checkpoint.
    unanchored: u64,
    /// True when the last record is a closing checkpoint (or the log is empty).
    closed: bool,
}

impl AuditLog {
    /// Opens the log at `path` for appending, creating it if missing. An existing log is
    /// verified first and continued from its head; a broken one is refused.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let verified = match std::fs::read(path) {
            Ok(bytes) => match verify_bytes(&bytes) {
                Ok(v) => Some(v),
                Err(broken) => {
                    return Err(AuditError::Broken {
                        path: path.to_path_buf(),
                        broken,
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let head = verified.as_ref().and_then(|v| v.head);
        let (next_seq, prev) = head.map_or((0, [0; 32]), |h| (h.seq + 1, h.hash));
        Ok(Self {
            file,
            path: path.to_path_buf(),
            policy,
            next_seq,
            prev,
            unsynced: 0,
            anchor: None,
            unanchored: verified.as_ref().map_or(0, Verified::unanchored),
            closed: verified.as_ref().is_none_or(Verified::closed),
        })
    }

    /// Signs a checkpoint with `signer` every `every` records (at least 1) and when the log is
    /// closed. A log continued after its writer stopped without closing it is reported
    /// (the records after its last checkpoint were never anchored) and continued.
    pub fn with_checkpoints(mut self, signer: Box<dyn CheckpointSigner>, every: u32) -> Self {
        if !self.closed {
            log::warn!(
                "audit log {} was not closed cleanly: {} records follow its last checkpoint; \
                 continuing it",
                self.path.display(),
                self.unanchored
            );
        }
        self.anchor = Some(Anchor {
            key_id: checkpoint::key_id(&signer.verifying_key()),
            signer,
            every: every.max(1),
        });
        self
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last record written (zero before the first).
    pub fn head_hash(&self) -> Hash {
        self.prev
    }

    /// Appends `event`, stamped with the current wall-clock time; returns its sequence number.
    pub fn append(&mut self, event: &AuditEvent) -> Result<u64, AuditError> {
        self.append_at(now_us(), event)
    }

    /// Appends `event` with the timestamp `at_us`; returns its sequence number. A checkpoint
    /// follows when one is due.
    pub fn append_at(&mut self, at_us: u64, event: &AuditEvent) -> Result<u64, AuditError> {
        if matches!(event, AuditEvent::Checkpoint { .. }) {
            return Err(AuditError::Reserved {
                path: self.path.clone(),
            });
        }
        let seq = self.write(at_us, event)?;
        self.unanchored += 1;
        self.closed = false;
        let due = self
            .anchor
            .as_ref()
            .is_some_and(|a| self.unanchored >= u64::from(a.every));
        if due {
            self.checkpoint(at_us, false)?;
        }
        Ok(seq)
    }

    /// Closes the log: appends the closing checkpoint (with a signer, unless the log is closed
    /// already) and syncs. Appending afterwards reopens it; drop closes it again.
    pub fn close(&mut self) -> Result<(), AuditError> {
        if self.anchor.is_some() && !self.closed {
            self.checkpoint(now_us(), true)?;
        }
        self.sync()
    }

    /// Appends a signed checkpoint of the current head.
    fn checkpoint(&mut self, at_us: u64, closing: bool) -> Result<(), AuditError> {
        let Some(a) = &self.anchor else {
            return Ok(());
        };
        let seq = self.next_seq;
        let statement = checkpoint::statement(seq, at_us, &self.prev, &a.key_id, closing);
        let signature = a
            .signer
            .sign(&statement)
            .map_err(|source| AuditError::Sign {
                path: self.path.clone(),
                source,
            })?;
        let event = AuditEvent::Checkpoint {
            closing,
            key: hex(&a.key_id),
            signature: hex(&signature),
        };
        self.write(at_us, &event)?;
        self.unanchored = 0;
        self.closed = closing;
        Ok(())
    }

    /// Writes one record.
    fn write(&mut self, at_us: u64, event: &AuditEvent) -> Result<u64, AuditError> {
        let body = serde_json::to_value(event)?;
        let seq = self.next_seq;
        let hash = record_hash(seq, at_us, &self.prev, &body);
        let mut line = String::with_capacity(256);
        line.push_str(&format!("{{\"seq\":{seq},\"at_us\":{at_us},"));
        let mut canon = String::new();
        canonical_json(&body, &mut canon);
        // `{"fields":..,"kind":..}` without its braces, then the chain.
        line.push_str(&canon[1..canon.len() - 1]);
        line.push_str(&format!(
            ",\"prev\":\"{}\",\"hash\":\"{}\"}}\n",
            hex(&self.prev),
            hex(&hash)
        ));
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.next_seq += 1;
        self.prev = hash;
        self.unsynced += 1;
        let due = match self.policy {
            FsyncPolicy::EveryRecord => true,
            FsyncPolicy::Every(n) => self.unsynced >= n.max(1),
            FsyncPolicy::OnSync => false,
        };
        if due {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Flushes the file to stable storage.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.unsynced = 0;
        self.file.sync_data().map_err(|source| AuditError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if self.anchor.is_some() && !self.closed {
            if let Err(e) = self.close() {
                log::warn!("{e}");
            }
        }
        if self.unsynced > 0 {
            if let Err(e) = self.sync() {
                log::warn!("{e}");
            }
        }
        log::info!(
            "audit log {}: head seq {} hash {}",
            self.path.display(),
            self.next_seq.wrapping_sub(1),
            hex(&self.prev)
        );
    }
}
