//! The origin model: resources served from local disk behind a configurable latency and
//! bandwidth, so that the cost of fetching from a remote origin is measured, not assumed.
//!
//! [`OriginModel`] is the arithmetic (`latency + bytes / bandwidth`, printable as
//! `origin: 20 ms + 100 MiB/s`); [`Link`] queues transfers on one shared link in virtual time
//! (the replay simulation) and [`Pool`] bounds how many are in progress at once; [`Throttled`]
//! wraps any [`ResourceSource`] and makes each fetch take the model's time on the wall clock
//! (the backend). [`DirSource`] reads
//! `DIR/<resource id>/<version>`; [`CatalogueSource`] generates the catalogue's contents.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::metadata::ServiceCatalogue;

/// Errors of a resource source.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The resource is not there.
    #[error("resource {id} version {version} not found at the origin; add it to the store")]
    NotFound {
        /// Resource wire id.
        id: u64,
        /// Version.
        version: u64,
    },
    /// Reading it failed.
    #[error("reading resource {id} version {version}: {source}")]
    Io {
        /// Resource wire id.
        id: u64,
        /// Version.
        version: u64,
        /// The cause.
        source: std::io::Error,
    },
    /// The bandwidth is not a positive number.
    #[error("bad origin model: bandwidth {0} must be a positive number of bytes per second")]
    Bandwidth(f64),
}

/// Where resource bytes come from, keyed by wire id and version. The backend's store adapts to
/// this with a one-method impl (see the crate README).
pub trait ResourceSource: Send + Sync {
    /// The bytes of resource `id` at `version`.
    fn fetch(&self, id: u64, version: u64) -> Result<Vec<u8>, OriginError>;
}

/// A remote origin's cost: a fixed latency per fetch plus the transfer at a bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OriginModel {
    /// Round-trip latency before the first byte.
    pub latency: Duration,
    /// Bytes per second.
    pub bandwidth: f64,
}

impl Default for OriginModel {
    /// 20 ms + 100 MiB/s: an object store in the same region.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            bandwidth: 100.0 * 1024.0 * 1024.0,
        }
    }
}

impl OriginModel {
    /// A model; the bandwidth must be positive and finite.
    pub fn new(latency: Duration, bandwidth: f64) -> Result<Self, OriginError> {
        if !(bandwidth.is_finite() && bandwidth > 0.0) {
            return Err(OriginError::Bandwidth(bandwidth));
        }
        Ok(Self { latency, bandwidth })
    }

    /// Transfer time of `bytes` at the bandwidth.
    pub fn transfer(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bandwidth)
    }

    /// Time to fetch `bytes` on an idle link: latency + transfer.
    pub fn cost(&self, bytes: u64) -> Duration {
        self.latency + self.transfer(bytes)
    }
}

impl fmt::Display for OriginModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.bandwidth / (1024.0 * 1024.0);
        write!(
            f,
            "origin: {} ms + {} MiB/s",
            self.latency.as_secs_f64() * 1e3,
            (mib * 100.0).round() / 100.0
        )
    }
}

/// One link to the origin in virtual time (ns): fetches are pipelined (their latencies
/// overlap) but their transfers share the bandwidth in order of issue.
#[derive(Clone, Debug)]
pub struct Link {
    model: OriginModel,
    free_at_ns: u64,
}

impl Link {
    /// An idle link.
    pub fn new(model: OriginModel) -> Self {
        Self {
            model,
            free_at_ns: 0,
        }
    }

    /// Issues a fetch of `bytes` at `now_ns`; returns when its last byte arrives.
    pub fn fetch(&mut self, now_ns: u64, bytes: u64) -> u64 {
        let first_byte = now_ns + self.model.latency.as_nanos() as u64;
        let done = first_byte.max(self.free_at_ns) + self.model.transfer(bytes).as_nanos() as u64;
        self.free_at_ns = done;
        done
    }
}

/// The origin behind a bounded pool of fetchers, in virtual time (ns): at most `workers`
/// fetches are in progress at once (a fetch issued while all are busy starts when the first
/// one finishes); the ones in progress overlap their latencies and share the bandwidth of one
/// [`Link`], in order of start. This is the backend's fetch pool in front of an origin whose
/// latency overlaps and whose bandwidth is shared; like the backend's, prefetches
/// ([`Pool::prefetch`]) may hold all the workers but one, so a demand ([`Pool::fetch`]) finds
/// one free unless other demands hold it. The link takes transfers in order of issue, not of
/// start: a fetch that waited for a worker can hold up the transfer of one issued after it
/// that started at once (a small error while transfers are short against the latency).
#[derive(Clone, Debug)]
pub struct Pool {
    link: Link,
    /// When each worker is next free.
    free_at_ns: Vec<u64>,
}

impl Pool {
    /// An idle pool of `workers` fetchers (at least one).
    pub fn new(model: OriginModel, workers: usize) -> Self {
        Self {
            link: Link::new(model),
            free_at_ns: vec![0; workers.max(1)],
        }
    }

    /// Issues a demand fetch of `bytes` at `now_ns` (any worker); returns when its last byte
    /// arrives.
    pub fn fetch(&mut self, now_ns: u64, bytes: u64) -> u64 {
        self.fetch_on(self.free_at_ns.len(), now_ns, bytes)
    }

    /// Issues a prefetch of `bytes` at `now_ns` (on all the workers but one, unless there is
    /// only one); returns when its last byte arrives.
    pub fn prefetch(&mut self, now_ns: u64, bytes: u64) -> u64 {
        self.fetch_on(
            self.free_at_ns.len().saturating_sub(1).max(1),
            now_ns,
            bytes,
        )
    }

    /// A fetch on the first `lane` workers.
    fn fetch_on(&mut self, lane: usize, now_ns: u64, bytes: u64) -> u64 {
        let (i, free) = self
            .free_at_ns
            .iter()
            .take(lane)
            .copied()
            .enumerate()
            .min_by_key(|&(_, t)| t)
            .unwrap_or((0, 0));
        let done = self.link.fetch(now_ns.max(free), bytes);
        if let Some(w) = self.free_at_ns.get_mut(i) {
            *w = done;
        }
        done
    }
}

/// A source behind the origin model on the wall clock: each fetch returns after the latency
/// and after its transfer has had its turn on the shared link. Thread-safe.
#[derive(Debug)]
pub struct Throttled<S> {
    inner: S,
    model: OriginModel,
    link_free: Mutex<Instant>,
}

impl<S: ResourceSource> Throttled<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, model: OriginModel) -> Self {
        Self {
            inner,
            model,
            link_free: Mutex::new(Instant::now()),
        }
    }

    /// The model in use.
    pub fn model(&self) -> OriginModel {
        self.model
    }
}

impl<S: ResourceSource> ResourceSource for Throttled<S> {
    fn fetch(&self, id: u64, version: u64) -> Result<Vec<u8>, OriginError> {
        let start = Instant::now();
        let bytes = self.inner.fetch(id, version)?;
        let done = {
            let mut free = self
                .link_free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let done =
                (start + self.model.latency).max(*free) + self.model.transfer(bytes.len() as u64);
            *free = done;
            done
        };
        // The modelled origin: the wait is the cost being modelled, not a test synchronisation.
        std::thread::sleep(done.saturating_duration_since(Instant::now()));
        Ok(bytes)
    }
}

/// Resources on local disk at `DIR/<id>/<version>`.
#[derive(Clone, Debug)]
pub struct DirSource {
    /// The directory.
    pub dir: PathBuf,
}

impl ResourceSource for DirSource {
    fn fetch(&self, id: u64, version: u64) -> Result<Vec<u8>, OriginError> {
        let path = self.dir.join(id.to_string()).join(version.to_string());
        std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => OriginError::NotFound { id, version },
            _ => OriginError::Io {
                id,
                version,
                source,
            },
        })
    }
}

/// The catalogue's resources, generated on each fetch ([`ServiceCatalogue::content`]).
#[derive(Clone, Debug)]
pub struct CatalogueSource(pub Arc<ServiceCatalogue>);

impl ResourceSource for CatalogueSource {
    fn fetch(&self, id: u64, version: u64) -> Result<Vec<u8>, OriginError> {
        let r = usize::try_from(id.wrapping_sub(1))
            .ok()
            .and_then(|i| self.0.resources.get(i))
            .filter(|r| r.version == version)
            .ok_or(OriginError::NotFound { id, version })?;
        self.0.content(r).map_err(|source| OriginError::Io {
            id,
            version,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_prints_and_costs() {
        let m = OriginModel::default();
        assert_eq!(m.to_string(), "origin: 20 ms + 100 MiB/s");
        assert_eq!(m.cost(100 << 20), Duration::from_millis(1020));
        assert!(OriginModel::new(Duration::ZERO, 0.0).is_err());
        assert!(OriginModel::new(Duration::ZERO, f64::NAN).is_err());
    }

    #[test]
    fn link_pipelines_latency_and_serialises_bandwidth() {
        let m = OriginModel::new(Duration::from_millis(10), 1e9).unwrap(); // 1 byte per ns
        let mut link = Link::new(m);
        let a = link.fetch(0, 1_000_000); // 10 ms latency + 1 ms
        assert_eq!(a, 11_000_000);
        let b = link.fetch(0, 1_000_000); // overlapping latency, waits for a's transfer
        assert_eq!(b, 12_000_000);
        let c = link.fetch(50_000_000, 0); // idle link: latency only
        assert_eq!(c, 60_000_000);
    }

    #[test]
    fn pool_bounds_concurrent_fetches_and_shares_the_link() {
        let m = OriginModel::new(Duration::from_millis(10), 1e9).unwrap(); // 1 byte per ns
                                                                           // Four fetches at once on a pool of four: one latency, then the transfers in turn.
        let mut pool = Pool::new(m, 4);
        let done: Vec<u64> = (0..4).map(|_| pool.fetch(0, 1_000_000)).collect();
        assert_eq!(done, [11_000_000, 12_000_000, 13_000_000, 14_000_000]);
        // A pool of one serialises the latencies too.
        let mut one = Pool::new(m, 1);
        let done: Vec<u64> = (0..3).map(|_| one.fetch(0, 1_000_000)).collect();
        assert_eq!(done, [11_000_000, 22_000_000, 33_000_000]);
        // Zero workers is taken as one, not a panic.
        assert_eq!(Pool::new(m, 0).fetch(0, 0), 10_000_000);
        // Prefetches leave a worker for demands: on a pool of two, a demand next to a
        // prefetch does not wait, and a second prefetch waits for the first.
        let mut two = Pool::new(m, 2);
        assert_eq!(two.prefetch(0, 0), 10_000_000);
        assert_eq!(two.fetch(0, 0), 10_000_000);
        assert_eq!(two.prefetch(0, 0), 20_000_000);
        // On a pool of one, prefetches and demands share the worker.
        let mut one = Pool::new(m, 1);
        assert_eq!(one.prefetch(0, 0), 10_000_000);
        assert_eq!(one.fetch(0, 0), 20_000_000);
    }

    #[test]
    fn dir_and_catalogue_sources_serve_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("3")).unwrap();
        std::fs::write(dir.path().join("3/7"), b"abc").unwrap();
        let src = DirSource {
            dir: dir.path().into(),
        };
        assert_eq!(src.fetch(3, 7).unwrap(), b"abc");
        assert!(matches!(src.fetch(3, 8), Err(OriginError::NotFound { .. })));
        let cat = Arc::new(ServiceCatalogue::default_catalogue());
        let src = CatalogueSource(cat.clone());
        let psp = cat.resource("psp-certs").unwrap();
        let id = cat.resource_wire_id(psp).unwrap();
        let bytes = src.fetch(id, psp.version).unwrap();
        assert_eq!(bytes.len() as u64, psp.size);
        let s = see_workload::process(&bytes).unwrap();
        assert_eq!((s.resource_id, s.version), (id, psp.version));
        assert!(src.fetch(id, psp.version + 1).is_err(), "wrong version");
        assert!(src.fetch(0, 1).is_err() && src.fetch(u64::MAX, 1).is_err());
    }

    #[test]
    fn throttled_fetch_takes_at_least_the_model_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("1/1"), vec![0u8; 1000]).unwrap();
        let m = OriginModel::new(Duration::from_millis(5), 100_000.0).unwrap(); // 1000 B: 10 ms
        let t = Throttled::new(
            DirSource {
                dir: dir.path().into(),
            },
            m,
        );
        let start = Instant::now();
        assert_eq!(t.fetch(1, 1).unwrap().len(), 1000);
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert!(t.fetch(2, 1).is_err());
    }
}
