//! The serve app's requests (`see.app=serve`, docs/ARCHITECTURE.md): the operation codes, the
//! argument codec and the completion statuses.
//!
//! A request's arguments are an operation (`u32` LE), 4 reserved bytes (zero), then `u64` LE
//! words whose meaning depends on the operation (task ids, (task, resource) pairs, ...).

use core::fmt;

/// Claim (or demand-fetch) every resource of the listed tasks and work on them.
pub const OP_RUN: u32 = 1;
/// Per listed task, wait until staged, time the claim and a demand fetch.
pub const OP_BENCH: u32 = 2;
/// Time until every resource of the listed tasks is staged.
pub const OP_THROUGHPUT: u32 = 3;
/// (task, resource) pairs: claim and fetch attempts that may be refused.
pub const OP_PROBE: u32 = 4;
/// (task, resource) pairs: wait until staged, without claiming.
pub const OP_AWAIT: u32 = 5;
/// Reset the device: a new session (fresh nonce, next epoch).
pub const OP_RESET: u32 = 6;
/// Point the next staging descriptor at a private heap buffer (the backend must refuse it).
pub const OP_BAD_DESCRIPTOR: u32 = 7;
/// Check that the private buffer of [`OP_BAD_DESCRIPTOR`] was not written.
pub const OP_VICTIM: u32 = 8;
/// (task, resource, buffer size) triples, each claimed through the C ABI.
pub const OP_C_CLAIM: u32 = 9;
/// Run Wasm tasks: per task, (task id, fuel, memory limit in bytes); the task's code resource
/// is its module, its data resources are the module's inputs.
pub const OP_RUN_WASM: u32 = 10;
/// Print the counters and end the VM with success.
pub const OP_STOP: u32 = 0xFFFF;

/// A completion's status when every task ran (SPEC.md, Complete).
pub const STATUS_OK: u32 = 0;
/// A completion's status when a task's resource failed processing.
pub const STATUS_WORK_FAILED: u32 = 1;

/// [`OP_RUN_WASM`]: a task's module trapped.
pub const STATUS_TASK_TRAPPED: u32 = 2;
/// [`OP_RUN_WASM`]: a task used up its fuel.
pub const STATUS_OUT_OF_FUEL: u32 = 3;
/// [`OP_RUN_WASM`]: a task's memory went past its limit.
pub const STATUS_MEMORY_LIMIT: u32 = 4;
/// [`OP_RUN_WASM`]: a task's module did not compile (invalid, a forbidden import, the wrong
/// interface), or the task has not exactly one code resource.
pub const STATUS_BAD_MODULE: u32 = 5;
/// [`OP_RUN_WASM`]: a task's `run` reported a failure, set no result, or could not claim an
/// input.
pub const STATUS_TASK_FAILED: u32 = 6;

/// What a completion status means, for logs and reports.
pub fn status_reason(status: u32) -> &'static str {
    match status {
        STATUS_OK => "ok",
        STATUS_WORK_FAILED => "a task's resource failed processing",
        STATUS_TASK_TRAPPED => "a task's module trapped",
        STATUS_OUT_OF_FUEL => "a task ran out of fuel",
        STATUS_MEMORY_LIMIT => "a task went past its memory limit",
        STATUS_BAD_MODULE => "a task's module was refused",
        STATUS_TASK_FAILED => "a task reported a failure",
        _ => "unknown status",
    }
}

/// Bytes before the first word: the operation and 4 reserved bytes.
pub const ARGS_HEADER_LEN: usize = 8;
/// Bytes per word.
pub const WORD_LEN: usize = 8;

/// The encoded length of `words` words of arguments.
pub const fn args_len(words: usize) -> usize {
    ARGS_HEADER_LEN + WORD_LEN * words
}

/// Why request arguments could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// Fewer than [`ARGS_HEADER_LEN`] bytes: no operation.
    TooShort(usize),
    /// The reserved bytes after the operation are not zero.
    Reserved([u8; 4]),
    /// The words are not a whole number of `u64`s.
    PartialWord(usize),
    /// The caller's buffer cannot hold the encoding.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort(n) => write!(
                f,
                "request arguments are {n} bytes, shorter than the {ARGS_HEADER_LEN}-byte header (operation and reserved bytes)"
            ),
            Self::Reserved(r) => write!(f, "reserved argument bytes are {r:02x?}, not zero"),
            Self::PartialWord(n) => write!(
                f,
                "{n} bytes of words after the header is not a multiple of {WORD_LEN}"
            ),
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "encoding the arguments needs {needed} bytes, the buffer holds {available}"
            ),
        }
    }
}

impl core::error::Error for ArgsError {}

/// Decoded request arguments, borrowing the request's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args<'a> {
    /// The operation (`OP_*`).
    pub op: u32,
    words: &'a [u8],
}

impl<'a> Args<'a> {
    /// Parses `bytes`: an operation, 4 zero bytes and whole `u64` words.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ArgsError> {
        let (header, words) = bytes
            .split_first_chunk::<ARGS_HEADER_LEN>()
            .ok_or(ArgsError::TooShort(bytes.len()))?;
        let [o0, o1, o2, o3, r0, r1, r2, r3] = *header;
        if [r0, r1, r2, r3] != [0; 4] {
            return Err(ArgsError::Reserved([r0, r1, r2, r3]));
        }
        if !words.len().is_multiple_of(WORD_LEN) {
            return Err(ArgsError::PartialWord(words.len()));
        }
        Ok(Self {
            op: u32::from_le_bytes([o0, o1, o2, o3]),
            words,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len() / WORD_LEN
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, in order.
    pub fn words(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.words.chunks_exact(WORD_LEN).map(|c| {
            let mut w = [0u8; WORD_LEN];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
    }
}

/// Encodes `op` and `words` into `buf`; returns the encoded length.
pub fn encode_args_into(op: u32, words: &[u64], buf: &mut [u8]) -> Result<usize, ArgsError> {
    let needed = args_len(words.len());
    let available = buf.len();
    let out = buf
        .get_mut(..needed)
        .ok_or(ArgsError::BufferTooSmall { needed, available })?;
    out[..4].copy_from_slice(&op.to_le_bytes());
    out[4..ARGS_HEADER_LEN].fill(0);
    for (chunk, w) in out[ARGS_HEADER_LEN..].chunks_exact_mut(WORD_LEN).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    Ok(needed)
}

/// Encodes `op` and `words` as a request's arguments.
#[cfg(feature = "alloc")]
pub fn encode_args(op: u32, words: &[u64]) -> alloc::vec::Vec<u8> {
    let mut buf = alloc::vec![0u8; args_len(words.len())];
    let n = encode_args_into(op, words, &mut buf).unwrap_or(0);
    debug_assert_eq!(n, buf.len());
    buf
}

/// Parses `bytes` into the operation and its words.
#[cfg(feature = "alloc")]
pub fn decode_args(bytes: &[u8]) -> Result<(u32, alloc::vec::Vec<u64>), ArgsError> {
    let args = Args::parse(bytes)?;
    Ok((args.op, args.words().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_op_reserved_then_words() {
        let mut buf = [0xAAu8; 32];
        let n = encode_args_into(OP_PROBE, &[7, 0x0102_0304_0506_0708], &mut buf).unwrap();
        assert_eq!(n, 24);
        assert_eq!(&buf[..8], &[4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[24..], &[0xAA; 8], "wrote past the encoding");
    }

    #[test]
    fn a_small_buffer_is_an_error() {
        let mut buf = [0u8; 15];
        assert_eq!(
            encode_args_into(OP_RUN, &[1], &mut buf),
            Err(ArgsError::BufferTooSmall {
                needed: 16,
                available: 15
            })
        );
    }

    #[test]
    fn encode_and_parse_round_trip() {
        for words in [&[][..], &[1], &[u64::MAX, 0, 42]] {
            let bytes = encode_args(OP_C_CLAIM, words);
            let args = Args::parse(&bytes).unwrap();
            assert_eq!(args.op, OP_C_CLAIM);
            assert_eq!(args.len(), words.len());
            assert_eq!(args.is_empty(), words.is_empty());
            assert_eq!(args.words().collect::<Vec<_>>(), words);
            assert_eq!(decode_args(&bytes).unwrap(), (OP_C_CLAIM, words.to_vec()));
        }
        assert_eq!(
            decode_args(&encode_args(OP_STOP, &[])).unwrap(),
            (0xFFFF, vec![])
        );
    }

    #[test]
    fn malformed_arguments_are_typed_errors() {
        assert_eq!(Args::parse(&[]), Err(ArgsError::TooShort(0)));
        assert_eq!(Args::parse(&[1, 0, 0, 0]), Err(ArgsError::TooShort(4)));
        assert_eq!(
            Args::parse(&[1, 0, 0, 0, 0, 9, 0, 0]),
            Err(ArgsError::Reserved([0, 9, 0, 0]))
        );
        let mut bytes = encode_args(OP_RUN, &[3]);
        bytes.push(0);
        assert_eq!(Args::parse(&bytes), Err(ArgsError::PartialWord(9)));
        for e in [
            ArgsError::TooShort(3),
            ArgsError::Reserved([1; 4]),
            ArgsError::PartialWord(5),
        ] {
            assert!(!format!("{e}").is_empty());
        }
    }

    #[test]
    fn statuses_have_reasons() {
        assert_eq!(status_reason(STATUS_OK), "ok");
        assert!(status_reason(STATUS_WORK_FAILED).contains("failed"));
        assert_eq!(status_reason(77), "unknown status");
    }
}
