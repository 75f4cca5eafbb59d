//! The PTO service's request API, apart from the service: the JSON bodies of its routes
//! ([`body`]) and the check of a `POST /v1/requests` body ([`request`]), which the daemon's
//! front door runs on every request before anything else sees it.
//!
//! The request body crosses a trust boundary, so its check is a pure function of the bytes
//! and the service metadata's request types ([`parse_run_request`]): bounded, cheap, and
//! small enough to fuzz without the daemon (`fuzz/fuzz_targets/api_request.rs`).

#![warn(missing_docs)]

pub mod body;
pub mod request;

pub use body::{
    ErrorBody, Health, PrefetchOutcome, RunRequest, RunResponse, Stats, TaskResult, Timings,
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_LEN, MAX_NAME_LEN, MAX_SESSION_LEN,
};
pub use request::{parse_run_request, RequestError};
