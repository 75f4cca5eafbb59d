//! The kernel command line: space-separated `key=value` words (see docs/ARCHITECTURE.md).

use core::fmt;

/// The command-line keys this kernel knows.
pub const KNOWN_KEYS: &[&str] = &[
    "virtio_mmio.device",
    "see.selftest",
    "see.app",
    "see.test",
    "see.allow",
    "see.poll",
    "see.quiet",
    "see.idle_ms",
    "see.store_kib",
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
#[derive(Clone, Copy, Debug)]
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
            .filter(|(k, _)| *k == "virtio_mmio.device")
            .map(|(_, v)| parse_device(v).ok_or(BadDevice(v)))
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

// The kernel is built for bare metal and has no test harness; these tests run on the host
// through tests/kernel_units.rs, which includes this file.
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

    fn alloc_line(value: &str) -> String {
        format!("virtio_mmio.device={value}")
    }
}
