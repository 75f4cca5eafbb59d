//! Deterministic resource contents: the same [`Spec`] gives the same bytes on every machine.

use alloc::{string::String, vec::Vec};
use core::fmt::Write;

use miniz_oxide::deflate::compress_to_vec;

use crate::{Header, Kind, WorkloadError, HEADER_LEN, MAX_SIZE, MIN_SIZE};

/// Payload bytes per record (a record ends at the first line break past this).
const RECORD_TARGET: usize = 4096;
/// Deflate level: 1..=10. 6 is zlib's default balance of ratio and host generation speed.
const LEVEL: u8 = 6;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// The resource's numeric id.
    pub resource_id: u64,
    /// Its version: another version has other contents.
    pub version: u64,
    /// The exact length of the result, in [`MIN_SIZE`]..=[`MAX_SIZE`].
    pub size: u64,
    /// Code or data.
    pub kind: Kind,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const OPS: [&str; 12] = [
    "load", "store", "add", "mul", "xor", "cmp", "jmp", "call", "ret", "shl", "and", "hash",
];
const CATEGORIES: [&str; 8] = [
    "shoes", "books", "garden", "audio", "toys", "kitchen", "sport", "office",
];

/// One text line of `kind`.
fn line(rng: &mut Rng, kind: Kind, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = match kind {
        Kind::Code => writeln!(
            out,
            "{} r{} r{} {}",
            OPS[rng.below(OPS.len() as u64) as usize],
            rng.below(16),
            rng.below(16),
            rng.below(4096)
        ),
        Kind::Data => writeln!(
            out,
            "sku-{:06},{},{},{}",
            rng.below(50_000),
            100 + rng.below(20_000),
            1 + rng.below(9),
            CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize]
        ),
    };
}

/// Records of about `raw_target` bytes in total; returns (raw bytes, record count).
fn records(spec: &Spec, raw_target: usize) -> (Vec<u8>, u32) {
    let mut rng = Rng(spec.resource_id.rotate_left(32) ^ spec.version ^ ((spec.kind as u64) << 60));
    let mut raw = Vec::with_capacity(raw_target + RECORD_TARGET + 64);
    let mut count = 0u32;
    let mut text = String::with_capacity(RECORD_TARGET + 64);
    while raw.len() < raw_target || count == 0 {
        text.clear();
        let want = RECORD_TARGET
            .min(raw_target.saturating_sub(raw.len()))
            .max(1);
        while text.len() < want {
            line(&mut rng, spec.kind, &mut text);
        }
        raw.extend_from_slice(&(spec.kind as u16).to_le_bytes());
        raw.extend_from_slice(&0u16.to_le_bytes());
        raw.extend_from_slice(&(text.len() as u32).to_le_bytes());
        raw.extend_from_slice(text.as_bytes());
        raw.extend_from_slice(&crc32fast::hash(text.as_bytes()).to_le_bytes());
        count += 1;
    }
    (raw, count)
}

/// The contents of the resource `spec`: exactly `spec.size` bytes.
pub fn generate(spec: &Spec) -> Result<Vec<u8>, WorkloadError> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&spec.size) {
        return Err(WorkloadError::Size(spec.size));
    }
    let budget = spec.size as usize - HEADER_LEN;
    // Text of this shape deflates about 3x; a few rounds bring the stream within ~2% of the
    // budget, and the filler takes the rest.
    let mut raw_target = budget * 3;
    let mut best: Option<(Vec<u8>, Vec<u8>, u32)> = None;
    for _ in 0..8 {
        let (raw, count) = records(spec, raw_target);
        let deflated = compress_to_vec(&raw, LEVEL);
        let fits = deflated.len() <= budget;
        let close = fits && deflated.len() * 50 >= budget * 49;
        let scale = budget as f64 * if fits { 0.995 } else { 0.97 } / deflated.len() as f64;
        if fits {
            best = Some((raw, deflated, count));
        }
        if close {
            break;
        }
        raw_target = ((raw_target as f64 * scale) as usize).max(1);
    }
    let (raw, deflated, records) = match best {
        Some(b) => b,
        None => {
            // Tiny budgets: one minimal record always fits in MIN_SIZE.
            let (raw, count) = records(spec, 1);
            let deflated = compress_to_vec(&raw, LEVEL);
            if deflated.len() > budget {
                return Err(WorkloadError::Size(spec.size));
            }
            (raw, deflated, count)
        }
    };
    let mut body = deflated;
    let deflate_len = body.len() as u32;
    let mut rng = Rng(spec.resource_id ^ spec.version.rotate_left(17) ^ 0xF111);
    while body.len() < budget {
        let word = rng.next().to_le_bytes();
        let n = (budget - body.len()).min(8);
        body.extend_from_slice(&word[..n]);
    }
    let mut header = Header {
        kind: spec.kind,
        resource_id: spec.resource_id,
        version: spec.version,
        records,
        raw_len: raw.len() as u32,
        deflate_len,
        crc: 0,
    };
    header.crc = header.checksum(&body);
    let mut out = Vec::with_capacity(spec.size as usize);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    Ok(out)
}
