//! The fetch pool: worker threads that take resources from the store (which may be a slow
//! remote origin, and which hashes what it hands out), so the device thread never waits on one.
//!
//! Two waiting lists, both bounded: demands (the guest waits on them) are taken before
//! prefetches, and prefetches may occupy at most all workers but one, so a demand finds a free
//! worker even while every prefetch is stuck behind a slow origin. A full list refuses the job
//! ([`PoolFull`]): the device keeps prefetch orders in its own queue until a worker is free
//! (back-pressure, so a burst of orders does not become a burst of fetched content in memory)
//! and answers a demand with `Busy`. Each finished fetch goes back on a channel, and an eventfd
//! wakes the device thread to take it.

use std::{
    collections::VecDeque,
    sync::{mpsc, Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::Instant,
};

use log::warn;
use vmm_sys_util::event::EventNotifier;

use crate::api::{BackendThread, ThreadHook};
#[cfg(feature = "fault-injection")]
use crate::fault::{Faults, Tamper};
use crate::profile::{elapsed_ns, take_hash_ns, HostProfile};
use crate::store::{ResourceStore, StoreError, StoredResource};

/// Default number of fetch workers.
pub const DEFAULT_FETCH_WORKERS: usize = 4;
/// Most fetch workers a backend may run.
pub const MAX_FETCH_WORKERS: usize = 64;

/// A fetch to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchJob {
    /// Matches the result to the order.
    pub(crate) ticket: u64,
    pub(crate) resource_id: u64,
    pub(crate) min_version: u64,
    /// A demand: taken before any prefetch.
    pub(crate) demand: bool,
    /// Serve the previous version instead (Tamper::Rollback).
    #[cfg(feature = "fault-injection")]
    pub(crate) tamper: Tamper,
}

/// A finished fetch.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) ticket: u64,
    pub(crate) result: Result<StoredResource, StoreError>,
    /// Its reading and hashing time (for the profile).
    pub(crate) cost: HostProfile,
}

/// The waiting list for this kind of job is full; try again when a fetch finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolFull;

struct Lists {
    demands: VecDeque<FetchJob>,
    prefetches: VecDeque<FetchJob>,
    running_prefetches: usize,
    closed: bool,
}

struct Shared {
    lists: Mutex<Lists>,
    work: Condvar,
    store: Arc<dyn ResourceStore>,
    /// Most prefetches running at once.
    prefetch_workers: usize,
}

impl Shared {
    fn lists(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool (its workers end when it is dropped, after the fetch each is in).
pub(crate) struct FetchPool {
    shared: Arc<Shared>,
    /// Most waiting jobs of each kind.
    capacity: usize,
    workers: usize,
}

impl std::fmt::Debug for FetchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchPool")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl FetchPool {
    /// Starts `workers` threads (at least one) fetching from `store`; at most `capacity` jobs of
    /// each kind wait. Each result is sent on `done`, then `wake` is notified.
    pub(crate) fn new(
        workers: usize,
        capacity: usize,
        store: Arc<dyn ResourceStore>,
        done: mpsc::Sender<Fetched>,
        wake: &EventNotifier,
        hook: Option<ThreadHook>,
    ) -> std::io::Result<Self> {
        let workers = workers.clamp(1, MAX_FETCH_WORKERS);
        let shared = Arc::new(Shared {
            lists: Mutex::new(Lists {
                demands: VecDeque::new(),
                prefetches: VecDeque::new(),
                running_prefetches: 0,
                closed: false,
            }),
            work: Condvar::new(),
            store,
            prefetch_workers: workers.saturating_sub(1).max(1),
        });
        for i in 0..workers {
            let shared = shared.clone();
            let done = done.clone();
            let wake = wake.try_clone()?;
            let hook = hook.clone();
            thread::Builder::new()
                .name(format!("prefetch-fetch-{i}"))
                .spawn(move || {
                    if let Some(hook) = hook {
                        hook(BackendThread::Fetch);
                    }
                    work(&shared, &done, &wake)
                })?;
        }
        Ok(Self {
            shared,
            capacity: capacity.max(1),
            workers,
        })
    }

    /// The number of workers.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Queues `job`, or refuses it when its waiting list is full.
    pub(crate) fn try_submit(&self, job: FetchJob) -> Result<(), PoolFull> {
        let mut lists = self.shared.lists();
        let list = if job.demand {
            &mut lists.demands
        } else {
            &mut lists.prefetches
        };
        if list.len() >= self.capacity {
            return Err(PoolFull);
        }
        list.push_back(job);
        drop(lists);
        self.shared.work.notify_one();
        Ok(())
    }
}

impl Drop for FetchPool {
    fn drop(&mut self) {
        self.shared.lists().closed = true;
        self.shared.work.notify_all();
    }
}

/// The next job for a worker: a demand, or a prefetch while fewer than `prefetch_workers` run.
fn next_job(shared: &Shared) -> Option<FetchJob> {
    let mut lists = shared.lists();
    loop {
        if lists.closed {
            return None;
        }
        if let Some(job) = lists.demands.pop_front() {
            return Some(job);
        }
        if lists.running_prefetches < shared.prefetch_workers {
            if let Some(job) = lists.prefetches.pop_front() {
                lists.running_prefetches += 1;
                return Some(job);
            }
        }
        lists = shared.work.wait(lists).unwrap_or_else(|p| p.into_inner());
    }
}

fn work(shared: &Shared, done: &mpsc::Sender<Fetched>, wake: &EventNotifier) {
    while let Some(job) = next_job(shared) {
        let _ = take_hash_ns();
        let start = Instant::now();
        let result = fetch(shared.store.as_ref(), &job);
        let total = elapsed_ns(start);
        let hash_ns = take_hash_ns();
        let cost = HostProfile {
            read_ns: total.saturating_sub(hash_ns),
            hash_ns,
            ..HostProfile::default()
        };
        if !job.demand {
            shared.lists().running_prefetches -= 1;
            // A prefetch slot is free: a waiting worker may take the next one.
            shared.work.notify_all();
        }
        if done
            .send(Fetched {
                ticket: job.ticket,
                result,
                cost,
            })
            .is_err()
        {
            return;
        }
        if let Err(e) = wake.notify() {
            warn!("fetch pool cannot wake the device: {e}");
        }
    }
}

fn fetch(store: &dyn ResourceStore, job: &FetchJob) -> Result<StoredResource, StoreError> {
    let newest = store.get(job.resource_id, job.min_version)?;
    #[cfg(feature = "fault-injection")]
    if let Some(older) = Faults::rollback(job.tamper, store, &newest) {
        return Ok(older);
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use virtio_prefetch_wire::ResourceKind;
    use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};

    use super::*;
    use crate::store::testing::GatedStore;

    fn job(ticket: u64, resource_id: u64, demand: bool) -> FetchJob {
        FetchJob {
            ticket,
            resource_id,
            min_version: 0,
            demand,
            #[cfg(feature = "fault-injection")]
            tamper: Tamper::None,
        }
    }

    fn pool(
        workers: usize,
        capacity: usize,
    ) -> (FetchPool, mpsc::Receiver<Fetched>, Arc<GatedStore>) {
        let store = Arc::new(GatedStore::new());
        for id in 1..=8 {
            store.add(StoredResource::new(
                id,
                1,
                ResourceKind::Data,
                1,
                vec![id as u8; 100],
            ));
        }
        let (tx, rx) = mpsc::channel();
        let (_consumer, wake) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).unwrap();
        let pool = FetchPool::new(workers, capacity, store.clone(), tx, &wake, None).unwrap();
        (pool, rx, store)
    }

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn waiting_lists_are_bounded_and_free_up_as_fetches_finish() {
        let (pool, done, store) = pool(1, 2);
        store.close(1);
        pool.try_submit(job(1, 1, false)).unwrap();
        store.wait_entered(1, LONG);
        // The one worker is inside fetch 1; two more prefetches wait, the third is refused.
        pool.try_submit(job(2, 2, false)).unwrap();
        pool.try_submit(job(3, 3, false)).unwrap();
        assert_eq!(pool.try_submit(job(4, 4, false)), Err(PoolFull));
        // Demands have their own list: a full prefetch list does not refuse them.
        pool.try_submit(job(5, 5, true)).unwrap();
        pool.try_submit(job(6, 6, true)).unwrap();
        assert_eq!(pool.try_submit(job(7, 7, true)), Err(PoolFull));
        store.open(1);
        let order: Vec<u64> = (0..5)
            .map(|_| done.recv_timeout(LONG).unwrap().ticket)
            .collect();
        assert_eq!(
            order,
            [1, 5, 6, 2, 3],
            "demands are taken before waiting prefetches"
        );
        pool.try_submit(job(4, 4, false)).unwrap();
        let last = done.recv_timeout(LONG).unwrap();
        assert_eq!(last.ticket, 4);
        assert_eq!(last.result.unwrap().content, vec![4u8; 100]);
    }

    #[test]
    fn a_demand_gets_a_worker_while_prefetches_are_stuck() {
        let (pool, done, store) = pool(2, 8);
        store.close(1);
        store.close(2);
        pool.try_submit(job(1, 1, false)).unwrap();
        pool.try_submit(job(2, 2, false)).unwrap();
        store.wait_entered(1, LONG);
        pool.try_submit(job(3, 3, true)).unwrap();
        let first = done.recv_timeout(LONG).unwrap();
        assert_eq!(
            first.ticket, 3,
            "the demand is served while prefetch 1 is stuck"
        );
        assert!(
            !store.entered(2),
            "prefetch 2 waits: prefetches leave one worker of two to demands"
        );
        store.open(1);
        store.open(2);
        let mut rest: Vec<u64> = (0..2)
            .map(|_| done.recv_timeout(LONG).unwrap().ticket)
            .collect();
        rest.sort_unstable();
        assert_eq!(rest, [1, 2]);
        assert!(done.recv_timeout(Duration::from_millis(1)).is_err());
    }

    #[test]
    fn an_unknown_resource_comes_back_as_an_error() {
        let (pool, done, _store) = pool(1, 1);
        pool.try_submit(job(9, 99, true)).unwrap();
        let r = done.recv_timeout(LONG).unwrap();
        assert_eq!(r.ticket, 9);
        assert!(matches!(r.result, Err(StoreError::Unknown { id: 99, .. })));
    }
}
