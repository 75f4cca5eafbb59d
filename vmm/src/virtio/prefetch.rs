//! The virtio-prefetch device on a [`Vm`]: a vhost-user frontend behind a virtio-mmio
//! transport in slot 0 (`0xD000_0000`, GSI 5), announced to the guest as
//! `virtio_mmio.device=4K@0xd0000000:5`.
//!
//! KVM wiring: the backend's call eventfd is an irqfd on the slot's GSI; each queue's kick
//! eventfd is an ioeventfd on the QueueNotify register matching the queue index. The socket is
//! watched by the VMM's event loop: when the backend hangs up, the transport sets
//! DEVICE_NEEDS_RESET and raises a config-change interrupt through the same irqfd; the VM
//! keeps running.

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use event_manager::{EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use virtio_prefetch_wire::{DeviceConfig, CONFIG_LEN, DEVICE_ID, NUM_QUEUES, VENDOR_ID};
use vmm_sys_util::epoll::EventSet;

use super::{
    mmio::{reg, MmioTransport},
    vhost_user::{DeviceSpec, VhostUserDevice, VhostUserError},
};
use crate::{memory::SharedWindow, vm::VmError, Vm};

/// How long the VMM retries connecting to a backend that is not listening yet.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// QueueNumMax of each queue unless the backend suggests a larger power of two.
pub const DEFAULT_QUEUE_MAX: u16 = 256;
/// Largest QueueNumMax the VMM accepts from a backend's suggestion.
pub const LARGEST_QUEUE_MAX: u16 = 4096;

/// The transport as it sits on the MMIO bus.
pub type PrefetchTransport = MmioTransport<VhostUserDevice>;

/// Why the device could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The backend could not be reached or negotiated with.
    #[error(transparent)]
    Backend(#[from] VhostUserError),
    /// The VM refused the device.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Registering an eventfd with KVM failed.
    #[error("KVM {what} for the virtio-prefetch device failed: {source}")]
    Kvm {
        /// Which registration.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// The slot is not the one the contract fixes.
    #[error("virtio-prefetch must be the first virtio-mmio device (slot 0), got slot {0}")]
    NotSlotZero(u32),
}

/// Connects to a virtio-prefetch backend on `socket` and negotiates (no KVM needed).
pub fn connect(
    socket: &Path,
    timeout: Duration,
    window: SharedWindow,
) -> Result<VhostUserDevice, VhostUserError> {
    let spec = DeviceSpec {
        device_id: DEVICE_ID,
        vendor_id: VENDOR_ID,
        num_queues: NUM_QUEUES,
        config_len: CONFIG_LEN as u32,
        required_features: 0,
    };
    let mut device = VhostUserDevice::connect(socket, timeout, window, spec, DEFAULT_QUEUE_MAX)?;
    let max = queue_max_sizes(device_config(&device));
    device.set_queue_max_sizes(&max);
    Ok(device)
}

fn device_config(device: &VhostUserDevice) -> Option<DeviceConfig> {
    use super::VirtioDevice;
    DeviceConfig::parse(device.config())
        .inspect_err(|e| log::warn!("virtio-prefetch config space does not parse: {e}"))
        .ok()
}

/// QueueNumMax per queue: the default, raised to the backend's suggested size when that is a
/// power of two no larger than [`LARGEST_QUEUE_MAX`].
pub fn queue_max_sizes(config: Option<DeviceConfig>) -> [u16; NUM_QUEUES] {
    let mut out = [DEFAULT_QUEUE_MAX; NUM_QUEUES];
    if let Some(config) = config {
        for (max, hint) in out.iter_mut().zip(config.queue_sizes) {
            if hint.is_power_of_two() && hint <= LARGEST_QUEUE_MAX {
                *max = (*max).max(hint);
            }
        }
    }
    out
}

/// Adds the virtio-prefetch device in slot 0 of `vm`, served by the backend on `socket`.
pub fn attach(
    vm: &mut Vm,
    socket: &Path,
    timeout: Duration,
) -> Result<Arc<Mutex<PrefetchTransport>>, AttachError> {
    let slot = vm.allocate_mmio_slot()?;
    if slot.index != 0 {
        return Err(AttachError::NotSlotZero(slot.index));
    }
    let device = connect(socket, timeout, vm.shared_window().clone())?;
    let kvm = |what| move |source| AttachError::Kvm { what, source };
    vm.vm_fd()
        .register_irqfd(device.call_event(), slot.gsi)
        .map_err(kvm("KVM_IRQFD"))?;
    let notify = IoEventAddress::Mmio(slot.base.0 + reg::QUEUE_NOTIFY);
    for (index, kick) in device.kick_events().iter().enumerate() {
        vm.vm_fd()
            .register_ioevent(kick, &notify, index as u32)
            .map_err(kvm("KVM_IOEVENTFD"))?;
    }
    let irq = device
        .call_event()
        .try_clone()
        .map_err(|e| AttachError::Backend(VhostUserError::EventFd(e)))?;
    let socket_fd = device.socket_fd();
    let window = vm.shared_window();
    let transport = Arc::new(Mutex::new(MmioTransport::new(
        device,
        (window.guest_addr(), window.size()),
        Some(irq),
    )));
    vm.add_mmio_device(slot, transport.clone())?;
    vm.event_manager()
        .add_subscriber(Arc::new(Mutex::new(BackendWatcher {
            transport: transport.clone(),
            socket_fd,
        })));
    log::info!("virtio-prefetch at {:#x}, GSI {}", slot.base.0, slot.gsi);
    Ok(transport)
}

/// Watches the backend's socket and fails the device when the backend hangs up.
#[derive(Debug)]
pub struct BackendWatcher {
    transport: Arc<Mutex<PrefetchTransport>>,
    socket_fd: i32,
}

impl BackendWatcher {
    /// A watcher for `transport`'s backend socket.
    pub fn new(transport: Arc<Mutex<PrefetchTransport>>) -> Self {
        let socket_fd = transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .device()
            .socket_fd();
        Self {
            transport,
            socket_fd,
        }
    }
}

impl MutEventSubscriber for BackendWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        let events = EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR;
        if let Err(e) = ops.add(Events::new_raw(self.socket_fd, events)) {
            log::error!("cannot watch the vhost-user socket: {e:?}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let _ = ops.remove(events);
        let mut transport = self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        transport.device_mut().set_gone();
        transport.device_failed(&format!(
            "the vhost-user backend hung up ({:?})",
            events.event_set()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_max_follows_the_backend_hint_within_bounds() {
        assert_eq!(queue_max_sizes(None), [DEFAULT_QUEUE_MAX; 3]);
        let config = |queue_sizes| DeviceConfig {
            max_content_len: 16 << 20,
            max_chunk_len: 64 << 10,
            queue_sizes,
        };
        // Smaller hints keep the default; larger powers of two raise it, up to the cap.
        assert_eq!(
            queue_max_sizes(Some(config([64, 1024, 4096]))),
            [256, 1024, 4096]
        );
        // Not a power of two, zero or over the cap: ignored.
        assert_eq!(
            queue_max_sizes(Some(config([384, 0, 8192]))),
            [DEFAULT_QUEUE_MAX; 3]
        );
    }
}
