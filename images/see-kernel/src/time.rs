//! Timekeeping: kvmclock (the KVM paravirtual clock) for nanoseconds and the TSC frequency,
//! and `rdtsc` for cheap deadlines.
//!
//! The host controls the guest's clock, so time here orders events and bounds waits; it never
//! decides freshness of anything security-relevant.

use core::{
    cell::UnsafeCell,
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use x86_64::registers::model_specific::Msr;

const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// `pvclock_vcpu_time_info`, updated by the host.
#[repr(C, align(64))]
struct PvClock(UnsafeCell<[u32; 8]>);

// SAFETY: the host writes it; the guest only reads it with volatile loads (see `snapshot`).
unsafe impl Sync for PvClock {}

static PVCLOCK: PvClock = PvClock(UnsafeCell::new([0; 8]));
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Why no clock could be set up.
#[derive(Debug)]
pub enum TimeError {
    /// The CPUID leaves of KVM are missing: not running on KVM.
    NotKvm,
    /// KVM does not offer kvmclock.
    NoKvmClock,
    /// kvmclock gave a multiplier of zero.
    BadClock,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKvm => write!(f, "no KVM CPUID signature: this kernel needs KVM's paravirtual clock (the VMM must pass the KVM CPUID leaves)"),
            Self::NoKvmClock => write!(f, "KVM offers no kvmclock (CPUID 0x40000001 bits 0 and 3 clear)"),
            Self::BadClock => write!(f, "kvmclock reports a zero TSC multiplier"),
        }
    }
}

#[derive(Clone, Copy)]
struct Snapshot {
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
}

fn snapshot() -> Snapshot {
    let p = PVCLOCK.0.get() as *const u32;
    loop {
        // SAFETY: `p` points at the 32-byte pvclock area; volatile reads of host-written data.
        let (v1, w, v2) = unsafe {
            let v1 = p.read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            let w: [u32; 8] = core::array::from_fn(|i| p.add(i).read_volatile());
            core::sync::atomic::fence(Ordering::Acquire);
            (v1, w, p.read_volatile())
        };
        if v1 % 2 == 0 && v1 == v2 {
            return Snapshot {
                tsc_timestamp: u64::from(w[2]) | (u64::from(w[3]) << 32),
                system_time: u64::from(w[4]) | (u64::from(w[5]) << 32),
                mul: w[6],
                shift: (w[7] & 0xff) as u8 as i8,
            };
        }
        core::hint::spin_loop();
    }
}

/// Reads the time-stamp counter.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no memory effects; CR4.TSD is clear in this kernel.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Enables kvmclock and derives the TSC frequency from it. Returns the frequency in Hz.
pub fn init() -> Result<u64, TimeError> {
    let sig = core::arch::x86_64::__cpuid(KVM_CPUID_SIGNATURE);
    let name = [
        sig.ebx.to_le_bytes(),
        sig.ecx.to_le_bytes(),
        sig.edx.to_le_bytes(),
    ];
    if name.as_flattened() != b"KVMKVMKVM\0\0\0" || sig.eax < KVM_CPUID_FEATURES {
        return Err(TimeError::NotKvm);
    }
    let features = core::arch::x86_64::__cpuid(KVM_CPUID_FEATURES).eax;
    let msr = if features & KVM_FEATURE_CLOCKSOURCE2 != 0 {
        MSR_KVM_SYSTEM_TIME_NEW
    } else if features & KVM_FEATURE_CLOCKSOURCE != 0 {
        MSR_KVM_SYSTEM_TIME
    } else {
        return Err(TimeError::NoKvmClock);
    };
    // SAFETY: the MSR takes the (identity-mapped, 64-byte aligned) address of the pvclock area,
    // bit 0 enables it; the host then writes that area, which is only read with volatile loads.
    unsafe { Msr::new(msr).write(PVCLOCK.0.get() as u64 | 1) };
    let s = snapshot();
    if s.mul == 0 {
        return Err(TimeError::BadClock);
    }
    // ns = ticks * 2^shift * mul / 2^32, so Hz = 1e9 * 2^32 / (mul * 2^shift).
    let mut hz = (1_000_000_000u128 << 32) / u128::from(s.mul);
    if s.shift >= 0 {
        hz >>= s.shift;
    } else {
        hz <<= -s.shift;
    }
    let hz = hz as u64;
    TSC_HZ.store(hz, Ordering::Relaxed);
    Ok(hz)
}

/// The TSC frequency in Hz (0 before [`init`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// kvmclock: nanoseconds of host monotonic time.
pub fn monotonic_ns() -> u64 {
    let s = snapshot();
    let mut delta = tsc().wrapping_sub(s.tsc_timestamp);
    if s.shift >= 0 {
        delta <<= s.shift;
    } else {
        delta >>= -s.shift;
    }
    s.system_time
        .wrapping_add(((u128::from(delta) * u128::from(s.mul)) >> 32) as u64)
}

/// Converts TSC ticks to microseconds.
pub fn ticks_to_us(ticks: u64) -> u64 {
    match tsc_hz() {
        0 => 0,
        hz => (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64,
    }
}

/// Microseconds since the PVH entry point.
pub fn since_entry_us() -> u64 {
    ticks_to_us(tsc().wrapping_sub(crate::boot::entry_tsc()))
}

/// A point in the future, measured on the TSC.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// `us` microseconds from now.
    pub fn after_us(us: u64) -> Self {
        let ticks = (u128::from(us) * u128::from(tsc_hz()) / 1_000_000) as u64;
        Self(tsc().saturating_add(ticks))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        tsc() >= self.0
    }
}
