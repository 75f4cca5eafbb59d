//! Address buses: port I/O and MMIO ranges mapped to devices behind one small trait.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

/// A device on a bus. Offsets are relative to the start of the device's range.
pub trait BusDevice: Send {
    /// Fills `data` with the value at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Takes the value written at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else drives it (an event handler, the VMM).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A range could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps a device already there")]
    Overlap {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

/// Address ranges mapped to devices; built before the vCPUs start, then shared read-only.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(b, (l, _))| (*b, *l)))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let before = self.ranges.range(..end).next_back();
        if before.is_some_and(|(b, (l, _))| b + l > base) {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    /// The device whose range holds all of `[addr, addr + len)`, and the offset of `addr`.
    fn find(&self, addr: u64, len: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (size, device)) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(len as u64)? <= *size).then_some((offset, device))
    }

    /// Reads from the device at `addr`; returns false (leaving `data` alone) if there is none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; returns false if there is none.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x501, 1, b.clone()).unwrap();
        assert!(bus.write(0x3fa, &[1]));
        assert!(bus.write(0x501, &[42]));
        assert!(!bus.write(0x500, &[0]));
        assert!(!bus.write(0x400, &[0]));
        let mut d = [0u8; 2];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5, 5]);
        assert_eq!(a.lock().unwrap().writes, vec![(2, vec![1])]);
        assert_eq!(b.lock().unwrap().writes, vec![(0, vec![42])]);
    }

    #[test]
    fn access_crossing_the_end_is_unhandled() {
        let mut bus = Bus::new();
        bus.insert(0x501, 1, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        assert!(!bus.write(0x501, &[0, 0, 0, 0]));
        let mut d = [9u8; 2];
        assert!(!bus.read(0x501, &mut d));
        assert_eq!(d, [9, 9]);
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let dev = || -> SharedDevice { Arc::new(Mutex::new(Recorder::default())) };
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x1000, dev()).unwrap();
        assert_eq!(
            bus.insert(0x1fff, 1, dev()),
            Err(BusError::Overlap {
                base: 0x1fff,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(0x800, 0x801, dev()),
            Err(BusError::Overlap {
                base: 0x800,
                len: 0x801
            })
        );
        assert!(bus.insert(0x800, 0x800, dev()).is_ok());
        assert!(bus.insert(0x2000, 1, dev()).is_ok());
        assert!(matches!(
            bus.insert(5, 0, dev()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, dev()),
            Err(BusError::BadRange { .. })
        ));
    }
}
