//! Resident memory of the VMM process, split into guest memory and the VMM's own overhead,
//! read from /proc/self/smaps and /proc/self/status.

use std::{fs, io};

/// Resident memory at one point in time, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident set of the whole process.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub peak_kib: u64,
    /// Resident pages of guest RAM and the shared window.
    pub guest_kib: u64,
}

impl MemoryUsage {
    /// Resident memory that is not guest memory: what the VMM itself costs.
    pub fn overhead_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.guest_kib)
    }
}

/// Measures this process; `guest` lists the host ranges `(start, len)` of guest memory.
pub fn measure(guest: &[(u64, u64)]) -> io::Result<MemoryUsage> {
    let (rss_kib, guest_kib) = parse_smaps(&fs::read_to_string("/proc/self/smaps")?, guest);
    let peak_kib = parse_status_kib(&fs::read_to_string("/proc/self/status")?, "VmHWM:");
    Ok(MemoryUsage {
        rss_kib,
        peak_kib: peak_kib.unwrap_or(0),
        guest_kib,
    })
}

/// Sums `Rss:` over all mappings, and over those inside `guest`.
fn parse_smaps(text: &str, guest: &[(u64, u64)]) -> (u64, u64) {
    let (mut total, mut in_guest) = (0, 0);
    let mut current_is_guest = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                current_is_guest = guest.iter().any(|&(s, l)| lo >= s && hi <= s + l);
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kib = parse_kib(rest).unwrap_or(0);
            total += kib;
            if current_is_guest {
                in_guest += kib;
            }
        }
    }
    (total, in_guest)
}

fn parse_kib(rest: &str) -> Option<u64> {
    rest.split_whitespace().next()?.parse().ok()
}

fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(parse_kib))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/see-vmm
Size:               1024 kB
Rss:                 600 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:                2048 kB
7f1000000000-7f1001000000 rw-s 00000000 00:01 7 /memfd:see-shared-window (deleted)
Size:              16384 kB
Rss:                   8 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  40 kB
";

    #[test]
    fn splits_guest_from_vmm_memory() {
        let guest = [(0x7f00_0000_0000, 128 << 20), (0x7f10_0000_0000, 16 << 20)];
        assert_eq!(parse_smaps(SMAPS, &guest), (2696, 2056));
        let usage = MemoryUsage {
            rss_kib: 2696,
            peak_kib: 2700,
            guest_kib: 2056,
        };
        assert_eq!(usage.overhead_kib(), 640);
    }

    #[test]
    fn reads_hwm_and_measures_itself() {
        assert_eq!(
            parse_status_kib("Name: x\nVmHWM:\t  1234 kB\n", "VmHWM:"),
            Some(1234)
        );
        let me = measure(&[]).unwrap();
        assert!(me.rss_kib > 0 && me.peak_kib >= me.rss_kib / 2);
        assert_eq!(me.guest_kib, 0);
    }
}
