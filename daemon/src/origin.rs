//! The modelled remote origin in front of the local disk store: every fetch costs the origin's
//! latency plus its transfer time on one shared link, on the wall clock, so the benefit of
//! prefetching is measured in the guest, not assumed. Without a model the store is local.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use see_prefetch_backend::store::{DiskStore, ResourceStore, StoreError, StoredResource};
use see_pto::online::origin::OriginModel;

/// A [`DiskStore`] behind an [`OriginModel`]: latency overlaps between fetches, bandwidth is
/// shared (as `see_pto::online::origin::Throttled` does for a `ResourceSource`).
#[derive(Debug)]
pub struct OriginStore {
    inner: DiskStore,
    model: Option<OriginModel>,
    link_free: Mutex<Instant>,
    fetches: Mutex<(u64, u64)>,
}

impl OriginStore {
    /// `inner` behind `model` (`None`: local, no delay).
    pub fn new(inner: DiskStore, model: Option<OriginModel>) -> Self {
        Self {
            inner,
            model,
            link_free: Mutex::new(Instant::now()),
            fetches: Mutex::new((0, 0)),
        }
    }

    /// Fetches served and their bytes.
    pub fn fetches(&self) -> (u64, u64) {
        *self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the modelled link has delivered `bytes` asked for at `start`.
    fn pay(&self, start: Instant, bytes: u64) {
        {
            let mut f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
            f.0 += 1;
            f.1 += bytes;
        }
        let Some(model) = &self.model else { return };
        let done = {
            let mut free = self.link_free.lock().unwrap_or_else(|p| p.into_inner());
            let done = (start + model.latency).max(*free) + model.transfer(bytes);
            *free = done;
            done
        };
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
    use super::*;
    use virtio_prefetch_wire::ResourceKind;

    #[test]
    fn a_fetch_takes_at_least_the_model_time_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path()).unwrap();
        disk.add(7, 1, ResourceKind::Data, 1, &[5u8; 1000]).unwrap();
        // 1000 bytes at 100 kB/s: 10 ms, plus 5 ms latency.
        let model = OriginModel::new(Duration::from_millis(5), 100_000.0).unwrap();
        let store = OriginStore::new(disk, Some(model));
        let start = Instant::now();
        assert_eq!(store.get(7, 0).unwrap().content.len(), 1000);
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert_eq!(store.fetches(), (1, 1000));
        assert!(store.get(8, 0).is_err(), "an unknown resource is an error");
        assert_eq!(store.size_of(7).unwrap(), 1000);
    }
}
