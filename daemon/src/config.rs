//! The daemon's configuration: what a TOML file (`--config`) or the command line sets, with
//! the defaults a fresh machine runs on, checked before anything starts.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Which predictor the PTO runs online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictorKind {
    /// The naive baseline: no prediction, no guest cache (a claim consumes the resource) and
    /// one demand fetch at a time (`reactive-nocache`; the guest runs with `see.cache=0
    /// see.max_demands=1`).
    #[serde(rename = "reactive-nocache")]
    ReactiveNocache,
    /// No prediction: every resource the guest's cache lacks is demand-fetched, in parallel
    /// (the strong `reactive` baseline; also accepted as `reactive`).
    #[serde(alias = "reactive")]
    None,
    /// REAP-like, no prediction across requests: at dispatch, the resources the last request
    /// of the same type claimed are pushed, and the request waits for them.
    Push,
    /// The catalogue's static dependency graph (`next` links).
    Static,
    /// First-order Markov counts over the history.
    Markov,
    /// Variable-order Markov (PPM, order 4) over the history.
    Ppm,
    /// A learned checkpoint from `pto train` (`model`), mixed with PPM over the history.
    Learned,
    /// Knows the requests to come (`oracle_trace`): the limit, for experiments.
    Oracle,
}

impl PredictorKind {
    /// Every kind, in the order the demo runs them.
    pub const ALL: [PredictorKind; 8] = [
        PredictorKind::ReactiveNocache,
        PredictorKind::None,
        PredictorKind::Push,
        PredictorKind::Static,
        PredictorKind::Markov,
        PredictorKind::Ppm,
        PredictorKind::Learned,
        PredictorKind::Oracle,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::ReactiveNocache => "reactive-nocache",
            PredictorKind::None => "none",
            PredictorKind::Push => "push",
            PredictorKind::Static => "static",
            PredictorKind::Markov => "markov",
            PredictorKind::Ppm => "ppm",
            PredictorKind::Learned => "learned",
            PredictorKind::Oracle => "oracle",
        }
    }
}

impl PredictorKind {
    /// True for the naive baseline, whose guest runs without its cache and demands one
    /// resource at a time.
    pub fn naive(self) -> bool {
        self == PredictorKind::ReactiveNocache
    }
}

impl std::fmt::Display for PredictorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PredictorKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "reactive" {
            return Ok(PredictorKind::None);
        }
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ConfigError::UnknownPredictor(s.to_owned()))
    }
}

/// Where the front door listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (loopback unless you mean otherwise).
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/path`).
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Listen::Unix(path.into())),
            Some(_) => Err(ConfigError::Listen(s.to_owned())),
            None => s
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| ConfigError::Listen(s.to_owned())),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "http://{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Listen::Tcp(a) => s.serialize_str(&a.to_string()),
            Listen::Unix(p) => s.serialize_str(&format!("unix:{}", p.display())),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The daemon's configuration. Every field has a default; a TOML file names the ones it
/// changes (unknown keys are refused), and command-line flags override the file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The vhost-user socket the VMM connects to.
    pub socket: PathBuf,
    /// The content-addressed resource store (a directory).
    pub store: PathBuf,
    /// The PTO's signing key (P-384, PKCS#8 PEM), held in this process: for tests and
    /// development. Ignored when `signer` is set.
    pub key: PathBuf,
    /// The signer's socket (`see-signer`): the key stays in that process, and this one never
    /// reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<PathBuf>,
    /// The service metadata (TOML); `None`: the embedded shop catalogue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<PathBuf>,
    /// Every resource size of the catalogue multiplied by this (the store must hold
    /// resources of the scaled sizes).
    pub size_scale: f64,
    /// The predictor.
    pub predictor: PredictorKind,
    /// The checkpoint of the learned predictor (`pto train --out DIR/lstm`: the common stem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The oracle's future: `session,type` per line, in the order the requests will come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_trace: Option<PathBuf>,
    /// The SQLite history: past sessions train the count predictors; every request served
    /// is recorded in it.
    pub history: PathBuf,
    /// The history source the live requests are filed under.
    pub history_source: String,
    /// The hash-chained audit log (appended).
    pub audit: PathBuf,
    /// The version floors (JSON; only ever rise): sent signed to every guest session, so
    /// rollback protection survives a guest reboot (virtio-prefetch SPEC.md section 8).
    /// Empty (the default): [`Config::floors_file`], beside the store, so the floors always
    /// describe that store's resources (ids are positions in a catalogue: another store's
    /// floors would demand versions this one never had).
    pub floors: PathBuf,
    /// The audit key (P-384, PKCS#8 PEM, `cargo xtask keys` makes `target/see-keys/audit.key`)
    /// that signs the audit log's checkpoints; without one the log is not anchored (a warning
    /// says so) and `pto audit verify` can check its chain only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<PathBuf>,
    /// A signed checkpoint every this many audit records (and one when the daemon stops).
    pub audit_checkpoint_every: u32,
    /// Staging budget in bytes: the guest's verified store holds at most this.
    pub budget: u64,
    /// Smallest probability worth staging.
    pub threshold: f32,
    /// Predictions considered per request.
    pub top_k: usize,
    /// Where the front door listens: `127.0.0.1:8080` or `unix:/path`.
    pub listen: Listen,
    /// Requests accepted and not yet answered, at most; past it a request gets 429.
    pub queue_depth: usize,
    /// Largest request body in bytes; past it a request gets 413.
    pub body_limit: usize,
    /// Longest wait for the guest to complete one request, ms; past it the request fails
    /// with 504 and the SEE is treated as wedged.
    pub request_timeout_ms: u64,
    /// A session without a request for this long is ended (its context is dropped), ms.
    pub session_idle_ms: u64,
    /// Live sessions kept at most; the least recently active is ended past it.
    pub max_sessions: usize,
    /// The modelled origin in front of the store: latency per fetch, ms (0 with a bandwidth
    /// of 0: the store is local, no model).
    pub origin_latency_ms: f64,
    /// The modelled origin's bandwidth, MiB/s, shared by all fetches (0: unlimited).
    pub origin_bandwidth_mib: f64,
    /// Threads fetching from the origin at once (the backend's fetch pool, 1 to 64). With more
    /// than one, prefetches leave one of them to the guest's demands.
    pub fetch_workers: usize,
    /// Before dispatching a request, wait until every prefetch ordered so far is staged (for
    /// experiments with deterministic hit rates, not for serving).
    pub settle: bool,
    /// Send a request's prefetch orders as soon as it is dispatched, not when it completes.
    pub eager_prefetch: bool,
    /// The guest's idle limit, ms: the serve app ends when no request comes for this long.
    pub guest_idle_ms: u64,
    /// The Wasm module every task runs (`cargo xtask tasks` builds `tasks/shop.c` into
    /// `target/tasks/shop.wasm`): each task's code resource holds it ([`crate::tasks`]) and
    /// the guest runs it under the task's limits. `None`: the native tasks compiled into the
    /// guest image, the comparison point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_module: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let policy = see_pto::online::Policy::default();
        Self {
            socket: PathBuf::from("target/see/prefetch.sock"),
            store: PathBuf::from("target/see/store"),
            key: PathBuf::from("target/see-keys/pto.key"),
            signer: None,
            catalogue: None,
            size_scale: 1.0,
            predictor: PredictorKind::Markov,
            model: None,
            oracle_trace: None,
            history: PathBuf::from("target/see/history.sqlite"),
            history_source: "live".into(),
            audit: PathBuf::from("target/see/audit.jsonl"),
            floors: PathBuf::new(),
            audit_key: None,
            audit_checkpoint_every: 256,
            budget: policy.budget_bytes,
            threshold: policy.threshold,
            top_k: policy.top_k,
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080))),
            queue_depth: 64,
            body_limit: 16 * 1024,
            request_timeout_ms: 30_000,
            session_idle_ms: 30 * 60 * 1000,
            max_sessions: 10_000,
            origin_latency_ms: 0.0,
            origin_bandwidth_mib: 0.0,
            fetch_workers: see_prefetch_backend::DEFAULT_FETCH_WORKERS,
            settle: false,
            eager_prefetch: false,
            guest_idle_ms: 24 * 3600 * 1000,
            task_module: None,
        }
    }
}

impl Config {
    /// The floors file: `floors` if set, else `<store>.floors/floors.json`, a directory of its
    /// own beside the store (the confined daemon may write there, and only read the store).
    pub fn floors_file(&self) -> PathBuf {
        if !self.floors.as_os_str().is_empty() {
            return self.floors.clone();
        }
        let mut name = self
            .store
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "store".into());
        name.push(".floors");
        self.store.with_file_name(name).join("floors.json")
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks every value; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError::Invalid { field, why });
        if !(self.size_scale.is_finite() && self.size_scale > 0.0) {
            return bad(
                "size_scale",
                format!("{} must be positive", self.size_scale),
            );
        }
        if self.audit_checkpoint_every == 0 {
            return bad("audit_checkpoint_every", "0 must be at least 1".into());
        }
        if self.queue_depth == 0 || self.queue_depth > 1 << 16 {
            return bad(
                "queue_depth",
                format!("{} is not in 1..=65536", self.queue_depth),
            );
        }
        if !(64..=1 << 20).contains(&self.body_limit) {
            return bad(
                "body_limit",
                format!("{} is not in 64..=1048576", self.body_limit),
            );
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be at least 1".into());
        }
        if self.max_sessions == 0 {
            return bad("max_sessions", "must be at least 1".into());
        }
        if !(self.origin_latency_ms.is_finite() && self.origin_latency_ms >= 0.0) {
            return bad(
                "origin_latency_ms",
                format!("{} must be 0 or more", self.origin_latency_ms),
            );
        }
        if !(self.origin_bandwidth_mib.is_finite() && self.origin_bandwidth_mib >= 0.0) {
            return bad(
                "origin_bandwidth_mib",
                format!("{} must be 0 or more", self.origin_bandwidth_mib),
            );
        }
        if !(1..=see_prefetch_backend::MAX_FETCH_WORKERS).contains(&self.fetch_workers) {
            return bad(
                "fetch_workers",
                format!(
                    "{} is not in 1..={}",
                    self.fetch_workers,
                    see_prefetch_backend::MAX_FETCH_WORKERS
                ),
            );
        }
        if self.history_source.is_empty() {
            return bad("history_source", "must not be empty".into());
        }
        match self.predictor {
            PredictorKind::Learned if self.model.is_none() => {
                return bad(
                    "model",
                    "the learned predictor needs a checkpoint: train one with `pto train --out DIR/lstm` and pass --model DIR/lstm".into(),
                )
            }
            PredictorKind::Oracle if self.oracle_trace.is_none() => {
                return bad(
                    "oracle_trace",
                    "the oracle needs the requests to come (`session,type` per line)".into(),
                )
            }
            _ => {}
        }
        self.policy()
            .validate()
            .map_err(|why| ConfigError::Invalid {
                field: "budget/threshold/top_k",
                why: why.to_string(),
            })
    }

    /// The staging policy.
    pub fn policy(&self) -> see_pto::online::Policy {
        see_pto::online::Policy {
            budget_bytes: self.budget,
            threshold: self.threshold,
            top_k: self.top_k,
            ..see_pto::online::Policy::default()
        }
    }

    /// The longest wait for one request's completion.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The service catalogue, scaled.
    pub fn load_catalogue(&self) -> Result<see_pto::metadata::ServiceCatalogue, ConfigError> {
        let mut cat = match &self.catalogue {
            Some(path) => see_pto::metadata::ServiceCatalogue::load(path).map_err(|source| {
                ConfigError::Catalogue {
                    path: path.clone(),
                    source: Box::new(source),
                }
            })?,
            None => see_pto::metadata::ServiceCatalogue::default_catalogue(),
        };
        if self.size_scale != 1.0 {
            cat.scale_sizes(self.size_scale);
        }
        Ok(cat)
    }

    /// The task module ([`Config::task_module`]), read and checked, and checked against the
    /// catalogue `cat` (every task has one code resource to hold it); `None` for native tasks.
    pub fn load_task_module(
        &self,
        cat: &see_pto::metadata::ServiceCatalogue,
    ) -> Result<Option<crate::tasks::TaskModule>, crate::tasks::TaskModuleError> {
        let Some(path) = &self.task_module else {
            return Ok(None);
        };
        crate::tasks::check_catalogue(cat)?;
        crate::tasks::TaskModule::load(path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floors_live_beside_their_store_unless_named() {
        let mut c = Config {
            store: "/srv/a/store".into(),
            ..Config::default()
        };
        assert_eq!(
            c.floors_file(),
            Path::new("/srv/a/store.floors/floors.json")
        );
        // Another store, other floors: ids are positions in a catalogue.
        c.store = "/srv/b/faas".into();
        assert_eq!(c.floors_file(), Path::new("/srv/b/faas.floors/floors.json"));
        c.floors = "/var/lib/see/floors.json".into();
        assert_eq!(c.floors_file(), Path::new("/var/lib/see/floors.json"));
    }

    #[test]
    fn a_file_overrides_the_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("see.toml");
        std::fs::write(
            &path,
            "predictor = \"ppm\"\nbudget = 1048576\nlisten = \"unix:/tmp/see.sock\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.predictor, PredictorKind::Ppm);
        assert_eq!(c.budget, 1 << 20);
        assert_eq!(c.listen, Listen::Unix("/tmp/see.sock".into()));
        assert_eq!(c.queue_depth, Config::default().queue_depth);
        for (name, kind) in [
            ("reactive-nocache", PredictorKind::ReactiveNocache),
            ("push", PredictorKind::Push),
            ("reactive", PredictorKind::None),
        ] {
            std::fs::write(&path, format!("predictor = \"{name}\"\n")).unwrap();
            assert_eq!(Config::from_file(&path).unwrap().predictor, kind);
        }
        assert_eq!(c.fetch_workers, see_prefetch_backend::DEFAULT_FETCH_WORKERS);
        std::fs::write(&path, "fetch_workers = 2\n").unwrap();
        assert_eq!(Config::from_file(&path).unwrap().fetch_workers, 2);
        std::fs::write(&path, "predicter = \"ppm\"\n").unwrap();
        let e = Config::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("predicter"), "{e}");
    }

    #[test]
    fn a_written_config_reads_back_the_same() {
        let c = Config {
            predictor: PredictorKind::Oracle,
            oracle_trace: Some("/tmp/future".into()),
            listen: Listen::Unix("/tmp/s".into()),
            ..Config::default()
        };
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.predictor, PredictorKind::Oracle);
        assert_eq!(back.oracle_trace, c.oracle_trace);
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.model, None);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let c = Config {
            predictor: PredictorKind::Learned,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("model"));
        let c = Config {
            queue_depth: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue_depth"));
        let c = Config {
            fetch_workers: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fetch_workers"));
        assert!(Config::default().validate().is_ok());
        let c = Config {
            audit_checkpoint_every: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("audit_checkpoint_every"));
        let c: Config =
            toml::from_str("audit_key = \"/keys/audit.key\"\naudit_checkpoint_every = 8\n")
                .unwrap();
        assert_eq!(
            (c.audit_key, c.audit_checkpoint_every),
            (Some("/keys/audit.key".into()), 8)
        );
        assert!("nope".parse::<PredictorKind>().is_err());
        for k in PredictorKind::ALL {
            assert_eq!(k.name().parse::<PredictorKind>().unwrap(), k);
        }
        assert_eq!(
            "reactive".parse::<PredictorKind>().unwrap(),
            PredictorKind::None
        );
        assert!("unix:".parse::<Listen>().is_err());
        assert_eq!(
            "127.0.0.1:9".parse::<Listen>().unwrap().to_string(),
            "http://127.0.0.1:9"
        );
    }
}
