//! Guest driver for the virtio-prefetch device (device id `0x5EE0`), the verified store and
//! the claim API of the SEE.
//!
//! The driver brings up the virtio-mmio v2 transport through [`Platform`], carves three split
//! virtqueues and all their buffers out of the shared window, and treats everything the device
//! writes as hostile: each used id, used length and used-index advance is checked against the
//! driver's private record of what it posted; each staging buffer is copied out of the shared
//! window exactly once into private memory, and only the private copy is parsed, reassembled
//! and verified (P-384 ECDSA over the signed statement, the content's chunk tree: SHA-256 of
//! each 64 KiB chunk as it lands, against a digest list checked against the signed SHA-384
//! root, session nonce and epoch, sequence number, per-resource version, the app registry). Verified resources sit
//! in a store indexed by (task id, resource id); a claim checks the claiming app.
//!
//! # Why not `virtio-drivers`
//!
//! `virtio-drivers` 0.13 was evaluated. Its `VirtQueue` keeps a private `desc_shadow` (good),
//! but it does not fit this device's threat model or memory model:
//! - it reads the rings through pointers into shared memory (`NonNull` derefs of the used ring),
//!   while the contract here is one volatile copy through [`Platform::shared_read`];
//! - `can_pop` only compares the used index for inequality: an index that jumps by more than
//!   the number of outstanding chains is not detected, and `pop_used` returns the device's
//!   used length unchecked against the posted buffer (the caller must bound it);
//! - `pop_used` wants the caller to name the expected token and fails with `WrongToken`
//!   otherwise, which does not match devices (like this one) that complete out of order;
//! - its `Hal::dma_alloc` is a static function returning pointers, so carving the rings out
//!   of one given window needs global state, and its `MmioTransport` maps the registers
//!   itself instead of going through the embedder's `mmio_read32`/`mmio_write32`.
//!
//! So [`queue::SplitQueue`] is our own (about 290 lines), with those checks built in.
//!
//! # Order of calls (the kernel)
//!
//! 1. Build an [`AppRegistry`]: `register_app(app)`, then `allow(app, task, resource)` for
//!    every resource each task may claim (bundles for anything else are refused).
//! 2. [`Driver::new`]`(platform, DriverConfig::new(window), VERIFYING_KEY, registry)` with the
//!    window from the E820 entry of type 0x5EE0 and the SEC1 key embedded at build time
//!    (`include_bytes!(env!("SEE_PTO_VERIFYING_KEY"))`). It resets the device, negotiates,
//!    sets up the queues, sends Hello and waits (spinning, bounded by `ctrl_timeout_ns`) for
//!    its Ack, so it works before the IRQ handler is hooked.
//! 3. `let irq = driver.interrupt_handle();` and hook GSI 5 to a handler that calls
//!    [`InterruptHandle::on_interrupt`] and sends the EOI (nothing else).
//! 4. Optionally [`ffi::install`] the driver, for `see_prefetch_available` and
//!    `see_claim_prefetch`; Rust code then drives it through an [`ffi::Installed`] guard
//!    (`Installed::<YourPlatform>::lock()`, released around calls to the C functions, as the
//!    SEE kernel's serve app does), or with [`ffi::with_installed`] and
//!    `as_any().downcast_mut::<Driver<YourPlatform>>()`.
//! 5. Serve: [`Driver::next_request`]; per task [`Driver::claim_or_fetch`] (or
//!    [`Driver::available`] then [`Driver::claim`]); then [`Driver::complete_request`] with the
//!    timings (this also delivers the claim reports). [`Driver::poll`] is called by all of
//!    these; call it yourself only to process arrivals while idle.
//! 6. On [`ClaimError::DeviceBroken`] or [`ClaimError::Timeout`] every later call fails at
//!    once; [`Driver::reset`] starts a new session (or end the VM with an error).
//!
//! # Implementing [`Platform`] in the kernel
//!
//! - `mmio_*`: offsets are relative to the device's base (`0xD000_0000` for slot 0); 32-bit
//!   volatile accesses.
//! - `shared_read`/`shared_write`: `core::ptr::copy` with volatile semantics (or
//!   `read_volatile` per word) from the identity-mapped window; never hand out a reference.
//!   The driver only names ranges inside the window it was given.
//! - `wait_for_event`: arm the LAPIC timer for the deadline, then `sti; hlt` (the pair is
//!   atomic with respect to interrupts), then `cli`. The driver checks the interrupt flag
//!   before sleeping, so a wake-up is not lost if the IRQ arrives just before.
//! - The IRQ handler (GSI 5, edge-triggered) calls [`InterruptHandle::on_interrupt`] and sends
//!   the EOI; it must not touch the driver itself. The driver reads and acknowledges
//!   InterruptStatus in [`Driver::poll`], and does not depend on it for used buffers (with an
//!   irqfd the VMM may not know why the interrupt fired): every poll reads the used rings.
//!
//! # Costs in register accesses (each one a VM exit)
//!
//! A claim of a staged resource does none: reports are posted on ctrlq and kicked with the
//! next wait, request completion or [`Driver::flush`] (or when half of ctrlq is taken). A
//! demand fetch costs one notify plus, in interrupt mode, one InterruptStatus read and ack
//! per interrupt. Polling mode asks the device not to interrupt and reads the status register
//! at most once per millisecond to notice a device that needs a reset.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod chunk_hash;
mod claim;
mod config;
pub mod counters;
mod driver;
pub mod ffi;
pub mod mmio;
mod msg;
mod platform;
pub mod profile;
pub mod queue;
pub mod reassembly;
pub mod registry;
mod rx;
pub mod sha256;
pub mod store;
mod verify;
pub mod window;

#[cfg(test)]
mod hostile_tests;
#[cfg(any(test, feature = "test-device"))]
pub mod testdev;

pub use counters::Counters;
pub use driver::{
    BrokenReason, ClaimError, Completion, Driver, DriverConfig, DriverState, IncomingRequest,
    InitError, InterruptHandle, RequestCompletion, Resource, Source, TaskTiming,
};
pub use platform::Platform;
pub use profile::Profile;
pub use registry::AppRegistry;
pub use store::Content;
