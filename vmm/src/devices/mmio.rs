//! virtio-mmio slots: 4 KiB windows from 0xD000_0000 with one GSI each, announced to the guest
//! on the kernel command line in Linux syntax.

use see_abi::{cmdline::VirtioMmioDevice, memory::VIRTIO_MMIO_MAX_DEVICES};
use vm_memory::GuestAddress;

/// Where a virtio-mmio device lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// Slot number n.
    pub index: u32,
    /// Guest-physical base: `0xD000_0000 + 0x1000 * n`.
    pub base: GuestAddress,
    /// Size of the register window.
    pub size: u64,
    /// Interrupt line: `5 + n`.
    pub gsi: u32,
}

impl MmioSlot {
    /// The kernel command-line entry announcing the device.
    pub fn cmdline_entry(&self) -> String {
        VirtioMmioDevice {
            size: self.size,
            base: self.base.0,
            gsi: self.gsi,
        }
        .to_string()
    }
}

/// All slots are taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("all {VIRTIO_MMIO_MAX_DEVICES} virtio-mmio slots are in use")]
pub struct NoFreeSlot;

/// Hands out slots in order.
#[derive(Debug, Default)]
pub struct MmioSlots {
    next: u32,
}

impl MmioSlots {
    /// The next free slot.
    pub fn allocate(&mut self) -> Result<MmioSlot, NoFreeSlot> {
        if self.next >= VIRTIO_MMIO_MAX_DEVICES {
            return Err(NoFreeSlot);
        }
        let index = self.next;
        self.next += 1;
        let device = VirtioMmioDevice::slot(index);
        Ok(MmioSlot {
            index,
            base: GuestAddress(device.base),
            size: device.size,
            gsi: device.gsi,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_memory_map() {
        let mut slots = MmioSlots::default();
        let first = slots.allocate().unwrap();
        assert_eq!(first.cmdline_entry(), "virtio_mmio.device=4K@0xd0000000:5");
        let second = slots.allocate().unwrap();
        assert_eq!((second.base.0, second.gsi), (0xd000_1000, 6));
        for _ in 2..VIRTIO_MMIO_MAX_DEVICES {
            slots.allocate().unwrap();
        }
        assert_eq!(slots.allocate(), Err(NoFreeSlot));
    }
}
