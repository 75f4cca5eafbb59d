//! Errors of the wire-format parsers and encoders.

use thiserror::Error;

/// Why bytes could not be parsed or encoded. Every variant names what was wrong, so a peer's
/// malformed message can be logged and counted precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being parsed.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The magic number is not the expected one.
    #[error("bad magic in {what}: {found:#010x}")]
    BadMagic {
        /// The structure being parsed.
        what: &'static str,
        /// The value found.
        found: u32,
    },
    /// A format version this build does not speak.
    #[error("unsupported {what} version {found}")]
    BadVersion {
        /// The structure being parsed.
        what: &'static str,
        /// The version found.
        found: u32,
    },
    /// A message kind that is unknown, or not allowed where it arrived.
    #[error("unknown or unexpected message kind {0:#04x}")]
    BadKind(u8),
    /// An enumerated field holds a value outside its range.
    #[error("invalid value {value} in field {field}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A reserved field or padding byte is not zero.
    #[error("reserved field {0} is not zero")]
    ReservedNotZero(&'static str),
    /// A length or count exceeds its limit (or the carrying buffer).
    #[error("{field} is {value}, above the limit {limit}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The largest allowed value.
        limit: u64,
    },
    /// A declared length disagrees with the bytes that carry it.
    #[error("length mismatch in {what}: declared {declared}, actual {actual}")]
    LengthMismatch {
        /// The structure being parsed.
        what: &'static str,
        /// The declared length.
        declared: u64,
        /// The actual length.
        actual: u64,
    },
    /// A chunk does not continue the object being reassembled.
    #[error("chunk out of sequence: {0}")]
    OutOfSequence(&'static str),
    /// A tree chunk of a bundle's content does not hash to its entry in the digest list.
    #[error("tree chunk {index} does not match its digest")]
    ChunkDigest {
        /// The chunk's index in the content (0 is the first).
        index: u64,
    },
    /// No memory could be reserved for a reassembled object (the allocation failed).
    #[error("no memory for a reassembled object of {need} bytes")]
    NoMemory {
        /// Bytes the object needs.
        need: u64,
    },
    /// The output buffer is too small for an encoder.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}
