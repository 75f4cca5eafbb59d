//! Register state machine and validation of the virtio-mmio transport, driven as a guest
//! driver would, against a recording device model.

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{reg, MmioTransport, MAGIC_VALUE};
use crate::{
    bus::BusDevice,
    virtio::{interrupt, status::*, ActivateError, QueueConfig, VirtioDevice, F_VERSION_1},
};

const WINDOW: u64 = see_abi::memory::SHARED_WINDOW_BASE;
const WINDOW_SIZE: u64 = 1 << 20;
const FEATURES: u64 = F_VERSION_1 | 0b11;

#[derive(Debug, Default)]
struct Recorder {
    activations: Vec<(u64, Vec<QueueConfig>)>,
    resets: usize,
    notifies: Vec<u16>,
    fail_activation: bool,
}

impl VirtioDevice for Recorder {
    fn device_id(&self) -> u32 {
        0x5EE0
    }
    fn vendor_id(&self) -> u32 {
        0x5045_4553
    }
    fn features(&self) -> u64 {
        FEATURES
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256, 64]
    }
    fn config(&self) -> &[u8] {
        &[1, 2, 3, 4, 5, 6, 7, 8]
    }
    fn interrupts_bypass_vmm(&self) -> bool {
        true
    }
    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), ActivateError> {
        if self.fail_activation {
            return Err(ActivateError::BackendGone);
        }
        self.activations.push((features, queues.to_vec()));
        Ok(())
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
    fn notify(&mut self, queue: u16) {
        self.notifies.push(queue);
    }
}

type Transport = MmioTransport<Recorder>;

fn transport() -> (Transport, EventFd) {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(
        Recorder::default(),
        (GuestAddress(WINDOW), WINDOW_SIZE),
        Some(irq.try_clone().unwrap()),
    );
    (t, irq)
}

fn r(t: &mut Transport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut Transport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn w64(t: &mut Transport, low: u64, value: u64) {
    w(t, low, value as u32);
    w(t, low + 4, (value >> 32) as u32);
}

/// ACKNOWLEDGE, DRIVER, driver features, FEATURES_OK; returns the status read back.
fn negotiate(t: &mut Transport, features: u64) -> u32 {
    w(t, reg::STATUS, ACKNOWLEDGE);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(t, reg::DRIVER_FEATURES_SEL, 0);
    w(t, reg::DRIVER_FEATURES, features as u32);
    w(t, reg::DRIVER_FEATURES_SEL, 1);
    w(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    w(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    r(t, reg::STATUS)
}

fn setup_queue(t: &mut Transport, q: u32, size: u32, desc: u64, avail: u64, used: u64) {
    w(t, reg::QUEUE_SEL, q);
    w(t, reg::QUEUE_NUM, size);
    w64(t, reg::QUEUE_DESC_LOW, desc);
    w64(t, reg::QUEUE_DRIVER_LOW, avail);
    w64(t, reg::QUEUE_DEVICE_LOW, used);
    w(t, reg::QUEUE_READY, 1);
}

/// Three valid queues laid out in the window.
fn setup_all_queues(t: &mut Transport) {
    for q in 0..3u32 {
        let base = WINDOW + u64::from(q) * 0x4000;
        setup_queue(t, q, 64, base, base + 0x1000, base + 0x2000);
    }
}

const LIVE: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn identity_and_feature_registers() {
    let (mut t, _) = transport();
    assert_eq!(r(&mut t, reg::MAGIC_VALUE), MAGIC_VALUE);
    assert_eq!(r(&mut t, reg::VERSION), 2);
    assert_eq!(r(&mut t, reg::DEVICE_ID), 0x5EE0);
    assert_eq!(r(&mut t, reg::VENDOR_ID), 0x5045_4553);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0b11);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
    w(&mut t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
    w(&mut t, reg::QUEUE_SEL, 2);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 64);
    w(&mut t, reg::QUEUE_SEL, 3);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0, "queue 3 does not exist");
    assert_eq!(r(&mut t, reg::CONFIG_GENERATION), 0);
}

#[test]
fn config_space_reads_at_any_width_and_ignores_writes() {
    let (mut t, _) = transport();
    assert_eq!(r(&mut t, reg::CONFIG), 0x0403_0201);
    let mut b = [0u8; 2];
    t.read(reg::CONFIG + 5, &mut b);
    assert_eq!(b, [6, 7]);
    let mut b = [0xffu8; 4];
    t.read(reg::CONFIG + 6, &mut b);
    assert_eq!(b, [7, 8, 0, 0], "past the end reads zero");
    t.write(reg::CONFIG, &[9]);
    assert_eq!(r(&mut t, reg::CONFIG), 0x0403_0201);
}

#[test]
fn full_bring_up_activates_with_the_queues_and_features() {
    let (mut t, _) = transport();
    assert_eq!(
        negotiate(&mut t, F_VERSION_1 | 1),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    setup_all_queues(&mut t);
    w(&mut t, reg::QUEUE_SEL, 1);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 1);
    assert_eq!(r(&mut t, reg::QUEUE_DESC_LOW), (WINDOW + 0x4000) as u32);
    assert_eq!(
        r(&mut t, reg::INTERRUPT_STATUS),
        0,
        "nothing before DRIVER_OK"
    );
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(r(&mut t, reg::STATUS), LIVE);
    let acts = &t.device().activations;
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].0, F_VERSION_1 | 1);
    assert_eq!(acts[0].1.len(), 3);
    assert_eq!(
        acts[0].1[2],
        QueueConfig {
            index: 2,
            size: 64,
            desc: GuestAddress(WINDOW + 0x8000),
            avail: GuestAddress(WINDOW + 0x9000),
            used: GuestAddress(WINDOW + 0xa000),
        }
    );
    // The backend's irqfd bypasses the VMM: InterruptStatus always says "used buffer".
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), interrupt::USED_BUFFER);
    w(&mut t, reg::INTERRUPT_ACK, interrupt::USED_BUFFER);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), interrupt::USED_BUFFER);
}

#[test]
fn only_ready_queues_are_activated() {
    let (mut t, _) = transport();
    negotiate(&mut t, F_VERSION_1);
    setup_queue(&mut t, 1, 256, WINDOW, WINDOW + 0x1000, WINDOW + 0x2000);
    w(&mut t, reg::STATUS, LIVE);
    let queues = &t.device().activations[0].1;
    assert_eq!(queues.iter().map(|q| q.index).collect::<Vec<_>>(), [1]);
}

#[test]
fn features_ok_is_refused_without_version_1_or_with_unoffered_bits() {
    for features in [0b1, F_VERSION_1 | 1 << 5, F_VERSION_1 | 1 << 40] {
        let (mut t, _) = transport();
        assert_eq!(
            negotiate(&mut t, features),
            ACKNOWLEDGE | DRIVER,
            "{features:#x}"
        );
        setup_all_queues(&mut t);
        w(&mut t, reg::STATUS, LIVE);
        assert_eq!(r(&mut t, reg::STATUS), ACKNOWLEDGE | DRIVER);
        assert!(t.device().activations.is_empty());
    }
}

#[test]
fn invalid_status_transitions_are_ignored() {
    let (mut t, _) = transport();
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    assert_eq!(r(&mut t, reg::STATUS), 0, "DRIVER needs ACKNOWLEDGE first");
    w(&mut t, reg::STATUS, ACKNOWLEDGE);
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(r(&mut t, reg::STATUS), ACKNOWLEDGE, "two bits at once");
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(&mut t, reg::STATUS, DRIVER);
    assert_eq!(
        r(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "bits never clear"
    );
    w(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(
        r(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER,
        "DRIVER_OK needs FEATURES_OK"
    );
    w(&mut t, reg::STATUS, FAILED);
    assert_eq!(r(&mut t, reg::STATUS), ACKNOWLEDGE | DRIVER | FAILED);
    assert!(t.device().activations.is_empty());
}

#[test]
fn queue_and_feature_registers_are_locked_outside_their_phase() {
    let (mut t, _) = transport();
    // Before FEATURES_OK queue registers are ignored.
    w(&mut t, reg::STATUS, ACKNOWLEDGE);
    w(&mut t, reg::DRIVER_FEATURES, 1);
    setup_queue(&mut t, 0, 16, WINDOW, WINDOW + 0x1000, WINDOW + 0x2000);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(r(&mut t, reg::QUEUE_DESC_LOW), 0);
    negotiate(&mut t, F_VERSION_1);
    // After FEATURES_OK the driver features are frozen.
    w(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    w(&mut t, reg::DRIVER_FEATURES, 0b11);
    setup_all_queues(&mut t);
    // A ready queue cannot be moved.
    w(&mut t, reg::QUEUE_SEL, 0);
    w64(&mut t, reg::QUEUE_DESC_LOW, 0x1000);
    assert_eq!(r(&mut t, reg::QUEUE_DESC_LOW), WINDOW as u32);
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(t.device().activations[0].0, F_VERSION_1);
    // After DRIVER_OK nothing moves.
    w(&mut t, reg::QUEUE_SEL, 1);
    w(&mut t, reg::QUEUE_READY, 0);
    assert_eq!(r(&mut t, reg::QUEUE_READY), 1);
}

fn refused(size: u32, desc: u64, avail: u64, used: u64) -> Transport {
    let (mut t, _) = transport();
    negotiate(&mut t, F_VERSION_1);
    setup_queue(&mut t, 0, size, desc, avail, used);
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(
        r(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DEVICE_NEEDS_RESET,
        "size {size} desc {desc:#x} avail {avail:#x} used {used:#x}"
    );
    assert!(t.device().activations.is_empty());
    t
}

#[test]
fn rings_outside_the_shared_window_refuse_driver_ok() {
    let (d, a, u) = (WINDOW, WINDOW + 0x1000, WINDOW + 0x2000);
    refused(16, 0x10_0000, a, u); // descriptors in private RAM
    refused(16, d, 0x10_0000, u);
    refused(16, d, a, 0x10_0000);
    refused(16, d, a, WINDOW - 0x1000);
    // Straddling the end: 256 descriptors (4 KiB) starting 2 KiB before it.
    refused(256, WINDOW + WINDOW_SIZE - 0x800, a, u);
    // Used ring of 256 entries (2054 bytes) ending one byte past the window.
    refused(256, d, a, WINDOW + WINDOW_SIZE - 2052);
    refused(16, u64::MAX - 15, a, u);
}

#[test]
fn bad_sizes_and_alignment_refuse_driver_ok() {
    let (d, a, u) = (WINDOW, WINDOW + 0x1000, WINDOW + 0x2000);
    refused(0, d, a, u);
    refused(24, d, a, u);
    refused(512, d, a, u);
    refused(16, d + 8, a, u);
    refused(16, d, a + 1, u);
    refused(16, d, a, u + 2);
}

#[test]
fn a_refused_device_needs_a_reset_and_then_works() {
    let mut t = refused(16, 0x1000, WINDOW, WINDOW + 0x1000);
    // Fixing the queue is not possible without a reset: DRIVER_OK stays refused.
    w(&mut t, reg::STATUS, LIVE);
    assert_ne!(r(&mut t, reg::STATUS) & DEVICE_NEEDS_RESET, 0);
    w(&mut t, reg::STATUS, 0);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert_eq!(
        t.device().resets,
        1,
        "the device saw the failed start and the reset"
    );
    negotiate(&mut t, F_VERSION_1);
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(r(&mut t, reg::STATUS), LIVE);
    assert_eq!(t.device().activations.len(), 1);
}

#[test]
fn activation_failure_sets_needs_reset() {
    let (mut t, _) = transport();
    t.device_mut().fail_activation = true;
    negotiate(&mut t, F_VERSION_1);
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(
        r(&mut t, reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DEVICE_NEEDS_RESET
    );
}

#[test]
fn reset_clears_everything_and_stops_the_device() {
    let (mut t, _) = transport();
    negotiate(&mut t, F_VERSION_1);
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    w(&mut t, reg::STATUS, 0);
    assert_eq!(t.device().resets, 1);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    for q in 0..3 {
        w(&mut t, reg::QUEUE_SEL, q);
        assert_eq!(r(&mut t, reg::QUEUE_READY), 0);
        assert_eq!(r(&mut t, reg::QUEUE_DESC_LOW), 0);
    }
    // A reset before DRIVER_OK does not bother the device.
    negotiate(&mut t, F_VERSION_1);
    w(&mut t, reg::STATUS, 0);
    assert_eq!(t.device().resets, 1);
}

#[test]
fn backend_failure_sets_needs_reset_and_raises_config_change() {
    let (mut t, irq) = transport();
    negotiate(&mut t, F_VERSION_1);
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    t.device_failed("test");
    assert_eq!(r(&mut t, reg::STATUS), LIVE | DEVICE_NEEDS_RESET);
    assert_eq!(
        r(&mut t, reg::INTERRUPT_STATUS),
        interrupt::USED_BUFFER | interrupt::CONFIG_CHANGE
    );
    assert_eq!(irq.read().unwrap(), 1, "the interrupt was raised once");
    w(&mut t, reg::INTERRUPT_ACK, interrupt::CONFIG_CHANGE);
    assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), interrupt::USED_BUFFER);
    // Driver writes that omit the device's bit, or echo it, keep it and change nothing.
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(r(&mut t, reg::STATUS), LIVE | DEVICE_NEEDS_RESET);
    w(&mut t, reg::STATUS, LIVE | DEVICE_NEEDS_RESET);
    assert_eq!(r(&mut t, reg::STATUS), LIVE | DEVICE_NEEDS_RESET);
    w(&mut t, reg::STATUS, DEVICE_NEEDS_RESET);
    assert_eq!(
        r(&mut t, reg::STATUS),
        LIVE | DEVICE_NEEDS_RESET,
        "not a reset"
    );
    assert_eq!(t.device().resets, 0);
}

#[test]
fn failure_before_driver_ok_raises_no_interrupt() {
    let (mut t, irq) = transport();
    negotiate(&mut t, F_VERSION_1);
    t.device_failed("test");
    assert!(
        irq.read().is_err(),
        "no interrupt while the driver is not live"
    );
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    assert_eq!(
        r(&mut t, reg::STATUS) & (DRIVER_OK | DEVICE_NEEDS_RESET),
        DEVICE_NEEDS_RESET
    );
    assert!(t.device().activations.is_empty());
}

#[test]
fn notify_reaches_the_device_only_when_live() {
    let (mut t, _) = transport();
    w(&mut t, reg::QUEUE_NOTIFY, 0);
    negotiate(&mut t, F_VERSION_1);
    setup_all_queues(&mut t);
    w(&mut t, reg::STATUS, LIVE);
    w(&mut t, reg::QUEUE_NOTIFY, 2);
    w(&mut t, reg::QUEUE_NOTIFY, 3);
    w(&mut t, reg::QUEUE_NOTIFY, 0x1_0000);
    assert_eq!(t.device().notifies, [2]);
}

#[test]
fn narrow_or_unaligned_register_accesses_are_ignored() {
    let (mut t, _) = transport();
    t.write(reg::STATUS, &[ACKNOWLEDGE as u8]);
    t.write(reg::STATUS + 1, &[0, 0, 0, 0]);
    assert_eq!(r(&mut t, reg::STATUS), 0);
    let mut b = [0xffu8; 2];
    t.read(reg::MAGIC_VALUE, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xffu8; 4];
    t.read(reg::MAGIC_VALUE + 2, &mut b);
    assert_eq!(b, [0; 4]);
    // Read-only registers ignore writes.
    w(&mut t, reg::MAGIC_VALUE, 0);
    w(&mut t, reg::QUEUE_NUM_MAX, 4);
    assert_eq!(r(&mut t, reg::MAGIC_VALUE), MAGIC_VALUE);
    assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 256);
}
