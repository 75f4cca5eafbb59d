//! The orchestrator: predicts on every request, plans prefetches through the policy, and takes
//! the guest's feedback into the history, the audit log and the metrics.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    sync::Arc,
    time::Instant,
};

use super::{
    guest::{check_timings, GuestFault, GuestFaults},
    policy::{Admit, GuestStore, Staged, Want},
    Completion, Dispatch, Eviction, FollowUp, Metrics, Mode, ModeSummary, OnlineError, Plan,
    Policy, PrefetchOrder, Report, Staging, WireIds,
};
use virtio_prefetch_wire::{RejectReason, ReportKind};

use crate::{
    audit::{AuditEvent, AuditLog},
    context::{AttrValues, Attributes, Features},
    history::{History, Outcome, PrefetchOutcome, RequestRow, SessionRow, TaskExecution},
    metadata::ServiceCatalogue,
    nn,
    predict::{
        observe_sessions, Ppm, Predictor, Reactive, SessionContext, SessionState, StaticGraph,
    },
    trace::Trace,
    vocab::Vocabulary,
};

#[derive(Debug, Default)]
struct Live {
    ctx: SessionContext,
    state: SessionState,
    row: Option<SessionRow>,
    /// When its first and its last request arrived, ms.
    start_ms: i64,
    prev_ms: Option<i64>,
    /// What its last request predicted: (request type, probability), likeliest first.
    predicted: Vec<(String, f32)>,
}

#[derive(Debug)]
struct InFlight {
    row: Option<RequestRow>,
    at_us: u64,
    /// Wants (with the session they are for) that the request itself claims: staged again
    /// once it completes.
    deferred: Vec<(u64, Want)>,
    /// The request type's name.
    name: String,
    /// Catalogue indices of its tasks.
    tasks: Vec<usize>,
    /// (task, resource) catalogue indices the guest claimed (or was served on demand) for it,
    /// in claim order, each resource once: what the `push` mode records.
    used: Vec<(usize, usize)>,
}

/// The session id staging for a session not yet seen is filed under.
pub const NEXT_SESSION: u64 = u64::MAX;

/// The online orchestrator (one per VM).
pub struct Orchestrator {
    catalogue: Arc<ServiceCatalogue>,
    vocab: Vocabulary,
    ids: WireIds,
    mode: Mode,
    predictor: Box<dyn Predictor>,
    future: VecDeque<(u64, String)>,
    policy: Policy,
    staging: Staging,
    /// Resources the policy gave up on (stale) that the guest still holds: the orchestrator
    /// does not send the wire's Evict (yet), so their fate is the guest's (a claim, an eviction or a
    /// rejection it reports, or still held at the end of the run).
    given_up: HashMap<usize, Staged>,
    /// Resources a newer bundle pushes out of the guest's store, until the guest reports the
    /// eviction (or a claim that came first).
    evicting: HashMap<usize, Staged>,
    /// The mirror of the guest's verified cache: what it holds, least recently used first.
    store: GuestStore,
    /// Resources the guest holds that were used already (claimed since they arrived, or
    /// demand-fetched): never counted as wasted when they leave.
    used: HashSet<usize>,
    /// The app each resource in the mirror was sent or demanded for (for the Evict).
    apps: HashMap<usize, u32>,
    sessions: HashMap<u64, Live>,
    inflight: HashMap<u64, InFlight>,
    history: Option<(History, String)>,
    audit: Option<AuditLog>,
    metrics: Metrics,
    next_request: u64,
    clock: u64,
    oracle_misses: u64,
    /// How often each request type opened a session: what a new session starts with.
    starts: HashMap<String, u64>,
    /// History keys of sessions named before their first request.
    session_keys: HashMap<u64, String>,
    /// The `push` mode's record: per request type, the (task, resource) catalogue indices the
    /// last request of that type to complete claimed, in claim order.
    recorded: HashMap<String, Vec<(usize, usize)>>,
    /// Guest reports that could not be true, counted.
    guest_faults: GuestFaults,
    /// The attribute schema of a replayed trace ([`Orchestrator::on_request_replayed`]).
    trace_attributes: Attributes,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("mode", &self.mode)
            .field("predictor", &self.predictor.name())
            .field("policy", &self.policy)
            .field("staged_bytes", &self.staging.bytes())
            .finish_non_exhaustive()
    }
}

/// The predictor for `mode`, trained on `past` (sessions over the catalogue's request types);
/// `model` is the checkpoint of the learned mode (mixed with the count model it records,
/// counted over `past`).
pub fn predictor_for(
    mode: Mode,
    catalogue: &ServiceCatalogue,
    past: &Trace,
    model: Option<&Path>,
) -> Result<Box<dyn Predictor>, OnlineError> {
    let vocab = Arc::new(catalogue.vocabulary());
    let sessions = past.sessions_in(&vocab);
    Ok(match mode {
        Mode::ReactiveNocache | Mode::Reactive | Mode::Push | Mode::Oracle => {
            Box::new(Reactive::new(vocab))
        }
        Mode::Static => Box::new(StaticGraph::new(vocab, catalogue)),
        Mode::Markov => {
            let mut m = Ppm::markov1(vocab);
            observe_sessions(&mut m, &sessions);
            Box::new(m)
        }
        Mode::Ppm => {
            let mut m = Ppm::new(vocab, 4);
            observe_sessions(&mut m, &sessions);
            Box::new(m)
        }
        Mode::Learned => {
            let path = model.ok_or(OnlineError::NoCheckpoint)?;
            let side = nn::read_sidecar(path).map_err(OnlineError::Model)?;
            let sessions = past.sessions_in(&side.vocabulary);
            Box::new(
                nn::load_hybrid(path, &sessions, &past.attributes).map_err(OnlineError::Model)?,
            )
        }
    })
}

impl Orchestrator {
    /// An orchestrator in `mode` serving `predictor` (ignored by the modes that do not predict).
    pub fn new(
        catalogue: Arc<ServiceCatalogue>,
        mode: Mode,
        predictor: Box<dyn Predictor>,
        policy: Policy,
    ) -> Result<Self, OnlineError> {
        policy.validate().map_err(OnlineError::Policy)?;
        Ok(Self {
            vocab: catalogue.vocabulary(),
            ids: WireIds::new(&catalogue),
            catalogue,
            mode,
            predictor,
            future: VecDeque::new(),
            policy,
            staging: Staging::default(),
            given_up: HashMap::new(),
            evicting: HashMap::new(),
            store: GuestStore::default(),
            used: HashSet::new(),
            apps: HashMap::new(),
            sessions: HashMap::new(),
            inflight: HashMap::new(),
            history: None,
            audit: None,
            metrics: Metrics::default(),
            next_request: 1,
            clock: 0,
            oracle_misses: 0,
            starts: HashMap::new(),
            session_keys: HashMap::new(),
            recorded: HashMap::new(),
            guest_faults: GuestFaults::default(),
            trace_attributes: Attributes::default(),
        })
    }

    /// The oracle: knows that the requests will arrive as `future` (session, request type).
    pub fn oracle(
        catalogue: Arc<ServiceCatalogue>,
        policy: Policy,
        future: impl IntoIterator<Item = (u64, String)>,
    ) -> Result<Self, OnlineError> {
        let vocab = Arc::new(catalogue.vocabulary());
        let mut o = Self::new(
            catalogue,
            Mode::Oracle,
            Box::new(Reactive::new(vocab)),
            policy,
        )?;
        o.future = future.into_iter().collect();
        Ok(o)
    }

    /// Records requests, task executions and prefetch outcomes in `history` under `source`.
    pub fn with_history(mut self, history: History, source: &str) -> Self {
        self.history = Some((history, source.into()));
        self
    }

    /// Audits every dispatch, prefetch, demand fetch, claim report and completion in `log`.
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The counters so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The staging area as the PTO sees it.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// The mirror of the guest's verified cache.
    pub fn guest_store(&self) -> &GuestStore {
        &self.store
    }

    /// The wire ids of the catalogue.
    pub fn ids(&self) -> &WireIds {
        &self.ids
    }

    /// The history, when the orchestrator records into one.
    pub fn history_mut(&mut self) -> Option<&mut History> {
        self.history.as_mut().map(|(h, _)| h)
    }

    /// Files `session` under `key` in the history (instead of `live-<session>`); call it
    /// before the session's first request.
    pub fn name_session(&mut self, session: u64, key: &str) {
        self.session_keys.insert(session, key.to_owned());
    }

    /// Request `request_id` will never complete (the SEE is gone): it is counted as failed
    /// and audited as a completion with `status`, with no latency.
    pub fn abandon(&mut self, request_id: u64, status: u32) -> Result<(), OnlineError> {
        self.inflight
            .remove(&request_id)
            .ok_or(OnlineError::Unknown {
                what: "request",
                id: request_id,
            })?;
        self.metrics.failed += 1;
        self.audit(AuditEvent::Completion {
            request: request_id,
            status,
            total_ns: 0,
        })
    }

    /// The `push` mode's record for request type `name`: (task, resource) wire ids, in the order
    /// the last completed request of that type claimed them; None before one completed.
    pub fn recorded(&self, name: &str) -> Option<Vec<(u64, u64)>> {
        self.recorded.get(name).map(|v| {
            v.iter()
                .map(|&(t, r)| (WireIds::task(t), WireIds::resource(r)))
                .collect()
        })
    }

    /// Guest reports ignored because they could not be true, by kind.
    pub fn guest_faults(&self) -> GuestFaults {
        self.guest_faults
    }

    /// Requests whose arrival the oracle did not foresee (0 on a faithful replay).
    pub fn oracle_misses(&self) -> u64 {
        self.oracle_misses
    }

    fn audit(&mut self, e: AuditEvent) -> Result<(), OnlineError> {
        if let Some(log) = &mut self.audit {
            log.append(&e)?;
        }
        Ok(())
    }

    fn record_outcome(
        &mut self,
        session: Option<u64>,
        resource: usize,
        outcome: Outcome,
    ) -> Result<(), OnlineError> {
        let Some((h, _)) = &mut self.history else {
            return Ok(());
        };
        let r = &self.catalogue.resources[resource];
        let row = session
            .and_then(|s| self.sessions.get(&s))
            .and_then(|l| l.row);
        h.record_prefetch(&PrefetchOutcome {
            session: row,
            request: None,
            predictor: self.predictor.name().into(),
            resource: r.id.clone(),
            version: r.version,
            outcome,
            bytes: r.size,
            probability: None,
            predicted_us: None,
            staged_us: None,
            resolved_us: None,
            guest_reported: true,
        })?;
        Ok(())
    }

    /// Prefetched resources that will never be claimed: counted and recorded as wasted (unless
    /// the guest used them already: a prefetch claimed once was useful).
    fn waste(&mut self, gone: Vec<Staged>) -> Result<(), OnlineError> {
        for s in gone {
            if self.used.contains(&s.resource) {
                continue;
            }
            self.metrics.wasted += 1;
            self.metrics.wasted_bytes += s.bytes;
            self.record_outcome(Some(s.session), s.resource, Outcome::Wasted)?;
        }
        Ok(())
    }

    /// The policy stops counting `gone` against its budget. The guest keeps what it was sent
    /// (the orchestrator sends no Evict), so they are wasted only if the guest never claims them.
    fn give_up(&mut self, gone: Vec<Staged>, evict: &mut Vec<Eviction>) {
        for s in gone {
            evict.push(Eviction {
                resource_id: WireIds::resource(s.resource),
                bytes: s.bytes,
            });
            self.given_up.insert(s.resource, s);
        }
    }

    /// The resources `name` needs, as wants with `probability`, in claim order.
    fn wants_of(&self, name: &str, probability: f32, seen: &mut HashSet<usize>) -> Vec<Want> {
        let Some(req) = self.catalogue.request(name) else {
            return Vec::new();
        };
        let app = self.ids.app_of(name).unwrap_or(0);
        let mut out = Vec::new();
        for &t in &req.tasks {
            for &r in &self.catalogue.tasks[t].resources {
                if seen.insert(r) {
                    let res = &self.catalogue.resources[r];
                    out.push(Want {
                        resource: r,
                        task: t,
                        app,
                        bytes: res.size,
                        version: res.version,
                        probability,
                        for_request: name.into(),
                    });
                }
            }
        }
        out
    }

    /// Stages `wants` for `session`; returns the orders and appends what was displaced.
    fn admit_all(
        &mut self,
        wants: &[Want],
        session: u64,
        request: u64,
        keep: &HashSet<usize>,
        evict: &mut Vec<Eviction>,
    ) -> Result<Vec<PrefetchOrder>, OnlineError> {
        let mut orders = Vec::new();
        for w in wants {
            if !self.staging.contains(w.resource) {
                if self.given_up.remove(&w.resource).is_some() {
                    // The guest still holds the copy sent before: counted again, not sent.
                    self.staging.readopt(w, session, self.clock);
                    self.metrics.readopted += 1;
                    continue;
                }
                if self.evicting.contains_key(&w.resource) {
                    // Not before the guest says it is gone: a copy sent now could meet the old
                    // one still there.
                    self.metrics.skipped_budget += 1;
                    continue;
                }
                if self.store.contains(w.resource) {
                    // Still in the guest's cache (claimed or demanded before): wanted again,
                    // not sent again.
                    self.staging.readopt(w, session, self.clock);
                    self.metrics.readopted += 1;
                    continue;
                }
            }
            match self.staging.admit(
                w,
                session,
                keep,
                self.clock,
                self.policy.budget_bytes,
                &self.store,
            ) {
                Admit::Refreshed => {}
                Admit::Skipped => self.metrics.skipped_budget += 1,
                Admit::Ordered {
                    pushed_out,
                    displaced,
                } => {
                    for s in displaced {
                        evict.push(Eviction {
                            resource_id: WireIds::resource(s.resource),
                            bytes: s.bytes,
                        });
                        self.evicting.insert(s.resource, s);
                    }
                    let mut evict_first = Vec::new();
                    for r in pushed_out {
                        self.store.leave(r);
                        evict_first.push((
                            self.apps.get(&r).copied().unwrap_or(w.app),
                            WireIds::resource(r),
                        ));
                        if let Some(s) = self.given_up.remove(&r) {
                            self.evicting.insert(r, s);
                        }
                    }
                    self.store.arrive(w.resource, w.bytes);
                    self.apps.insert(w.resource, w.app);
                    self.used.remove(&w.resource);
                    self.metrics.prefetched += 1;
                    self.metrics.prefetched_bytes += w.bytes;
                    let order = PrefetchOrder {
                        app_id: w.app,
                        task_id: WireIds::task(w.task),
                        resource_id: WireIds::resource(w.resource),
                        version: w.version,
                        bytes: w.bytes,
                        probability: w.probability,
                        for_request: w.for_request.clone(),
                        evict_first,
                    };
                    self.audit(AuditEvent::Prefetch {
                        session,
                        request,
                        app: order.app_id,
                        task: order.task_id,
                        resource: order.resource_id,
                        version: order.version,
                        bytes: order.bytes,
                        probability_ppm: (w.probability.clamp(0.0, 1.0) * 1e6) as u32,
                    })?;
                    orders.push(order);
                }
            }
        }
        Ok(orders)
    }

    /// Before the first request: the oracle stages what the first request of its future needs
    /// (so that its hit rate is 100%); the other modes stage nothing.
    pub fn prime(&mut self) -> Result<Vec<PrefetchOrder>, OnlineError> {
        let Some((session, name)) = self.future.front().cloned() else {
            return Ok(Vec::new());
        };
        let wants = self.wants_of(&name, 1.0, &mut HashSet::new());
        let keep = wants.iter().map(|w| w.resource).collect();
        self.admit_all(&wants, session, 0, &keep, &mut Vec::new())
    }

    /// A request of `request_type` arrived for `session` at `now_us`: returns what to evict,
    /// the request to dispatch and what to prefetch for the session's predicted next requests.
    /// The request carries no attributes (its time features are still read).
    pub fn on_request(
        &mut self,
        session: u64,
        request_type: &str,
        now_us: u64,
    ) -> Result<Plan, OnlineError> {
        self.on_request_with(session, request_type, now_us, &[])
    }

    /// [`Orchestrator::on_request`] for a request with `attributes` (name, value pairs, as
    /// the API's request body carries them): the predictor reads them with the request's time
    /// features. Names and values the predictor does not know read as unknown.
    pub fn on_request_with(
        &mut self,
        session: u64,
        request_type: &str,
        now_us: u64,
        attributes: &[(&str, &str)],
    ) -> Result<Plan, OnlineError> {
        let attrs = self
            .predictor
            .attributes()
            .map(|a| a.lookup_all(attributes.iter().copied()))
            .unwrap_or_default();
        self.timed_plan(session, request_type, now_us, attrs)
    }

    /// [`Orchestrator::on_request`] for a request of a replayed trace, whose attribute ids
    /// refer to the schema given by [`Orchestrator::with_trace_attributes`].
    pub fn on_request_replayed(
        &mut self,
        session: u64,
        request_type: &str,
        now_us: u64,
        attrs: &AttrValues,
    ) -> Result<Plan, OnlineError> {
        let attrs = match self.predictor.attributes() {
            Some(a) if *a == self.trace_attributes => *attrs,
            Some(a) => self.trace_attributes.translate(attrs, a),
            None => AttrValues::default(),
        };
        self.timed_plan(session, request_type, now_us, attrs)
    }

    fn timed_plan(
        &mut self,
        session: u64,
        request_type: &str,
        now_us: u64,
        attrs: AttrValues,
    ) -> Result<Plan, OnlineError> {
        let start = Instant::now();
        let plan = self.plan(session, request_type, now_us, attrs);
        self.metrics.plan_ns += start.elapsed().as_nanos() as u64;
        plan
    }

    fn plan(
        &mut self,
        session: u64,
        request_type: &str,
        now_us: u64,
        attrs: AttrValues,
    ) -> Result<Plan, OnlineError> {
        let req = self
            .catalogue
            .request(request_type)
            .ok_or_else(|| OnlineError::UnknownRequest(request_type.into()))?;
        let app_id = self.ids.app_of(request_type).unwrap_or(0);
        let type_id = self.vocab.get(request_type).unwrap_or(0);
        let current: HashSet<usize> = req
            .tasks
            .iter()
            .flat_map(|&t| self.catalogue.tasks[t].resources.iter().copied())
            .collect();
        let tasks = req.tasks.clone();
        self.clock += 1;
        let request_id = self.next_request;
        self.next_request += 1;

        let now_ms = i64::try_from(now_us / 1000).unwrap_or(i64::MAX);
        let mut live = match self.sessions.remove(&session) {
            Some(l) => l,
            None => {
                *self.starts.entry(request_type.to_owned()).or_default() += 1;
                Live {
                    start_ms: now_ms,
                    ..Live::default()
                }
            }
        };
        let kind = self.predictor.vocabulary().id_or_unknown(request_type);
        self.predictor.observe(&live.ctx, kind);
        let features = Features::of(live.start_ms, live.prev_ms, now_ms, attrs);
        live.prev_ms = Some(now_ms);
        live.ctx.push_with(kind, features);
        let mut row = None;
        if let Some((h, source)) = &mut self.history {
            let sid = match live.row {
                Some(s) => s,
                None => {
                    let key = self
                        .session_keys
                        .remove(&session)
                        .unwrap_or_else(|| format!("live-{session}"));
                    h.begin_session(source, &key, None)?
                }
            };
            live.row = Some(sid);
            row = Some(h.record_request(sid, request_type, (now_us / 1000) as i64)?);
        }
        let predictions: Vec<(u64, String, f32)> = match self.mode {
            Mode::ReactiveNocache | Mode::Reactive | Mode::Push => Vec::new(),
            Mode::Oracle => {
                match self.future.pop_front() {
                    Some((s, n)) if s == session && n == request_type => {}
                    other => {
                        self.oracle_misses += 1;
                        log::warn!("oracle: expected {other:?}, got ({session}, {request_type})");
                    }
                }
                self.future
                    .iter()
                    .take(1)
                    .map(|(s, n)| (*s, n.clone(), 1.0))
                    .collect()
            }
            _ => {
                let vocab = self.predictor.vocabulary().clone();
                self.predictor
                    .predict_session(&mut live.state, &live.ctx, self.policy.top_k)
                    .into_iter()
                    .filter(|p| p.probability >= self.policy.threshold)
                    .filter_map(|p| Some((session, vocab.name(p.kind)?.to_owned(), p.probability)))
                    .collect()
            }
        };
        live.predicted = predictions
            .iter()
            .map(|(_, n, p)| (n.clone(), *p))
            .collect();
        self.sessions.insert(session, live);

        let mut seen = HashSet::new();
        let mut by_session: Vec<(u64, Vec<Want>)> = Vec::new();
        for (s, name, p) in &predictions {
            by_session.push((*s, self.wants_of(name, *p, &mut seen)));
        }
        let mut keep: HashSet<usize> = seen.clone();
        keep.extend(current.iter().copied());
        let pushed = self.push_wants(request_type, app_id);
        keep.extend(pushed.iter().map(|w| w.resource));
        let mut evict = Vec::new();
        let stale = self
            .staging
            .evict_stale(session, &keep, self.clock, self.policy.stale_after);
        self.give_up(stale, &mut evict);

        // Audited in the order the backend acts: evict, dispatch, prefetch.
        self.audit(AuditEvent::Dispatch {
            session,
            request: request_id,
            request_type: request_type.into(),
        })?;
        let push = self.admit_all(&pushed, session, request_id, &keep, &mut evict)?;
        let mut prefetch = Vec::new();
        let mut deferred = Vec::new();
        for (s, wants) in by_session {
            let (later, now): (Vec<Want>, Vec<Want>) = wants
                .into_iter()
                .partition(|w| current.contains(&w.resource));
            prefetch.extend(self.admit_all(&now, s, request_id, &keep, &mut evict)?);
            deferred.extend(later.into_iter().map(|w| (s, w)));
        }
        self.inflight.insert(
            request_id,
            InFlight {
                row,
                at_us: now_us,
                deferred,
                name: request_type.into(),
                tasks,
                used: Vec::new(),
            },
        );
        Ok(Plan {
            dispatch: Dispatch {
                request_id,
                session,
                app_id,
                request_type: type_id,
                name: request_type.into(),
                row,
            },
            push,
            prefetch,
            evict,
        })
    }

    /// In the `push` mode, the resources recorded for `name` (staged at dispatch, certain to
    /// be claimed); nothing in the other modes or before a request of `name` completed.
    fn push_wants(&self, name: &str, app: u32) -> Vec<Want> {
        if self.mode != Mode::Push {
            return Vec::new();
        }
        let Some(set) = self.recorded.get(name) else {
            return Vec::new();
        };
        set.iter()
            .map(|&(task, resource)| {
                let res = &self.catalogue.resources[resource];
                Want {
                    resource,
                    task,
                    app,
                    bytes: res.size,
                    version: res.version,
                    probability: 1.0,
                    for_request: name.into(),
                }
            })
            .collect()
    }

    /// The `push` mode records what the guest claimed for the requests in flight whose tasks
    /// include `task_id` (the one request the guest runs, in the service).
    fn record_use(&mut self, task_id: u64, resource: usize) {
        if self.mode != Mode::Push {
            return;
        }
        let Some(task) = usize::try_from(task_id.wrapping_sub(1)).ok() else {
            return;
        };
        for f in self.inflight.values_mut() {
            if f.tasks.contains(&task) && !f.used.iter().any(|&(_, r)| r == resource) {
                f.used.push((task, resource));
            }
        }
    }

    fn resource_index(&self, id: u64) -> Result<usize, OnlineError> {
        WireIds::resource_index(id)
            .filter(|&i| i < self.catalogue.resources.len())
            .ok_or(OnlineError::Unknown {
                what: "resource",
                id,
            })
    }

    /// The guest demand-fetches resource `resource_id` after a miss.
    pub fn on_demand(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
        cookie: u32,
    ) -> Result<(), OnlineError> {
        let Ok(i) = self.resource_index(resource_id) else {
            self.guest_faults
                .record(GuestFault::UnknownResource(resource_id));
            return Ok(());
        };
        let r = &self.catalogue.resources[i];
        let (bytes, version) = (r.size, r.version);
        self.metrics.demand_fetches += 1;
        self.metrics.demand_bytes += bytes;
        self.audit(AuditEvent::DemandFetch {
            app: app_id,
            task: task_id,
            resource: resource_id,
            version,
            bytes,
            cookie,
        })
    }

    /// The backend signed a bundle (or a manifest, `resource_id` 0): audits it.
    pub fn on_signature(
        &mut self,
        resource_id: u64,
        version: u64,
        seq: u64,
        epoch: u64,
        statement_sha384: &[u8],
    ) -> Result<(), OnlineError> {
        self.audit(AuditEvent::Signature {
            resource: resource_id,
            version,
            seq,
            epoch,
            statement_sha384: crate::audit::hex(statement_sha384),
        })
    }

    /// The record of a prefetch of resource `i` that the guest just claimed or dropped.
    fn take_sent(&mut self, i: usize) -> Option<Staged> {
        self.staging
            .remove(i)
            .or_else(|| self.given_up.remove(&i))
            .or_else(|| self.evicting.remove(&i))
    }

    /// A claim, miss, eviction, rejection or served demand reported by the guest. A report
    /// about a resource the PTO does not have is counted ([`Orchestrator::guest_faults`]) and
    /// ignored; an error is the PTO's own (the history or the audit log failed).
    pub fn on_report(&mut self, r: &Report) -> Result<(), OnlineError> {
        let Ok(i) = self.resource_index(r.resource_id) else {
            self.guest_faults
                .record(GuestFault::UnknownResource(r.resource_id));
            return Ok(());
        };
        self.audit(AuditEvent::Claim {
            report: r.kind,
            reason: r.reason.map_or(0, RejectReason::raw),
            app: r.app_id,
            task: r.task_id,
            resource: r.resource_id,
            version: r.version,
            latency_ns: r.latency_ns,
        })?;
        // The guest's cache keeps what is claimed: a claim refreshes the mirror's recency, only
        // an eviction or a rejection takes a resource out.
        match r.kind {
            ReportKind::ClaimHit => {
                self.metrics.hits += 1;
                self.claimed(i);
                self.record_use(r.task_id, i);
                if let Some(s) = self.take_sent(i) {
                    self.metrics.useful += 1;
                    self.metrics.useful_bytes += s.bytes;
                    self.record_outcome(Some(s.session), i, Outcome::Hit)?;
                }
            }
            ReportKind::CacheHit => {
                // Served from the cache: no transfer, and the prefetch (if any) that brought it
                // was counted useful at its first claim.
                self.metrics.cache_hits += 1;
                self.claimed(i);
                self.record_use(r.task_id, i);
                let _ = self.take_sent(i);
            }
            ReportKind::Miss => {
                self.metrics.misses += 1;
                self.record_outcome(None, i, Outcome::Miss)?;
            }
            ReportKind::Evict | ReportKind::Reject => {
                if r.kind == ReportKind::Reject {
                    self.metrics.rejected += 1;
                }
                self.store.leave(i);
                if let Some(s) = self.take_sent(i) {
                    self.waste(vec![s])?;
                }
                self.used.remove(&i);
            }
            ReportKind::DemandServed => {
                // The demanded bundle is in the guest's cache now, most recently used (a guest
                // without a cache dropped it once handed over).
                self.record_use(r.task_id, i);
                if self.mode.guest_cache() {
                    let bytes = self.catalogue.resources[i].size;
                    if !self.store.touch(i) {
                        self.store.arrive(i, bytes);
                    }
                    self.apps.insert(i, r.app_id);
                    self.used.insert(i);
                } else {
                    self.store.leave(i);
                }
            }
        }
        Ok(())
    }

    /// Resource `i` was claimed: the guest's cache keeps it, most recently used (a guest
    /// without a cache drops it).
    fn claimed(&mut self, i: usize) {
        if self.mode.guest_cache() {
            self.store.touch(i);
            self.used.insert(i);
        } else {
            self.store.leave(i);
        }
    }

    /// A request completed: records it and returns the prefetches that waited for its claims
    /// (and what they displaced). A completion of a request not in flight is counted
    /// ([`Orchestrator::guest_faults`]) and ignored; one with impossible timings is counted and
    /// completes its request, but its timings reach neither the metrics nor the history.
    pub fn on_completion(&mut self, c: &Completion) -> Result<FollowUp, OnlineError> {
        let start = Instant::now();
        let follow = self.complete(c);
        self.metrics.plan_ns += start.elapsed().as_nanos() as u64;
        follow
    }

    fn complete(&mut self, c: &Completion) -> Result<FollowUp, OnlineError> {
        let Some(f) = self.inflight.remove(&c.request_id) else {
            self.guest_faults
                .record(GuestFault::UnknownRequest(c.request_id));
            return Ok(FollowUp::default());
        };
        let plausible = match check_timings(c.total_ns, &c.tasks) {
            Ok(()) => true,
            Err(why) => {
                self.guest_faults.record(GuestFault::BadTiming {
                    request: c.request_id,
                    why,
                });
                false
            }
        };
        if plausible {
            self.metrics.latencies_ns.push(c.total_ns);
        }
        if c.status != 0 {
            self.metrics.failed += 1;
        } else if self.mode == Mode::Push && !f.used.is_empty() {
            self.recorded.insert(f.name.clone(), f.used.clone());
        }
        self.audit(AuditEvent::Completion {
            request: c.request_id,
            status: c.status,
            total_ns: c.total_ns,
        })?;
        if let (Some((h, _)), Some(row), true) = (&mut self.history, f.row, plausible) {
            let mut started = f.at_us;
            for t in &c.tasks {
                let Some(task) = usize::try_from(t.task_id.wrapping_sub(1))
                    .ok()
                    .and_then(|i| self.catalogue.tasks.get(i))
                else {
                    continue;
                };
                let duration_us = (t.claim_ns + t.fetch_ns + t.work_ns) / 1000;
                h.record_task(&TaskExecution {
                    request: row,
                    task: task.id.clone(),
                    started_us: started,
                    duration_us,
                    wait_us: (t.claim_ns + t.fetch_ns) / 1000,
                    staged: t.misses == 0,
                    bytes: task
                        .resources
                        .iter()
                        .map(|&r| self.catalogue.resources[r].size)
                        .sum(),
                    ok: c.status == 0,
                    guest_reported: true,
                })?;
                started += duration_us;
            }
        }
        let keep: HashSet<usize> = f.deferred.iter().map(|(_, w)| w.resource).collect();
        let mut evict = Vec::new();
        let mut prefetch = Vec::new();
        for (session, w) in &f.deferred {
            let w = std::slice::from_ref(w);
            prefetch.extend(self.admit_all(w, *session, c.request_id, &keep, &mut evict)?);
        }
        Ok(FollowUp { prefetch, evict })
    }

    /// What the last request of live `session` predicted (request type, probability), the
    /// likeliest first, after the policy's top-k and threshold: for logs and metrics.
    pub fn predictions(&self, session: u64) -> Option<&[(String, f32)]> {
        self.sessions.get(&session).map(|l| l.predicted.as_slice())
    }

    /// The attribute schema of the trace whose requests [`Orchestrator::on_request_replayed`]
    /// receives.
    pub fn with_trace_attributes(mut self, schema: &Attributes) -> Self {
        self.trace_attributes = schema.clone();
        self
    }

    /// Counts how the sessions of `past` started: what [`Orchestrator::end_session`] stages
    /// for the next session (the live sessions' starts are counted as they come).
    pub fn with_starts(mut self, past: &Trace) -> Self {
        for s in &past.sessions {
            if let Some(name) = s.requests.first().and_then(|r| past.vocab.name(r.kind)) {
                *self.starts.entry(name.to_owned()).or_default() += 1;
            }
        }
        self
    }

    /// A session ended: forgets its context and predictor state (what it staged ages out
    /// through the staleness rule) and, in the predicting modes, stages the likeliest first
    /// requests of the next session (from how sessions started so far), within the policy.
    pub fn end_session(&mut self, session: u64) -> Result<FollowUp, OnlineError> {
        self.sessions.remove(&session);
        if !self.mode.predicts() {
            return Ok(FollowUp::default());
        }
        let total: u64 = self.starts.values().sum();
        let mut starts: Vec<(&String, u64)> = self.starts.iter().map(|(n, c)| (n, *c)).collect();
        starts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let picks: Vec<(String, f32)> = starts
            .into_iter()
            .take(self.policy.top_k)
            .map(|(n, c)| (n.clone(), c as f32 / total.max(1) as f32))
            .filter(|(_, p)| *p >= self.policy.threshold)
            .collect();
        let mut seen = HashSet::new();
        let mut wants = Vec::new();
        for (name, p) in &picks {
            wants.extend(self.wants_of(name, *p, &mut seen));
        }
        let mut evict = Vec::new();
        let prefetch = self.admit_all(&wants, NEXT_SESSION, 0, &seen, &mut evict)?;
        Ok(FollowUp { prefetch, evict })
    }

    /// Ends the run: whatever the guest still holds unclaimed was wasted, and the audit log is
    /// closed (its closing checkpoint signed). Returns the summary row.
    pub fn finish(&mut self) -> Result<ModeSummary, OnlineError> {
        let mut left = self.staging.drain();
        left.extend(self.given_up.drain().map(|(_, s)| s));
        left.extend(self.evicting.drain().map(|(_, s)| s));
        left.sort_by_key(|s| s.resource);
        self.waste(left)?;
        if let Some(log) = &mut self.audit {
            log.close()?;
        }
        Ok(self.metrics.summary(self.mode.name()))
    }
}
