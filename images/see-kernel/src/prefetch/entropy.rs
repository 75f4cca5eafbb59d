//! Unpredictable bytes for the driver's session nonce.
//!
//! RDRAND when the CPU offers it (in a confidential VM the CPU, not the host, is the trusted
//! source), always mixed with TSC jitter, and condensed with SHA-384. Without RDRAND the bytes
//! rest on timing jitter alone, which a hostile host that controls the clock could predict:
//! the nonce still differs between sessions (the epoch is signed too), but say so in any
//! deployment without RDRAND.

use sha2::{Digest, Sha384};

fn rdrand() -> Option<u64> {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 30) == 0 {
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

/// Fills `buf` with bytes from RDRAND and TSC jitter, hashed.
pub fn fill(buf: &mut [u8]) {
    for (counter, out) in buf.chunks_mut(48).enumerate() {
        let mut hasher = Sha384::new();
        hasher.update((counter as u64).to_le_bytes());
        for _ in 0..8 {
            if let Some(r) = rdrand() {
                hasher.update(r.to_le_bytes());
            }
            hasher.update(crate::time::tsc().to_le_bytes());
        }
        let digest = hasher.finalize();
        out.copy_from_slice(&digest[..out.len()]);
    }
}
