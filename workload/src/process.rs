//! The work a guest task does on a claimed resource: check, inflate, parse, checksum.

use miniz_oxide::inflate::decompress_to_vec_with_limit;

use crate::{Header, Kind, WorkloadError, HEADER_LEN, MAX_SIZE, RECORD_OVERHEAD};

/// What [`process`] found: the guest reports it, the host compares it with its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Summary {
    /// From the header.
    pub kind: Kind,
    /// From the header.
    pub resource_id: u64,
    /// From the header.
    pub version: u64,
    /// Records parsed.
    pub records: u32,
    /// Text lines parsed.
    pub lines: u64,
    /// Fields parsed.
    pub fields: u64,
    /// Sum of the numeric fields (wrapping).
    pub numeric_sum: u64,
    /// A 64-bit digest folded over every record's CRC and every field.
    pub digest: u64,
}

/// FNV-1a style fold of a 64-bit word into the digest.
fn fold(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x0000_0100_0000_01B3)
}

/// Parses one record's text in one pass: lines of fields separated by `,` or spaces; a field
/// of digits is a number (at most 19 digits), any other field must be printable ASCII and is
/// hashed. One multiply per field, a few instructions per byte: the guest runs this emulated.
fn parse_text(text: &[u8], index: u32, s: &mut Summary) -> Result<(), WorkloadError> {
    let bad = |reason| WorkloadError::Record { index, reason };
    if text.last() != Some(&b'\n') {
        return Err(bad("text does not end with a line break"));
    }
    let (mut len, mut digits, mut n, mut h) = (0usize, true, 0u64, 0u64);
    let mut line_empty = true;
    for &b in text {
        match b {
            b'0'..=b'9' => {
                n = n.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                h = h.rotate_left(5) ^ u64::from(b);
                len += 1;
            }
            b',' | b' ' | b'\n' => {
                if len == 0 {
                    return Err(bad(if b == b'\n' && line_empty {
                        "empty line"
                    } else {
                        "empty field"
                    }));
                }
                let value = if digits {
                    if len > 19 {
                        return Err(bad("number too long"));
                    }
                    s.numeric_sum = s.numeric_sum.wrapping_add(n);
                    n
                } else {
                    h
                };
                s.fields += 1;
                s.digest = fold(s.digest, value);
                (len, digits, n, h) = (0, true, 0, 0);
                line_empty = b == b'\n';
                if line_empty {
                    s.lines += 1;
                }
            }
            0x21..=0x7e => {
                h = h.rotate_left(5) ^ u64::from(b);
                digits = false;
                len += 1;
            }
            _ => return Err(bad("non-printable byte in a field")),
        }
    }
    Ok(())
}

/// Checks, inflates, parses and checksums one resource. Never panics on any input.
pub fn process(bytes: &[u8]) -> Result<Summary, WorkloadError> {
    let header = Header::parse(bytes)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(WorkloadError::BadHeader("resource larger than MAX_SIZE"));
    }
    let body = &bytes[HEADER_LEN..];
    let computed = header.checksum(body);
    if computed != header.crc {
        return Err(WorkloadError::Checksum {
            stored: header.crc,
            computed,
        });
    }
    let stream = body
        .get(..header.deflate_len as usize)
        .ok_or(WorkloadError::Truncated("deflate_len runs past the end"))?;
    let raw = decompress_to_vec_with_limit(stream, header.raw_len as usize)
        .map_err(|_| WorkloadError::Inflate("corrupt stream or longer than raw_len"))?;
    if raw.len() != header.raw_len as usize {
        return Err(WorkloadError::Inflate("shorter than raw_len"));
    }
    let mut s = Summary {
        kind: header.kind,
        resource_id: header.resource_id,
        version: header.version,
        records: 0,
        lines: 0,
        fields: 0,
        numeric_sum: 0,
        digest: 0xCBF2_9CE4_8422_2325,
    };
    let mut rest = raw.as_slice();
    for index in 0..header.records {
        let bad = |reason| WorkloadError::Record { index, reason };
        if rest.len() < RECORD_OVERHEAD {
            return Err(bad("truncated record header"));
        }
        let tag = u16::from_le_bytes([rest[0], rest[1]]);
        if tag != header.kind as u16 || rest[2..4] != [0, 0] {
            return Err(bad("tag does not match the resource kind"));
        }
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if len > rest.len() - RECORD_OVERHEAD {
            return Err(bad("length runs past the records"));
        }
        let text = &rest[8..8 + len];
        let c = &rest[8 + len..RECORD_OVERHEAD + len];
        let stored = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let crc = crc32fast::hash(text);
        if crc != stored {
            return Err(bad("CRC-32 mismatch"));
        }
        s.digest = fold(s.digest, u64::from(crc));
        parse_text(text, index, &mut s)?;
        s.records += 1;
        rest = &rest[RECORD_OVERHEAD + len..];
    }
    if !rest.is_empty() {
        return Err(WorkloadError::Inflate("bytes after the last record"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use alloc::{string::ToString, vec::Vec};

    use super::*;
    use crate::{generate, Spec};

    fn spec(id: u64, size: u64, kind: Kind) -> Spec {
        Spec {
            resource_id: id,
            version: 3,
            size,
            kind,
        }
    }

    #[test]
    fn round_trip_matches_the_spec() {
        for kind in [Kind::Code, Kind::Data] {
            let bytes = generate(&spec(7, 48 << 10, kind)).unwrap();
            assert_eq!(bytes.len(), 48 << 10);
            let s = process(&bytes).unwrap();
            assert_eq!((s.kind, s.resource_id, s.version), (kind, 7, 3));
            assert!(s.records >= 2 && s.lines > 100 && s.fields >= 4 * s.lines);
            assert_eq!(process(&bytes).unwrap(), s, "deterministic");
        }
    }

    #[test]
    fn generation_is_deterministic_and_versioned() {
        let a = generate(&spec(1, 20_000, Kind::Data)).unwrap();
        assert_eq!(a, generate(&spec(1, 20_000, Kind::Data)).unwrap());
        let other_version = generate(&Spec {
            version: 4,
            ..spec(1, 20_000, Kind::Data)
        })
        .unwrap();
        assert_ne!(
            process(&a).unwrap().digest,
            process(&other_version).unwrap().digest
        );
        let other_id = generate(&spec(2, 20_000, Kind::Data)).unwrap();
        assert_ne!(
            process(&a).unwrap().digest,
            process(&other_id).unwrap().digest
        );
    }

    #[test]
    fn size_table_is_exact_and_compressed() {
        // The catalogue's range: KiB to a few MiB. Records inflate to 2..5x the size.
        for (size, kind) in [
            (256u64, Kind::Code),
            (16 << 10, Kind::Data),
            (160 << 10, Kind::Code),
            (1 << 20, Kind::Data),
            (3 << 20, Kind::Data),
        ] {
            let bytes = generate(&spec(9, size, kind)).unwrap();
            assert_eq!(bytes.len() as u64, size);
            let h = Header::parse(&bytes).unwrap();
            let s = process(&bytes).unwrap();
            assert_eq!(s.records, h.records);
            if size >= 16 << 10 {
                let ratio = f64::from(h.raw_len) / size as f64;
                assert!((2.0..5.0).contains(&ratio), "{size}: ratio {ratio}");
                // The filler is small: the stream fills at least 90% of the body.
                assert!(u64::from(h.deflate_len) * 10 >= (size - HEADER_LEN as u64) * 9);
            }
        }
        assert_eq!(
            generate(&spec(1, 10, Kind::Code)),
            Err(WorkloadError::Size(10))
        );
        assert!(generate(&spec(1, MAX_SIZE + 1, Kind::Code)).is_err());
    }

    #[test]
    fn every_single_byte_corruption_is_an_error() {
        let bytes = generate(&spec(5, 2048, Kind::Code)).unwrap();
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(process(&bad).is_err(), "flip at {i} not detected");
        }
        for cut in [0, 10, HEADER_LEN, bytes.len() - 1] {
            assert!(process(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(process(&longer).is_err());
    }

    /// With the CRC recomputed, the inflate and record checks must catch the damage
    /// themselves (a hostile host can forge a CRC), still without panicking.
    #[test]
    fn forged_crc_still_fails_cleanly() {
        let bytes = generate(&spec(5, 4096, Kind::Data)).unwrap();
        let h = Header::parse(&bytes).unwrap();
        let mut caught = 0;
        for i in (HEADER_LEN..HEADER_LEN + h.deflate_len as usize).step_by(3) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let forged = Header {
                crc: h.checksum(&bad[HEADER_LEN..]),
                ..h
            };
            bad[..HEADER_LEN].copy_from_slice(&forged.encode());
            if process(&bad).is_err() {
                caught += 1;
            }
        }
        assert!(caught > 0);
        // Header fields that lie about the body.
        for forged in [
            Header {
                raw_len: h.raw_len + 1,
                ..h
            },
            Header {
                raw_len: h.raw_len - 1,
                ..h
            },
            Header {
                records: h.records + 1,
                ..h
            },
            Header {
                deflate_len: u32::MAX,
                ..h
            },
            Header {
                raw_len: u32::MAX,
                ..h
            },
            Header {
                records: u32::MAX,
                ..h
            },
        ] {
            let forged = Header {
                crc: forged.checksum(&bytes[HEADER_LEN..]),
                ..forged
            };
            let mut bad = bytes.clone();
            bad[..HEADER_LEN].copy_from_slice(&forged.encode());
            assert!(process(&bad).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn text_parse_rules() {
        let mut s = process(&generate(&spec(1, 1024, Kind::Data)).unwrap()).unwrap();
        let (lines, fields, sum) = (s.lines, s.fields, s.numeric_sum);
        parse_text(b"ab 12,7\nx\n", 0, &mut s).unwrap();
        assert_eq!(
            (s.lines, s.fields, s.numeric_sum),
            (lines + 2, fields + 4, sum + 19)
        );
        for (text, why) in [
            (&b"abc"[..], "line break"),
            (b"\n", "empty line"),
            (b"a\n\n", "empty line"),
            (b"a,,b\n", "empty field"),
            (b"a,\n", "empty field"),
            (b"12345678901234567890\n", "too long"),
            (b"a\tb\n", "non-printable"),
            (b"caf\xc3\xa9\n", "non-printable"),
        ] {
            let err = parse_text(text, 3, &mut s).unwrap_err();
            assert!(err.to_string().contains(why), "{text:?}: {err}");
            assert!(err.to_string().starts_with("record 3"));
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let mut x = 99u32;
        for len in [0usize, 39, 40, 41, 1000] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            assert!(process(&junk).is_err());
        }
        let mut magic_only = [0u8; HEADER_LEN];
        magic_only[..4].copy_from_slice(b"SEEW");
        assert_eq!(process(&magic_only), Err(WorkloadError::BadFormat(0)));
    }
}
