//! The per-stage profile of `see-prefetch-bench --profile`: the guest's `see: profile ...`
//! console line parsed ([`GuestProfile::parse`]), the backend's [`HostProfile`], and the table
//! that puts both per MiB next to the end-to-end throughput ([`table`]).

use std::fmt::Write;

use see_prefetch_backend::profile::HostProfile;

/// The guest's receive-path profile, as the kernel prints it (images/see-kernel/src/prefetch/
/// profile.rs): nanoseconds per stage, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestProfile {
    /// Bundles accepted.
    pub bundles: u64,
    /// Their content bytes.
    pub bytes: u64,
    /// Interrupts timed.
    pub notifications: u64,
    /// Interrupt to start of ring processing.
    pub notify_ns: u64,
    /// Copies out of the shared window.
    pub copy_ns: u64,
    /// Chunk parsing and reassembly.
    pub reassemble_ns: u64,
    /// Content hashing: the chunk-tree check as bundles arrive (the digest list against the
    /// signed root, SHA-256 of each tree chunk).
    pub hash_ns: u64,
    /// Signature checks.
    pub signature_ns: u64,
    /// Store insertion.
    pub insert_ns: u64,
}

/// Why a `see: profile` line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The line does not start with `see: profile `.
    #[error("not a `see: profile` line")]
    NotAProfileLine,
    /// A field is not `key=value`.
    #[error("profile field {0:?} is not key=value")]
    NotKeyValue(String),
    /// A value is not an unsigned integer.
    #[error("profile field {0:?} is not an unsigned integer")]
    NotANumber(String),
    /// A field the parser does not know (a kernel newer than the bench?).
    #[error("unknown profile field {0:?}: rebuild the bench with the image")]
    UnknownField(String),
    /// A field appears twice.
    #[error("profile field {0:?} appears twice")]
    Duplicate(String),
    /// A field is missing.
    #[error("profile field {0:?} is missing: rebuild the image with the bench")]
    Missing(&'static str),
}

const PREFIX: &str = "see: profile ";
const FIELDS: [&str; 9] = [
    "bundles",
    "bytes",
    "notifications",
    "notify_ns",
    "copy_ns",
    "reassemble_ns",
    "hash_ns",
    "signature_ns",
    "insert_ns",
];

impl GuestProfile {
    /// Parses `see: profile key=value ...` (every field of `FIELDS` exactly once, in any
    /// order). Anything else is an error, never a panic: the line comes from the guest.
    pub fn parse(line: &str) -> Result<Self, ProfileError> {
        let rest = line
            .trim_end()
            .strip_prefix(PREFIX)
            .ok_or(ProfileError::NotAProfileLine)?;
        let mut values: [Option<u64>; FIELDS.len()] = [None; FIELDS.len()];
        for field in rest.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| ProfileError::NotKeyValue(field.into()))?;
            let at = FIELDS
                .iter()
                .position(|&f| f == key)
                .ok_or_else(|| ProfileError::UnknownField(key.into()))?;
            if !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ProfileError::NotANumber(field.into()));
            }
            let n = value
                .parse()
                .map_err(|_| ProfileError::NotANumber(field.into()))?;
            if values[at].replace(n).is_some() {
                return Err(ProfileError::Duplicate(key.into()));
            }
        }
        let get = |i: usize| values[i].ok_or(ProfileError::Missing(FIELDS[i]));
        Ok(Self {
            bundles: get(0)?,
            bytes: get(1)?,
            notifications: get(2)?,
            notify_ns: get(3)?,
            copy_ns: get(4)?,
            reassemble_ns: get(5)?,
            hash_ns: get(6)?,
            signature_ns: get(7)?,
            insert_ns: get(8)?,
        })
    }
}

/// One run's numbers for [`table`].
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// The backend's stages.
    pub host: HostProfile,
    /// Content bytes the backend delivered.
    pub host_bytes: u64,
    /// The guest's stages.
    pub guest: GuestProfile,
    /// The guest's timed window: bytes and nanoseconds, order to last bundle verified.
    pub window: (u64, u64),
}

const MIB: f64 = 1024.0 * 1024.0;

fn per_mib(ns: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        return f64::NAN;
    }
    ns as f64 / (bytes as f64 / MIB)
}

/// The profile table: per stage, microseconds per MiB and the share of the end-to-end time
/// per MiB (the guest's window). Host stages run on several threads at once, so their shares
/// may add up past 100%; the guest's remainder is time in no stage (waiting for the host).
pub fn table(run: &Run) -> String {
    let (bytes, ns) = run.window;
    let e2e = per_mib(ns, bytes);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "end to end: {} MiB in {:.1} ms = {:.1} MiB/s ({:.0} us/MiB)",
        bytes >> 20,
        ns as f64 / 1e6,
        if ns == 0 {
            f64::NAN
        } else {
            bytes as f64 / MIB / (ns as f64 / 1e9)
        },
        e2e / 1e3
    );
    let _ = writeln!(
        out,
        "{:<6} {:<22} {:>10} {:>7}",
        "side", "stage", "us/MiB", "share"
    );
    let mut row = |side: &str, stage: &str, ns: u64, bytes: u64| {
        let v = per_mib(ns, bytes);
        let _ = writeln!(
            out,
            "{side:<6} {stage:<22} {:>10.1} {:>6.1}%",
            v / 1e3,
            100.0 * v / e2e
        );
    };
    let h = &run.host;
    for (stage, ns) in [
        ("read", h.read_ns),
        ("hash", h.hash_ns),
        ("sign", h.sign_ns),
        ("chunk", h.chunk_ns),
        ("ring", h.ring_ns),
    ] {
        row("host", stage, ns, run.host_bytes);
    }
    let g = &run.guest;
    let stages = [
        ("notification", g.notify_ns),
        ("copy out of window", g.copy_ns),
        ("reassembly", g.reassemble_ns),
        ("hash", g.hash_ns),
        ("signature check", g.signature_ns),
        ("store insert", g.insert_ns),
    ];
    for (stage, ns) in stages {
        row("guest", stage, ns, g.bytes);
    }
    let staged: u64 = stages.iter().map(|s| s.1).sum();
    // The guest's stages scaled to the window's bytes, the rest of the window is in none.
    let in_stages = per_mib(staged, g.bytes);
    let rest = e2e - in_stages;
    let _ = writeln!(
        out,
        "{:<6} {:<22} {:>10.1} {:>6.1}%",
        "guest",
        "(in no stage)",
        rest / 1e3,
        100.0 * rest / e2e
    );
    let _ = writeln!(
        out,
        "guest: {} bundles, {} interrupts timed ({:.1} us each)",
        g.bundles,
        g.notifications,
        if g.notifications == 0 {
            0.0
        } else {
            g.notify_ns as f64 / g.notifications as f64 / 1e3
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "see: profile bundles=2 bytes=2097152 notifications=4 notify_ns=40 \
                        copy_ns=1000 reassemble_ns=2000 hash_ns=3000 signature_ns=4000 insert_ns=5";

    #[test]
    fn parses_the_kernels_line() {
        let p = GuestProfile::parse(LINE).unwrap();
        assert_eq!(
            p,
            GuestProfile {
                bundles: 2,
                bytes: 2 << 20,
                notifications: 4,
                notify_ns: 40,
                copy_ns: 1000,
                reassemble_ns: 2000,
                hash_ns: 3000,
                signature_ns: 4000,
                insert_ns: 5,
            }
        );
        // Order does not matter; trailing whitespace (a console's \r) is ignored.
        let shuffled = "see: profile insert_ns=5 bundles=2 bytes=2097152 notifications=4 \
                        notify_ns=40 copy_ns=1000 reassemble_ns=2000 hash_ns=3000 signature_ns=4000\r";
        assert_eq!(GuestProfile::parse(shuffled).unwrap(), p);
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases: [(&str, ProfileError); 8] = [
            ("see: counters accepted=1", ProfileError::NotAProfileLine),
            ("", ProfileError::NotAProfileLine),
            (
                &LINE.replace("bytes=2097152", "bytes"),
                ProfileError::NotKeyValue("bytes".into()),
            ),
            (
                &LINE.replace("bytes=2097152", "bytes=-1"),
                ProfileError::NotANumber("bytes=-1".into()),
            ),
            (
                &LINE.replace("bytes=2097152", "bytes=+1"),
                ProfileError::NotANumber("bytes=+1".into()),
            ),
            (
                &LINE.replace("bytes=2097152", "bytes=99999999999999999999999"),
                ProfileError::NotANumber("bytes=99999999999999999999999".into()),
            ),
            (
                &LINE.replace(" insert_ns=5", ""),
                ProfileError::Missing("insert_ns"),
            ),
            (
                &format!("{LINE} bundles=3"),
                ProfileError::Duplicate("bundles".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(GuestProfile::parse(line), Err(want), "{line:?}");
        }
        assert_eq!(
            GuestProfile::parse(&format!("{LINE} wat=1")),
            Err(ProfileError::UnknownField("wat".into()))
        );
        assert_eq!(
            GuestProfile::parse(&LINE.replace("hash_ns=3000", "hash_ns=")),
            Err(ProfileError::NotANumber("hash_ns=".into()))
        );
    }

    #[test]
    fn the_table_gives_time_per_mib_and_shares_of_the_window() {
        let run = Run {
            host: HostProfile {
                read_ns: 2_000_000,
                hash_ns: 4_000_000,
                ..HostProfile::default()
            },
            host_bytes: 2 << 20,
            guest: GuestProfile {
                bytes: 2 << 20,
                bundles: 2,
                hash_ns: 5_000_000,
                ..GuestProfile::default()
            },
            // 2 MiB in 10 ms: 5000 us per MiB, 200 MiB/s.
            window: (2 << 20, 10_000_000),
        };
        let t = table(&run);
        assert!(t.contains("= 200.0 MiB/s (5000 us/MiB)"), "{t}");
        let line = |side: &str, stage: &str| {
            t.lines()
                .find(|l| l.starts_with(side) && l[7..].starts_with(stage))
                .unwrap_or_else(|| panic!("no {side} {stage} in {t}"))
                .split_whitespace()
                .rev()
                .take(2)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("host", "read"), ["20.0%", "1000.0"]);
        assert_eq!(line("host", "hash"), ["40.0%", "2000.0"]);
        assert_eq!(line("guest", "hash"), ["50.0%", "2500.0"]);
        assert_eq!(line("guest", "(in no stage)"), ["50.0%", "2500.0"]);
    }
}
