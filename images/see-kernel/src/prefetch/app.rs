//! The `serve` app: runs the requests the PTO dispatches over requestq.
//!
//! A request's arguments start with an operation (`u32` LE, then 4 reserved bytes), followed by
//! the task ids it concerns (`u64` LE each); a task's resources are the ones `see.allow` gives
//! to (app, task), in command-line order:
//! - `OP_RUN` (1): claim every resource of every task at once from the driver's verified cache
//!   (where they stay, shared by the app's later tasks and requests), demand-fetching all the
//!   missing ones together (`Driver::claim_each`, bounded by the driver), and work on each as
//!   it arrives ([`work`]); print one `see: claim ... staged=0|1 cached=0|1 ...` line per
//!   resource (unless quiet; staged: first claim of a prefetched resource, cached: served
//!   from the cache otherwise) and complete
//!   the request with per-task timings measured here and each task's result (its resources'
//!   `see_workload::resource_word`s folded, for the host to check); a resource that fails
//!   processing ends its request there with status [`STATUS_WORK_FAILED`] (`see: work-failed
//!   ...`), and the app serves the next request;
//! - `OP_BENCH` (2): for each resource, wait until it is staged, time its claim, then time a
//!   demand fetch of the same resource: `see: bench res=R len=N claim_ns=C demand_ns=D`;
//! - `OP_THROUGHPUT` (3): prints `see: throughput waiting`, then times until every listed
//!   resource is staged and verified, claims them all and prints `see: staged bytes=N ns=T
//!   resources=K span_bytes=B span_ns=S` (S: first to last verification; B: bytes after the
//!   first resource);
//! - `OP_PROBE` (4): the arguments are (task, resource) pairs; for each, try as the request's
//!   app to claim it without a demand fetch and, if refused, to demand-fetch it
//!   ([`super::probe::probe`]: `see: probe ... claim=denied fetch=denied`), for the access
//!   control and tamper tests;
//! - `OP_AWAIT` (5): the arguments are (task, resource) pairs; wait (10 s at most) until each
//!   is staged for the request's app, without claiming it: `see: staged ...` or
//!   `see: not-staged ...` ([`super::probe::await_staged`]);
//! - `OP_RESET` (6): reset the device and start a new session: `see: reset epoch=E` (a bundle
//!   of the old session replayed into the new one must be refused);
//! - `OP_BAD_DESCRIPTOR` (7), test image only (feature `test-ops`): rewrite the next staging
//!   descriptor to name a private heap buffer (`super::hostile`):
//!   `see: bad-descriptor head=H addr=A len=L`; `OP_VICTIM` (8), test image only:
//!   `see: victim intact=0|1`. The default image answers both as unknown operations;
//! - `OP_C_CLAIM` (9): the arguments are (task, resource, buffer size) triples; for each, as
//!   the request's app, `see_prefetch_available` then `see_claim_prefetch` through the C ABI
//!   (the driver is installed for it at bring-up; the app lets go of its lock meanwhile):
//!   `see: cabi ... rc=N code=SEE_... len=L sha384=...` ([`super::cabi::claim`]);
//! - `OP_RUN_WASM` (10): the arguments are (task, fuel, memory limit) triples; claim every
//!   resource of every task at once as `OP_RUN` does and run each task's Wasm module on its
//!   inputs ([`super::wasm`]: modules are compiled ahead while the app is idle);
//!   `see: wasm task=T ... compiled=0|1 ... status=S` per task; a task that traps, runs out of
//!   fuel, exceeds its memory, does not compile or fails ends its request with its
//!   `STATUS_*` (`see: wasm-failed ...`), and the app serves the next request;
//! - `OP_STOP` (0xFFFF): print the driver's counters and end the VM with success.
//!
//! A resource the app cannot get or verify ends the VM with an app failure (104) after a
//! `see: claim-failed ...` line; so does a device that breaks (the backend died) or a request
//! that does not come within `see.idle_ms`.

use alloc::{collections::BTreeMap, vec::Vec};
use core::fmt::Write;

use see_guest_driver::{
    ClaimError, Driver, DriverState, RequestCompletion, Resource, Source, TaskTiming,
};

pub use see_abi::serve::{
    OP_AWAIT, OP_BENCH, OP_C_CLAIM, OP_PROBE, OP_RESET, OP_RUN, OP_RUN_WASM, OP_STOP,
    OP_THROUGHPUT, STATUS_WORK_FAILED,
};
#[cfg(feature = "test-ops")]
pub use see_abi::serve::{OP_BAD_DESCRIPTOR, OP_VICTIM};

use super::platform::{KernelPlatform, DEVICE_INTERRUPT};
use super::wasm::Wasm;
use crate::{exit::Status, interrupts, time};

/// How the app behaves (from the command line).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// No line per claim.
    pub quiet: bool,
    /// End after this long without a request.
    pub idle_ns: u64,
    /// Polled completion: waits spin instead of halting.
    pub polling: bool,
    /// The device's register block (for `OP_BAD_DESCRIPTOR`).
    #[cfg(feature = "test-ops")]
    pub device_base: u64,
    /// The shared window.
    #[cfg(feature = "test-ops")]
    pub window: crate::memmap::Region,
    /// stagingq's size (the driver's `staging_buffers`).
    #[cfg(feature = "test-ops")]
    pub staging_queue_size: u16,
}

/// The driver the app drives.
pub(super) type Drv = Driver<KernelPlatform>;
/// The driver installed for the C ABI, locked (it derefs to [`Drv`]).
pub type Held = see_guest_driver::ffi::Installed<KernelPlatform>;

fn hex(bytes: &[u8]) -> alloc::string::String {
    let mut s = alloc::string::String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The work a task does on a resource: a see-workload resource is inflated, parsed and
/// checksummed (`see_workload::process`); anything else contributes its SHA-384. Returns the
/// SHA-384 to print and the word the resource adds to its task's result
/// (`see_workload::resource_word`). The driver checked the content chunk by chunk against the
/// signed tree root (SHA-256 chunks, not one SHA-384 of the whole), so this SHA-384 is the
/// task's work, computed here over the verified private copy.
fn work(resource: &Resource) -> Result<([u8; 48], u64), alloc::string::String> {
    let digest: [u8; 48] = <sha2::Sha384 as sha2::Digest>::digest(&resource.content).into();
    let word = see_workload::resource_word(&resource.content, &digest)
        .map_err(|e| alloc::format!("resource {} failed processing: {e}", resource.resource_id))?;
    Ok((digest, word))
}

/// A resource of an `OP_RUN` request once it arrived: how long the app waited for it, its
/// work and the work's outcome.
struct Arrival {
    wait_ns: u64,
    work_ns: u64,
    outcome: Result<([u8; 48], u64), alloc::string::String>,
    resource: Resource,
}

/// Waits for the next request, compiling staged Wasm modules ahead and sleeping between
/// polls; None after `idle_ns` or when the device breaks.
fn next_request(
    driver: &mut Drv,
    wasm: &mut Wasm,
    settings: &Settings,
) -> Option<see_guest_driver::IncomingRequest> {
    let deadline = time::monotonic_ns().saturating_add(settings.idle_ns);
    loop {
        if let Some(request) = driver.next_request() {
            return Some(request);
        }
        if driver.check_device() != DriverState::Ready || time::monotonic_ns() >= deadline {
            return None;
        }
        if wasm.prepare(driver, settings.quiet) {
            continue;
        }
        // Reports of bundles handled while idle (rejects, evictions) go out before sleeping.
        driver.flush();
        pause(settings, deadline);
    }
}

/// Sleeps until an interrupt (or 1 ms at most), or spins briefly when polling.
fn pause(settings: &Settings, deadline_ns: u64) {
    if settings.polling {
        core::hint::spin_loop();
        return;
    }
    let now = time::monotonic_ns();
    let until = deadline_ns.min(now + 1_000_000);
    let ticks =
        (until.saturating_sub(now) as u128 * u128::from(time::tsc_hz()) / 1_000_000_000) as u64;
    interrupts::halt_until(time::tsc().saturating_add(ticks), &DEVICE_INTERRUPT);
    DEVICE_INTERRUPT.store(false, core::sync::atomic::Ordering::Release);
}

fn fail(what: core::fmt::Arguments<'_>, error: &ClaimError, driver: &mut Drv) -> Status {
    println!("see: claim-failed {what} error={error}");
    print_counters(driver);
    Status::AppFailure
}

fn print_counters(driver: &mut Drv) {
    super::probe::print_counters(driver);
}

/// The resources of each (app, task) in `see.allow` order, indexed once at bring-up: a
/// request's lookups cost O(log n) per task however long the registry is.
pub(super) struct TaskResources(BTreeMap<(u32, u64), Vec<u64>>);

impl TaskResources {
    fn new(allow: &[(u32, u64, u64)]) -> Self {
        let mut index: BTreeMap<(u32, u64), Vec<u64>> = BTreeMap::new();
        for &(app, task, res) in allow {
            index.entry((app, task)).or_default().push(res);
        }
        Self(index)
    }

    /// The resources `app`'s `task` claims (none if the registry does not name it).
    pub(super) fn of(&self, app: u32, task: u64) -> impl Iterator<Item = u64> + '_ {
        self.0.get(&(app, task)).into_iter().flatten().copied()
    }
}

/// Serves requests until `OP_STOP`; returns the VM's exit status.
pub fn serve(mut driver: Held, allow: &[(u32, u64, u64)], settings: &Settings) -> Status {
    let index = TaskResources::new(allow);
    let mut wasm = Wasm::new(allow);
    loop {
        let Some(request) = next_request(&mut driver, &mut wasm, settings) else {
            match driver.state() {
                DriverState::Ready => println!("see: no request within see.idle_ms"),
                DriverState::Broken(why) => println!("see: prefetch device failed: {why:?}"),
            }
            print_counters(&mut driver);
            return Status::AppFailure;
        };
        let start = time::monotonic_ns();
        let (op, tasks) = match see_abi::serve::decode_args(&request.args) {
            Ok(parsed) => parsed,
            Err(e) => {
                println!(
                    "see: request {} has malformed arguments ({e}); ignored",
                    request.request_id
                );
                continue;
            }
        };
        let app = request.app_id;
        let resources = |task: u64| index.of(app, task);
        match op {
            OP_STOP => {
                print_counters(&mut driver);
                driver.flush();
                return Status::Success;
            }
            OP_RUN => {
                // Every (task, resource) of the request, asked for at once: the cached ones are
                // handed over first, the missing ones are demanded together (bounded by the
                // driver) and worked on in the order they arrive.
                let wanted: Vec<(u64, u64)> = tasks
                    .iter()
                    .flat_map(|&t| resources(t).map(move |r| (t, r)))
                    .collect();
                let mut arrived: Vec<Option<Arrival>> = wanted.iter().map(|_| None).collect();
                let mut idle_since = time::monotonic_ns();
                let batch = driver.claim_each(app, &wanted, 0, |i, resource| {
                    let t1 = time::monotonic_ns();
                    let outcome = work(&resource);
                    let t2 = time::monotonic_ns();
                    if let Some(slot) = arrived.get_mut(i) {
                        *slot = Some(Arrival {
                            wait_ns: t1.saturating_sub(idle_since),
                            work_ns: t2 - t1,
                            outcome,
                            resource,
                        });
                    }
                    idle_since = time::monotonic_ns();
                });
                if let Err(e) = batch {
                    // Named by the first resource that did not arrive.
                    let (task, res) = wanted
                        .iter()
                        .zip(&arrived)
                        .find(|(_, a)| a.is_none())
                        .map_or((0, 0), |(&w, _)| w);
                    return fail(
                        format_args!("app={app} task={task} res={res}"),
                        &e,
                        &mut driver,
                    );
                }
                let mut timings: Vec<TaskTiming> = Vec::new();
                let mut status = 0;
                let mut result = see_workload::TaskResult::new();
                for (&(task, res), a) in wanted.iter().zip(&arrived) {
                    let Some(a) = a else { continue };
                    if timings.last().is_none_or(|t| t.task_id != task) {
                        if let Some(t) = timings.last_mut() {
                            t.result = result.value();
                        }
                        result = see_workload::TaskResult::new();
                        timings.push(TaskTiming {
                            task_id: task,
                            ..Default::default()
                        });
                    }
                    let Some(timing) = timings.last_mut() else {
                        break;
                    };
                    // A staged hit (first claim of a prefetched resource) or a cache hit
                    // (claimed before, or demanded earlier) moved no bytes: both are hits.
                    let staged = a.resource.source == Source::Prefetched;
                    let cached = a.resource.source == Source::Cached;
                    if staged || cached {
                        timing.hits += 1;
                        timing.claim_ns += a.wait_ns;
                    } else {
                        timing.misses += 1;
                        timing.fetch_ns += a.wait_ns;
                    }
                    timing.work_ns += a.work_ns;
                    match &a.outcome {
                        Ok((digest, word)) => {
                            result.add(*word);
                            if !settings.quiet {
                                println!(
                                    "see: claim app={app} task={task} res={res} ver={} len={} sha384={} staged={} cached={} ns={}",
                                    a.resource.version,
                                    a.resource.content.len(),
                                    hex(digest),
                                    u8::from(staged),
                                    u8::from(cached),
                                    a.wait_ns
                                );
                            }
                        }
                        Err(why) => {
                            // The tasks after it depend on it: the request ends here, failed,
                            // and the app serves the next one.
                            println!(
                                "see: work-failed request={} task={task} {why}",
                                request.request_id
                            );
                            status = STATUS_WORK_FAILED;
                            break;
                        }
                    }
                }
                if let Some(t) = timings.last_mut() {
                    t.result = result.value();
                }
                let completion = RequestCompletion {
                    request_id: request.request_id,
                    status,
                    total_ns: time::monotonic_ns() - start,
                    tasks: timings,
                };
                if let Err(e) = driver.complete_request(&completion) {
                    return fail(
                        format_args!("completion of request {}", request.request_id),
                        &e,
                        &mut driver,
                    );
                }
            }
            OP_RUN_WASM => {
                match wasm.serve(&mut driver, &request, &tasks, &index, settings.quiet, start) {
                    Ok(completion) => {
                        if let Err(e) = driver.complete_request(&completion) {
                            return fail(
                                format_args!("completion of request {}", request.request_id),
                                &e,
                                &mut driver,
                            );
                        }
                    }
                    Err(f) => return fail(format_args!("{}", f.what), &f.error, &mut driver),
                }
            }
            OP_BENCH => {
                for &task in &tasks {
                    for res in resources(task) {
                        let deadline = time::monotonic_ns() + 10_000_000_000;
                        while !driver.available(app, task, res) {
                            if time::monotonic_ns() > deadline
                                || driver.state() != DriverState::Ready
                            {
                                return fail(
                                    format_args!("bench: res={res} never staged"),
                                    &ClaimError::NotStaged,
                                    &mut driver,
                                );
                            }
                            pause(settings, deadline);
                        }
                        let t0 = time::monotonic_ns();
                        let staged = match driver.claim(app, task, res) {
                            Ok(r) => r,
                            Err(e) => {
                                return fail(format_args!("bench claim res={res}"), &e, &mut driver)
                            }
                        };
                        let t1 = time::monotonic_ns();
                        let demanded = match driver.fetch(app, task, res, 0) {
                            Ok(r) => r,
                            Err(e) => {
                                return fail(format_args!("bench fetch res={res}"), &e, &mut driver)
                            }
                        };
                        let t2 = time::monotonic_ns();
                        if staged.content != demanded.content {
                            println!(
                                "see: bench res={res}: the staged and demanded contents differ"
                            );
                            return Status::AppFailure;
                        }
                        println!(
                            "see: bench res={res} len={} claim_ns={} demand_ns={}",
                            staged.content.len(),
                            t1 - t0,
                            t2 - t1
                        );
                    }
                }
                let _ = driver.complete_request(&RequestCompletion {
                    request_id: request.request_id,
                    status: 0,
                    total_ns: time::monotonic_ns() - start,
                    tasks: Vec::new(),
                });
            }
            OP_THROUGHPUT => {
                let wanted: Vec<(u64, u64)> = tasks
                    .iter()
                    .flat_map(|&t| resources(t).map(move |r| (t, r)))
                    .collect();
                // The host orders the prefetches once it reads this line, so the timed window
                // starts before the first bundle can arrive (host reaction time included).
                println!("see: throughput waiting resources={}", wanted.len());
                let start = time::monotonic_ns();
                let deadline = start + 60_000_000_000;
                let mut bytes = 0u64;
                loop {
                    let staged = wanted
                        .iter()
                        .filter(|&&(t, r)| driver.available(app, t, r))
                        .count();
                    if staged == wanted.len() {
                        break;
                    }
                    if time::monotonic_ns() > deadline || driver.state() != DriverState::Ready {
                        return fail(
                            format_args!("throughput: {staged} of {} staged", wanted.len()),
                            &ClaimError::NotStaged,
                            &mut driver,
                        );
                    }
                    pause(settings, deadline);
                }
                let elapsed = time::monotonic_ns() - start;
                // Steady state: from the first bundle verified to the last, without the first
                // one's bytes (host reaction and the first bundle's latency left out).
                let (mut first, mut last, mut first_len) = (u64::MAX, 0u64, 0u64);
                for &(t, r) in &wanted {
                    if let Ok(resource) = driver.claim(app, t, r) {
                        let len = resource.content.len() as u64;
                        bytes += len;
                        if resource.verified_ns < first {
                            (first, first_len) = (resource.verified_ns, len);
                        }
                        last = last.max(resource.verified_ns);
                    }
                }
                println!(
                    "see: staged bytes={bytes} ns={elapsed} resources={} span_bytes={} span_ns={}",
                    wanted.len(),
                    bytes - first_len,
                    last.saturating_sub(first)
                );
                let _ = driver.complete_request(&RequestCompletion {
                    request_id: request.request_id,
                    status: 0,
                    total_ns: elapsed,
                    tasks: Vec::new(),
                });
            }
            OP_PROBE => {
                for pair in tasks.chunks_exact(2) {
                    super::probe::probe(&mut driver, app, pair[0], pair[1]);
                }
                driver.flush();
            }
            OP_RESET => match driver.reset() {
                Ok(()) => println!("see: reset epoch={}", driver.session().1),
                Err(e) => {
                    println!("see: reset failed: {e}");
                    print_counters(&mut driver);
                    return Status::AppFailure;
                }
            },
            #[cfg(feature = "test-ops")]
            OP_BAD_DESCRIPTOR => match super::hostile::corrupt_next_staging_descriptor(
                settings.device_base,
                settings.window,
                settings.staging_queue_size,
            ) {
                Ok(c) => println!(
                    "see: bad-descriptor head={} addr={:#x} len={}",
                    c.head, c.addr, c.len
                ),
                Err(why) => println!("see: bad-descriptor failed: {why}"),
            },
            #[cfg(feature = "test-ops")]
            OP_VICTIM => match super::hostile::victim_intact() {
                Some(intact) => println!("see: victim intact={}", u8::from(intact)),
                None => println!("see: victim none"),
            },
            OP_C_CLAIM => {
                // The C functions take the driver's lock themselves: let go of it meanwhile.
                drop(driver);
                for t in tasks.chunks_exact(3) {
                    super::cabi::claim(app, t[0], t[1], t[2]);
                }
                driver = match Held::lock() {
                    Ok(held) => held,
                    Err(rc) => {
                        println!(
                            "see: the driver is not installed after the C-ABI claims (rc={rc})"
                        );
                        return Status::AppFailure;
                    }
                };
                driver.flush();
            }
            OP_AWAIT => {
                for pair in tasks.chunks_exact(2) {
                    super::probe::await_staged(
                        &mut driver,
                        app,
                        pair[0],
                        pair[1],
                        10_000_000_000,
                        |deadline| pause(settings, deadline),
                    );
                }
            }
            other => println!(
                "see: request {} has unknown operation {other}; ignored",
                request.request_id
            ),
        }
    }
}
