//! The receive path's profile on the console: `see: profile ...`, printed with the counters,
//! for `cargo xtask bench prefetch --profile` (tests/common/profile.rs parses it).
//!
//! Also the interrupt's timestamp the driver's notification stage starts from: the device's
//! interrupt handler records the TSC (one `rdtsc` in ring 0), and the driver asks its age once
//! it has acknowledged the interrupt in ring 3.

use core::sync::atomic::{AtomicU64, Ordering};

use see_guest_driver::Driver;

use super::platform::KernelPlatform;
use crate::time;

/// TSC when the device's first unhandled interrupt was taken (0: none since the last age read).
static INTERRUPT_TSC: AtomicU64 = AtomicU64::new(0);

/// Called by the device's interrupt handler: keeps the earliest unhandled interrupt's TSC.
pub fn on_interrupt() {
    let _ = INTERRUPT_TSC.compare_exchange(0, time::tsc(), Ordering::AcqRel, Ordering::Relaxed);
}

/// Nanoseconds since the earliest unhandled interrupt, and forgets it; None without one.
pub fn interrupt_age_ns() -> Option<u64> {
    let taken = INTERRUPT_TSC.swap(0, Ordering::AcqRel);
    if taken == 0 {
        return None;
    }
    let hz = u128::from(time::tsc_hz().max(1));
    Some((u128::from(time::tsc().saturating_sub(taken)) * 1_000_000_000 / hz) as u64)
}

/// Prints `see: profile bundles=K bytes=N notifications=I notify_ns=.. copy_ns=..
/// reassemble_ns=.. hash_ns=.. signature_ns=.. insert_ns=..`.
pub fn print(driver: &Driver<KernelPlatform>) {
    let p = driver.profile();
    println!(
        "see: profile bundles={} bytes={} notifications={} notify_ns={} copy_ns={} reassemble_ns={} hash_ns={} signature_ns={} insert_ns={}",
        p.bundles,
        p.bytes,
        p.notifications,
        p.notify_ns,
        p.copy_ns,
        p.reassemble_ns,
        p.hash_ns,
        p.signature_ns,
        p.insert_ns
    );
}
