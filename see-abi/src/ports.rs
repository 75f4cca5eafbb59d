//! The x86 I/O ports the guest writes and the VMM serves (docs/ARCHITECTURE.md, "Devices and
//! ports"), and the boot progress codes.

/// The exit port: a 4-byte (or 1-byte) write ends the VM; the value, masked to 0..=255,
/// becomes the VMM's exit code ([`crate::exit`]).
pub const EXIT_PORT: u16 = 0x501;
/// The boot progress port: 1-byte writes of a [`Progress`] code, timestamped by the VMM.
pub const PROGRESS_PORT: u16 = 0x80;
/// The first port of the 16550 UART COM1 (8 ports).
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports of a 16550 UART.
pub const COM1_LEN: u16 = 8;
/// The interrupt line of COM1.
pub const COM1_IRQ: u32 = 4;

/// Boot progress codes written to [`PROGRESS_PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Progress {
    /// The 64-bit Rust entry is reached.
    Entry = 0x01,
    /// The kernel is initialised and ready.
    Ready = 0x02,
    /// Every self-test passed.
    SelfTestsPassed = 0x03,
}

impl Progress {
    /// The byte written to the port.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The progress code `code` stands for, if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(Self::Entry),
            0x02 => Some(Self::Ready),
            0x03 => Some(Self::SelfTestsPassed),
            _ => None,
        }
    }
}

/// The exit status of QEMU's `isa-debug-exit` device (placed at [`EXIT_PORT`]) after the guest
/// wrote `code`: QEMU exits with `(code << 1) | 1`, so a guest "success" (0) reads as 1.
pub const fn qemu_debug_exit_status(code: u8) -> i32 {
    ((code as i32) << 1) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_codes_round_trip() {
        for p in [Progress::Entry, Progress::Ready, Progress::SelfTestsPassed] {
            assert_eq!(Progress::from_code(p.code()), Some(p));
        }
        assert_eq!(Progress::from_code(0), None);
        assert_eq!(Progress::from_code(0x04), None);
    }

    #[test]
    fn qemu_status_shifts_the_code() {
        assert_eq!(qemu_debug_exit_status(0), 1);
        assert_eq!(qemu_debug_exit_status(101), 203);
        assert_eq!(qemu_debug_exit_status(255), 511);
    }
}
