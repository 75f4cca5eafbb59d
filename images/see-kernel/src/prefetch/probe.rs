//! What the end-to-end tests read from the console: the driver's counters (rejects by reason,
//! by name) and probes that try a claim the app may or may not be entitled to.

use see_guest_driver::{ClaimError, Driver};

use super::platform::KernelPlatform;

type Drv = Driver<KernelPlatform>;

/// RejectReason codes 1..=12 (docs: virtio-prefetch/SPEC.md), as printed.
const REJECT_NAMES: [&str; 12] = [
    "malformed",
    "bad_signature",
    "wrong_session",
    "replay",
    "rollback",
    "wrong_task",
    "digest_mismatch",
    "too_large",
    "not_in_manifest",
    "unexpected",
    "no_floors",
    "stale_floors",
];

/// Prints `see: counters ...`, `see: rejects <reason>=<n> ...` (every reason, zeros too) and
/// `see: profile ...` ([`super::profile::print`]).
pub fn print_counters(driver: &Drv) {
    let c = driver.counters();
    println!(
        "see: counters accepted={} manifests={} floors={} rejected={} malformed={} hits={} cache_hits={} misses={} demands={} demands_failed={} evicted={} host_evicts={} evicts_refused={} interrupts={} notifies={} register_accesses={}",
        c.accepted,
        c.manifests,
        c.floors_snapshots,
        c.rejected_total(),
        c.malformed,
        c.hits,
        c.cache_hits,
        c.misses,
        c.demands_served,
        c.demands_failed,
        c.evicted,
        c.host_evicts,
        c.evicts_refused,
        c.interrupts,
        c.notifies,
        c.register_accesses
    );
    let mut line = alloc::string::String::from("see: rejects");
    for (i, name) in REJECT_NAMES.iter().enumerate() {
        let n = c.rejected.get(i + 1).copied().unwrap_or(0);
        line.push_str(&alloc::format!(" {name}={n}"));
    }
    println!("{line}");
    super::profile::print(driver);
}

/// One word for a claim's outcome, as printed by [`probe`].
fn outcome(result: &Result<see_guest_driver::Resource, ClaimError>) -> &'static str {
    match result {
        Ok(_) => "claimed",
        Err(ClaimError::AccessDenied { .. }) => "denied",
        Err(ClaimError::NotStaged) => "not-staged",
        Err(ClaimError::DeviceBroken(_)) => "broken",
        Err(_) => "error",
    }
}

/// Tries, as `app`, to see and to claim (task, resource) without a demand fetch, then to
/// demand-fetch it: `see: probe app=A task=T res=R available=0|1 claim=<outcome>
/// fetch=<outcome>`. The fetch is only tried when the claim was refused (an entitled app whose
/// resource is not staged gets `fetch=skipped`, so a probe never pulls a resource in).
pub fn probe(driver: &mut Drv, app: u32, task: u64, res: u64) {
    let available = driver.available(app, task, res);
    let claim = driver.claim(app, task, res);
    let fetch = match &claim {
        Err(ClaimError::AccessDenied { .. }) => outcome(&driver.fetch(app, task, res, 0)),
        _ => "skipped",
    };
    println!(
        "see: probe app={app} task={task} res={res} available={} claim={} fetch={fetch}",
        u8::from(available),
        outcome(&claim),
    );
}

/// Prints `see: awaiting app=A task=T res=R`, then waits (up to `timeout_ns`, sleeping through
/// `pause`) until `app` could claim (task, resource), without claiming it:
/// `see: staged app=A task=T res=R waited_ns=N`, or
/// `see: not-staged ...` when the deadline passes or the device breaks.
pub fn await_staged(
    driver: &mut Drv,
    app: u32,
    task: u64,
    res: u64,
    timeout_ns: u64,
    mut pause: impl FnMut(u64),
) {
    println!("see: awaiting app={app} task={task} res={res}");
    let start = crate::time::monotonic_ns();
    let deadline = start.saturating_add(timeout_ns);
    loop {
        if driver.available(app, task, res) {
            let waited = crate::time::monotonic_ns() - start;
            println!("see: staged app={app} task={task} res={res} waited_ns={waited}");
            return;
        }
        if crate::time::monotonic_ns() >= deadline
            || driver.state() != see_guest_driver::DriverState::Ready
        {
            println!("see: not-staged app={app} task={task} res={res}");
            return;
        }
        driver.flush();
        pause(deadline);
    }
}
