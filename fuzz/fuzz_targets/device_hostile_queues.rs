//! The device's queue processing against a hostile driver: the input is a program that writes
//! raw descriptors (any address, length, flags and next index: chains too long, loops,
//! addresses outside the shared window or across its end, the wrong direction, indirect
//! tables), avail ring entries and indices, and bytes (so that well-formed ctrlq messages can
//! appear), into queues built with virtio-queue's `MockSplitQueue`, then kicks the device's
//! queues and resets it, in any order.
//!
//! Whatever the driver does, the device must not panic, hang or fail, and must keep its event
//! queue within its bound. (The used rings are not checked: they live in the shared window,
//! and a driver that points a device-writable buffer at its own rings, directly or through an
//! indirect table, gets bundle bytes there, as it asked; the device's own accounting of what it
//! took is tested in backend/tests/flood.rs and the unit tests.)
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    fuzzing::FuzzDevice,
    store::{ResourceStore, StoreError, StoredResource},
    EVENT_QUEUE,
};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_prefetch_wire::ResourceKind;
use virtio_queue::{desc::RawDescriptor, mock::MockSplitQueue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

/// The shared window: the only memory the device is given.
const BASE: u64 = 0x1_0000;
const SIZE: usize = 0x4_0000;
/// Queue sizes (small: chains wrap and loop quickly).
const QSIZE: u16 = 16;
/// Where each queue's rings go, and the data area the program writes into.
const QUEUES: [u64; 3] = [BASE, BASE + 0x1000, BASE + 0x2000];
const DATA: u64 = BASE + 0x4000;
/// Most program steps per input.
const MAX_STEPS: usize = 256;

/// A store of two small resources.
struct Tiny;

impl ResourceStore for Tiny {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        match id {
            1 | 2 if min_version <= 1 => Ok(StoredResource::new(
                id,
                1,
                ResourceKind::Data,
                1,
                vec![id as u8; 100 * id as usize],
            )),
            _ => Err(StoreError::Unknown { id, min_version }),
        }
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        self.get(id, version)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        self.get(id, 0).map(|r| r.content.len() as u64)
    }
}

/// Reads the program's bytes in order; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// An address: mostly inside the window, sometimes anywhere (outside, across its end, huge,
/// or onto the rings themselves).
fn address(input: &mut Input) -> u64 {
    let offset = u64::from(input.u16()) * 4;
    match input.byte() % 8 {
        0 => u64::from(input.u32()) << 16,
        1 => u64::MAX - offset,
        2 => BASE + SIZE as u64 - (offset % 64),
        3 => 0,
        _ => DATA + offset % (SIZE as u64 - (DATA - BASE)),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(BASE), SIZE)]).unwrap();
    let mocks: Vec<MockSplitQueue<GuestMemoryMmap>> = QUEUES
        .iter()
        .map(|&at| MockSplitQueue::create(&mem, GuestAddress(at), QSIZE))
        .collect();
    let atomic = GuestMemoryAtomic::new(mem.clone());
    let vrings: Vec<VringRwLock> = mocks
        .iter()
        .map(|m| {
            let v = VringRwLock::new(atomic.clone(), QSIZE).unwrap();
            v.set_queue_info(m.desc_table_addr().0, m.avail_addr().0, m.used_addr().0)
                .unwrap();
            v.set_queue_size(QSIZE);
            v.set_queue_ready(true);
            v.set_enabled(true);
            v
        })
        .collect();
    let mut key = [7u8; 48];
    key[0] = 1;
    let mut device = FuzzDevice::new(Arc::new(Tiny), SigningKey::from_slice(&key).unwrap())
        .expect("the device starts");
    device.set_memory(atomic).unwrap();
    let mut avail_idx = [0u16; 3];

    for _ in 0..MAX_STEPS {
        if input.done() {
            break;
        }
        let q = usize::from(input.byte() % 3);
        match input.byte() % 8 {
            // A raw descriptor.
            0 | 1 => {
                let index = input.u16() % QSIZE;
                let desc = RawDescriptor::from(virtio_queue::desc::split::Descriptor::new(
                    address(&mut input),
                    input.u32() % 0x2000,
                    input.u16() & 0x7,
                    input.u16() % (QSIZE + 2),
                ));
                let _ = mocks[q].desc_table().store(index, desc);
            }
            // An avail entry, then a new avail index (any, not only one further).
            2 | 3 => {
                let slot = input.u16() % QSIZE;
                let head = input.u16() % (QSIZE + 2);
                let _ = mocks[q]
                    .avail()
                    .ring()
                    .ref_at(slot.into())
                    .map(|r| r.store(head));
                avail_idx[q] = if input.byte() % 4 == 0 {
                    input.u16()
                } else {
                    avail_idx[q].wrapping_add(1)
                };
                mocks[q].avail().idx().store(avail_idx[q]);
            }
            // Bytes in the data area (messages for ctrlq).
            4 => {
                let at = DATA + u64::from(input.u16() % 0x1000);
                let len = usize::from(input.byte());
                let bytes: Vec<u8> = (0..len).map(|_| input.byte()).collect();
                let _ = mem.write_slice(&bytes, GuestAddress(at));
            }
            // Kick a queue.
            5 | 6 => {
                device.kick(q as u16, &vrings).unwrap();
                device.work(&vrings).unwrap();
            }
            // A reset (the driver wrote status 0) and a fresh start of the rings.
            _ => device.reset(),
        }
    }
    assert!(device.drain_events() <= EVENT_QUEUE);
});
