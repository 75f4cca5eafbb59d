//! What the front door and the engine share: the service's state, the bound on accepted
//! requests, the metrics and the last published figures; and the API's error type.

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Mutex,
};

use axum::http::StatusCode;
use see_pto::online::Orchestrator;

use crate::{
    api::{ErrorBody, RequestError, Stats},
    engine::Wire,
    metrics::Metrics,
};

/// Where the service is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the guest's driver to say hello (requests are accepted and queue).
    Starting,
    /// Serving.
    Ready,
    /// Shutting down: no new requests.
    Stopping,
    /// The SEE is gone; why.
    Down(String),
}

/// State shared by the front door and the engine.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Accepted requests not yet answered.
    queued: AtomicUsize,
    capacity: usize,
    /// The metrics.
    pub metrics: Metrics,
    stats: Mutex<Stats>,
    /// Set when the engine has flushed everything and stopped the guest.
    pub engine_done: AtomicBool,
}

impl Shared {
    /// State for a service that accepts at most `capacity` requests at once.
    pub fn new(capacity: usize, predictor: &str) -> Self {
        Self {
            state: Mutex::new(State::Starting),
            queued: AtomicUsize::new(0),
            capacity,
            metrics: Metrics::default(),
            stats: Mutex::new(Stats {
                predictor: predictor.into(),
                completed: 0,
                failed: 0,
                unavailable: 0,
                staged_hits: 0,
                cache_hits: 0,
                misses: 0,
                hit_rate: 0.0,
                precision: None,
                prefetched: 0,
                prefetched_bytes: 0,
                wasted_bytes: 0,
                demand_fetches: 0,
                demand_bytes: 0,
                traffic_bytes: 0,
                plan_us: 0.0,
                bundles: 0,
                origin_fetches: 0,
                skipped_resends: 0,
            }),
            engine_done: AtomicBool::new(false),
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Moves to `state` (a service that is down stays down).
    pub fn set_state(&self, state: State) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*s, State::Down(_)) || matches!(state, State::Down(_)) {
            *s = state;
        }
    }

    /// Takes one place in the bounded queue; false when it is full.
    pub fn reserve(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a place back (the request was answered).
    pub fn release(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Requests accepted at most at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Counts an answered request; `latency` is (host, guest) in us for one the guest ran.
    pub fn count_outcome(&self, outcome: &str, latency: Option<(f64, f64)>) {
        self.metrics.count(outcome);
        {
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                "ok" => s.completed += 1,
                "guest_failed" => s.failed += 1,
                _ => s.unavailable += 1,
            }
        }
        if let Some((host, guest)) = latency {
            self.metrics.host_latency.observe(host / 1e6);
            self.metrics.guest_latency.observe(guest / 1e6);
            self.metrics.overhead.observe((host - guest).max(0.0) / 1e6);
        }
    }

    /// Publishes the orchestrator's figures for `/v1/stats` and `/metrics`.
    pub fn publish_stats(&self, orch: &Orchestrator, wire: Wire, origin_fetches: u64) {
        let m = orch.metrics();
        let claims = m.hits + m.cache_hits + m.misses;
        let precision = (m.prefetched > 0).then(|| m.useful as f64 / m.prefetched as f64);
        self.metrics.precision.set(precision.unwrap_or(1.0));
        self.metrics
            .wasted_bytes
            .set(i64::try_from(m.wasted_bytes).unwrap_or(i64::MAX));
        self.metrics
            .prefetched_bytes
            .set(i64::try_from(m.prefetched_bytes).unwrap_or(i64::MAX));
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let planned = (s.completed + s.failed + s.unavailable).max(1);
        s.staged_hits = m.hits;
        s.cache_hits = m.cache_hits;
        s.misses = m.misses;
        s.hit_rate = if claims == 0 {
            0.0
        } else {
            (m.hits + m.cache_hits) as f64 / claims as f64
        };
        s.precision = precision;
        s.prefetched = m.prefetched;
        s.prefetched_bytes = m.prefetched_bytes;
        s.wasted_bytes = m.wasted_bytes;
        s.demand_fetches = m.demand_fetches;
        s.demand_bytes = m.demand_bytes;
        s.traffic_bytes = m.prefetched_bytes + m.demand_bytes;
        s.plan_us = m.plan_ns as f64 / 1e3 / planned as f64;
        s.bundles = wire.bundles;
        s.origin_fetches = origin_fetches;
        s.skipped_resends = wire.skipped;
    }

    /// The figures last published.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An answer other than 200: its status, its body and, for 429, when to retry.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Seconds for Retry-After.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                request_id: None,
                status: None,
                reason: None,
            },
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, why)
    }

    /// 404: an unknown app, request type or route.
    pub fn not_found(why: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, why)
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// 429: the bounded queue is full.
    pub fn busy(capacity: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{capacity} requests are already waiting for the SEE; retry after a second"),
        );
        e.retry_after = Some(1);
        e
    }

    /// 502: the guest ran the request and failed it.
    pub fn guest_failed(request_id: u64, status: u32) -> Self {
        let mut e = Self::new(StatusCode::BAD_GATEWAY, "the SEE failed the request");
        e.body.request_id = Some(request_id);
        e.body.status = Some(status);
        e.body.reason = Some(crate::guest::status_reason(status).into());
        e
    }

    /// 503: the SEE or its device is gone, or the daemon is stopping.
    pub fn unavailable(why: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the SEE is unavailable: {why}"),
        )
    }

    /// 500: a fault of the daemon itself.
    pub fn internal(why: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {why}"),
        )
    }

    /// With the id of the accepted request it answers.
    pub fn with_request(mut self, id: u64) -> Self {
        self.body.request_id = Some(id);
        self
    }

    /// The outcome label it is counted under.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_GATEWAY => "guest_failed",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::INTERNAL_SERVER_ERROR => "internal",
            _ => "rejected",
        }
    }
}

impl From<RequestError> for ApiError {
    /// 400 for a body the client got wrong, 404 for an app or request type the service
    /// metadata does not describe; the message is the error's.
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Malformed(_) | RequestError::BadSession | RequestError::BadName(_) => {
                Self::bad_request(e.to_string())
            }
            RequestError::UnknownType(_)
            | RequestError::UnknownApp(_)
            | RequestError::WrongApp { .. } => Self::not_found(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_bound_holds_and_releases() {
        let s = Shared::new(2, "markov");
        assert!(s.reserve() && s.reserve());
        assert!(!s.reserve(), "a third place in a queue of two");
        s.release();
        assert!(s.reserve());
        s.release();
        s.release();
        s.release();
        assert_eq!(s.queued(), 0, "releasing more than reserved stays at 0");
    }

    #[test]
    fn down_is_final() {
        let s = Shared::new(1, "none");
        s.set_state(State::Down("gone".into()));
        s.set_state(State::Ready);
        assert_eq!(s.state(), State::Down("gone".into()));
    }

    #[test]
    fn a_refused_body_gets_400_or_404_with_its_message() {
        let types = [("home".to_owned(), "shop".to_owned())].into();
        for (body, status) in [
            (&br#"{"session":"x","app":"#[..], StatusCode::BAD_REQUEST),
            (
                br#"{"session":"","app":"shop","type":"home"}"#,
                StatusCode::BAD_REQUEST,
            ),
            (
                br#"{"session":"x","app":"","type":"home"}"#,
                StatusCode::BAD_REQUEST,
            ),
            (
                br#"{"session":"x","app":"shop","type":"teleport"}"#,
                StatusCode::NOT_FOUND,
            ),
            (
                br#"{"session":"x","app":"bank","type":"home"}"#,
                StatusCode::NOT_FOUND,
            ),
        ] {
            let refused = crate::api::parse_run_request(body, &types).expect_err("refused");
            let message = refused.to_string();
            let e = ApiError::from(refused);
            assert_eq!(e.status, status, "{message}");
            assert_eq!(e.body.error, message);
            assert_eq!(e.outcome(), "rejected");
        }
    }
}
