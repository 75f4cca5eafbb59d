//! vCPU threads: each runs `KVM_RUN` in a loop and hands port I/O and MMIO exits to the buses.
//!
//! To stop them, the VMM sets the shared stop flag and signals each thread (SIGRTMIN), which
//! makes a blocked `KVM_RUN` return `EINTR`; a signal that lands between the flag check and
//! `KVM_RUN` is covered by signalling again, every few milliseconds (real-time signals queue:
//! signalling in a tight loop would bury a thread that is still starting), until each thread
//! has reported its end.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Once,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use see_sandbox::ThreadFilter;

use crate::{
    bus::Bus,
    confine,
    exit::{ExitReason, ExitSignal},
};

/// What a vCPU thread needs besides its fd.
#[derive(Clone, Debug)]
pub struct VcpuContext {
    /// The port I/O bus.
    pub pio: Arc<Bus>,
    /// The MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where the vCPU reports the end of the run.
    pub exit: Arc<ExitSignal>,
    /// Set when every vCPU must stop.
    pub stop: Arc<AtomicBool>,
    /// Each thread sends its vCPU id here as it ends (however it ends).
    pub exited: mpsc::Sender<u8>,
    /// The seccomp filter each thread installs before its first `KVM_RUN`, if any.
    pub filter: Option<Arc<ThreadFilter>>,
}

/// Reports a vCPU thread's end on drop, so a panic reports too.
struct ExitReport(u8, mpsc::Sender<u8>);

impl Drop for ExitReport {
    fn drop(&mut self) {
        // The receiver is gone only if the VMM no longer waits.
        let _ = self.1.send(self.0);
    }
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the (empty) kick handler once per process, so the kick only interrupts `KVM_RUN`.
fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_signal_handler(kick_signal(), on_kick) {
            log::warn!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// Starts vCPU `id` on its own thread.
pub fn spawn(id: u8, vcpu: VcpuFd, ctx: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    install_kick_handler();
    std::thread::Builder::new()
        .name(format!("see-vcpu-{id}"))
        .spawn(move || {
            let _report = ExitReport(id, ctx.exited.clone());
            if let Some(filter) = &ctx.filter {
                if let Err(e) = filter.install() {
                    let message = e.to_string();
                    ctx.exit
                        .request(ExitReason::VcpuError { vcpu: id, message });
                    return;
                }
            }
            confine::test_hook(confine::ThreadKind::Vcpu);
            run(id, vcpu, &ctx)
        })
}

/// Why a vCPU thread stops, decided while the exit data is borrowed from the vCPU.
enum Stop {
    TripleFault,
    Failed(String),
    /// A failure whose message gets the guest's RIP appended.
    FailedAt(&'static str),
}

fn run(id: u8, mut vcpu: VcpuFd, ctx: &VcpuContext) {
    while !ctx.stop.load(Ordering::SeqCst) {
        let stop = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if !ctx.pio.write(u64::from(port), data) {
                    log::debug!("vcpu {id}: write to unhandled port {port:#x}: {data:02x?}");
                }
                None
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if !ctx.pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio.read(addr, data) {
                    log::debug!("vcpu {id}: read from unhandled MMIO {addr:#x}");
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio.write(addr, data) {
                    log::debug!("vcpu {id}: write to unhandled MMIO {addr:#x}: {data:02x?}");
                }
                None
            }
            Ok(VcpuExit::Shutdown) => Some(Stop::TripleFault),
            Ok(VcpuExit::Hlt) => Some(Stop::FailedAt(
                "the vCPU halted outside the in-kernel irqchip",
            )),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Stop::Failed(format!(
                "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => Some(Stop::FailedAt(
                "KVM internal error: it could not emulate a guest instruction",
            )),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(Stop::Failed(format!(
                "the guest requested system event {kind}: power-off goes through the exit port"
            ))),
            Ok(VcpuExit::Intr) => None,
            Ok(other) => Some(Stop::Failed(format!("unexpected KVM exit: {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Stop::Failed(format!("KVM_RUN failed: {e}"))),
        };
        match stop {
            None => {}
            Some(Stop::TripleFault) => {
                ctx.exit.request(ExitReason::TripleFault { vcpu: id });
                return;
            }
            Some(Stop::Failed(message)) => {
                ctx.exit
                    .request(ExitReason::VcpuError { vcpu: id, message });
                return;
            }
            Some(Stop::FailedAt(what)) => {
                let rip = vcpu
                    .get_regs()
                    .map_or_else(|e| format!("unknown ({e})"), |r| format!("{:#x}", r.rip));
                let message = format!("{what} (guest RIP {rip})");
                ctx.exit
                    .request(ExitReason::VcpuError { vcpu: id, message });
                return;
            }
        }
        if ctx.exit.is_requested() {
            return;
        }
    }
}

/// How often a vCPU that has not stopped yet is signalled again.
pub const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// Stops every vCPU thread: sets `stop`, signals each thread that has not reported its exit on
/// `exited`, and waits for the reports, signalling again every [`KICK_INTERVAL`] until `timeout`.
/// Returns the number of threads that did not stop (they are left detached).
pub fn stop_all(
    handles: Vec<JoinHandle<()>>,
    stop: &AtomicBool,
    exited: &mpsc::Receiver<u8>,
    timeout: Duration,
) -> usize {
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + timeout;
    let mut done = vec![false; handles.len()];
    while done.iter().any(|d| !d) {
        for (handle, _) in handles.iter().zip(&done).filter(|(_, d)| !**d) {
            if let Err(e) = handle.kill(kick_signal()) {
                log::debug!("kick: {e}");
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match exited.recv_timeout(KICK_INTERVAL.min(deadline - now)) {
            Ok(id) => {
                if let Some(d) = done.get_mut(usize::from(id)) {
                    *d = true;
                }
                // Take every other report already queued before kicking again.
                for id in exited.try_iter() {
                    if let Some(d) = done.get_mut(usize::from(id)) {
                        *d = true;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut stuck = 0;
    for (handle, done) in handles.into_iter().zip(done) {
        if !done {
            stuck += 1;
        } else if handle.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
    stuck
}
