//! A split virtqueue (virtio 1.2 section 2.7) whose rings live in the shared window.
//!
//! The rings are host-writable, so the driver never trusts anything it reads back from them:
//! it keeps a private record of every chain it posted (descriptor ids, buffer address and
//! writable length) and checks each used element against that record. Descriptors are written
//! from the private record and never read back. Every access to the rings goes through
//! [`Platform::shared_read`]/[`Platform::shared_write`], one volatile copy per field.

use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use crate::platform::Platform;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver polls and asks the device not to interrupt.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Longest chain the driver posts (ctrlq: message + ack buffer).
pub const MAX_CHAIN: usize = 2;

/// Bytes of a descriptor table of `size` entries.
pub const fn desc_bytes(size: u16) -> u64 {
    16 * size as u64
}
/// Bytes of an available ring of `size` entries (with `used_event`).
pub const fn avail_bytes(size: u16) -> u64 {
    6 + 2 * size as u64
}
/// Bytes of a used ring of `size` entries (with `avail_event`).
pub const fn used_bytes(size: u16) -> u64 {
    6 + 8 * size as u64
}

/// One buffer of a chain, as the driver posts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address (inside the shared window).
    pub gpa: u64,
    /// Length in bytes.
    pub len: u32,
    /// True if the device writes it (device-writable), false if it only reads it.
    pub writable: bool,
}

/// The driver's private record of a posted chain.
#[derive(Debug, Clone, Copy)]
struct Posted {
    descs: [u16; MAX_CHAIN],
    count: usize,
    /// Total device-writable bytes: the largest used length the device may report.
    writable_len: u32,
    token: u32,
}

/// A used element that matched an outstanding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The caller's token given to [`SplitQueue::post`].
    pub token: u32,
    /// Bytes the device says it wrote (checked: `<=` the chain's writable length).
    pub len: u32,
}

/// A used element the driver refused. The chain, when one was identified, is freed so the
/// caller can repost its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsedFault {
    /// The id is not a descriptor index of this queue.
    IdOutOfRange {
        /// What the device wrote.
        id: u32,
    },
    /// The id is a valid index but not the head of a chain the driver has outstanding.
    NotOutstanding {
        /// What the device wrote.
        id: u32,
    },
    /// The length is larger than the writable buffers of the chain.
    LengthTooLong {
        /// The chain's token.
        token: u32,
        /// What the device wrote.
        len: u32,
        /// The chain's writable bytes.
        capacity: u32,
    },
}

/// A protocol violation after which the ring cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The used index moved by more than the number of chains outstanding.
    #[error("queue {queue}: used index advanced by {advance} with {outstanding} chains outstanding; the device is broken, reset it")]
    IndexJump {
        /// Queue index.
        queue: u16,
        /// How far the index moved.
        advance: u16,
        /// How many chains the driver had posted and not seen back.
        outstanding: u16,
    },
}

/// The three ring addresses of a queue inside the shared window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table (16-byte aligned).
    pub desc: u64,
    /// Available ring (2-byte aligned).
    pub avail: u64,
    /// Used ring (4-byte aligned).
    pub used: u64,
}

/// A split virtqueue driven from private bookkeeping.
#[derive(Debug)]
pub struct SplitQueue {
    index: u16,
    size: u16,
    rings: RingAddrs,
    avail_idx: u16,
    last_used: u16,
    /// Indexed by head descriptor id.
    posted: Vec<Option<Posted>>,
    free: Vec<u16>,
    outstanding: u16,
}

impl SplitQueue {
    /// A queue of `size` (a power of two, <= 32768) entries at `rings`; zeroes the rings.
    pub fn new<P: Platform>(p: &P, index: u16, size: u16, rings: RingAddrs, polling: bool) -> Self {
        debug_assert!(size.is_power_of_two() && size <= 32768);
        zero(p, rings.desc, desc_bytes(size));
        zero(p, rings.avail, avail_bytes(size));
        zero(p, rings.used, used_bytes(size));
        if polling {
            p.shared_write(rings.avail, &AVAIL_F_NO_INTERRUPT.to_le_bytes());
        }
        let mut posted = Vec::new();
        posted.resize(usize::from(size), None);
        Self {
            index,
            size,
            rings,
            avail_idx: 0,
            last_used: 0,
            posted,
            free: (0..size).rev().collect(),
            outstanding: 0,
        }
    }

    /// The queue index (0 requestq, 1 stagingq, 2 ctrlq).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Chains posted and not yet returned.
    pub fn outstanding(&self) -> u16 {
        self.outstanding
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Posts a chain and publishes it in the available ring. Returns false (posting nothing)
    /// if there are not enough free descriptors or the chain is empty or too long.
    pub fn post<P: Platform>(&mut self, p: &P, segments: &[Segment], token: u32) -> bool {
        if segments.is_empty() || segments.len() > MAX_CHAIN || self.free.len() < segments.len() {
            return false;
        }
        let mut descs = [0u16; MAX_CHAIN];
        for d in descs.iter_mut().take(segments.len()) {
            // Checked above: enough free descriptors.
            *d = self.free.pop().unwrap_or_default();
        }
        let mut writable_len = 0u32;
        for (i, seg) in segments.iter().enumerate() {
            let mut flags = 0;
            let mut next = 0;
            if seg.writable {
                flags |= DESC_F_WRITE;
                writable_len = writable_len.saturating_add(seg.len);
            }
            if i + 1 < segments.len() {
                flags |= DESC_F_NEXT;
                next = descs[i + 1];
            }
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&seg.gpa.to_le_bytes());
            d[8..12].copy_from_slice(&seg.len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            p.shared_write(self.rings.desc + 16 * u64::from(descs[i]), &d);
        }
        let head = descs[0];
        self.posted[usize::from(head)] = Some(Posted {
            descs,
            count: segments.len(),
            writable_len,
            token,
        });
        self.outstanding += 1;
        let slot = u64::from(self.avail_idx & (self.size - 1));
        p.shared_write(self.rings.avail + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The ring entry must be visible before the index that publishes it.
        fence(Ordering::SeqCst);
        p.shared_write(self.rings.avail + 2, &self.avail_idx.to_le_bytes());
        fence(Ordering::SeqCst);
        true
    }

    /// Reads the used index once and takes every new used element, checking each against the
    /// private record. Good elements and faults are appended to `out` in ring order.
    pub fn collect<P: Platform>(
        &mut self,
        p: &P,
        out: &mut Vec<Result<Used, UsedFault>>,
    ) -> Result<(), QueueError> {
        let mut idx = [0u8; 2];
        p.shared_read(self.rings.used + 2, &mut idx);
        let used_idx = u16::from_le_bytes(idx);
        let advance = used_idx.wrapping_sub(self.last_used);
        if advance == 0 {
            return Ok(());
        }
        if advance > self.outstanding {
            return Err(QueueError::IndexJump {
                queue: self.index,
                advance,
                outstanding: self.outstanding,
            });
        }
        // Read the elements only after the index that published them.
        fence(Ordering::SeqCst);
        for _ in 0..advance {
            let slot = u64::from(self.last_used & (self.size - 1));
            self.last_used = self.last_used.wrapping_add(1);
            let mut e = [0u8; 8];
            p.shared_read(self.rings.used + 4 + 8 * slot, &mut e);
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            out.push(self.take(id, len));
        }
        Ok(())
    }

    fn take(&mut self, id: u32, len: u32) -> Result<Used, UsedFault> {
        if id >= u32::from(self.size) {
            return Err(UsedFault::IdOutOfRange { id });
        }
        let Some(posted) = self.posted[id as usize].take() else {
            return Err(UsedFault::NotOutstanding { id });
        };
        self.outstanding -= 1;
        self.free
            .extend_from_slice(&posted.descs[..posted.count.min(MAX_CHAIN)]);
        if len > posted.writable_len {
            return Err(UsedFault::LengthTooLong {
                token: posted.token,
                len,
                capacity: posted.writable_len,
            });
        }
        Ok(Used {
            token: posted.token,
            len,
        })
    }
}

fn zero<P: Platform>(p: &P, gpa: u64, len: u64) {
    const ZEROS: [u8; 256] = [0; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(ZEROS.len() as u64);
        p.shared_write(gpa + off, &ZEROS[..n as usize]);
        off += n;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Shared memory only; the test plays the device by hand.
    struct Mem(RefCell<Vec<u8>>);

    impl Platform for Mem {
        fn mmio_read32(&self, _: usize) -> u32 {
            0
        }
        fn mmio_write32(&self, _: usize, _: u32) {}
        fn shared_read(&self, gpa: u64, dst: &mut [u8]) {
            let m = self.0.borrow();
            dst.copy_from_slice(&m[gpa as usize..gpa as usize + dst.len()]);
        }
        fn shared_write(&self, gpa: u64, src: &[u8]) {
            self.0.borrow_mut()[gpa as usize..gpa as usize + src.len()].copy_from_slice(src);
        }
        fn now_ns(&self) -> u64 {
            0
        }
        fn wait_for_event(&mut self, _: u64) {}
        fn fill_random(&mut self, _: &mut [u8]) {}
    }

    const RINGS: RingAddrs = RingAddrs {
        desc: 0,
        avail: 0x1000,
        used: 0x2000,
    };

    fn used(p: &Mem, slot: u64, id: u32, len: u32, idx: u16) {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&id.to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        p.shared_write(RINGS.used + 4 + 8 * slot, &e);
        p.shared_write(RINGS.used + 2, &idx.to_le_bytes());
    }

    fn setup() -> (Mem, SplitQueue) {
        let p = Mem(RefCell::new(vec![0xAA; 0x3000]));
        let q = SplitQueue::new(&p, 1, 4, RINGS, false);
        (p, q)
    }

    fn buf(gpa: u64) -> [Segment; 1] {
        [Segment {
            gpa,
            len: 100,
            writable: true,
        }]
    }

    #[test]
    fn posts_descriptors_and_publishes_the_avail_index() {
        let (p, mut q) = setup();
        assert!(q.post(&p, &buf(0x4000), 7));
        let chain = [
            Segment {
                gpa: 0x5000,
                len: 10,
                writable: false,
            },
            Segment {
                gpa: 0x6000,
                len: 64,
                writable: true,
            },
        ];
        assert!(q.post(&p, &chain, 8));
        let mut b = [0u8; 2];
        p.shared_read(RINGS.avail + 2, &mut b);
        assert_eq!(u16::from_le_bytes(b), 2);
        // The second chain's head links to its ack descriptor with NEXT, the ack is WRITE.
        p.shared_read(RINGS.avail + 6, &mut b);
        let head = u16::from_le_bytes(b);
        let mut d = [0u8; 16];
        p.shared_read(16 * u64::from(head), &mut d);
        assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), 0x5000);
        assert_eq!(u16::from_le_bytes([d[12], d[13]]), DESC_F_NEXT);
        let next = u16::from_le_bytes([d[14], d[15]]);
        p.shared_read(16 * u64::from(next), &mut d);
        assert_eq!(u16::from_le_bytes([d[12], d[13]]), DESC_F_WRITE);
        assert_eq!(q.outstanding(), 2);
        assert_eq!(q.free_descriptors(), 1);
        assert!(!q.post(&p, &chain, 9), "not enough descriptors left");
    }

    #[test]
    fn checks_every_used_element_against_the_private_record() {
        let (p, mut q) = setup();
        q.post(&p, &buf(0x4000), 70);
        q.post(&p, &buf(0x4100), 71);
        q.post(&p, &buf(0x4200), 72);
        // Heads were handed out 0, 1, 2.
        used(&p, 0, 9, 1, 1); // out of range
        used(&p, 1, 3, 1, 2); // in range, never posted
        used(&p, 2, 1, 101, 3); // too long
        let mut out = Vec::new();
        q.collect(&p, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Err(UsedFault::IdOutOfRange { id: 9 }),
                Err(UsedFault::NotOutstanding { id: 3 }),
                Err(UsedFault::LengthTooLong {
                    token: 71,
                    len: 101,
                    capacity: 100
                }),
            ]
        );
        out.clear();
        used(&p, 3, 0, 100, 4);
        used(&p, 0, 0, 100, 5); // the same id again: no longer outstanding
        q.collect(&p, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Ok(Used {
                    token: 70,
                    len: 100
                }),
                Err(UsedFault::NotOutstanding { id: 0 })
            ]
        );
        assert_eq!(q.outstanding(), 1);
    }

    #[test]
    fn refuses_an_index_jump() {
        let (p, mut q) = setup();
        q.post(&p, &buf(0x4000), 1);
        q.post(&p, &buf(0x4100), 2);
        p.shared_write(RINGS.used + 2, &3u16.to_le_bytes());
        let mut out = Vec::new();
        assert_eq!(
            q.collect(&p, &mut out),
            Err(QueueError::IndexJump {
                queue: 1,
                advance: 3,
                outstanding: 2
            })
        );
        assert!(out.is_empty());
        // A jump backwards is a huge forward advance in u16 arithmetic: refused too.
        p.shared_write(RINGS.used + 2, &u16::MAX.to_le_bytes());
        assert!(q.collect(&p, &mut out).is_err());
    }

    #[test]
    fn wraps_the_16_bit_indices() {
        let (p, mut q) = setup();
        let mut out = Vec::new();
        for round in 0..70_000u32 {
            assert!(q.post(&p, &buf(0x4000), round));
            let mut b = [0u8; 2];
            let slot = u64::from((round as u16) & 3);
            p.shared_read(RINGS.avail + 4 + 2 * slot, &mut b);
            let head = u16::from_le_bytes(b);
            used(&p, slot, u32::from(head), 5, (round + 1) as u16);
            out.clear();
            q.collect(&p, &mut out).unwrap();
            assert_eq!(
                out,
                vec![Ok(Used {
                    token: round,
                    len: 5
                })]
            );
        }
    }
}
