//! `see-demo`: a load generator and its report. In each of `--reps` repetitions it runs every
//! mode in turn ([`plan`]: modes interleaved, each repetition on its own held-out sessions):
//! for each it starts an SEE with its PTO daemon (`see_daemon::launch`: the daemon and the VMM
//! as processes, as `see up` does) and replays the repetition's requests through the daemon's
//! HTTP API with a real HTTP client ([`client`]). Every request's measurements go to a CSV
//! file ([`records`]); the report ([`report`], [`analysis`]) gives latency at the host with
//! session-level bootstrap intervals ([`bootstrap`]), the guest's breakdown beside it, the
//! speedups and targets judged on their intervals, the prefetch figures and a PNG of the
//! latency distributions. `--from-csv FILE` recomputes the interval figures from such a file
//! alone; `--compare-tasks DIR` compares Wasm with native tasks ([`kinds`]) from the files
//! `cargo xtask bench tasks` wrote. Every task's reported result is checked against the host's
//! own work on the store's bytes ([`check`]), and every audit log is verified.

mod analysis;
mod bootstrap;
mod check;
mod client;
mod kinds;
mod plan;
mod records;
mod report;
mod setup;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use see_daemon::{config::PredictorKind, Config};
use see_pto::{
    faas::FaasSpec,
    metadata::ServiceCatalogue,
    online::{
        simulate::{replay_order, working_set_bytes},
        Policy,
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
    /// Starting or stopping an SEE and its daemon.
    #[error(transparent)]
    Launch(#[from] see_daemon::launch::LaunchError),
    /// The service answered something it should not have.
    #[error("service: {0}")]
    Service(String),
    /// The PTO's training, history or audit log.
    #[error("PTO: {0}")]
    Pto(String),
    /// Too few held-out requests for the repetitions asked for.
    #[error(transparent)]
    HeldOut(#[from] see_pto::online::simulate::NotEnoughHeldOut),
}

fn predictor_arg(s: &str) -> Result<PredictorKind, String> {
    s.parse()
        .map_err(|e: see_daemon::ConfigError| e.to_string())
}

/// The mode's name in tables ("reactive" for no predictor).
pub fn mode_name(kind: PredictorKind) -> &'static str {
    match kind {
        PredictorKind::None => "reactive",
        other => other.name(),
    }
}

/// A built-in catalogue generated instead of the shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CataloguePreset {
    /// The synthetic function platform (`see_pto::faas`): apps with shared code and
    /// per-function data, hundreds of resources, Zipf-popular request types; its working set
    /// exceeds the guest's store. With `--task-module`, its Wasm shape
    /// (`FaasSpec::wasm_catalogue`): every task runs a module of its own over its data.
    Faas,
}

/// Replays a workload through the PTO service, a fresh SEE per mode and repetition.
#[derive(Parser, Debug)]
#[command(name = "see-demo", version)]
struct Args {
    /// see-vmm binary [env: SEE_VMM_BIN; default target/release/see-vmm].
    #[arg(long, env = "SEE_VMM_BIN", default_value = "target/release/see-vmm")]
    vmm: PathBuf,
    /// see-daemon binary [env: SEE_DAEMON_BIN].
    #[arg(
        long,
        env = "SEE_DAEMON_BIN",
        default_value = "target/release/see-daemon"
    )]
    daemon: PathBuf,
    /// Guest image [env: SEE_KERNEL_IMAGE].
    #[arg(
        long,
        env = "SEE_KERNEL_IMAGE",
        default_value = "images/see-kernel/target/x86_64-unknown-none/release/see-kernel"
    )]
    kernel: PathBuf,
    /// The PTO's signing key, PKCS#8 PEM (the image embeds its verifying key).
    #[arg(
        long,
        env = "SEE_PTO_SIGNING_KEY",
        default_value = "target/see-keys/pto.key"
    )]
    key: PathBuf,
    /// The audit key, PKCS#8 PEM: signs each mode's audit log checkpoints.
    #[arg(
        long,
        env = "SEE_AUDIT_KEY",
        default_value = "target/see-keys/audit.key"
    )]
    audit_key: PathBuf,
    /// The audit public key (SEC1) each mode's audit log is verified with.
    #[arg(long, default_value = "target/see-keys/audit.pub")]
    audit_pub: PathBuf,
    /// Replay this trace (CSV or JSON lines, gzip ok) instead of a generated workload.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Serve a generated catalogue instead of the shop (`faas`: the synthetic function
    /// platform, with its own Zipf-popular sessions unless --trace is given). The daemon
    /// reads it from `catalogue.toml` in the output directory.
    #[arg(long, value_enum)]
    catalogue_preset: Option<CataloguePreset>,
    /// Apps of the faas preset (6 functions each) [default: 40].
    #[arg(long, requires = "catalogue_preset")]
    apps: Option<usize>,
    /// Zipf exponent of the faas preset's request popularity (0: uniform) [default: 1].
    #[arg(long, requires = "catalogue_preset", allow_negative_numbers = true)]
    zipf: Option<f64>,
    /// Sessions of the generated workload (training + test).
    #[arg(long, default_value_t = 600)]
    sessions: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests replayed per mode in each repetition (held-out sessions, a repetition's last
    /// one cut short).
    #[arg(long, default_value_t = 60)]
    requests: usize,
    /// Repetitions: every mode runs once per repetition, modes interleaved (A B C, A B C,
    /// ...), each repetition on its own held-out sessions. The default keeps `cargo xtask run`
    /// under about 8 minutes; the figures of record use 5 (BENCHMARKS.md).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Recompute the interval figures and targets from a requests CSV a run wrote
    /// (`target/see-demo/requests.csv`), without starting any SEE.
    #[arg(long, value_name = "FILE")]
    from_csv: Option<PathBuf>,
    /// Compare Wasm tasks with native tasks from the requests files `cargo xtask bench tasks`
    /// wrote in DIR (`roundN/native/requests.csv`, `roundN/wasm/requests.csv`), without
    /// starting any SEE: every mode's p50 and p95 of each kind and their ratio, with intervals.
    #[arg(long, value_name = "DIR", conflicts_with = "from_csv")]
    compare_tasks: Option<PathBuf>,
    /// Modes to run: reactive-nocache (the naive baseline), reactive and push (the
    /// non-predictive baselines), static, markov, ppm, learned, oracle. The headline compares
    /// the best predictor with the better of reactive and push.
    #[arg(long, value_parser = predictor_arg, value_delimiter = ',',
          default_value = "reactive-nocache,reactive,push,static,markov,learned,oracle")]
    modes: Vec<PredictorKind>,
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
    /// Staging budget, MiB [default: the policy's 16 MiB times --size-scale].
    #[arg(long)]
    budget_mib: Option<f64>,
    /// Guest RAM, MiB: the guest's store (the budget) lives on its heap, beside the app's
    /// working buffers, so it must be at least twice the budget plus 64 MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    /// Confidence threshold of a prefetch.
    #[arg(long, default_value_t = Policy::default().threshold)]
    threshold: f32,
    /// Predictions considered per request.
    #[arg(long, default_value_t = Policy::default().top_k)]
    top_k: usize,
    /// Longest wait for one request, seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// The daemon waits until every prefetch ordered so far is staged before each dispatch
    /// (deterministic hit rates for the tests; not the demo's figures).
    #[arg(long)]
    settle: bool,
    /// The daemon sends a request's prefetch orders at dispatch, not at completion.
    #[arg(long)]
    eager_prefetch: bool,
    /// The Wasm module every task runs (`cargo xtask tasks` builds target/tasks/shop.wasm;
    /// `cargo xtask run` passes it unless told `--native-tasks`).
    #[arg(long, value_name = "FILE", conflicts_with = "native_tasks")]
    task_module: Option<PathBuf>,
    /// The native tasks compiled into the guest image (the comparison point for Wasm tasks;
    /// also what runs when no --task-module is given).
    #[arg(long)]
    native_tasks: bool,
    /// Output directory: store, requests.csv, latency.png, and per repetition (`rep1/`, ...)
    /// the histories, audit logs and run directories.
    #[arg(long, default_value = "target/see-demo")]
    out: PathBuf,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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

/// Recomputes the figures of a requests CSV.
fn from_csv(path: &std::path::Path) -> Result<bool, DemoError> {
    let records = records::read(path)?;
    let a = analysis::Analysis::new(&records, bootstrap::RESAMPLES, bootstrap::SEED)
        .ok_or_else(|| usage(format!("{}: no requests", path.display())))?;
    println!(
        "{}: {} requests of catalogue {}, modes {}",
        path.display(),
        records.len(),
        a.catalogue,
        a.modes.join(", ")
    );
    report::print_analysis(&a);
    Ok(true)
}

/// Runs the demo; false when a mode failed.
fn run(a: &Args) -> Result<bool, DemoError> {
    if let Some(csv) = &a.from_csv {
        return from_csv(csv);
    }
    if let Some(dir) = &a.compare_tasks {
        return kinds::run(dir);
    }
    if !(a.size_scale.is_finite() && a.size_scale > 0.0) {
        return Err(usage(format!(
            "--size-scale {} must be positive",
            a.size_scale
        )));
    }
    if a.requests == 0 || a.reps == 0 {
        return Err(usage("--requests and --reps must be at least 1"));
    }
    for (what, p) in [
        ("--vmm", &a.vmm),
        ("--daemon", &a.daemon),
        ("--kernel", &a.kernel),
        ("--key", &a.key),
        ("--audit-key", &a.audit_key),
        ("--audit-pub", &a.audit_pub),
    ] {
        if !p.is_file() {
            return Err(usage(format!(
                "{what} {} does not exist (`cargo xtask run` builds everything; `cargo xtask keys` makes the key)",
                p.display()
            )));
        }
    }
    let budget_mib = a
        .budget_mib
        .unwrap_or((Policy::default().budget_bytes >> 20) as f64 * a.size_scale);
    let budget = (budget_mib * 1024.0 * 1024.0) as u64;
    if f64::from(a.memory_mib) < 2.0 * budget_mib + 64.0 {
        return Err(usage(format!(
            "--memory-mib {} cannot hold a store of {budget_mib:.1} MiB beside the guest's work: give at least {:.0}",
            a.memory_mib,
            (2.0 * budget_mib + 64.0).ceil()
        )));
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| DemoError::Io(format!("{}: {e}", a.out.display())))?;
    let out = a
        .out
        .canonicalize()
        .map_err(|e| DemoError::Io(format!("{}: {e}", a.out.display())))?;
    let faas = a.catalogue_preset.map(|CataloguePreset::Faas| {
        let d = FaasSpec::default();
        FaasSpec {
            apps: a.apps.unwrap_or(d.apps),
            zipf: a.zipf.unwrap_or(d.zipf),
            sessions: a.sessions,
            seed: a.seed,
            ..d
        }
    });
    let (mut cat, catalogue_file) = match &faas {
        Some(spec) => {
            // Wasm tasks need one code resource (the module) per task: the platform's Wasm shape.
            let cat = if a.task_module.is_some() {
                spec.wasm_catalogue()
            } else {
                spec.catalogue()
            }
            .map_err(usage)?;
            let path = out.join("catalogue.toml");
            let text = cat.to_toml().map_err(|e| DemoError::Io(e.to_string()))?;
            std::fs::write(&path, text)
                .map_err(|e| DemoError::Io(format!("{}: {e}", path.display())))?;
            (cat, Some(path))
        }
        None => (ServiceCatalogue::default_catalogue(), None),
    };
    cat.scale_sizes(a.size_scale);
    let cat = Arc::new(cat);
    let store_dir = out.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let module = Config {
        task_module: a.task_module.clone(),
        ..Config::default()
    }
    .load_task_module(&cat)
    .map_err(|e| DemoError::Io(e.to_string()))?;
    let store = see_daemon::guest::open_filled(&cat, &store_dir, module.as_ref())
        .map_err(|e| DemoError::Io(e.to_string()))?;
    let stored: u64 = cat.resources.iter().map(|r| r.size).sum();

    let (trace, desc) =
        setup::load_sessions(&cat, a.trace.as_deref(), faas.as_ref(), a.sessions, a.seed)?;
    let split = SplitSpec::default().split(&trace.sessions);
    let mut past_sessions = split.train.clone();
    past_sessions.extend(split.val.iter().cloned());
    let past = Trace {
        vocab: trace.vocab.clone(),
        sessions: past_sessions,
        attributes: trace.attributes.clone(),
    };
    let groups = plan::rep_groups(&split.test, a.reps, a.requests)?;
    let test: Vec<_> = groups.iter().flatten().cloned().collect();
    let requests = a.requests;
    println!(
        "workload: {desc}; {} repetitions, each replaying {requests} requests of its own held-out sessions ({} sessions in all) per mode over HTTP, modes interleaved; predictors learned from {} sessions",
        a.reps,
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
    // Every repetition starts cold: its working set counts once per repetition.
    let working_set: u64 = groups.iter().map(|g| working_set_bytes(&cat, g)).sum();
    println!(
        "working set of the replayed requests: {:.1} MiB per repetition on average",
        working_set as f64 / a.reps as f64 / 1048576.0
    );
    println!(
        "origin: {} ms + {} MiB/s (every fetch, on one shared link; the daemon's fetch pool overlaps their latencies)",
        a.latency_ms, a.bandwidth_mib
    );
    println!(
        "policy: budget {budget_mib:.1} MiB (the guest's store, {:.0} % of the working set; guest RAM {} MiB), threshold {}, top {}; think time from the trace, at most {} ms; a fresh SEE + see-daemon per mode and repetition",
        budget as f64 * a.reps as f64 * 100.0 / working_set.max(1) as f64,
        a.memory_mib,
        a.threshold,
        a.top_k,
        a.think_ms
    );

    let model = if a.modes.contains(&PredictorKind::Learned) {
        Some(match &a.model {
            Some(m) => m.clone(),
            None => setup::train_learned(&trace.vocab, &split.train, &split.val, a.epochs, &out)?,
        })
    } else {
        None
    };
    let mut reps = Vec::with_capacity(groups.len());
    for (i, group) in groups.iter().enumerate() {
        let dir = out.join(format!("rep{}", i + 1));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DemoError::Io(format!("{}: {e}", dir.display())))?;
        let oracle_trace = dir.join("oracle.csv");
        setup::write_oracle(&oracle_trace, &replay_order(group, &cat.vocabulary()))?;
        reps.push(client::Rep {
            rep: i + 1,
            sessions: group,
            oracle_trace,
            dir,
        });
    }

    let mut expected = check::Expected::new(store, see_daemon::guest::allow_entries(&cat));
    if module.is_some() {
        expected = expected.with_wasm_tasks(&cat);
    }
    let base = Config {
        store: store_dir,
        key: a
            .key
            .canonicalize()
            .map_err(|e| DemoError::Io(format!("{}: {e}", a.key.display())))?,
        audit_key: Some(
            a.audit_key
                .canonicalize()
                .map_err(|e| DemoError::Io(format!("{}: {e}", a.audit_key.display())))?,
        ),
        catalogue: catalogue_file,
        size_scale: a.size_scale,
        model,
        oracle_trace: None,
        budget,
        threshold: a.threshold,
        top_k: a.top_k,
        listen: "127.0.0.1:0".parse().map_err(usage)?,
        request_timeout_ms: a.timeout_s * 1000,
        origin_latency_ms: a.latency_ms.max(0.0),
        origin_bandwidth_mib: a.bandwidth_mib,
        settle: a.settle,
        eager_prefetch: a.eager_prefetch,
        guest_idle_ms: 120_000,
        history_source: "demo".into(),
        task_module: a
            .task_module
            .as_ref()
            .map(|m| m.canonicalize())
            .transpose()
            .map_err(|e| DemoError::Io(format!("task module: {e}")))?,
        ..Config::default()
    };
    let env = client::Env {
        audit_pub: a.audit_pub.clone(),
        vmm: a.vmm.clone(),
        daemon: a.daemon.clone(),
        kernel: a.kernel.clone(),
        base,
        past,
        think_cap: Duration::from_millis(a.think_ms),
        expected,
        catalogue: cat.clone(),
        memory_mib: a.memory_mib,
    };
    let bar = ProgressBar::new((requests * a.modes.len() * a.reps) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} requests {elapsed} {msg}",
        )
        .map_err(usage)?
        .progress_chars("=> "),
    );
    let mut runs = Vec::new();
    let mut ok = true;
    for (rep, mode) in plan::interleave(a.reps, &a.modes) {
        bar.set_prefix(format!("{} {rep}", mode_name(mode)));
        bar.set_message("starting the SEE");
        match client::run_mode(&env, mode, &reps[rep - 1], &bar) {
            Ok(r) => {
                bar.suspend(|| {
                    println!(
                        "rep {rep} {}: done, host p50 {:.2} ms, guest p50 {:.2} ms, {} bundles staged, {} origin fetches; audit log {} ({} records) verified",
                        mode_name(mode),
                        r.host_p50_ms(),
                        r.summary.p50_ms,
                        r.stats.bundles,
                        r.stats.origin_fetches,
                        r.audit_path.display(),
                        r.audit_records
                    )
                });
                runs.push(r);
            }
            Err(e) => {
                ok = false;
                bar.suspend(|| println!("rep {rep} {}: FAILED: {e}", mode_name(mode)));
            }
        }
    }
    bar.finish_and_clear();
    let csv = out.join("requests.csv");
    let all: Vec<records::Record> = runs.iter().flat_map(|r| r.records.clone()).collect();
    records::write(&csv, &all)?;
    ok &= report::print(&runs, working_set, &csv, a, &out)?;
    Ok(ok)
}

/// What the report prints in its header.
pub fn origin_desc(a_latency_ms: f64, a_bandwidth_mib: f64) -> String {
    format!("origin {a_latency_ms} ms + {a_bandwidth_mib} MiB/s")
}
