//! The device logic behind the vhost-user socket: the three queues, the session, demand
//! fetches, chunking of signed bundles into staging buffers, and the API commands.
//!
//! Everything runs on the one worker thread vhost-user-backend gives the device (all three
//! queues and the command eventfd are in one epoll set), so the state needs no finer locking.
//! Every descriptor is checked against the memory the frontend gave (the shared window only)
//! before it is read or written; a bad one is returned with used length 0, counted and
//! reported, and the device goes on.

use std::{
    collections::VecDeque,
    sync::{mpsc, Arc, Mutex},
};

use log::{debug, info, warn};
use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha384};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_prefetch_wire::{
    parse_message, Ack, BundleHeader, Chunk, DeviceConfig, Message, MessageHeader, MessageKind,
    Status, WireError, CONTROL_QUEUE, DEVICE_FEATURES, F_MANIFEST, F_VERSION_1, NUM_QUEUES,
    REQUEST_QUEUE, STAGING_QUEUE,
};
use virtio_queue::QueueT;
use vm_memory::{
    Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion,
};
use vmm_sys_util::{
    epoll::EventSet,
    event::{new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier},
};

#[cfg(feature = "fault-injection")]
use crate::fault::{Faults, Tamper};
use crate::{
    api::{BackendEvent, Eviction, PrefetchOrder, QueueName, Request, Stats},
    manifest::sign_batch,
    signer::{encode_bundle, BundleSpec, Session, Signer},
    store::{ResourceStore, StoredResource},
};

/// The epoll id of the command eventfd (ids up to the queue count are the library's).
pub(crate) const COMMAND_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// Largest ctrlq message the device reads.
const MAX_CTRL_MESSAGE: u32 = 4096;
/// Most prefetches one manifest covers (the wire allows 1024).
const MAX_BATCH: usize = 64;
/// Largest resource put under a manifest (larger ones are signed on their own).
const MAX_BATCHED_RESOURCE: u64 = 256 * 1024;
/// Most content one manifest covers.
const MAX_BATCH_BYTES: u64 = 2 << 20;
/// Largest queue the device accepts.
pub(crate) const MAX_QUEUE_SIZE: usize = 1024;

/// A command from the API.
#[derive(Debug)]
pub(crate) enum Command {
    Prefetch(PrefetchOrder),
    Dispatch(Request),
    Evict(Eviction),
    #[cfg(feature = "fault-injection")]
    SetTamper(Tamper),
}

/// A bundle waiting for (or in the middle of) delivery.
#[derive(Debug)]
enum Work {
    /// Not built yet: built (and signed, with the next sequence number) when its first chunk
    /// is written, so bundles always reach the guest in sequence order.
    Order(Order),
    /// Being chunked.
    Bytes(Box<Outgoing>),
}

/// A prefetch order or a demand, before its bundle is built.
#[derive(Debug)]
struct Order {
    task_id: u64,
    resource_id: u64,
    min_version: u64,
    /// 0 for a prefetch.
    demand_cookie: u32,
    /// The fault injection in force when it was ordered.
    #[cfg(feature = "fault-injection")]
    tamper: Tamper,
}

impl Order {
    /// An honest prefetch, which may go under a batch manifest.
    fn batchable(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.tamper != Tamper::None {
            return false;
        }
        self.demand_cookie == 0
    }
}

#[derive(Debug)]
struct Outgoing {
    stream_id: u64,
    bytes: Vec<u8>,
    offset: usize,
    /// None for a manifest.
    header: Option<BundleHeader>,
    /// Rewrite the last staging buffer after delivery (Tamper::RewriteAfterDelivery).
    #[cfg(feature = "fault-injection")]
    rewrite: bool,
}

/// The device state.
pub(crate) struct PrefetchDevice {
    store: Arc<dyn ResourceStore>,
    signer: Signer,
    config: DeviceConfig,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    session: Option<Session>,
    staging: VecDeque<Work>,
    /// Prefetches ordered before the guest's Hello.
    held_orders: Vec<Work>,
    requests: VecDeque<Vec<u8>>,
    commands: Mutex<mpsc::Receiver<Command>>,
    command_fd: EventConsumer,
    exit: Option<(EventConsumer, EventNotifier)>,
    events: mpsc::Sender<BackendEvent>,
    stats: Arc<Mutex<Stats>>,
    #[cfg(feature = "fault-injection")]
    faults: Faults,
    next_stream: u64,
    batch_manifests: bool,
    acked_features: u64,
}

impl std::fmt::Debug for PrefetchDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchDevice")
            .field("session", &self.session)
            .field("queued", &self.staging.len())
            .finish()
    }
}

type Memory = vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>;

impl PrefetchDevice {
    pub(crate) fn new(
        store: Arc<dyn ResourceStore>,
        key: SigningKey,
        config: DeviceConfig,
        commands: mpsc::Receiver<Command>,
        command_fd: EventConsumer,
        events: mpsc::Sender<BackendEvent>,
        stats: Arc<Mutex<Stats>>,
    ) -> std::io::Result<Self> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(Self {
            store,
            signer: Signer::new(key),
            config,
            mem: None,
            session: None,
            staging: VecDeque::new(),
            held_orders: Vec::new(),
            requests: VecDeque::new(),
            commands: Mutex::new(commands),
            command_fd,
            exit: Some(exit),
            events,
            stats,
            #[cfg(feature = "fault-injection")]
            faults: Faults::new()?,
            next_stream: 1,
            batch_manifests: true,
            acked_features: 0,
        })
    }

    /// Whether runs of prefetches go out under one manifest (when the driver acked F_MANIFEST).
    pub(crate) fn with_batch_manifests(mut self, on: bool) -> Self {
        self.batch_manifests = on;
        self
    }

    /// The work of building a bundle for `resource_id` (a prefetch when `demand_cookie` is 0).
    fn order(&self, task_id: u64, resource_id: u64, min_version: u64, demand_cookie: u32) -> Work {
        Work::Order(Order {
            task_id,
            resource_id,
            min_version,
            demand_cookie,
            #[cfg(feature = "fault-injection")]
            tamper: self.faults.tamper,
        })
    }

    fn emit(&self, event: BackendEvent) {
        // A dropped receiver only means nobody listens.
        let _ = self.events.send(event);
    }

    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn memory(&self) -> Option<Memory> {
        self.mem.as_ref().map(|m| m.memory())
    }

    fn refuse(&self, queue: QueueName, addr: u64, len: u32) {
        warn!("refused a {queue:?} descriptor at {addr:#x} (+{len}): outside the shared memory or unusable");
        self.stat(|s| s.refused_descriptors += 1);
        self.emit(BackendEvent::Refused { queue, addr, len });
    }

    /// Drains the command channel.
    fn take_commands(&mut self) {
        let _ = self.command_fd.consume();
        loop {
            let next = self.commands.lock().map(|r| r.try_recv());
            let Ok(Ok(command)) = next else { break };
            match command {
                Command::Prefetch(order) => {
                    let work = self.order(order.task_id, order.resource_id, 0, 0);
                    if self.session.is_some() {
                        self.staging.push_back(work);
                    } else {
                        self.held_orders.push(work);
                    }
                }
                Command::Dispatch(request) => {
                    let message = Message::Request(virtio_prefetch_wire::Request {
                        request_id: request.request_id,
                        session_id: request.session_id,
                        app_id: request.app_id,
                        request_type: request.request_type,
                        args: &request.args,
                    });
                    let mut buf = vec![0u8; message.encoded_len()];
                    match message.encode(0, &mut buf) {
                        Ok(_) => self.requests.push_back(buf),
                        Err(e) => warn!("request {} not dispatched: {e}", request.request_id),
                    }
                }
                Command::Evict(e) => {
                    // Behind the requests dispatched before it, in the order the host chose.
                    let message = Message::Evict(virtio_prefetch_wire::Evict {
                        app_id: e.app_id,
                        resource_id: e.resource_id,
                    });
                    let mut buf = vec![0u8; message.encoded_len()];
                    match message.encode(0, &mut buf) {
                        Ok(_) => self.requests.push_back(buf),
                        Err(err) => warn!("evict of resource {} not sent: {err}", e.resource_id),
                    }
                }
                #[cfg(feature = "fault-injection")]
                Command::SetTamper(tamper) => self.faults.tamper = tamper,
            }
        }
    }

    /// Builds the next bundle for `work` (signing it now, with the next sequence number).
    fn build(&mut self, work: Work) -> Option<Outgoing> {
        let order = match work {
            Work::Bytes(outgoing) => return Some(*outgoing),
            Work::Order(order) => order,
        };
        let resource_id = order.resource_id;
        let session = self.session?;
        #[cfg(feature = "fault-injection")]
        if let Some(bytes) = self.faults.replay(order.tamper) {
            let header = BundleHeader::parse(&bytes).ok()?;
            return Some(self.outgoing(bytes, Some(header)));
        }
        let resource = match self.fetch(&order) {
            Ok(r) => r,
            Err(e) => {
                warn!("prefetch of resource {resource_id} dropped: {e}");
                return None;
            }
        };
        #[cfg(feature = "fault-injection")]
        let task_id = Faults::signed_task(order.tamper, order.task_id);
        #[cfg(not(feature = "fault-injection"))]
        let task_id = order.task_id;
        let spec = BundleSpec {
            resource: &resource,
            task_id,
            demand_cookie: order.demand_cookie,
        };
        let mut header = self.signer.header(&spec, &session);
        self.signer.sign(&mut header);
        #[cfg(feature = "fault-injection")]
        self.faults.resign(order.tamper, &mut header);
        self.stat(|s| s.signatures += 1);
        self.emit(BackendEvent::Signed {
            resource_id,
            version: header.resource_version,
            seq: header.seq,
            epoch: session.epoch,
            statement_sha384: Sha384::digest(header.to_be_signed()).into(),
        });
        #[cfg(feature = "fault-injection")]
        let content = Faults::corrupt(order.tamper, &mut header, resource.content);
        #[cfg(not(feature = "fault-injection"))]
        let content = resource.content;
        let bytes = encode_bundle(&header, &content);
        #[cfg(feature = "fault-injection")]
        self.faults.remember(&bytes);
        let out = self.outgoing(bytes, Some(header));
        #[cfg(feature = "fault-injection")]
        let out = Outgoing {
            rewrite: order.tamper == Tamper::RewriteAfterDelivery,
            ..out
        };
        Some(out)
    }

    /// With `F_MANIFEST` negotiated, replaces two or more honest prefetch orders at the front
    /// of the queue by one signed manifest followed by the bundles it covers.
    fn batch_front(&mut self) {
        let Some(session) = self.session else { return };
        if !self.batch_manifests || self.acked_features & F_MANIFEST == 0 {
            return;
        }
        // Only small bundles gain: a signature check (about 0.5 ms in the guest) weighs against
        // hashing the content (about 1.2 ms per MiB there), while a batch delays its first
        // bundle until the whole batch is read and hashed here. So batch bundles up to
        // MAX_BATCHED_RESOURCE, and at most MAX_BATCH_BYTES of content per manifest.
        let mut batch_bytes = 0u64;
        let leading = self
            .staging
            .iter()
            .take(MAX_BATCH)
            .take_while(|w| match w {
                Work::Order(order) if order.batchable() => {
                    match self.store.size_of(order.resource_id) {
                        Ok(size)
                            if size <= MAX_BATCHED_RESOURCE
                                && batch_bytes + size <= MAX_BATCH_BYTES =>
                        {
                            batch_bytes += size;
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            })
            .count();
        if leading < 2 {
            return;
        }
        let mut resources = Vec::with_capacity(leading);
        for work in self.staging.drain(..leading) {
            if let Work::Order(order) = work {
                match self.store.get(order.resource_id, 0) {
                    Ok(r) => resources.push((order.task_id, r)),
                    Err(e) => warn!("prefetch of resource {} dropped: {e}", order.resource_id),
                }
            }
        }
        let specs: Vec<BundleSpec<'_>> = resources
            .iter()
            .map(|(task_id, resource)| BundleSpec {
                resource,
                task_id: *task_id,
                demand_cookie: 0,
            })
            .collect();
        let batch = match sign_batch(&mut self.signer, &session, &specs) {
            Ok(batch) => batch,
            Err(e) => {
                warn!("manifest for {} prefetches not built: {e}", specs.len());
                return;
            }
        };
        self.stat(|s| s.signatures += 1);
        let mut ready = Vec::with_capacity(batch.bundles.len() + 1);
        ready.push(self.outgoing(batch.manifest_bytes, None));
        for ((header, bytes), entry) in batch.bundles.into_iter().zip(batch.entries) {
            self.emit(BackendEvent::Signed {
                resource_id: header.resource_id,
                version: header.resource_version,
                seq: header.seq,
                epoch: session.epoch,
                statement_sha384: entry,
            });
            #[cfg(feature = "fault-injection")]
            self.faults.remember(&bytes);
            ready.push(self.outgoing(bytes, Some(header)));
        }
        debug!(
            "manifest seq {} covers {} bundles",
            batch.manifest.seq,
            ready.len() - 1
        );
        for out in ready.into_iter().rev() {
            self.staging.push_front(Work::Bytes(Box::new(out)));
        }
    }

    fn fetch(&self, order: &Order) -> Result<StoredResource, crate::store::StoreError> {
        let newest = self.store.get(order.resource_id, order.min_version)?;
        #[cfg(feature = "fault-injection")]
        if let Some(older) = Faults::rollback(order.tamper, self.store.as_ref(), &newest) {
            return Ok(older);
        }
        Ok(newest)
    }

    fn outgoing(&mut self, bytes: Vec<u8>, header: Option<BundleHeader>) -> Outgoing {
        let stream_id = self.next_stream;
        self.next_stream += 1;
        Outgoing {
            stream_id,
            bytes,
            offset: 0,
            header,
            #[cfg(feature = "fault-injection")]
            rewrite: false,
        }
    }

    /// Rewrites the staging buffer a [`Tamper::RewriteAfterDelivery`] bundle ended in.
    #[cfg(feature = "fault-injection")]
    fn rewrite_delivered(&mut self, mem: &Memory) {
        if let Some((addr, len)) = self.faults.rewrite_pending.take() {
            // The driver has had the buffer back since (it copied it before reposting):
            // rewriting it now must change nothing in the guest (the rewrite-after-copy test).
            match mem.write_slice(&vec![0xA5; len], addr) {
                Ok(()) => {
                    debug!("rewrote {len} bytes of the staging buffer at {:#x}", addr.0);
                    self.stat(|s| s.rewrites += 1);
                }
                Err(e) => warn!("rewrite of the staging buffer at {:#x} failed: {e}", addr.0),
            }
        }
    }

    /// Writes chunks of queued bundles into posted staging buffers.
    fn pump_staging(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        #[cfg(feature = "fault-injection")]
        self.rewrite_delivered(&mem);
        let mut used_any = false;
        while !self.staging.is_empty() {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                break;
            };
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(2).collect();
            let usable = match descriptors.as_slice() {
                [d] if d.is_write_only()
                    && (d.len() as usize) > MessageHeader::LEN + Chunk::FIXED_LEN
                    && mem.check_range(d.addr(), d.len() as usize) =>
                {
                    Some(*d)
                }
                _ => None,
            };
            let Some(desc) = usable else {
                let (addr, len) = descriptors
                    .first()
                    .map_or((0, 0), |d| (d.addr().0, d.len()));
                self.refuse(QueueName::Staging, addr, len);
                let _ = state.add_used(head, 0);
                used_any = true;
                continue;
            };
            let room = (desc.len() as usize - MessageHeader::LEN - Chunk::FIXED_LEN)
                .min(self.config.max_chunk_len as usize);
            self.batch_front();
            let Some(work) = self.staging.pop_front() else {
                break;
            };
            let Some(mut out) = self.build(work) else {
                // Nothing to send after all (unknown resource): give the buffer back.
                let _ = state.add_used(head, 0);
                used_any = true;
                continue;
            };
            let end = (out.offset + room).min(out.bytes.len());
            let chunk = Message::Chunk(Chunk {
                stream_id: out.stream_id,
                total_len: out.bytes.len() as u32,
                offset: out.offset as u32,
                data: &out.bytes[out.offset..end],
            });
            let mut message = vec![0u8; chunk.encoded_len()];
            let written = chunk.encode(0, &mut message).unwrap_or(0);
            if written == 0 || mem.write_slice(&message[..written], desc.addr()).is_err() {
                self.refuse(QueueName::Staging, desc.addr().0, desc.len());
                let _ = state.add_used(head, 0);
                self.staging.push_front(Work::Bytes(Box::new(out)));
                used_any = true;
                continue;
            }
            let _ = state.add_used(head, written as u32);
            used_any = true;
            self.stat(|s| s.chunks += 1);
            out.offset = end;
            if out.offset < out.bytes.len() {
                self.staging.push_front(Work::Bytes(Box::new(out)));
                continue;
            }
            let Some(h) = out.header else {
                self.stat(|s| s.manifests += 1);
                continue;
            };
            self.stat(|s| {
                s.bundles += 1;
                s.bytes += h.content_len;
            });
            self.emit(BackendEvent::Staged {
                resource_id: h.resource_id,
                version: h.resource_version,
                task_id: h.task_id,
                bytes: h.content_len,
                seq: h.seq,
                demand_cookie: h.demand_cookie,
            });
            #[cfg(feature = "fault-injection")]
            if out.rewrite {
                self.faults.rewrite_pending = Some((desc.addr(), written));
            }
        }
        if used_any {
            if let Err(e) = state.signal_used_queue() {
                warn!("stagingq interrupt: {e}");
            }
        }
    }

    /// Writes dispatched requests into posted requestq buffers.
    fn pump_requests(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        let mut used_any = false;
        while let Some(request) = self.requests.front() {
            let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                break;
            };
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(2).collect();
            match descriptors.as_slice() {
                [d] if d.is_write_only()
                    && d.len() as usize >= request.len()
                    && mem.check_range(d.addr(), d.len() as usize)
                    && mem.write_slice(request, d.addr()).is_ok() =>
                {
                    let _ = state.add_used(head, request.len() as u32);
                    let evict = request.get(5) == Some(&MessageKind::Evict.raw());
                    self.requests.pop_front();
                    self.stat(|s| {
                        if evict {
                            s.evicts += 1;
                        } else {
                            s.requests += 1;
                        }
                    });
                }
                other => {
                    let (addr, len) = other.first().map_or((0, 0), |d| (d.addr().0, d.len()));
                    self.refuse(QueueName::Request, addr, len);
                    let _ = state.add_used(head, 0);
                }
            }
            used_any = true;
        }
        if used_any {
            if let Err(e) = state.signal_used_queue() {
                warn!("requestq interrupt: {e}");
            }
        }
    }

    /// Answers every ctrlq chain the driver posted.
    fn process_control(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.memory() else { return };
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return;
        }
        let mut used_any = false;
        while let Some(chain) = state.get_queue_mut().pop_descriptor_chain(mem.clone()) {
            used_any = true;
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.clone().take(3).collect();
            let (msg_desc, ack_desc) = match descriptors.as_slice() {
                [m, a]
                    if !m.is_write_only()
                        && a.is_write_only()
                        && m.len() <= MAX_CTRL_MESSAGE
                        && a.len() as usize >= Ack::MESSAGE_LEN
                        && mem.check_range(m.addr(), m.len() as usize)
                        && mem.check_range(a.addr(), a.len() as usize) =>
                {
                    (*m, *a)
                }
                other => {
                    for d in other {
                        if !mem.check_range(d.addr(), d.len() as usize) {
                            self.refuse(QueueName::Control, d.addr().0, d.len());
                        }
                    }
                    if other
                        .iter()
                        .all(|d| mem.check_range(d.addr(), d.len() as usize))
                    {
                        self.refuse(
                            QueueName::Control,
                            other.first().map_or(0, |d| d.addr().0),
                            0,
                        );
                    }
                    let _ = state.add_used(head, 0);
                    continue;
                }
            };
            let mut message = vec![0u8; msg_desc.len() as usize];
            let (status, detail, cookie) = match mem.read_slice(&mut message, msg_desc.addr()) {
                Ok(()) => self.handle_control(&message),
                Err(_) => (Status::Malformed, 0, 0),
            };
            let ack = Message::Ack(Ack { status, detail });
            let mut buf = [0u8; Ack::MESSAGE_LEN];
            let len = ack.encode(cookie, &mut buf).unwrap_or(0);
            let written = if mem.write_slice(&buf[..len], ack_desc.addr()).is_ok() {
                len as u32
            } else {
                0
            };
            let _ = state.add_used(head, written);
        }
        if used_any {
            if let Err(e) = state.signal_used_queue() {
                warn!("ctrlq interrupt: {e}");
            }
        }
    }

    /// Handles one ctrlq message; returns the Ack's status, detail and cookie.
    fn handle_control(&mut self, bytes: &[u8]) -> (Status, u32, u32) {
        let (header, message) = match parse_message(bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                debug!("malformed ctrlq message: {e}");
                self.stat(|s| s.malformed += 1);
                self.emit(BackendEvent::Malformed { error: e });
                return (Status::Malformed, 0, 0);
            }
        };
        match message {
            Message::Hello(hello) => {
                info!("guest session: epoch {}", hello.epoch);
                self.session = Some(Session {
                    nonce: hello.nonce,
                    epoch: hello.epoch,
                });
                self.signer.new_session();
                // Bundles built for an older session are useless now; held orders can go.
                self.staging
                    .retain(|w| matches!(w, Work::Order(order) if order.demand_cookie == 0));
                let held = std::mem::take(&mut self.held_orders);
                self.staging.extend(held);
                self.emit(BackendEvent::Hello {
                    nonce: hello.nonce,
                    epoch: hello.epoch,
                });
                (Status::Ok, 0, header.cookie)
            }
            Message::Demand(demand) => {
                let refuse = |device: &Self, status| {
                    device.stat(|s| s.demands_refused += 1);
                    device.emit(BackendEvent::Demand {
                        app_id: demand.app_id,
                        task_id: demand.task_id,
                        resource_id: demand.resource_id,
                        served: false,
                    });
                    (status, 0, header.cookie)
                };
                if self.session.is_none() {
                    return refuse(self, Status::BadSession);
                }
                if header.cookie == 0 {
                    return refuse(self, Status::Malformed);
                }
                let size = match self.store.size_of(demand.resource_id) {
                    Ok(size) if size <= u64::from(self.config.max_content_len) => size,
                    Ok(_) => return refuse(self, Status::TooLarge),
                    Err(_) => return refuse(self, Status::UnknownResource),
                };
                self.stat(|s| s.demands += 1);
                self.emit(BackendEvent::Demand {
                    app_id: demand.app_id,
                    task_id: demand.task_id,
                    resource_id: demand.resource_id,
                    served: true,
                });
                // Ahead of queued prefetches, behind a bundle already half-delivered.
                // Behind every bundle already built (their sequence numbers come first).
                let at = self
                    .staging
                    .iter()
                    .take_while(|w| matches!(w, Work::Bytes(_)))
                    .count();
                let work = self.order(
                    demand.task_id,
                    demand.resource_id,
                    demand.min_version,
                    header.cookie,
                );
                self.staging.insert(at.min(self.staging.len()), work);
                (
                    Status::Ok,
                    (size + BundleHeader::LEN as u64) as u32,
                    header.cookie,
                )
            }
            Message::Report(r) => {
                self.stat(|s| s.reports += 1);
                self.emit(BackendEvent::Report {
                    kind: r.kind,
                    reason: r.reason,
                    app_id: r.app_id,
                    task_id: r.task_id,
                    resource_id: r.resource_id,
                    version: r.version,
                    latency_ns: r.latency_ns,
                });
                (Status::Ok, 0, header.cookie)
            }
            Message::Complete(c) => {
                self.stat(|s| s.completions += 1);
                self.emit(BackendEvent::Complete {
                    request_id: c.request_id,
                    status: c.status,
                    total_ns: c.total_ns,
                    tasks: c.tasks.iter().collect(),
                });
                (Status::Ok, 0, header.cookie)
            }
            other => {
                debug!("unexpected {:?} on ctrlq", other.kind());
                self.stat(|s| s.malformed += 1);
                self.emit(BackendEvent::Malformed {
                    error: WireError::BadKind(header.kind.raw()),
                });
                (
                    Status::Malformed,
                    u32::from(MessageKind::raw(header.kind)),
                    header.cookie,
                )
            }
        }
    }
}

impl VhostUserBackendMut for PrefetchDevice {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        // F_MANIFEST is offered; batches are sent only when the driver acked it.
        DEVICE_FEATURES | F_VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn reset_device(&mut self) {
        info!("device reset: session ended");
        self.session = None;
        self.staging.clear();
        self.requests.clear();
        #[cfg(feature = "fault-injection")]
        {
            self.faults.rewrite_pending = None;
        }
        self.emit(BackendEvent::Reset);
    }

    fn acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.config.encode();
        let start = (offset as usize).min(config.len());
        let end = start.saturating_add(size as usize).min(config.len());
        let mut out = config[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let regions: Vec<_> = mem
            .memory()
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect();
        info!("memory table: {regions:x?} (the only guest memory this backend can touch)");
        self.mem = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        vec![(1 << NUM_QUEUES) - 1]
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = self.exit.as_ref()?;
        Some((consumer.try_clone().ok()?, notifier.try_clone().ok()?))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let [requestq, stagingq, ctrlq] = vrings else {
            return Err(std::io::Error::other(
                "virtio-prefetch needs exactly three queues",
            ));
        };
        match device_event {
            e if e == CONTROL_QUEUE => self.process_control(ctrlq),
            e if e == COMMAND_EVENT => self.take_commands(),
            e if e == REQUEST_QUEUE || e == STAGING_QUEUE => {}
            other => debug!("unknown event {other}"),
        }
        // Any event can make work possible on the device-to-driver queues.
        self.pump_requests(requestq);
        self.pump_staging(stagingq);
        Ok(())
    }
}
