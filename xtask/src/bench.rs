//! `cargo xtask bench`: benchmarks that print figures. `boot` measures boot time (process
//! spawn and VMM start to the guest's "ready", and to VMM exit) and the VMM's resident memory
//! beyond guest memory, over many boots, and boots the same image under a peer, QEMU's
//! `microvm` machine with KVM, interleaved with see-vmm's boots (one each, repeated), for a
//! side-by-side table with bootstrap intervals of the medians and of their ratio. `sweep`
//! runs the simulated sweeps and checks them against the VM ([`sweep`]). `tasks` runs the demo
//! with Wasm and with native tasks, interleaved, and compares their latencies ([`tasks`]).

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};

use see_abi::{
    exit,
    ports::{qemu_debug_exit_status, EXIT_PORT},
};

use crate::{deps, image};

mod sweep;
mod tasks;

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Boot time and VMM memory overhead.
    Boot(BootArgs),
    /// virtio-prefetch: staged claim against demand fetch, staging throughput.
    Prefetch(PrefetchArgs),
    /// The PTO service's front door: overhead (latency minus the guest's time) and requests
    /// per second through the HTTP API, from `see-load` on loopback (arguments after `--`).
    Api {
        /// Arguments for see-load (e.g. `-- --repeat 5 --clients 8`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The simulated sweeps (`pto simulate --sweep`) and their cross-check against see-demo.
    Sweep(sweep::SweepArgs),
    /// Wasm task code: a prefetched, compiled module against demand fetch and compile, at
    /// three module sizes, in the VM.
    Wasm {
        /// Rounds (each with fresh modules; the two cases alternate order).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The demo's p50 and p95 with Wasm tasks against native tasks, in the best predictor and
    /// the best non-predictive mode, the kinds interleaved round by round.
    Tasks(tasks::TasksArgs),
}

/// Options of `cargo xtask bench prefetch`.
#[derive(Args, Debug)]
struct PrefetchArgs {
    /// Measured rounds per resource size.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// MiB staged (1 MiB resources) for the throughput figure.
    #[arg(long, default_value_t = 32)]
    stage_mib: u32,
    /// Instead: where a MiB's time goes, per stage on the host and in the guest, for one
    /// staging run of `--bundles` resources of `--bundle-kib`.
    #[arg(long)]
    profile: bool,
    /// With --profile: resources staged.
    #[arg(long, default_value_t = 32)]
    bundles: u32,
    /// With --profile: size of each, in KiB.
    #[arg(long, default_value_t = 1024)]
    bundle_kib: u32,
    /// With --profile: polled completion in the guest instead of interrupts.
    #[arg(long)]
    polling: bool,
}

/// Options of `cargo xtask bench boot`.
#[derive(Args, Debug)]
struct BootArgs {
    /// Number of measured boots (after one warm-up boot).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    memory: u32,
}

/// Runs the chosen benchmark.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    match &args.what {
        BenchCommand::Boot(a) => boot(a),
        BenchCommand::Prefetch(a) => prefetch(a),
        BenchCommand::Wasm { rounds } => wasm(*rounds),
        BenchCommand::Api { args } => api(args),
        BenchCommand::Sweep(a) => sweep::run(a),
        BenchCommand::Tasks(a) => tasks::run(a),
    }
}

/// One boot's figures.
#[derive(Debug, Default)]
struct Sample {
    spawn_to_ready: Duration,
    spawn_to_exit: Duration,
    /// The guest's own "ready in N us" (from its PVH entry, TSC-timed).
    guest_ready_us: u64,
    report: Vec<(String, u64)>,
}

impl Sample {
    fn get(&self, key: &str) -> Option<u64> {
        self.report.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// What a boot printed and how long it took, from just before `spawn()`.
struct Timed {
    spawn_to_ready: Duration,
    spawn_to_exit: Duration,
    guest_ready_us: u64,
    status: std::process::ExitStatus,
    stderr: String,
}

/// Runs `cmd` (a VMM booting the image with `see.selftest=0`, console on stdout) to its end.
fn timed_boot(mut cmd: Command, what: &str) -> Result<Timed, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let mut ready = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| format!("reading the console: {e}"))?;
        if ready.is_none() {
            if let Some(rest) = line.trim_end().strip_prefix("see: ready in ") {
                let us = rest.strip_suffix(" us").and_then(|n| n.parse::<u64>().ok());
                ready = Some((start.elapsed(), us));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {what}: {e}"))?;
    let spawn_to_exit = start.elapsed();
    let stderr = err_reader
        .join()
        .map_err(|_| "stderr reader panicked".to_string())?
        .map_err(|e| format!("reading stderr: {e}"))?;
    let (spawn_to_ready, guest_ready_us) =
        ready.ok_or_else(|| format!("the guest printed no ready line under {what}: {stderr}"))?;
    Ok(Timed {
        spawn_to_ready,
        spawn_to_exit,
        guest_ready_us: guest_ready_us
            .ok_or_else(|| format!("a malformed ready line under {what}"))?,
        status,
        stderr,
    })
}

fn boot_once(
    vmm: &std::path::Path,
    kernel: &std::path::Path,
    memory: u32,
) -> Result<Sample, String> {
    let mut cmd = Command::new(vmm);
    cmd.arg("--kernel").arg(kernel).args([
        "--memory",
        &memory.to_string(),
        "--cmdline",
        "see.selftest=0",
        "--boot-report",
    ]);
    let t = timed_boot(cmd, "see-vmm")?;
    if !t.status.success() {
        return Err(format!("see-vmm failed ({}): {}", t.status, t.stderr));
    }
    let line = t
        .stderr
        .lines()
        .find(|l| l.contains("boot-report"))
        .ok_or_else(|| format!("no boot-report line in: {}", t.stderr))?;
    let report = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    Ok(Sample {
        spawn_to_ready: t.spawn_to_ready,
        spawn_to_exit: t.spawn_to_exit,
        guest_ready_us: t.guest_ready_us,
        report,
    })
}

/// QEMU's `microvm` with KVM, flags as in tests/qemu.rs: no firmware option ROMs, the ISA
/// serial port on stdout, `isa-debug-exit` on the SEE's exit port. The PVM host refuses
/// IA32_ARCH_CAPABILITIES, which `-cpu host` sets, hence `-arch-capabilities`.
fn qemu_once(
    qemu: &std::path::Path,
    kernel: &std::path::Path,
    memory: u32,
) -> Result<Sample, String> {
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=off",
        "-enable-kvm",
        "-cpu",
        "host,-arch-capabilities",
        "-m",
        &memory.to_string(),
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-device",
        &format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=4"),
        "-append",
        "see.selftest=0",
        "-kernel",
    ])
    .arg(kernel);
    let t = timed_boot(cmd, "QEMU")?;
    if t.status.code() != Some(qemu_debug_exit_status(exit::SUCCESS)) {
        return Err(format!("QEMU failed ({}): {}", t.status, t.stderr));
    }
    Ok(Sample {
        spawn_to_ready: t.spawn_to_ready,
        spawn_to_exit: t.spawn_to_exit,
        guest_ready_us: t.guest_ready_us,
        report: Vec::new(),
    })
}

/// A small deterministic generator (xorshift64*) for the bootstrap: the same samples give the
/// same intervals.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The median (mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Bootstrap resamples per interval.
const RESAMPLES: usize = 4000;

/// Percentile-bootstrap 95 % intervals: of the median of `a`, of the median of `b`, and of the
/// ratio of the medians `b / a` (each sample resampled with replacement, independently).
fn bootstrap(a: &[f64], b: &[f64]) -> [(f64, f64); 3] {
    let mut rng = XorShift(0x5ee0_b007_5ee0_b007);
    let resample = |v: &[f64], rng: &mut XorShift| {
        let r: Vec<f64> = (0..v.len()).map(|_| v[rng.below(v.len())]).collect();
        median(&r)
    };
    let (mut ma, mut mb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RESAMPLES {
        let (x, y) = (resample(a, &mut rng), resample(b, &mut rng));
        ma.push(x);
        mb.push(y);
        ratio.push(y / x);
    }
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((p * v.len() as f64) as usize).min(v.len() - 1)];
        (at(0.025), at(0.975))
    };
    [interval(ma), interval(mb), interval(ratio)]
}

/// `[min, median, p90, max]` by nearest rank.
fn spread(mut v: Vec<f64>) -> [f64; 4] {
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    [v[0], rank(0.5), rank(0.9), v[v.len() - 1]]
}

/// A one-line description of this machine for BENCHMARKS.md.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let nested = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kvm = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        "KVM via kvm_pvm (PVM: shadow paging, guest supervisor code emulated)"
    } else if std::path::Path::new("/sys/module/kvm_intel").exists() {
        "KVM (kvm_intel)"
    } else if std::path::Path::new("/sys/module/kvm_amd").exists() {
        "KVM (kvm_amd)"
    } else {
        "KVM (unknown module)"
    };
    format!(
        "{model}, {cpus} CPUs, Linux {}, {kvm}{}",
        kernel.trim(),
        if nested {
            ", host is itself a VM (nested)"
        } else {
            ""
        }
    )
}

fn boot(args: &BootArgs) -> Result<(), String> {
    if args.runs < 1 {
        return Err("--runs must be at least 1".into());
    }
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    let qemu = deps::ensure_qemu()?;
    eprintln!(
        "xtask: == {} boots each of see-vmm and QEMU microvm, interleaved (after one warm-up each)",
        args.runs
    );
    boot_once(&vmm, &kernel, args.memory)?;
    qemu_once(&qemu, &kernel, args.memory)?;
    let mut samples = Vec::with_capacity(args.runs);
    let mut peers = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        samples.push(boot_once(&vmm, &kernel, args.memory)?);
        peers.push(qemu_once(&qemu, &kernel, args.memory)?);
    }
    let ms = |f: &dyn Fn(&Sample) -> Option<f64>| -> Result<[f64; 4], String> {
        let v = samples
            .iter()
            .map(|s| f(s).ok_or("a boot-report field is missing"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(spread(v))
    };
    let us = |key: &'static str| move |s: &Sample| s.get(key).map(|v| v as f64 / 1000.0);
    let kib = |key: &'static str| move |s: &Sample| s.get(key).map(|v| v as f64 / 1024.0);
    let rows: [(&str, [f64; 4]); 8] = [
        (
            "spawn -> \"ready\" line on stdout (ms)",
            ms(&|s| Some(s.spawn_to_ready.as_secs_f64() * 1e3))?,
        ),
        (
            "VMM start -> guest entry, port 0x80 (ms)",
            ms(&us("entry_us"))?,
        ),
        ("VMM start -> ready, port 0x80 (ms)", ms(&us("ready_us"))?),
        (
            "guest entry -> ready, guest TSC (ms)",
            ms(&|s| Some(s.guest_ready_us as f64 / 1e3))?,
        ),
        (
            "spawn -> VMM exit (ms)",
            ms(&|s| Some(s.spawn_to_exit.as_secs_f64() * 1e3))?,
        ),
        (
            "VMM RSS beyond guest memory (MiB)",
            ms(&kib("overhead_kib"))?,
        ),
        ("guest memory resident (MiB)", ms(&kib("guest_kib"))?),
        ("VMM peak RSS, VmHWM (MiB)", ms(&kib("peak_kib"))?),
    ];
    println!(
        "boot benchmark: {} boots, --memory {} MiB, --cmdline see.selftest=0",
        args.runs, args.memory
    );
    println!("machine: {}", machine());
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "figure", "median", "min", "p90", "max"
    );
    for (name, [min, median, p90, max]) in rows {
        println!("{name:<44} {median:>8.2} {min:>8.2} {p90:>8.2} {max:>8.2}");
    }
    peer_table(&samples, &peers, args.memory);
    Ok(())
}

/// A figure of the peer table: its name and how to read it off a boot, in ms.
type Figure = (&'static str, fn(&Sample) -> f64);

/// The side-by-side table: see-vmm against QEMU microvm on the figures both can give.
fn peer_table(see: &[Sample], qemu: &[Sample], memory: u32) {
    println!();
    println!(
        "peer: the same image under QEMU microvm with KVM (-m {memory}, -append see.selftest=0), \
         {} boots, interleaved with see-vmm's; medians with percentile-bootstrap 95 % intervals \
         ({RESAMPLES} resamples)",
        qemu.len()
    );
    println!(
        "{:<34} {:>24} {:>24} {:>24}",
        "figure (ms)", "see-vmm", "QEMU microvm", "QEMU / see-vmm"
    );
    let figures: [Figure; 3] = [
        ("guest entry -> ready (guest TSC)", |s| {
            s.guest_ready_us as f64 / 1e3
        }),
        ("spawn -> \"ready\" line on stdout", |s| {
            s.spawn_to_ready.as_secs_f64() * 1e3
        }),
        ("spawn -> process exit", |s| {
            s.spawn_to_exit.as_secs_f64() * 1e3
        }),
    ];
    for (name, f) in figures {
        let a: Vec<f64> = see.iter().map(f).collect();
        let b: Vec<f64> = qemu.iter().map(f).collect();
        let (ma, mb) = (median(&a), median(&b));
        let [ia, ib, ir] = bootstrap(&a, &b);
        let cell = |m: f64, (lo, hi): (f64, f64)| format!("{m:.2} [{lo:.2}, {hi:.2}]");
        println!(
            "{name:<34} {:>24} {:>24} {:>24}",
            cell(ma, ia),
            cell(mb, ib),
            cell(mb / ma, ir)
        );
    }
}

/// Builds the image, the VMM and the benchmark driver `bin` of see-e2e (tests/bench/, which runs
/// the backend in-process), then runs it with `args`.
fn vm_bench(bin: &str, args: &[String]) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    crate::run_step(
        &format!("build {bin} (release)"),
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate::repo_root())
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-e2e",
                "--bin",
                bin,
            ]),
    )?;
    println!("machine: {}", machine());
    let status = Command::new(image::target_dir().join("release").join(bin))
        .args(args)
        .env("SEE_VMM_BIN", vmm)
        .env("SEE_KERNEL_IMAGE", kernel)
        .env("SEE_PTO_SIGNING_KEY", crate::keys::secret_key_path())
        .status()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{bin} failed ({status})"))
    }
}

/// `bench wasm`: see-wasm-bench (tests/bench/wasm_bench.rs), prefetched and compiled task code
/// against demand fetch and compile.
fn wasm(rounds: usize) -> Result<(), String> {
    vm_bench("see-wasm-bench", &["--rounds".into(), rounds.to_string()])
}

/// `bench prefetch`: see-prefetch-bench (tests/bench/prefetch_bench.rs), staged claims against
/// demand fetches and the staging throughput, or with `--profile` where a MiB's time goes.
fn prefetch(args: &PrefetchArgs) -> Result<(), String> {
    let mut bench: Vec<String> = Vec::new();
    if args.profile {
        bench.extend([
            "--profile".into(),
            "--bundles".into(),
            args.bundles.to_string(),
        ]);
        bench.extend(["--bundle-kib".into(), args.bundle_kib.to_string()]);
        if args.polling {
            bench.push("--polling".into());
        }
    } else {
        bench.extend(["--rounds".into(), args.rounds.to_string()]);
        bench.extend(["--stage-mib".into(), args.stage_mib.to_string()]);
    }
    vm_bench("see-prefetch-bench", &bench)
}

/// `bench api`: the release daemon and see-load, against the image and the release VMM.
fn api(args: &[String]) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    for package in ["see-daemon", "see-signer", "see-demo"] {
        crate::run_step(
            &format!("build {package} (release)"),
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(crate::repo_root())
                .args(["build", "--release", "--locked", "-p", package]),
        )?;
    }
    let bin = image::target_dir().join("release/see-load");
    let status = Command::new(&bin)
        .current_dir(crate::repo_root())
        .arg("--vmm")
        .arg(&vmm)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--daemon")
        .arg(image::target_dir().join("release/see-daemon"))
        .arg("--key")
        .arg(crate::keys::secret_key_path())
        .args(args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("see-load failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(spread(v), [1.0, 10.0, 18.0, 20.0]);
        assert_eq!(spread(vec![5.0]), [5.0; 4]);
    }

    #[test]
    fn medians_and_bootstrap_intervals() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let a: Vec<f64> = (1..=21).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 2.0).collect();
        let [ia, ib, ir] = bootstrap(&a, &b);
        assert!(ia.0 <= 11.0 && 11.0 <= ia.1, "{ia:?}");
        assert!(ib.0 <= 22.0 && 22.0 <= ib.1, "{ib:?}");
        assert!(ir.0 <= 2.0 && 2.0 <= ir.1 && ir.0 > 1.0, "{ir:?}");
        // Constant samples: a zero-width interval.
        let [ic, _, _] = bootstrap(&[5.0; 8], &[5.0; 8]);
        assert_eq!(ic, (5.0, 5.0));
    }
}
