//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): the register window the guest
//! drives, its device-status state machine and the checks on every value the guest writes.
//!
//! Only the modern (version 2) registers exist. Queue sizes and ring addresses are checked
//! when the driver sets DRIVER_OK: every ring must lie inside the shared window (the only
//! memory a backend is given) and be aligned as the split-virtqueue layout requires. A bad
//! queue refuses DRIVER_OK and sets DEVICE_NEEDS_RESET instead, with the reason logged.

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::{interrupt, status, ActivateError, QueueConfig, VirtioDevice, F_VERSION_1};
use crate::bus::BusDevice;

/// "virt" in little-endian ASCII.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The transport version this implementation speaks.
pub const VERSION: u32 = 2;

/// Register offsets.
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

#[derive(Clone, Copy, Debug, Default)]
struct Queue {
    max: u16,
    size: u32,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl Queue {
    fn new(max: u16) -> Self {
        Self {
            max,
            size: u32::from(max),
            ..Self::default()
        }
    }
}

/// Sets the low or high half of `value`.
fn set_half(value: &mut u64, high: bool, half: u32) {
    let shift = if high { 32 } else { 0 };
    *value = (*value & !(0xffff_ffff << shift)) | (u64::from(half) << shift);
}

/// A virtio-mmio v2 register window in front of a device model.
#[derive(Debug)]
pub struct MmioTransport<D> {
    device: D,
    window: (GuestAddress, u64),
    irq: Option<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
    started: bool,
    notify_exits: u64,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport for `device` whose rings must lie in `window` (guest start, size). `irq`,
    /// when given, is written to raise the device's interrupt (the config-change one).
    pub fn new(device: D, window: (GuestAddress, u64), irq: Option<EventFd>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&m| Queue::new(m))
            .collect();
        Self {
            device,
            window,
            irq,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            started: false,
            notify_exits: 0,
        }
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device model, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// QueueNotify writes that reached the VMM (with KVM ioeventfds in place, none should:
    /// each one is a VM exit on the data path).
    pub fn notify_exits(&self) -> u64 {
        self.notify_exits
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The device failed (its backend died): sets DEVICE_NEEDS_RESET and, if the driver has
    /// the device live, raises a configuration-change interrupt.
    pub fn device_failed(&mut self, why: &str) {
        log::error!(
            "virtio device {:#x}: {why}; setting DEVICE_NEEDS_RESET",
            self.device.device_id()
        );
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= interrupt::CONFIG_CHANGE;
            if let Some(irq) = &self.irq {
                if let Err(e) = irq.write(1) {
                    log::error!("cannot raise the config-change interrupt: {e}");
                }
            }
        }
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    /// Queue registers may be written after FEATURES_OK, before DRIVER_OK, while the
    /// selected queue is not ready.
    fn queue_writable(&self) -> bool {
        self.has(status::FEATURES_OK)
            && self.status & (status::DRIVER_OK | status::FAILED) == 0
            && self
                .queues
                .get(self.queue_sel as usize)
                .is_some_and(|q| !q.ready)
    }

    fn reset(&mut self) {
        if self.started {
            self.device.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.started = false;
        for q in &mut self.queues {
            *q = Queue::new(q.max);
        }
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => self.device.vendor_id(),
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max)),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => {
                let bypass = self.has(status::DRIVER_OK) && self.device.interrupts_bypass_vmm();
                self.interrupt_status | if bypass { interrupt::USED_BUFFER } else { 0 }
            }
            reg::STATUS => self.status,
            reg::QUEUE_DESC_LOW => queue.map_or(0, |q| q.desc as u32),
            reg::QUEUE_DESC_HIGH => queue.map_or(0, |q| (q.desc >> 32) as u32),
            reg::QUEUE_DRIVER_LOW => queue.map_or(0, |q| q.avail as u32),
            reg::QUEUE_DRIVER_HIGH => queue.map_or(0, |q| (q.avail >> 32) as u32),
            reg::QUEUE_DEVICE_LOW => queue.map_or(0, |q| q.used as u32),
            reg::QUEUE_DEVICE_HIGH => queue.map_or(0, |q| (q.used >> 32) as u32),
            reg::CONFIG_GENERATION => 0,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if self.has(status::DRIVER) && !self.has(status::FEATURES_OK) {
                    match self.driver_features_sel {
                        0 | 1 => set_half(&mut self.driver_features, self.driver_features_sel == 1, value),
                        sel => log::warn!("virtio-mmio: DriverFeatures write with DriverFeaturesSel {sel} ignored"),
                    }
                } else {
                    log::warn!("virtio-mmio: DriverFeatures written in status {:#x}, ignored", self.status);
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue(offset, value),
            reg::QUEUE_NOTIFY => {
                self.notify_exits += 1;
                match u16::try_from(value) {
                    Ok(q) if usize::from(q) < self.queues.len() && self.has(status::DRIVER_OK) => {
                        self.device.notify(q)
                    }
                    _ => log::debug!("virtio-mmio: notify of queue {value} ignored"),
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.write_status(value),
            _ => log::warn!("virtio-mmio: write of {value:#x} to read-only or unknown register {offset:#x} ignored"),
        }
    }

    fn write_queue(&mut self, offset: u64, value: u32) {
        // QueueReady may always be cleared (after a reset it already is).
        if !self.queue_writable() {
            log::warn!(
                "virtio-mmio: queue register {offset:#x} written for queue {} in status {:#x}, ignored",
                self.queue_sel,
                self.status
            );
            return;
        }
        let Some(q) = self.queue() else { return };
        match offset {
            reg::QUEUE_NUM => q.size = value,
            reg::QUEUE_READY => q.ready = value == 1,
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                set_half(&mut q.desc, offset == reg::QUEUE_DESC_HIGH, value)
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                set_half(&mut q.avail, offset == reg::QUEUE_DRIVER_HIGH, value)
            }
            _ => set_half(&mut q.used, offset == reg::QUEUE_DEVICE_HIGH, value),
        }
    }

    fn write_status(&mut self, value: u32) {
        use status::*;
        let current = self.status & !DEVICE_NEEDS_RESET;
        let keep = self.status & DEVICE_NEEDS_RESET;
        if value == 0 {
            log::debug!("virtio-mmio: device reset");
            return self.reset();
        }
        // DEVICE_NEEDS_RESET is the device's bit: a driver echoing it back changes nothing.
        let value = value & !DEVICE_NEEDS_RESET;
        if value & FAILED != 0 {
            log::warn!("virtio-mmio: the driver set FAILED");
            self.status |= FAILED;
            return;
        }
        if value == current {
            return;
        }
        const ACKED: u32 = ACKNOWLEDGE | DRIVER;
        const NEGOTIATED: u32 = ACKED | FEATURES_OK;
        let next = value & !current;
        let ok = value & current == current
            && matches!(
                (current, next),
                (0, ACKNOWLEDGE)
                    | (ACKNOWLEDGE, DRIVER)
                    | (ACKED, FEATURES_OK)
                    | (NEGOTIATED, DRIVER_OK)
            );
        if !ok {
            log::warn!("virtio-mmio: invalid status change {current:#x} -> {value:#x} ignored");
            return;
        }
        match next {
            FEATURES_OK => {
                let offered = self.device.features();
                let extra = self.driver_features & !offered;
                if extra != 0 || self.driver_features & F_VERSION_1 == 0 {
                    log::warn!(
                        "virtio-mmio: refusing FEATURES_OK: driver features {:#x} (offered {offered:#x}; VERSION_1 is required)",
                        self.driver_features
                    );
                    return;
                }
            }
            DRIVER_OK => {
                if keep != 0 {
                    log::error!("virtio-mmio: DRIVER_OK refused: the device needs a reset first");
                    return;
                }
                self.started = true;
                let activated = self
                    .ready_queues()
                    .and_then(|queues| self.device.activate(self.driver_features, &queues));
                if let Err(e) = activated {
                    log::error!("virtio-mmio: DRIVER_OK refused, setting DEVICE_NEEDS_RESET: {e}");
                    self.status |= DEVICE_NEEDS_RESET;
                    return;
                }
                log::info!(
                    "virtio-mmio: device {:#x} live, features {:#x}",
                    self.device.device_id(),
                    self.driver_features
                );
            }
            _ => {}
        }
        self.status = value | keep;
    }

    /// The ready queues, each checked: size, alignment, and every ring inside the window.
    fn ready_queues(&self) -> Result<Vec<QueueConfig>, ActivateError> {
        let (start, len) = (self.window.0 .0, self.window.1);
        let mut out = Vec::new();
        for (index, q) in self.queues.iter().enumerate().filter(|(_, q)| q.ready) {
            let queue = index as u16;
            if q.size == 0 || !q.size.is_power_of_two() || q.size > u32::from(q.max) {
                return Err(ActivateError::QueueSize {
                    queue,
                    size: q.size,
                    max: q.max,
                });
            }
            let n = u64::from(q.size);
            for (ring, addr, bytes, align) in [
                ("descriptor", q.desc, 16 * n, 16),
                ("available", q.avail, 6 + 2 * n, 2),
                ("used", q.used, 6 + 8 * n, 4),
            ] {
                if !addr.is_multiple_of(align) {
                    return Err(ActivateError::Misaligned {
                        queue,
                        ring,
                        addr,
                        align,
                    });
                }
                let inside = addr >= start
                    && addr
                        .checked_add(bytes)
                        .is_some_and(|end| end <= start + len);
                if !inside {
                    return Err(ActivateError::RingOutsideWindow { queue, ring, addr });
                }
            }
            out.push(QueueConfig {
                index: queue,
                size: q.size as u16,
                desc: GuestAddress(q.desc),
                avail: GuestAddress(q.avail),
                used: GuestAddress(q.used),
            });
        }
        Ok(out)
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            let config = self.device.config();
            for (i, byte) in data.iter_mut().enumerate() {
                let at = (offset - reg::CONFIG) as usize + i;
                *byte = config.get(at).copied().unwrap_or(0);
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::warn!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored (registers are 32-bit)",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            log::warn!("virtio-mmio: write to the read-only config space at {offset:#x} ignored");
            return;
        }
        let bytes = <[u8; 4]>::try_from(data)
            .ok()
            .filter(|_| offset.is_multiple_of(4));
        let Some(bytes) = bytes else {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored (registers are 32-bit)",
                data.len()
            );
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
