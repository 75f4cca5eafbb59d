//! The floors snapshot (magic "SEEF"): the PTO's signed list of minimum resource versions,
//! bound to one guest session and valid until an expiry, so rollback protection survives a
//! reboot of the guest (whose own record of accepted versions lives in RAM).
//!
//! Layout: a 176-byte header, then `count` entries of 16 bytes, each `(resource_id u64,
//! min_version u64)`, with resource ids strictly increasing (one encoding per set of floors).
//! The signature is ECDSA P-384 over SHA-384 of `tbs_prefix() || entries`.
//!
//! Times are seconds since the Unix epoch as the PTO's host counts them. The guest cannot read
//! a trusted clock; it compares `expires_at` with a lower bound on the time it trusts (see
//! `virtio-prefetch/SPEC.md`, section 8).

use crate::bytes::{Reader, Writer};
use crate::{WireError, MAX_FLOOR_ENTRIES, NONCE_LEN, SIGNATURE_LEN};

/// Domain-separation context in front of every signed floors statement.
pub const FLOORS_CONTEXT: &[u8] = b"SEE-PTO virtio-prefetch floors v1\0";
/// Length of [`FloorsHeader::tbs_prefix`].
pub const FLOORS_TBS_PREFIX_LEN: usize = FLOORS_CONTEXT.len() + 70;
/// Size of one entry.
pub const FLOOR_ENTRY_LEN: usize = 16;

/// One floor: the guest refuses any bundle of `resource_id` below `min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Floor {
    /// The resource.
    pub resource_id: u64,
    /// The lowest version the guest may accept.
    pub min_version: u64,
}

/// The floors snapshot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloorsHeader {
    /// Number of 16-byte entries after the header.
    pub count: u32,
    /// The guest session's nonce (from its Hello).
    pub session_nonce: [u8; NONCE_LEN],
    /// The guest session's epoch.
    pub epoch: u64,
    /// The PTO's floors serial: it rises whenever a floor rises, and never falls.
    pub serial: u64,
    /// When the PTO signed this snapshot (seconds since the Unix epoch, host time).
    pub issued_at: u64,
    /// After this time (same clock) the snapshot must not be accepted; at least `issued_at`.
    pub expires_at: u64,
    /// ECDSA P-384 over SHA-384 of `tbs_prefix() || entries`, r || s.
    pub signature: [u8; SIGNATURE_LEN],
}

impl FloorsHeader {
    /// Encoded size.
    pub const LEN: usize = 176;
    /// "SEEF" in little-endian ASCII.
    pub const MAGIC: u32 = 0x4645_4553;
    /// The format version this build speaks.
    pub const FORMAT_VERSION: u16 = 1;

    /// True when `buf` starts with the floors magic (to tell a snapshot from a bundle).
    pub fn is_floors(buf: &[u8]) -> bool {
        buf.get(..4) == Some(&Self::MAGIC.to_le_bytes()[..])
    }

    /// Parses a whole snapshot: the header and exactly `count` entries after it, with
    /// strictly increasing resource ids and `issued_at <= expires_at`.
    pub fn parse_floors(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        Reader::require(buf, Self::LEN, "floors header")?;
        let mut r = Reader::new(buf, "floors header");
        let magic = r.u32()?;
        if magic != Self::MAGIC {
            return Err(WireError::BadMagic {
                what: "floors",
                found: magic,
            });
        }
        let version = r.u16()?;
        if version != Self::FORMAT_VERSION {
            return Err(WireError::BadVersion {
                what: "floors",
                found: version.into(),
            });
        }
        r.zero_u16("floors.reserved0")?;
        let count = r.u32()?;
        r.zero_u32("floors.reserved1")?;
        if count > MAX_FLOOR_ENTRIES {
            return Err(WireError::TooLarge {
                field: "floors.count",
                value: count.into(),
                limit: MAX_FLOOR_ENTRIES.into(),
            });
        }
        let session_nonce = r.array()?;
        let epoch = r.u64()?;
        let serial = r.u64()?;
        let (issued_at, expires_at) = (r.u64()?, r.u64()?);
        if expires_at < issued_at {
            return Err(WireError::BadValue {
                field: "floors.expires_at",
                value: expires_at,
            });
        }
        let signature = r.array()?;
        let entries = r.rest();
        let expected = count as usize * FLOOR_ENTRY_LEN;
        if entries.len() != expected {
            return Err(WireError::LengthMismatch {
                what: "floors entries",
                declared: expected as u64,
                actual: entries.len() as u64,
            });
        }
        let mut last = None;
        for floor in Self::iter(entries) {
            if last.is_some_and(|id| floor.resource_id <= id) {
                return Err(WireError::BadValue {
                    field: "floors.resource_id (not increasing)",
                    value: floor.resource_id,
                });
            }
            last = Some(floor.resource_id);
        }
        Ok((
            Self {
                count,
                session_nonce,
                epoch,
                serial,
                issued_at,
                expires_at,
                signature,
            },
            entries,
        ))
    }

    /// The floors of a parsed entry block, in order.
    pub fn iter(entries: &[u8]) -> impl Iterator<Item = Floor> + '_ {
        entries.chunks_exact(FLOOR_ENTRY_LEN).map(|e| {
            let mut id = [0u8; 8];
            let mut version = [0u8; 8];
            id.copy_from_slice(&e[..8]);
            version.copy_from_slice(&e[8..]);
            Floor {
                resource_id: u64::from_le_bytes(id),
                min_version: u64::from_le_bytes(version),
            }
        })
    }

    /// The entry block for `floors` (sorted by resource id, one per id) into `out`; returns
    /// the bytes written.
    pub fn encode_entries(floors: &[Floor], out: &mut [u8]) -> Result<usize, WireError> {
        check_floors(floors)?;
        let len = floors.len() * FLOOR_ENTRY_LEN;
        let mut w = Writer::new(out, len)?;
        for f in floors {
            w.u64(f.resource_id);
            w.u64(f.min_version);
        }
        Ok(len)
    }

    /// Encodes header and entries into `out`; returns the bytes written. `floors` must be
    /// sorted by resource id with no id twice, and `count` must be their number.
    pub fn encode(&self, floors: &[Floor], out: &mut [u8]) -> Result<usize, WireError> {
        if floors.len() != self.count as usize {
            return Err(WireError::BadValue {
                field: "floors.count",
                value: self.count.into(),
            });
        }
        if self.expires_at < self.issued_at {
            return Err(WireError::BadValue {
                field: "floors.expires_at",
                value: self.expires_at,
            });
        }
        check_floors(floors)?;
        let len = Self::LEN + floors.len() * FLOOR_ENTRY_LEN;
        let mut w = Writer::new(out, len)?;
        w.u32(Self::MAGIC);
        w.u16(Self::FORMAT_VERSION);
        w.u16(0);
        w.u32(self.count);
        w.u32(0);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.serial);
        w.u64(self.issued_at);
        w.u64(self.expires_at);
        w.bytes(&self.signature);
        for f in floors {
            w.u64(f.resource_id);
            w.u64(f.min_version);
        }
        Ok(len)
    }

    /// The signed prefix: [`FLOORS_CONTEXT`], format version, count, session nonce, epoch,
    /// serial, issue and expiry times, little-endian. The signature covers SHA-384 of this
    /// prefix followed by the raw entries.
    pub fn tbs_prefix(&self) -> [u8; FLOORS_TBS_PREFIX_LEN] {
        let mut out = [0u8; FLOORS_TBS_PREFIX_LEN];
        // The buffer has exactly the right size, so the writer always exists.
        let Ok(mut w) = Writer::new(&mut out, FLOORS_TBS_PREFIX_LEN) else {
            return [0u8; FLOORS_TBS_PREFIX_LEN];
        };
        w.bytes(FLOORS_CONTEXT);
        w.u16(Self::FORMAT_VERSION);
        w.u32(self.count);
        w.bytes(&self.session_nonce);
        w.u64(self.epoch);
        w.u64(self.serial);
        w.u64(self.issued_at);
        w.u64(self.expires_at);
        debug_assert_eq!(w.position(), FLOORS_TBS_PREFIX_LEN);
        out
    }
}

fn check_floors(floors: &[Floor]) -> Result<(), WireError> {
    if floors.len() > MAX_FLOOR_ENTRIES as usize {
        return Err(WireError::TooLarge {
            field: "floors.count",
            value: floors.len() as u64,
            limit: MAX_FLOOR_ENTRIES.into(),
        });
    }
    for pair in floors.windows(2) {
        if pair[1].resource_id <= pair[0].resource_id {
            return Err(WireError::BadValue {
                field: "floors.resource_id (not increasing)",
                value: pair[1].resource_id,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn header(count: u32) -> FloorsHeader {
        FloorsHeader {
            count,
            session_nonce: [7; 32],
            epoch: 3,
            serial: 9,
            issued_at: 1_000,
            expires_at: 2_000,
            signature: [0x55; 96],
        }
    }

    fn floors() -> [Floor; 2] {
        [
            Floor {
                resource_id: 4,
                min_version: 2,
            },
            Floor {
                resource_id: 10,
                min_version: 7,
            },
        ]
    }

    fn encoded() -> vec::Vec<u8> {
        let mut buf = vec![0u8; FloorsHeader::LEN + 32];
        assert_eq!(header(2).encode(&floors(), &mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn round_trips_and_lists_its_floors() {
        let buf = encoded();
        assert!(FloorsHeader::is_floors(&buf));
        let (h, entries) = FloorsHeader::parse_floors(&buf).unwrap();
        assert_eq!(h, header(2));
        assert_eq!(
            FloorsHeader::iter(entries).collect::<vec::Vec<_>>(),
            floors()
        );
        let mut block = [0u8; 32];
        assert_eq!(FloorsHeader::encode_entries(&floors(), &mut block), Ok(32));
        assert_eq!(&block[..], entries);
        assert_eq!(h.tbs_prefix().len(), FLOORS_TBS_PREFIX_LEN);
        assert!(h.tbs_prefix().starts_with(FLOORS_CONTEXT));
    }

    #[test]
    fn the_signed_prefix_covers_every_field_but_the_signature() {
        let base = header(2).tbs_prefix();
        let changes: [fn(&mut FloorsHeader); 6] = [
            |h| h.count += 1,
            |h| h.session_nonce[31] ^= 1,
            |h| h.epoch += 1,
            |h| h.serial += 1,
            |h| h.issued_at += 1,
            |h| h.expires_at += 1,
        ];
        for change in changes {
            let mut h = header(2);
            change(&mut h);
            assert_ne!(h.tbs_prefix(), base);
        }
        let mut h = header(2);
        h.signature = [0; 96];
        assert_eq!(h.tbs_prefix(), base);
    }

    #[test]
    fn refuses_malformed_snapshots() {
        let good = encoded();
        let at = |offset: usize, value: u8| {
            let mut b = good.clone();
            b[offset] = value;
            FloorsHeader::parse_floors(&b).map(|(h, _)| h)
        };
        assert!(matches!(at(0, 0), Err(WireError::BadMagic { .. })));
        assert!(matches!(at(4, 2), Err(WireError::BadVersion { .. })));
        assert_eq!(
            at(6, 1),
            Err(WireError::ReservedNotZero("floors.reserved0"))
        );
        assert!(matches!(at(8, 3), Err(WireError::LengthMismatch { .. })));
        assert_eq!(
            at(12, 1),
            Err(WireError::ReservedNotZero("floors.reserved1"))
        );
        // Count above the limit is refused before the entries are looked at.
        let mut big = good.clone();
        big[8..12].copy_from_slice(&(MAX_FLOOR_ENTRIES + 1).to_le_bytes());
        assert!(matches!(
            FloorsHeader::parse_floors(&big),
            Err(WireError::TooLarge { .. })
        ));
        // Expiry before issue.
        let mut stale = good.clone();
        stale[72..80].copy_from_slice(&999u64.to_le_bytes());
        assert!(matches!(
            FloorsHeader::parse_floors(&stale),
            Err(WireError::BadValue { .. })
        ));
        // Entries out of order, or one id twice.
        let mut dup = good.clone();
        dup[FloorsHeader::LEN + 16..FloorsHeader::LEN + 24].copy_from_slice(&4u64.to_le_bytes());
        assert!(matches!(
            FloorsHeader::parse_floors(&dup),
            Err(WireError::BadValue { .. })
        ));
        // Truncated, or a trailing byte.
        assert!(FloorsHeader::parse_floors(&good[..good.len() - 1]).is_err());
        assert!(FloorsHeader::parse_floors(&good[..100]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(FloorsHeader::parse_floors(&long).is_err());
    }

    #[test]
    fn the_encoder_refuses_what_the_parser_would() {
        let mut buf = [0u8; 512];
        let mut unsorted = floors();
        unsorted.swap(0, 1);
        assert!(header(2).encode(&unsorted, &mut buf).is_err());
        assert!(header(3).encode(&floors(), &mut buf).is_err());
        let mut h = header(2);
        h.expires_at = 1;
        assert!(h.encode(&floors(), &mut buf).is_err());
        assert!(matches!(
            header(2).encode(&floors(), &mut buf[..180]),
            Err(WireError::BufferTooSmall { .. })
        ));
    }
}
