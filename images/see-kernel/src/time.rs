//! Timekeeping: kvmclock (the KVM paravirtual clock) for nanoseconds and the TSC frequency,
//! and `rdtsc` for cheap deadlines.
//!
//! A VMM that offers no kvmclock (QEMU with `-cpu ...,-kvmclock`, or `kvm=off`) still gets a
//! clock: the invariant TSC, its frequency read from CPUID (leaf 0x15, or the hypervisor
//! timing leaf 0x40000010) or measured against the legacy PIT, and nanoseconds counted from
//! [`init`].
//!
//! The host controls the guest's clock, so time here orders events and bounds waits; it never
//! decides freshness of anything security-relevant.

use core::{
    cell::UnsafeCell,
    fmt,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use x86_64::{instructions::port::Port, registers::model_specific::Msr};

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
/// The TSC at [`init`] when the TSC is the clock; 0 when kvmclock is.
static TSC_EPOCH: AtomicU64 = AtomicU64::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(Source::None as u8);

/// What [`monotonic_ns`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Source {
    /// Not set up yet.
    None,
    /// kvmclock.
    KvmClock,
    /// The TSC, its frequency from CPUID.
    TscCpuid,
    /// The TSC, its frequency measured against the PIT.
    TscPit,
}

impl Source {
    /// A short name for the console.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::KvmClock => "kvmclock",
            Self::TscCpuid => "TSC, frequency from CPUID",
            Self::TscPit => "TSC, calibrated against the PIT",
        }
    }
}

/// The clock [`init`] chose.
pub fn source() -> Source {
    match SOURCE.load(Ordering::Relaxed) {
        1 => Source::KvmClock,
        2 => Source::TscCpuid,
        3 => Source::TscPit,
        _ => Source::None,
    }
}

/// Why no clock could be set up.
#[derive(Debug)]
pub enum TimeError {
    /// The CPUID leaves of KVM are missing: not running on KVM.
    NotKvm,
    /// KVM does not offer kvmclock.
    NoKvmClock,
    /// kvmclock gave a multiplier of zero.
    BadClock,
    /// No kvmclock, and the TSC's frequency is neither in CPUID nor measurable on a PIT.
    NoTscFrequency,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotKvm => write!(f, "no KVM CPUID signature: this kernel needs KVM's paravirtual clock (the VMM must pass the KVM CPUID leaves)"),
            Self::NoKvmClock => write!(f, "KVM offers no kvmclock (CPUID 0x40000001 bits 0 and 3 clear)"),
            Self::BadClock => write!(f, "kvmclock reports a zero TSC multiplier"),
            Self::NoTscFrequency => write!(f, "no kvmclock, no TSC frequency in CPUID (leaves 0x15, 0x40000010) and no PIT to measure it: give the VM kvmclock or a PIT"),
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

/// Sets up the clock: kvmclock when KVM offers it, the bare TSC otherwise. Returns the TSC
/// frequency in Hz.
pub fn init() -> Result<u64, TimeError> {
    match init_kvmclock() {
        Ok(hz) => {
            SOURCE.store(Source::KvmClock as u8, Ordering::Relaxed);
            Ok(hz)
        }
        Err(TimeError::NotKvm | TimeError::NoKvmClock) => {
            let (hz, source) = match tsc_hz_from_cpuid() {
                Some(hz) => (hz, Source::TscCpuid),
                None => (
                    tsc_hz_from_pit().ok_or(TimeError::NoTscFrequency)?,
                    Source::TscPit,
                ),
            };
            TSC_HZ.store(hz, Ordering::Relaxed);
            TSC_EPOCH.store(tsc().max(1), Ordering::Relaxed);
            SOURCE.store(source as u8, Ordering::Relaxed);
            Ok(hz)
        }
        Err(e) => Err(e),
    }
}

/// A plausible TSC frequency: 100 MHz to 10 GHz.
fn plausible(hz: u64) -> Option<u64> {
    (100_000_000..=10_000_000_000).contains(&hz).then_some(hz)
}

/// The TSC frequency from CPUID: leaf 0x15 (crystal clock and ratio), or the hypervisor timing
/// leaf 0x40000010 (EAX: TSC kHz; VMware's convention, which QEMU follows).
fn tsc_hz_from_cpuid() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(0).eax >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return plausible(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax));
        }
    }
    let hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    if hypervisor && (0x4000_0010..0x4001_0000).contains(&__cpuid(KVM_CPUID_SIGNATURE).eax) {
        return plausible(u64::from(__cpuid(0x4000_0010).eax) * 1000);
    }
    None
}

/// Measures the TSC over 10 ms of PIT channel 0, read back with latch commands (QEMU's
/// microvm has a PIT but no port 0x61, so channel 2's gate is out of reach). None when there is
/// no PIT (the count then reads 0xffff and never moves). Runs with interrupts disabled; the
/// count starts at 0xffff and is stopped after 10 ms, long before it ends and raises IRQ 0.
fn tsc_hz_from_pit() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const SPAN: u16 = (PIT_HZ / 100) as u16; // 10 ms
    let mut mode = Port::<u8>::new(0x43);
    let mut channel0 = Port::<u8>::new(0x40);
    let mut count = || {
        // SAFETY: ports 0x43 (PIT mode) and 0x40 (PIT channel 0) belong to the legacy PIT,
        // which nothing else in this kernel uses; a latch command and two reads of the count.
        unsafe {
            mode.write(0x00); // latch channel 0
            let lo = channel0.read();
            let hi = channel0.read();
            u16::from_le_bytes([lo, hi])
        }
    };
    // SAFETY: as above: channel 0, low then high byte, mode 0 (count down once), binary,
    // from 0xffff.
    unsafe {
        Port::<u8>::new(0x43).write(0x30);
        Port::<u8>::new(0x40).write(0xff);
        Port::<u8>::new(0x40).write(0xff);
    }
    let first = count();
    let start = tsc();
    let mut elapsed = 0u16;
    let mut end = start;
    // Each read is a port exit (tens of microseconds under emulation): bound the loop.
    for _ in 0..100_000 {
        elapsed = first.wrapping_sub(count());
        end = tsc();
        if elapsed >= SPAN {
            break;
        }
    }
    // SAFETY: as above: a control word without a count stops channel 0 (no IRQ 0 later).
    unsafe { Port::<u8>::new(0x43).write(0x30) };
    if !(SPAN..=0x8000).contains(&elapsed) {
        return None;
    }
    plausible(((u128::from(end - start) * u128::from(PIT_HZ)) / u128::from(elapsed)) as u64)
}

/// Enables kvmclock and derives the TSC frequency from it. Returns the frequency in Hz.
fn init_kvmclock() -> Result<u64, TimeError> {
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

/// Monotonic nanoseconds: kvmclock's host monotonic time, or the TSC's count since [`init`].
pub fn monotonic_ns() -> u64 {
    let epoch = TSC_EPOCH.load(Ordering::Relaxed);
    if epoch != 0 {
        let hz = u128::from(tsc_hz().max(1));
        return (u128::from(tsc().wrapping_sub(epoch)) * 1_000_000_000 / hz) as u64;
    }
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
