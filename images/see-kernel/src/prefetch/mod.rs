//! The virtio-prefetch device in the SEE: the kernel's platform glue for `see-guest-driver`,
//! driver bring-up from the command line and the memory map, and the guest app that serves the
//! PTO's requests by claiming prefetched resources (or demand-fetching them) and working on
//! them.
//!
//! Command-line keys (docs/ARCHITECTURE.md):
//! - `see.app=serve` runs [`app`]; `virtio_mmio.device=` names the device;
//! - `see.allow=A:T:R[,A:T:R...]`: the app registry, app A's task T may claim resource R (the
//!   launch configuration, measured with the image in a real confidential VM, not the device);
//! - `see.poll=1`: polled completion instead of interrupts;
//! - `see.quiet=1`: no line per claim (for benchmarks);
//! - `see.idle_ms=N`: end with an app failure after N ms without a request (default 30000).

pub mod app;
mod cabi;
pub mod entropy;
#[cfg(feature = "test-ops")]
mod hostile;
pub mod platform;
mod probe;
mod profile;
mod setup;
mod wasm;

pub use setup::run_app;
