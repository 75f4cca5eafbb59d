//! Bring-up: find the device and the shared window, hook the interrupt (ring 0), then run the
//! app in ring 3 with the driver, installed for the C ABI (`see_prefetch_available`,
//! `see_claim_prefetch`) as well as driven from Rust.

use alloc::{string::String, vec::Vec};

use see_guest_driver::window::SharedWindow;
use see_guest_driver::{ffi, AppRegistry, Completion, Driver, DriverConfig, InterruptHandle};
use spin::Once;

use super::{
    app, entropy,
    platform::{KernelPlatform, DEVICE_INTERRUPT},
};
use see_abi::cmdline::{self as key, Cmdline};
use see_abi::entropy::NonceSource;

use crate::{exit::Status, interrupts, keys, memmap::MemoryMap, usermode};

static IRQ_HANDLE: Once<InterruptHandle> = Once::new();

fn on_device_interrupt() {
    super::profile::on_interrupt();
    if let Some(handle) = IRQ_HANDLE.get() {
        handle.on_interrupt();
    }
    DEVICE_INTERRUPT.store(true, core::sync::atomic::Ordering::Release);
}

/// Parses `see.allow=A:T:R,...` into (app, task, resource) triples, in order.
pub fn parse_allow(value: &str) -> Result<Vec<(u32, u64, u64)>, String> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let mut parts = entry.split(':');
            let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
            match (next(), next(), next(), parts.next()) {
                (Some(a), Some(t), Some(r), None) if a <= u64::from(u32::MAX) => {
                    Ok((a as u32, t, r))
                }
                _ => Err(alloc::format!(
                    "see.allow: {entry:?} is not app:task:resource"
                )),
            }
        })
        .collect()
}

/// Parses `see.store_kib=N` (64 KiB to 1 GiB) into bytes.
fn parse_store_kib(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(kib @ 64..=1_048_576) => Ok(kib * 1024),
        _ => Err(alloc::format!(
            "see.store_kib={value:?} is not a size in KiB from 64 to 1048576"
        )),
    }
}

/// Parses `see.cache=0|1`.
fn parse_cache(value: &str) -> Result<bool, String> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(alloc::format!("see.cache={value:?} is not 0 or 1")),
    }
}

/// Parses `see.max_demands=N` (1 to 64).
fn parse_max_demands(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(alloc::format!(
            "see.max_demands={value:?} is not a number from 1 to 64"
        )),
    }
}

/// Parses `see.min_epoch=S` (seconds since the Unix epoch).
fn parse_min_epoch(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| alloc::format!("see.min_epoch={value:?} is not a number of seconds"))
}

/// What the command line sets in the driver beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
struct Tuning {
    /// `see.store_kib`, in bytes.
    store_budget: Option<u64>,
    /// `see.cache`.
    cache: Option<bool>,
    /// `see.max_demands`.
    max_demands: Option<u16>,
    /// `see.min_epoch`: the measured lower bound on the time for floors snapshots.
    min_epoch: Option<u64>,
}

impl Tuning {
    fn parse(cmdline: &Cmdline<'_>) -> Result<Self, String> {
        Ok(Self {
            store_budget: cmdline
                .get(key::STORE_KIB)
                .map(parse_store_kib)
                .transpose()?,
            cache: cmdline.get(key::CACHE).map(parse_cache).transpose()?,
            max_demands: cmdline
                .get(key::MAX_DEMANDS)
                .map(parse_max_demands)
                .transpose()?,
            min_epoch: cmdline
                .get(key::MIN_EPOCH)
                .map(parse_min_epoch)
                .transpose()?,
        })
    }
}

/// The driver's settings: 16 staging buffers of 256 KiB (4 MiB of the window). Fewer, larger
/// chunks than the driver's default (32 of 64 KiB) mean fewer used-ring rounds, notifies and
/// interrupts per MiB staged, each of which costs a VM exit or emulated ring-0 time under PVM.
/// `tuning.store_budget`: the verified store's size in bytes (`see.store_kib`; the driver's
/// default when absent), which the PTO sets to its staging budget so the guest holds what it
/// planned; `see.cache` and `see.max_demands` make the naive baseline's driver.
fn driver_config(window: crate::memmap::Region, polling: bool, tuning: Tuning) -> DriverConfig {
    let mut config = DriverConfig::new(SharedWindow {
        base_gpa: window.start,
        size: window.len,
    });
    if let Some(bytes) = tuning.store_budget {
        config.store_budget = bytes;
    }
    if let Some(cache) = tuning.cache {
        config.cache = cache;
    }
    if let Some(n) = tuning.max_demands {
        config.max_demands = n;
    }
    if let Some(s) = tuning.min_epoch {
        config.min_time_s = s;
    }
    config.staging_buffers = 16;
    config.max_chunk_len = 256 * 1024;
    config.completion = if polling {
        Completion::Polling
    } else {
        Completion::Interrupt
    };
    config
}

/// Runs the guest app `name`; returns the status the VM ends with.
pub fn run_app(name: &str, cmdline: &Cmdline<'_>, map: &MemoryMap<'_>) -> Status {
    if name != key::APP_SERVE {
        println!("see: no guest app named {name:?} in this image (known: serve)");
        return Status::AppFailure;
    }
    // No session on a nonce the host could predict, unless the command line accepts the risk.
    match entropy::nonce_source(see_abi::entropy::fallback_enabled(
        cmdline.get(key::INSECURE_ENTROPY),
    )) {
        Ok(NonceSource::Hardware { .. }) => {}
        Ok(NonceSource::InsecureJitter) => println!(
            "see: WARNING: INSECURE ENTROPY: no RDRAND or RDSEED; {}=1 lets the session nonce \
             rest on TSC jitter alone, which a hostile host could predict",
            key::INSECURE_ENTROPY
        ),
        Err(e) => {
            println!("see: {e}");
            return Status::AppFailure;
        }
    }
    let device = match cmdline.virtio_mmio_devices().next() {
        Some(Ok(device)) => device,
        Some(Err(bad)) => {
            println!("see: malformed virtio_mmio.device={:?}", bad.0);
            return Status::AppFailure;
        }
        None => {
            println!("see: no virtio_mmio.device on the command line: start see-vmm with --prefetch-socket");
            return Status::AppFailure;
        }
    };
    let Some(window) = map.shared_window() else {
        println!(
            "see: the memory map has no shared window (E820 type {:#x})",
            see_abi::memory::E820_SEE_SHARED
        );
        return Status::AppFailure;
    };
    let allow = match parse_allow(cmdline.get(key::ALLOW).unwrap_or("")) {
        Ok(allow) => allow,
        Err(why) => {
            println!("see: {why}");
            return Status::AppFailure;
        }
    };
    let polling = cmdline.get(key::POLL) == Some("1");
    let tuning = match Tuning::parse(cmdline) {
        Ok(t) => t,
        Err(why) => {
            println!("see: {why}");
            return Status::AppFailure;
        }
    };
    let settings = app::Settings {
        quiet: cmdline.get(key::QUIET) == Some("1"),
        idle_ns: cmdline
            .get(key::IDLE_MS)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30_000)
            .saturating_mul(1_000_000),
        polling,
        #[cfg(feature = "test-ops")]
        device_base: device.base,
        #[cfg(feature = "test-ops")]
        window,
        #[cfg(feature = "test-ops")]
        staging_queue_size: driver_config(window, polling, tuning).staging_buffers,
    };
    if !polling {
        if let Err(e) = interrupts::register_irq(device.gsi, on_device_interrupt) {
            println!("see: cannot route the device's GSI {}: {e}", device.gsi);
            return Status::AppFailure;
        }
        x86_64::instructions::interrupts::enable();
    }
    let base = device.base;
    // Everything from here runs natively in ring 3 (usermode.rs): key parsing, verification,
    // hashing and the app's work would be about 1000x slower in the emulated ring 0.
    usermode::run(move || {
        let mut registry = AppRegistry::new();
        for &(app_id, task_id, resource_id) in &allow {
            registry.register_app(app_id);
            if let Err(e) = registry.allow(app_id, task_id, resource_id) {
                println!("see: see.allow: {e}");
                return Status::AppFailure;
            }
        }
        let config = driver_config(window, polling, tuning);
        let (cache, max_demands) = (config.cache, config.max_demands);
        let platform = KernelPlatform::new(base, window);
        let driver = match Driver::new(platform, config, &keys::PTO_VERIFYING_KEY, registry) {
            Ok(driver) => driver,
            Err(e) => {
                println!("see: prefetch device: {e}");
                return Status::AppFailure;
            }
        };
        IRQ_HANDLE.call_once(|| driver.interrupt_handle());
        let (_, epoch) = driver.session();
        println!(
            "see: prefetch device ready: {} allowed resources, {} completion, session epoch {epoch}, cache {}, {} demands at once",
            allow.len(),
            if polling { "polled" } else { "interrupt" },
            if cache { "on" } else { "off" },
            max_demands
        );
        // One driver for both APIs: installed for the C functions, and locked (app::Held) for
        // the app's Rust calls, which lets go of it around its C-ABI claims.
        if ffi::install(driver).is_some() {
            println!("see: a driver was already installed for the C ABI; replaced");
        }
        let driver = match app::Held::lock() {
            Ok(held) => held,
            Err(rc) => {
                println!("see: the driver installed for the C ABI cannot be locked (rc={rc})");
                return Status::AppFailure;
            }
        };
        app::serve(driver, &allow, &settings)
    })
}
