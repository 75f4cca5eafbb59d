//! Wasm tasks in the serve app: `OP_RUN_WASM` and the compiled-module cache.
//!
//! A Wasm task's resources are the ones `see.allow` gives (app, task): exactly one of kind code
//! (its module, see-task's ABI) and data ones (its inputs, in order). A request claims every
//! resource of every task at once (`Driver::claim_each`, the missing ones demanded together),
//! then runs each task's module in a fresh instance under the request's fuel and memory limit
//! ([`see_task::Runtime::run`]); a task's claim of one of the request's resources is served
//! from the claimed bytes, a claim of anything else goes through the claim API as the
//! request's app and task (so the registry refuses another app's resources).
//!
//! Compile ahead: while the app waits for its next request ([`Wasm::prepare`], from the idle
//! loop), code resources that are staged and verified for the apps of `see.allow` are peeked at
//! (`Driver::peek`: the claim's access rule, but no claim) and compiled, so the request that
//! claims the module only instantiates it (`compiled=1`). The compiled cache is keyed by (app,
//! resource, version, content SHA-384): a newer version or other bytes never find an old
//! module, and an entry whose resource left the verified cache (the host's Evict, LRU, a newer
//! version) is dropped at the next idle pass. A module that fails to compile is remembered as
//! failed (and not compiled again) for the same key.
//!
//! Memory: wasmi keeps compiled functions in its engine until the engine is dropped, not when
//! a module is. So a [`Runtime`] (engine) takes at most [`ENGINE_BUDGET`] module bytes; past
//! that the next compile starts a new engine and the old one is freed once the modules
//! compiled into it are gone from the cache.
//!
//! A request uses a compiled module only for the verified bytes its claim returned (same
//! version and digest), whether or not the idle pass has dropped the entries of evicted
//! resources yet.
//!
//! Lines (unless `see.quiet=1`): `see: wasm-compiled app=A res=R ver=V len=N ns=T ok=0|1` per
//! compile ahead, `see: wasm-dropped app=A res=R ver=V` per entry dropped, `see: wasm task=T app=A module=R compiled=0|1 compile_ns=.. run_ns=.. fuel=..
//! status=S result=X` per task run; always `see: wasm-failed request=Q task=T status=S error=..`
//! for a failed task and `see: wasm-bad-request ...` for malformed arguments.

use alloc::{
    collections::BTreeMap,
    string::{String, ToString},
    vec::Vec,
};

use see_abi::serve::{
    parse_wasm_tasks, WasmTask, STATUS_BAD_MODULE, STATUS_MEMORY_LIMIT, STATUS_OUT_OF_FUEL,
    STATUS_TASK_FAILED, STATUS_TASK_TRAPPED,
};
use see_guest_driver::{
    ClaimError, Content, DriverState, IncomingRequest, RequestCompletion, Resource, Source,
    TaskTiming,
};
use see_task::{ClaimRefusal, Compiled, Limits, Runtime, TaskError, TaskHost};

use super::app::{Drv, TaskResources};
use crate::time;

/// Compiled modules kept (least recently used dropped first).
const CACHE_ENTRIES: usize = 32;
/// Module bytes one engine compiles before the next compile starts a new engine (wasmi frees
/// compiled code with its engine only); with wasmi's code a few times the module's size this
/// keeps the compiled code to tens of MiB of the heap (about 100 MiB in the default 128 MiB VM).
const ENGINE_BUDGET: usize = 16 << 20;
/// `see.allow` entries looked at per idle pass, so a pass stays short however long the registry.
const SCAN_PER_PASS: usize = 32;

/// What identifies a compiled module: the verified bytes it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    app: u32,
    resource: u64,
    version: u64,
    digest: [u8; 48],
}

impl Key {
    fn of(r: &Resource) -> Self {
        Self {
            app: r.app_id,
            resource: r.resource_id,
            version: r.version,
            digest: r.tree_root,
        }
    }
}

/// A cache entry: the module ready to instantiate (with the engine it was compiled into), or
/// why it does not compile.
#[derive(Clone)]
enum Slot {
    Ready(Runtime, Compiled),
    Failed(u32, String),
}

struct Entry {
    slot: Slot,
    stamp: u64,
}

/// The serve app's Wasm state: the engine and the compiled-module cache.
pub struct Wasm {
    runtime: Runtime,
    engine_bytes: usize,
    cache: BTreeMap<Key, Entry>,
    stamp: u64,
    /// Every (app, task, resource) of `see.allow`: the candidates for compiling ahead.
    allow: Vec<(u32, u64, u64)>,
    next: usize,
    /// `see.allow` entries looked at since the last complete round.
    scanned: usize,
    /// Every key compiled (ahead or for a request) whose resource is still staged, with a
    /// task the registry gives it to: not compiled ahead again, even once the cache dropped
    /// it (no compile loop when more code is staged than the cache holds); a key leaves when
    /// its resource leaves the verified cache.
    known: BTreeMap<Key, u64>,
    /// [`cache_generation`] when a complete round found nothing to do.
    settled: Option<[u64; 7]>,
}

/// Why a request could not be served and the VM must end (as `OP_RUN`'s claim failures).
pub struct Fatal {
    /// What failed.
    pub what: String,
    /// The driver's error.
    pub error: ClaimError,
}

impl Wasm {
    /// Empty, with `see.allow`'s entries as the candidates for compiling ahead.
    pub fn new(allow: &[(u32, u64, u64)]) -> Self {
        Self {
            runtime: Runtime::new(),
            engine_bytes: 0,
            cache: BTreeMap::new(),
            stamp: 0,
            allow: allow.to_vec(),
            next: 0,
            scanned: 0,
            known: BTreeMap::new(),
            settled: None,
        }
    }

    /// The cached slot for `r`'s bytes, marked most recently used.
    fn lookup(&mut self, r: &Resource) -> Option<Slot> {
        self.stamp += 1;
        let e = self.cache.get_mut(&Key::of(r))?;
        e.stamp = self.stamp;
        Some(e.slot.clone())
    }

    /// Compiles `r` and caches the outcome: the slot and how long the compile took.
    fn compile(&mut self, r: &Resource, task: u64) -> (Slot, u64) {
        if self.engine_bytes.saturating_add(r.content.len()) > ENGINE_BUDGET
            && self.engine_bytes > 0
        {
            self.runtime = Runtime::new();
            self.engine_bytes = 0;
        }
        let t0 = time::monotonic_ns();
        let outcome = self.runtime.compile(&r.content);
        let ns = time::monotonic_ns().saturating_sub(t0);
        self.engine_bytes = self.engine_bytes.saturating_add(r.content.len());
        let slot = match outcome {
            Ok(compiled) => Slot::Ready(self.runtime.clone(), compiled),
            Err(e) => Slot::Failed(status_of(&e), e.to_string()),
        };
        if self.cache.len() >= CACHE_ENTRIES {
            if let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, e)| e.stamp)
                .map(|(k, _)| *k)
            {
                self.cache.remove(&oldest);
            }
        }
        self.stamp += 1;
        self.cache.insert(
            Key::of(r),
            Entry {
                slot: slot.clone(),
                stamp: self.stamp,
            },
        );
        self.known.insert(Key::of(r), task);
        (slot, ns)
    }

    /// Idle work, between requests: drops compiled modules whose resource left the verified
    /// cache (or changed), then compiles at most one staged, verified code resource not
    /// compiled yet. True if it compiled one (the caller checks for a request before sleeping).
    pub fn prepare(&mut self, driver: &mut Drv, quiet: bool) -> bool {
        if driver.state() != DriverState::Ready {
            return false;
        }
        // Taken before the pass: a bundle that arrives during it changes it, and the next
        // pass looks again.
        let generation = cache_generation(driver);
        if self.settled == Some(generation) {
            return false;
        }
        let stale: Vec<Key> = self
            .known
            .iter()
            .filter(|(k, &task)| {
                driver
                    .peek(k.app, task, k.resource)
                    .is_none_or(|r| Key::of(&r) != **k)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.known.remove(&k);
            self.cache.remove(&k);
            if !quiet {
                println!(
                    "see: wasm-dropped app={} res={} ver={}",
                    k.app, k.resource, k.version
                );
            }
        }
        for _ in 0..SCAN_PER_PASS.min(self.allow.len()) {
            let (app, task, res) = self.allow[self.next];
            self.next = (self.next + 1) % self.allow.len();
            self.scanned += 1;
            let Some(r) = driver.peek(app, task, res) else {
                continue;
            };
            if !r.is_code() || self.known.contains_key(&Key::of(&r)) {
                continue;
            }
            let (slot, ns) = self.compile(&r, task);
            if !quiet {
                println!(
                    "see: wasm-compiled app={app} res={res} ver={} len={} ns={ns} ok={}",
                    r.version,
                    r.content.len(),
                    u8::from(matches!(slot, Slot::Ready(..)))
                );
            }
            return true;
        }
        if self.scanned >= self.allow.len() {
            // A whole round over see.allow found nothing to compile: nothing to do until the
            // verified cache changes.
            self.settled = Some(generation);
            self.scanned = 0;
        }
        false
    }

    /// Serves an `OP_RUN_WASM` request whose words are `words`: the completion to send, or
    /// the failure that ends the VM (a broken device, as for `OP_RUN`).
    pub fn serve(
        &mut self,
        driver: &mut Drv,
        request: &IncomingRequest,
        words: &[u64],
        index: &TaskResources,
        quiet: bool,
        start: u64,
    ) -> Result<RequestCompletion, Fatal> {
        let app = request.app_id;
        let mut completion = RequestCompletion {
            request_id: request.request_id,
            status: 0,
            total_ns: 0,
            tasks: Vec::new(),
        };
        let tasks: Vec<WasmTask> = match parse_wasm_tasks(words) {
            Ok(tasks) => tasks.collect(),
            Err(e) => {
                println!("see: wasm-bad-request request={} {e}", request.request_id);
                completion.status = STATUS_TASK_FAILED;
                completion.total_ns = time::monotonic_ns().saturating_sub(start);
                return Ok(completion);
            }
        };
        // Every (task, resource) of the request, claimed at once as OP_RUN does.
        let wanted: Vec<(u64, u64)> = tasks
            .iter()
            .flat_map(|t| index.of(app, t.task_id).map(move |r| (t.task_id, r)))
            .collect();
        let mut arrived: Vec<Option<(u64, Resource)>> = wanted.iter().map(|_| None).collect();
        let mut idle_since = time::monotonic_ns();
        let batch = driver.claim_each(app, &wanted, 0, |i, resource| {
            let now = time::monotonic_ns();
            if let Some(slot) = arrived.get_mut(i) {
                *slot = Some((now.saturating_sub(idle_since), resource));
            }
            idle_since = now;
        });
        if let Err(e) = batch {
            let (task, res) = wanted
                .iter()
                .zip(&arrived)
                .find(|(_, a)| a.is_none())
                .map_or((0, 0), |(&w, _)| w);
            if matches!(e, ClaimError::DeviceBroken(_) | ClaimError::Timeout) {
                return Err(Fatal {
                    what: alloc::format!("app={app} task={task} res={res}"),
                    error: e,
                });
            }
            // A resource refused (access, a rejected bundle): this request fails, the app
            // serves the next one.
            println!(
                "see: wasm-failed request={} task={task} status={STATUS_TASK_FAILED} error=resource {res} could not be claimed: {e}",
                request.request_id
            );
            completion.status = STATUS_TASK_FAILED;
            completion.total_ns = time::monotonic_ns().saturating_sub(start);
            return Ok(completion);
        }
        let claimed: Vec<(u64, Content)> = arrived
            .iter()
            .flatten()
            .map(|(_, r)| (r.resource_id, r.content.clone()))
            .collect();
        for task in &tasks {
            let mine: Vec<&(u64, Resource)> = wanted
                .iter()
                .zip(&arrived)
                .filter(|((t, _), _)| *t == task.task_id)
                .filter_map(|(_, a)| a.as_ref())
                .collect();
            let (timing, failure) = self.run_task(driver, app, task, &mine, &claimed, quiet);
            completion.tasks.push(timing);
            if let Some((status, why)) = failure {
                // The first failing task's status is the request's; the tasks after it are
                // not run.
                println!(
                    "see: wasm-failed request={} task={} status={status} error={why}",
                    request.request_id, task.task_id
                );
                completion.status = status;
                break;
            }
        }
        completion.total_ns = time::monotonic_ns().saturating_sub(start);
        Ok(completion)
    }
}

impl Wasm {
    /// Runs one task over its arrived resources: its timing, and its failure (status and
    /// reason) if it failed.
    fn run_task(
        &mut self,
        driver: &mut Drv,
        app: u32,
        task: &WasmTask,
        mine: &[&(u64, Resource)],
        claimed: &[(u64, Content)],
        quiet: bool,
    ) -> (TaskTiming, Option<(u32, String)>) {
        let mut timing = TaskTiming {
            task_id: task.task_id,
            ..Default::default()
        };
        for (wait_ns, r) in mine {
            // A staged hit (first claim of a prefetched resource) or a cache hit moved no bytes.
            if matches!(r.source, Source::Prefetched | Source::Cached) {
                timing.hits += 1;
                timing.claim_ns += wait_ns;
            } else {
                timing.misses += 1;
                timing.fetch_ns += wait_ns;
            }
        }
        let mut code = mine.iter().map(|(_, r)| r).filter(|r| r.is_code());
        let (Some(module), None) = (code.next(), code.next()) else {
            let n = mine.iter().filter(|(_, r)| r.is_code()).count();
            return (
                timing,
                Some((
                    STATUS_BAD_MODULE,
                    alloc::format!(
                        "the task has {n} code resources in see.allow; a Wasm task needs exactly one"
                    ),
                )),
            );
        };
        let (slot, compiled, compile_ns) = match self.lookup(module) {
            Some(slot) => (slot, true, 0),
            None => {
                let (slot, ns) = self.compile(module, task.task_id);
                (slot, false, ns)
            }
        };
        let mut host = Host {
            driver,
            app,
            task: task.task_id,
            inputs: mine
                .iter()
                .filter(|(_, r)| !r.is_code())
                .map(|(_, r)| r.resource_id)
                .collect(),
            claimed,
            extra: Vec::new(),
        };
        let limits = Limits {
            fuel: task.fuel,
            memory_bytes: task.memory_limit_bytes,
        };
        let t0 = time::monotonic_ns();
        let outcome = match &slot {
            Slot::Ready(runtime, compiled) => runtime
                .run(compiled, limits, &mut host)
                .map_err(|e| (status_of(&e), e.to_string())),
            Slot::Failed(status, why) => Err((*status, why.clone())),
        };
        let run_ns = time::monotonic_ns().saturating_sub(t0);
        timing.work_ns = compile_ns + run_ns;
        let (status, fuel, failure) = match outcome {
            Ok(o) => {
                timing.result = o.result;
                (0, o.fuel_used, None)
            }
            Err((status, why)) => (status, 0, Some((status, why))),
        };
        if !quiet {
            println!(
                "see: wasm task={} app={app} module={} compiled={} compile_ns={compile_ns} run_ns={run_ns} fuel={fuel} status={status} result={}",
                task.task_id,
                module.resource_id,
                u8::from(compiled),
                timing.result
            );
        }
        (timing, failure)
    }
}

/// Counters that move whenever the verified cache may have changed (a bundle accepted, an
/// entry evicted or consumed, a reset, new version floors).
fn cache_generation(driver: &Drv) -> [u64; 7] {
    let c = driver.counters();
    [
        c.accepted,
        c.evicted,
        c.host_evicts,
        c.hits,
        c.cache_hits,
        c.resets,
        c.floors_snapshots,
    ]
}

/// The request status a task error maps to.
fn status_of(e: &TaskError) -> u32 {
    match e {
        TaskError::TooLarge { .. }
        | TaskError::Invalid(_)
        | TaskError::ForbiddenImport { .. }
        | TaskError::WrongSignature { .. }
        | TaskError::Interface(_) => STATUS_BAD_MODULE,
        TaskError::MemoryLimit { .. } => STATUS_MEMORY_LIMIT,
        TaskError::OutOfFuel { .. } => STATUS_OUT_OF_FUEL,
        TaskError::Trap(_) => STATUS_TASK_TRAPPED,
        _ => STATUS_TASK_FAILED,
    }
}

/// What a running task sees: its inputs, the request's claimed bytes, and the claim API for
/// anything else (as the request's app and the task).
struct Host<'a> {
    driver: &'a mut Drv,
    app: u32,
    task: u64,
    inputs: Vec<u64>,
    claimed: &'a [(u64, Content)],
    /// Resources claimed through the driver during the run.
    extra: Vec<(u64, Content)>,
}

impl Host<'_> {
    fn bytes(&self, resource: u64) -> Option<&Content> {
        self.claimed
            .iter()
            .chain(&self.extra)
            .find(|(id, _)| *id == resource)
            .map(|(_, c)| c)
    }
}

impl TaskHost for Host<'_> {
    fn input(&self, index: u32) -> Option<u64> {
        self.inputs.get(index as usize).copied()
    }

    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        if let Some(c) = self.bytes(resource) {
            return Ok(c.len() as u64);
        }
        match self.driver.claim_or_fetch(self.app, self.task, resource, 0) {
            Ok(r) => {
                let len = r.content.len() as u64;
                self.extra.push((resource, r.content));
                Ok(len)
            }
            Err(ClaimError::AccessDenied { .. }) => Err(ClaimRefusal::Denied),
            Err(_) => Err(ClaimRefusal::Unavailable),
        }
    }

    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        let bytes = self.bytes(resource).ok_or(ClaimRefusal::NotClaimed)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}
