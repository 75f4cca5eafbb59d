//! `see-demo`: the PTO orchestrates a workload through the SEE, once per prefetch mode.
//!
//! For each mode (reactive, static, markov, learned, oracle) the demo boots a fresh VM (the
//! guest's `serve` app) against an in-process virtio-prefetch backend whose store holds the
//! catalogue's resources behind a modelled origin (latency + bandwidth), replays the workload
//! one request at a time through the online [`see_pto::online::Orchestrator`] (prefetch orders
//! go to the backend, the request is dispatched over requestq, the guest's reports and
//! completion come back), and prints one table of guest-measured latencies and prefetch
//! figures, the targets, and a PNG of the latency distributions. Every mode's audit log is
//! verified, and every task's reported result is checked against the host's own work on the
//! store's bytes ([`check`]): a wrong one fails the demo.

mod check;
mod origin;
mod replay;
mod report;
mod setup;
mod vm;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{
    builder::{PossibleValuesParser, TypedValueParser},
    Parser,
};
use indicatif::{ProgressBar, ProgressStyle};
use see_pto::{
    metadata::ServiceCatalogue,
    online::{
        origin::OriginModel, predictor_for, simulate::replay_order, simulate::Targets, Mode,
        ModeSummary, Orchestrator, Policy,
    },
    split::SplitSpec,
    trace::Trace,
};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad options or input data.
    #[error("{0}")]
    Usage(String),
    /// A file or directory.
    #[error("{0}")]
    Io(String),
    /// The VM.
    #[error("VM: {0}")]
    Vm(String),
    /// The backend.
    #[error("backend: {0}")]
    Backend(String),
    /// The orchestrator, its history or audit log.
    #[error("orchestrator: {0}")]
    Online(String),
}

/// Replays a workload through the PTO and the SEE guest in every prefetch mode.
#[derive(Parser, Debug)]
#[command(name = "see-demo", version)]
struct Args {
    /// see-vmm binary [env: SEE_VMM_BIN; default target/release/see-vmm].
    #[arg(long)]
    vmm: Option<PathBuf>,
    /// Guest image [env: SEE_KERNEL_IMAGE; default: the image build's output].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The PTO's signing key, PKCS#8 PEM (the image embeds its verifying key)
    /// [env: SEE_PTO_SIGNING_KEY; default target/see-keys/pto.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Replay this trace (CSV or JSON lines, gzip ok) instead of a generated workload.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Sessions of the generated workload (training + test).
    #[arg(long, default_value_t = 600)]
    sessions: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests replayed per mode (the first test sessions). 300, not fewer: the p50 of 80
    /// requests moved by a third between runs (BENCHMARKS.md, "Demo").
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Modes to run.
    #[arg(
        long,
        value_parser = PossibleValuesParser::new(Mode::ALL.map(Mode::name)).try_map(|s| s.parse::<Mode>()),
        value_delimiter = ',',
        default_values_t = Mode::ALL
    )]
    modes: Vec<Mode>,
    /// Checkpoint for the learned mode (default: train an LSTM here, on the training split).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Most training epochs when training here.
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    /// Origin latency per fetch, ms.
    #[arg(long, default_value_t = 5.0)]
    latency_ms: f64,
    /// Origin bandwidth, MiB/s (shared by all fetches).
    #[arg(long, default_value_t = 100.0)]
    bandwidth_mib: f64,
    /// Multiply every resource size by this (1 = the catalogue's realistic sizes).
    #[arg(long, default_value_t = 0.25)]
    size_scale: f64,
    /// Longest think time between two requests taken from the trace, ms (also the pause
    /// before a session's first request).
    #[arg(long, default_value_t = 200)]
    think_ms: u64,
    /// Staging budget, MiB: the guest's store holds at most this [default: the policy's
    /// 16 MiB times --size-scale, so that the budget keeps its proportion to the catalogue].
    #[arg(long)]
    budget_mib: Option<f64>,
    /// Confidence threshold of a prefetch.
    #[arg(long, default_value_t = Policy::default().threshold)]
    threshold: f32,
    /// Predictions considered per request.
    #[arg(long, default_value_t = Policy::default().top_k)]
    top_k: usize,
    /// Longest wait for one request's completion, seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Before each request, wait until every prefetch ordered so far is staged in the guest
    /// (no late prefetches: the tests' deterministic hit rates; not the demo's figures).
    #[arg(long)]
    settle: bool,
    /// Send the prefetch orders of a request as soon as it is dispatched; by default they go
    /// out when it completes, so they never queue ahead of its own demand fetches in the
    /// backend (which fetches one resource at a time).
    #[arg(long)]
    eager_prefetch: bool,
    /// Output directory: store, audit logs, latency.png.
    #[arg(long, default_value = "target/see-demo")]
    out: PathBuf,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        // The backend warns when the VMM hangs up, which is how every run ends.
        "warn,see_prefetch_backend=error",
    ))
    .init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("see-demo: {e}");
            std::process::exit(if matches!(e, DemoError::Usage(_)) {
                2
            } else {
                1
            });
        }
    }
}

fn usage(e: impl std::fmt::Display) -> DemoError {
    DemoError::Usage(e.to_string())
}

/// Runs the demo; false when a mode failed.
fn run(a: &Args) -> Result<bool, DemoError> {
    if !(a.size_scale.is_finite() && a.size_scale > 0.0) {
        return Err(usage(format!(
            "--size-scale {} must be positive",
            a.size_scale
        )));
    }
    if a.requests == 0 {
        return Err(usage("--requests must be at least 1"));
    }
    let vmm = vm::artefact(a.vmm.clone(), "SEE_VMM_BIN", "target/release/see-vmm");
    let kernel = vm::artefact(
        a.kernel.clone(),
        "SEE_KERNEL_IMAGE",
        "images/see-kernel/target/x86_64-unknown-none/release/see-kernel",
    );
    let key_path = vm::artefact(
        a.key.clone(),
        "SEE_PTO_SIGNING_KEY",
        "target/see-keys/pto.key",
    );
    for (what, p) in [("--vmm", &vmm), ("--kernel", &kernel), ("--key", &key_path)] {
        if !p.is_file() {
            return Err(usage(format!(
                "{what} {} does not exist (`cargo xtask run` builds everything; `cargo xtask keys` makes the key)",
                p.display()
            )));
        }
    }
    let key = see_prefetch_backend::signer::load_key(&key_path).map_err(usage)?;
    let budget_mib = a
        .budget_mib
        .unwrap_or((Policy::default().budget_bytes >> 20) as f64 * a.size_scale);
    let policy = Policy {
        budget_bytes: (budget_mib * 1024.0 * 1024.0) as u64,
        threshold: a.threshold,
        top_k: a.top_k,
        ..Policy::default()
    };
    policy.validate().map_err(usage)?;
    let origin = OriginModel::new(
        Duration::from_secs_f64(a.latency_ms.max(0.0) / 1e3),
        a.bandwidth_mib * 1024.0 * 1024.0,
    )
    .map_err(usage)?;

    let mut cat = ServiceCatalogue::default_catalogue();
    cat.scale_sizes(a.size_scale);
    let cat = Arc::new(cat);
    std::fs::create_dir_all(&a.out)
        .map_err(|e| DemoError::Io(format!("{}: {e}", a.out.display())))?;
    let store_dir = a.out.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let stored = setup::fill_store(&cat, &store_dir)?;

    let (trace, desc) = setup::load_sessions(&cat, a.trace.as_deref(), a.sessions, a.seed)?;
    let split = SplitSpec::default().split(&trace.sessions);
    let mut past_sessions = split.train.clone();
    past_sessions.extend(split.val.iter().cloned());
    let past = Trace {
        vocab: trace.vocab.clone(),
        sessions: past_sessions,
    };
    let test = setup::take_requests(&split.test, a.requests);
    let requests: usize = test.iter().map(|s| s.requests.len()).sum();
    if requests == 0 {
        return Err(usage(
            "no test sessions to replay: use more --sessions or another trace",
        ));
    }
    println!(
        "workload: {desc}; replaying {requests} requests of {} held-out sessions per mode; predictors learned from {} sessions",
        test.len(),
        past.sessions.len()
    );
    println!(
        "catalogue {}: {} request types, {} resources, {:.1} MiB in the store (size scale {})",
        cat.name,
        cat.requests.len(),
        cat.resources.len(),
        stored as f64 / 1048576.0,
        a.size_scale
    );
    println!(
        "{origin} (every fetch, on one shared link; the backend fetches one resource at a time)"
    );
    println!(
        "policy: budget {:.1} MiB (the guest's store), threshold {}, top {}, stale after {} requests; think time from the trace, at most {} ms",
        budget_mib, policy.threshold, policy.top_k, policy.stale_after, a.think_ms
    );

    let mut learned = if a.modes.contains(&Mode::Learned) {
        Some(match &a.model {
            Some(m) => predictor_for(Mode::Learned, &cat, &past, Some(m)).map_err(usage)?,
            None => setup::train_learned(trace.vocab.clone(), &split.train, &split.val, a.epochs)?,
        })
    } else {
        None
    };

    // Every task's reported result is checked against this (from the store's bytes).
    let expected = check::Expected::new(
        see_prefetch_backend::store::DiskStore::open(&store_dir)
            .map_err(|e| DemoError::Io(e.to_string()))?,
        setup::allow_entries(&cat),
    );
    let env = replay::Env {
        vmm,
        kernel,
        key,
        store_dir,
        cmdline: setup::cmdline(&cat, policy.budget_bytes),
        catalogue: cat.clone(),
        origin,
        think_cap: Duration::from_millis(a.think_ms),
        timeout: Duration::from_secs(a.timeout_s),
        out_dir: a.out.clone(),
        settle: a.settle,
        eager_prefetch: a.eager_prefetch,
        expected,
    };
    let bar = ProgressBar::new((requests * a.modes.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} requests {elapsed} {msg}",
        )
        .map_err(usage)?
        .progress_chars("=> "),
    );
    let order = replay_order(&test, &cat.vocabulary());
    let mut runs = Vec::new();
    let mut ok = true;
    for &mode in &a.modes {
        bar.set_prefix(mode.name());
        bar.set_message("booting");
        let orch = match mode {
            Mode::Oracle => Orchestrator::oracle(cat.clone(), policy.clone(), order.clone()),
            Mode::Learned => match learned.take() {
                Some(p) => Orchestrator::new(cat.clone(), mode, p, policy.clone())
                    .map(|o| o.with_starts(&past)),
                None => return Err(usage("the learned mode is listed twice")),
            },
            _ => predictor_for(mode, &cat, &past, None).and_then(|p| {
                Orchestrator::new(cat.clone(), mode, p, policy.clone())
                    .map(|o| o.with_starts(&past))
            }),
        }
        .map_err(|e| DemoError::Online(e.to_string()))?;
        bar.set_message("");
        match replay::run_mode(&env, mode, orch, &test, &bar) {
            Ok(r) => {
                bar.suspend(|| println!(
                    "{mode}: done, p50 {:.2} ms, {} bundles staged, {} origin fetches; audit log {} ({} records) verified",
                    r.summary.p50_ms,
                    r.bundles,
                    r.origin_fetches,
                    r.audit_path.display(),
                    r.audit_records
                ));
                runs.push(r);
            }
            Err(e) => {
                ok = false;
                bar.suspend(|| println!("{mode}: FAILED: {e}"));
            }
        }
    }
    bar.finish_and_clear();

    let rows: Vec<ModeSummary> = runs.iter().map(|r| r.summary.clone()).collect();
    println!();
    println!("{}", ModeSummary::header());
    for r in &rows {
        println!("{r}");
    }
    if let Some(t) = Targets::from_rows(&rows) {
        println!("{t}");
    }
    println!();
    println!("where the guest's time went, mean ms per request: claiming staged resources, demand fetches, work on the bytes");
    for r in &runs {
        let n = r.latencies_ns.len().max(1) as f64 * 1e6;
        let [c, f, w] = r.claim_fetch_work_ns.map(|x| x as f64 / n);
        println!(
            "{:<10} claim {c:>7.2}  fetch {f:>7.2}  work {w:>7.2}",
            r.summary.mode
        );
    }
    println!();
    println!("what crossed into the guest (from the backend's and the guest's events), MiB: prefetched, claimed, prefetched never claimed, demanded; re-sends skipped because the guest still held the resource");
    for r in &runs {
        let w = &r.wire;
        let mib = |b: u64| b as f64 / 1048576.0;
        println!(
            "{:<10} prefetched {:>7.1}  claimed {:>7.1}  unclaimed {:>7.1}  demanded {:>7.1}  skipped {:>4}",
            r.summary.mode,
            mib(w.prefetched),
            mib(w.claimed),
            mib(w.unclaimed()),
            mib(w.demanded),
            w.skipped
        );
    }
    if let (Some(t), Some(oracle)) = (
        Targets::from_rows(&rows),
        runs.iter().find(|r| r.summary.mode == "oracle"),
    ) {
        if let Some(best) = runs.iter().find(|r| r.summary.mode == t.best) {
            let traffic = oracle.wire.prefetched + oracle.wire.demanded;
            println!(
                "on the wire: {}'s prefetched-never-claimed bytes are {:.2}x the oracle's traffic (target <= 1.5)",
                t.best,
                best.wire.unclaimed() as f64 / traffic.max(1) as f64
            );
        }
    }
    println!();
    println!("task results, each checked against the host's own work on the store's bytes: checked of dispatched, wrong");
    let (mut checked, mut wrong) = (0, 0);
    for r in &runs {
        let t = &r.results;
        println!(
            "{:<10} checked {:>5} of {:>5} tasks  wrong {:>3}",
            r.summary.mode, t.checked, t.dispatched, t.wrong
        );
        checked += t.checked;
        wrong += t.wrong;
    }
    println!("results checked: {checked} tasks, {wrong} wrong");
    if wrong > 0 {
        ok = false;
        eprintln!("see-demo: {wrong} task results differ from the host's (logged above)");
    }
    let png = a.out.join("latency.png");
    let series: Vec<(String, Vec<u64>)> = runs
        .iter()
        .map(|r| (r.summary.mode.clone(), r.latencies_ns.clone()))
        .collect();
    let title = format!("see-demo: {requests} requests per mode, {origin}");
    match report::plot(&series, &title, &png) {
        Ok(()) => println!("report: {}", png.display()),
        Err(e) => {
            ok = false;
            eprintln!("see-demo: report: {e}");
        }
    }
    Ok(ok)
}
