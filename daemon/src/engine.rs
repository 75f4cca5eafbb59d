//! The PTO online: one thread that owns the orchestrator and the device handle.
//!
//! Every accepted request reaches it the moment it arrives ([`Input::Run`]): the orchestrator
//! plans at once (it sees the real-time stream and predicts from it), and the request waits in
//! a bounded queue until the SEE is free. The SEE serves one request at a time (its serve app
//! is single-threaded): the engine dispatches the next request when the guest completes the
//! previous one, then sends the prefetch orders the plan made (so they never queue ahead of
//! the request's own demand fetches in the device, unless `eager_prefetch`). In the `push`
//! mode the plan's push set (the request's own recorded resources) goes out first and the
//! request is dispatched once it is staged. Device events
//! (signatures, demands, the guest's reports and completions) come in as [`Input::Event`] and
//! feed the orchestrator, the history and the audit log.
//!
//! Invariants: every accepted request gets exactly one reply ([`Engine::respond`] is the only
//! place a reply is sent, and it takes the request out of the engine's books) and one history
//! result row; a guest report the orchestrator cannot place (an unknown id, impossible
//! timings) is counted in `bad_reports` and logged at a bounded rate, never fatal.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use log::{debug, error, info, warn};
use see_prefetch_backend::{
    BackendEvent, BackendHandle, Eviction, PrefetchOrder as Order, Request,
};
use see_pto::{
    history::RequestResult,
    metadata::ServiceCatalogue,
    online::{
        guest::check_timings, Completion, Orchestrator, Plan, PrefetchOrder, Report, WireIds,
    },
};
use virtio_prefetch_wire::{ReportKind, TaskTiming};

use crate::{
    api::{ErrorBody, PrefetchOutcome, RunRequest, RunResponse, TaskResult, Timings},
    guest,
    origin::OriginStore,
    service::{ApiError, Shared, State},
};

/// Why the SEE is gone when the VMM hung up.
const VMM_GONE: &str = "the VMM closed the vhost-user connection (the VM ended or was killed)";

/// Completion status the audit log records for a request the SEE never completed.
pub const STATUS_UNAVAILABLE: u32 = u32::MAX;

/// What the engine is told.
#[derive(Debug)]
pub enum Input {
    /// A request, accepted by the front door.
    Run(Job),
    /// A client ends a session.
    EndSession(String, tokio::sync::oneshot::Sender<bool>),
    /// Something the device reports.
    Event(BackendEvent),
    /// The vhost-user connection is gone (the VMM exited or was killed).
    BackendGone,
    /// Stop taking requests, finish the one in the guest, stop the guest.
    Shutdown,
}

/// One accepted request and where its answer goes.
#[derive(Debug)]
pub struct Job {
    /// The request.
    pub request: RunRequest,
    /// When the front door received it.
    pub arrived: Instant,
    /// Where the answer goes.
    pub reply: tokio::sync::oneshot::Sender<Result<RunResponse, ApiError>>,
}

/// A planned request waiting for the SEE.
#[derive(Debug)]
struct Pending {
    job: Job,
    plan: Plan,
    tasks: Vec<u64>,
    /// Its push set (the `push` mode) was sent: it is dispatched once that is staged.
    pushed: bool,
}

/// The request in the guest.
#[derive(Debug)]
struct Active {
    pending: Pending,
    dispatched: Instant,
    deadline: Instant,
}

/// What crossed into the guest, from the device's and the guest's events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wire {
    /// Prefetch orders not sent because the guest still held the resource.
    pub skipped: u64,
    /// Bundles delivered.
    pub bundles: u64,
}

struct SessionEntry {
    id: u64,
    last: Instant,
}

/// The engine's state (one per daemon).
pub struct Engine {
    orch: Orchestrator,
    backend: Arc<BackendHandle>,
    origin: Arc<OriginStore>,
    catalogue: Arc<ServiceCatalogue>,
    shared: Arc<Shared>,
    queue: VecDeque<Pending>,
    active: Option<Active>,
    sessions: HashMap<String, SessionEntry>,
    next_session: u64,
    /// Prefetches ordered and not yet staged.
    outstanding: u64,
    /// Resources in the guest's verified cache (staged or demanded, claimed or not) and not
    /// evicted or rejected since.
    in_guest: HashSet<u64>,
    wire: Wire,
    stopping: bool,
    request_timeout: Duration,
    session_idle: Duration,
    max_sessions: usize,
    settle: bool,
    eager_prefetch: bool,
    wasm_tasks: bool,
    last_expiry: Instant,
}

/// The engine's settings (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Longest wait for a request's completion.
    pub request_timeout: Duration,
    /// A session idle this long is ended.
    pub session_idle: Duration,
    /// Live sessions kept at most.
    pub max_sessions: usize,
    /// Wait for outstanding prefetches before each dispatch.
    pub settle: bool,
    /// Send prefetch orders at dispatch, not at completion.
    pub eager_prefetch: bool,
    /// Run the tasks as Wasm modules (`OP_RUN_WASM`), not as the guest's native tasks.
    pub wasm_tasks: bool,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Engine {
    /// An engine over a running orchestrator and device.
    pub fn new(
        orch: Orchestrator,
        backend: Arc<BackendHandle>,
        origin: Arc<OriginStore>,
        catalogue: Arc<ServiceCatalogue>,
        shared: Arc<Shared>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            orch,
            backend,
            origin,
            catalogue,
            shared,
            queue: VecDeque::new(),
            active: None,
            sessions: HashMap::new(),
            next_session: 1,
            outstanding: 0,
            in_guest: HashSet::new(),
            wire: Wire::default(),
            stopping: false,
            request_timeout: settings.request_timeout,
            session_idle: settings.session_idle,
            max_sessions: settings.max_sessions,
            settle: settings.settle,
            wasm_tasks: settings.wasm_tasks,
            eager_prefetch: settings.eager_prefetch,
            last_expiry: Instant::now(),
        }
    }

    /// Runs until shut down and idle, or until the input channel closes; then stops the
    /// guest, flushes the history and the audit log and returns.
    pub fn run(mut self, input: Receiver<Input>) {
        match self.orch.prime() {
            Ok(orders) => self.send(&orders),
            Err(e) => warn!("priming the oracle: {e}"),
        }
        loop {
            let wait = self
                .active
                .as_ref()
                .map(|a| a.deadline.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            match input.recv_timeout(wait) {
                Ok(Input::Run(job)) => self.accept(job),
                Ok(Input::EndSession(key, reply)) => {
                    let _ = reply.send(self.end_session(&key));
                }
                Ok(Input::Event(ev)) => self.on_event(ev),
                Ok(Input::BackendGone) => self.go_down(VMM_GONE),
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    if !self.stopping {
                        info!("shutting down: no new requests; finishing the one in the guest");
                    }
                    self.stopping = true;
                    self.shared.set_state(State::Stopping);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_deadline();
            self.expire_sessions();
            self.dispatch_next();
            if self.stopping && self.active.is_none() {
                break;
            }
        }
        while let Some(p) = self.queue.pop_front() {
            self.respond_error(
                p,
                ApiError::unavailable("the daemon is shutting down; retry on another SEE"),
            );
        }
        self.finish(&input);
    }

    fn send(&mut self, orders: &[PrefetchOrder]) {
        for o in orders {
            // The victims the orchestrator chose, evicted before the bundle that needs their
            // room (the guest handles requestq before stagingq).
            for &(app_id, resource_id) in &o.evict_first {
                if let Err(e) = self.backend.evict(Eviction {
                    app_id,
                    resource_id,
                }) {
                    warn!("evict of resource {resource_id} not sent: {e}");
                    return;
                }
            }
            // The orchestrator does not order again what the guest still holds unless its
            // mirror of the guest's store is wrong; a second copy would only replace the first.
            if self.in_guest.contains(&o.resource_id) {
                debug!(
                    "resource {} ordered again while the guest holds it: not sent",
                    o.resource_id
                );
                self.wire.skipped += 1;
                continue;
            }
            let order = Order {
                app_id: o.app_id,
                task_id: o.task_id,
                resource_id: o.resource_id,
            };
            if let Err(e) = self.backend.prefetch(order) {
                warn!("prefetch of resource {} not sent: {e}", o.resource_id);
                return;
            }
            self.outstanding += 1;
        }
    }

    fn session_id(&mut self, key: &str) -> u64 {
        if let Some(s) = self.sessions.get_mut(key) {
            s.last = Instant::now();
            return s.id;
        }
        if self.sessions.len() >= self.max_sessions {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                debug!(
                    "session {oldest:?} ended: more than {} live sessions",
                    self.max_sessions
                );
                self.end_session(&oldest);
            }
        }
        let id = self.next_session;
        self.next_session += 1;
        self.orch.name_session(id, key);
        self.sessions.insert(
            key.to_owned(),
            SessionEntry {
                id,
                last: Instant::now(),
            },
        );
        id
    }

    fn end_session(&mut self, key: &str) -> bool {
        let Some(s) = self.sessions.remove(key) else {
            return false;
        };
        match self.orch.end_session(s.id) {
            Ok(follow) => self.send(&follow.prefetch),
            Err(e) => warn!("ending session {key:?}: {e}"),
        }
        true
    }

    fn expire_sessions(&mut self) {
        if self.last_expiry.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_expiry = Instant::now();
        let idle: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last.elapsed() >= self.session_idle)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            debug!("session {key:?} ended: idle");
            self.end_session(&key);
        }
    }

    fn accept(&mut self, job: Job) {
        if let State::Down(reason) = self.shared.state() {
            self.shared.release();
            let _ = job.reply.send(Err(ApiError::unavailable(&reason)));
            return;
        }
        if self.stopping {
            self.shared.release();
            let _ = job
                .reply
                .send(Err(ApiError::unavailable("the daemon is shutting down")));
            return;
        }
        let session = self.session_id(&job.request.session);
        let started = Instant::now();
        // The request's attributes are its context: a context-aware predictor conditions on
        // them (one without context ignores them).
        let attributes: Vec<(&str, &str)> = job
            .request
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let plan = self
            .orch
            .on_request_with(session, &job.request.kind, now_us(), &attributes);
        self.shared
            .metrics
            .prediction
            .observe(started.elapsed().as_secs_f64());
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                error!("request of {:?} not planned: {e}", job.request.kind);
                self.shared.release();
                let _ = job.reply.send(Err(ApiError::internal(&e.to_string())));
                return;
            }
        };
        let tasks = match self.catalogue.request(&job.request.kind) {
            Some(r) => r.tasks.iter().map(|&t| WireIds::task(t)).collect(),
            None => Vec::new(),
        };
        self.queue.push_back(Pending {
            job,
            plan,
            tasks,
            pushed: false,
        });
        self.shared.metrics.queue_depth.set(self.queue.len() as i64);
    }

    fn dispatch_next(&mut self) {
        // While stopping, the queued requests are failed (503) rather than started.
        if self.active.is_some() || self.queue.is_empty() || self.stopping {
            return;
        }
        if matches!(self.shared.state(), State::Down(_)) {
            return;
        }
        // The push mode: the next request's push set goes out first, and the request waits until
        // it is staged (as `settle` waits for every prefetch), so that its claims find it.
        let mut pushing = false;
        if let Some(head) = self.queue.front_mut() {
            let push = std::mem::take(&mut head.plan.push);
            head.pushed |= !push.is_empty();
            pushing = head.pushed;
            self.send(&push);
        }
        if (self.settle || pushing) && self.outstanding > 0 {
            let waited = self.queue.front().map(|p| p.job.arrived.elapsed());
            if waited.is_some_and(|w| w < self.request_timeout / 2) {
                return;
            }
            warn!(
                "{} prefetches not staged in time: dispatching without settling",
                self.outstanding
            );
            self.outstanding = 0;
        }
        let Some(p) = self.queue.pop_front() else {
            return;
        };
        self.shared.metrics.queue_depth.set(self.queue.len() as i64);
        let d = &p.plan.dispatch;
        let request = Request {
            request_id: d.request_id,
            session_id: d.session,
            app_id: d.app_id,
            request_type: d.request_type,
            args: if self.wasm_tasks {
                guest::run_wasm_args(&self.catalogue, &p.tasks)
            } else {
                guest::run_args(&p.tasks)
            },
        };
        if let Err(e) = self.backend.dispatch(request) {
            self.active = Some(Active {
                pending: p,
                dispatched: Instant::now(),
                deadline: Instant::now(),
            });
            // The device's thread stops only when its VMM hangs up (or the daemon stops it),
            // and may not have finished stopping yet: name the VMM either way.
            self.go_down(&format!(
                "{VMM_GONE}: the device does not take requests ({e})"
            ));
            return;
        }
        if self.eager_prefetch {
            let orders = p.plan.prefetch.clone();
            self.send(&orders);
        }
        let now = Instant::now();
        self.active = Some(Active {
            pending: p,
            dispatched: now,
            deadline: now + self.request_timeout,
        });
    }

    fn check_deadline(&mut self) {
        let Some(a) = &self.active else { return };
        if Instant::now() < a.deadline {
            return;
        }
        let id = a.pending.plan.dispatch.request_id;
        self.go_down(&format!(
            "the guest did not complete request {id} within {:?}: the SEE is wedged",
            self.request_timeout
        ));
    }

    /// The SEE is gone: the request in the guest and every queued one fail with 503, and so
    /// will every later one.
    fn go_down(&mut self, reason: &str) {
        if !matches!(self.shared.state(), State::Down(_)) {
            error!("the SEE is unavailable: {reason}");
            self.shared.set_state(State::Down(reason.to_owned()));
        }
        if let Some(a) = self.active.take() {
            self.respond_error(a.pending, ApiError::unavailable(reason));
        }
        while let Some(p) = self.queue.pop_front() {
            self.respond_error(p, ApiError::unavailable(reason));
        }
        self.shared.metrics.queue_depth.set(0);
    }

    /// Answers a request that did not complete in the guest.
    fn respond_error(&mut self, p: Pending, err: ApiError) {
        let id = p.plan.dispatch.request_id;
        if let Err(e) = self.orch.abandon(id, STATUS_UNAVAILABLE) {
            warn!("request {id}: {e}");
        }
        let host_us = p.job.arrived.elapsed().as_micros() as u64;
        self.record_result(&p.plan.dispatch, err.status.as_u16(), None, host_us, None);
        self.shared.count_outcome(err.outcome(), None);
        self.shared.release();
        let _ = p.job.reply.send(Err(err.with_request(id)));
    }

    fn record_result(
        &mut self,
        dispatch: &see_pto::online::Dispatch,
        http_status: u16,
        guest_status: Option<u32>,
        host_us: u64,
        guest_us: Option<u64>,
    ) {
        let Some(row) = dispatch.row else {
            return;
        };
        if let Some(h) = self.orch.history_mut() {
            let r = RequestResult {
                request: row,
                http_status,
                guest_status,
                host_us,
                guest_us,
            };
            if let Err(e) = h.record_result(&r) {
                error!("history: result of request {}: {e}", dispatch.request_id);
            }
        }
    }

    fn on_event(&mut self, ev: BackendEvent) {
        let faults_before = self.orch.guest_faults().total();
        let fed = match ev {
            BackendEvent::Signed {
                resource_id,
                version,
                seq,
                epoch,
                statement_sha384,
            } => self
                .orch
                .on_signature(resource_id, version, seq, epoch, &statement_sha384),
            BackendEvent::Demand {
                app_id,
                task_id,
                resource_id,
                served,
            } => {
                if !served {
                    warn!("the store could not serve resource {resource_id} to app {app_id}");
                }
                self.orch.on_demand(app_id, task_id, resource_id, 0)
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
                // The guest's verified cache keeps what is claimed: only an eviction or a
                // rejection takes a resource out of it.
                match kind {
                    ReportKind::Reject => {
                        warn!("the guest rejected resource {resource_id}: {reason:?}");
                        self.in_guest.remove(&resource_id);
                    }
                    ReportKind::Evict => {
                        self.in_guest.remove(&resource_id);
                    }
                    ReportKind::DemandServed => {
                        self.in_guest.insert(resource_id);
                    }
                    ReportKind::ClaimHit | ReportKind::CacheHit | ReportKind::Miss => {}
                }
                if kind == ReportKind::ClaimHit {
                    self.shared.metrics.staged_hits.inc();
                }
                self.orch.on_report(&Report {
                    kind,
                    reason,
                    app_id,
                    task_id,
                    resource_id,
                    version,
                    latency_ns,
                })
            }
            BackendEvent::Complete {
                request_id,
                status,
                total_ns,
                tasks,
            } => {
                self.complete(request_id, status, total_ns, tasks);
                Ok(())
            }
            BackendEvent::Staged {
                demand_cookie,
                resource_id,
                ..
            } => {
                self.wire.bundles += 1;
                if demand_cookie == 0 {
                    self.outstanding = self.outstanding.saturating_sub(1);
                } else {
                    self.shared.metrics.demand_fetches.inc();
                }
                // Prefetched and demanded bundles alike enter the guest's cache.
                self.in_guest.insert(resource_id);
                Ok(())
            }
            BackendEvent::Hello { epoch, .. } => {
                info!("the guest's driver is ready (session epoch {epoch})");
                if !self.stopping && !matches!(self.shared.state(), State::Down(_)) {
                    self.shared.set_state(State::Ready);
                }
                Ok(())
            }
            BackendEvent::Reset => {
                if self.backend.is_running() {
                    info!("device reset: the guest's staged bundles are gone");
                    self.in_guest.clear();
                    self.outstanding = 0;
                } else {
                    self.go_down(VMM_GONE);
                }
                Ok(())
            }
            BackendEvent::Refused { queue, addr, len } => {
                warn!("refused a {queue:?} descriptor at {addr:#x} ({len} bytes)");
                Ok(())
            }
            BackendEvent::Malformed { error } => {
                warn!("malformed ctrlq message: {error}");
                Ok(())
            }
        };
        // The orchestrator counts (and logs) what the guest got wrong; an error is the PTO's
        // own (its history or audit log failed), and the next request is served regardless.
        let faults = self.orch.guest_faults().total() - faults_before;
        if faults > 0 {
            self.shared.metrics.bad_reports.inc_by(faults);
        }
        if let Err(e) = fed {
            error!("recording a device event: {e}");
        }
        self.shared
            .publish_stats(&self.orch, self.wire, self.origin.fetches().0);
    }

    fn complete(&mut self, request_id: u64, status: u32, total_ns: u64, tasks: Vec<TaskTiming>) {
        let matches = self
            .active
            .as_ref()
            .is_some_and(|a| a.pending.plan.dispatch.request_id == request_id);
        if !matches {
            // Counted; logged for the first few and then at powers of two, so a guest that
            // floods bogus completions cannot flood the log.
            let n = self.shared.metrics.bad_reports.inc() + 1;
            if n <= 8 || n.is_power_of_two() {
                warn!(
                    "completion of request {request_id}, which is not in the guest: ignored \
                     ({n} bad guest reports so far)"
                );
            }
            return;
        }
        let Some(a) = self.active.take() else { return };
        // The client is answered first; the PTO's bookkeeping (history, audit log, the next
        // prefetch orders) follows, off the request's path.
        let p = a.pending;
        let queue_us = us(a.dispatched.duration_since(p.job.arrived));
        let guest_us = total_ns as f64 / 1e3;
        let host_us = us(p.job.arrived.elapsed());
        let reply = if status == 0 {
            Ok(self.response(&p, &tasks, queue_us, host_us, guest_us))
        } else {
            Err(ApiError::guest_failed(request_id, status))
        };
        let (http, outcome) = if status == 0 {
            (200, "ok")
        } else {
            (502, "guest_failed")
        };
        // Counted before the answer goes out, so a client that has its answer finds it in
        // `/v1/stats` (the count is a lock and a few adds).
        self.shared
            .count_outcome(outcome, Some((host_us, guest_us)));
        self.shared.release();
        let _ = p.job.reply.send(reply);
        let completion = Completion {
            request_id,
            status,
            total_ns,
            tasks: tasks.clone(),
        };
        match self.orch.on_completion(&completion) {
            Ok(follow) => {
                if !self.eager_prefetch {
                    let orders = p.plan.prefetch.clone();
                    self.send(&orders);
                }
                self.send(&follow.prefetch);
            }
            Err(e) => warn!("completion of request {request_id}: {e}"),
        }
        // Timings the guest could not have measured stay out of the history (the orchestrator
        // counted them).
        let guest_us = check_timings(total_ns, &tasks)
            .is_ok()
            .then_some(total_ns / 1000);
        self.record_result(
            &p.plan.dispatch,
            http,
            Some(status),
            host_us as u64,
            guest_us,
        );
    }

    fn response(
        &self,
        p: &Pending,
        tasks: &[TaskTiming],
        queue_us: f64,
        host_us: f64,
        guest_us: f64,
    ) -> RunResponse {
        let name = |id: u64| {
            id.checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| self.catalogue.tasks.get(i))
                .map_or_else(|| format!("task-{id}"), |t| t.id.clone())
        };
        let ns = |n: u64| n as f64 / 1e3;
        let results: Vec<TaskResult> = tasks
            .iter()
            .map(|t| TaskResult {
                task: name(t.task_id),
                task_id: t.task_id,
                result: format!("{:016x}", t.result),
                claim_us: ns(t.claim_ns),
                fetch_us: ns(t.fetch_ns),
                work_us: ns(t.work_ns),
                staged_hits: t.hits,
                demands: t.misses,
            })
            .collect();
        let sum = |f: fn(&TaskTiming) -> u64| ns(tasks.iter().map(f).sum());
        RunResponse {
            request_id: p.plan.dispatch.request_id,
            session: p.job.request.session.clone(),
            app: p.job.request.app.clone(),
            kind: p.job.request.kind.clone(),
            timings: Timings {
                host_us,
                queue_us,
                guest_us,
                claim_us: sum(|t| t.claim_ns),
                fetch_us: sum(|t| t.fetch_ns),
                work_us: sum(|t| t.work_ns),
            },
            prefetch: PrefetchOutcome {
                staged_hits: tasks.iter().map(|t| t.hits).sum(),
                demands: tasks.iter().map(|t| t.misses).sum(),
            },
            tasks: results,
        }
    }

    /// Ends the run: the summary goes to the log, the history and the audit log are flushed,
    /// and the guest is told to stop (its VMM then exits 0).
    fn finish(mut self, input: &Receiver<Input>) {
        let alive = !matches!(self.shared.state(), State::Down(_));
        if alive {
            // Late reports (evictions, the last signatures) before the summary.
            let until = Instant::now() + Duration::from_millis(200);
            while let Ok(Input::Event(ev)) =
                input.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                self.on_event(ev);
            }
        }
        match self.orch.finish() {
            Ok(summary) => info!("{summary}"),
            Err(e) => error!("flushing the history and the audit log: {e}"),
        }
        self.shared
            .publish_stats(&self.orch, self.wire, self.origin.fetches().0);
        if alive {
            let stop = Request {
                request_id: u64::MAX - 1,
                session_id: 0,
                app_id: 1,
                request_type: 0,
                args: guest::stop_args(),
            };
            match self.backend.dispatch(stop) {
                Ok(()) => info!("told the guest to stop"),
                Err(e) => warn!("could not tell the guest to stop: {e}"),
            }
            // The guest stops and its VMM hangs up: wait for that (bounded).
            let until = Instant::now() + Duration::from_secs(5);
            while self.backend.is_running() && Instant::now() < until {
                let _ = input.recv_timeout(Duration::from_millis(50));
            }
        }
        self.shared.set_state(State::Down("stopped".into()));
        self.shared.engine_done.store(true, Ordering::Release);
    }
}

/// Forwards the device's events to the engine until the device stops or `stop` is set.
pub fn forward_events(backend: Arc<BackendHandle>, to: Sender<Input>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let input = match backend.next_event(Duration::from_millis(100)) {
            Some(ev) => Input::Event(ev),
            None if !backend.is_running() => Input::BackendGone,
            None => continue,
        };
        let gone = matches!(input, Input::BackendGone);
        if to.send(input).is_err() || gone {
            return;
        }
    }
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        e.body.clone()
    }
}
