//! The request API's JSON bodies (docs/openapi.json describes the same), shared by the server
//! and its clients (the demo's load generator, the tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest session key a client may send, in bytes.
pub const MAX_SESSION_LEN: usize = 128;

/// Longest app or request type name a client may send, in bytes (checked before any lookup).
pub const MAX_NAME_LEN: usize = 128;

/// Most attributes a request may carry.
pub const MAX_ATTRIBUTES: usize = 8;

/// Longest attribute name or value, in bytes (the PTO buckets its longer values anyway).
pub const MAX_ATTRIBUTE_LEN: usize = 64;

/// `POST /v1/requests`: run one request of `type` for `session` in the SEE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The client's session (or user) key: the PTO predicts per session.
    pub session: String,
    /// The app (tenant) that serves the request, as named in the service metadata.
    pub app: String,
    /// The request type, as named in the service metadata.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's context for the predictor (platform, channel, cohort, ...): at most
    /// [`MAX_ATTRIBUTES`] names of 1 to [`MAX_ATTRIBUTE_LEN`] bytes, each once, with values of
    /// at most [`MAX_ATTRIBUTE_LEN`] bytes, none with control characters. Optional.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "bounded_attributes"
    )]
    pub attributes: BTreeMap<String, String>,
}

/// Reads the `attributes` map, refusing it as soon as it breaks a bound: the work and memory
/// stay bounded by [`MAX_ATTRIBUTES`] entries of [`MAX_ATTRIBUTE_LEN`] bytes.
fn bounded_attributes<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "a map of at most {MAX_ATTRIBUTES} attributes, names of 1 to {MAX_ATTRIBUTE_LEN} bytes and string values of at most {MAX_ATTRIBUTE_LEN} bytes, without control characters"
            )
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            use serde::de::Error;
            let text = |s: &str| !s.chars().any(char::is_control);
            let mut out = BTreeMap::new();
            while let Some(name) = m.next_key::<String>()? {
                if out.len() == MAX_ATTRIBUTES {
                    return Err(A::Error::custom(format_args!(
                        "field `attributes`: more than {MAX_ATTRIBUTES} attributes"
                    )));
                }
                if name.is_empty() || name.len() > MAX_ATTRIBUTE_LEN || !text(&name) {
                    return Err(A::Error::custom(format_args!(
                        "field `attributes`: a name must be 1 to {MAX_ATTRIBUTE_LEN} bytes without control characters"
                    )));
                }
                let value: String = m.next_value()?;
                if value.len() > MAX_ATTRIBUTE_LEN || !text(&value) {
                    return Err(A::Error::custom(format_args!(
                        "field `attributes`: a value must be at most {MAX_ATTRIBUTE_LEN} bytes without control characters"
                    )));
                }
                if out.insert(name, value).is_some() {
                    return Err(A::Error::custom("field `attributes`: a name appears twice"));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Bounded)
}

/// One task's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task, as named in the service metadata.
    pub task: String,
    /// Its wire id.
    pub task_id: u64,
    /// The task's result digest as the guest reported it (16 hex digits).
    pub result: String,
    /// Guest time claiming staged resources, us.
    pub claim_us: f64,
    /// Guest time demand-fetching missing resources, us.
    pub fetch_us: f64,
    /// Guest time working on the bytes, us.
    pub work_us: f64,
    /// Resources found staged.
    pub staged_hits: u32,
    /// Resources demand-fetched.
    pub demands: u32,
}

/// Where the request's time went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// At the host: from the request arriving at the daemon to the response, us.
    pub host_us: f64,
    /// Waiting in the daemon's queue before dispatch, us.
    pub queue_us: f64,
    /// In the guest, as it measured: from taking the request to completing it, us.
    pub guest_us: f64,
    /// Guest time claiming staged resources, us (all tasks).
    pub claim_us: f64,
    /// Guest time demand-fetching, us (all tasks).
    pub fetch_us: f64,
    /// Guest time working, us (all tasks).
    pub work_us: f64,
}

/// What prefetching did for the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchOutcome {
    /// Resources the tasks found staged.
    pub staged_hits: u32,
    /// Resources the tasks had to demand-fetch.
    pub demands: u32,
}

/// The answer to a request the SEE ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResponse {
    /// The daemon's id of the request (in the history and the audit log).
    pub request_id: u64,
    /// The session key.
    pub session: String,
    /// The app.
    pub app: String,
    /// The request type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Each task, in the order it ran.
    pub tasks: Vec<TaskResult>,
    /// Where the time went.
    pub timings: Timings,
    /// Staged hits and demands.
    pub prefetch: PrefetchOutcome,
}

/// Every error's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it.
    pub error: String,
    /// The request's id, when it had been accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    /// The guest's completion status, for a request the guest failed (502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// Why the guest failed it (502).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ready` (the guest's driver said hello), `starting`, `stopping` or `down`.
    pub status: String,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The predictor.
    pub predictor: String,
    /// Requests waiting or running.
    pub queued: u64,
}

/// `GET /v1/stats`: the PTO's figures since start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The predictor.
    pub predictor: String,
    /// Requests answered 200.
    pub completed: u64,
    /// Requests the guest failed (502).
    pub failed: u64,
    /// Requests that could not run (the SEE was gone, 503/504).
    pub unavailable: u64,
    /// Claims that found the resource staged.
    pub staged_hits: u64,
    /// Claims served from the guest's verified cache (claimed before, still held).
    pub cache_hits: u64,
    /// Claims that missed and demand-fetched.
    pub misses: u64,
    /// Staged and cache hits over all claims.
    pub hit_rate: f64,
    /// Prefetched resources claimed over prefetched (`null` when nothing was prefetched).
    pub precision: Option<f64>,
    /// Resources prefetched.
    pub prefetched: u64,
    /// Bytes prefetched.
    pub prefetched_bytes: u64,
    /// Prefetched bytes never claimed (evicted, rejected or still held at the end).
    pub wasted_bytes: u64,
    /// Demand fetches.
    pub demand_fetches: u64,
    /// Bytes demand-fetched.
    pub demand_bytes: u64,
    /// Prefetched + demanded bytes.
    pub traffic_bytes: u64,
    /// Mean planning time (prediction included) per request, us.
    pub plan_us: f64,
    /// Bundles the device delivered into the guest.
    pub bundles: u64,
    /// Fetches from the store (the modelled origin).
    pub origin_fetches: u64,
    /// Prefetch orders not sent because the guest still held the resource.
    pub skipped_resends: u64,
}
