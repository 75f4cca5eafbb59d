//! `see-wasm-bench`, run by `cargo xtask bench wasm`: what prefetching a task's code buys. For
//! modules of about 10 KiB, 100 KiB and 1 MiB of real code (`see_task_c::synthetic`), it times a
//! task whose module was prefetched (staged, verified and compiled ahead while the guest was
//! idle) from the request's claim to the end of its first call, against a task whose module
//! is demand-fetched, verified, validated and compiled on the request's path. Both are the
//! guest's own TSC figures from the completion (claim + fetch + work, work being compile and
//! run). Each round uses fresh resources (nothing cached), and the two cases alternate order.
//!
//! Usage: `see-wasm-bench [--rounds N]` with `SEE_VMM_BIN` and `SEE_KERNEL_IMAGE` set (xtask
//! does). Prints one table on stdout.

use std::process::ExitCode;

use see_abi::serve::OP_RUN_WASM;
use see_e2e::{
    guest::field_u64,
    rig::{Options, Res, Rig},
};
use see_prefetch_backend::BackendEvent;
use virtio_prefetch_wire::TaskTiming;

const SIZES: [(usize, &str); 3] = [
    (10 << 10, "10 KiB"),
    (100 << 10, "100 KiB"),
    (1 << 20, "1 MiB"),
];
const FUEL: u64 = 100_000_000;
const MEMORY: u64 = 1 << 20;

/// Task and resource ids: the task of (round, size, case) and its module (same digit count).
fn ids(round: usize, size: usize, prefetched: bool) -> (u64, u64) {
    let task = 1000 + (round * 10 + size * 2 + usize::from(prefetched)) as u64;
    (task, task + 100_000)
}

fn run(rig: &mut Rig, task: u64) -> TaskTiming {
    let id = rig.dispatch(1, OP_RUN_WASM, &[task, FUEL, MEMORY]);
    let done = rig.wait_event(
        &format!("Complete of request {id}"),
        |e| matches!(e, BackendEvent::Complete { request_id, .. } if *request_id == id),
    );
    match done {
        BackendEvent::Complete {
            status: 0, tasks, ..
        } if tasks.len() == 1 => tasks[0],
        other => panic!(
            "task {task} did not complete: {other:?}\n{}",
            rig.guest.transcript()
        ),
    }
}

fn total_ns(t: &TaskTiming) -> u64 {
    t.claim_ns + t.fetch_ns + t.work_ns
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(5)
        .max(1);
    let modules: Vec<Vec<u8>> = SIZES
        .iter()
        .map(|&(bytes, _)| see_task_c::synthetic::module_of_size(bytes).1)
        .collect();
    let mut resources = Vec::new();
    for round in 0..rounds {
        for (s, module) in modules.iter().enumerate() {
            for prefetched in [true, false] {
                let (task, res) = ids(round, s, prefetched);
                resources.push(Res::code(1, task, res, 1, module.clone()));
            }
        }
    }
    let mut rig = Rig::start(&Options {
        resources: resources.clone(),
        cmdline: "see.store_kib=65536".into(),
        ..Options::default()
    });
    // Per size: (prefetched ns, demanded ns, demanded compile ns) of every round.
    let mut samples = vec![(Vec::new(), Vec::new(), Vec::new()); SIZES.len()];
    for round in 0..rounds {
        for (s, sample) in samples.iter_mut().enumerate() {
            let cases = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for prefetched in cases {
                let (task, res) = ids(round, s, prefetched);
                if prefetched {
                    let r = resources.iter().find(|r| r.id == res).expect("declared");
                    rig.prefetch(r);
                    let line = rig
                        .guest
                        .wait_line(&format!("wasm-compiled res={res}"), |l| {
                            l.starts_with(&format!("see: wasm-compiled app=1 res={res} "))
                        });
                    assert_eq!(field_u64(&line, "ok"), 1, "{line}");
                }
                let t = run(&mut rig, task);
                let line = rig.guest.wait_line(&format!("wasm task={task}"), |l| {
                    l.starts_with(&format!("see: wasm task={task} "))
                });
                assert_eq!(
                    field_u64(&line, "compiled"),
                    u64::from(prefetched),
                    "{line}"
                );
                let ns = total_ns(&t) as f64;
                if prefetched {
                    sample.0.push(ns);
                } else {
                    sample.1.push(ns);
                    sample.2.push(field_u64(&line, "compile_ns") as f64);
                }
            }
        }
    }
    rig.stop();
    println!(
        "Wasm task code, claim through the end of the first call (guest TSC, {rounds} rounds, medians with the range)"
    );
    println!(
        "{:<8} {:>10} {:>24} {:>24} {:>16} {:>10}",
        "module",
        "bytes",
        "prefetched+compiled us",
        "demand+compile us",
        "of which compile",
        "ratio"
    );
    for (s, (p, d, c)) in samples.iter_mut().enumerate() {
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            (lo / 1e3, hi / 1e3)
        };
        let (pr, dr) = (range(p), range(d));
        let (pm, dm, cm) = (median(p), median(d), median(c));
        println!(
            "{:<8} {:>10} {:>24} {:>24} {:>16} {:>10}",
            SIZES[s].1,
            modules[s].len(),
            format!("{:.1} [{:.1}, {:.1}]", pm / 1e3, pr.0, pr.1),
            format!("{:.1} [{:.1}, {:.1}]", dm / 1e3, dr.0, dr.1),
            format!("{:.1}", cm / 1e3),
            format!("{:.1}x", dm / pm),
        );
    }
    ExitCode::SUCCESS
}
