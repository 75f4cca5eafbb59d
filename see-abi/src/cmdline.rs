//! The kernel command line: space-separated `key=value` words (docs/ARCHITECTURE.md, "Kernel
//! command line keys"), the keys the kernel knows and the Linux syntax that announces a
//! virtio-mmio device. The VMM writes these words; the kernel parses them.

use core::fmt;

use crate::memory::{virtio_mmio_base, VIRTIO_MMIO_GSI_BASE, VIRTIO_MMIO_SIZE};

/// `virtio_mmio.device=<size>@<base>:<gsi>`: a virtio-mmio device (may repeat).
pub const VIRTIO_MMIO_DEVICE: &str = "virtio_mmio.device";
/// `see.selftest=0|1`: run the self-tests after ready (default 1).
pub const SELFTEST: &str = "see.selftest";
/// `see.app=<name>`: the guest app to run after the self-tests.
pub const APP: &str = "see.app";
/// `see.test=panic|fault|selftest-fail|ring3-bench`: fail (or measure) on purpose.
pub const TEST: &str = "see.test";
/// `see.allow=A:T:R[,...]`: the serve app's registry (app A's task T may claim resource R).
pub const ALLOW: &str = "see.allow";
/// `see.poll=1`: the serve app polls instead of taking interrupts.
pub const POLL: &str = "see.poll";
/// `see.quiet=1`: the serve app prints no line per claim.
pub const QUIET: &str = "see.quiet";
/// `see.idle_ms=N`: the serve app ends with 104 after N ms without a request.
pub const IDLE_MS: &str = "see.idle_ms";
/// `see.store_kib=N`: the size of the guest's verified store.
pub const STORE_KIB: &str = "see.store_kib";
/// `see.cache=0|1`: keep verified resources after their claims (default 1); 0 is the naive
/// baseline (`reactive-nocache`), where a claim consumes the resource and a demanded bundle
/// is not kept.
pub const CACHE: &str = "see.cache";
/// `see.max_demands=N`: demand fetches outstanding at once (1 to 64; default the driver's);
/// 1 is the naive baseline's serial demands.
pub const MAX_DEMANDS: &str = "see.max_demands";
/// `see.min_epoch=S`: the guest's trusted lower bound on the time, in seconds since the Unix
/// epoch (the command line is measured): a floors snapshot expiring at or before it is
/// refused (virtio-prefetch SPEC.md section 8). Absent: 0.
pub const MIN_EPOCH: &str = "see.min_epoch";

/// `see.insecure_entropy=1`: let the serve app create a session without RDRAND or RDSEED, on
/// TSC jitter alone (off by default; [`crate::entropy`]).
pub const INSECURE_ENTROPY: &str = "see.insecure_entropy";

/// The serve app's name (the value of [`APP`]).
pub const APP_SERVE: &str = "serve";

/// The command-line keys the kernel knows.
pub const KNOWN_KEYS: &[&str] = &[
    VIRTIO_MMIO_DEVICE,
    SELFTEST,
    APP,
    TEST,
    ALLOW,
    POLL,
    QUIET,
    IDLE_MS,
    STORE_KIB,
    CACHE,
    MAX_DEMANDS,
    MIN_EPOCH,
    INSECURE_ENTROPY,
];

/// A command line.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    raw: &'a str,
}

/// A virtio-mmio device announced as `virtio_mmio.device=<size>@<base>:<gsi>[:<id>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Size of the register window in bytes.
    pub size: u64,
    /// Physical base address.
    pub base: u64,
    /// The interrupt line (GSI).
    pub gsi: u32,
}

/// A malformed `virtio_mmio.device` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadDevice<'a>(pub &'a str);

impl fmt::Display for BadDevice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad virtio_mmio.device value {:?} (expected <size>@<base>:<gsi>, e.g. 4K@0xd0000000:5)",
            self.0
        )
    }
}

impl core::error::Error for BadDevice<'_> {}

impl<'a> Cmdline<'a> {
    /// Wraps a raw command line.
    pub fn new(raw: &'a str) -> Self {
        Self { raw }
    }

    /// The raw text.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Every word as `(key, value)`; a word without `=` has an empty value.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.raw
            .split_ascii_whitespace()
            .map(|w| w.split_once('=').unwrap_or((w, "")))
    }

    /// The value of the last occurrence of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// Keys this kernel does not know.
    pub fn unknown_keys(&self) -> impl Iterator<Item = &'a str> {
        self.pairs()
            .map(|(k, _)| k)
            .filter(|k| !KNOWN_KEYS.contains(k))
    }

    /// The virtio-mmio devices, in order.
    pub fn virtio_mmio_devices(
        &self,
    ) -> impl Iterator<Item = Result<VirtioMmioDevice, BadDevice<'a>>> {
        self.pairs()
            .filter(|(k, _)| *k == VIRTIO_MMIO_DEVICE)
            .map(|(_, v)| parse_device(v).ok_or(BadDevice(v)))
    }
}

impl VirtioMmioDevice {
    /// Virtio-mmio device `n` of the memory map ([`crate::memory`]): its register window and
    /// GSI.
    pub const fn slot(n: u32) -> Self {
        Self {
            size: VIRTIO_MMIO_SIZE,
            base: virtio_mmio_base(n),
            gsi: VIRTIO_MMIO_GSI_BASE + n,
        }
    }
}

impl fmt::Display for VirtioMmioDevice {
    /// The command-line word that announces the device, e.g.
    /// `virtio_mmio.device=4K@0xd0000000:5` (sizes in KiB when they are whole KiB).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VIRTIO_MMIO_DEVICE}=")?;
        if self.size.is_multiple_of(1024) {
            write!(f, "{}K", self.size / 1024)?;
        } else {
            write!(f, "{}", self.size)?;
        }
        write!(f, "@{:#x}:{}", self.base, self.gsi)
    }
}

fn parse_device(v: &str) -> Option<VirtioMmioDevice> {
    let (size, rest) = v.split_once('@')?;
    let mut parts = rest.split(':');
    let base = parse_u64(parts.next()?)?;
    let gsi = u32::try_from(parse_u64(parts.next()?)?).ok()?;
    // An optional platform device id may follow; more is malformed.
    if parts.next().is_some_and(|id| parse_u64(id).is_none()) || parts.next().is_some() {
        return None;
    }
    let (digits, shift) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = parse_u64(digits)?.checked_mul(1 << shift)?;
    (size > 0 && base.checked_add(size).is_some()).then_some(VirtioMmioDevice { size, base, gsi })
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_last_one_wins() {
        let c = Cmdline::new("  see.selftest=0 quiet see.selftest=1\tsee.app=demo ");
        assert_eq!(c.get("see.selftest"), Some("1"));
        assert_eq!(c.get("see.app"), Some("demo"));
        assert_eq!(c.get("quiet"), Some(""));
        assert_eq!(c.get("missing"), None);
        assert_eq!(c.unknown_keys().collect::<Vec<_>>(), ["quiet"]);
    }

    #[test]
    fn virtio_mmio_devices_parse() {
        let c =
            Cmdline::new("virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=1M@3489665024:6:2");
        let devs: Vec<_> = c.virtio_mmio_devices().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            devs,
            [
                VirtioMmioDevice {
                    size: 4096,
                    base: 0xd000_0000,
                    gsi: 5
                },
                VirtioMmioDevice {
                    size: 1 << 20,
                    base: 0xd000_1000,
                    gsi: 6
                },
            ]
        );
    }

    #[test]
    fn malformed_devices_are_errors_not_panics() {
        for bad in [
            "",
            "4K",
            "4K@",
            "@0x1000:5",
            "0@0x1000:5",
            "4K@0x1000",
            "4K@0x1000:",
            "4K@0xzz:5",
            "4K@0x1000:5:x",
            "4K@0x1000:5:1:2",
            "4X@0x1000:5",
            "99999999999999999999K@0x1000:5",
            "16E@0x1000:5",
            "4K@0xffffffffffffffff:5",
            "4K@0x1000:99999999999",
        ] {
            let line = alloc_line(bad);
            let c = Cmdline::new(&line);
            let r: Vec<_> = c.virtio_mmio_devices().collect();
            assert_eq!(r.len(), 1, "{bad}");
            assert!(r[0].is_err(), "{bad:?} parsed as {:?}", r[0]);
        }
    }

    #[test]
    fn a_slot_formats_as_the_word_that_parses_back() {
        let dev = VirtioMmioDevice::slot(0);
        let word = format!("{dev}");
        assert_eq!(word, "virtio_mmio.device=4K@0xd0000000:5");
        let parsed: Vec<_> = Cmdline::new(&word).virtio_mmio_devices().collect();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].unwrap(), dev);
        let odd = VirtioMmioDevice {
            size: 100,
            base: 0x1000,
            gsi: 7,
        };
        let word = format!("{odd}");
        assert_eq!(
            Cmdline::new(&word)
                .virtio_mmio_devices()
                .next()
                .unwrap()
                .unwrap(),
            odd
        );
    }

    #[test]
    fn every_known_key_is_known() {
        let line = KNOWN_KEYS
            .iter()
            .map(|k| format!("{k}=1"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(Cmdline::new(&line).unknown_keys().count(), 0);
        assert_eq!(KNOWN_KEYS.len(), 13);
    }

    fn alloc_line(value: &str) -> String {
        format!("virtio_mmio.device={value}")
    }
}
