//! The signing service: parses each request, applies the rate limits and the policy, signs
//! with the locked key, records the signature in the signer's audit log, and replies. A
//! signature that cannot be recorded is not handed out.
//!
//! Threads: the accepting thread hands each connection to one of a fixed pool of workers
//! (started before any filter is installed, so no thread is ever created under seccomp); a
//! connection waits in a short queue when every worker is busy, and is closed when the queue
//! is full too.

use std::{
    io::ErrorKind,
    os::unix::net::{UnixListener, UnixStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use see_audit::{checkpoint, AuditEvent, AuditLog};
use sha2::{Digest, Sha384};

use crate::{
    key::LockedKey,
    policy::Policy,
    protocol::{read_frame, write_frame, Refusal, Reply, Request, MAX_REQUEST_LEN},
    rate::{Bucket, Limit},
};

/// Connections waiting for a free worker, at most.
const QUEUED_CONNECTIONS: usize = 4;

/// The signer's state shared by its workers.
#[derive(Debug)]
pub struct Service {
    key: Arc<LockedKey>,
    policy: Mutex<Policy>,
    audit: Mutex<AuditLog>,
    global: Mutex<Bucket>,
    per_connection: Limit,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    /// A service signing with `key` under `policy`, recording in `audit`.
    pub fn new(
        key: Arc<LockedKey>,
        policy: Policy,
        audit: AuditLog,
        per_connection: Limit,
        global: Limit,
    ) -> Self {
        Self {
            key,
            policy: Mutex::new(policy),
            audit: Mutex::new(audit),
            global: Mutex::new(Bucket::new(global)),
            per_connection,
        }
    }

    /// A fresh bucket for a new connection.
    pub fn connection_bucket(&self) -> Bucket {
        Bucket::new(self.per_connection)
    }

    /// Answers one request body.
    pub fn handle(&self, bucket: &mut Bucket, body: &[u8]) -> Reply {
        match self.sign(bucket, body) {
            Ok(signature) => Reply::Signed(signature),
            Err(refusal) => {
                log::info!("refused: {refusal}");
                Reply::Refused(refusal)
            }
        }
    }

    fn sign(&self, bucket: &mut Bucket, body: &[u8]) -> Result<[u8; 96], Refusal> {
        let request = Request::parse(body)?;
        let now = Instant::now();
        if !bucket.ready(now) || !lock(&self.global).take(now) {
            return Err(Refusal::RateLimited);
        }
        bucket.take(now);
        let checked = lock(&self.policy).check(&request)?;
        let signature = self.key.sign(&request.statement);
        let event = AuditEvent::Signature {
            resource: checked.resource,
            version: checked.version,
            seq: checked.seq,
            epoch: checked.epoch,
            statement_sha384: see_audit::hex(&Sha384::digest(&request.statement)),
        };
        if let Err(e) = lock(&self.audit).append(&event) {
            log::error!("signature withheld: {e}");
            return Err(Refusal::AuditUnavailable);
        }
        Ok(signature)
    }

    /// Closes the audit log (a closing checkpoint).
    pub fn close(&self) -> Result<(), see_audit::AuditError> {
        lock(&self.audit).close()
    }
}

/// The locked key as the audit log's checkpoint signer (when no separate audit key is given).
#[derive(Debug)]
pub struct KeyCheckpoints(pub Arc<LockedKey>);

impl checkpoint::CheckpointSigner for KeyCheckpoints {
    fn verifying_key(&self) -> p384::ecdsa::VerifyingKey {
        self.0.verifying_key()
    }

    fn sign(&self, statement: &[u8]) -> Result<[u8; 96], checkpoint::SignError> {
        Ok(self.0.sign(statement))
    }
}

/// Serves one connection until the client closes it or breaks the framing.
pub fn serve_connection(service: &Service, mut stream: UnixStream) {
    let mut bucket = service.connection_bucket();
    loop {
        let reply = match read_frame(&mut stream, MAX_REQUEST_LEN) {
            Ok(Some(body)) => service.handle(&mut bucket, &body),
            Ok(None) => return,
            Err(e) => {
                // A frame over the limit is answered, then the connection is closed: the rest
                // of it cannot be skipped safely.
                log::warn!("connection closed: {e}");
                let _ = write_frame(&mut stream, &Reply::Refused(Refusal::Malformed).encode());
                return;
            }
        };
        if let Err(e) = write_frame(&mut stream, &reply.encode()) {
            log::warn!("connection closed: {e}");
            return;
        }
    }
}

/// The worker pool: `workers` threads, each calling `on_start` (installing its seccomp
/// filter) before it serves a connection.
#[derive(Debug)]
pub struct Pool {
    connections: mpsc::SyncSender<UnixStream>,
}

impl Pool {
    /// Starts the workers.
    pub fn start(
        service: Arc<Service>,
        workers: usize,
        on_start: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<UnixStream>(QUEUED_CONNECTIONS);
        let rx = Arc::new(Mutex::new(rx));
        let on_start = Arc::new(on_start);
        let (started_tx, started) = mpsc::channel();
        for i in 0..workers.max(1) {
            let (service, rx, on_start) = (service.clone(), rx.clone(), on_start.clone());
            let started_tx = started_tx.clone();
            thread::Builder::new()
                .name(format!("signer-{i}"))
                .spawn(move || {
                    on_start();
                    let _ = started_tx.send(());
                    loop {
                        let next = lock(&rx).recv();
                        match next {
                            Ok(stream) => serve_connection(&service, stream),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        drop(started_tx);
        // Every worker is confined before the first connection is taken.
        for _ in 0..workers.max(1) {
            let _ = started.recv();
        }
        Ok(Self { connections: tx })
    }

    /// Hands `stream` to a worker, or closes it when every worker and queue slot is taken.
    pub fn dispatch(&self, stream: UnixStream) {
        if let Err(mpsc::TrySendError::Full(_)) = self.connections.try_send(stream) {
            log::warn!("connection refused: every worker is busy");
        }
    }
}

/// Accepts connections until `stop` is set (checked at least every 200 ms).
pub fn accept_loop(listener: &UnixListener, pool: &Pool, stop: &AtomicBool) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                pool.dispatch(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                wait_readable(listener, Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn wait_readable(listener: &UnixListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
}
