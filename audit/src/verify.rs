//! Verification of an audit log: names the first broken record and why, and checks the
//! signed checkpoints against the keys the verifier trusts.
//!
//! [`verify_bytes`] checks the chain alone (what the writer does before continuing a log);
//! [`verify_anchored`] also requires every checkpoint to carry a valid signature by a trusted
//! key. Whether the log was closed cleanly is the caller's policy: [`Verified::closed`] and
//! [`Verified::require_closed`] say so, and how many records follow the last checkpoint.

use std::{fmt, path::Path};

use serde_json::{Map, Value};

use super::{
    checkpoint::{self, TrustedKeys, SIGNATURE_LEN},
    hex, parse_hash, record_hash, strict, AuditError, AuditEvent, Hash,
};

/// The last record of a verified log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

/// A checkpoint found in a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointAt {
    /// Its sequence number.
    pub seq: u64,
    /// True when it closes the log.
    pub closing: bool,
}

/// A log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records in it (checkpoints included).
    pub records: u64,
    /// Its last record (none for an empty log).
    pub head: Option<Head>,
    /// Checkpoints in it.
    pub checkpoints: u64,
    /// Its last checkpoint.
    pub last_checkpoint: Option<CheckpointAt>,
}

impl Verified {
    /// Records after the last checkpoint (every record when there is none): what no
    /// signature anchors.
    pub fn unanchored(&self) -> u64 {
        self.last_checkpoint
            .map_or(self.records, |c| self.records - 1 - c.seq)
    }

    /// True when the log ends with a closing checkpoint (an empty log is closed).
    pub fn closed(&self) -> bool {
        self.records == 0
            || (self.unanchored() == 0 && self.last_checkpoint.is_some_and(|c| c.closing))
    }

    /// `Ok` when the log was closed cleanly; otherwise says what follows the last checkpoint.
    pub fn require_closed(&self) -> Result<(), Unclosed> {
        if self.closed() {
            return Ok(());
        }
        Err(Unclosed {
            unanchored: self.unanchored(),
            last_checkpoint: self.last_checkpoint,
        })
    }
}

/// A log that does not end with a closing checkpoint: cut short, or its writer crashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unclosed {
    /// Records after the last checkpoint.
    pub unanchored: u64,
    /// The last checkpoint, if any.
    pub last_checkpoint: Option<CheckpointAt>,
}

impl fmt::Display for Unclosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the log was not closed cleanly: ")?;
        match self.last_checkpoint {
            None => write!(
                f,
                "it has no signed checkpoint, so none of its {} records is anchored",
                self.unanchored
            )?,
            Some(c) => write!(
                f,
                "{} records follow the last checkpoint (seq {}{}) and no signature anchors them",
                self.unanchored,
                c.seq,
                if c.closing { ", a closing one" } else { "" }
            )?,
        }
        write!(
            f,
            "; records were cut off the end, or the writer stopped without closing the log"
        )
    }
}

impl std::error::Error for Unclosed {}

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
    /// A checkpoint signed by a key the verifier does not trust.
    UntrustedKey {
        /// The key id the checkpoint names, hex.
        key: String,
    },
    /// A checkpoint whose signature does not verify under the key it names.
    BadSignature,
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
            Reason::UntrustedKey { key } => write!(
                f,
                ": checkpoint signed by key {key}, which is not a trusted audit key (the log was \
                 rewritten with another key, or the wrong public key was given)"
            ),
            Reason::BadSignature => write!(
                f,
                ": the checkpoint's signature does not verify (the checkpoint or the chain \
                 before it was altered)"
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

/// Checks a checkpoint's shape and, with `keys`, its signature; returns `closing`.
fn check_checkpoint(
    seq: u64,
    at_us: u64,
    prev: &Hash,
    event: &AuditEvent,
    keys: Option<&TrustedKeys>,
) -> Result<Option<bool>, Reason> {
    let AuditEvent::Checkpoint {
        closing,
        key,
        signature,
    } = event
    else {
        return Ok(None);
    };
    let id = parse_hash(key)
        .ok_or_else(|| Reason::Malformed("checkpoint key is not 64 hex digits".into()))?;
    let sig: [u8; SIGNATURE_LEN] = (signature.len() == 2 * SIGNATURE_LEN)
        .then(|| {
            let mut out = [0u8; SIGNATURE_LEN];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(signature.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        })
        .flatten()
        .ok_or_else(|| {
            Reason::Malformed(format!(
                "checkpoint signature is not {} hex digits",
                2 * SIGNATURE_LEN
            ))
        })?;
    if let Some(keys) = keys {
        let statement = checkpoint::statement(seq, at_us, prev, &id, *closing);
        keys.check(&id, &statement, &sig).map_err(|untrusted| {
            if untrusted {
                Reason::UntrustedKey { key: hex(&id) }
            } else {
                Reason::BadSignature
            }
        })?;
    }
    Ok(Some(*closing))
}

/// Checks one line against the expected position; returns the record's hash and, for a
/// checkpoint, whether it closes the log.
fn check(
    text: &str,
    expected: u64,
    prev: &Hash,
    keys: Option<&TrustedKeys>,
    seq_out: &mut Option<u64>,
) -> Result<(Hash, Option<bool>), Reason> {
    let value: Value =
        strict::parse(text).map_err(|e| Reason::Malformed(format!("not JSON: {e}")))?;
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
    let event = serde_json::from_value::<AuditEvent>(body)
        .map_err(|e| Reason::Malformed(format!("unknown kind or bad fields: {e}")))?;
    let closing = check_checkpoint(seq, at_us, prev, &event, keys)?;
    Ok((stored, closing))
}

/// Verifies the chain of a log held in memory; checkpoints are checked for shape only.
pub fn verify_bytes(bytes: &[u8]) -> Result<Verified, Broken> {
    walk(bytes, None)
}

/// Verifies a log held in memory: the chain, and every checkpoint's signature by one of
/// `keys`.
pub fn verify_anchored(bytes: &[u8], keys: &TrustedKeys) -> Result<Verified, Broken> {
    walk(bytes, Some(keys))
}

fn walk(bytes: &[u8], keys: Option<&TrustedKeys>) -> Result<Verified, Broken> {
    let mut prev = [0u8; 32];
    let mut head = None;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut last_checkpoint = None;
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
            Ok(t) => check(t, records, &prev, keys, &mut seq),
        };
        let broken = |reason| Broken { line, seq, reason };
        if !complete {
            return Err(broken(Reason::Truncated));
        }
        let (hash, closing) = result.map_err(broken)?;
        if let Some(closing) = closing {
            checkpoints += 1;
            last_checkpoint = Some(CheckpointAt {
                seq: records,
                closing,
            });
        }
        head = Some(Head { seq: records, hash });
        prev = hash;
        records += 1;
    }
    Ok(Verified {
        records,
        head,
        checkpoints,
        last_checkpoint,
    })
}

/// Verifies the chain of the log at `path`. The outer error is I/O; the inner names the first
/// broken record.
pub fn verify(path: &Path) -> Result<Result<Verified, Broken>, AuditError> {
    Ok(verify_bytes(&read(path)?))
}

/// Verifies the log at `path` with its checkpoints' signatures (see [`verify_anchored`]).
pub fn verify_file_anchored(
    path: &Path,
    keys: &TrustedKeys,
) -> Result<Result<Verified, Broken>, AuditError> {
    Ok(verify_anchored(&read(path)?, keys))
}

fn read(path: &Path) -> Result<Vec<u8>, AuditError> {
    std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })
}
