//! Devices: the legacy ones every VM has (serial console, exit port, boot progress port) and
//! the virtio-mmio slot allocator that later devices plug into.

pub mod legacy;
pub mod mmio;
pub mod serial;

pub use legacy::{BootProgress, ExitPort, ProgressEvent};
pub use mmio::{MmioSlot, MmioSlots};
pub use serial::SerialConsole;
