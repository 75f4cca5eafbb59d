//! A deliberately hostile in-process virtio-prefetch device for the host tests.
//!
//! It implements [`Platform`] over a `Vec<u8>` shared window and plays the device side of the
//! virtio-mmio registers and the three split queues. By default it behaves (answers Hello and
//! Demand, signs bundles with the test key); the tests then make it lie: raw used elements,
//! forged chunks, rewritten staging buffers, a vanished backend.
//!
//! Test code (feature `test-device`, needs `std`): it panics on misuse by the driver (an
//! access outside the window), which is exactly what a test should report.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::new_without_default
)]

extern crate std;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    vec,
    vec::Vec,
};

use p384::ecdsa::{signature::Signer, Signature, SigningKey};
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{
    self as wire, Ack, BundleFlags, BundleHeader, Chunk, DeviceConfig, Floor, FloorsHeader,
    ManifestHeader, Message, Request, ResourceKind, Status,
};

use crate::{
    mmio::{reg, status, MAGIC},
    platform::Platform,
    window::SharedWindow,
    InterruptHandle,
};

pub const BASE: u64 = 0xC000_0000;
pub const SIZE: usize = 8 << 20;

#[derive(Debug, Default, Clone, Copy)]
pub struct QueueRegs {
    pub num: u32,
    pub ready: u32,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// A descriptor as the device reads it.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
}

/// What the backend would serve on a demand.
#[derive(Debug, Clone)]
pub struct Served {
    pub app_id: u32,
    pub version: u64,
    pub content: Vec<u8>,
}

/// A message the device received on ctrlq.
#[derive(Debug, Clone)]
pub struct CtrlMsg {
    pub kind: u8,
    pub cookie: u32,
    pub bytes: Vec<u8>,
}

pub struct Dev {
    pub mem: Vec<u8>,
    pub magic: u32,
    pub version: u32,
    pub device_id: u32,
    pub device_features: u64,
    pub features_sel: u32,
    pub driver_features: u64,
    pub driver_features_sel: u32,
    pub queue_sel: u32,
    pub queue_max: u32,
    pub queues: [QueueRegs; 3],
    pub status: u32,
    pub isr: u32,
    pub config: [u8; 16],
    pub now: u64,
    pub rng: u64,
    pub last_avail: [u16; 3],
    pub used_idx: [u16; 3],
    /// Answer ctrlq messages when notified.
    pub answer: bool,
    /// Ack status for Demand (0 = Ok).
    pub demand_status: u32,
    /// Deliver the bundle after acking a demand.
    pub deliver_demands: bool,
    /// Deliver the bundles demanded in one notification in reverse order.
    pub reverse_demands: bool,
    /// Die (DEVICE_NEEDS_RESET) once this many demanded bundles were delivered.
    pub die_after_demands: Option<usize>,
    /// Demanded bundles delivered so far.
    pub demands_delivered: usize,
    /// Most Demand messages answered in one notification (how many were outstanding).
    pub max_demands_per_kick: usize,
    pub key: SigningKey,
    pub nonce: [u8; 32],
    pub epoch: u64,
    pub seq: u64,
    pub stream: u64,
    pub resources: BTreeMap<(u64, u64), Served>,
    pub received: Vec<CtrlMsg>,
    pub irq: Option<InterruptHandle>,
    pub notifies: [u64; 3],
    /// Called (once) when the driver reads this much of a staging buffer: lets a test
    /// rewrite shared memory right after the driver's copy.
    pub after_copy: Option<(u64, Vec<u8>)>,
    pub chunk_len: usize,
    /// Clear FEATURES_OK whatever the driver asks.
    pub refuse_features: bool,
    /// Ack status for Hello.
    pub hello_status: u32,
    /// On a demand, deliver this (app, task, resource) instead of what was asked.
    pub on_demand: Option<(u32, u64, u64)>,
    /// Answer demands with a prefetch (cookie 0) of the same resource.
    pub demand_as_prefetch: bool,
    /// Deliver a signed floors snapshot right after each Hello, as the backend does.
    pub send_floors: bool,
    /// The floors, serial and expiry (seconds) of those snapshots (issued at `expires - 60`).
    pub floors: Vec<Floor>,
    pub floors_serial: u64,
    pub floors_expires: u64,
}

/// The platform handed to the driver; tests keep a clone to act as the device. The state is
/// behind `Arc<Mutex<_>>` so that the platform is `Send` (the C ABI's global driver needs it)
/// without an `unsafe impl`.
#[derive(Clone)]
pub struct TestPlatform(pub Arc<Mutex<Dev>>);

impl core::fmt::Debug for TestPlatform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TestPlatform")
    }
}

pub fn test_key(label: &str) -> SigningKey {
    let seed = Sha384::digest(label.as_bytes());
    SigningKey::from_slice(&seed[..48]).expect("a valid P-384 scalar")
}

impl TestPlatform {
    pub fn new() -> Self {
        let config = DeviceConfig {
            max_content_len: 16 << 20,
            max_chunk_len: 64 << 10,
            queue_sizes: [16, 32, 64],
        }
        .encode();
        Self(Arc::new(Mutex::new(Dev {
            mem: vec![0; SIZE],
            magic: MAGIC,
            version: 2,
            device_id: wire::DEVICE_ID,
            device_features: wire::DEVICE_FEATURES,
            features_sel: 0,
            driver_features: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            queue_max: 256,
            queues: [QueueRegs::default(); 3],
            status: 0,
            isr: 0,
            config,
            now: 1_000_000,
            rng: 0x5EE0_5EE0,
            last_avail: [0; 3],
            used_idx: [0; 3],
            answer: true,
            demand_status: 0,
            deliver_demands: true,
            reverse_demands: false,
            die_after_demands: None,
            demands_delivered: 0,
            max_demands_per_kick: 0,
            key: test_key("pto"),
            nonce: [0; 32],
            epoch: 0,
            seq: 0,
            stream: 0,
            resources: BTreeMap::new(),
            received: Vec::new(),
            irq: None,
            notifies: [0; 3],
            after_copy: None,
            chunk_len: 64 << 10,
            refuse_features: false,
            hello_status: 0,
            on_demand: None,
            demand_as_prefetch: false,
            send_floors: true,
            floors: Vec::new(),
            floors_serial: 1,
            floors_expires: FLOORS_EXPIRES,
        })))
    }

    pub fn window() -> SharedWindow {
        SharedWindow {
            base_gpa: BASE,
            size: SIZE as u64,
        }
    }

    /// The device state, locked (a test that panicked while holding it leaves it usable).
    pub fn dev(&self) -> MutexGuard<'_, Dev> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn off(gpa: u64, len: usize) -> core::ops::Range<usize> {
    let start = gpa
        .checked_sub(BASE)
        .expect("the driver touched memory below the shared window") as usize;
    assert!(
        start + len <= SIZE,
        "the driver touched memory past the shared window"
    );
    start..start + len
}

impl Dev {
    pub fn read(&self, gpa: u64, len: usize) -> &[u8] {
        &self.mem[off(gpa, len)]
    }
    pub fn write(&mut self, gpa: u64, data: &[u8]) {
        self.mem[off(gpa, data.len())].copy_from_slice(data);
    }
    fn u16_at(&self, gpa: u64) -> u16 {
        u16::from_le_bytes(self.read(gpa, 2).try_into().unwrap())
    }

    /// How many chains of queue `q` the driver made available that the device has not taken
    /// yet (0 for a queue that is not set up).
    pub fn posted(&self, q: usize) -> u16 {
        let qr = self.queues[q];
        if qr.num == 0 || qr.avail == 0 {
            return 0;
        }
        self.u16_at(qr.avail + 2).wrapping_sub(self.last_avail[q])
    }

    /// True if queue `q` is set up (it has a size and rings), so its rings can be written.
    pub fn queue_ready(&self, q: usize) -> bool {
        let qr = self.queues[q];
        qr.num != 0 && qr.avail != 0 && qr.used != 0 && qr.desc != 0
    }

    /// Pops the next available chain of queue `q`: (head id, descriptors).
    pub fn pop_avail(&mut self, q: usize) -> Option<(u16, Vec<Desc>)> {
        let qr = self.queues[q];
        let avail_idx = self.u16_at(qr.avail + 2);
        if avail_idx == self.last_avail[q] {
            return None;
        }
        let slot = u64::from(self.last_avail[q] % qr.num as u16);
        let head = self.u16_at(qr.avail + 4 + 2 * slot);
        self.last_avail[q] = self.last_avail[q].wrapping_add(1);
        let mut chain = Vec::new();
        let mut i = head;
        loop {
            let d = self.read(qr.desc + 16 * u64::from(i), 16);
            let desc = Desc {
                addr: u64::from_le_bytes(d[0..8].try_into().unwrap()),
                len: u32::from_le_bytes(d[8..12].try_into().unwrap()),
                flags: u16::from_le_bytes(d[12..14].try_into().unwrap()),
            };
            let next = u16::from_le_bytes(d[14..16].try_into().unwrap());
            chain.push(desc);
            if desc.flags & 1 == 0 || chain.len() > 4 {
                break;
            }
            i = next;
        }
        Some((head, chain))
    }

    /// Writes a used element with any id and length, then publishes it (advance 1).
    pub fn push_used(&mut self, q: usize, id: u32, len: u32) {
        let qr = self.queues[q];
        let slot = u64::from(self.used_idx[q] % qr.num as u16);
        let mut e = [0u8; 8];
        e[0..4].copy_from_slice(&id.to_le_bytes());
        e[4..8].copy_from_slice(&len.to_le_bytes());
        self.write(qr.used + 4 + 8 * slot, &e);
        self.used_idx[q] = self.used_idx[q].wrapping_add(1);
        self.set_used_idx(q, self.used_idx[q]);
    }

    /// Publishes any used index (for the index-jump attack).
    pub fn set_used_idx(&mut self, q: usize, idx: u16) {
        self.used_idx[q] = idx;
        let qr = self.queues[q];
        self.write(qr.used + 2, &idx.to_le_bytes());
        self.isr |= 1;
        if let Some(h) = &self.irq {
            h.on_interrupt();
        }
    }

    /// Writes one raw message into the next staging buffer and returns it used with `len`.
    pub fn stage_raw(&mut self, bytes: &[u8], len: u32) -> Option<(u16, u64)> {
        let (head, chain) = self.pop_avail(1)?;
        let d = chain[0];
        let n = bytes.len().min(d.len as usize);
        self.write(d.addr, &bytes[..n]);
        self.push_used(1, u32::from(head), len);
        Some((head, d.addr))
    }

    /// Delivers `object` (a bundle or manifest) in chunks over stagingq. Returns the staging
    /// buffer address of each chunk.
    pub fn deliver(&mut self, object: &[u8]) -> Vec<u64> {
        self.stream += 1;
        let stream = self.stream;
        let mut addrs = Vec::new();
        let mut offset = 0usize;
        while offset < object.len() {
            let n = (object.len() - offset).min(self.chunk_len);
            let m = chunk_raw(
                stream,
                object.len() as u32,
                offset as u32,
                &object[offset..offset + n],
            );
            let (_, addr) = self
                .stage_raw(&m, m.len() as u32)
                .expect("a staging buffer posted");
            addrs.push(addr);
            offset += n;
        }
        addrs
    }

    /// One chunk message carrying a whole object, on a new stream.
    pub fn chunk_msg(&mut self, object: &[u8]) -> Vec<u8> {
        self.stream += 1;
        chunk_raw(self.stream, object.len() as u32, 0, object)
    }

    /// Answers every pending ctrlq chain (Hello, Demand, Report, Complete).
    pub fn serve_ctrl(&mut self) {
        let mut demanded_bundles = Vec::new();
        let mut demands = 0;
        let mut hello = false;
        while let Some((head, chain)) = self.pop_avail(2) {
            let m = chain[0];
            let bytes = self.read(m.addr, m.len as usize).to_vec();
            let parsed = wire::parse_message(&bytes).ok();
            let (kind, cookie) = parsed.map_or((0, 0), |(h, _)| (h.kind.raw(), h.cookie));
            self.received.push(CtrlMsg {
                kind,
                cookie,
                bytes: bytes.clone(),
            });
            let mut status = Status::Ok;
            let mut demanded = None;
            match parsed.map(|(_, m)| m) {
                Some(Message::Hello(h)) => {
                    self.nonce = h.nonce;
                    self.epoch = h.epoch;
                    self.seq = 0;
                    status = Status::from_raw(self.hello_status).unwrap();
                    hello = true;
                }
                Some(Message::Demand(d)) => {
                    demands += 1;
                    status = Status::from_raw(self.demand_status).unwrap();
                    demanded = Some((d.app_id, d.task_id, d.resource_id));
                }
                Some(_) => {}
                None => status = Status::Malformed,
            }
            if let Some(ack) = chain.get(1) {
                let a = encode(&Message::Ack(Ack { status, detail: 0 }), cookie);
                self.write(ack.addr, &a);
                self.push_used(2, u32::from(head), a.len() as u32);
            }
            if let (Status::Ok, true, Some((_, task, res))) =
                (status, self.deliver_demands, demanded)
            {
                if let Some(s) = self.resources.get(&(task, res)).cloned() {
                    let c = if self.demand_as_prefetch { 0 } else { cookie };
                    // Built (signed, sequence number taken) when delivered, so a reversed
                    // delivery still has increasing sequence numbers.
                    demanded_bundles.push((s, task, res, c));
                }
            }
            if let (Status::Ok, Some((app, task, res))) = (status, demanded.and(self.on_demand)) {
                let b = self
                    .spec(app, task, res, 1, b"not what was asked")
                    .cookie(cookie)
                    .build();
                self.deliver(&b);
            }
        }
        if hello && self.send_floors {
            let snapshot = self.floors_snapshot();
            self.deliver(&snapshot);
        }
        self.max_demands_per_kick = self.max_demands_per_kick.max(demands);
        if self.reverse_demands {
            demanded_bundles.reverse();
        }
        for (s, task, res, c) in demanded_bundles {
            if self.die_after_demands == Some(self.demands_delivered) {
                self.needs_reset();
                return;
            }
            let b = self
                .spec(s.app_id, task, res, s.version, &s.content)
                .cookie(c)
                .build();
            self.deliver(&b);
            self.demands_delivered += 1;
        }
    }

    /// A bundle for this session with the next sequence number, signed with `self.key`.
    pub fn spec(
        &mut self,
        app: u32,
        task: u64,
        res: u64,
        version: u64,
        content: &[u8],
    ) -> BundleSpec {
        self.seq += 1;
        BundleSpec {
            key: self.key.clone(),
            app,
            task,
            res,
            version,
            content: content.to_vec(),
            nonce: self.nonce,
            epoch: self.epoch,
            seq: self.seq,
            cookie: 0,
            in_manifest: false,
        }
    }

    /// Puts a Request message into the next request buffer.
    pub fn send_request(
        &mut self,
        request_id: u64,
        session_id: u64,
        app_id: u32,
        request_type: u32,
        args: &[u8],
    ) {
        let m = encode(
            &Message::Request(Request {
                request_id,
                session_id,
                app_id,
                request_type,
                args,
            }),
            0,
        );
        let (head, chain) = self.pop_avail(0).expect("a request buffer posted");
        self.write(chain[0].addr, &m);
        self.push_used(0, u32::from(head), m.len() as u32);
    }

    /// Puts an Evict message into the next request buffer; false if none is posted.
    pub fn send_evict(&mut self, app_id: u32, resource_id: u64) -> bool {
        let m = encode(
            &Message::Evict(wire::Evict {
                app_id,
                resource_id,
            }),
            0,
        );
        let Some((head, chain)) = self.pop_avail(0) else {
            return false;
        };
        self.write(chain[0].addr, &m);
        self.push_used(0, u32::from(head), m.len() as u32);
        true
    }

    fn ctrl_messages(&self) -> impl Iterator<Item = Message<'_>> {
        self.received
            .iter()
            .filter_map(|m| wire::parse_message(&m.bytes).ok().map(|(_, m)| m))
    }

    /// The kinds of the Reports received so far, in order.
    pub fn report_kinds(&self) -> Vec<u32> {
        self.ctrl_messages()
            .filter_map(|m| match m {
                Message::Report(r) => Some(r.kind.raw()),
                _ => None,
            })
            .collect()
    }

    /// (app, task, resource, min_version) of a Demand.
    pub fn demand_of(&self, m: &CtrlMsg) -> Option<(u32, u64, u64, u64)> {
        match wire::parse_message(&m.bytes).ok()?.1 {
            Message::Demand(d) => Some((d.app_id, d.task_id, d.resource_id, d.min_version)),
            _ => None,
        }
    }

    /// (request id, task count) of every Complete received.
    pub fn completions(&self) -> Vec<(u64, usize)> {
        self.ctrl_messages()
            .filter_map(|m| match m {
                Message::Complete(c) => Some((c.request_id, c.tasks.len())),
                _ => None,
            })
            .collect()
    }
}

/// A chunk message with any fields (the encoder refuses a chunk past its object).
pub fn chunk_raw(stream_id: u64, total_len: u32, offset: u32, data: &[u8]) -> Vec<u8> {
    encode(
        &Message::Chunk(Chunk {
            stream_id,
            total_len,
            offset,
            data,
        }),
        0,
    )
}

fn encode(m: &Message<'_>, cookie: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.encoded_len()];
    let n = m
        .encode(cookie, &mut out)
        .expect("a message within the wire limits");
    out.truncate(n);
    out
}

/// Everything a bundle says; tests change fields before building.
#[derive(Clone)]
pub struct BundleSpec {
    pub key: SigningKey,
    pub app: u32,
    pub task: u64,
    pub res: u64,
    pub version: u64,
    pub content: Vec<u8>,
    pub nonce: [u8; 32],
    pub epoch: u64,
    pub seq: u64,
    pub cookie: u32,
    pub in_manifest: bool,
}

impl BundleSpec {
    pub fn cookie(mut self, cookie: u32) -> Self {
        self.cookie = cookie;
        self
    }

    /// The header, signed (or, in a manifest, unsigned).
    pub fn header(&self) -> BundleHeader {
        let mut flags = if self.cookie == 0 {
            BundleFlags::PREFETCHED
        } else {
            BundleFlags::DEMANDED
        };
        if self.in_manifest {
            flags = flags.union(BundleFlags::IN_MANIFEST);
        }
        let mut h = BundleHeader {
            flags,
            kind: ResourceKind::Data,
            app_id: self.app,
            task_id: self.task,
            resource_id: self.res,
            resource_version: self.version,
            content_len: self.content.len() as u64,
            tree_root: tree_root(self.content.len() as u64, &tree_list(&self.content)),
            session_nonce: self.nonce,
            epoch: self.epoch,
            seq: self.seq,
            demand_cookie: self.cookie,
            signature: [0; 96],
        };
        if !self.in_manifest {
            let sig: Signature = self.key.sign(&h.to_be_signed());
            h.signature.copy_from_slice(&sig.to_bytes());
        }
        h
    }

    /// Header bytes, the digest list, then content.
    pub fn build(&self) -> Vec<u8> {
        self.build_with(|_| {})
    }

    /// Signs, then lets the test change the header (a forged field under a valid signature).
    pub fn build_with(&self, tamper: impl FnOnce(&mut BundleHeader)) -> Vec<u8> {
        let mut h = self.header();
        tamper(&mut h);
        let mut out = vec![0u8; BundleHeader::LEN];
        h.encode(&mut out).expect("a valid header");
        out.extend_from_slice(&tree_list(&self.content));
        out.extend_from_slice(&self.content);
        out
    }

    /// SHA-384 of the statement (a manifest entry).
    pub fn statement_digest(&self) -> [u8; 48] {
        Sha384::digest(self.header().to_be_signed()).into()
    }
}

/// The digest list of `content`: SHA-256 of each tree chunk, in order (SPEC.md section 6).
pub fn tree_list(content: &[u8]) -> Vec<u8> {
    content
        .chunks(virtio_prefetch_wire::TREE_CHUNK_LEN)
        .flat_map(|c| <[u8; 32]>::from(sha2::Sha256::digest(c)))
        .collect()
}

/// The tree root of `content_len` bytes of content with digest list `list`.
pub fn tree_root(content_len: u64, list: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(virtio_prefetch_wire::tree_root_prefix(content_len));
    h.update(list);
    h.finalize().into()
}

/// Expiry of the test device's floors snapshots unless a test sets another.
pub const FLOORS_EXPIRES: u64 = 2_000_000_000;

impl Dev {
    /// A floors snapshot of `self.floors` for this session, signed with `self.key`.
    pub fn floors_snapshot(&self) -> Vec<u8> {
        floors_snapshot(
            &self.key,
            self.nonce,
            self.epoch,
            self.floors_serial,
            self.floors_expires,
            &self.floors,
        )
    }
}

/// A signed floors snapshot (issued 60 s before it expires).
pub fn floors_snapshot(
    key: &SigningKey,
    nonce: [u8; 32],
    epoch: u64,
    serial: u64,
    expires_at: u64,
    floors: &[Floor],
) -> Vec<u8> {
    let mut h = FloorsHeader {
        count: floors.len() as u32,
        session_nonce: nonce,
        epoch,
        serial,
        issued_at: expires_at.saturating_sub(60),
        expires_at,
        signature: [0; 96],
    };
    let mut out = vec![0u8; FloorsHeader::LEN + wire::FLOOR_ENTRY_LEN * floors.len()];
    h.encode(floors, &mut out).expect("valid floors");
    let mut statement = h.tbs_prefix().to_vec();
    statement.extend_from_slice(&out[FloorsHeader::LEN..]);
    let sig: Signature = key.sign(&statement);
    h.signature.copy_from_slice(&sig.to_bytes());
    h.encode(floors, &mut out).expect("valid floors");
    out
}

/// A signed manifest over `entries` for the given session and sequence number.
pub fn manifest(
    key: &SigningKey,
    nonce: [u8; 32],
    epoch: u64,
    seq: u64,
    entries: &[[u8; 48]],
) -> Vec<u8> {
    let mut h = ManifestHeader {
        count: entries.len() as u32,
        session_nonce: nonce,
        epoch,
        seq,
        signature: [0; 96],
    };
    let mut statement = h.tbs_prefix().to_vec();
    for e in entries {
        statement.extend_from_slice(e);
    }
    let sig: Signature = key.sign(&statement);
    h.signature.copy_from_slice(&sig.to_bytes());
    let mut out = vec![0u8; ManifestHeader::LEN + 48 * entries.len()];
    h.encode(entries, &mut out).expect("a valid manifest");
    out
}

impl Dev {
    /// Adds a resource the device serves on demand.
    pub fn serve(&mut self, app_id: u32, task: u64, res: u64, version: u64, content: &[u8]) {
        self.resources.insert(
            (task, res),
            Served {
                app_id,
                version,
                content: content.to_vec(),
            },
        );
    }

    /// The descriptor the next staging chunk will land in (without popping it).
    fn peek_staging(&self) -> Desc {
        let qr = self.queues[1];
        let slot = u64::from(self.last_avail[1] % qr.num as u16);
        let head = self.u16_at(qr.avail + 4 + 2 * slot);
        let d = self.read(qr.desc + 16 * u64::from(head), 16);
        Desc {
            addr: u64::from_le_bytes(d[0..8].try_into().unwrap()),
            len: u32::from_le_bytes(d[8..12].try_into().unwrap()),
            flags: u16::from_le_bytes(d[12..14].try_into().unwrap()),
        }
    }

    pub fn next_staging_addr(&self) -> u64 {
        self.peek_staging().addr
    }

    pub fn next_staging_len(&self) -> u32 {
        self.peek_staging().len
    }

    /// True if the driver asked queue `q` not to interrupt (polling mode).
    pub fn avail_no_interrupt(&self, q: usize) -> bool {
        self.u16_at(self.queues[q].avail) & 1 != 0
    }

    /// The backend dies: DEVICE_NEEDS_RESET and a config-change interrupt.
    pub fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.isr |= 2;
        if let Some(h) = &self.irq {
            h.on_interrupt();
        }
    }
}

impl Platform for TestPlatform {
    fn mmio_read32(&self, offset: usize) -> u32 {
        let d = self.dev();
        let q = d
            .queues
            .get(d.queue_sel as usize)
            .copied()
            .unwrap_or_default();
        match offset {
            reg::MAGIC_VALUE => d.magic,
            reg::VERSION => d.version,
            reg::DEVICE_ID => d.device_id,
            reg::VENDOR_ID => 0x5045_4553,
            reg::DEVICE_FEATURES => (d.device_features >> (32 * (d.features_sel & 1))) as u32,
            reg::QUEUE_NUM_MAX if (d.queue_sel as usize) < 3 => d.queue_max,
            reg::QUEUE_READY => q.ready,
            reg::INTERRUPT_STATUS => d.isr,
            reg::STATUS => d.status,
            reg::CONFIG_GENERATION => 0,
            o if (reg::CONFIG..reg::CONFIG + 16).contains(&o) => {
                let i = o - reg::CONFIG;
                u32::from_le_bytes(d.config[i..i + 4].try_into().unwrap())
            }
            _ => 0,
        }
    }

    fn mmio_write32(&self, offset: usize, value: u32) {
        let mut d = self.dev();
        let sel = d.queue_sel as usize;
        match offset {
            reg::DEVICE_FEATURES_SEL => d.features_sel = value,
            reg::DRIVER_FEATURES_SEL => d.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                let shift = 32 * (d.driver_features_sel & 1);
                d.driver_features =
                    (d.driver_features & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
            }
            reg::QUEUE_SEL => d.queue_sel = value,
            reg::QUEUE_NUM => d.queues[sel].num = value,
            reg::QUEUE_READY => d.queues[sel].ready = value,
            reg::QUEUE_DESC_LOW => {
                d.queues[sel].desc = (d.queues[sel].desc & !0xffff_ffff) | u64::from(value)
            }
            reg::QUEUE_DESC_HIGH => {
                d.queues[sel].desc = (d.queues[sel].desc & 0xffff_ffff) | (u64::from(value) << 32)
            }
            reg::QUEUE_DRIVER_LOW => {
                d.queues[sel].avail = (d.queues[sel].avail & !0xffff_ffff) | u64::from(value)
            }
            reg::QUEUE_DRIVER_HIGH => {
                d.queues[sel].avail = (d.queues[sel].avail & 0xffff_ffff) | (u64::from(value) << 32)
            }
            reg::QUEUE_DEVICE_LOW => {
                d.queues[sel].used = (d.queues[sel].used & !0xffff_ffff) | u64::from(value)
            }
            reg::QUEUE_DEVICE_HIGH => {
                d.queues[sel].used = (d.queues[sel].used & 0xffff_ffff) | (u64::from(value) << 32)
            }
            reg::INTERRUPT_ACK => d.isr &= !value,
            reg::STATUS => {
                if value == 0 {
                    d.queues = [QueueRegs::default(); 3];
                    d.last_avail = [0; 3];
                    d.used_idx = [0; 3];
                    d.driver_features = 0;
                    d.status = 0;
                } else if value & status::FEATURES_OK != 0
                    && (d.refuse_features || d.driver_features & !d.device_features != 0)
                {
                    d.status = value & !status::FEATURES_OK;
                } else {
                    d.status = value;
                }
            }
            reg::QUEUE_NOTIFY => {
                if let Some(n) = d.notifies.get_mut(value as usize) {
                    *n += 1;
                }
                if value == 2 && d.answer {
                    d.serve_ctrl();
                }
            }
            _ => {}
        }
    }

    fn shared_read(&self, gpa: u64, dst: &mut [u8]) {
        let mut d = self.dev();
        dst.copy_from_slice(d.read(gpa, dst.len()));
        // The hostile device rewrites memory right after the driver copied it.
        if let Some((at, _)) = &d.after_copy {
            let range = gpa..gpa + dst.len() as u64;
            if range.contains(at) {
                let (at, bytes) = d.after_copy.take().unwrap();
                d.write(at, &bytes);
            }
        }
    }

    fn shared_write(&self, gpa: u64, src: &[u8]) {
        self.dev().write(gpa, src);
    }

    fn now_ns(&self) -> u64 {
        // Time passes as the driver works: 10 us per reading (a 1 s spin is 100k readings).
        let mut d = self.dev();
        d.now += 10_000;
        d.now
    }

    fn wait_for_event(&mut self, deadline_ns: u64) {
        let mut d = self.dev();
        // Nothing else runs: the next event is the deadline (or a small step).
        d.now = d.now.max(deadline_ns.min(d.now + 1_000_000));
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        let mut d = self.dev();
        for b in buf {
            d.rng = d
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (d.rng >> 56) as u8;
        }
    }
}
