//! Errors of building and running a VM.

use crate::{
    boot::BootError, bus::BusError, config::ConfigError, cpu::CpuError, devices::mmio::NoFreeSlot,
    memory::MemoryError,
};

/// KVM's stable API version.
pub(crate) const KVM_API_VERSION: i32 = 12;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The KVM device does not exist.
    #[error("{0} does not exist: this machine has no KVM (load the kvm module, enable virtualization in the firmware, or pass the right device)")]
    KvmMissing(String),
    /// The KVM device cannot be opened.
    #[error("cannot open {path}: {source}; give this user read-write access to it (e.g. add it to the 'kvm' group)")]
    KvmAccess {
        /// The device path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The device is not KVM.
    #[error("{0} is not a KVM device (KVM_GET_API_VERSION failed or is not {KVM_API_VERSION})")]
    NotKvm(String),
    /// A KVM VM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading or booting the kernel.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// vCPU setup.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// A device range clashes.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// No virtio-mmio slot left.
    #[error(transparent)]
    NoFreeSlot(#[from] NoFreeSlot),
    /// A host resource (thread, eventfd, file, epoll) could not be had.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(#[from] event_manager::Error),
    /// A thread could not confine itself.
    #[error(transparent)]
    Sandbox(#[from] see_sandbox::SandboxError),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}
