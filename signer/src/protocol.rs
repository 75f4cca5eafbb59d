//! The signer's wire protocol: one request, one reply, over a Unix stream socket.
//!
//! Every message is a frame: a `u32` little-endian body length, then the body. A client may
//! send any number of requests on one connection, each answered before the next is read.
//!
//! Request body (version 1):
//!
//! ```text
//! version u8 = 1 | kind u8 (1 bundle, 2 manifest, 3 floors) | reserved u16 = 0
//! statement_len u32 | statement (statement_len bytes)
//! bundle_count u32  | bundle_count bundle statements (BUNDLE_TBS_LEN bytes each)
//! ```
//!
//! A bundle request carries the bundle's `to_be_signed` bytes and no bundle statements. A
//! manifest request carries the manifest's statement (`tbs_prefix || entries`) and the
//! `to_be_signed` bytes of every bundle it covers, in order, so the signer can check each
//! against its store and recompute the entries. A floors request carries a floors snapshot's
//! statement (`tbs_prefix || entries`, 16 bytes an entry) and no bundle statements. Lengths are checked before anything is
//! allocated: no body exceeds [`MAX_REQUEST_LEN`].
//!
//! Reply body: `version u8 | status u8`, then for status 0 (signed) the 96-byte signature
//! `r || s`, for status 1 (refused) `reason u8 | resource u64 | version u64` ([`Refusal`]).

use std::io::{Read, Write};

use thiserror::Error;
use virtio_prefetch_wire::{
    BUNDLE_TBS_LEN, DIGEST_LEN, FLOORS_TBS_PREFIX_LEN, FLOOR_ENTRY_LEN, MANIFEST_TBS_PREFIX_LEN,
    MAX_FLOOR_ENTRIES, MAX_MANIFEST_ENTRIES,
};

/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of a request body before the statement.
const REQUEST_HEAD: usize = 8;
/// The largest manifest statement: the prefix and every entry.
pub const MAX_MANIFEST_STATEMENT: usize =
    MANIFEST_TBS_PREFIX_LEN + MAX_MANIFEST_ENTRIES as usize * DIGEST_LEN;
/// The largest request body: a full manifest with every bundle statement.
pub const MAX_REQUEST_LEN: usize =
    REQUEST_HEAD + MAX_MANIFEST_STATEMENT + 4 + MAX_MANIFEST_ENTRIES as usize * BUNDLE_TBS_LEN;
/// The largest floors statement: the prefix and every entry.
pub const MAX_FLOORS_STATEMENT: usize =
    FLOORS_TBS_PREFIX_LEN + MAX_FLOOR_ENTRIES as usize * FLOOR_ENTRY_LEN;
const _: () = assert!(REQUEST_HEAD + MAX_FLOORS_STATEMENT + 4 <= MAX_REQUEST_LEN);
/// Length of a signature reply body.
const SIGNED_LEN: usize = 2 + 96;
/// Length of a refusal reply body.
const REFUSED_LEN: usize = 2 + 1 + 8 + 8;

/// What a request asks to be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One bundle's `to_be_signed` bytes.
    Bundle = 1,
    /// A manifest statement and the bundles it covers.
    Manifest = 2,
    /// A floors snapshot's statement.
    Floors = 3,
}

/// A well-formed request (its statements not yet checked against anything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Bundle or manifest.
    pub kind: Kind,
    /// The bytes to sign.
    pub statement: Vec<u8>,
    /// For a manifest, the covered bundles' statements; empty for a bundle.
    pub bundles: Vec<[u8; BUNDLE_TBS_LEN]>,
}

/// Why the signer did not sign. Every reason travels as one code and, where it names one, the
/// resource and version concerned.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// The request or a statement in it is not well-formed.
    #[error("malformed request or statement")]
    Malformed,
    /// A protocol version the signer does not speak.
    #[error("unsupported protocol version {0} (this signer speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The store has no such resource version.
    #[error("resource {resource} version {version} is not in the signer's store")]
    UnknownResource {
        /// The resource.
        resource: u64,
        /// Its version.
        version: u64,
    },
    /// The statement's content digest or length differ from the store's.
    #[error("resource {resource} version {version}: digest or length differ from the store")]
    HashMismatch {
        /// The resource.
        resource: u64,
        /// Its version.
        version: u64,
    },
    /// The statement's kind or app differ from the store's.
    #[error("resource {resource} version {version}: kind or app differ from the store")]
    MetadataMismatch {
        /// The resource.
        resource: u64,
        /// Its version.
        version: u64,
    },
    /// A manifest whose entries are not the digests of its bundles, or whose bundles belong
    /// to another session.
    #[error("the manifest does not match the bundles it covers")]
    ManifestMismatch,
    /// Over the signer's rate limit (per connection or global): retry later.
    #[error("rate limit reached")]
    RateLimited,
    /// The signer cannot read its store.
    #[error("the signer cannot read its store")]
    StoreUnavailable,
    /// The signer cannot append to its audit log, and signs nothing it cannot record.
    #[error("the signer cannot write its audit log")]
    AuditUnavailable,
    /// A floors snapshot that would let the guest accept a version older than one this
    /// signer has signed (the floor is lower, or the resource is left out).
    #[error("floors snapshot: resource {resource} would fall below version {version}, which this signer has signed")]
    Rollback {
        /// The resource.
        resource: u64,
        /// The version the signer signed (the floor must be at least this).
        version: u64,
    },
}

impl Refusal {
    fn encode(self) -> (u8, u64, u64) {
        match self {
            Self::Malformed => (1, 0, 0),
            Self::UnsupportedVersion(v) => (2, v.into(), 0),
            Self::UnknownResource { resource, version } => (3, resource, version),
            Self::HashMismatch { resource, version } => (4, resource, version),
            Self::MetadataMismatch { resource, version } => (5, resource, version),
            Self::ManifestMismatch => (6, 0, 0),
            Self::RateLimited => (7, 0, 0),
            Self::StoreUnavailable => (8, 0, 0),
            Self::AuditUnavailable => (9, 0, 0),
            Self::Rollback { resource, version } => (10, resource, version),
        }
    }

    /// The refusal a reply's fields give; `None` for an unknown code, or for fields a code does
    /// not carry that are not zero (one encoding per refusal).
    fn decode(code: u8, resource: u64, version: u64) -> Option<Self> {
        let refusal = match code {
            1 => Self::Malformed,
            2 => Self::UnsupportedVersion(u8::try_from(resource).ok()?),
            3 => Self::UnknownResource { resource, version },
            4 => Self::HashMismatch { resource, version },
            5 => Self::MetadataMismatch { resource, version },
            6 => Self::ManifestMismatch,
            7 => Self::RateLimited,
            8 => Self::StoreUnavailable,
            9 => Self::AuditUnavailable,
            10 => Self::Rollback { resource, version },
            _ => return None,
        };
        (refusal.encode() == (code, resource, version)).then_some(refusal)
    }
}

/// The signer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// ECDSA P-384 over SHA-384 of the statement, `r || s`.
    Signed([u8; 96]),
    /// Not signed, and why.
    Refused(Refusal),
}

/// Why a frame could not be read or parsed.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The socket failed or closed mid-frame.
    #[error("signer socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than the protocol allows (the length is not read past).
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLong {
        /// The announced length.
        len: u32,
        /// The limit.
        limit: usize,
    },
    /// A request body that breaks the format; the signer answers [`Refusal::Malformed`] or
    /// [`Refusal::UnsupportedVersion`].
    #[error("bad request: {0}")]
    Bad(Refusal),
    /// A reply body that breaks the format.
    #[error("malformed reply from the signer")]
    BadReply,
}

/// Reads one frame body of at most `limit` bytes; `Ok(None)` on a clean end of stream before
/// the frame.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len);
    if len as usize > limit {
        return Err(ProtocolError::TooLong { len, limit });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Writes `body` as one frame (one `write` call when it fits the socket buffer).
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)
}

/// A cursor that refuses to read past the end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if n > self.0.len() {
            return Err(Refusal::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Refusal> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Refusal> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Refusal> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

impl Request {
    /// A request for one bundle statement.
    pub fn bundle(statement: &[u8]) -> Self {
        Self {
            kind: Kind::Bundle,
            statement: statement.to_vec(),
            bundles: Vec::new(),
        }
    }

    /// A request for a manifest statement and the bundles it covers.
    pub fn manifest(statement: &[u8], bundles: &[[u8; BUNDLE_TBS_LEN]]) -> Self {
        Self {
            kind: Kind::Manifest,
            statement: statement.to_vec(),
            bundles: bundles.to_vec(),
        }
    }

    /// A request for a floors snapshot's statement.
    pub fn floors(statement: &[u8]) -> Self {
        Self {
            kind: Kind::Floors,
            statement: statement.to_vec(),
            bundles: Vec::new(),
        }
    }

    /// Parses a request body. Sizes are checked against the kind before anything is copied:
    /// a bundle statement is exactly `BUNDLE_TBS_LEN` bytes with no bundles; a manifest's is
    /// the prefix plus one entry per covered bundle, 1 to `MAX_MANIFEST_ENTRIES` of them.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(Refusal::Malformed);
        }
        let mut c = Cursor(body);
        let version = c.u8()?;
        if version != VERSION {
            return Err(Refusal::UnsupportedVersion(version));
        }
        let kind = match c.u8()? {
            1 => Kind::Bundle,
            2 => Kind::Manifest,
            3 => Kind::Floors,
            _ => return Err(Refusal::Malformed),
        };
        if c.u16()? != 0 {
            return Err(Refusal::Malformed);
        }
        let statement_len = c.u32()? as usize;
        let statement = c.take(statement_len)?.to_vec();
        let count = c.u32()?;
        let expected_len = match kind {
            Kind::Bundle if count == 0 => BUNDLE_TBS_LEN,
            Kind::Manifest if (1..=MAX_MANIFEST_ENTRIES).contains(&count) => {
                MANIFEST_TBS_PREFIX_LEN + count as usize * DIGEST_LEN
            }
            // A prefix and whole entries, at most MAX_FLOOR_ENTRIES of them.
            Kind::Floors
                if count == 0
                    && (FLOORS_TBS_PREFIX_LEN..=MAX_FLOORS_STATEMENT).contains(&statement_len)
                    && (statement_len - FLOORS_TBS_PREFIX_LEN).is_multiple_of(FLOOR_ENTRY_LEN) =>
            {
                statement_len
            }
            _ => return Err(Refusal::Malformed),
        };
        if statement_len != expected_len || c.0.len() != count as usize * BUNDLE_TBS_LEN {
            return Err(Refusal::Malformed);
        }
        let bundles =
            c.0.chunks_exact(BUNDLE_TBS_LEN)
                .map(|b| {
                    let mut a = [0u8; BUNDLE_TBS_LEN];
                    a.copy_from_slice(b);
                    a
                })
                .collect();
        Ok(Self {
            kind,
            statement,
            bundles,
        })
    }

    /// Encodes the request body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            REQUEST_HEAD + self.statement.len() + 4 + self.bundles.len() * BUNDLE_TBS_LEN,
        );
        out.extend_from_slice(&[VERSION, self.kind as u8, 0, 0]);
        out.extend_from_slice(&(self.statement.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.statement);
        out.extend_from_slice(&(self.bundles.len() as u32).to_le_bytes());
        for b in &self.bundles {
            out.extend_from_slice(b);
        }
        out
    }
}

impl Reply {
    /// The largest reply body.
    pub const MAX_LEN: usize = if SIGNED_LEN > REFUSED_LEN {
        SIGNED_LEN
    } else {
        REFUSED_LEN
    };

    /// Encodes the reply body.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Signed(sig) => {
                let mut out = vec![VERSION, 0];
                out.extend_from_slice(sig);
                out
            }
            Self::Refused(refusal) => {
                let (code, resource, version) = refusal.encode();
                let mut out = vec![VERSION, 1, code];
                out.extend_from_slice(&resource.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                out
            }
        }
    }

    /// Parses a reply body.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let bad = |_| ProtocolError::BadReply;
        let mut c = Cursor(body);
        if c.u8().map_err(bad)? != VERSION {
            return Err(ProtocolError::BadReply);
        }
        let reply = match (c.u8().map_err(bad)?, body.len()) {
            (0, SIGNED_LEN) => {
                let mut sig = [0u8; 96];
                sig.copy_from_slice(c.take(96).map_err(bad)?);
                Self::Signed(sig)
            }
            (1, REFUSED_LEN) => {
                let code = c.u8().map_err(bad)?;
                let resource = c.u64().map_err(bad)?;
                let version = c.u64().map_err(bad)?;
                Self::Refused(
                    Refusal::decode(code, resource, version).ok_or(ProtocolError::BadReply)?,
                )
            }
            _ => return Err(ProtocolError::BadReply),
        };
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_request(n: usize) -> Request {
        let statement = vec![7u8; MANIFEST_TBS_PREFIX_LEN + n * DIGEST_LEN];
        Request::manifest(&statement, &vec![[3u8; BUNDLE_TBS_LEN]; n])
    }

    #[test]
    fn requests_round_trip_and_bad_sizes_are_refused() {
        let bundle = Request::bundle(&[1u8; BUNDLE_TBS_LEN]);
        assert_eq!(Request::parse(&bundle.encode()), Ok(bundle.clone()));
        let full = manifest_request(MAX_MANIFEST_ENTRIES as usize);
        let body = full.encode();
        assert_eq!(body.len(), MAX_REQUEST_LEN);
        assert_eq!(Request::parse(&body), Ok(full));
        // A statement one byte short, a manifest with one bundle too few, a bundle with
        // bundles, an unknown kind, a bad version, trailing bytes.
        let short = Request::bundle(&[1u8; BUNDLE_TBS_LEN - 1]);
        assert_eq!(Request::parse(&short.encode()), Err(Refusal::Malformed));
        let mut m = manifest_request(3);
        m.bundles.pop();
        assert_eq!(Request::parse(&m.encode()), Err(Refusal::Malformed));
        let mut b = bundle.clone();
        b.bundles.push([0; BUNDLE_TBS_LEN]);
        assert_eq!(Request::parse(&b.encode()), Err(Refusal::Malformed));
        let mut body = bundle.encode();
        body[1] = 3;
        assert_eq!(Request::parse(&body), Err(Refusal::Malformed));
        body[1] = 1;
        body[0] = 2;
        assert_eq!(Request::parse(&body), Err(Refusal::UnsupportedVersion(2)));
        let mut body = bundle.encode();
        body.push(0);
        assert_eq!(Request::parse(&body), Err(Refusal::Malformed));
        assert_eq!(Request::parse(&[]), Err(Refusal::Malformed));
    }

    #[test]
    fn a_reply_has_one_encoding() {
        let limited = Reply::Refused(Refusal::RateLimited).encode();
        assert_eq!(
            Reply::parse(&limited).unwrap(),
            Reply::Refused(Refusal::RateLimited)
        );
        // The same code with bytes in the fields it does not carry.
        let mut padded = limited.clone();
        padded[3] = 7;
        assert!(matches!(
            Reply::parse(&padded),
            Err(ProtocolError::BadReply)
        ));
        let mut version = Reply::Refused(Refusal::UnsupportedVersion(2)).encode();
        version[11] = 1;
        assert!(matches!(
            Reply::parse(&version),
            Err(ProtocolError::BadReply)
        ));
    }

    /// The fuzz target's seeds are what they claim to be: a bundle request, a manifest
    /// request whose entries match its bundles, a reply.
    #[test]
    fn the_fuzz_seeds_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/signer_request");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let bundle = Request::parse(&read("bundle")).unwrap();
        assert!(crate::statement::BundleStatement::parse(&bundle.statement).is_ok());
        let manifest = Request::parse(&read("manifest")).unwrap();
        let m = crate::statement::ManifestStatement::parse(&manifest.statement).unwrap();
        assert_eq!(m.check_bundles(&manifest.bundles).unwrap().len(), 2);
        assert!(Reply::parse(&read("reply")).is_ok());
    }

    #[test]
    fn replies_round_trip_and_frames_are_bounded() {
        let all = [
            Reply::Signed([5; 96]),
            Reply::Refused(Refusal::Malformed),
            Reply::Refused(Refusal::UnsupportedVersion(9)),
            Reply::Refused(Refusal::HashMismatch {
                resource: 3,
                version: 2,
            }),
            Reply::Refused(Refusal::AuditUnavailable),
        ];
        for reply in all {
            assert_eq!(Reply::parse(&reply.encode()).unwrap(), reply);
        }
        assert!(Reply::parse(&[VERSION, 1, 99, 0]).is_err());
        let mut frame = Vec::new();
        write_frame(&mut frame, b"abc").unwrap();
        assert_eq!(
            read_frame(&mut frame.as_slice(), 3).unwrap(),
            Some(b"abc".to_vec())
        );
        assert!(matches!(
            read_frame(&mut frame.as_slice(), 2),
            Err(ProtocolError::TooLong { len: 3, .. })
        ));
        assert_eq!(read_frame(&mut [].as_slice(), 3).unwrap(), None);
    }
}
