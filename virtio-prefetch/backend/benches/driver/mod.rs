//! A minimal driver for the bench: a memfd-backed region given to the daemon through a real
//! `vhost` frontend, split rings written by hand, and completions awaited on the call eventfd.
//! Shared by the bench and `tests/staging.rs` (each uses a part of it).
#![allow(dead_code)]

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use vhost::{
    vhost_user::{message::VhostUserProtocolFeatures, Frontend, VhostUserFrontend},
    VhostBackend, VhostUserMemoryRegionInfo, VringConfigData,
};
use virtio_prefetch_wire::{
    parse_message, ChunkSequence, Demand, Hello, Message, MessageHeader, Status,
};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::{
    epoll::{ControlOperation, Epoll, EpollEvent, EventSet},
    eventfd::{EventFd, EFD_NONBLOCK},
};

pub const BASE: u64 = 0x1000_0000;
pub const BUF: u64 = 0x1_0000;
const SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const REQUEST: u64 = BUF + 0x2000;
const REQUEST_LEN: u32 = 0x1000;
const STAGING: u64 = BUF + 0x3000;
const STAGING_LEN: u32 = 0x11000;
const STAGING_BUFFERS: u64 = 8;

/// The shared window: a memfd mapped shared at `BASE`.
pub fn shared_memory() -> GuestMemoryMmap {
    // SAFETY: memfd_create with a static NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"prefetch-bench".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: fd is a fresh descriptor this function owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(SIZE as u64).expect("memfd sized");
    GuestMemoryMmap::from_ranges_with_files(&[(
        GuestAddress(BASE),
        SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .expect("region mapped")
}

struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

/// The driver side of the three queues.
pub struct Driver {
    mem: GuestMemoryMmap,
    rings: Vec<Ring>,
    kicks: Vec<EventFd>,
    call: EventFd,
    epoll: Epoll,
    interrupts: u64,
    _frontend: Frontend,
}

impl Driver {
    /// Connects to the daemon, hands it the region and starts the queues.
    pub fn connect(socket: &Path) -> Self {
        let mem = shared_memory();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut frontend = loop {
            match Frontend::connect(socket, 3) {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("connect: {e}"),
            }
        };
        frontend.set_owner().expect("SET_OWNER");
        let features = frontend.get_features().expect("GET_FEATURES");
        frontend
            .get_protocol_features()
            .expect("GET_PROTOCOL_FEATURES");
        frontend
            .set_protocol_features(VhostUserProtocolFeatures::CONFIG)
            .expect("SET_PROTOCOL_FEATURES");
        frontend.set_features(features).expect("SET_FEATURES");
        let host = mem.get_host_address(GuestAddress(BASE)).expect("mapped") as u64;
        let region = mem.find_region(GuestAddress(BASE)).expect("region");
        let fd = region
            .file_offset()
            .expect("file-backed")
            .file()
            .as_raw_fd();
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: BASE,
                memory_size: SIZE as u64,
                userspace_addr: host,
                mmap_offset: 0,
                mmap_handle: fd,
            }])
            .expect("SET_MEM_TABLE");
        let call = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let epoll = Epoll::new().expect("epoll");
        epoll
            .ctl(
                ControlOperation::Add,
                call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .expect("epoll add");
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
            let kick = EventFd::new(0).expect("eventfd");
            let i = q as usize;
            frontend.set_vring_num(i, QSIZE).expect("SET_VRING_NUM");
            frontend.set_vring_addr(i, &config).expect("SET_VRING_ADDR");
            frontend.set_vring_base(i, 0).expect("SET_VRING_BASE");
            frontend.set_vring_call(i, &call).expect("SET_VRING_CALL");
            frontend.set_vring_kick(i, &kick).expect("SET_VRING_KICK");
            frontend
                .set_vring_enable(i, true)
                .expect("SET_VRING_ENABLE");
            rings.push(ring);
            kicks.push(kick);
        }
        let mut driver = Driver {
            mem,
            rings,
            kicks,
            call,
            epoll,
            interrupts: 0,
            _frontend: frontend,
        };
        for i in 0..STAGING_BUFFERS {
            driver.post(
                1,
                &[(
                    BASE + STAGING + i * u64::from(STAGING_LEN),
                    STAGING_LEN,
                    true,
                )],
            );
        }
        driver
    }

    fn post(&mut self, q: usize, chain: &[(u64, u32, bool)]) {
        let ring = &mut self.rings[q];
        let head = ring.next_desc;
        for (i, &(addr, len, write)) in chain.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let mut flags = if write { 2u16 } else { 0 };
            if i + 1 < chain.len() {
                flags |= 1;
            }
            let at = ring.desc + 16 * u64::from(index);
            self.mem.write_obj(addr, GuestAddress(at)).expect("desc");
            self.mem.write_obj(len, GuestAddress(at + 8)).expect("desc");
            self.mem
                .write_obj(flags, GuestAddress(at + 12))
                .expect("desc");
            self.mem
                .write_obj((index + 1) % QSIZE, GuestAddress(at + 14))
                .expect("desc");
        }
        ring.next_desc = (head + chain.len() as u16) % QSIZE;
        let slot = ring.avail + 4 + 2 * u64::from(ring.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).expect("avail");
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .expect("avail idx");
        self.kicks[q].write(1).expect("kick");
    }

    /// The next used element of queue `q` (descriptor id, length), waiting on the call eventfd.
    fn used(&mut self, q: usize) -> (u16, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ring = &mut self.rings[q];
            let idx: u16 = self
                .mem
                .read_obj(GuestAddress(ring.used + 2))
                .expect("used");
            if idx != ring.used_seen {
                let elem = ring.used + 4 + 8 * u64::from(ring.used_seen % QSIZE);
                ring.used_seen = ring.used_seen.wrapping_add(1);
                let id: u32 = self.mem.read_obj(GuestAddress(elem)).expect("used");
                let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).expect("used");
                return (id as u16, len);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("queue {q}: no interrupt within 10 s"));
            let mut events = [EpollEvent::default(); 1];
            self.epoll
                .wait(left.as_millis() as i32 + 1, &mut events)
                .expect("epoll wait");
            self.count_interrupts();
        }
    }

    fn count_interrupts(&mut self) {
        if let Ok(n) = self.call.read() {
            self.interrupts += n;
        }
    }

    /// How many times the daemon signalled the call eventfd so far.
    pub fn interrupts(&mut self) -> u64 {
        self.count_interrupts();
        self.interrupts
    }

    /// Sends one ctrlq message and returns the Ack's status.
    pub fn control(&mut self, message: Message<'_>, cookie: u32) -> Status {
        let mut bytes = vec![0u8; message.encoded_len()];
        message.encode(cookie, &mut bytes).expect("encodes");
        let (msg, ack) = (BASE + BUF, BASE + BUF + 0x1000);
        self.mem
            .write_slice(&bytes, GuestAddress(msg))
            .expect("msg");
        self.post(2, &[(msg, bytes.len() as u32, false), (ack, 64, true)]);
        let (_, len) = self.used(2);
        let mut reply = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut reply, GuestAddress(ack))
            .expect("ack");
        match parse_message(&reply) {
            Ok((_, Message::Ack(a))) => a.status,
            other => panic!("expected an Ack, got {other:?}"),
        }
    }

    /// Starts the session.
    pub fn hello(&mut self) {
        let hello = Message::Hello(Hello {
            nonce: [0x5E; 32],
            epoch: 1,
            driver_version: 1,
            staging_buffers: STAGING_BUFFERS as u32,
        });
        assert_eq!(self.control(hello, 0), Status::Ok);
        // The session's floors snapshot comes first (SPEC.md section 8).
        let floors = self.receive();
        assert!(
            virtio_prefetch_wire::FloorsHeader::is_floors(&floors),
            "the first object after Hello is the floors snapshot"
        );
    }

    /// Demands `resource_id` and copies its bundle out of the staging buffers (reposting
    /// each); returns the bundle.
    pub fn demand(&mut self, resource_id: u64, cookie: u32) -> Vec<u8> {
        let demand = Message::Demand(Demand {
            app_id: 1,
            task_id: 1,
            resource_id,
            min_version: 0,
        });
        assert_eq!(self.control(demand, cookie), Status::Ok);
        self.receive()
    }

    /// Copies the next object (bundle or manifest) out of the staging buffers, reposting each.
    pub fn receive(&mut self) -> Vec<u8> {
        let mut object = Vec::new();
        let mut sequence: Option<ChunkSequence> = None;
        let mut buf = vec![0u8; STAGING_LEN as usize];
        loop {
            let (id, len) = self.used(1);
            let addr = self.staging_addr(id);
            let bytes = &mut buf[..len as usize];
            self.mem
                .read_slice(bytes, GuestAddress(addr))
                .expect("chunk");
            let Ok((_, Message::Chunk(chunk))) = parse_message(bytes) else {
                panic!("not a chunk ({len} bytes)")
            };
            let range = match sequence.as_mut() {
                None => {
                    let (s, r) = ChunkSequence::start(&chunk, 1 << 25).expect("first chunk");
                    object.resize(s.total_len() as usize, 0);
                    sequence = Some(s);
                    r
                }
                Some(s) => s.next(&chunk).expect("next chunk"),
            };
            object[range].copy_from_slice(chunk.data);
            self.post(1, &[(addr, STAGING_LEN, true)]);
            if sequence.as_ref().is_some_and(|s| s.is_complete()) {
                return object;
            }
            assert!(len as usize > MessageHeader::LEN, "a chunk has data");
        }
    }

    /// Posts one requestq buffer and returns what the daemon wrote into it.
    pub fn request(&mut self) -> Vec<u8> {
        self.post(0, &[(BASE + REQUEST, REQUEST_LEN, true)]);
        let (_, len) = self.used(0);
        let mut bytes = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut bytes, GuestAddress(BASE + REQUEST))
            .expect("request");
        bytes
    }

    fn staging_addr(&self, id: u16) -> u64 {
        let desc = self.rings[1].desc + 16 * u64::from(id);
        self.mem.read_obj(GuestAddress(desc)).expect("desc addr")
    }
}
