//! The exit port (0x501) and the boot progress port (0x80).

use std::{
    sync::{mpsc::SyncSender, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use see_abi::ports::Progress;

use crate::{
    bus::BusDevice,
    exit::{ExitReason, ExitSignal},
};

pub use see_abi::ports::{EXIT_PORT, PROGRESS_PORT};

/// Progress code: the guest's 64-bit entry.
pub const PROGRESS_ENTRY: u8 = Progress::Entry.code();
/// Progress code: the guest is ready.
pub const PROGRESS_READY: u8 = Progress::Ready.code();
/// Progress code: the guest's self-tests passed.
pub const PROGRESS_SELFTESTS: u8 = Progress::SelfTestsPassed.code();

/// A write ends the VM; the low byte of the value is the exit status.
#[derive(Debug)]
pub struct ExitPort {
    signal: Arc<ExitSignal>,
}

impl ExitPort {
    /// An exit port raising `signal`.
    pub fn new(signal: Arc<ExitSignal>) -> Self {
        Self { signal }
    }
}

impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        // Little-endian: the first byte is `value & 0xff`.
        if let Some(&status) = data.first() {
            self.signal.request(ExitReason::Guest(status));
        }
    }
}

/// One boot progress code and when it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The code written.
    pub code: u8,
    /// Time since the VMM started.
    pub at: Duration,
}

/// Timestamps each byte written to port 0x80.
#[derive(Debug)]
pub struct BootProgress {
    start: Instant,
    events: Arc<Mutex<Vec<ProgressEvent>>>,
    on_ready: Option<SyncSender<()>>,
}

impl BootProgress {
    /// A progress port measuring from `start` (the VMM's start).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            events: Arc::default(),
            on_ready: None,
        }
    }

    /// Sends on `tx` (without blocking) when the guest reports [`PROGRESS_READY`].
    pub fn notify_ready(&mut self, tx: SyncSender<()>) {
        self.on_ready = Some(tx);
    }

    /// The events recorded so far, shared with the device.
    pub fn events(&self) -> Arc<Mutex<Vec<ProgressEvent>>> {
        self.events.clone()
    }
}

impl BusDevice for BootProgress {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let at = self.start.elapsed();
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        for &code in data {
            log::info!("boot progress {code:#04x} at {} us", at.as_micros());
            // A misbehaving guest cannot grow this without bound.
            if events.len() < 1024 {
                events.push(ProgressEvent { code, at });
            }
            if code == PROGRESS_READY {
                // Once: whoever waits needs one word, and a full or closed channel is fine.
                if let Some(tx) = self.on_ready.take() {
                    let _ = tx.try_send(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_port_takes_the_low_byte() {
        let signal = Arc::new(ExitSignal::new().unwrap());
        let mut port = ExitPort::new(signal.clone());
        port.write(0, &0x1_0165u32.to_le_bytes());
        assert_eq!(signal.reason(), Some(ExitReason::Guest(0x65)));
    }

    #[test]
    fn progress_events_are_timestamped_in_order() {
        let mut p = BootProgress::new(Instant::now());
        let events = p.events();
        p.write(0, &[PROGRESS_ENTRY]);
        p.write(0, &[PROGRESS_READY]);
        let e = events.lock().unwrap();
        assert_eq!(
            e.iter().map(|e| e.code).collect::<Vec<_>>(),
            [PROGRESS_ENTRY, PROGRESS_READY]
        );
        assert!(e[0].at <= e[1].at);
    }

    #[test]
    fn ready_is_announced_once() {
        let mut p = BootProgress::new(Instant::now());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        p.notify_ready(tx);
        p.write(0, &[PROGRESS_ENTRY]);
        assert!(rx.try_recv().is_err(), "not ready yet");
        p.write(0, &[PROGRESS_READY]);
        assert_eq!(rx.try_recv(), Ok(()));
        p.write(0, &[PROGRESS_READY]);
        // The sender went with the first announcement.
        assert_eq!(rx.recv(), Err(std::sync::mpsc::RecvError));
    }
}
