//! The vhost-user frontend against a real vhost-user backend (vhost-user-backend's daemon with
//! a recording 3-queue device) over a temporary socket. No KVM: the transport's QueueNotify
//! writes the kick eventfd itself, and the call eventfd is read by the test.

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, RwLock},
    thread,
    time::{Duration, Instant},
};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use see_vmm::{
    bus::BusDevice,
    memory::{self, SharedWindow},
    virtio::{
        mmio::{reg, MmioTransport},
        prefetch::{self, BackendWatcher, PrefetchTransport},
        status::*,
        vhost_user::{VhostUserDevice, VhostUserError, F_PROTOCOL_FEATURES},
        VirtioDevice, F_VERSION_1,
    },
};
use vhost::vhost_user::{message::VhostUserProtocolFeatures, Listener};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_prefetch_wire::{DeviceConfig, F_MANIFEST, F_NEEDS_RESET};
use virtio_queue::QueueT;
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;

const WAIT: Duration = Duration::from_secs(10);
const SHARED: u64 = 1 << 20;
const CONFIG: DeviceConfig = DeviceConfig {
    max_content_len: 16 << 20,
    max_chunk_len: 64 << 10,
    queue_sizes: [64, 512, 32],
};

/// A queue as the backend saw it when kicked: (index, size, desc, avail, used), guest addresses.
type SeenQueue = (usize, u16, u64, u64, u64);

#[derive(Debug, Default)]
struct Seen {
    /// Every memory table: (guest start, size) of each region.
    tables: Vec<Vec<(u64, u64)>>,
    acked: Option<u64>,
    kicked: Vec<SeenQueue>,
}

/// A trivial virtio-prefetch backend that records what the frontend gave it.
struct Recorder {
    protocol: VhostUserProtocolFeatures,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl Recorder {
    fn record(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.0.lock().unwrap());
        self.seen.1.notify_all();
    }
}

impl VhostUserBackendMut for Recorder {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        3
    }
    fn max_queue_size(&self) -> usize {
        512
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_MANIFEST | F_NEEDS_RESET | F_PROTOCOL_FEATURES
    }
    fn acked_features(&mut self, features: u64) {
        self.record(|s| s.acked = Some(features));
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = CONFIG.encode();
        config
            .get(offset as usize..(offset + size) as usize)
            .map_or_else(Vec::new, <[u8]>::to_vec)
    }
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let table = mem
            .memory()
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        self.record(|s| s.tables.push(table));
        Ok(())
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let i = usize::from(device_event);
        let vring = &vrings[i];
        let seen = {
            let state = vring.get_ref();
            let q = state.get_queue();
            (i, q.size(), q.desc_table(), q.avail_ring(), q.used_ring())
        };
        self.record(|s| s.kicked.push(seen));
        vring.signal_used_queue()
    }
}

struct Backend {
    seen: Arc<(Mutex<Seen>, Condvar)>,
    shutdown: std::sync::mpsc::Receiver<vhost_user_backend::ShutdownHandle>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Backend {
    /// Starts the daemon on a fresh socket, in its own thread.
    fn spawn(protocol: VhostUserProtocolFeatures) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefetch.sock");
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let backend = Arc::new(RwLock::new(Recorder {
            protocol,
            seen: seen.clone(),
        }));
        let (tx, shutdown) = std::sync::mpsc::channel();
        let socket = path.clone();
        thread::spawn(move || {
            let mut daemon = VhostUserDaemon::new(
                "test-prefetch".into(),
                backend,
                GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            )
            .unwrap();
            let mut listener = Listener::new(&socket, true).unwrap();
            daemon.start(&mut listener).unwrap();
            tx.send(daemon.shutdown_handle().unwrap()).unwrap();
            let _ = daemon.wait();
        });
        Self {
            seen,
            shutdown,
            _dir: dir,
            path,
        }
    }

    /// Waits until `done` holds for what the backend saw.
    fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&Seen) -> bool,
    ) -> std::sync::MutexGuard<'_, Seen> {
        wait_on(&self.seen, what, done)
    }
}

/// Waits until `done` holds for what a backend saw.
fn wait_on<'a>(
    seen: &'a (Mutex<Seen>, Condvar),
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> std::sync::MutexGuard<'a, Seen> {
    let (lock, cond) = seen;
    let (guard, timeout) = cond
        .wait_timeout_while(lock.lock().unwrap(), WAIT, |s| !done(s))
        .unwrap();
    assert!(
        !timeout.timed_out(),
        "the backend never saw {what}: {guard:?}"
    );
    guard
}

const PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::CONFIG
    .union(VhostUserProtocolFeatures::MQ)
    .union(VhostUserProtocolFeatures::REPLY_ACK);

fn window() -> SharedWindow {
    memory::create(32 << 20, SHARED).unwrap().1
}

fn w(t: &mut impl BusDevice, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn r(t: &mut impl BusDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Drives the transport as the guest driver does: features, three queues in the window,
/// DRIVER_OK. Queue q's rings sit at window + q * 64 KiB.
fn bring_up(t: &mut PrefetchTransport, window: &SharedWindow) -> u32 {
    let features = F_VERSION_1 | F_MANIFEST | F_NEEDS_RESET;
    w(t, reg::STATUS, ACKNOWLEDGE);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(t, reg::DRIVER_FEATURES_SEL, 0);
    w(t, reg::DRIVER_FEATURES, features as u32);
    w(t, reg::DRIVER_FEATURES_SEL, 1);
    w(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for q in 0..3u32 {
        let base = window.guest_addr().0 + u64::from(q) * 0x1_0000;
        w(t, reg::QUEUE_SEL, q);
        w(t, reg::QUEUE_NUM, 64);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, base),
            (reg::QUEUE_DRIVER_LOW, base + 0x1000),
            (reg::QUEUE_DEVICE_LOW, base + 0x2000),
        ] {
            w(t, low, addr as u32);
            w(t, low + 4, (addr >> 32) as u32);
        }
        w(t, reg::QUEUE_READY, 1);
    }
    w(
        t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    r(t, reg::STATUS)
}

/// Waits until `fd` is readable.
fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
    n == 1
}

fn connect(path: &Path, window: SharedWindow) -> VhostUserDevice {
    prefetch::connect(path, Duration::from_secs(5), window).unwrap()
}

#[test]
fn frontend_negotiates_and_sends_only_the_shared_window() {
    let backend = Backend::spawn(PROTOCOL);
    let window = window();
    let device = connect(&backend.path, window.clone());
    assert_eq!(
        device.features(),
        F_VERSION_1 | F_MANIFEST | F_NEEDS_RESET,
        "bit 30 is hidden from the guest"
    );
    assert_eq!(device.config(), CONFIG.encode());
    assert_eq!(
        device.queue_max_sizes(),
        [256, 512, 256],
        "raised to the backend's hint"
    );
    let call = device.call_event().try_clone().unwrap();
    let mut t = MmioTransport::new(device, (window.guest_addr(), window.size()), None);
    assert_eq!(r(&mut t, reg::DEVICE_ID), 0x5EE0);
    assert_eq!(r(&mut t, reg::CONFIG + 8), 64 | 512 << 16);
    assert_eq!(
        bring_up(&mut t, &window),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    {
        let seen = backend.wait_for("a memory table", |s| !s.tables.is_empty());
        assert_eq!(
            seen.tables,
            [vec![(window.guest_addr().0, SHARED)]],
            "exactly the shared window"
        );
        assert_eq!(
            seen.acked,
            Some(F_VERSION_1 | F_MANIFEST | F_NEEDS_RESET | F_PROTOCOL_FEATURES)
        );
    }
    // vhost-user-backend processes each queue once when it is enabled; the backend sees the
    // rings at their guest addresses (so the VMM host addresses it was sent match the table).
    let ring = |q: usize| {
        let base = window.guest_addr().0 + q as u64 * 0x1_0000;
        (q, 64, base, base + 0x1000, base + 0x2000)
    };
    let kicks_of = |s: &Seen, q: usize| s.kicked.iter().filter(|k| k.0 == q).count();
    {
        let seen = backend.wait_for("every queue enabled", |s| {
            (0..3).all(|q| kicks_of(s, q) > 0)
        });
        for k in &seen.kicked {
            assert_eq!(*k, ring(k.0));
        }
        assert_eq!(seen.kicked.len(), 3);
    }
    // A notify of queue 2 reaches the backend through queue 2's kick eventfd.
    w(&mut t, reg::QUEUE_NOTIFY, 2);
    {
        let seen = backend.wait_for("the kick", |s| kicks_of(s, 2) == 2);
        assert_eq!(seen.kicked.last(), Some(&ring(2)));
        assert_eq!(seen.kicked.len(), 4, "no other queue was kicked");
    }
    assert!(
        readable(call.as_raw_fd()),
        "the backend's call eventfd fired"
    );
    assert_eq!(
        r(&mut t, reg::INTERRUPT_STATUS),
        1,
        "used buffer, as the backend's irqfd bypasses the VMM"
    );

    // Reset stops the rings; a second bring-up sends the window again.
    w(&mut t, reg::STATUS, 0);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert_eq!(
        bring_up(&mut t, &window),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    {
        let seen = backend.wait_for("a second memory table", |s| s.tables.len() == 2);
        assert_eq!(seen.tables[1], [(window.guest_addr().0, SHARED)]);
    }
    // The re-initialised rings work: a notify after the reset reaches the backend again.
    let before = backend
        .wait_for("every queue enabled again", |s| s.kicked.len() >= 7)
        .kicked
        .len();
    w(&mut t, reg::QUEUE_NOTIFY, 1);
    let seen = backend.wait_for("a kick after the reset", |s| s.kicked.len() > before);
    assert_eq!(seen.kicked.last(), Some(&ring(1)));
}

#[test]
fn backend_hang_up_sets_needs_reset_and_raises_config_change() {
    let backend = Backend::spawn(PROTOCOL);
    let window = window();
    let device = connect(&backend.path, window.clone());
    let irq = device.call_event().try_clone().unwrap();
    let transport = Arc::new(Mutex::new(MmioTransport::new(
        device,
        (window.guest_addr(), window.size()),
        Some(irq.try_clone().unwrap()),
    )));
    let live = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
    assert_eq!(bring_up(&mut transport.lock().unwrap(), &window), live);
    let mut events: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    events.add_subscriber(Arc::new(Mutex::new(BackendWatcher::new(transport.clone()))));
    // Nothing happens while the backend lives.
    assert_eq!(events.run_with_timeout(0).unwrap(), 0);

    backend.shutdown.recv_timeout(WAIT).unwrap().shutdown();
    let deadline = Instant::now() + WAIT;
    while transport.lock().unwrap().status() & DEVICE_NEEDS_RESET == 0 {
        assert!(Instant::now() < deadline, "the hang-up was never noticed");
        events.run_with_timeout(100).unwrap();
    }
    let mut t = transport.lock().unwrap();
    assert_eq!(r(&mut *t, reg::STATUS), live | DEVICE_NEEDS_RESET);
    assert_eq!(
        r(&mut *t, reg::INTERRUPT_STATUS),
        0b11,
        "config change raised"
    );
    assert!(irq.read().unwrap() >= 1, "the interrupt eventfd fired");
    // The guest resets and tries again: refused at once, the device stays failed.
    w(&mut *t, reg::STATUS, 0);
    assert_eq!(
        bring_up(&mut t, &window) & (DRIVER_OK | DEVICE_NEEDS_RESET),
        DEVICE_NEEDS_RESET
    );
}

#[test]
fn a_missing_socket_fails_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = prefetch::connect(
        &dir.path().join("none.sock"),
        Duration::from_millis(200),
        window(),
    )
    .unwrap_err();
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "it retried until the deadline"
    );
    assert!(matches!(err, VhostUserError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("start the backend"), "{err}");
}

#[test]
fn a_backend_without_config_is_refused() {
    let backend =
        Backend::spawn(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
    let err = prefetch::connect(&backend.path, Duration::from_secs(5), window()).unwrap_err();
    assert!(matches!(err, VhostUserError::Negotiation { .. }), "{err}");
    assert!(err.to_string().contains("CONFIG"), "{err}");
}

#[test]
fn a_peer_that_is_not_a_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Accept and hang up at once.
    let closer = thread::spawn(move || drop(listener.accept().unwrap()));
    let err = prefetch::connect(&path, Duration::from_secs(5), window()).unwrap_err();
    closer.join().unwrap();
    assert!(matches!(err, VhostUserError::Request { .. }), "{err}");
}

#[test]
fn a_ring_in_private_memory_never_reaches_the_backend() {
    let backend = Backend::spawn(PROTOCOL);
    let window = window();
    let device = connect(&backend.path, window.clone());
    let mut t = MmioTransport::new(device, (window.guest_addr(), window.size()), None);
    // A guest that puts queue 0's descriptors in private RAM (1 MiB) gets DEVICE_NEEDS_RESET.
    w(&mut t, reg::STATUS, ACKNOWLEDGE);
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    w(&mut t, reg::DRIVER_FEATURES, 1);
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    w(&mut t, reg::QUEUE_NUM, 16);
    w(&mut t, reg::QUEUE_DESC_LOW, 0x10_0000);
    w(&mut t, reg::QUEUE_DRIVER_LOW, window.guest_addr().0 as u32);
    w(
        &mut t,
        reg::QUEUE_DEVICE_LOW,
        window.guest_addr().0 as u32 + 0x1000,
    );
    w(&mut t, reg::QUEUE_READY, 1);
    w(
        &mut t,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(
        r(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DEVICE_NEEDS_RESET
    );
    // After a reset a good bring-up works, and it is the only thing the backend ever saw.
    w(&mut t, reg::STATUS, 0);
    assert_eq!(bring_up(&mut t, &window) & DRIVER_OK, DRIVER_OK);
    let seen = backend.wait_for("a memory table", |s| s.kicked.len() == 3);
    assert_eq!(seen.tables.len(), 1);
    assert!(seen.kicked.iter().all(|k| k.2 >= window.guest_addr().0));
}

/// Whether KVM tests run: skipped without /dev/kvm unless SEE_REQUIRE_KVM is set.
fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) if std::env::var_os("SEE_REQUIRE_KVM").is_some() => {
            panic!("SEE_REQUIRE_KVM is set but /dev/kvm cannot be opened: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: /dev/kvm cannot be opened ({e}); set SEE_REQUIRE_KVM=1 to fail instead"
            );
            false
        }
    }
}

/// A PVH ELF whose 32-bit entry code brings the device up as a driver would (queue q's rings
/// at the window + q * 64 KiB), notifies queue 2 and writes 0 to the exit port.
fn bring_up_elf() -> Vec<u8> {
    // mov edx, 0x501; xor eax, eax; out dx, eax; hlt; jmp hlt
    guest_elf(&[
        0xBA, 0x01, 0x05, 0x00, 0x00, 0x31, 0xC0, 0xEF, 0xF4, 0xEB, 0xFD,
    ])
}

/// Like [`bring_up_elf`], then polls Status until DEVICE_NEEDS_RESET appears (at most 2^24
/// reads) and ends the VM with InterruptStatus as its exit code (0xff if it never appeared).
fn needs_reset_elf() -> Vec<u8> {
    #[rustfmt::skip]
    let tail = [
        0xB9, 0x00, 0x00, 0x00, 0x01, // mov ecx, 1 << 24
        0xA1, 0x70, 0x00, 0x00, 0xD0, // poll: mov eax, [Status]
        0xA9, 0x40, 0x00, 0x00, 0x00, // test eax, DEVICE_NEEDS_RESET
        0x75, 0x0A,                   // jnz failed
        0x49,                         // dec ecx
        0x75, 0xF1,                   // jnz poll
        0xB8, 0xFF, 0x00, 0x00, 0x00, // mov eax, 0xff
        0xEB, 0x05,                   // jmp out
        0xA1, 0x60, 0x00, 0x00, 0xD0, // failed: mov eax, [InterruptStatus]
        0xBA, 0x01, 0x05, 0x00, 0x00, // out: mov edx, 0x501
        0xEF, 0xF4, 0xEB, 0xFD,       // out dx, eax; hlt; jmp hlt
    ];
    guest_elf(&tail)
}

/// The bring-up writes followed by `tail` (32-bit code) as a PVH ELF.
fn guest_elf(tail: &[u8]) -> Vec<u8> {
    let mmio = |reg: u64| 0xD000_0000u32 + reg as u32;
    let mut writes = vec![
        (mmio(reg::STATUS), ACKNOWLEDGE),
        (mmio(reg::STATUS), ACKNOWLEDGE | DRIVER),
        (mmio(reg::DRIVER_FEATURES_SEL), 1),
        (mmio(reg::DRIVER_FEATURES), 1), // VIRTIO_F_VERSION_1
        (mmio(reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK),
    ];
    for q in 0..3u32 {
        let base = 0xC000_0000 + q * 0x1_0000;
        writes.extend([
            (mmio(reg::QUEUE_SEL), q),
            (mmio(reg::QUEUE_NUM), 64),
            (mmio(reg::QUEUE_DESC_LOW), base),
            (mmio(reg::QUEUE_DRIVER_LOW), base + 0x1000),
            (mmio(reg::QUEUE_DEVICE_LOW), base + 0x2000),
            (mmio(reg::QUEUE_READY), 1),
        ]);
    }
    writes.push((
        mmio(reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    ));
    writes.push((mmio(reg::QUEUE_NOTIFY), 2));
    let mut code = Vec::new();
    for (addr, value) in writes {
        code.extend([0xC7, 0x05]); // mov dword [addr], imm32
        code.extend(addr.to_le_bytes());
        code.extend(value.to_le_bytes());
    }
    code.extend(tail);

    let mut f = vec![0u8; 0x200];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let phdr = |ty: u32, off: u64, addr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&ty.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&addr.to_le_bytes());
        p[24..32].copy_from_slice(&addr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p
    };
    f[64..120].copy_from_slice(&phdr(1, 0x200, 0x10_0000, code.len() as u64));
    f[120..176].copy_from_slice(&phdr(4, 0x100, 0, 20));
    let note: Vec<u8> = [4u32, 4, 18] // XEN_ELFNOTE_PHYS32_ENTRY
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(*b"Xen\0")
        .chain(0x10_0000u32.to_le_bytes())
        .collect();
    f[0x100..0x100 + note.len()].copy_from_slice(&note);
    f.extend(code);
    f
}

#[test]
fn a_guest_on_kvm_kicks_the_backend_through_the_ioeventfd() {
    if !kvm_available() {
        return;
    }
    let backend = Backend::spawn(PROTOCOL);
    let mut kernel = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut kernel, &bring_up_elf()).unwrap();
    let mut config = see_vmm::VmConfig::new(kernel.path());
    config.memory_mib = 32;
    config.shared_mem_mib = 1;
    config.serial = see_vmm::SerialOutput::Off;
    let mut vm = see_vmm::Vm::new(config, Instant::now()).unwrap();
    let transport = prefetch::attach(&mut vm, &backend.path, Duration::from_secs(5)).unwrap();
    assert!(
        vm.cmdline()
            .unwrap()
            .contains("virtio_mmio.device=4K@0xd0000000:5"),
        "{}",
        vm.cmdline().unwrap()
    );
    let outcome = vm.run().unwrap();
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    let seen = backend.wait_for("the guest's kick", |s| {
        s.kicked.iter().filter(|k| k.0 == 2).count() == 2
    });
    assert_eq!(seen.tables, [vec![(0xC000_0000, SHARED)]]);
    let t = transport.lock().unwrap();
    assert_eq!(t.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(
        t.notify_exits(),
        0,
        "the notify went to the ioeventfd, not through the VMM"
    );
}

#[test]
fn the_cli_reports_a_missing_backend_with_exit_code_1() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, bring_up_elf()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_see-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--serial", "off", "--prefetch-connect-ms", "100"])
        .arg("--prefetch-socket")
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the vhost-user backend"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_cli_runs_a_guest_with_the_device() {
    if !kvm_available() {
        return;
    }
    let backend = Backend::spawn(PROTOCOL);
    let kernel = backend.path.with_file_name("kernel");
    std::fs::write(&kernel, bring_up_elf()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_see-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--serial", "off", "--shared-mem", "1"])
        .arg("--prefetch-socket")
        .arg(&backend.path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SET_MEM_TABLE is acknowledged before the guest's DRIVER_OK write returns, so it is
    // recorded by now (the kick may race the VMM's exit and is checked in-process above).
    let seen = backend.wait_for("a memory table", |s| !s.tables.is_empty());
    assert_eq!(seen.tables, [vec![(0xC000_0000, SHARED)]]);
}

#[test]
fn a_guest_on_kvm_sees_the_backend_die_and_the_vm_ends_normally() {
    if !kvm_available() {
        return;
    }
    let backend = Backend::spawn(PROTOCOL);
    let mut kernel = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut kernel, &needs_reset_elf()).unwrap();
    let mut config = see_vmm::VmConfig::new(kernel.path());
    config.memory_mib = 32;
    config.shared_mem_mib = 1;
    config.serial = see_vmm::SerialOutput::Off;
    let mut vm = see_vmm::Vm::new(config, Instant::now()).unwrap();
    let transport = prefetch::attach(&mut vm, &backend.path, Duration::from_secs(5)).unwrap();
    // The daemon hands out its shutdown handle once it has accepted the VMM's connection.
    let daemon = backend.shutdown.recv_timeout(WAIT).unwrap();
    let outcome = thread::scope(|s| {
        s.spawn(|| {
            // Kill the backend once the guest has the device live and has kicked queue 2.
            drop(wait_on(&backend.seen, "the guest's kick", |s| {
                s.kicked.iter().filter(|k| k.0 == 2).count() == 2
            }));
            daemon.shutdown();
        });
        vm.run().unwrap()
    });
    assert_eq!(
        outcome.exit_code(),
        0b11,
        "the guest saw DEVICE_NEEDS_RESET with a config-change (and used-buffer) interrupt status: {outcome:?}"
    );
    let t = transport.lock().unwrap();
    assert_eq!(
        t.status(),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | DEVICE_NEEDS_RESET
    );
}
