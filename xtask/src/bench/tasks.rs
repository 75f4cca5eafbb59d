//! `cargo xtask bench tasks`: the demo's latency with Wasm tasks against native tasks, side
//! by side in one run. Each round runs the release see-demo once per task kind (the shop
//! module built from `tasks/shop.c`, or `--native-tasks`), the two kinds one after the other
//! and the first of them alternating between rounds, each run in the same modes on the same
//! sessions (the round's workload seed). Every run checks every task's result against the
//! host's run of the same work, as the demo always does. At the end `see-demo --compare-tasks`
//! reads the runs' requests files and prints the table: every mode's host and guest p50 and p95
//! per kind and the Wasm / native ratio, with session-level paired bootstrap intervals.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use clap::Args;

use crate::{image, run};

/// Options of `cargo xtask bench tasks`.
#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Rounds: each runs see-demo once with native and once with Wasm tasks.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Requests replayed per mode and run (see-demo's --requests).
    #[arg(long, default_value_t = 40)]
    requests: usize,
    /// Modes (see-demo's --modes): by default the best predictor and the best non-predictive
    /// mode of the demo's recorded run (BENCHMARKS.md).
    #[arg(long, default_value = "ppm,reactive")]
    modes: String,
    /// The workload seed of round 1; round r uses seed + r - 1, both kinds alike.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory: `roundN/{native,wasm}/` hold each run's see-demo output.
    #[arg(long, default_value = "target/bench-tasks")]
    out: PathBuf,
    /// More see-demo arguments for every run (after `--`; not --modes, --requests, --reps,
    /// --seed, --out or the task options, which this command sets).
    #[arg(last = true)]
    demo_args: Vec<String>,
}

/// A kind of task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Native,
    Wasm,
}

impl Kind {
    /// The directory name, as `see-demo --compare-tasks` reads it.
    fn name(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Wasm => "wasm",
        }
    }
}

/// The kinds in the order round `round` (from 1) runs them: native first in odd rounds.
fn order(round: u32) -> [Kind; 2] {
    if round % 2 == 1 {
        [Kind::Native, Kind::Wasm]
    } else {
        [Kind::Wasm, Kind::Native]
    }
}

/// Runs the benchmark.
pub fn run(args: &TasksArgs) -> Result<(), String> {
    if args.rounds == 0 || args.requests == 0 {
        return Err("--rounds and --requests must be at least 1".into());
    }
    let kernel = image::build_image()?;
    let vmm = image::build_vmm()?;
    run::build_service()?;
    let shop = run::shop_module()?;
    let out = crate::repo_root().join(&args.out);
    // An earlier run's rounds would be read with this run's: remove them (only them).
    for round in 1.. {
        let old = out.join(format!("round{round}"));
        if !old.exists() {
            break;
        }
        std::fs::remove_dir_all(&old).map_err(|e| format!("{}: {e}", old.display()))?;
    }
    println!("machine: {}", super::machine());
    eprintln!(
        "xtask: == {} rounds of see-demo with native and Wasm tasks (modes {}, {} requests per mode), alternating which kind goes first",
        args.rounds, args.modes, args.requests
    );
    let start = Instant::now();
    for round in 1..=args.rounds {
        for kind in order(round) {
            let dir = out.join(format!("round{round}")).join(kind.name());
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            demo_run(&kernel, &vmm, &shop, args, round, kind, &dir)?;
        }
        eprintln!(
            "xtask: round {round} of {} done, {:.0} s so far",
            args.rounds,
            start.elapsed().as_secs_f64()
        );
    }
    let status = run::demo_command(&kernel, &vmm)
        .arg("--compare-tasks")
        .arg(&out)
        .status()
        .map_err(|e| format!("cannot start see-demo: {e}"))?;
    if !status.success() {
        return Err(format!("see-demo --compare-tasks failed ({status})"));
    }
    println!(
        "runs: {} (each run's report in its demo.log); {:.0} s of runs",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One see-demo run of `kind` in `round`, its report in `dir/demo.log`.
fn demo_run(
    kernel: &Path,
    vmm: &Path,
    shop: &Path,
    args: &TasksArgs,
    round: u32,
    kind: Kind,
    dir: &Path,
) -> Result<(), String> {
    let log_path = dir.join("demo.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = run::demo_command(kernel, vmm);
    cmd.args(["--modes", &args.modes, "--reps", "1"])
        .arg("--requests")
        .arg(args.requests.to_string())
        .arg("--seed")
        .arg((args.seed + u64::from(round) - 1).to_string())
        .arg("--out")
        .arg(dir);
    match kind {
        Kind::Native => cmd.arg("--native-tasks"),
        Kind::Wasm => cmd.arg("--task-module").arg(shop),
    };
    let t = Instant::now();
    let status = cmd
        .args(&args.demo_args)
        .stdout(Stdio::from(log))
        .status()
        .map_err(|e| format!("cannot start see-demo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "round {round}, {} tasks: see-demo failed ({status}); its report: {}",
            kind.name(),
            log_path.display()
        ));
    }
    eprintln!(
        "xtask: round {round}, {} tasks: {:.0} s, every task result checked",
        kind.name(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_kind_alternates_between_rounds() {
        assert_eq!(order(1), [Kind::Native, Kind::Wasm]);
        assert_eq!(order(2), [Kind::Wasm, Kind::Native]);
        assert_eq!(order(3), order(1));
        assert_eq!(
            (1..=4).map(|r| order(r)[0]).collect::<Vec<_>>(),
            [Kind::Native, Kind::Wasm, Kind::Native, Kind::Wasm]
        );
    }
}
