//! Unpredictable bytes for the driver's session nonce.
//!
//! RDRAND and RDSEED when the CPU offers them (in a confidential VM the CPU, not the host, is
//! the trusted source), always mixed with TSC jitter, and condensed with SHA-384. Without
//! either, the bytes would rest on timing jitter alone, which a hostile host that controls the
//! clock could predict: [`nonce_source`] then refuses a session unless the command line
//! enables the insecure fallback ([`see_abi::entropy`]).

use core::arch::x86_64::__cpuid;

use see_abi::entropy::{CpuFeatures, NoHardwareEntropy, NonceSource};
use sha2::{Digest, Sha384};

/// The CPUID feature words that say whether RDRAND and RDSEED exist.
pub fn cpu_features() -> CpuFeatures {
    let max_leaf = __cpuid(0).eax;
    CpuFeatures {
        leaf1_ecx: __cpuid(1).ecx,
        leaf7_ebx: if max_leaf >= 7 {
            core::arch::x86_64::__cpuid_count(7, 0).ebx
        } else {
            0
        },
    }
}

/// Where a session nonce may come from on this CPU (see [`see_abi::entropy::nonce_source`]).
pub fn nonce_source(insecure_fallback: bool) -> Result<NonceSource, NoHardwareEntropy> {
    see_abi::entropy::nonce_source(cpu_features(), insecure_fallback)
}

fn rdseed() -> Option<u64> {
    if !cpu_features().rdseed() {
        return None;
    }
    for _ in 0..10 {
        let value: u64;
        let ok: u8;
        // SAFETY: RDSEED is supported (CPUID checked above); it only writes the two registers.
        unsafe {
            core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        if ok == 1 {
            return Some(value);
        }
    }
    None
}

fn rdrand() -> Option<u64> {
    if !cpu_features().rdrand() {
        return None;
    }
    for _ in 0..10 {
        let value: u64;
        let ok: u8;
        // SAFETY: RDRAND is supported (CPUID checked above); it only writes the two registers.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        if ok == 1 {
            return Some(value);
        }
    }
    None
}

/// True when the CPU's random number generator answered.
pub fn has_rdrand() -> bool {
    rdrand().is_some()
}

/// Fills `buf` with bytes from RDRAND, RDSEED and TSC jitter, hashed.
pub fn fill(buf: &mut [u8]) {
    for (counter, out) in buf.chunks_mut(48).enumerate() {
        let mut hasher = Sha384::new();
        hasher.update((counter as u64).to_le_bytes());
        for _ in 0..8 {
            if let Some(r) = rdrand() {
                hasher.update(r.to_le_bytes());
            }
            if counter == 0 {
                if let Some(r) = rdseed() {
                    hasher.update(r.to_le_bytes());
                }
            }
            hasher.update(crate::time::tsc().to_le_bytes());
        }
        let digest = hasher.finalize();
        out.copy_from_slice(&digest[..out.len()]);
    }
}
