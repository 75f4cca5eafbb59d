//! The audit log: an append-only, tamper-evident record of every prefetch, demand fetch,
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

mod event;
#[cfg(test)]
mod tests;
mod verify;

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

pub use event::AuditEvent;
use serde_json::Value;
use sha2::{Digest, Sha256};
pub use verify::{verify, verify_bytes, Broken, Head, Verified};

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

/// The audit log writer. Appends records; never rewrites.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    policy: FsyncPolicy,
    next_seq: u64,
    prev: Hash,
    unsynced: u32,
}

impl AuditLog {
    /// Opens the log at `path` for appending, creating it if missing. An existing log is
    /// verified first and continued from its head; a broken one is refused.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let head = match std::fs::read(path) {
            Ok(bytes) => match verify_bytes(&bytes) {
                Ok(v) => v.head,
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
        let (next_seq, prev) = head.map_or((0, [0; 32]), |h| (h.seq + 1, h.hash));
        Ok(Self {
            file,
            path: path.to_path_buf(),
            policy,
            next_seq,
            prev,
            unsynced: 0,
        })
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
        let at_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.append_at(at_us, event)
    }

    /// Appends `event` with the timestamp `at_us`; returns its sequence number.
    pub fn append_at(&mut self, at_us: u64, event: &AuditEvent) -> Result<u64, AuditError> {
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
