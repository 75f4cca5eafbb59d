//! The 16-byte message header and every message payload of the three queues.
//!
//! Layouts (all little-endian, offsets from the start of the payload) are tabulated in
//! `virtio-prefetch/SPEC.md`. A payload's length must equal its fixed part plus its declared
//! variable part exactly: trailing bytes are an error, not ignored.

use crate::bytes::{Reader, Writer};
use crate::{WireError, MAX_COMPLETE_TASKS, MAX_REQUEST_ARGS, NONCE_LEN};

/// Generates a `u8`/`u32`-backed enum with a checked `from_raw`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident: $repr:ty, $field:literal { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Decodes the raw value, refusing anything undefined.
            pub fn from_raw(raw: $repr) -> Result<Self, WireError> {
                match raw {
                    $($value => Ok($name::$variant),)+
                    other => Err(WireError::BadValue { field: $field, value: u64::from(other) }),
                }
            }

            /// The raw value on the wire.
            pub fn raw(self) -> $repr {
                self as $repr
            }
        }
    };
}

wire_enum!(
    /// What a message is; each kind belongs to one queue and direction.
    MessageKind: u8, "header.kind" {
        /// requestq, device to driver: a request to run.
        Request = 0x01,
        /// requestq, device to driver: drop a resource from the guest's verified cache.
        Evict = 0x02,
        /// stagingq, device to driver: one chunk of a bundle or manifest.
        Chunk = 0x10,
        /// ctrlq, driver to device: the session nonce and epoch.
        Hello = 0x20,
        /// ctrlq, driver to device: fetch a resource now.
        Demand = 0x21,
        /// ctrlq, driver to device: a claim, miss, eviction or rejection.
        Report = 0x22,
        /// ctrlq, driver to device: a request finished, with timings.
        Complete = 0x23,
        /// ctrlq response, device to driver, in the chain's writable buffer.
        Ack = 0x30,
    }
);

wire_enum!(
    /// The device's answer to a ctrlq message.
    Status: u32, "ack.status" {
        /// Accepted.
        Ok = 0,
        /// The message did not parse.
        Malformed = 1,
        /// No such resource (or no version at least the one demanded).
        UnknownResource = 2,
        /// The device cannot take it now; retry later.
        Busy = 3,
        /// The resource store failed.
        StoreError = 4,
        /// The resource is larger than the device or driver limits.
        TooLarge = 5,
        /// No session yet (no Hello), or another session's message.
        BadSession = 6,
    }
);

wire_enum!(
    /// What a Report says happened.
    ReportKind: u32, "report.kind" {
        /// A task claimed a prefetched resource for the first time (a staged hit).
        ClaimHit = 1,
        /// A task asked for a resource that was not staged.
        Miss = 2,
        /// A resource left the guest's verified cache (LRU, a host Evict, or a reset).
        Evict = 3,
        /// A bundle was rejected (reason in `Report::reason`).
        Reject = 4,
        /// A demand fetch completed.
        DemandServed = 5,
        /// A task claimed a resource the verified cache already held from an earlier claim
        /// or demand fetch (no transfer).
        CacheHit = 6,
    }
);

wire_enum!(
    /// Why the driver rejected a bundle or manifest.
    RejectReason: u32, "report.reason" {
        /// It did not parse.
        Malformed = 1,
        /// The signature does not verify under the embedded key.
        BadSignature = 2,
        /// Another session's nonce or epoch.
        WrongSession = 3,
        /// A sequence number not above the last accepted one.
        Replay = 4,
        /// An older version than one already accepted.
        Rollback = 5,
        /// A task, app or resource the guest did not declare or demand.
        WrongTask = 6,
        /// The content does not hash to the signed digest.
        DigestMismatch = 7,
        /// Larger than the driver accepts.
        TooLarge = 8,
        /// Marked as covered by a manifest that does not list it.
        NotInManifest = 9,
        /// Not expected now (no pending demand, chunk of an unknown stream, ...).
        Unexpected = 10,
        /// A bundle before this session has a valid floors snapshot (fail closed).
        NoFloors = 11,
        /// A floors snapshot past its expiry, or older than one already accepted.
        StaleFloors = 12,
    }
);

/// The header in front of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// The message kind.
    pub kind: MessageKind,
    /// Kind-specific flags; zero for every kind of this version.
    pub flags: u16,
    /// Payload bytes after the header.
    pub len: u32,
    /// Correlation value (the demand id of a Demand and its Ack); zero otherwise.
    pub cookie: u32,
}

impl MessageHeader {
    /// Encoded size.
    pub const LEN: usize = 16;
    /// "SEEP" in little-endian ASCII.
    pub const MAGIC: u32 = 0x5045_4553;
    /// The only version this build speaks.
    pub const VERSION: u8 = 1;

    /// Parses a header and returns it with exactly its payload (`len` bytes after it).
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        Reader::require(buf, Self::LEN, "message header")?;
        let mut r = Reader::new(buf, "message header");
        let magic = r.u32()?;
        if magic != Self::MAGIC {
            return Err(WireError::BadMagic {
                what: "message header",
                found: magic,
            });
        }
        let version = r.u8()?;
        if version != Self::VERSION {
            return Err(WireError::BadVersion {
                what: "message",
                found: version.into(),
            });
        }
        let raw_kind = r.u8()?;
        let kind = MessageKind::from_raw(raw_kind).map_err(|_| WireError::BadKind(raw_kind))?;
        let flags = r.u16()?;
        if flags != 0 {
            return Err(WireError::ReservedNotZero("header.flags"));
        }
        let len = r.u32()?;
        let cookie = r.u32()?;
        let rest = r.rest();
        if u64::from(len) > rest.len() as u64 {
            return Err(WireError::TooLarge {
                field: "header.len",
                value: len.into(),
                limit: rest.len() as u64,
            });
        }
        let payload = rest.get(..len as usize).unwrap_or(&[]);
        Ok((
            Self {
                kind,
                flags,
                len,
                cookie,
            },
            payload,
        ))
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u32(Self::MAGIC);
        w.u8(Self::VERSION);
        w.u8(self.kind.raw());
        w.u16(self.flags);
        w.u32(self.len);
        w.u32(self.cookie);
    }
}

/// A request dispatched into the guest (requestq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Unique per backend run.
    pub request_id: u64,
    /// The session the request belongs to.
    pub session_id: u64,
    /// The app that serves it.
    pub app_id: u32,
    /// Its request type (service metadata index).
    pub request_type: u32,
    /// Opaque arguments, at most [`MAX_REQUEST_ARGS`] bytes.
    pub args: &'a [u8],
}

/// [`Chunk::HEAD_LEN`].
const CHUNK_HEAD_LEN: usize = MessageHeader::LEN + 24;

/// One chunk of a bundle or manifest (stagingq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Chosen by the device, one per object.
    pub stream_id: u64,
    /// Size of the whole object.
    pub total_len: u32,
    /// Where this chunk's bytes go in the object.
    pub offset: u32,
    /// The bytes.
    pub data: &'a [u8],
}

impl Chunk<'_> {
    /// Size of the fixed part of the payload.
    pub const FIXED_LEN: usize = 24;
    /// Bytes of a Chunk message before its data: the message header and the fixed part.
    pub const HEAD_LEN: usize = CHUNK_HEAD_LEN;

    /// The first [`Chunk::HEAD_LEN`] bytes of this chunk's message, exactly as
    /// [`Message::encode`] writes them before the data: a sender writes `data` after them from
    /// where it lies, without copying it into a message buffer first. Refuses what `encode`
    /// refuses.
    pub fn encode_head(&self, cookie: u32) -> Result<[u8; CHUNK_HEAD_LEN], WireError> {
        let message = Message::Chunk(*self);
        message.check_limits()?;
        let mut out = [0u8; CHUNK_HEAD_LEN];
        let mut w = Writer::new(&mut out, CHUNK_HEAD_LEN)?;
        MessageHeader {
            kind: MessageKind::Chunk,
            flags: 0,
            len: message.payload_len() as u32,
            cookie,
        }
        .write(&mut w);
        w.u64(self.stream_id);
        w.u32(self.total_len);
        w.u32(self.offset);
        w.u32(self.data.len() as u32);
        w.u32(0);
        Ok(out)
    }
}

/// The driver's session announcement (ctrlq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Random, drawn at start-up and after every device reset.
    pub nonce: [u8; NONCE_LEN],
    /// Counts the driver's sessions since boot.
    pub epoch: u64,
    /// The driver's version.
    pub driver_version: u32,
    /// How many staging buffers the driver posted.
    pub staging_buffers: u32,
}

/// The host asks the guest to drop a resource from its verified cache (requestq). Unsigned:
/// it can only take away what the guest holds (a host can always withhold), and the guest
/// drops an entry only when `app_id` owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evict {
    /// The app that owns the cached resource.
    pub app_id: u32,
    /// The resource.
    pub resource_id: u64,
}

/// A demand fetch (ctrlq); the header cookie is the driver's demand id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// The app that will claim it.
    pub app_id: u32,
    /// The task that needs it.
    pub task_id: u64,
    /// The resource.
    pub resource_id: u64,
    /// The lowest acceptable version (the highest the driver has accepted).
    pub min_version: u64,
}

/// A claim, miss, eviction or rejection report (ctrlq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub kind: ReportKind,
    /// Why, when `kind` is `Reject`; `None` otherwise.
    pub reason: Option<RejectReason>,
    /// The app.
    pub app_id: u32,
    /// The task.
    pub task_id: u64,
    /// The resource.
    pub resource_id: u64,
    /// The resource version involved (0 when unknown).
    pub version: u64,
    /// How long the operation took inside the guest.
    pub latency_ns: u64,
}

/// Timings of one task of a completed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskTiming {
    /// The task.
    pub task_id: u64,
    /// Time spent claiming staged resources.
    pub claim_ns: u64,
    /// Time spent in demand fetches.
    pub fetch_ns: u64,
    /// Time spent working on the bytes.
    pub work_ns: u64,
    /// Resources found staged.
    pub hits: u32,
    /// Resources demand-fetched.
    pub misses: u32,
    /// What the task's work computed, for the host to check: `see_workload::TaskResult`
    /// folded over the resources it worked on, in its resource order.
    pub result: u64,
}

impl TaskTiming {
    /// Encoded size.
    pub const LEN: usize = 48;

    fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "task timing");
        Ok(Self {
            task_id: r.u64()?,
            claim_ns: r.u64()?,
            fetch_ns: r.u64()?,
            work_ns: r.u64()?,
            hits: r.u32()?,
            misses: r.u32()?,
            result: r.u64()?,
        })
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u64(self.task_id);
        w.u64(self.claim_ns);
        w.u64(self.fetch_ns);
        w.u64(self.work_ns);
        w.u32(self.hits);
        w.u32(self.misses);
        w.u64(self.result);
    }
}

/// The task timings of a completion: raw bytes when parsed, a slice when built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskTimings<'a> {
    /// As received: `len / TaskTiming::LEN` entries, already length-checked.
    Raw(&'a [u8]),
    /// As built by the sender.
    Slice(&'a [TaskTiming]),
}

impl<'a> TaskTimings<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            Self::Raw(bytes) => bytes.len() / TaskTiming::LEN,
            Self::Slice(slice) => slice.len(),
        }
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<TaskTiming> {
        match self {
            Self::Raw(bytes) => {
                let start = i.checked_mul(TaskTiming::LEN)?;
                let entry = bytes.get(start..start.checked_add(TaskTiming::LEN)?)?;
                TaskTiming::parse(entry).ok()
            }
            Self::Slice(slice) => slice.get(i).copied(),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = TaskTiming> + 'a {
        let this = *self;
        (0..this.len()).filter_map(move |i| this.get(i))
    }
}

/// A request completion with timings measured in the guest (ctrlq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Complete<'a> {
    /// The request.
    pub request_id: u64,
    /// 0 for success; otherwise the guest's failure code.
    pub status: u32,
    /// Wall time of the whole request inside the guest.
    pub total_ns: u64,
    /// Per-task timings, at most [`MAX_COMPLETE_TASKS`].
    pub tasks: TaskTimings<'a>,
}

/// The device's answer on ctrlq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Accepted or why not.
    pub status: Status,
    /// Kind-specific detail (for a Demand: the size of the bundle that will follow).
    pub detail: u32,
}

impl Ack {
    /// Encoded size of header plus payload: the smallest ctrlq response buffer.
    pub const MESSAGE_LEN: usize = MessageHeader::LEN + 8;
}

/// Any message, borrowing its variable parts from the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// requestq.
    Request(Request<'a>),
    /// requestq.
    Evict(Evict),
    /// stagingq.
    Chunk(Chunk<'a>),
    /// ctrlq.
    Hello(Hello),
    /// ctrlq.
    Demand(Demand),
    /// ctrlq.
    Report(Report),
    /// ctrlq.
    Complete(Complete<'a>),
    /// ctrlq response.
    Ack(Ack),
}

fn exact(what: &'static str, declared: usize, actual: usize) -> Result<(), WireError> {
    if declared != actual {
        return Err(WireError::LengthMismatch {
            what,
            declared: declared as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

/// Parses one message: header, then the payload its kind defines, length-checked exactly.
pub fn parse_message(buf: &[u8]) -> Result<(MessageHeader, Message<'_>), WireError> {
    let (header, payload) = MessageHeader::parse(buf)?;
    let message = Message::parse_payload(header.kind, payload)?;
    Ok((header, message))
}

impl<'a> Message<'a> {
    /// The kind this message is sent as.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Request(_) => MessageKind::Request,
            Self::Evict(_) => MessageKind::Evict,
            Self::Chunk(_) => MessageKind::Chunk,
            Self::Hello(_) => MessageKind::Hello,
            Self::Demand(_) => MessageKind::Demand,
            Self::Report(_) => MessageKind::Report,
            Self::Complete(_) => MessageKind::Complete,
            Self::Ack(_) => MessageKind::Ack,
        }
    }

    /// Parses a payload of the given kind.
    pub fn parse_payload(kind: MessageKind, payload: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "payload");
        let message = match kind {
            MessageKind::Request => {
                let (request_id, session_id) = (r.u64()?, r.u64()?);
                let (app_id, request_type) = (r.u32()?, r.u32()?);
                let arg_len = r.u32()?;
                r.zero_u32("request.reserved")?;
                if arg_len > MAX_REQUEST_ARGS {
                    return Err(WireError::TooLarge {
                        field: "request.arg_len",
                        value: arg_len.into(),
                        limit: MAX_REQUEST_ARGS.into(),
                    });
                }
                let args = r.bytes(arg_len as usize)?;
                Self::Request(Request {
                    request_id,
                    session_id,
                    app_id,
                    request_type,
                    args,
                })
            }
            MessageKind::Evict => {
                let app_id = r.u32()?;
                r.zero_u32("evict.reserved")?;
                Self::Evict(Evict {
                    app_id,
                    resource_id: r.u64()?,
                })
            }
            MessageKind::Chunk => {
                let stream_id = r.u64()?;
                let (total_len, offset, chunk_len) = (r.u32()?, r.u32()?, r.u32()?);
                r.zero_u32("chunk.reserved")?;
                let data = r.bytes(chunk_len as usize)?;
                if u64::from(offset) + u64::from(chunk_len) > u64::from(total_len) {
                    return Err(WireError::TooLarge {
                        field: "chunk.offset + chunk.chunk_len",
                        value: u64::from(offset) + u64::from(chunk_len),
                        limit: total_len.into(),
                    });
                }
                Self::Chunk(Chunk {
                    stream_id,
                    total_len,
                    offset,
                    data,
                })
            }
            MessageKind::Hello => Self::Hello(Hello {
                nonce: r.array()?,
                epoch: r.u64()?,
                driver_version: r.u32()?,
                staging_buffers: r.u32()?,
            }),
            MessageKind::Demand => {
                let app_id = r.u32()?;
                r.zero_u32("demand.reserved")?;
                Self::Demand(Demand {
                    app_id,
                    task_id: r.u64()?,
                    resource_id: r.u64()?,
                    min_version: r.u64()?,
                })
            }
            MessageKind::Report => {
                let kind = ReportKind::from_raw(r.u32()?)?;
                let raw_reason = r.u32()?;
                let reason = match (kind, raw_reason) {
                    (ReportKind::Reject, raw) => Some(RejectReason::from_raw(raw)?),
                    (_, 0) => None,
                    (_, _) => return Err(WireError::ReservedNotZero("report.reason")),
                };
                let app_id = r.u32()?;
                r.zero_u32("report.reserved")?;
                Self::Report(Report {
                    kind,
                    reason,
                    app_id,
                    task_id: r.u64()?,
                    resource_id: r.u64()?,
                    version: r.u64()?,
                    latency_ns: r.u64()?,
                })
            }
            MessageKind::Complete => {
                let request_id = r.u64()?;
                let (status, task_count) = (r.u32()?, r.u32()?);
                let total_ns = r.u64()?;
                if task_count > MAX_COMPLETE_TASKS {
                    return Err(WireError::TooLarge {
                        field: "complete.task_count",
                        value: task_count.into(),
                        limit: MAX_COMPLETE_TASKS.into(),
                    });
                }
                let tasks = r.bytes(task_count as usize * TaskTiming::LEN)?;
                Self::Complete(Complete {
                    request_id,
                    status,
                    total_ns,
                    tasks: TaskTimings::Raw(tasks),
                })
            }
            MessageKind::Ack => Self::Ack(Ack {
                status: Status::from_raw(r.u32()?)?,
                detail: r.u32()?,
            }),
        };
        let trailing = r.rest().len();
        exact("payload", payload.len() - trailing, payload.len())?;
        Ok(message)
    }

    /// Payload size of this message.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Request(m) => 32 + m.args.len(),
            Self::Evict(_) => 16,
            Self::Chunk(m) => Chunk::FIXED_LEN + m.data.len(),
            Self::Hello(_) => 48,
            Self::Demand(_) => 32,
            Self::Report(_) => 48,
            Self::Complete(m) => 24 + m.tasks.len() * TaskTiming::LEN,
            Self::Ack(_) => 8,
        }
    }

    /// Header plus payload size.
    pub fn encoded_len(&self) -> usize {
        MessageHeader::LEN + self.payload_len()
    }

    /// Encodes header and payload into `out`; returns the bytes written. Refuses a message
    /// this crate's own parser would refuse (oversized arguments or task lists, a chunk
    /// beyond its object).
    pub fn encode(&self, cookie: u32, out: &mut [u8]) -> Result<usize, WireError> {
        self.check_limits()?;
        let len = self.encoded_len();
        let mut w = Writer::new(out, len)?;
        let header = MessageHeader {
            kind: self.kind(),
            flags: 0,
            len: self.payload_len() as u32,
            cookie,
        };
        header.write(&mut w);
        match self {
            Self::Request(m) => {
                w.u64(m.request_id);
                w.u64(m.session_id);
                w.u32(m.app_id);
                w.u32(m.request_type);
                w.u32(m.args.len() as u32);
                w.u32(0);
                w.bytes(m.args);
            }
            Self::Evict(m) => {
                w.u32(m.app_id);
                w.u32(0);
                w.u64(m.resource_id);
            }
            Self::Chunk(m) => {
                w.u64(m.stream_id);
                w.u32(m.total_len);
                w.u32(m.offset);
                w.u32(m.data.len() as u32);
                w.u32(0);
                w.bytes(m.data);
            }
            Self::Hello(m) => {
                w.bytes(&m.nonce);
                w.u64(m.epoch);
                w.u32(m.driver_version);
                w.u32(m.staging_buffers);
            }
            Self::Demand(m) => {
                w.u32(m.app_id);
                w.u32(0);
                w.u64(m.task_id);
                w.u64(m.resource_id);
                w.u64(m.min_version);
            }
            Self::Report(m) => {
                w.u32(m.kind.raw());
                w.u32(m.reason.map_or(0, RejectReason::raw));
                w.u32(m.app_id);
                w.u32(0);
                w.u64(m.task_id);
                w.u64(m.resource_id);
                w.u64(m.version);
                w.u64(m.latency_ns);
            }
            Self::Complete(m) => {
                w.u64(m.request_id);
                w.u32(m.status);
                w.u32(m.tasks.len() as u32);
                w.u64(m.total_ns);
                for task in m.tasks.iter() {
                    task.write(&mut w);
                }
            }
            Self::Ack(m) => {
                w.u32(m.status.raw());
                w.u32(m.detail);
            }
        }
        debug_assert_eq!(w.position(), len);
        Ok(len)
    }

    fn check_limits(&self) -> Result<(), WireError> {
        let too_large = |field, value: usize, limit: u64| WireError::TooLarge {
            field,
            value: value as u64,
            limit,
        };
        match self {
            Self::Request(m) if m.args.len() > MAX_REQUEST_ARGS as usize => Err(too_large(
                "request.arg_len",
                m.args.len(),
                MAX_REQUEST_ARGS.into(),
            )),
            Self::Complete(m) if m.tasks.len() > MAX_COMPLETE_TASKS as usize => Err(too_large(
                "complete.task_count",
                m.tasks.len(),
                MAX_COMPLETE_TASKS.into(),
            )),
            Self::Chunk(m)
                if u64::from(m.offset) + m.data.len() as u64 > u64::from(m.total_len)
                    || m.data.len() > u32::MAX as usize =>
            {
                Err(too_large(
                    "chunk.offset + chunk.chunk_len",
                    m.data.len(),
                    m.total_len.into(),
                ))
            }
            Self::Report(m) if (m.kind == ReportKind::Reject) != m.reason.is_some() => {
                Err(WireError::BadValue {
                    field: "report.reason",
                    value: 0,
                })
            }
            _ => Ok(()),
        }
    }
}
