//! `cargo xtask bench sweep`: the simulated sweeps (`pto simulate --sweep`) and their
//! cross-check against the VM. The simulation runs with the demo's defaults (origin 5 ms +
//! 100 MiB/s, size scale 0.25, think-time cap 200 ms, the goal workload of 600 sessions, seed
//! 1, 300 requests); every point prints the `see-demo` flags that run it in the VM. With
//! `--run-vm` each point is also run by `see-demo` and its guest p50s written to
//! `target/sweep/vm.csv`; with `--vm-figures FILE` (or after `--run-vm`) the simulation's
//! p50s are printed beside the VM's, with the share within 15 %. After `--run-vm` the
//! simulation's work per byte is the VM's (the demo's mean work per request over the bytes a
//! request works on, median over the points): the guest works slower than this host.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use clap::Args;

use crate::image;

/// Options of `cargo xtask bench sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Parameters to sweep: origin-latency, budget, think-cap, size-scale.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "origin-latency,budget,think-cap,size-scale"
    )]
    param: Vec<String>,
    /// The points of a single --param (default: the sweep's own four).
    #[arg(long, value_delimiter = ',')]
    points: Vec<f64>,
    /// Modes (the simulation and the demo take the same names).
    #[arg(long, default_value = "reactive,static,markov,oracle")]
    modes: String,
    /// Requests replayed per mode and point.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Sessions of the generated goal workload.
    #[arg(long, default_value_t = 600)]
    sessions: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Origin latency at the points of the other sweeps, ms.
    #[arg(long, default_value_t = 5.0)]
    latency_ms: f64,
    /// Size scale at the points of the other sweeps.
    #[arg(long, default_value_t = 0.25)]
    size_scale: f64,
    /// Think-time cap at the points of the other sweeps, ms.
    #[arg(long, default_value_t = 200)]
    think_ms: u64,
    /// Budget as a share of the working set at the points of the other sweeps.
    #[arg(long, default_value_t = 0.5)]
    budget_share: f64,
    /// Also run every point in the VM with see-demo (minutes per point and mode; run on a
    /// quiet machine) and compare.
    #[arg(long, conflicts_with = "vm_figures")]
    run_vm: bool,
    /// Compare with these VM figures (CSV `param,value,mode,p50_ms`, the demo's guest p50s).
    #[arg(long)]
    vm_figures: Option<PathBuf>,
    /// Origin fetches in progress at once in the simulation: the daemon's fetch pool size (1
    /// for a backend that fetches one resource at a time).
    #[arg(long, default_value_t = 4)]
    origin_workers: usize,
    /// Guest work per byte, ns, for the simulation (default: with --run-vm, calibrated from
    /// the VM's mean work per request; else measured on this host by pto).
    #[arg(long)]
    work_ns_per_byte: Option<f64>,
    /// Output directory: PNGs, the VM runs and vm.csv.
    #[arg(long, default_value = "target/sweep")]
    out: PathBuf,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs `cmd`, echoing its output; returns its stdout.
fn output(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd
        .current_dir(crate::repo_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({})", out.status))
    }
}

/// The `pto simulate --sweep` command of `a` for `param`.
fn simulate(
    a: &SweepArgs,
    out: &Path,
    param: &str,
    vm: Option<&Path>,
    work: Option<f64>,
) -> Command {
    let mut c = Command::new(image::target_dir().join("release/pto"));
    c.args(["simulate", "--workload", "goal"])
        .args(["--sessions", &a.sessions.to_string()])
        .args(["--workload-seed", &a.seed.to_string()])
        .args(["--requests", &a.requests.to_string()])
        .args(["--modes", &a.modes])
        .args(["--epochs", "12"])
        .args(["--latency-ms", &a.latency_ms.to_string()])
        .args(["--bandwidth-mib", "100"])
        .args(["--size-scale", &a.size_scale.to_string()])
        .args(["--think-cap-ms", &a.think_ms.to_string()])
        .args(["--budget-share", &a.budget_share.to_string()])
        .args(["--origin-workers", &a.origin_workers.to_string()])
        .args(["--sweep", param, "--demo-commands"])
        .arg("--plot-dir")
        .arg(out);
    if !a.points.is_empty() {
        let p: Vec<String> = a.points.iter().map(f64::to_string).collect();
        c.args(["--points", &p.join(",")]);
    }
    if let Some(vm) = vm {
        c.arg("--vm-figures").arg(vm);
    }
    if let Some(w) = work.or(a.work_ns_per_byte) {
        c.args(["--work-ns-per-byte", &w.to_string()]);
    }
    c
}

/// The bytes per request the simulation printed for each point: (param, value) -> bytes.
fn request_bytes(sim_stdout: &str) -> Vec<((String, String), f64)> {
    sim_stdout
        .lines()
        .filter_map(|l| l.strip_prefix("work: "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let key = (w.next()?.to_owned(), w.next()?.to_owned());
            Some((key, w.next()?.parse().ok()?))
        })
        .collect()
}

/// The `see-demo` runs the simulation printed: (param, value, demo arguments).
fn demo_points(sim_stdout: &str) -> Vec<(String, String, Vec<String>)> {
    sim_stdout
        .lines()
        .filter_map(|l| l.strip_prefix("demo: "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (param, value) = (w.next()?, w.next()?);
            Some((param.into(), value.into(), w.map(str::to_owned).collect()))
        })
        .collect()
}

/// The guest p50s of a see-demo run, from its `[rep N] MODE: done, host p50 X ms, guest p50 Y
/// ms` lines: (mode, p50 ms), the median over the repetitions, in order of first appearance.
fn demo_p50s(stdout: &str) -> Vec<(String, f64)> {
    let mut by_mode: Vec<(String, Vec<f64>)> = Vec::new();
    for l in stdout.lines() {
        let Some((head, rest)) = l.split_once(": done, ") else {
            continue;
        };
        let Some(mode) = head.split_whitespace().last() else {
            continue;
        };
        let Some(ms) = rest
            .split_once("guest p50 ")
            .and_then(|(_, g)| g.split_once(" ms"))
            .and_then(|(x, _)| x.parse::<f64>().ok())
        else {
            continue;
        };
        match by_mode.iter_mut().find(|(m, _)| m == mode) {
            Some((_, v)) => v.push(ms),
            None => by_mode.push((mode.to_owned(), vec![ms])),
        }
    }
    by_mode
        .into_iter()
        .map(|(m, mut v)| {
            v.sort_by(f64::total_cmp);
            (m, v[v.len() / 2])
        })
        .collect()
}

/// The guest's mean work per request (ms) of a see-demo run: the number after `work` on the
/// first line that also names `claim` and `fetch` (the demo's time split).
fn demo_work_ms(stdout: &str) -> Option<f64> {
    stdout.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        if !(w.contains(&"claim") && w.contains(&"fetch")) {
            return None;
        }
        let i = w.iter().position(|&x| x == "work")?;
        w.get(i + 1)?.parse().ok()
    })
}

/// Runs the sweeps; see the module doc.
pub fn run(a: &SweepArgs) -> Result<(), String> {
    if !a.points.is_empty() && a.param.len() != 1 {
        return Err("--points goes with a single --param".into());
    }
    let root = crate::repo_root();
    let out = root.join(&a.out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut packages = vec!["see-pto"];
    if a.run_vm {
        packages.extend(["see-daemon", "see-demo"]);
    }
    for package in packages {
        crate::run_step(
            &format!("build {package} (release)"),
            cargo()
                .current_dir(&root)
                .args(["build", "--release", "--locked", "-p", package]),
        )?;
    }
    if !a.run_vm {
        let vm = a.vm_figures.as_ref().map(|p| root.join(p));
        for param in &a.param {
            output(
                simulate(a, &out, param, vm.as_deref(), None),
                "pto simulate",
            )?;
        }
        if vm.is_none() {
            println!(
                "\nto compare with the VM on a quiet machine: `cargo xtask bench sweep --run-vm`, or run the `demo:` lines with target/release/see-demo --sessions {} --seed {} and pass their guest p50s as --vm-figures (CSV param,value,mode,p50_ms)",
                a.sessions, a.seed
            );
        }
        return Ok(());
    }
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    let csv = out.join("vm.csv");
    let mut figures = String::from("param,value,mode,p50_ms\n");
    // Work per byte in the VM, one estimate per point: its work per request over the bytes.
    let mut rates = Vec::new();
    for param in &a.param {
        let sim = output(simulate(a, &out, param, None, None), "pto simulate")?;
        let bytes = request_bytes(&sim);
        for (param, value, flags) in demo_points(&sim) {
            let mut c = Command::new(image::target_dir().join("release/see-demo"));
            c.arg("--vmm")
                .arg(&vmm)
                .arg("--kernel")
                .arg(&kernel)
                .arg("--daemon")
                .arg(image::target_dir().join("release/see-daemon"))
                .arg("--key")
                .arg(crate::keys::secret_key_path())
                .args(["--sessions", &a.sessions.to_string()])
                .args(["--seed", &a.seed.to_string()])
                .arg("--out")
                .arg(out.join(format!("vm-{param}-{value}")))
                .args(&flags);
            println!("\nVM: {param} = {value}: see-demo {}", flags.join(" "));
            let demo = output(c, "see-demo")?;
            let b = bytes
                .iter()
                .find(|(k, _)| k.0 == param && k.1 == value)
                .map(|x| x.1);
            if let (Some(ms), Some(b)) = (demo_work_ms(&demo), b) {
                rates.push(ms * 1e6 / b.max(1.0));
            }
            for (mode, p50) in demo_p50s(&demo) {
                let _ = writeln!(figures, "{param},{value},{mode},{p50}");
            }
        }
    }
    std::fs::write(&csv, &figures).map_err(|e| format!("{}: {e}", csv.display()))?;
    println!("\nVM figures: {}", csv.display());
    let work = (a.work_ns_per_byte.is_none() && !rates.is_empty()).then(|| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    });
    if let Some(w) = work {
        println!(
            "the VM's guest work: {w:.2} ns/byte (median over the points): the simulation uses it"
        );
    }
    for param in &a.param {
        output(simulate(a, &out, param, Some(&csv), work), "pto simulate")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sims_demo_lines_and_the_demos_p50s() {
        let sim = "sweep of budget:\ndemo: budget 0.1 --latency-ms 5 --budget-mib 0.5000 --requests 300 --modes reactive,oracle\nplot: x\n";
        let p = demo_points(sim);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].0.as_str(), p[0].1.as_str()), ("budget", "0.1"));
        assert_eq!(p[0].2[..2], ["--latency-ms".to_owned(), "5".to_owned()]);
        let demo = "reactive: done, host p50 31.20 ms, guest p50 29.75 ms, 0 bundles staged\noracle: FAILED: x\n";
        assert_eq!(demo_p50s(demo), [("reactive".to_owned(), 29.75)]);
        // Repetitions: the median of each mode's.
        let reps = "rep 1 reactive: done, host p50 1 ms, guest p50 30.00 ms\nrep 1 markov: done, host p50 1 ms, guest p50 20.00 ms\nrep 2 reactive: done, host p50 1 ms, guest p50 34.00 ms\nrep 3 reactive: done, host p50 1 ms, guest p50 31.00 ms\n";
        assert_eq!(
            demo_p50s(reps),
            [("reactive".to_owned(), 31.0), ("markov".to_owned(), 20.0)]
        );
        let demo =
            "where the guest's time went\nreactive   claim    0.03  fetch   13.36  work   17.40\n";
        assert_eq!(demo_work_ms(demo), Some(17.40));
        assert_eq!(demo_work_ms("nothing"), None);
        let sim = "work: budget 0.1 524288 bytes per request, 5.00 ms of work at 10 ns/byte\n";
        assert_eq!(
            request_bytes(sim),
            [(("budget".to_owned(), "0.1".to_owned()), 524288.0)]
        );
    }
}
