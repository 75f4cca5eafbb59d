//! Used-ring processing: every element the device returns is checked against the private
//! record (queue.rs), every buffer is copied out of the shared window once, then parsed,
//! reassembled and verified in private memory; trusted state changes only after every check.

use core::sync::atomic::Ordering;

use log::{debug, warn};

use crate::{
    driver::{
        AckState, BrokenReason, CtrlPurpose, DriverState, Source, ACK_BUF, CTRLQ,
        MAX_QUEUED_REQUESTS, REQUESTQ, REQUEST_BUF, STAGINGQ, STATUS_CHECK_NS,
    },
    mmio::{self, irq},
    msg::{self, RejectReason, ReportKind, RequestqMessage, Status},
    platform::Platform,
    queue::{Segment, UsedFault},
    store::Content,
    verify::Verdict,
    Completion, Driver,
};

impl<P: Platform> Driver<P> {
    /// Processes every used buffer on all three queues: incoming requests, staging chunks
    /// (copied once, reassembled, verified, stored), ctrlq Acks. Cheap when nothing happened:
    /// three reads of a used index from the shared window, and no register access unless an
    /// interrupt was signalled (polling mode: a status read at most once per millisecond).
    pub fn poll(&mut self) {
        self.poll_with(true);
    }

    /// [`Driver::poll`] for the claim path: in polling mode it skips the periodic status-register
    /// read (a VM exit), so a staged claim never pays one; waits and `poll` still make it.
    pub(crate) fn poll_rings(&mut self) {
        self.poll_with(false);
    }

    fn poll_with(&mut self, status_check: bool) {
        if self.irq.0.pending.swap(false, Ordering::Acquire) {
            let isr = self.p.mmio_read32(mmio::reg::INTERRUPT_STATUS);
            self.counters.register_accesses += 1;
            if isr != 0 {
                self.counters.register_accesses += 1;
                self.p.mmio_write32(mmio::reg::INTERRUPT_ACK, isr);
            }
            if let Some(age) = self.p.interrupt_age_ns() {
                // From the interrupt, or from the end of the last poll if it came while the
                // rings were being processed, to now: the wake-up and the status registers.
                let now = self.p.now_ns();
                let since = now.saturating_sub(age).max(self.last_poll_end);
                self.profile.notifications += 1;
                self.profile.notify_ns += now.saturating_sub(since);
            }
            if isr & irq::CONFIG_CHANGE != 0 {
                self.check_device();
            }
        } else if status_check
            && self.config.completion == Completion::Polling
            && self.p.now_ns().saturating_sub(self.last_status_check) >= STATUS_CHECK_NS
        {
            self.check_device();
        }
        if self.state != DriverState::Ready {
            return;
        }
        let mut used = core::mem::take(&mut self.scratch);
        // requestq first: a host Evict makes room before the bundle sent after it arrives.
        for q in [REQUESTQ, STAGINGQ, CTRLQ] {
            used.clear();
            let Some(r) = self.rings.as_mut() else { break };
            let queue = match q {
                REQUESTQ => &mut r.requestq,
                STAGINGQ => &mut r.stagingq,
                _ => &mut r.ctrlq,
            };
            if let Err(e) = queue.collect(&self.p, &mut used) {
                warn!("virtio-prefetch: {e}");
                self.counters.malformed += 1;
                self.discard(BrokenReason::Protocol(e));
                break;
            }
            for u in used.drain(..) {
                match (q, u) {
                    (
                        _,
                        Err(UsedFault::LengthTooLong {
                            token,
                            len,
                            capacity,
                        }),
                    ) => {
                        debug!("virtio-prefetch: queue {q}: used length {len} > {capacity}");
                        self.counters.malformed += 1;
                        self.recycle(q, token, None);
                    }
                    (_, Err(f)) => {
                        debug!("virtio-prefetch: queue {q}: dropped used element {f:?}");
                        self.counters.malformed += 1;
                    }
                    (_, Ok(u)) => self.recycle(q, u.token, Some(u.len)),
                }
            }
        }
        self.scratch = used;
        self.kick_reposted();
        self.last_poll_end = self.p.now_ns();
    }

    /// Notifies stagingq and requestq if buffers were reposted on them since their last notify.
    fn kick_reposted(&mut self) {
        let Some(r) = self.rings.as_mut() else { return };
        let staging = core::mem::take(&mut r.staging_unkicked);
        let request = core::mem::take(&mut r.request_unkicked);
        if self.state != DriverState::Ready {
            return;
        }
        if staging {
            self.kick(STAGINGQ);
        }
        if request {
            self.kick(REQUESTQ);
        }
    }

    /// Handles one used buffer (`len` None: refused, only recycle) and gives it back.
    fn recycle(&mut self, q: u16, token: u32, len: Option<u32>) {
        let Some(r) = self.rings.as_ref() else { return };
        match q {
            STAGINGQ => {
                let Some(&gpa) = r.staging_bufs.get(token as usize) else {
                    return;
                };
                if let Some(len) = len {
                    self.on_staging(gpa, len);
                }
                self.repost(STAGINGQ, token);
            }
            REQUESTQ => {
                let Some(&gpa) = r.request_bufs.get(token as usize) else {
                    return;
                };
                if let Some(len) = len {
                    self.on_request(gpa, len);
                }
                self.repost(REQUESTQ, token);
            }
            _ => {
                let Some(slot) = r.ctrl.get(token as usize).copied() else {
                    return;
                };
                let ack = match len {
                    Some(len) => self.read_ack(slot.ack_gpa, len),
                    None => AckState::Garbled,
                };
                self.on_ack(token as usize, ack);
            }
        }
    }

    fn repost(&mut self, q: u16, token: u32) {
        if self.state != DriverState::Ready {
            return;
        }
        let Some(r) = self.rings.as_mut() else { return };
        let (queue, bufs, len) = if q == STAGINGQ {
            (&mut r.stagingq, &r.staging_bufs, r.staging_len)
        } else {
            (&mut r.requestq, &r.request_bufs, REQUEST_BUF)
        };
        // Tokens come from the driver's own record, so this always finds the buffer.
        let Some(&gpa) = bufs.get(token as usize) else {
            return;
        };
        queue.post(
            &self.p,
            &[Segment {
                gpa,
                len,
                writable: true,
            }],
            token,
        );
        // One notify per poll for all buffers reposted in it (see the end of `poll`): a device
        // that only looks at the avail ring when notified must learn of every buffer, or
        // staging stalls once it has used the ones it knew about.
        if q == STAGINGQ {
            r.staging_unkicked = true;
        } else {
            r.request_unkicked = true;
        }
    }

    /// A staging buffer came back with `len` bytes: copy them out of the shared window once
    /// into private memory, parse the chunk there, reassemble, and verify a completed object.
    fn on_staging(&mut self, gpa: u64, len: u32) {
        let start = self.p.now_ns();
        let mut copy = core::mem::take(&mut self.staging_copy);
        copy.clear();
        copy.resize(len as usize, 0);
        self.p.shared_read(gpa, &mut copy);
        let copied = self.p.now_ns();
        self.profile.copy_ns += copied.saturating_sub(start);
        let p = &self.p;
        let clock = || p.now_ns();
        let mut refused = None;
        let done = match msg::parse_chunk(&copy) {
            None => {
                self.counters.malformed += 1;
                None
            }
            Some(chunk) => match self.reassembly.accept(&chunk, &clock) {
                Ok(done) => done,
                Err(crate::reassembly::ChunkError::Tree { reason, header }) => {
                    debug!(
                        "virtio-prefetch: bundle of stream {} refused as it arrived: {reason:?}",
                        chunk.stream_id
                    );
                    refused = Some((reason, header));
                    None
                }
                Err(e) => {
                    debug!(
                        "virtio-prefetch: chunk of stream {} dropped: {e}",
                        chunk.stream_id
                    );
                    if matches!(e, crate::reassembly::ChunkError::TooLarge(_)) {
                        self.count_reject(RejectReason::TooLarge);
                    } else {
                        self.counters.malformed += 1;
                    }
                    None
                }
            },
        };
        self.staging_copy = copy;
        // The tree check (the list against the root, each chunk's hash) is the hash stage.
        let hash_ns = self.reassembly.take_hash_ns();
        self.profile.hash_ns += hash_ns;
        self.profile.reassemble_ns += self
            .p
            .now_ns()
            .saturating_sub(copied)
            .saturating_sub(hash_ns);
        if let Some((reason, header)) = refused {
            let rej = crate::verify::reject_for(header.as_deref(), &self.demands, reason);
            self.on_reject(rej);
        }
        if let Some(object) = done {
            self.on_object(object);
        }
    }

    pub(crate) fn count_reject(&mut self, reason: RejectReason) {
        if let Some(slot) = self.counters.rejected.get_mut(reason.raw() as usize) {
            *slot += 1;
        }
    }

    /// A reassembled object (private memory): verify, then change trusted state.
    fn on_object(&mut self, object: crate::reassembly::Object) {
        let crate::reassembly::Object {
            bytes: object,
            tree_root,
        } = object;
        let now = self.p.now_ns();
        let p = &self.p;
        let clock = || p.now_ns();
        let mut watch = crate::verify::Stopwatch::new(&clock);
        let verdict = crate::verify::check(
            &mut watch,
            &object,
            tree_root,
            &self.key,
            &self.session,
            &self.versions,
            &self.registry,
            &self.demands,
            self.max_content_len,
            self.features & msg::F_MANIFEST != 0,
            self.floors_trust,
        );
        self.profile.signature_ns += watch.signature_ns;
        match verdict {
            Ok(Verdict::Bundle(b)) => {
                let insert_start = self.p.now_ns();
                // Every check passed: now, and only now, trusted state changes.
                self.session.last_seq = Some(b.seq);
                if let Some(d) = b.manifest_digest {
                    self.session.manifest_digests.remove(&d);
                }
                let floor = self.versions.entry(b.resource.resource_id).or_insert(0);
                *floor = (*floor).max(b.resource.version);
                self.counters.accepted += 1;
                let mut r = b.resource;
                r.verified_ns = now;
                // Readers get the content where it was reassembled, after the header.
                let offset = b.content_offset;
                r.content = Content::from_object(object, offset);
                // Prefetched and demanded bundles both enter the cache (evicting the least
                // recently used); the demand that asked for one gets a share.
                if let Some(cookie) = b.demand {
                    r.source = Source::Demanded;
                    if let Some(d) = self.demands.get_mut(&cookie) {
                        d.outcome = Some(Ok(r.clone()));
                        d.arrived = self.counters.accepted;
                    }
                }
                let len = r.content.len() as u64;
                for old in self.store.insert(r) {
                    self.counters.evicted += 1;
                    self.report_resource(ReportKind::Evict, &old, 0);
                }
                self.profile.bundles += 1;
                self.profile.bytes += len;
                self.profile.insert_ns += self.p.now_ns().saturating_sub(insert_start);
            }
            Ok(Verdict::Floors {
                serial,
                issued_at,
                floors,
            }) => {
                // Floors only rise; the session may now accept bundles.
                for f in floors {
                    let floor = self.versions.entry(f.resource_id).or_insert(0);
                    *floor = (*floor).max(f.min_version);
                }
                let trust = &mut self.floors_trust;
                trust.serial = Some(trust.serial.map_or(serial, |s| s.max(serial)));
                trust.time_floor = trust.time_floor.max(issued_at);
                self.session.has_floors = true;
                self.counters.floors_snapshots += 1;
            }
            Ok(Verdict::Manifest { seq, digests }) => {
                self.session.last_seq = Some(seq);
                self.session.add_manifest(digests);
                self.counters.manifests += 1;
            }
            Err(rej) => self.on_reject(rej),
        }
    }

    /// A refused object: counted by reason, its demand (if it named one) failed at once, and
    /// reported. Trusted state does not change.
    fn on_reject(&mut self, rej: crate::verify::Reject) {
        debug!("virtio-prefetch: object rejected: {:?}", rej.reason);
        self.count_reject(rej.reason);
        if let Some(cookie) = rej.demand {
            if let Some(d) = self.demands.get_mut(&cookie) {
                d.outcome.get_or_insert(Err(rej.reason));
            }
        }
        self.report(ReportKind::Reject, Some(rej.reason), rej.ids, 0);
    }

    fn on_request(&mut self, gpa: u64, len: u32) {
        let mut buf = alloc::vec![0u8; len as usize];
        self.p.shared_read(gpa, &mut buf);
        match msg::parse_requestq(&buf) {
            Some(RequestqMessage::Evict(app_id, resource_id)) => {
                self.on_host_evict(app_id, resource_id)
            }
            Some(RequestqMessage::Request(r)) if self.requests.len() < MAX_QUEUED_REQUESTS => {
                self.counters.requests += 1;
                self.requests.push_back(r);
            }
            Some(RequestqMessage::Request(_)) => {
                warn!("virtio-prefetch: request queue full; request dropped");
                self.counters.requests_dropped += 1;
            }
            None => self.counters.malformed += 1,
        }
    }

    /// The host's Evict: drops the cached entry of (app, resource) if there is one. Nothing
    /// else: another app's entry is keyed apart and cannot be named, shares handed to tasks stay
    /// valid (reference-counted), and version floors are kept.
    fn on_host_evict(&mut self, app_id: u32, resource_id: u64) {
        match self.store.remove(app_id, resource_id) {
            Some(old) => {
                self.counters.host_evicts += 1;
                self.counters.evicted += 1;
                self.report_resource(ReportKind::Evict, &old, 0);
            }
            None => {
                debug!("virtio-prefetch: evict of app {app_id} resource {resource_id}: not cached");
                self.counters.evicts_refused += 1;
            }
        }
    }

    fn read_ack(&mut self, gpa: u64, len: u32) -> AckState {
        let mut buf = [0u8; ACK_BUF as usize];
        let n = (len as usize).min(buf.len());
        self.p.shared_read(gpa, &mut buf[..n]);
        match msg::parse_ack(&buf[..n]) {
            Some((ack, cookie)) if ack.status == Status::Ok => AckState::Ok(cookie),
            Some((ack, _)) => AckState::Status(ack.status.raw()),
            None => {
                self.counters.malformed += 1;
                AckState::Garbled
            }
        }
    }

    fn on_ack(&mut self, slot: usize, ack: AckState) {
        let Some(r) = self.rings.as_mut() else { return };
        let Some(purpose) = r.ctrl.get_mut(slot).and_then(|s| s.busy.take()) else {
            return;
        };
        match purpose {
            CtrlPurpose::Demand(cookie) => {
                // An Ok Ack must echo the demand id.
                let ack = match ack {
                    AckState::Ok(c) if c != cookie => {
                        self.counters.malformed += 1;
                        AckState::Garbled
                    }
                    other => other,
                };
                if let Some(d) = self.demands.get_mut(&cookie) {
                    d.ack = ack;
                }
            }
            CtrlPurpose::Hello => self.session.hello_ack = ack,
            CtrlPurpose::Report | CtrlPurpose::Complete => {
                if !matches!(ack, AckState::Ok(_)) {
                    debug!("virtio-prefetch: {purpose:?} answered {ack:?}");
                }
            }
        }
    }
}
