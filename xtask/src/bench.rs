//! `cargo xtask bench`: benchmarks that print figures. `boot` measures boot time (process
//! spawn and VMM start to the guest's "ready", and to VMM exit) and the VMM's resident memory
//! beyond guest memory, over many boots.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};

use crate::image;

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
        BenchCommand::Api { args } => api(args),
    }
}

/// One boot's figures.
#[derive(Debug, Default)]
struct Sample {
    spawn_to_ready: Duration,
    spawn_to_exit: Duration,
    report: Vec<(String, u64)>,
}

impl Sample {
    fn get(&self, key: &str) -> Option<u64> {
        self.report.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

fn boot_once(
    vmm: &std::path::Path,
    kernel: &std::path::Path,
    memory: u32,
) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = Command::new(vmm)
        .arg("--kernel")
        .arg(kernel)
        .args([
            "--memory",
            &memory.to_string(),
            "--cmdline",
            "see.selftest=0",
        ])
        .arg("--boot-report")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let mut ready = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| format!("reading the console: {e}"))?;
        if ready.is_none() && line.starts_with("see: ready in") {
            ready = Some(start.elapsed());
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for see-vmm: {e}"))?;
    let spawn_to_exit = start.elapsed();
    let stderr = err_reader
        .join()
        .map_err(|_| "stderr reader panicked".to_string())?
        .map_err(|e| format!("reading stderr: {e}"))?;
    if !status.success() {
        return Err(format!("see-vmm failed ({status}): {stderr}"));
    }
    let line = stderr
        .lines()
        .find(|l| l.contains("boot-report"))
        .ok_or_else(|| format!("no boot-report line in: {stderr}"))?;
    let report = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    Ok(Sample {
        spawn_to_ready: ready.ok_or("the guest printed no ready line")?,
        spawn_to_exit,
        report,
    })
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
    eprintln!("xtask: == {} boots (after one warm-up)", args.runs);
    boot_once(&vmm, &kernel, args.memory)?;
    let samples = (0..args.runs)
        .map(|_| boot_once(&vmm, &kernel, args.memory))
        .collect::<Result<Vec<_>, _>>()?;
    let ms = |f: &dyn Fn(&Sample) -> Option<f64>| -> Result<[f64; 4], String> {
        let v = samples
            .iter()
            .map(|s| f(s).ok_or("a boot-report field is missing"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(spread(v))
    };
    let us = |key: &'static str| move |s: &Sample| s.get(key).map(|v| v as f64 / 1000.0);
    let kib = |key: &'static str| move |s: &Sample| s.get(key).map(|v| v as f64 / 1024.0);
    let rows: [(&str, [f64; 4]); 7] = [
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
    Ok(())
}

/// Builds the image, the VMM and the benchmark driver (tests/bench/prefetch_bench.rs, which
/// runs the backend in-process), then runs it.
fn prefetch(args: &PrefetchArgs) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    crate::run_step(
        "build see-prefetch-bench (release)",
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate::repo_root())
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "see-e2e",
                "--bin",
                "see-prefetch-bench",
            ]),
    )?;
    println!("machine: {}", machine());
    let status = Command::new(image::target_dir().join("release/see-prefetch-bench"))
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--stage-mib", &args.stage_mib.to_string()])
        .env("SEE_VMM_BIN", vmm)
        .env("SEE_KERNEL_IMAGE", kernel)
        .env("SEE_PTO_SIGNING_KEY", crate::keys::secret_key_path())
        .status()
        .map_err(|e| format!("cannot run see-prefetch-bench: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("see-prefetch-bench failed ({status})"))
    }
}

/// `bench api`: the release daemon and see-load, against the image and the release VMM.
fn api(args: &[String]) -> Result<(), String> {
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    for package in ["see-daemon", "see-demo"] {
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
}
