//! One mode's run in one repetition: an SEE and its daemon started for the predictor, the
//! repetition's held-out sessions replayed through the daemon's HTTP API one request at a time
//! (with the trace's think times), every request's measurements recorded, every task's result
//! checked, the daemon stopped (it flushes its history and audit log and stops the guest) and
//! its audit log verified.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::ProgressBar;
use see_daemon::{
    api::{ErrorBody, RunRequest, RunResponse, Stats},
    config::PredictorKind,
    launch::{LaunchSpec, Launched},
    Config,
};
use see_pto::{
    audit,
    history::History,
    metadata::ServiceCatalogue,
    online::{percentile, ModeSummary, WireIds},
    trace::{Session, Trace},
};

use crate::{
    check::{Expected, Tally},
    mode_name,
    records::Record,
    DemoError,
};

/// What every mode's run shares.
#[derive(Debug)]
pub struct Env {
    /// see-vmm.
    pub vmm: PathBuf,
    /// see-daemon.
    pub daemon: PathBuf,
    /// The guest image.
    pub kernel: PathBuf,
    /// The daemon's configuration but for the predictor and the per-mode files.
    pub base: Config,
    /// The sessions the predictors learn from (seeded into each mode's history).
    pub past: Trace,
    /// Longest think time taken from the trace.
    pub think_cap: Duration,
    /// The result every task must report.
    pub expected: Expected,
    /// The catalogue (scaled).
    pub catalogue: Arc<ServiceCatalogue>,
    /// The audit public key each mode's audit log must be signed with.
    pub audit_pub: PathBuf,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
}

/// One mode's results in one repetition.
#[derive(Debug, Clone)]
pub struct ModeRun {
    /// The repetition, from 1.
    pub rep: usize,
    /// The table row (guest latencies, the daemon's prefetch figures).
    pub summary: ModeSummary,
    /// Every request, in replay order.
    pub records: Vec<Record>,
    /// The daemon's figures at the end of the replay.
    pub stats: Stats,
    /// The history's prefetch outcomes: prefetches claimed, and never claimed.
    pub outcomes: (u64, u64),
    /// The audit log.
    pub audit_path: PathBuf,
    /// Records in it (verified).
    pub audit_records: u64,
    /// The tasks' reported results, checked against the host's.
    pub results: Tally,
}

impl ModeRun {
    /// The p50 of the host latencies, ms.
    pub fn host_p50_ms(&self) -> f64 {
        let mut l: Vec<u64> = self.records.iter().map(|r| r.host_ns).collect();
        l.sort_unstable();
        percentile(&l, 0.5) as f64 / 1e6
    }
}

/// A blocking HTTP client of the daemon's API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client of the daemon at `address` (`http://HOST:PORT`).
    pub fn new(address: &str) -> Result<Self, DemoError> {
        if !address.starts_with("http://") {
            return Err(DemoError::Service(format!(
                "the demo speaks HTTP over TCP, not {address}"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: address.trim_end_matches('/').to_owned(),
        })
    }

    /// Runs one request; the error names the status and the daemon's message.
    pub fn run(&self, request: &RunRequest) -> Result<RunResponse, DemoError> {
        let mut r = self
            .agent
            .post(format!("{}/v1/requests", self.base))
            .send_json(request)
            .map_err(|e| DemoError::Service(format!("POST /v1/requests: {e}")))?;
        let status = r.status().as_u16();
        if status == 200 {
            return r
                .body_mut()
                .read_json()
                .map_err(|e| DemoError::Service(format!("POST /v1/requests: bad body: {e}")));
        }
        let body: Option<ErrorBody> = r.body_mut().read_json().ok();
        Err(DemoError::Service(format!(
            "POST /v1/requests for {:?}: {status}: {}",
            request.kind,
            body.map_or_else(|| "no error body".into(), |b| format!("{b:?}"))
        )))
    }

    /// Ends a session.
    pub fn end_session(&self, session: &str) -> Result<(), DemoError> {
        let r = self
            .agent
            .delete(format!("{}/v1/sessions/{session}", self.base))
            .call()
            .map_err(|e| DemoError::Service(format!("DELETE /v1/sessions: {e}")))?;
        match r.status().as_u16() {
            204 | 404 => Ok(()),
            s => Err(DemoError::Service(format!(
                "DELETE /v1/sessions/{session}: {s}"
            ))),
        }
    }

    /// The daemon's figures.
    pub fn stats(&self) -> Result<Stats, DemoError> {
        self.agent
            .get(format!("{}/v1/stats", self.base))
            .call()
            .map_err(|e| DemoError::Service(format!("GET /v1/stats: {e}")))?
            .body_mut()
            .read_json()
            .map_err(|e| DemoError::Service(format!("GET /v1/stats: {e}")))
    }
}

fn pto(e: impl std::fmt::Display) -> DemoError {
    DemoError::Pto(e.to_string())
}

/// A fresh history for a mode, holding the sessions the predictors learn from.
fn seed_history(path: &Path, past: &Trace) -> Result<(), DemoError> {
    let _ = std::fs::remove_file(path);
    let mut h = History::open(path).map_err(pto)?;
    h.import_trace("past", past).map_err(pto)?;
    Ok(())
}

/// One repetition: its number, its held-out sessions, the oracle's future of them and the
/// directory of its runs' files.
#[derive(Debug)]
pub struct Rep<'a> {
    /// From 1.
    pub rep: usize,
    /// The sessions every mode replays.
    pub sessions: &'a [Session],
    /// The oracle's future (`setup::write_oracle`).
    pub oracle_trace: PathBuf,
    /// Where each mode's history, audit log and run directory go.
    pub dir: PathBuf,
}

/// Replays a repetition's sessions through a fresh SEE and daemon running `mode`.
pub fn run_mode(
    env: &Env,
    mode: PredictorKind,
    rep: &Rep<'_>,
    bar: &ProgressBar,
) -> Result<ModeRun, DemoError> {
    let name = mode_name(mode);
    let sessions = rep.sessions;
    let history = rep.dir.join(format!("history-{name}.sqlite"));
    seed_history(&history, &env.past)?;
    let audit_path = rep.dir.join(format!("audit-{name}.jsonl"));
    let _ = std::fs::remove_file(&audit_path);
    let mut config = env.base.clone();
    config.predictor = mode;
    config.history = history.clone();
    config.audit = audit_path.clone();
    if mode != PredictorKind::Learned {
        config.model = None;
    }
    config.oracle_trace = (mode == PredictorKind::Oracle).then(|| rep.oracle_trace.clone());
    let run_dir = rep.dir.join(format!("run-{name}"));
    let _ = std::fs::remove_dir_all(&run_dir);
    let spec = LaunchSpec {
        daemon_bin: env.daemon.clone(),
        // The signer is built beside the daemon (`cargo build --release`).
        signer_bin: Some(env.daemon.with_file_name("see-signer")),
        vmm_bin: env.vmm.clone(),
        kernel: env.kernel.clone(),
        config,
        memory_mib: env.memory_mib,
        run_dir,
        ready_timeout: Duration::from_secs(60),
        daemon_log_to_file: true,
        daemon_log_level: Some("warn".into()),
    };
    let see = Launched::start(&spec)?;
    let client = Client::new(see.address())?;
    let vocab = env.catalogue.vocabulary();
    let app = env
        .catalogue
        .requests
        .first()
        .map(|r| r.app.clone())
        .unwrap_or_default();
    let ids = WireIds::new(&env.catalogue);
    let mut records: Vec<Record> = Vec::new();
    let mut results = Tally::default();
    let mut traffic_seen = 0u64;
    for (i, s) in sessions.iter().enumerate() {
        let key = format!("s{}", i + 1);
        let mut prev_at: Option<i64> = None;
        let mut index = 0u32;
        for r in &s.requests {
            let Some(kind) = vocab
                .name(r.kind)
                .filter(|_| r.kind != see_pto::vocab::UNKNOWN)
            else {
                continue;
            };
            let think = match prev_at {
                Some(p) => Duration::from_millis((r.at_ms - p).max(0) as u64).min(env.think_cap),
                None => env.think_cap,
            };
            prev_at = Some(r.at_ms);
            std::thread::sleep(think);
            let app = env
                .catalogue
                .request(kind)
                .map_or_else(|| app.clone(), |t| t.app.clone());
            let sent = Instant::now();
            let response = client.run(&RunRequest {
                session: key.clone(),
                app,
                kind: kind.to_owned(),
                attributes: Default::default(),
            });
            let elapsed = sent.elapsed();
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    return Err(DemoError::Service(format!(
                        "{e}; console:\n{}",
                        see.console_tail(15)
                    )));
                }
            };
            let t = &response.timings;
            records.push(Record {
                catalogue: env.catalogue.name.clone(),
                mode: name.to_owned(),
                rep: rep.rep as u32,
                session: i as u32 + 1,
                request: index,
                kind: kind.to_owned(),
                host_ns: elapsed.as_nanos() as u64,
                guest_ns: (t.guest_us * 1e3) as u64,
                daemon_us: t.host_us,
                queue_us: t.queue_us,
                claim_us: t.claim_us,
                fetch_us: t.fetch_us,
                work_us: t.work_us,
                staged_hits: response.prefetch.staged_hits,
                demands: response.prefetch.demands,
                traffic_bytes: 0,
            });
            index += 1;
            let app_id = ids.app_of(kind).unwrap_or(0);
            let tasks: Vec<u64> = env
                .catalogue
                .request(kind)
                .map(|t| t.tasks.iter().map(|&t| WireIds::task(t)).collect())
                .unwrap_or_default();
            let reported: Vec<(u64, u64)> = response
                .tasks
                .iter()
                .map(|t| (t.task_id, u64::from_str_radix(&t.result, 16).unwrap_or(0)))
                .collect();
            let wrong = results.check(
                &env.expected,
                response.request_id,
                app_id,
                &tasks,
                &reported,
            )?;
            for w in &wrong {
                log::error!("{name}: wrong result: {w}");
            }
            bar.inc(1);
        }
        client.end_session(&key)?;
        // The session's traffic: what moved since the previous session ended.
        let traffic = client.stats()?.traffic_bytes;
        if let Some(last) = records.last_mut().filter(|r| r.session == i as u32 + 1) {
            last.traffic_bytes = traffic.saturating_sub(traffic_seen);
            traffic_seen = traffic;
        }
    }
    // Late reports (evictions, the last prefetches' signatures) before the figures.
    std::thread::sleep(Duration::from_millis(200));
    let stats = client.stats()?;
    if let Some(last) = records.last_mut() {
        last.traffic_bytes += stats.traffic_bytes.saturating_sub(traffic_seen);
    }
    let (daemon, vmm) = see.stop(Duration::from_secs(60))?;
    if !daemon.success() || !vmm.success() {
        return Err(DemoError::Service(format!(
            "{name}: see-daemon ended with {daemon}, see-vmm with {vmm}"
        )));
    }
    // The final prefetch outcomes (what the guest still held at the end is wasted) are in
    // the history once the daemon has stopped.
    let outcomes = History::open(&history)
        .and_then(|h| h.prefetch_summary(None))
        .map_err(pto)?;
    let audit_records = verify_audit(&audit_path, &env.audit_pub)?;
    let mut sorted: Vec<u64> = records.iter().map(|r| r.guest_ns).collect();
    sorted.sort_unstable();
    let ms = |q| percentile(&sorted, q) as f64 / 1e6;
    let claims = stats.staged_hits + stats.cache_hits + stats.misses;
    let summary = ModeSummary {
        mode: name.into(),
        requests: records.len() as u64,
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        hit_rate: if claims == 0 {
            0.0
        } else {
            (stats.staged_hits + stats.cache_hits) as f64 / claims as f64
        },
        precision: (outcomes.hits + outcomes.wasted > 0)
            .then(|| outcomes.hits as f64 / (outcomes.hits + outcomes.wasted) as f64),
        wasted_bytes: outcomes.wasted_bytes,
        demand_fetches: stats.demand_fetches,
        traffic_bytes: stats.traffic_bytes,
        prefetched_bytes: stats.prefetched_bytes,
        plan_us: stats.plan_us,
    };
    Ok(ModeRun {
        rep: rep.rep,
        summary,
        records,
        stats,
        outcomes: (outcomes.hits, outcomes.wasted),
        audit_path,
        audit_records,
        results,
    })
}

/// Checks an audit log: its chain, every checkpoint signed by the key in `public_key`, and
/// that the daemon closed it (a closing checkpoint at the end); returns its record count.
pub fn verify_audit(path: &Path, public_key: &Path) -> Result<u64, DemoError> {
    let keys = audit::TrustedKeys::none()
        .with_file(public_key)
        .map_err(|e| DemoError::Pto(e.to_string()))?;
    match audit::verify_file_anchored(path, &keys) {
        Ok(Ok(v)) => match v.require_closed() {
            Ok(()) => Ok(v.records),
            Err(unclosed) => Err(DemoError::Pto(format!("{}: {unclosed}", path.display()))),
        },
        Ok(Err(b)) => Err(DemoError::Pto(format!(
            "{}: audit log broken at {b}",
            path.display()
        ))),
        Err(e) => Err(DemoError::Pto(format!("{}: {e}", path.display()))),
    }
}
