//! The Wasm task against the native work, and what a module costs before its first
//! instruction.
//!
//! 1. tasks/shop.c (built with clang-19 by the same function as `cargo xtask tasks`) run with
//!    see-task against `see_workload::process` folded like `TaskResult`, on the same data
//!    resources at several sizes; interleaved round by round (native, Wasm, next size) so both
//!    see the same machine. Times are the thread's CPU time (the machine is shared: the wall
//!    clock would count other work's time slices). Prints each side's median with a 95% confidence interval of the
//!    median (order statistics), and the slowdown: the median of the per-round ratios, with
//!    its interval.
//! 2. `Runtime::compile` (parse, validate, translate) and instantiate-and-call (a fresh
//!    instance whose `run` only sets its result) of generated modules of about 10 KiB,
//!    100 KiB and 1 MiB: thousands of distinct functions of real arithmetic, not padding.
//!
//! `cargo bench -p see-task --bench wasm_vs_native [-- ROUNDS]` (default 9 rounds; about a
//! minute on a quiet machine, most of it the 1 MiB Wasm runs). Needs clang-19 and lld-19
//! (`cargo xtask deps`).

use std::{path::Path, time::Instant};

use see_task::{ClaimRefusal, Compiled, Limits, Runtime, TaskHost};
use see_workload::{generate, process, Kind, Spec, TaskResult};

/// Every resource the task's app's; one input.
struct Host {
    id: u64,
    bytes: Vec<u8>,
}

impl TaskHost for Host {
    fn input(&self, index: u32) -> Option<u64> {
        (index == 0).then_some(self.id)
    }
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        if resource == self.id {
            Ok(self.bytes.len() as u64)
        } else {
            Err(ClaimRefusal::Unavailable)
        }
    }
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        if resource != self.id {
            return Err(ClaimRefusal::NotClaimed);
        }
        let start = usize::try_from(offset).map_or(self.bytes.len(), |o| o.min(self.bytes.len()));
        let n = dst.len().min(self.bytes.len() - start);
        dst[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }
}

const LIMITS: Limits = Limits {
    fuel: 50_000_000_000,
    memory_bytes: 256 << 20,
};

/// This thread's CPU time in seconds: unlike the wall clock, not inflated when the machine's
/// other work preempts the benchmark.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is, and keeps no pointer to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds to run `f` once: this thread's CPU time (what the comparison uses) and the wall
/// clock's (to show how much the machine's load added).
fn time<T>(f: impl FnOnce() -> T) -> (f64, f64, T) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let out = f();
    (thread_cpu() - cpu, wall.elapsed().as_secs_f64(), out)
}

/// The median and a distribution-free 95% confidence interval for it: order statistics
/// x(k) and x(n+1-k), with k the largest index such that P(Binomial(n, 1/2) < k) <= 2.5%.
/// With fewer than 6 samples no such k exists and the interval is the range.
fn median_ci(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let mut cdf = 0.0;
    let mut k = 0;
    let mut choose = 1.0f64;
    for i in 0..n {
        // P(X = i) = C(n, i) / 2^n.
        cdf += choose / 2f64.powi(n as i32);
        choose = choose * (n - i) as f64 / (i + 1) as f64;
        if cdf > 0.025 {
            break;
        }
        k = i + 1;
    }
    let k = k.max(1);
    (median, v[k - 1], v[n - k])
}

fn ms(s: f64) -> f64 {
    s * 1e3
}

fn shop(rt: &Runtime) -> Compiled {
    let toolchain = see_task_c::Toolchain::find()
        .unwrap_or_else(|e| panic!("this benchmark runs tasks/shop.c: {e}"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tasks");
    let wasm = toolchain.build("shop", &out).expect("tasks/shop.c builds");
    rt.compile(&wasm).expect("shop.wasm compiles")
}

fn main() {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(9)
        .max(1);
    let rt = Runtime::new();
    let shop = shop(&rt);

    println!("== shop task: tasks/shop.c on wasmi against see_workload::process (native), {rounds} interleaved rounds");
    let sizes = [16u64 << 10, 256 << 10, 1 << 20];
    let resources: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            generate(&Spec {
                resource_id: 100 + i as u64,
                version: 1,
                size,
                kind: Kind::Data,
            })
            .expect("generated")
        })
        .collect();
    let mut native = vec![Vec::new(); sizes.len()];
    let mut wasm = vec![Vec::new(); sizes.len()];
    let mut fuel = vec![0; sizes.len()];
    // The Wasm runs' wall-clock and CPU totals, to report the load's share.
    let (mut wall, mut cpu) = (0.0f64, 0.0f64);
    for _ in 0..rounds {
        for (i, bytes) in resources.iter().enumerate() {
            let (t, _, want) = time(|| {
                let mut fold = TaskResult::new();
                fold.add(process(bytes).expect("processes").digest);
                fold.value()
            });
            native[i].push(t);
            let mut host = Host {
                id: 100 + i as u64,
                bytes: bytes.clone(),
            };
            let (t, w, outcome) = time(|| rt.run(&shop, LIMITS, &mut host).expect("shop runs"));
            wall += w;
            cpu += t;
            assert_eq!(
                outcome.result, want,
                "the Wasm task agrees with the native work"
            );
            wasm[i].push(t);
            fuel[i] = outcome.fuel_used;
        }
    }
    println!(
        "{:>9} | {:>26} | {:>26} | {:>22} | {:>8}",
        "resource", "native CPU ms (95% CI)", "wasm CPU ms (95% CI)", "slowdown (95% CI)", "Mfuel"
    );
    for (i, &size) in sizes.iter().enumerate() {
        let ratios = native[i].iter().zip(&wasm[i]).map(|(n, w)| w / n).collect();
        let (n, n_lo, n_hi) = median_ci(native[i].clone());
        let (w, w_lo, w_hi) = median_ci(wasm[i].clone());
        let (r, r_lo, r_hi) = median_ci(ratios);
        println!(
            "{:>6} KiB | {:>8.3} [{:>7.3}, {:>7.3}] | {:>8.2} [{:>7.2}, {:>7.2}] | {:>6.1}x [{:>5.1}, {:>5.1}] | {:>8.1}",
            size >> 10,
            ms(n),
            ms(n_lo),
            ms(n_hi),
            ms(w),
            ms(w_lo),
            ms(w_hi),
            r,
            r_lo,
            r_hi,
            fuel[i] as f64 / 1e6
        );
    }

    println!(
        "(CPU time of this thread; the Wasm runs took {:.0}% more wall-clock time than CPU time: the machine's other load)",
        (wall / cpu - 1.0) * 100.0
    );

    println!("== module costs: compile (parse, validate, translate) and instantiate + call, {rounds} interleaved rounds");
    let modules: Vec<(usize, Vec<u8>)> = [10usize << 10, 100 << 10, 1 << 20]
        .iter()
        .map(|&s| see_task_c::synthetic::module_of_size(s))
        .collect();
    let mut compile = vec![Vec::new(); modules.len()];
    let mut instantiate = vec![Vec::new(); modules.len()];
    let small = Limits {
        fuel: 10_000_000,
        memory_bytes: 1 << 20,
    };
    for _ in 0..rounds {
        for (i, (_, m)) in modules.iter().enumerate() {
            let (t, _, compiled) = time(|| rt.compile(m).expect("generated module compiles"));
            compile[i].push(t);
            let mut host = Host {
                id: 0,
                bytes: Vec::new(),
            };
            let (t, _, outcome) = time(|| rt.run(&compiled, small, &mut host));
            outcome.expect("generated module runs");
            instantiate[i].push(t);
        }
    }
    println!(
        "{:>10} | {:>9} | {:>28} | {:>28}",
        "module", "functions", "compile CPU ms (95% CI)", "instantiate+call CPU us (95% CI)"
    );
    for (i, (functions, m)) in modules.iter().enumerate() {
        let (c, c_lo, c_hi) = median_ci(compile[i].clone());
        let (s, s_lo, s_hi) = median_ci(instantiate[i].clone());
        println!(
            "{:>6} KiB | {:>9} | {:>8.3} [{:>7.3}, {:>7.3}] | {:>8.1} [{:>7.1}, {:>7.1}]",
            m.len() >> 10,
            functions,
            ms(c),
            ms(c_lo),
            ms(c_hi),
            s * 1e6,
            s_lo * 1e6,
            s_hi * 1e6
        );
    }
}
