//! The online half of the PTO: the [`Orchestrator`] the prefetch backend drives.
//!
//! For every incoming request the backend calls [`Orchestrator::on_request`] and gets a
//! [`Plan`]: the request to dispatch into the guest and the resources to prefetch (and the
//! staged ones that went stale). Guest feedback goes back in with [`Orchestrator::on_demand`],
//! [`Orchestrator::on_report`] and [`Orchestrator::on_completion`] (which returns the
//! prefetches that had to wait for the request's own claims); it feeds the SQLite history, the
//! audit log and the per-mode [`Metrics`].
//!
//! Wire ids ([`WireIds`]): a request type is its id in the catalogue's vocabulary (file order,
//! from 1); a task and a resource are their position in the catalogue plus one; an app is the
//! position of its name among the catalogue's apps, from 1.

pub mod guest;
mod metrics;
mod orchestrator;
pub mod origin;
mod policy;
pub mod simulate;

use std::{collections::HashMap, fmt};

pub use metrics::{percentile, Metrics, ModeSummary};
pub use orchestrator::{predictor_for, Orchestrator};
pub use policy::{GuestStore, Policy, PolicyError, Staging};

use virtio_prefetch_wire::{RejectReason, ReportKind, TaskTiming};

use crate::{audit::AuditError, history::HistoryError, metadata::ServiceCatalogue};

/// How the orchestrator prefetches. Every mode runs on the same guest cache, budget and
/// concurrency except `reactive-nocache`, the naive baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The naive baseline: no prefetch, no guest cache (a claimed resource is dropped, a
    /// demanded bundle is not kept) and one demand fetch at a time.
    ReactiveNocache,
    /// The strong non-predictive baseline: no prefetch; the guest's verified cache and its
    /// parallel demand fetches.
    Reactive,
    /// REAP-like, no prediction across requests: when a request is dispatched, the host pushes
    /// the resource set that the last completed request of the same type claimed (nothing
    /// before one has completed: then it is `reactive`), and the request waits for it.
    Push,
    /// The static dependency graph of the catalogue (`next` links).
    Static,
    /// First-order Markov counts over the history.
    Markov,
    /// Variable-order Markov (PPM, order 4) over the history.
    Ppm,
    /// The learned model (a checkpoint, mixed with PPM over the history when it has weights).
    Learned,
    /// Knows the next request of the replay: the limit.
    Oracle,
}

impl Mode {
    /// Every mode, in table order: the baselines, the predictors, the limit.
    pub const ALL: [Mode; 8] = [
        Mode::ReactiveNocache,
        Mode::Reactive,
        Mode::Push,
        Mode::Static,
        Mode::Markov,
        Mode::Ppm,
        Mode::Learned,
        Mode::Oracle,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::ReactiveNocache => "reactive-nocache",
            Mode::Reactive => "reactive",
            Mode::Push => "push",
            Mode::Static => "static",
            Mode::Markov => "markov",
            Mode::Ppm => "ppm",
            Mode::Learned => "learned",
            Mode::Oracle => "oracle",
        }
    }

    /// True for the modes that predict the requests to come (not the baselines, not the
    /// oracle, which knows them).
    pub fn predicts(self) -> bool {
        matches!(
            self,
            Mode::Static | Mode::Markov | Mode::Ppm | Mode::Learned
        )
    }

    /// True for the non-predictive modes a predictor must beat: `reactive` and `push` (not
    /// the naive `reactive-nocache`).
    pub fn is_baseline(self) -> bool {
        matches!(self, Mode::Reactive | Mode::Push)
    }

    /// False for the one mode whose guest keeps nothing after a claim (`reactive-nocache`).
    pub fn guest_cache(self) -> bool {
        self != Mode::ReactiveNocache
    }

    /// True for the mode whose guest demands one resource at a time (`reactive-nocache`).
    pub fn serial_demands(self) -> bool {
        self == Mode::ReactiveNocache
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("mode", s, &Self::ALL, Self::name)
    }
}

/// Errors of the online path.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// A request type the catalogue does not have.
    #[error("unknown request type {0:?}: add it to the service metadata")]
    UnknownRequest(String),
    /// A report or completion about something never dispatched or ordered.
    #[error("unknown {what} {id}: the guest reported something the PTO never sent")]
    Unknown {
        /// What kind of id.
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// The history database failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The policy has a value out of range.
    #[error("bad online policy: {0}")]
    Policy(PolicyError),
    /// The learned mode was asked for without a checkpoint.
    #[error("the learned mode needs a checkpoint: train one with `pto train`")]
    NoCheckpoint,
    /// The learned mode's checkpoint cannot be used.
    #[error("the learned mode's checkpoint: {0}")]
    Model(crate::nn::NnError),
    /// A mode was listed twice where each runs once.
    #[error("{0} mode listed twice: list each mode once")]
    DuplicateMode(Mode),
}

/// The numeric ids the wire uses for the catalogue's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireIds {
    apps: Vec<String>,
    app_of_request: HashMap<String, u32>,
}

impl WireIds {
    /// The ids of `catalogue`.
    pub fn new(catalogue: &ServiceCatalogue) -> Self {
        let mut apps: Vec<String> = Vec::new();
        let mut app_of_request = HashMap::new();
        for r in &catalogue.requests {
            let i = match apps.iter().position(|a| *a == r.app) {
                Some(i) => i,
                None => {
                    apps.push(r.app.clone());
                    apps.len() - 1
                }
            };
            app_of_request.insert(r.name.clone(), i as u32 + 1);
        }
        Self {
            apps,
            app_of_request,
        }
    }

    /// The app id of request type `name`.
    pub fn app_of(&self, name: &str) -> Option<u32> {
        self.app_of_request.get(name).copied()
    }

    /// The app names, in id order from 1.
    pub fn apps(&self) -> &[String] {
        &self.apps
    }

    /// Wire id of the task at `index`.
    pub fn task(index: usize) -> u64 {
        index as u64 + 1
    }

    /// Wire id of the resource at `index`.
    pub fn resource(index: usize) -> u64 {
        index as u64 + 1
    }

    /// Catalogue index of a resource wire id.
    pub fn resource_index(id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(1)?).ok()
    }
}

/// The request to dispatch into the guest (requestq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// Request id (unique per orchestrator).
    pub request_id: u64,
    /// Session id.
    pub session: u64,
    /// App id.
    pub app_id: u32,
    /// Request type wire id.
    pub request_type: u32,
    /// Request type name.
    pub name: String,
    /// The request's row in the history, when the orchestrator keeps one.
    pub row: Option<crate::history::RequestRow>,
}

/// One resource to push into the guest's staging area.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefetchOrder {
    /// App allowed to claim it.
    pub app_id: u32,
    /// Task that claims it (wire id).
    pub task_id: u64,
    /// Resource wire id.
    pub resource_id: u64,
    /// Resource version.
    pub version: u64,
    /// Content length.
    pub bytes: u64,
    /// Probability that the request needing it comes next.
    pub probability: f32,
    /// The predicted request type it is for.
    pub for_request: String,
    /// (app id, resource wire id) the host evicts from the guest's cache (an Evict message
    /// each) before sending this bundle, so that it fits without the guest's LRU choosing.
    pub evict_first: Vec<(u32, u64)>,
}

/// A staged resource the policy gave up on (stale or displaced). The orchestrator does not turn
/// these into the wire's Evict (the backend may drop a not-yet-sent order; the guest's cache
/// evicts on its own, least recently used first); `BackendHandle::evict` is there for a policy
/// that names victims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Resource wire id.
    pub resource_id: u64,
    /// Its length.
    pub bytes: u64,
}

/// What to do for one incoming request, in this order: evict, push, dispatch, prefetch.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The request.
    pub dispatch: Dispatch,
    /// Resources of the request itself to stage before it is dispatched (the `push` mode: the
    /// set recorded for its type); the request waits until they are staged.
    pub push: Vec<PrefetchOrder>,
    /// Resources to push now, most urgent first.
    pub prefetch: Vec<PrefetchOrder>,
    /// Staged resources the policy dropped.
    pub evict: Vec<Eviction>,
}

/// What follows a completion: the prefetches that waited for the request's own claims.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FollowUp {
    /// Resources to push now.
    pub prefetch: Vec<PrefetchOrder>,
    /// Staged resources they displaced.
    pub evict: Vec<Eviction>,
}

/// A guest report (ctrlq `Report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub kind: ReportKind,
    /// Why, when `kind` is `Reject`.
    pub reason: Option<RejectReason>,
    /// App.
    pub app_id: u32,
    /// Task wire id.
    pub task_id: u64,
    /// Resource wire id.
    pub resource_id: u64,
    /// Resource version.
    pub version: u64,
    /// Latency the guest measured.
    pub latency_ns: u64,
}

/// A request completion (ctrlq `Complete`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Request id from the [`Dispatch`].
    pub request_id: u64,
    /// 0 for success.
    pub status: u32,
    /// Request latency measured in the guest.
    pub total_ns: u64,
    /// Per task.
    pub tasks: Vec<TaskTiming>,
}

#[cfg(test)]
mod tests;
