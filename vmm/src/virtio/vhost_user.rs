//! A vhost-user frontend as a [`VirtioDevice`]: the backend process runs the device; the VMM
//! only negotiates, hands it the shared window and the queue addresses, and passes it two
//! kinds of eventfd: one kick per queue (a KVM ioeventfd on QueueNotify) and one call for
//! all queues (a KVM irqfd on the device's GSI).
//!
//! At connect: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (with MQ),
//! GET_CONFIG (the config space is cached: it is read-only). At DRIVER_OK: SET_FEATURES (the
//! driver's features plus `VHOST_USER_F_PROTOCOL_FEATURES`), SET_MEM_TABLE with ONLY the
//! shared window, then per ready queue SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE. A device
//! reset stops every started ring with GET_VRING_BASE.

use std::{
    io,
    os::{
        fd::{AsRawFd, RawFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vhost::{
    vhost_user::{
        message::VhostUserConfigFlags, Frontend, VhostUserFrontend, VhostUserProtocolFeatures,
        VhostUserVirtioFeatures,
    },
    VhostBackend, VhostUserMemoryRegionInfo, VringConfigData,
};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActivateError, QueueConfig, VirtioDevice, F_VERSION_1};
use crate::memory::SharedWindow;

/// How long one request to the backend may take before the VMM gives up on it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two connection attempts while the backend is not listening yet.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// `VHOST_USER_F_PROTOCOL_FEATURES`: a vhost-user bit, never shown to the guest.
pub const F_PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Why the frontend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The socket never accepted a connection.
    #[error("cannot connect to the vhost-user backend at {path} (tried for {waited:?}): {source}; start the backend on that socket first")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// How long it was tried.
        waited: Duration,
        /// The last error.
        source: io::Error,
    },
    /// A request during negotiation failed.
    #[error("vhost-user backend at {path}: {what} failed: {source}")]
    Request {
        /// The socket path.
        path: PathBuf,
        /// Which request.
        what: &'static str,
        /// The error.
        source: vhost::Error,
    },
    /// The backend lacks something this device needs.
    #[error("feature negotiation with the vhost-user backend at {path} failed: {what}")]
    Negotiation {
        /// The socket path.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// An eventfd could not be made.
    #[error("cannot create an eventfd for the vhost-user device: {0}")]
    EventFd(#[source] io::Error),
}

/// What the frontend expects of its device.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// virtio device ID shown to the guest.
    pub device_id: u32,
    /// virtio-mmio VendorID shown to the guest.
    pub vendor_id: u32,
    /// Number of queues the device has.
    pub num_queues: usize,
    /// Size of the configuration space read with GET_CONFIG.
    pub config_len: u32,
    /// Feature bits the backend must offer (VERSION_1 is always required).
    pub required_features: u64,
}

/// A device run by a vhost-user backend.
pub struct VhostUserDevice {
    frontend: Frontend,
    path: PathBuf,
    spec: DeviceSpec,
    socket_fd: RawFd,
    window: SharedWindow,
    features: u64,
    config: Vec<u8>,
    queue_max: Vec<u16>,
    call: EventFd,
    kicks: Vec<EventFd>,
    started: Vec<u16>,
    gone: bool,
}

impl std::fmt::Debug for VhostUserDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserDevice")
            .field("path", &self.path)
            .field("features", &format_args!("{:#x}", self.features))
            .field("started", &self.started)
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

fn connect_with_retry(path: &Path, timeout: Duration) -> Result<UnixStream, VhostUserError> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < timeout =>
            {
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(source) => {
                return Err(VhostUserError::Connect {
                    path: path.to_owned(),
                    waited: start.elapsed(),
                    source,
                })
            }
        }
    }
}

impl VhostUserDevice {
    /// Connects to the backend listening on `path` (retrying for up to `timeout` while the
    /// socket is missing or refuses) and negotiates everything that does not need the driver.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        window: SharedWindow,
        spec: DeviceSpec,
        default_queue_max: u16,
    ) -> Result<Self, VhostUserError> {
        let stream = connect_with_retry(path, timeout)?;
        let io_err = |source| VhostUserError::Connect {
            path: path.to_owned(),
            waited: Duration::ZERO,
            source,
        };
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io_err)?;
        stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(io_err)?;
        let mut frontend = Frontend::from_stream(stream, spec.num_queues as u64);
        let req = |what| {
            move |source| VhostUserError::Request {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let refuse = |what: String| VhostUserError::Negotiation {
            path: path.to_owned(),
            what,
        };
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(req("GET_FEATURES"))?;
        let required = spec.required_features | F_VERSION_1 | F_PROTOCOL_FEATURES;
        if offered & required != required {
            return Err(refuse(format!(
                "it offers features {offered:#x}, this device needs {required:#x} (VIRTIO_F_VERSION_1 and VHOST_USER_F_PROTOCOL_FEATURES included)"
            )));
        }
        let protocol = frontend
            .get_protocol_features()
            .map_err(req("GET_PROTOCOL_FEATURES"))?;
        if !protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(refuse(
                "it lacks the CONFIG protocol feature (the device config space comes from GET_CONFIG)".into(),
            ));
        }
        let wanted = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK;
        frontend
            .set_protocol_features(protocol & wanted)
            .map_err(req("SET_PROTOCOL_FEATURES"))?;
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let queues = frontend.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
            if queues < spec.num_queues as u64 {
                return Err(refuse(format!(
                    "it has {queues} queues, this device needs {}",
                    spec.num_queues
                )));
            }
        }
        let zeros = vec![0u8; spec.config_len as usize];
        let (_, config) = frontend
            .get_config(0, spec.config_len, VhostUserConfigFlags::empty(), &zeros)
            .map_err(req("GET_CONFIG"))?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(VhostUserError::EventFd)?;
        let kicks = (0..spec.num_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(VhostUserError::EventFd)?;
        let socket_fd = frontend.as_raw_fd();
        log::info!(
            "vhost-user backend at {} connected: features {offered:#x}, protocol features {:#x}",
            path.display(),
            (protocol & wanted).bits()
        );
        Ok(Self {
            frontend,
            path: path.to_owned(),
            socket_fd,
            window,
            features: offered & !F_PROTOCOL_FEATURES,
            config,
            queue_max: vec![default_queue_max; spec.num_queues],
            spec,
            call,
            kicks,
            started: Vec::new(),
            gone: false,
        })
    }

    /// Sets QueueNumMax of each queue (extra sizes are ignored, missing ones keep theirs).
    pub fn set_queue_max_sizes(&mut self, sizes: &[u16]) {
        for (max, &size) in self.queue_max.iter_mut().zip(sizes) {
            *max = size;
        }
    }

    /// The eventfd the backend writes for every queue: register it as the device's irqfd.
    pub fn call_event(&self) -> &EventFd {
        &self.call
    }

    /// The per-queue kick eventfds: register each as an ioeventfd on QueueNotify.
    pub fn kick_events(&self) -> &[EventFd] {
        &self.kicks
    }

    /// The socket to the backend, to watch for its hang-up.
    pub fn socket_fd(&self) -> RawFd {
        self.socket_fd
    }

    /// The backend is gone: every later activation fails at once.
    pub fn set_gone(&mut self) {
        self.gone = true;
    }

    fn host(
        &self,
        queue: u16,
        ring: &'static str,
        addr: GuestAddress,
        len: u64,
    ) -> Result<u64, ActivateError> {
        self.window
            .host_address_of(addr, len)
            .ok_or(ActivateError::RingOutsideWindow {
                queue,
                ring,
                addr: addr.0,
            })
    }

    fn start_queue(&mut self, q: &QueueConfig) -> Result<(), ActivateError> {
        let i = usize::from(q.index);
        let n = u64::from(q.size);
        let data = VringConfigData {
            queue_max_size: self.queue_max[i],
            queue_size: q.size,
            flags: 0,
            desc_table_addr: self.host(q.index, "descriptor", q.desc, 16 * n)?,
            used_ring_addr: self.host(q.index, "used", q.used, 6 + 8 * n)?,
            avail_ring_addr: self.host(q.index, "available", q.avail, 6 + 2 * n)?,
            log_addr: None,
        };
        let err = |what| move |source| ActivateError::Backend { what, source };
        let f = &mut self.frontend;
        f.set_vring_num(i, q.size).map_err(err("SET_VRING_NUM"))?;
        f.set_vring_addr(i, &data).map_err(err("SET_VRING_ADDR"))?;
        f.set_vring_base(i, 0).map_err(err("SET_VRING_BASE"))?;
        f.set_vring_call(i, &self.call)
            .map_err(err("SET_VRING_CALL"))?;
        f.set_vring_kick(i, &self.kicks[i])
            .map_err(err("SET_VRING_KICK"))?;
        self.started.push(q.index);
        f.set_vring_enable(i, true).map_err(err("SET_VRING_ENABLE"))
    }
}

impl VirtioDevice for VhostUserDevice {
    fn device_id(&self) -> u32 {
        self.spec.device_id
    }

    fn vendor_id(&self) -> u32 {
        self.spec.vendor_id
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max
    }

    fn config(&self) -> &[u8] {
        &self.config
    }

    fn interrupts_bypass_vmm(&self) -> bool {
        true
    }

    fn activate(&mut self, features: u64, queues: &[QueueConfig]) -> Result<(), ActivateError> {
        if self.gone {
            return Err(ActivateError::BackendGone);
        }
        let err = |what| move |source| ActivateError::Backend { what, source };
        self.frontend
            .set_features(features | F_PROTOCOL_FEATURES)
            .map_err(err("SET_FEATURES"))?;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: self.window.guest_addr().0,
            memory_size: self.window.size(),
            userspace_addr: self.window.host_addr(),
            mmap_offset: self.window.file_offset(),
            mmap_handle: self.window.raw_fd(),
        };
        self.frontend
            .set_mem_table(&[region])
            .map_err(err("SET_MEM_TABLE"))?;
        for q in queues {
            self.start_queue(q)?;
        }
        log::info!(
            "vhost-user backend at {}: {} queue(s) started",
            self.path.display(),
            queues.len()
        );
        Ok(())
    }

    fn reset(&mut self) {
        for q in std::mem::take(&mut self.started) {
            if self.gone {
                break;
            }
            match self.frontend.get_vring_base(usize::from(q)) {
                Ok(base) => log::debug!("vhost-user queue {q} stopped at {base}"),
                Err(e) => log::warn!("vhost-user queue {q}: GET_VRING_BASE failed: {e}"),
            }
        }
    }

    fn notify(&mut self, queue: u16) {
        if let Some(kick) = self.kicks.get(usize::from(queue)) {
            if let Err(e) = kick.write(1) {
                log::warn!("vhost-user queue {queue}: kick failed: {e}");
            }
        }
    }
}
