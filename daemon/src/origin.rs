//! The modelled remote origin in front of the local disk store: every fetch costs the origin's
//! latency plus its transfer time on one shared link, on the wall clock, so the benefit of
//! prefetching is measured in the guest, not assumed. Without a model the store is local.
//!
//! The backend fetches from several threads at once (its fetch pool), so the model is booked
//! with the same [`Link`] arithmetic `pto simulate` uses: concurrent fetches overlap their
//! latencies, and their transfers share the bandwidth one after another in order of issue. Each
//! fetch then sleeps until its booked completion time.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use see_prefetch_backend::store::{DiskStore, ResourceStore, StoreError, StoredResource};
use see_pto::online::origin::{Link, OriginModel};

/// A [`DiskStore`] behind an [`OriginModel`]: latency overlaps between fetches, bandwidth is
/// shared (as `see_pto::online::origin::Throttled` does for a `ResourceSource`).
#[derive(Debug)]
pub struct OriginStore {
    inner: DiskStore,
    /// The shared link, in nanoseconds since `epoch`.
    link: Option<Mutex<Link>>,
    epoch: Instant,
    fetches: Mutex<(u64, u64)>,
}

impl OriginStore {
    /// `inner` behind `model` (`None`: local, no delay).
    pub fn new(inner: DiskStore, model: Option<OriginModel>) -> Self {
        Self {
            inner,
            link: model.map(|m| Mutex::new(Link::new(m))),
            epoch: Instant::now(),
            fetches: Mutex::new((0, 0)),
        }
    }

    /// Fetches served and their bytes.
    pub fn fetches(&self) -> (u64, u64) {
        *self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Books a fetch of `bytes` issued `issued` after the store was made on the shared link;
    /// returns when (after the same origin) its last byte arrives. Local: at once.
    pub fn book(&self, issued: Duration, bytes: u64) -> Duration {
        let Some(link) = &self.link else {
            return issued;
        };
        let issued_ns = u64::try_from(issued.as_nanos()).unwrap_or(u64::MAX);
        let done_ns = link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fetch(issued_ns, bytes);
        Duration::from_nanos(done_ns)
    }

    /// Waits until the modelled link has delivered `bytes` asked for at `start`.
    fn pay(&self, start: Instant, bytes: u64) {
        {
            let mut f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
            f.0 += 1;
            f.1 += bytes;
        }
        if self.link.is_none() {
            return;
        }
        let done = self.epoch + self.book(start.duration_since(self.epoch), bytes);
        // The modelled origin: this wait is the cost being modelled.
        let left = done.saturating_duration_since(Instant::now());
        if left > Duration::ZERO {
            std::thread::sleep(left);
        }
    }
}

impl ResourceStore for OriginStore {
    fn get(&self, id: u64, min_version: u64) -> Result<StoredResource, StoreError> {
        let start = Instant::now();
        let r = self.inner.get(id, min_version)?;
        self.pay(start, r.content.len() as u64);
        Ok(r)
    }

    fn get_version(&self, id: u64, version: u64) -> Result<StoredResource, StoreError> {
        let start = Instant::now();
        let r = self.inner.get_version(id, version)?;
        self.pay(start, r.content.len() as u64);
        Ok(r)
    }

    fn size_of(&self, id: u64) -> Result<u64, StoreError> {
        self.inner.size_of(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use virtio_prefetch_wire::ResourceKind;

    const MS: Duration = Duration::from_millis(1);

    fn store(model: Option<OriginModel>) -> (OriginStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path()).unwrap();
        for id in 1..=4 {
            disk.add(id, 1, ResourceKind::Data, 1, &[id as u8; 1000])
                .unwrap();
        }
        (OriginStore::new(disk, model), dir)
    }

    #[test]
    fn fetches_are_counted_and_unknown_ones_refused() {
        let (store, _dir) = store(None);
        assert_eq!(store.get(1, 0).unwrap().content.len(), 1000);
        assert_eq!(store.get_version(2, 1).unwrap().content, vec![2u8; 1000]);
        assert_eq!(store.fetches(), (2, 2000));
        assert!(store.get(8, 0).is_err(), "an unknown resource is an error");
        assert_eq!(store.size_of(3).unwrap(), 1000);
        assert_eq!(store.book(5 * MS, 1 << 30), 5 * MS, "local: no delay");
    }

    #[test]
    fn concurrent_fetches_overlap_latency_and_share_bandwidth() {
        // 10 ms latency, 1 MB/s: a 1000-byte fetch costs 10 + 1 ms on an idle link.
        let model = OriginModel::new(10 * MS, 1e6).unwrap();
        let (store, _dir) = store(Some(model));
        // Four fetches issued together: latencies overlap, transfers take turns.
        let done: Vec<Duration> = (0..4).map(|_| store.book(Duration::ZERO, 1000)).collect();
        assert_eq!(done, [11 * MS, 12 * MS, 13 * MS, 14 * MS]);
        assert!(
            done[3] < 4 * model.cost(1000),
            "together they end well before four fetches one after another (44 ms)"
        );
        // The link's bandwidth is shared, not multiplied: four transfers of 1 ms each take
        // 4 ms of link time after the common latency.
        assert_eq!(done[3] - model.latency, 4 * model.transfer(1000));
        // A fetch issued on an idle link later pays latency and its own transfer only.
        assert_eq!(store.book(100 * MS, 1000), 111 * MS);
        // One issued while the link is still busy waits for the earlier transfers.
        let a = store.book(200 * MS, 50_000); // 210 + 50 = 260 ms
        let b = store.book(205 * MS, 1000); // first byte at 215, link free at 260
        assert_eq!((a, b), (260 * MS, 261 * MS));
    }

    #[test]
    fn fetches_from_many_threads_book_one_link() {
        let model = OriginModel::new(Duration::ZERO, 1e12).unwrap();
        let (store, _dir) = store(Some(model));
        let store = Arc::new(store);
        let threads: Vec<_> = (1..=4u64)
            .map(|id| {
                let store = store.clone();
                std::thread::spawn(move || store.get(id, 0).unwrap().id)
            })
            .collect();
        let mut ids: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(store.fetches(), (4, 4000));
    }
}
