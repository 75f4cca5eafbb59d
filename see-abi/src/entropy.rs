//! The guest's rule for the source of its session nonce: the CPU's random number generator
//! (RDRAND or RDSEED), or nothing, unless the command line names the insecure fallback.
//!
//! The nonce binds the PTO's signed answers to one session. Without a hardware generator the
//! guest has only TSC jitter, which a hostile host that controls the clock could predict, so
//! the guest refuses to create a session ([`nonce_source`] returns [`NoHardwareEntropy`]) unless
//! `see.insecure_entropy=1` ([`crate::cmdline::INSECURE_ENTROPY`]) is on its command line, in
//! which case it prints a warning on every session. The fallback is off by default.

use core::fmt;

use crate::cmdline::INSECURE_ENTROPY;

/// CPUID leaf 1, ECX: RDRAND.
pub const CPUID1_ECX_RDRAND: u32 = 1 << 30;
/// CPUID leaf 7 (subleaf 0), EBX: RDSEED.
pub const CPUID7_EBX_RDSEED: u32 = 1 << 18;

/// The CPUID feature words the decision reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// Leaf 1, ECX.
    pub leaf1_ecx: u32,
    /// Leaf 7 subleaf 0, EBX (0 when the CPU's highest basic leaf is below 7).
    pub leaf7_ebx: u32,
}

impl CpuFeatures {
    /// Whether the CPU offers RDRAND.
    pub fn rdrand(&self) -> bool {
        self.leaf1_ecx & CPUID1_ECX_RDRAND != 0
    }

    /// Whether the CPU offers RDSEED.
    pub fn rdseed(&self) -> bool {
        self.leaf7_ebx & CPUID7_EBX_RDSEED != 0
    }
}

/// Where the session nonce comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceSource {
    /// The CPU's generator (mixed with TSC jitter).
    Hardware {
        /// RDRAND is offered.
        rdrand: bool,
        /// RDSEED is offered.
        rdseed: bool,
    },
    /// TSC jitter alone, because `see.insecure_entropy=1` allows it: predictable by a hostile
    /// host. Say so loudly.
    InsecureJitter,
}

/// The CPU offers neither RDRAND nor RDSEED and the fallback is off: no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoHardwareEntropy;

impl fmt::Display for NoHardwareEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the CPU offers neither RDRAND nor RDSEED, so a session nonce would rest on timing \
             jitter a hostile host could predict: refusing to create a prefetch session \
             (give the VM a CPU model with RDRAND, or boot with {INSECURE_ENTROPY}=1 to accept \
             the risk)"
        )
    }
}

impl core::error::Error for NoHardwareEntropy {}

/// Whether `value` (of [`INSECURE_ENTROPY`] on the command line) enables the fallback: only
/// exactly `1` does.
pub fn fallback_enabled(value: Option<&str>) -> bool {
    value == Some("1")
}

/// The nonce source for a CPU with `features`; `insecure_fallback` is whether the command line
/// enables the jitter-only fallback.
pub fn nonce_source(
    features: CpuFeatures,
    insecure_fallback: bool,
) -> Result<NonceSource, NoHardwareEntropy> {
    let (rdrand, rdseed) = (features.rdrand(), features.rdseed());
    if rdrand || rdseed {
        Ok(NonceSource::Hardware { rdrand, rdseed })
    } else if insecure_fallback {
        Ok(NonceSource::InsecureJitter)
    } else {
        Err(NoHardwareEntropy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(leaf1_ecx: u32, leaf7_ebx: u32) -> CpuFeatures {
        CpuFeatures {
            leaf1_ecx,
            leaf7_ebx,
        }
    }

    #[test]
    fn a_hardware_generator_is_used_whatever_the_fallback() {
        for fallback in [false, true] {
            assert_eq!(
                nonce_source(cpu(CPUID1_ECX_RDRAND, 0), fallback),
                Ok(NonceSource::Hardware {
                    rdrand: true,
                    rdseed: false
                })
            );
            assert_eq!(
                nonce_source(cpu(0, CPUID7_EBX_RDSEED), fallback),
                Ok(NonceSource::Hardware {
                    rdrand: false,
                    rdseed: true
                })
            );
            assert_eq!(
                nonce_source(cpu(u32::MAX, u32::MAX), fallback),
                Ok(NonceSource::Hardware {
                    rdrand: true,
                    rdseed: true
                })
            );
        }
    }

    #[test]
    fn no_generator_is_refused_unless_the_fallback_is_on() {
        // Every other feature bit set, RDRAND and RDSEED clear.
        let none = cpu(!CPUID1_ECX_RDRAND, !CPUID7_EBX_RDSEED);
        assert_eq!(nonce_source(none, false), Err(NoHardwareEntropy));
        assert_eq!(nonce_source(none, true), Ok(NonceSource::InsecureJitter));
        assert_eq!(nonce_source(cpu(0, 0), false), Err(NoHardwareEntropy));
    }

    #[test]
    fn only_exactly_1_enables_the_fallback() {
        assert!(fallback_enabled(Some("1")));
        for off in [
            None,
            Some(""),
            Some("0"),
            Some("yes"),
            Some("true"),
            Some("11"),
        ] {
            assert!(!fallback_enabled(off), "{off:?}");
        }
    }

    #[test]
    fn the_refusal_names_the_key() {
        let s = NoHardwareEntropy.to_string();
        assert!(s.contains("see.insecure_entropy=1"), "{s}");
        assert!(s.contains("refusing to create a prefetch session"), "{s}");
    }
}
