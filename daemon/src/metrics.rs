//! The daemon's Prometheus metrics (`GET /metrics`, text format): request counts by outcome,
//! host and guest latency histograms, the front door's overhead, prefetch figures, queue depth
//! and prediction time.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// The label of a request count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// ok, guest_failed, unavailable, rejected (400/404/413/429) or internal.
    pub outcome: String,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by outcome.
    pub requests: Family<OutcomeLabel, Counter>,
    /// Latency at the host, seconds (arrival to answer).
    pub host_latency: Histogram,
    /// Latency in the guest, seconds (as it measured).
    pub guest_latency: Histogram,
    /// Host latency minus guest latency, seconds: the front door, the queue and the device.
    pub overhead: Histogram,
    /// Time the PTO spent planning one request (prediction included), seconds.
    pub prediction: Histogram,
    /// Requests waiting for the SEE.
    pub queue_depth: Gauge,
    /// Claims that found their resource staged.
    pub staged_hits: Counter,
    /// Bundles demand-fetched into the guest.
    pub demand_fetches: Counter,
    /// Guest reports or completions the PTO could not place (counted, never fatal).
    pub bad_reports: Counter,
    /// Prefetched resources claimed over prefetched.
    pub precision: Gauge<f64, AtomicU64>,
    /// Bytes prefetched and never claimed.
    pub wasted_bytes: Gauge,
    /// Bytes prefetched.
    pub prefetched_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("see");
        let latency = || Histogram::new(exponential_buckets(50e-6, 2.0, 18));
        let m = Self {
            requests: Family::default(),
            host_latency: latency(),
            guest_latency: latency(),
            overhead: Histogram::new(exponential_buckets(10e-6, 2.0, 16)),
            prediction: Histogram::new(exponential_buckets(1e-6, 2.0, 18)),
            queue_depth: Gauge::default(),
            staged_hits: Counter::default(),
            demand_fetches: Counter::default(),
            bad_reports: Counter::default(),
            precision: Gauge::default(),
            wasted_bytes: Gauge::default(),
            prefetched_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "request_host_seconds",
            "Request latency at the host, from arrival to answer",
            m.host_latency.clone(),
        );
        registry.register(
            "request_guest_seconds",
            "Request latency in the guest, as it measured",
            m.guest_latency.clone(),
        );
        registry.register(
            "request_overhead_seconds",
            "Host latency minus guest latency: front door, queue and device",
            m.overhead.clone(),
        );
        registry.register(
            "prediction_seconds",
            "PTO planning time per request, prediction included",
            m.prediction.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for the SEE",
            m.queue_depth.clone(),
        );
        registry.register(
            "staged_hits",
            "Claims that found their resource staged",
            m.staged_hits.clone(),
        );
        registry.register(
            "demand_fetches",
            "Bundles demand-fetched into the guest",
            m.demand_fetches.clone(),
        );
        registry.register(
            "bad_guest_reports",
            "Guest reports or completions the PTO could not place",
            m.bad_reports.clone(),
        );
        registry.register(
            "prefetch_precision",
            "Prefetched resources claimed over prefetched (1 when none were prefetched)",
            m.precision.clone(),
        );
        registry.register(
            "wasted_bytes",
            "Bytes prefetched and never claimed",
            m.wasted_bytes.clone(),
        );
        registry.register(
            "prefetched_bytes",
            "Bytes prefetched",
            m.prefetched_bytes.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one answered request.
    pub fn count(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_and_counts() {
        let m = Metrics::default();
        m.count("ok");
        m.count("ok");
        m.host_latency.observe(0.002);
        m.queue_depth.set(3);
        let text = m.render();
        for needle in [
            "see_requests_total{outcome=\"ok\"} 2",
            "see_request_host_seconds_count 1",
            "see_queue_depth 3",
            "# TYPE see_prediction_seconds histogram",
            "see_prefetch_precision",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
