//! Host figures for `see_guest_driver::sha256`: MiB/s of the software backend, the SHA-NI
//! backend and, for comparison, `sha2::Sha384` (the content hash the driver uses today), each
//! over a 1 MiB buffer (best of several timed runs).
//!
//! `cargo bench -p see-guest-driver --bench sha256`. On the host, `sha2` detects SHA-NI by
//! itself (through `cpufeatures`), so the "software" figure is sha2's own SHA-NI path unless
//! sha2 is told otherwise: add `RUSTFLAGS='--cfg sha2_256_backend="soft"'` (and a separate
//! `--target-dir`) for the portable code the guest runs. In the guest (`target_os = "none"`)
//! sha2 always uses its portable code; the in-guest figures come from
//! `see.test=ring3-bench`.

use std::{hint::black_box, time::Instant};

use see_guest_driver::sha256::{self, Backend};
use sha2::Digest;

const SIZE: usize = 1 << 20;
const RUNS: usize = 30;

/// Best MiB/s of `RUNS` runs of `f` over `data`.
fn mib_s(data: &[u8], f: impl Fn(&[u8])) -> f64 {
    f(data);
    let best = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f(black_box(data));
            t.elapsed()
        })
        .min()
        .expect("at least one run");
    data.len() as f64 / (1 << 20) as f64 / best.as_secs_f64()
}

fn main() {
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(sha256::backend(), Backend::Software, "nothing enabled yet");
    let software_digest = sha256::sha256(&data);
    let software = mib_s(&data, |d| {
        black_box(sha256::sha256(d));
    });
    println!("sha256 software (sha2::compress256): {software:>7.0} MiB/s  (1 MiB, best of {RUNS})");

    // SAFETY: Linux enables SSE state and saves the xmm registers on every context switch,
    // and this compiled code treats them as caller-saved (SysV).
    let picked = unsafe { sha256::enable_hardware() };
    if picked == Backend::ShaNi {
        assert_eq!(
            sha256::sha256(&data),
            software_digest,
            "the backends disagree"
        );
        let ni = mib_s(&data, |d| {
            black_box(sha256::sha256(d));
        });
        println!(
            "sha256 SHA-NI:                       {ni:>7.0} MiB/s  ({:.1}x software)",
            ni / software
        );
    } else {
        println!("sha256 SHA-NI:                       not available on this CPU");
    }

    let sha384 = mib_s(&data, |d| {
        black_box(sha2::Sha384::digest(d));
    });
    println!("sha384 (sha2::Sha384):               {sha384:>7.0} MiB/s");
}
