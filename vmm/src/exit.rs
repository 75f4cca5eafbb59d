//! How a VM run ends: the first reason reported wins and wakes the VMM's event loop.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, PoisonError,
};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote this status to the exit port.
    Guest(u8),
    /// A vCPU triple-faulted (an exception the guest could not handle at all).
    TripleFault {
        /// The vCPU.
        vcpu: u8,
    },
    /// A vCPU hit something the VMM cannot handle.
    VcpuError {
        /// The vCPU.
        vcpu: u8,
        /// What happened.
        message: String,
    },
}

/// Exit code for a triple fault: the guest's CPU-exception status.
pub const TRIPLE_FAULT_EXIT_CODE: u8 = see_abi::exit::EXCEPTION;
/// Exit code for a VMM error.
pub const VMM_ERROR_EXIT_CODE: u8 = see_abi::exit::VMM_ERROR;

impl ExitReason {
    /// The VMM's process exit code for this reason (docs/ARCHITECTURE.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Guest(code) => *code,
            Self::TripleFault { .. } => TRIPLE_FAULT_EXIT_CODE,
            Self::VcpuError { .. } => VMM_ERROR_EXIT_CODE,
        }
    }
}

/// Shared between vCPUs (which report) and the event loop (which waits).
#[derive(Debug)]
pub struct ExitSignal {
    requested: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    event: EventFd,
}

impl ExitSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            requested: AtomicBool::new(false),
            reason: Mutex::new(None),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the event loop.
    pub fn request(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            log::debug!("exit requested: {reason:?}");
            *slot = Some(reason);
            self.requested.store(true, Ordering::SeqCst);
            if let Err(e) = self.event.write(1) {
                log::error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// Whether an exit has been requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The recorded reason.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The eventfd written on the first request.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes() {
        let s = ExitSignal::new().unwrap();
        assert!(!s.is_requested());
        assert!(s.event().read().is_err(), "nothing to read yet");
        s.request(ExitReason::Guest(7));
        s.request(ExitReason::TripleFault { vcpu: 0 });
        assert!(s.is_requested());
        assert_eq!(s.reason(), Some(ExitReason::Guest(7)));
        assert_eq!(s.event().read().unwrap(), 1);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitReason::Guest(0).exit_code(), 0);
        assert_eq!(ExitReason::Guest(101).exit_code(), 101);
        assert_eq!(ExitReason::TripleFault { vcpu: 1 }.exit_code(), 102);
        let e = ExitReason::VcpuError {
            vcpu: 0,
            message: "x".into(),
        };
        assert_eq!(e.exit_code(), 1);
    }
}
