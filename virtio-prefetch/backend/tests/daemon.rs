//! The daemon over a real vhost-user socket, driven by a real `vhost` frontend and split rings
//! built by hand in a memfd region (what a guest driver would do): hello and a demand fetch
//! deliver a correctly signed bundle; a prefetch order delivers one; a descriptor outside the
//! memory the backend was given is refused and the daemon serves the next message; a malformed
//! ctrlq message gets `Malformed` and the daemon keeps serving; every Hello is answered first
//! by a floors snapshot signed for its nonce, and a floors file raised by a signed bundle
//! feeds the snapshot of a later backend.

use std::{
    fs::File,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use p384::ecdsa::{signature::Verifier, Signature, SigningKey, VerifyingKey};
use see_prefetch_backend::{
    floors::Floors, store::DiskStore, Backend, BackendConfig, BackendEvent, BackendHandle,
    PrefetchOrder, QueueName,
};
use vhost::{
    vhost_user::{message::VhostUserProtocolFeatures, Frontend, VhostUserFrontend},
    VhostBackend, VhostUserMemoryRegionInfo, VringConfigData,
};
use virtio_prefetch_wire::{
    parse_message, Ack, BundleHeader, ChunkSequence, Demand, Floor, FloorsHeader, Hello, Message,
    ResourceKind, Status,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const BASE: u64 = 0x1000_0000;
const SIZE: usize = 0x20_0000;
const QSIZE: u16 = 16;
const BUF: u64 = 0x10_0000; // buffers from BASE + BUF
const BUF_LEN: u32 = 8192;

fn key() -> SigningKey {
    let mut bytes = [5u8; 48];
    bytes[0] = 1;
    SigningKey::from_slice(&bytes).unwrap()
}

/// One split ring in the region, with the driver's bookkeeping.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

struct Driver {
    mem: GuestMemoryMmap,
    rings: Vec<Ring>,
    kicks: Vec<EventFd>,
    next_buf: u64,
    _frontend: Frontend,
}

impl Driver {
    fn connect(backend_socket: &std::path::Path) -> Self {
        let memfd = File::from(nix_memfd());
        memfd.set_len(SIZE as u64).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(BASE),
            SIZE,
            Some(FileOffset::new(memfd, 0)),
        )])
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut frontend = loop {
            match Frontend::connect(backend_socket, 3) {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("connect: {e}"),
            }
        };
        frontend.set_owner().unwrap();
        let features = frontend.get_features().unwrap();
        assert_ne!(features & (1 << 32), 0, "VIRTIO_F_VERSION_1 offered");
        let protocol = frontend.get_protocol_features().unwrap();
        assert!(protocol.contains(VhostUserProtocolFeatures::CONFIG));
        frontend
            .set_protocol_features(VhostUserProtocolFeatures::CONFIG)
            .unwrap();
        frontend.set_features(features).unwrap();
        let host = mem.get_host_address(GuestAddress(BASE)).unwrap() as u64;
        let region = mem.find_region(GuestAddress(BASE)).unwrap();
        let fd = region.file_offset().unwrap().file().as_raw_fd();
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: BASE,
                memory_size: SIZE as u64,
                userspace_addr: host,
                mmap_offset: 0,
                mmap_handle: fd,
            }])
            .unwrap();
        let call = EventFd::new(0).unwrap();
        let mut rings = Vec::new();
        let mut kicks = Vec::new();
        for q in 0..3u64 {
            let desc = BASE + q * 0x1000;
            let ring = Ring {
                desc,
                avail: desc + 0x400,
                used: desc + 0x800,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            let config = VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: host + (ring.desc - BASE),
                used_ring_addr: host + (ring.used - BASE),
                avail_ring_addr: host + (ring.avail - BASE),
                log_addr: None,
            };
            let kick = EventFd::new(0).unwrap();
            let i = q as usize;
            frontend.set_vring_num(i, QSIZE).unwrap();
            frontend.set_vring_addr(i, &config).unwrap();
            frontend.set_vring_base(i, 0).unwrap();
            frontend.set_vring_call(i, &call).unwrap();
            frontend.set_vring_kick(i, &kick).unwrap();
            frontend.set_vring_enable(i, true).unwrap();
            rings.push(ring);
            kicks.push(kick);
        }
        Driver {
            mem,
            rings,
            kicks,
            next_buf: BASE + BUF,
            _frontend: frontend,
        }
    }

    fn buffer(&mut self) -> u64 {
        let addr = self.next_buf;
        self.next_buf += u64::from(BUF_LEN);
        addr
    }

    /// Posts a chain of (addr, len, device-writable) descriptors on queue `q` and kicks.
    fn post(&mut self, q: usize, chain: &[(u64, u32, bool)]) -> u16 {
        let ring = &mut self.rings[q];
        let head = ring.next_desc;
        for (i, &(addr, len, write)) in chain.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let next = (index + 1) % QSIZE;
            let mut flags = if write { 2u16 } else { 0 };
            if i + 1 < chain.len() {
                flags |= 1;
            }
            let at = GuestAddress(ring.desc + 16 * u64::from(index));
            self.mem.write_obj(addr, at).unwrap();
            self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
        }
        ring.next_desc = (head + chain.len() as u16) % QSIZE;
        let slot = GuestAddress(ring.avail + 4 + 2 * u64::from(ring.avail_idx % QSIZE));
        self.mem.write_obj(head, slot).unwrap();
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .unwrap();
        self.kicks[q].write(1).unwrap();
        head
    }

    /// Waits for the next used element of queue `q`: (id, len).
    fn used(&mut self, q: usize) -> (u16, u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let ring = &mut self.rings[q];
        loop {
            let idx: u16 = self.mem.read_obj(GuestAddress(ring.used + 2)).unwrap();
            if idx != ring.used_seen {
                let elem = GuestAddress(ring.used + 4 + 8 * u64::from(ring.used_seen % QSIZE));
                ring.used_seen = ring.used_seen.wrapping_add(1);
                let id: u32 = self.mem.read_obj(elem).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(elem.0 + 4)).unwrap();
                return (id as u16, len);
            }
            assert!(
                Instant::now() < deadline,
                "queue {q}: nothing used within 5 s"
            );
            std::thread::yield_now();
        }
    }

    /// Sends a ctrlq message; returns the Ack.
    fn control(&mut self, message: &[u8]) -> (Ack, u32) {
        let (msg, ack) = (self.buffer(), self.buffer());
        self.mem.write_slice(message, GuestAddress(msg)).unwrap();
        self.post(2, &[(msg, message.len() as u32, false), (ack, 64, true)]);
        let (_, len) = self.used(2);
        let mut bytes = vec![0u8; len as usize];
        self.mem.read_slice(&mut bytes, GuestAddress(ack)).unwrap();
        match parse_message(&bytes).unwrap() {
            (h, Message::Ack(a)) => (a, h.cookie),
            other => panic!("expected an Ack, got {other:?}"),
        }
    }

    /// Posts staging buffers and reassembles the next object from their chunks.
    fn receive_object(&mut self) -> Vec<u8> {
        let mut object = Vec::new();
        let mut sequence: Option<ChunkSequence> = None;
        loop {
            let buf = self.buffer();
            self.post(1, &[(buf, BUF_LEN, true)]);
            let (_, len) = self.used(1);
            let mut bytes = vec![0u8; len as usize];
            self.mem.read_slice(&mut bytes, GuestAddress(buf)).unwrap();
            let Ok((_, Message::Chunk(chunk))) = parse_message(&bytes) else {
                panic!("not a chunk")
            };
            let range = match sequence.as_mut() {
                None => {
                    let (s, r) = ChunkSequence::start(&chunk, 1 << 24).unwrap();
                    object.resize(s.total_len() as usize, 0);
                    sequence = Some(s);
                    r
                }
                Some(s) => s.next(&chunk).unwrap(),
            };
            object[range].copy_from_slice(chunk.data);
            if sequence.as_ref().unwrap().is_complete() {
                return object;
            }
        }
    }
}

fn nix_memfd() -> std::os::fd::OwnedFd {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned by the result.
    let fd = unsafe { libc::memfd_create(c"prefetch-test".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: fd is a fresh, valid descriptor we own.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

fn encode(message: Message<'_>, cookie: u32) -> Vec<u8> {
    let mut buf = vec![0u8; message.encoded_len()];
    message.encode(cookie, &mut buf).unwrap();
    buf
}

fn start() -> (BackendHandle, Driver, tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path().join("store")).unwrap();
    let content: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store.add(3, 1, ResourceKind::Data, 1, &content).unwrap();
    let socket = dir.path().join("backend.sock");
    let backend = Backend::spawn(BackendConfig::new(&socket, Arc::new(store), key())).unwrap();
    let driver = Driver::connect(&socket);
    (backend, driver, dir, content)
}

fn hello(driver: &mut Driver) -> [u8; 32] {
    hello_with_floors(driver, [0x5E; 32]).0
}

/// Hello with `nonce`, then the floors snapshot that must follow it: signed by the PTO key
/// for this nonce and epoch, unexpired. Returns the nonce, the header and the floors.
fn hello_with_floors(driver: &mut Driver, nonce: [u8; 32]) -> ([u8; 32], FloorsHeader, Vec<Floor>) {
    let (ack, _) = driver.control(&encode(
        Message::Hello(Hello {
            nonce,
            epoch: 1,
            driver_version: 1,
            staging_buffers: 4,
        }),
        0,
    ));
    assert_eq!(ack.status, Status::Ok);
    let object = driver.receive_object();
    let (header, entries) = FloorsHeader::parse_floors(&object).expect("a floors snapshot");
    assert_eq!((header.session_nonce, header.epoch), (nonce, 1));
    assert!(header.expires_at > header.issued_at);
    let mut statement = header.tbs_prefix().to_vec();
    statement.extend_from_slice(entries);
    VerifyingKey::from(&key())
        .verify(
            &statement,
            &Signature::from_slice(&header.signature).unwrap(),
        )
        .expect("the snapshot verifies under the PTO key");
    (nonce, header, FloorsHeader::iter(entries).collect())
}

#[test]
fn a_signed_bundle_raises_the_floors_file_for_the_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DiskStore::open(dir.path().join("store")).unwrap());
    let content = vec![7u8; 3000];
    store.add(3, 2, ResourceKind::Data, 1, &content).unwrap();
    let floors_path = dir.path().join("floors.json");
    let socket = dir.path().join("backend.sock");
    let serve = |store: Arc<DiskStore>| {
        let mut config = BackendConfig::new(&socket, store, key());
        config.floors = Arc::new(Floors::open(&floors_path).unwrap());
        let backend = Backend::spawn(config).unwrap();
        let driver = Driver::connect(&socket);
        (backend, driver)
    };
    // First boot: no floors yet; the bundle of version 2 raises resource 3's floor.
    let (backend, mut driver) = serve(store.clone());
    let (nonce, header, floors) = hello_with_floors(&mut driver, [1; 32]);
    assert_eq!((header.serial, floors.len()), (0, 0));
    backend
        .prefetch(PrefetchOrder {
            app_id: 1,
            task_id: 8,
            resource_id: 3,
        })
        .unwrap();
    let bundle = check_bundle(&driver.receive_object(), &content, nonce, 8);
    assert_eq!(bundle.resource_version, 2);
    backend.shutdown();
    drop(driver);
    // Second boot, a new backend over the same file: the snapshot for the new nonce says 2.
    let (_backend, mut driver) = serve(store);
    let (_, header, floors) = hello_with_floors(&mut driver, [2; 32]);
    assert_eq!(header.serial, 1);
    assert_eq!(
        floors,
        [Floor {
            resource_id: 3,
            min_version: 2
        }]
    );
}

fn check_bundle(object: &[u8], content: &[u8], nonce: [u8; 32], task: u64) -> BundleHeader {
    let (header, body) = BundleHeader::parse_bundle(object).unwrap();
    assert_eq!(body, content);
    assert_eq!(
        (header.task_id, header.resource_id, header.session_nonce),
        (task, 3, nonce)
    );
    let vk = VerifyingKey::from(&key());
    vk.verify(
        &header.to_be_signed(),
        &Signature::from_slice(&header.signature).unwrap(),
    )
    .expect("the bundle verifies under the PTO key");
    header
}

#[test]
fn hello_then_demand_delivers_a_signed_bundle_in_chunks() {
    let (backend, mut driver, _dir, content) = start();
    let (ack, _) = driver.control(&encode(
        Message::Demand(Demand {
            app_id: 1,
            task_id: 7,
            resource_id: 3,
            min_version: 0,
        }),
        9,
    ));
    assert_eq!(ack.status, Status::BadSession, "no demand before hello");
    let nonce = hello(&mut driver);
    let (ack, cookie) = driver.control(&encode(
        Message::Demand(Demand {
            app_id: 1,
            task_id: 7,
            resource_id: 3,
            min_version: 0,
        }),
        9,
    ));
    assert_eq!((ack.status, cookie), (Status::Ok, 9));
    let header = check_bundle(&driver.receive_object(), &content, nonce, 7);
    assert_eq!((header.demand_cookie, header.seq), (9, 1));
    let (ack, _) = driver.control(&encode(
        Message::Demand(Demand {
            app_id: 1,
            task_id: 7,
            resource_id: 99,
            min_version: 0,
        }),
        10,
    ));
    assert_eq!(ack.status, Status::UnknownResource);
    assert!(
        backend.stats().chunks >= 3,
        "20 KB in 8 KB buffers takes three chunks"
    );
}

#[test]
fn a_prefetch_order_is_delivered_after_hello() {
    let (backend, mut driver, _dir, content) = start();
    backend
        .prefetch(PrefetchOrder {
            app_id: 1,
            task_id: 8,
            resource_id: 3,
        })
        .unwrap();
    let nonce = hello(&mut driver);
    let header = check_bundle(&driver.receive_object(), &content, nonce, 8);
    assert_eq!(header.demand_cookie, 0);
    let staged = backend.wait_for(Duration::from_secs(5), |e| match e {
        BackendEvent::Staged {
            resource_id: 3,
            task_id: 8,
            ..
        } => Some(()),
        _ => None,
    });
    assert!(staged.is_some(), "a Staged event for the delivered bundle");
}

#[test]
fn a_descriptor_outside_the_shared_memory_is_refused_and_service_goes_on() {
    let (backend, mut driver, _dir, _content) = start();
    // A ctrlq chain whose message lies in "private RAM", outside the region given.
    let ack = driver.buffer();
    driver.post(2, &[(0x1000, 64, false), (ack, 64, true)]);
    let (_, len) = driver.used(2);
    assert_eq!(len, 0, "nothing written for a refused chain");
    let refused = backend.wait_for(Duration::from_secs(5), |e| match e {
        BackendEvent::Refused {
            queue: QueueName::Control,
            addr: 0x1000,
            ..
        } => Some(()),
        _ => None,
    });
    assert!(refused.is_some());
    assert_eq!(backend.stats().refused_descriptors, 1);
    hello(&mut driver);
}

#[test]
fn a_malformed_message_gets_malformed_and_service_goes_on() {
    let (backend, mut driver, _dir, _content) = start();
    let mut garbage = encode(
        Message::Hello(Hello {
            nonce: [1; 32],
            epoch: 1,
            driver_version: 1,
            staging_buffers: 1,
        }),
        0,
    );
    garbage[0] ^= 0xFF; // bad magic
    let (ack, _) = driver.control(&garbage);
    assert_eq!(ack.status, Status::Malformed);
    let (ack, _) = driver.control(&garbage[..7]);
    assert_eq!(ack.status, Status::Malformed);
    assert_eq!(backend.stats().malformed, 2);
    hello(&mut driver);
}
