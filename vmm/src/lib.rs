//! `see-vmm`: a small KVM virtual machine monitor that boots the SEE guest kernel through the
//! PVH entry point.
//!
//! A [`Vm`] is built from a [`VmConfig`]: private guest RAM, the shared window (a memfd), the
//! in-kernel interrupt controller, a 16550 UART, the exit and boot-progress ports, and the
//! kernel loaded from its ELF. Before [`Vm::run`], devices can be added to the buses (see
//! [`Vm::allocate_mmio_slot`] and [`Vm::add_mmio_device`]) and event handlers to the event
//! loop. `run` writes the boot information, starts one thread per vCPU and returns when the
//! guest writes the exit port or a vCPU fails. With [`Vm::confine_threads`], each thread
//! installs its seccomp filter from [`confine`] before it runs anything the guest controls.

#![warn(missing_docs)]

pub mod boot;
pub mod bus;
pub mod config;
pub mod confine;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod layout;
pub mod memory;
pub mod prefault;
pub mod report;
pub mod vcpu;
pub mod virtio;
pub mod vm;

pub use bus::{Bus, BusDevice, SharedDevice};
pub use config::{SerialOutput, VmConfig};
pub use devices::MmioSlot;
pub use exit::ExitReason;
pub use memory::SharedWindow;
pub use vm::{Vm, VmError, VmOutcome};
