//! Verification of an audit log: names the first broken record and why.

use std::{fmt, path::Path};

use serde_json::{Map, Value};

use super::{hex, parse_hash, record_hash, AuditError, AuditEvent, Hash};

/// The last record of a verified log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

/// A log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records in it.
    pub records: u64,
    /// Its last record (none for an empty log).
    pub head: Option<Head>,
}

/// Why a record is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The last line has no line break: a torn write or a cut file.
    Truncated,
    /// Not a JSON object of the record's shape.
    Malformed(String),
    /// A sequence number other than the next one: a deleted, inserted or reordered record.
    Gap {
        /// The sequence number expected here.
        expected: u64,
    },
    /// `prev` is not the previous record's hash.
    BrokenLink,
    /// The record's content does not match its `hash`: it was altered.
    BadHash {
        /// The hash recomputed over the content.
        computed: Hash,
    },
}

/// The first broken record of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// Its line, from 1.
    pub line: usize,
    /// Its sequence number, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: Reason,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        match &self.reason {
            Reason::Truncated => write!(f, ": truncated line (no line break at the end)"),
            Reason::Malformed(m) => write!(f, ": malformed record: {m}"),
            Reason::Gap { expected } => write!(
                f,
                ": sequence gap: expected seq {expected} (a record was deleted, inserted or moved)"
            ),
            Reason::BrokenLink => write!(
                f,
                ": prev does not match the previous record's hash (chain broken)"
            ),
            Reason::BadHash { computed } => write!(
                f,
                ": bad hash: the content hashes to {} (the record was altered)",
                hex(computed)
            ),
        }
    }
}

impl std::error::Error for Broken {}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Reason> {
    obj.get(key)
        .ok_or_else(|| Reason::Malformed(format!("missing {key:?}")))
}

fn u64_field(obj: &Map<String, Value>, key: &str) -> Result<u64, Reason> {
    field(obj, key)?
        .as_u64()
        .ok_or_else(|| Reason::Malformed(format!("{key:?} is not an unsigned integer")))
}

fn hash_field(obj: &Map<String, Value>, key: &str) -> Result<Hash, Reason> {
    field(obj, key)?
        .as_str()
        .and_then(parse_hash)
        .ok_or_else(|| Reason::Malformed(format!("{key:?} is not 64 hex digits")))
}

/// Checks one line against the expected position; returns the record's hash.
fn check(
    text: &str,
    expected: u64,
    prev: &Hash,
    seq_out: &mut Option<u64>,
) -> Result<Hash, Reason> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Reason::Malformed(format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Reason::Malformed("not a JSON object".into()))?;
    let seq = u64_field(obj, "seq")?;
    *seq_out = Some(seq);
    let allowed = ["seq", "at_us", "kind", "fields", "prev", "hash"];
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Reason::Malformed(format!("unknown key {k:?}")));
    }
    let at_us = u64_field(obj, "at_us")?;
    let stored = hash_field(obj, "hash")?;
    let link = hash_field(obj, "prev")?;
    if seq != expected {
        return Err(Reason::Gap { expected });
    }
    if link != *prev {
        return Err(Reason::BrokenLink);
    }
    let mut body = Map::new();
    body.insert("kind".into(), field(obj, "kind")?.clone());
    body.insert("fields".into(), field(obj, "fields")?.clone());
    let body = Value::Object(body);
    let computed = record_hash(seq, at_us, prev, &body);
    if computed != stored {
        return Err(Reason::BadHash { computed });
    }
    serde_json::from_value::<AuditEvent>(body)
        .map_err(|e| Reason::Malformed(format!("unknown kind or bad fields: {e}")))?;
    Ok(stored)
}

/// Verifies a log held in memory.
pub fn verify_bytes(bytes: &[u8]) -> Result<Verified, Broken> {
    let mut prev = [0u8; 32];
    let mut head = None;
    let mut records = 0u64;
    let mut rest = bytes;
    let mut line = 0usize;
    while !rest.is_empty() {
        line += 1;
        let (text, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                let t = &rest[..n];
                rest = &rest[n + 1..];
                (t, true)
            }
            None => (std::mem::take(&mut rest), false),
        };
        let mut seq = None;
        let result = match std::str::from_utf8(text) {
            Err(_) => Err(Reason::Malformed("not UTF-8".into())),
            Ok(t) => check(t, records, &prev, &mut seq),
        };
        let broken = |reason| Broken { line, seq, reason };
        if !complete {
            return Err(broken(Reason::Truncated));
        }
        let hash = result.map_err(broken)?;
        head = Some(Head { seq: records, hash });
        prev = hash;
        records += 1;
    }
    Ok(Verified { records, head })
}

/// Verifies the log at `path`. The outer error is I/O; the inner names the first broken record.
pub fn verify(path: &Path) -> Result<Result<Verified, Broken>, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(verify_bytes(&bytes))
}
