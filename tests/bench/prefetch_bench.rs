//! `see-prefetch-bench`, run by `cargo xtask bench prefetch`: boots the guest's serve app with
//! the backend in-process and measures, with the TSC inside the guest, the claim of a staged
//! resource against a demand fetch of the same resource (4 KiB, 64 KiB, 1 MiB) and the staging
//! throughput (verified MiB/s arriving in the guest), in interrupt and in polling mode.
//!
//! With `--profile`, it instead stages `--bundles N` resources of `--bundle-kib K` each (in
//! interrupt mode, or polling with `--polling`) and prints where a MiB's time goes, per stage on
//! the host (the backend's `Stats::profile`) and in the guest (its `see: profile` line), next
//! to the end-to-end MiB/s ([`see_e2e::profile::table`]).
//!
//! Usage: `see-prefetch-bench [--rounds N] [--stage-mib M]` or `see-prefetch-bench --profile
//! [--bundles N] [--bundle-kib K] [--polling]` with `SEE_VMM_BIN` and `SEE_KERNEL_IMAGE` set
//! (xtask does). Prints one table on stdout.

use std::process::ExitCode;

use see_e2e::{
    guest::field_u64,
    profile::{table, GuestProfile, Run},
    rig::{Options, Res, Rig, OP_BENCH, OP_THROUGHPUT},
};

const SIZES: [(u64, usize, &str); 3] = [
    (1, 4 * 1024, "4 KiB"),
    (2, 64 * 1024, "64 KiB"),
    (3, 1024 * 1024, "1 MiB"),
];
/// Task and resource ids of the throughput resources start here.
const STAGE_BASE: u64 = 100;

struct ModeResult {
    mode: &'static str,
    /// Per size: (claim ns, demand ns) of every round.
    samples: Vec<Vec<(u64, u64)>>,
    /// Whole window: bytes, ns; steady state: bytes, ns.
    staging: (u64, u64, u64, u64),
    counters: String,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn run_mode(polling: bool, rounds: usize, stage_mib: u64) -> ModeResult {
    let mut resources: Vec<Res> = SIZES
        .iter()
        .map(|&(id, len, _)| Res::data(1, id, id, 1, len))
        .collect();
    let staged: Vec<Res> = (0..stage_mib)
        .map(|i| Res::data(1, STAGE_BASE + i, STAGE_BASE + i, 1, 1024 * 1024))
        .collect();
    resources.extend(staged.iter().cloned());
    let mut rig = Rig::start(&Options {
        resources: resources.clone(),
        polling,
        ..Options::default()
    });
    let mut samples = vec![Vec::new(); SIZES.len()];
    // One size at a time, so that a demand fetch never queues behind other prefetches.
    for _ in 0..rounds {
        for (i, &(id, len, _)) in SIZES.iter().enumerate() {
            rig.prefetch(&resources[i]);
            rig.dispatch(1, OP_BENCH, &[id]);
            let line = rig.guest.wait_line(&format!("bench res={id}"), |l| {
                l.starts_with(&format!("see: bench res={id} "))
            });
            assert_eq!(field_u64(&line, "len"), len as u64, "{line}");
            samples[i].push((field_u64(&line, "claim_ns"), field_u64(&line, "demand_ns")));
        }
    }
    let tasks: Vec<u64> = staged.iter().map(|r| r.task).collect();
    rig.dispatch(1, OP_THROUGHPUT, &tasks);
    rig.guest.wait_line("throughput waiting", |l| {
        l.starts_with("see: throughput waiting")
    });
    for r in &staged {
        rig.prefetch(r);
    }
    let line = rig
        .guest
        .wait_line("staged bytes=", |l| l.starts_with("see: staged bytes="));
    let staging = (
        field_u64(&line, "bytes"),
        field_u64(&line, "ns"),
        field_u64(&line, "span_bytes"),
        field_u64(&line, "span_ns"),
    );
    let console = rig.stop();
    let counters = console
        .lines()
        .find(|l| l.starts_with("see: counters "))
        .unwrap_or("see: counters (missing)")
        .trim_start_matches("see: counters ")
        .to_string();
    ModeResult {
        mode: if polling { "polling" } else { "interrupts" },
        samples,
        staging,
        counters,
    }
}

/// Stages `count` resources of `len` bytes and returns both sides' profiles.
/// Also returns the guest's `counters ...` line.
fn run_profile(polling: bool, count: u64, len: usize) -> Result<(Run, String), String> {
    let staged: Vec<Res> = (0..count)
        .map(|i| Res::data(1, STAGE_BASE + i, STAGE_BASE + i, 1, len))
        .collect();
    let mut rig = Rig::start(&Options {
        resources: staged.clone(),
        polling,
        ..Options::default()
    });
    let tasks: Vec<u64> = staged.iter().map(|r| r.task).collect();
    rig.dispatch(1, OP_THROUGHPUT, &tasks);
    rig.guest.wait_line("throughput waiting", |l| {
        l.starts_with("see: throughput waiting")
    });
    for r in &staged {
        rig.prefetch(r);
    }
    let line = rig
        .guest
        .wait_line("staged bytes=", |l| l.starts_with("see: staged bytes="));
    let window = (field_u64(&line, "bytes"), field_u64(&line, "ns"));
    let stats = rig.backend.stats();
    let console = rig.stop();
    let line = console
        .lines()
        .find(|l| l.starts_with("see: profile "))
        .ok_or("the guest printed no `see: profile` line: rebuild the image")?;
    let guest = GuestProfile::parse(line).map_err(|e| format!("{e}: {line:?}"))?;
    let counters = console
        .lines()
        .find(|l| l.starts_with("see: counters "))
        .and_then(|l| l.strip_prefix("see: "))
        .unwrap_or("counters (missing)")
        .to_string();
    let run = Run {
        host: stats.profile,
        host_bytes: stats.bytes,
        guest,
        window,
    };
    Ok((run, counters))
}

fn profile_main(args: &[String]) -> ExitCode {
    let (count, kib) = match (arg(args, "--bundles", 32), arg(args, "--bundle-kib", 1024)) {
        (Ok(n), Ok(k))
            if (1..=256).contains(&n) && (1..=16384).contains(&k) && n * k <= 48 * 1024 =>
        {
            (n, k)
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("see-prefetch-bench: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!(
                "see-prefetch-bench: --bundles must be 1..=256, --bundle-kib 1..=16384, and at most 48 MiB in all"
            );
            return ExitCode::from(2);
        }
    };
    let polling = args.iter().any(|a| a == "--polling");
    match run_profile(polling, count, kib as usize * 1024) {
        Ok((run, counters)) => {
            println!(
                "virtio-prefetch profile: {count} bundles of {kib} KiB, {} mode; host stages on the backend's threads, guest stages timed with the guest's TSC",
                if polling { "polling" } else { "interrupt" }
            );
            print!("{}", table(&run));
            println!("guest {counters}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("see-prefetch-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib_s(bytes: u64, ns: u64) -> f64 {
    if ns == 0 {
        return f64::NAN;
    }
    bytes as f64 / (1024.0 * 1024.0) / (ns as f64 / 1e9)
}

fn arg(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--profile") {
        if !see_e2e::kvm_available() {
            eprintln!("see-prefetch-bench: /dev/kvm is needed");
            return ExitCode::FAILURE;
        }
        return profile_main(&args);
    }
    let (rounds, stage_mib) = match (arg(&args, "--rounds", 5), arg(&args, "--stage-mib", 32)) {
        (Ok(r), Ok(s)) if r >= 1 && (1..=48).contains(&s) => (r as usize, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("see-prefetch-bench: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("see-prefetch-bench: --rounds must be >= 1 and --stage-mib 1..=48");
            return ExitCode::from(2);
        }
    };
    if !see_e2e::kvm_available() {
        eprintln!("see-prefetch-bench: /dev/kvm is needed");
        return ExitCode::FAILURE;
    }
    let results: Vec<ModeResult> = [false, true]
        .into_iter()
        .map(|polling| run_mode(polling, rounds, stage_mib))
        .collect();
    println!(
        "virtio-prefetch benchmark: {rounds} rounds per size, medians; times measured in the guest (TSC)"
    );
    println!(
        "{:<11} {:>7} {:>14} {:>14} {:>9}",
        "mode", "size", "staged claim", "demand fetch", "ratio"
    );
    for r in &results {
        for (i, &(_, _, name)) in SIZES.iter().enumerate() {
            let claim = median(r.samples[i].iter().map(|s| s.0).collect());
            let demand = median(r.samples[i].iter().map(|s| s.1).collect());
            println!(
                "{:<11} {:>7} {:>11.1} us {:>11.1} us {:>8.0}x",
                r.mode,
                name,
                claim as f64 / 1e3,
                demand as f64 / 1e3,
                demand as f64 / claim.max(1) as f64
            );
        }
    }
    println!(
        "{:<11} {:>9} {:>14} {:>22}",
        "mode", "staged", "window MiB/s", "steady-state MiB/s"
    );
    for r in &results {
        let (bytes, ns, span_bytes, span_ns) = r.staging;
        println!(
            "{:<11} {:>5} MiB {:>14.1} {:>22.1}",
            r.mode,
            bytes >> 20,
            mib_s(bytes, ns),
            mib_s(span_bytes, span_ns)
        );
    }
    for r in &results {
        println!("counters ({}): {}", r.mode, r.counters);
    }
    ExitCode::SUCCESS
}
