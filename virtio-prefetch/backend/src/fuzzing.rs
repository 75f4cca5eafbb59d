//! The device without a socket, for the fuzz targets (feature `fuzzing`, off by default): a
//! fuzz target hands it guest memory and vrings it built itself (e.g. with virtio-queue's
//! `MockSplitQueue`) and kicks its queues as the vhost-user worker would.

use std::{
    io,
    sync::{mpsc, Arc, Mutex},
};

use p384::ecdsa::SigningKey;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock};
use virtio_prefetch_wire::DeviceConfig;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};

use crate::{
    device::{Command, Parts, PrefetchDevice, WORK_EVENT},
    signer::LocalSigner,
    store::ResourceStore,
    BackendEvent, Stats,
};

/// The device and the ends of its channels.
pub struct FuzzDevice {
    device: PrefetchDevice,
    stats: Arc<Mutex<Stats>>,
    events: mpsc::Receiver<BackendEvent>,
    _commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for FuzzDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzDevice").finish_non_exhaustive()
    }
}

impl FuzzDevice {
    /// A device with one fetch worker over `store`, signing with `key`.
    pub fn new(store: Arc<dyn ResourceStore>, key: SigningKey) -> io::Result<Self> {
        let (commands, receiver) = mpsc::channel();
        let (events_tx, events) = mpsc::sync_channel(crate::EVENT_QUEUE);
        let (command_fd, _wake) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let stats = Arc::new(Mutex::new(Stats::default()));
        let device = PrefetchDevice::new(Parts {
            store,
            signer: Arc::new(LocalSigner::new(key)),
            config: DeviceConfig {
                max_content_len: 1 << 20,
                max_chunk_len: 4096,
                queue_sizes: [64, 256, 128],
            },
            fetch_workers: 1,
            commands: receiver,
            command_fd,
            events: events_tx,
            stats: stats.clone(),
            hook: None,
            floors: Arc::new(crate::floors::Floors::in_memory()),
            floors_validity_s: crate::DEFAULT_FLOORS_VALIDITY.as_secs(),
        })?;
        Ok(Self {
            device,
            stats,
            events,
            _commands: commands,
        })
    }

    /// Gives the device its guest memory (`VHOST_USER_SET_MEM_TABLE`).
    pub fn set_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.device.update_memory(mem)
    }

    /// A kick of queue `queue` (0 requestq, 1 stagingq, 2 ctrlq) with the three `vrings`.
    pub fn kick(&mut self, queue: u16, vrings: &[VringRwLock]) -> io::Result<()> {
        self.device.handle_event(queue, EventSet::IN, vrings, 0)
    }

    /// The work eventfd fired (a fetch or a seal finished).
    pub fn work(&mut self, vrings: &[VringRwLock]) -> io::Result<()> {
        self.device
            .handle_event(WORK_EVENT, EventSet::IN, vrings, 0)
    }

    /// The device resets (the driver wrote status 0).
    pub fn reset(&mut self) {
        self.device.reset_device();
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes every event waiting; returns how many there were.
    pub fn drain_events(&self) -> usize {
        self.events.try_iter().count()
    }
}
