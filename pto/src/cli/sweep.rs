//! `pto simulate --sweep PARAM`: the simulated run at every point of a sweep, a table per sweep
//! and a PNG of the speedups; with `--vm-figures`, the simulation beside the VM's figures; with
//! `--demo-commands`, the `see-demo` command of every point (see `cargo xtask bench sweep`).

use std::{path::PathBuf, time::Duration};

use clap::Args;
use see_pto::{
    online::{
        origin::OriginModel,
        simulate::{
            mean_request_bytes, replay_modes,
            sweep::{self, Param, Point, PointResult},
            working_set_bytes,
        },
        Mode,
    },
    plot,
};

use super::{
    online::{
        orchestrator, policy, positive, sim_config, verify_cost, work_cost, LearnedSource, Setup,
        SimulateArgs,
    },
    CliResult,
};

/// The sweep options of `pto simulate`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep these parameters (origin-latency, budget, think-cap, size-scale), each over its
    /// points, every other setting held at this command's values.
    #[arg(
        long,
        value_parser = super::by_name::<Param>(Param::ALL.map(Param::name)),
        value_delimiter = ','
    )]
    pub sweep: Vec<Param>,
    /// The points of a single --sweep (default: origin-latency 0,5,20,50 ms; budget
    /// 0.1,0.25,0.5,1 of the working set; think-cap 0,50,200,1000 ms; size-scale
    /// 0.0625,0.25,0.5,1).
    #[arg(long, value_delimiter = ',', requires = "sweep")]
    pub points: Vec<f64>,
    /// Where the sweep's PNGs go (sweep-PARAM.png).
    #[arg(long, default_value = "target/sweep", requires = "sweep")]
    pub plot_dir: PathBuf,
    /// Session-level bootstrap resamples behind every interval.
    #[arg(long, default_value_t = sweep::RESAMPLES, requires = "sweep")]
    pub resamples: usize,
    /// The VM's figures to compare with (CSV lines `param,value,mode,p50_ms`, the demo's
    /// guest p50s; `cargo xtask bench sweep --run-vm` writes them).
    #[arg(long, requires = "sweep")]
    pub vm_figures: Option<PathBuf>,
    /// Print the `see-demo` arguments that run each point in the VM (lines starting `demo:`).
    #[arg(long, requires = "sweep")]
    pub demo_commands: bool,
}

/// The budget share a sweep holds when --budget-share is not given.
const DEFAULT_SHARE: f64 = 0.5;

pub fn sweep_cmd(a: &SimulateArgs) -> CliResult<()> {
    let s = &a.sweep;
    if !s.points.is_empty() && s.sweep.len() != 1 {
        return Err("--points goes with a single --sweep parameter".into());
    }
    let vm = match &s.vm_figures {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("--vm-figures {}: {e}", p.display()))?;
            Some(sweep::parse_vm_figures(&text).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let base = Point {
        latency_ms: a.latency_ms,
        bandwidth_mib: a.bandwidth_mib,
        budget_share: a.budget_share.unwrap_or(DEFAULT_SHARE),
        think_ms: a.think_cap_ms,
        size_scale: a.size_scale,
    };
    base.validate()?;
    let setup = Setup::new(a)?;
    let (work, work_source) = work_cost(a)?;
    let (verify, verify_source) = verify_cost(a, work)?;
    let learned = if a.modes.contains(&Mode::Learned) {
        Some(LearnedSource::new(a, &setup.trace, &setup.split)?)
    } else {
        None
    };
    let requests: usize = setup.test.iter().map(|t| t.requests.len()).sum();
    let per_rep: usize = setup.first_group().iter().map(|t| t.requests.len()).sum();
    println!(
        "workload: {}; replaying {} test sessions ({requests} requests, {} repetitions of {per_rep}, each mode and repetition from a cold guest and predictor) in every mode at every point; guest work {work:.2} ns/byte ({work_source}); bundle check {:.0} us + {:.2} ns/byte ({verify_source}); {} demands outstanding, {} origin fetchers; intervals: session-level bootstrap, {} resamples",
        setup.desc,
        setup.test.len(),
        setup.groups.len(),
        verify.sig_ns / 1e3,
        verify.ns_per_byte,
        a.max_demands,
        a.origin_workers,
        s.resamples
    );
    std::fs::create_dir_all(&s.plot_dir)
        .map_err(|e| format!("--plot-dir {}: {e}", s.plot_dir.display()))?;
    let mut all: Vec<PointResult> = Vec::new();
    for &param in &s.sweep {
        let points: Vec<f64> = if s.points.is_empty() {
            param.default_points().to_vec()
        } else {
            s.points.clone()
        };
        let mut results = Vec::new();
        for &value in &points {
            let p = base.with(param, value);
            p.validate()
                .map_err(|e| format!("{param} point {value}: {e}"))?;
            let cat = setup.scaled(positive("size scale", p.size_scale)?);
            let working_set = working_set_bytes(&cat, setup.first_group());
            let budget = p.budget_bytes(working_set);
            let policy = policy(a, budget)?;
            let origin = OriginModel::new(
                Duration::from_secs_f64(p.latency_ms / 1e3),
                p.bandwidth_mib * 1024.0 * 1024.0,
            )?;
            let cfg = sim_config(a, origin, budget, p.think_ms, work, verify);
            let replays = replay_modes(&cat, &setup.groups, &a.modes, &cfg, &mut |m, order| {
                orchestrator(m, order, &cat, &policy, &setup.past, learned.as_ref())
            })?;
            if s.demo_commands {
                // For calibrating the work per byte from the VM's work per request.
                println!(
                    "work: {param} {value} {:.0} bytes per request, {:.2} ms of work at {work:.2} ns/byte",
                    mean_request_bytes(&cat, &setup.test),
                    mean_request_bytes(&cat, &setup.test) * work / 1e6
                );
            }
            let r = sweep::analyse(param, p, budget, &replays, s.resamples);
            log::info!("{param} {value}: speedup {:?}", r.speedup);
            results.push(r);
        }
        println!("\nsweep of {param}:");
        print!("{}", sweep::table(&results));
        let path = s.plot_dir.join(format!("sweep-{param}.png"));
        let title = format!(
            "simulated speedup at the host (p50, push waits included), by {}",
            param.axis()
        );
        plot::sweep::speedup(&results, &title, &path)?;
        println!("plot: {}", path.display());
        if s.demo_commands {
            for r in &results {
                let modes: Vec<&str> = a.modes.iter().map(|m| m.name()).collect();
                println!(
                    "demo: {param} {} {} --requests {per_rep} --reps {} --modes {}",
                    r.value(),
                    r.point.demo_flags(r.budget_bytes),
                    setup.groups.len(),
                    modes.join(",")
                );
            }
        }
        all.extend(results);
    }
    if let Some(vm) = vm {
        println!("\nthe simulation beside the VM (guest p50s, the median over the repetitions):");
        print!("{}", sweep::compare_vm(&all, &vm));
    }
    Ok(())
}
