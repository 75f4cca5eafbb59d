//! vCPU threads: each runs `KVM_RUN` in a loop and hands port I/O and MMIO exits to the buses.
//!
//! To stop them, the VMM sets the shared stop flag and signals each thread (SIGRTMIN), which
//! makes a blocked `KVM_RUN` return `EINTR`; a signal that lands between the flag check and
//! `KVM_RUN` is covered by signalling again until the thread has ended.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Once,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::{
    bus::Bus,
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
        .spawn(move || run(id, vcpu, &ctx))
}

fn run(id: u8, mut vcpu: VcpuFd, ctx: &VcpuContext) {
    let fail = |message: String| {
        ctx.exit.request(ExitReason::VcpuError { vcpu: id, message });
    };
    while !ctx.stop.load(Ordering::SeqCst) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if !ctx.pio.write(u64::from(port), data) {
                    log::debug!("vcpu {id}: write to unhandled port {port:#x}: {data:02x?}");
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if !ctx.pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio.read(addr, data) {
                    log::debug!("vcpu {id}: read from unhandled MMIO {addr:#x}");
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio.write(addr, data) {
                    log::debug!("vcpu {id}: write to unhandled MMIO {addr:#x}: {data:02x?}");
                }
            }
            Ok(VcpuExit::Shutdown) => {
                ctx.exit.request(ExitReason::TripleFault { vcpu: id });
                return;
            }
            Ok(VcpuExit::Hlt) => {
                fail("the vCPU halted with interrupts off outside the in-kernel irqchip".into());
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                fail(format!("KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"));
                return;
            }
            Ok(VcpuExit::InternalError) => {
                fail("KVM internal error (the guest ran an instruction KVM cannot emulate)".into());
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                fail(format!("the guest requested a system event (type {kind}): reset and power-off go through the exit port"));
                return;
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => {
                fail(format!("unexpected KVM exit: {other:?}"));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                fail(format!("KVM_RUN failed: {e}"));
                return;
            }
        }
        if ctx.exit.is_requested() {
            return;
        }
    }
}

/// Stops every vCPU thread: sets `stop`, then signals each until it has ended or `timeout`
/// has passed. Returns the number of threads that did not stop (they are left detached).
pub fn stop_all(handles: Vec<JoinHandle<()>>, stop: &AtomicBool, timeout: Duration) -> usize {
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + timeout;
    let mut stuck = 0;
    for handle in handles {
        while !handle.is_finished() && Instant::now() < deadline {
            if let Err(e) = handle.kill(kick_signal()) {
                log::debug!("kick: {e}");
            }
            std::thread::yield_now();
        }
        if handle.is_finished() {
            if handle.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        } else {
            stuck += 1;
        }
    }
    stuck
}
