//! The VMM's exit codes (docs/ARCHITECTURE.md, "Exit codes"): what the guest writes to
//! [`crate::ports::EXIT_PORT`] and what `see-vmm` itself exits with.

use core::fmt;

/// The guest ended with success.
pub const SUCCESS: u8 = 0;
/// A VMM error (bad input, KVM failure); a message on stderr says what to do.
pub const VMM_ERROR: u8 = 1;
/// A command-line usage error (clap's exit code).
pub const USAGE: u8 = 2;
/// A guest panic (the message is on the serial console).
pub const PANIC: u8 = 101;
/// A guest CPU exception (vector, error code and RIP on the console), or a triple fault.
pub const EXCEPTION: u8 = 102;
/// A guest self-test failure.
pub const SELFTEST_FAILURE: u8 = 103;
/// A guest app failure (a task could not get or verify its resources, or the app is unknown).
pub const APP_FAILURE: u8 = 104;
/// The guest refused its boot layout: RAM, the shared window, a device range, the kernel image
/// or the heap overlap (the console line says which; [`crate::layout`]).
pub const BAD_LAYOUT: u8 = 105;

/// How the guest ends the VM: the codes it writes to the exit port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Everything went well.
    Success = SUCCESS,
    /// The kernel panicked.
    Panic = PANIC,
    /// An unexpected CPU exception.
    Exception = EXCEPTION,
    /// A self-test failed.
    SelfTestFailure = SELFTEST_FAILURE,
    /// A guest app failed.
    AppFailure = APP_FAILURE,
    /// The boot layout overlaps itself: the guest refuses to run on it.
    BadLayout = BAD_LAYOUT,
}

impl Status {
    /// The exit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The guest status `code` stands for, if any.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            SUCCESS => Some(Self::Success),
            PANIC => Some(Self::Panic),
            EXCEPTION => Some(Self::Exception),
            SELFTEST_FAILURE => Some(Self::SelfTestFailure),
            APP_FAILURE => Some(Self::AppFailure),
            BAD_LAYOUT => Some(Self::BadLayout),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Success => "success",
            Self::Panic => "guest panic",
            Self::Exception => "guest CPU exception",
            Self::SelfTestFailure => "guest self-test failure",
            Self::AppFailure => "guest app failure",
            Self::BadLayout => "guest refused its boot layout",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_host_codes_are_not_guest_statuses() {
        for s in [
            Status::Success,
            Status::Panic,
            Status::Exception,
            Status::SelfTestFailure,
            Status::AppFailure,
            Status::BadLayout,
        ] {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(VMM_ERROR), None);
        assert_eq!(Status::from_code(USAGE), None);
        assert_eq!(Status::Panic.code(), 101);
    }
}
