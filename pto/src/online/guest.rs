//! The guest's reports are untrusted input: what the orchestrator does with the impossible ones.
//!
//! A report or completion naming an id the PTO never sent, or a completion whose timings cannot
//! be true, is a [`GuestFault`]: counted, logged (the first few of each kind, then at powers of
//! two, so a hostile guest cannot flood the log) and otherwise ignored. It never fails the
//! orchestrator, and an implausible completion still completes its request (the next one is
//! served) but its timings reach neither the latency metrics nor the history.

use virtio_prefetch_wire::TaskTiming;

/// The longest time any one guest timing may claim: a request (or one task's part of it) that
/// took longer did not happen on a live SEE. Far above any request timeout the daemon allows.
pub const MAX_REPORTED_NS: u64 = 3_600 * 1_000_000_000;

/// Log lines for the first this many faults of each kind; later ones only at powers of two.
const LOG_FIRST: u64 = 8;

/// What was wrong with a guest report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestFault {
    /// A completion of a request the PTO never dispatched (or completed already).
    UnknownRequest(u64),
    /// A report or demand about a resource the catalogue does not have.
    UnknownResource(u64),
    /// A completion whose timings cannot be true.
    BadTiming {
        /// The request.
        request: u64,
        /// What is impossible.
        why: TimingFault,
    },
}

/// Why a completion's timings are impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingFault {
    /// A duration over [`MAX_REPORTED_NS`] (a negative one wrapped around reads the same).
    Absurd,
    /// The tasks' times add up to more than the request's: a task ended after the request did.
    TasksOutlastRequest,
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestFault::UnknownRequest(id) => {
                write!(
                    f,
                    "completion of request {id}, which the PTO never dispatched"
                )
            }
            GuestFault::UnknownResource(id) => {
                write!(f, "report about resource {id}, which the PTO does not have")
            }
            GuestFault::BadTiming { request, why } => {
                let why = match why {
                    TimingFault::Absurd => "a duration over an hour (or a negative one)",
                    TimingFault::TasksOutlastRequest => {
                        "its tasks took longer than the request (a task ended after it)"
                    }
                };
                write!(
                    f,
                    "completion of request {request} with impossible timings: {why}"
                )
            }
        }
    }
}

/// Checks a completion's timings.
pub fn check_timings(total_ns: u64, tasks: &[TaskTiming]) -> Result<(), TimingFault> {
    if total_ns > MAX_REPORTED_NS {
        return Err(TimingFault::Absurd);
    }
    let mut sum = 0u64;
    for t in tasks {
        for part in [t.claim_ns, t.fetch_ns, t.work_ns] {
            if part > MAX_REPORTED_NS {
                return Err(TimingFault::Absurd);
            }
            // Each part is bounded, so this sum of at most 3 * tasks parts cannot overflow
            // before it passes the total.
            sum = sum.saturating_add(part);
        }
    }
    if sum > total_ns {
        return Err(TimingFault::TasksOutlastRequest);
    }
    Ok(())
}

/// Counts of guest faults, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestFaults {
    /// Completions of requests never dispatched.
    pub unknown_requests: u64,
    /// Reports about resources the catalogue does not have.
    pub unknown_resources: u64,
    /// Completions with impossible timings.
    pub bad_timings: u64,
}

impl GuestFaults {
    /// Every fault counted.
    pub fn total(&self) -> u64 {
        self.unknown_requests + self.unknown_resources + self.bad_timings
    }

    /// Counts `fault` and logs it, unless its kind has been logged often already.
    pub fn record(&mut self, fault: GuestFault) {
        let n = match fault {
            GuestFault::UnknownRequest(_) => &mut self.unknown_requests,
            GuestFault::UnknownResource(_) => &mut self.unknown_resources,
            GuestFault::BadTiming { .. } => &mut self.bad_timings,
        };
        *n += 1;
        let n = *n;
        if n <= LOG_FIRST {
            log::warn!("guest report ignored: {fault}");
        } else if n.is_power_of_two() {
            log::warn!(
                "guest report ignored: {fault} ({n} of this kind so far; logged at powers of two)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(claim_ns: u64, fetch_ns: u64, work_ns: u64) -> TaskTiming {
        TaskTiming {
            task_id: 1,
            claim_ns,
            fetch_ns,
            work_ns,
            ..TaskTiming::default()
        }
    }

    #[test]
    fn impossible_timings_are_named() {
        assert_eq!(
            check_timings(100, &[task(10, 20, 30), task(0, 0, 40)]),
            Ok(())
        );
        assert_eq!(
            check_timings(99, &[task(10, 20, 30), task(0, 0, 40)]),
            Err(TimingFault::TasksOutlastRequest)
        );
        // A guest clock that ran backwards: end - start wrapped around.
        assert_eq!(
            check_timings(5u64.wrapping_sub(9), &[]),
            Err(TimingFault::Absurd)
        );
        assert_eq!(
            check_timings(MAX_REPORTED_NS, &[task(u64::MAX, 0, 0)]),
            Err(TimingFault::Absurd)
        );
        let many = vec![task(MAX_REPORTED_NS, MAX_REPORTED_NS, MAX_REPORTED_NS); 4096];
        assert_eq!(
            check_timings(MAX_REPORTED_NS, &many),
            Err(TimingFault::TasksOutlastRequest)
        );
    }

    #[test]
    fn bogus_completions_are_counted_and_the_next_request_is_served() {
        use std::sync::Arc;

        use crate::{
            history::History,
            metadata::ServiceCatalogue,
            online::{Completion, Mode, Orchestrator, Policy},
            predict::Reactive,
        };

        let cat = Arc::new(ServiceCatalogue::default_catalogue());
        let p = Box::new(Reactive::new(Arc::new(cat.vocabulary())));
        let mut o = Orchestrator::new(cat, Mode::Reactive, p, Policy::default())
            .unwrap()
            .with_history(History::open_in_memory().unwrap(), "live");
        let first = o.on_request(1, "home", 0).unwrap().dispatch.request_id;
        let done = |request_id, total_ns, tasks: Vec<TaskTiming>| Completion {
            request_id,
            status: 0,
            total_ns,
            tasks,
        };
        // Not dispatched: ignored, and the real request is still in flight.
        o.on_completion(&done(first + 100, 1_000, vec![])).unwrap();
        // End before start: the guest's elapsed time wrapped around.
        let wrapped = 1_000u64.wrapping_sub(2_000);
        o.on_completion(&done(first, wrapped, vec![task(1, 1, 1)]))
            .unwrap();
        assert_eq!(o.guest_faults().unknown_requests, 1);
        assert_eq!(o.guest_faults().bad_timings, 1);
        // That completion completed the request: completing it again is an unknown id.
        o.on_completion(&done(first, 10_000, vec![])).unwrap();
        assert_eq!(o.guest_faults().unknown_requests, 2);
        // Absurd durations and tasks outlasting their request, on later requests.
        let second = o.on_request(1, "search", 1).unwrap().dispatch.request_id;
        o.on_completion(&done(second, 10, vec![task(u64::MAX, u64::MAX, 5)]))
            .unwrap();
        let third = o.on_request(1, "home", 2).unwrap().dispatch.request_id;
        o.on_completion(&done(third, 10, vec![task(5, 5, 5)]))
            .unwrap();
        assert_eq!(o.guest_faults().bad_timings, 3);
        assert!(o.metrics().latencies_ns.is_empty(), "no bogus latency kept");
        assert_eq!(o.history_mut().unwrap().task_count().unwrap(), 0);
        // The next request is served and its honest completion recorded.
        let fourth = o.on_request(1, "search", 3).unwrap().dispatch.request_id;
        o.on_completion(&done(fourth, 1_000_000, vec![task(10, 20, 30)]))
            .unwrap();
        assert_eq!(o.metrics().latencies_ns, vec![1_000_000]);
        let h = o.history_mut().unwrap();
        assert_eq!(h.task_count().unwrap(), 1);
        assert_eq!(h.guest_reported_count().unwrap(), 1);
        assert_eq!(o.guest_faults().total(), 5);
    }

    #[test]
    fn faults_are_counted_by_kind() {
        let mut f = GuestFaults::default();
        for i in 0..100 {
            f.record(GuestFault::UnknownResource(i));
        }
        f.record(GuestFault::UnknownRequest(1));
        f.record(GuestFault::BadTiming {
            request: 2,
            why: TimingFault::Absurd,
        });
        assert_eq!(
            (
                f.unknown_resources,
                f.unknown_requests,
                f.bad_timings,
                f.total()
            ),
            (100, 1, 1, 102)
        );
    }
}
