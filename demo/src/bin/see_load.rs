//! `see-load`: a load generator on loopback for the PTO service's front door. It starts one SEE
//! with its daemon (as `see up` does), then, for each repetition, sends `--requests` requests
//! one at a time (latency) and `--requests` more from `--clients` concurrent clients
//! (throughput), and prints requests per second and the front door's overhead: latency at the
//! client minus the guest's own time, at p50 and p99 (and the same measured inside the daemon,
//! from arrival to answer). `cargo xtask bench api` runs it on the release binaries.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use see_daemon::{
    api::{RunRequest, RunResponse},
    config::PredictorKind,
    launch::{LaunchSpec, Launched},
    Config,
};

#[derive(Parser, Debug)]
#[command(
    name = "see-load",
    about = "Load generator for the PTO service's HTTP API"
)]
struct Args {
    #[arg(long, env = "SEE_VMM_BIN", default_value = "target/release/see-vmm")]
    vmm: PathBuf,
    #[arg(
        long,
        env = "SEE_DAEMON_BIN",
        default_value = "target/release/see-daemon"
    )]
    daemon: PathBuf,
    #[arg(
        long,
        env = "SEE_KERNEL_IMAGE",
        default_value = "images/see-kernel/target/x86_64-unknown-none/release/see-kernel"
    )]
    kernel: PathBuf,
    #[arg(
        long,
        env = "SEE_PTO_SIGNING_KEY",
        default_value = "target/see-keys/pto.key"
    )]
    key: PathBuf,
    /// The request type every request runs (the shop's cheapest by default).
    #[arg(long, default_value = "home")]
    kind: String,
    /// Resource size scale of the catalogue (small: the front door is measured, not the guest).
    #[arg(long, default_value_t = 0.0625)]
    size_scale: f64,
    /// Requests per phase.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Repetitions (latency and throughput phases interleaved).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Output directory.
    #[arg(long, default_value = "target/see-load")]
    out: PathBuf,
}

/// (client latency, daemon latency, guest latency, queue time) of one request, us.
type Sample = (f64, f64, f64, f64);

fn one(agent: &ureq::Agent, url: &str, body: &RunRequest) -> Result<Sample, String> {
    let start = Instant::now();
    let mut r = agent
        .post(format!("{url}/v1/requests"))
        .send_json(body)
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 200 {
        return Err(format!("status {}", r.status()));
    }
    let resp: RunResponse = r.body_mut().read_json().map_err(|e| e.to_string())?;
    let client = start.elapsed().as_secs_f64() * 1e6;
    Ok((
        client,
        resp.timings.host_us,
        resp.timings.guest_us,
        resp.timings.queue_us,
    ))
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

fn overheads(samples: &[Sample]) -> [f64; 4] {
    let mut client: Vec<f64> = samples.iter().map(|s| s.0 - s.2).collect();
    let mut daemon: Vec<f64> = samples.iter().map(|s| s.1 - s.2).collect();
    [
        pct(&mut client, 0.5),
        pct(&mut client, 0.99),
        pct(&mut daemon, 0.5),
        pct(&mut daemon, 0.99),
    ]
}

/// The daemon's overhead split: (queue and planning, dispatch to the guest's completion
/// minus the guest's own time), p50 each, us.
fn split(samples: &[Sample]) -> [f64; 2] {
    let mut queue: Vec<f64> = samples.iter().map(|s| s.3).collect();
    let mut device: Vec<f64> = samples.iter().map(|s| s.1 - s.3 - s.2).collect();
    [pct(&mut queue, 0.5), pct(&mut device, 0.5)]
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("see-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), String> {
    let out = std::path::absolute(&a.out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&out);
    let config = Config {
        store: out.join("store"),
        key: std::path::absolute(&a.key).map_err(|e| e.to_string())?,
        size_scale: a.size_scale,
        predictor: PredictorKind::Static,
        history: out.join("history.sqlite"),
        audit: out.join("audit.jsonl"),
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|e: see_daemon::ConfigError| e.to_string())?,
        queue_depth: 1024,
        guest_idle_ms: 600_000,
        ..Config::default()
    };
    let spec = LaunchSpec {
        daemon_bin: a.daemon.clone(),
        // The signer is built beside the daemon (`cargo build --release`).
        signer_bin: Some(a.daemon.with_file_name("see-signer")),
        vmm_bin: a.vmm.clone(),
        kernel: a.kernel.clone(),
        config,
        memory_mib: 256,
        run_dir: out.join("run"),
        ready_timeout: Duration::from_secs(60),
        daemon_log_to_file: true,
        daemon_log_level: Some("warn".into()),
    };
    let see = Launched::start(&spec).map_err(|e| e.to_string())?;
    let url = Arc::new(see.address().to_owned());
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = |s: String| RunRequest {
        session: s,
        app: "shop".into(),
        kind: a.kind.clone(),
        attributes: Default::default(),
    };
    for i in 0..20 {
        one(&agent, &url, &body(format!("warm{i}")))?;
    }
    println!(
        "see-load: {} requests of {:?} per phase, {} concurrent clients in the throughput phase, {} repetitions; overhead = latency minus the guest's own time, us",
        a.requests, a.kind, a.clients, a.repeat
    );
    println!(
        "{:>3} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12} {:>12}",
        "rep",
        "phase",
        "client p50",
        "client p99",
        "daemon p50",
        "daemon p99",
        "req/s",
        "guest p50",
        "latency p50"
    );
    let mut all_seq = Vec::new();
    for rep in 1..=a.repeat {
        // Latency: one client, one request at a time.
        let start = Instant::now();
        let mut seq = Vec::with_capacity(a.requests);
        for i in 0..a.requests {
            seq.push(one(&agent, &url, &body(format!("r{rep}-{i}")))?);
        }
        let rps = a.requests as f64 / start.elapsed().as_secs_f64();
        print_row(rep, "serial", &seq, rps);
        all_seq.extend(seq);
        // Throughput: concurrent clients.
        let per = a.requests.div_ceil(a.clients);
        let start = Instant::now();
        let handles: Vec<_> = (0..a.clients)
            .map(|c| {
                let url = url.clone();
                let kind = a.kind.clone();
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    (0..per)
                        .map(|i| {
                            one(
                                &agent,
                                &url,
                                &RunRequest {
                                    session: format!("c{rep}-{c}-{i}"),
                                    app: "shop".into(),
                                    kind: kind.clone(),
                                    attributes: Default::default(),
                                },
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut conc = Vec::new();
        for h in handles {
            conc.extend(h.join().map_err(|_| "a client panicked")??);
        }
        let rps = conc.len() as f64 / start.elapsed().as_secs_f64();
        print_row(rep, "concurrent", &conc, rps);
    }
    let [c50, c99, d50, d99] = overheads(&all_seq);
    let [q50, v50] = split(&all_seq);
    println!(
        "serial, all repetitions ({} requests): overhead at the client p50 {c50:.0} us, p99 {c99:.0} us (aim: p99 < 500 us); inside the daemon p50 {d50:.0} us, p99 {d99:.0} us, of which planning and queue p50 {q50:.0} us and the device round trip (dispatch to the guest's completion, minus the guest's time) p50 {v50:.0} us",
        all_seq.len()
    );
    let (daemon, vmm) = see
        .stop(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if !daemon.success() || !vmm.success() {
        return Err(format!(
            "see-daemon ended with {daemon}, see-vmm with {vmm}"
        ));
    }
    Ok(())
}

fn print_row(rep: usize, phase: &str, samples: &[Sample], rps: f64) {
    let [c50, c99, d50, d99] = overheads(samples);
    let mut guest: Vec<f64> = samples.iter().map(|s| s.2).collect();
    let mut lat: Vec<f64> = samples.iter().map(|s| s.0).collect();
    println!(
        "{rep:>3} {phase:>10} {c50:>12.0} {c99:>12.0} {d50:>12.0} {d99:>12.0} {rps:>10.1} {:>12.0} {:>12.0}",
        pct(&mut guest, 0.5),
        pct(&mut lat, 0.5)
    );
}
