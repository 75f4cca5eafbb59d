//! One mode's run: a fresh backend and VM, the workload replayed through the orchestrator one
//! request at a time, guest feedback fed back, every task's reported result checked against
//! the host's ([`crate::check`]), the audit log checked at the end.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::ProgressBar;
use p384::ecdsa::SigningKey;
use see_prefetch_backend::{
    store::DiskStore, Backend, BackendConfig, BackendEvent, BackendHandle, PrefetchOrder as Order,
    Request,
};
use see_pto::{
    audit::{self, AuditLog, FsyncPolicy},
    metadata::ServiceCatalogue,
    online::{
        origin::OriginModel, Completion, Mode, ModeSummary, Orchestrator, PrefetchOrder, Report,
        WireIds,
    },
    trace::Session,
};
use virtio_prefetch_wire::ReportKind as WireKind;

use crate::{
    check::{Expected, Tally},
    origin::OriginStore,
    vm::Vm,
    DemoError,
};

/// The serve app's "run" operation (images/see-kernel/src/prefetch/app.rs).
pub const OP_RUN: u32 = 1;
/// The serve app's "stop" operation.
pub const OP_STOP: u32 = 0xFFFF;

/// What every mode's run shares.
#[derive(Debug)]
pub struct Env {
    /// see-vmm.
    pub vmm: PathBuf,
    /// The guest image.
    pub kernel: PathBuf,
    /// The signing key (the image embeds its verifying key).
    pub key: SigningKey,
    /// The disk store with the catalogue's resources.
    pub store_dir: PathBuf,
    /// The guest's command line.
    pub cmdline: String,
    /// The catalogue (scaled).
    pub catalogue: Arc<ServiceCatalogue>,
    /// The origin.
    pub origin: OriginModel,
    /// Longest think time taken from the trace.
    pub think_cap: Duration,
    /// Longest wait for a request's completion.
    pub timeout: Duration,
    /// Where the audit logs go.
    pub out_dir: PathBuf,
    /// Before each request, wait until every ordered prefetch is in the guest (no late
    /// prefetch: deterministic hit rates for tests; the think time still applies).
    pub settle: bool,
    /// Send a request's prefetch orders right after dispatching it, not at its completion.
    pub eager_prefetch: bool,
    /// The result every task must report, from the store's bytes (shared by the modes).
    pub expected: Expected,
}

/// One mode's results.
#[derive(Debug, Clone)]
pub struct ModeRun {
    /// The orchestrator's summary row.
    pub summary: ModeSummary,
    /// Guest-measured request latencies, ns, in replay order.
    pub latencies_ns: Vec<u64>,
    /// The audit log.
    pub audit_path: PathBuf,
    /// Records in it (verified).
    pub audit_records: u64,
    /// Guest-measured time summed over the requests: claiming staged resources, demand
    /// fetching, working on the bytes (ns).
    pub claim_fetch_work_ns: [u64; 3],
    /// What actually crossed into the guest.
    pub wire: Wire,
    /// Bundles the backend delivered into the guest.
    pub bundles: u64,
    /// Origin fetches (prefetches and demands).
    pub origin_fetches: u64,
    /// The tasks' reported results, checked against the host's.
    pub results: Tally,
}

/// A completion, with each task entry's (task id, result) the orchestrator does not keep.
struct Done {
    completion: Completion,
    results: Vec<(u64, u64)>,
}

struct Live<'a> {
    backend: BackendHandle,
    vm: Vm,
    orch: Orchestrator,
    catalogue: &'a ServiceCatalogue,
    start: Instant,
    /// Prefetches ordered and not yet staged.
    outstanding: u64,
    /// Resources staged in the guest and not claimed or evicted there since.
    in_guest: std::collections::HashSet<u64>,
    /// What actually crossed into the guest.
    wire: Wire,
}

/// Bytes that actually crossed into the guest, from the backend's and the guest's events
/// (the orchestrator's metrics are its own bookkeeping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// Prefetched bundles delivered.
    pub prefetched: u64,
    /// Demand-fetched bundles delivered.
    pub demanded: u64,
    /// Staged bytes claimed (hits).
    pub claimed: u64,
    /// Prefetch orders not sent because the guest still held the resource.
    pub skipped: u64,
}

impl Wire {
    /// Prefetched bytes never claimed.
    pub fn unclaimed(&self) -> u64 {
        self.prefetched.saturating_sub(self.claimed)
    }
}

fn online(e: see_pto::online::OnlineError) -> DemoError {
    DemoError::Online(e.to_string())
}

impl Live<'_> {
    fn send(&mut self, orders: &[PrefetchOrder]) -> Result<(), DemoError> {
        for o in orders {
            // The orchestrator does not order again what the guest still holds (the wire has
            // no evict, so a resource its policy gave up on may still be staged there); this
            // is the check that the two views agree: a second copy would only replace the first.
            if self.in_guest.contains(&o.resource_id) {
                log::warn!(
                    "resource {} ordered again while the guest holds it: not sent",
                    o.resource_id
                );
                self.wire.skipped += 1;
                continue;
            }
            self.backend
                .prefetch(Order {
                    app_id: o.app_id,
                    task_id: o.task_id,
                    resource_id: o.resource_id,
                })
                .map_err(|e| DemoError::Backend(e.to_string()))?;
            self.outstanding += 1;
        }
        Ok(())
    }

    /// Feeds one backend event to the orchestrator; returns a completion.
    fn handle(&mut self, ev: BackendEvent) -> Result<Option<Done>, DemoError> {
        match ev {
            BackendEvent::Signed {
                resource_id,
                version,
                seq,
                epoch,
                statement_sha384,
            } => self
                .orch
                .on_signature(resource_id, version, seq, epoch, &statement_sha384)
                .map_err(online)?,
            BackendEvent::Demand {
                app_id,
                task_id,
                resource_id,
                served,
            } => {
                if !served {
                    log::warn!("the store could not serve resource {resource_id}");
                }
                self.orch
                    .on_demand(app_id, task_id, resource_id, 0)
                    .map_err(online)?
            }
            BackendEvent::Report {
                kind,
                reason,
                app_id,
                task_id,
                resource_id,
                version,
                latency_ns,
            } => {
                match kind {
                    WireKind::Reject => {
                        log::warn!("the guest rejected resource {resource_id}: {reason:?}");
                        self.in_guest.remove(&resource_id);
                    }
                    WireKind::ClaimHit => {
                        self.in_guest.remove(&resource_id);
                        let size = WireIds::resource_index(resource_id)
                            .and_then(|i| self.catalogue.resources.get(i))
                            .map_or(0, |r| r.size);
                        self.wire.claimed += size;
                    }
                    WireKind::Evict => {
                        self.in_guest.remove(&resource_id);
                    }
                    _ => {}
                }
                self.orch
                    .on_report(&Report {
                        kind,
                        reason,
                        app_id,
                        task_id,
                        resource_id,
                        version,
                        latency_ns,
                    })
                    .map_err(online)?
            }
            BackendEvent::Complete {
                request_id,
                status,
                total_ns,
                tasks,
            } => {
                let results = tasks.iter().map(|t| (t.task_id, t.result)).collect();
                let completion = Completion {
                    request_id,
                    status,
                    total_ns,
                    tasks,
                };
                return Ok(Some(Done {
                    completion,
                    results,
                }));
            }
            BackendEvent::Reset => {
                return Err(DemoError::Vm(format!(
                    "the device was reset (the VM ended?); console:\n{}",
                    self.vm.tail(20)
                )))
            }
            BackendEvent::Refused { queue, addr, len } => {
                log::warn!("backend refused a {queue:?} descriptor at {addr:#x} ({len} bytes)")
            }
            BackendEvent::Malformed { error } => log::warn!("malformed ctrlq message: {error}"),
            BackendEvent::Staged {
                demand_cookie,
                resource_id,
                bytes,
                ..
            } => {
                if demand_cookie == 0 {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.wire.prefetched += bytes;
                    self.in_guest.insert(resource_id);
                } else {
                    self.wire.demanded += bytes;
                }
            }
            BackendEvent::Hello { .. } => {}
        }
        Ok(None)
    }

    /// Handles events until `until`.
    fn pump_until(&mut self, until: Instant) -> Result<(), DemoError> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if let Some(ev) = self.backend.next_event(left) {
                if let Some(d) = self.handle(ev)? {
                    log::warn!(
                        "unexpected completion of request {}",
                        d.completion.request_id
                    );
                }
            }
        }
    }

    /// Handles events until every ordered prefetch is staged (or `timeout` passes).
    fn settle(&mut self, timeout: Duration) -> Result<(), DemoError> {
        let deadline = Instant::now() + timeout;
        while self.outstanding > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.vm.running() {
                return Err(DemoError::Vm(format!(
                    "{} prefetches not staged within {timeout:?}",
                    self.outstanding
                )));
            }
            if let Some(ev) = self.backend.next_event(left) {
                if let Some(d) = self.handle(ev)? {
                    log::warn!(
                        "unexpected completion of request {}",
                        d.completion.request_id
                    );
                }
            }
        }
        Ok(())
    }

    /// Handles events until request `id` completes (or `timeout` passes).
    fn wait_completion(&mut self, id: u64, timeout: Duration) -> Result<Done, DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.vm.running() {
                return Err(DemoError::Vm(format!(
                    "request {id} did not complete within {timeout:?} (VM running: {}); console:\n{}",
                    self.vm.running(),
                    self.vm.tail(20)
                )));
            }
            let Some(ev) = self
                .backend
                .next_event(left.min(Duration::from_millis(200)))
            else {
                continue;
            };
            if let Some(d) = self.handle(ev)? {
                if d.completion.request_id == id {
                    return Ok(d);
                }
                log::warn!(
                    "completion of request {} while waiting for {id}",
                    d.completion.request_id
                );
            }
        }
    }

    fn dispatch(&self, request: Request) -> Result<(), DemoError> {
        self.backend
            .dispatch(request)
            .map_err(|e| DemoError::Backend(e.to_string()))
    }
}

/// The serve app's arguments: `op` (u32 LE), 4 reserved bytes, then the task ids (u64 LE).
pub fn args(op: u32, tasks: &[u64]) -> Vec<u8> {
    let mut a = Vec::with_capacity(8 + 8 * tasks.len());
    a.extend_from_slice(&op.to_le_bytes());
    a.extend_from_slice(&[0; 4]);
    for t in tasks {
        a.extend_from_slice(&t.to_le_bytes());
    }
    a
}

/// Replays `sessions` in `mode` through `orch` on a fresh backend and VM.
pub fn run_mode(
    env: &Env,
    mode: Mode,
    orch: Orchestrator,
    sessions: &[Session],
    bar: &ProgressBar,
) -> Result<ModeRun, DemoError> {
    let audit_path = env.out_dir.join(format!("audit-{mode}.jsonl"));
    let _ = std::fs::remove_file(&audit_path);
    let log = AuditLog::open(&audit_path, FsyncPolicy::default())
        .map_err(|e| DemoError::Online(e.to_string()))?;
    // Every request, task execution and prefetch outcome of this mode goes into SQLite too.
    let history_path = env.out_dir.join(format!("history-{mode}.sqlite"));
    let _ = std::fs::remove_file(&history_path);
    let history = see_pto::history::History::open(&history_path)
        .map_err(|e| DemoError::Online(format!("{}: {e}", history_path.display())))?;
    let orch = orch
        .with_audit(log)
        .with_history(history, &format!("demo-{mode}"));
    let sock_dir = tempfile::tempdir().map_err(|e| DemoError::Io(format!("tempdir: {e}")))?;
    let socket = sock_dir.path().join("prefetch.sock");
    let disk = DiskStore::open(&env.store_dir).map_err(|e| DemoError::Io(e.to_string()))?;
    let store = Arc::new(OriginStore::new(disk, env.origin));
    let backend = Backend::spawn(BackendConfig::new(&socket, store.clone(), env.key.clone()))
        .map_err(|e| DemoError::Backend(e.to_string()))?;
    let mut vm = Vm::boot(&env.vmm, &env.kernel, &socket, &env.cmdline)?;
    vm.wait_line("see: prefetch device ready", Duration::from_secs(60))?;
    let mut live = Live {
        backend,
        vm,
        orch,
        catalogue: &env.catalogue,
        start: Instant::now(),
        outstanding: 0,
        in_guest: Default::default(),
        wire: Wire::default(),
    };
    let primed = live.orch.prime().map_err(online)?;
    live.send(&primed)?;
    let vocab = env.catalogue.vocabulary();
    let mut latencies = Vec::new();
    let mut split = [0u64; 3];
    let mut results = Tally::default();
    for (i, s) in sessions.iter().enumerate() {
        let session = i as u64 + 1;
        let mut prev_at: Option<i64> = None;
        for r in &s.requests {
            // setup::load_sessions leaves types outside the catalogue out; never send one.
            let Some(name) = vocab
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
            live.pump_until(Instant::now() + think)?;
            if env.settle {
                live.settle(env.timeout)?;
            }
            let now_us = live.start.elapsed().as_micros() as u64;
            let plan = live
                .orch
                .on_request(session, name, now_us)
                .map_err(online)?;
            // Evictions are bookkeeping: the wire has no host-to-guest evict (the guest
            // evicts on its own).
            let tasks: Vec<u64> = live
                .catalogue
                .request(name)
                .ok_or_else(|| DemoError::Online(format!("unknown request type {name}")))?
                .tasks
                .iter()
                .map(|&t| WireIds::task(t))
                .collect();
            let d = &plan.dispatch;
            live.dispatch(Request {
                request_id: d.request_id,
                session_id: d.session,
                app_id: d.app_id,
                request_type: d.request_type,
                args: args(OP_RUN, &tasks),
            })?;
            // The backend serves one fetch at a time: speculative orders sent now would queue
            // ahead of this request's own demand fetches, so they go out when it completes
            // (unless --eager-prefetch).
            if env.eager_prefetch {
                live.send(&plan.prefetch)?;
            }
            let done = live.wait_completion(d.request_id, env.timeout)?;
            if !env.eager_prefetch {
                live.send(&plan.prefetch)?;
            }
            let wrong =
                results.check(&env.expected, d.request_id, d.app_id, &tasks, &done.results)?;
            for w in &wrong {
                log::error!("{mode}: wrong result: {w}");
            }
            let c = done.completion;
            if c.status != 0 {
                return Err(DemoError::Vm(format!(
                    "request {} ({name}) failed in the guest with status {}",
                    d.request_id, c.status
                )));
            }
            latencies.push(c.total_ns);
            for t in &c.tasks {
                split[0] += t.claim_ns;
                split[1] += t.fetch_ns;
                split[2] += t.work_ns;
            }
            let follow = live.orch.on_completion(&c).map_err(online)?;
            live.send(&follow.prefetch)?;
            bar.inc(1);
        }
        let follow = live.orch.end_session(session).map_err(online)?;
        live.send(&follow.prefetch)?;
    }
    // Late reports (evictions, the last prefetches' signatures) before the summary.
    live.pump_until(Instant::now() + Duration::from_millis(200))?;
    let stop_id = u64::MAX - 1;
    live.dispatch(Request {
        request_id: stop_id,
        session_id: 0,
        app_id: 1,
        request_type: OP_STOP,
        args: args(OP_STOP, &[]),
    })?;
    let Live {
        backend,
        vm,
        mut orch,
        wire,
        ..
    } = live;
    let code = vm.finish(Duration::from_secs(30))?;
    let stats = backend.stats();
    backend.shutdown();
    if code != 0 {
        return Err(DemoError::Vm(format!(
            "the VM ended with exit code {code} after mode {mode}"
        )));
    }
    let summary = orch.finish().map_err(online)?;
    drop(orch);
    let audit_records = verify_audit(&audit_path)?;
    Ok(ModeRun {
        summary,
        latencies_ns: latencies,
        claim_fetch_work_ns: split,
        wire,
        audit_path,
        audit_records,
        bundles: stats.bundles,
        origin_fetches: store.fetches().0,
        results,
    })
}

/// Checks an audit log's chain; returns its record count.
pub fn verify_audit(path: &Path) -> Result<u64, DemoError> {
    match audit::verify(path) {
        Ok(Ok(v)) => Ok(v.records),
        Ok(Err(b)) => Err(DemoError::Online(format!(
            "{}: audit chain broken at {b}",
            path.display()
        ))),
        Err(e) => Err(DemoError::Online(format!("{}: {e}", path.display()))),
    }
}
