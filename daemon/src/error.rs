//! The daemon's errors: what stops it from starting, and what a bad configuration looks like.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration value or file that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("configuration: {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what is accepted.
        why: String,
    },
    /// Not a predictor this daemon has.
    #[error("unknown predictor {0:?}: use none, static, markov, ppm, learned or oracle")]
    UnknownPredictor(String),
    /// Not an address to listen on.
    #[error("cannot listen on {0:?}: give HOST:PORT (e.g. 127.0.0.1:8080) or unix:/path")]
    Listen(String),
    /// The service metadata does not load.
    #[error("service metadata {path}: {source}")]
    Catalogue {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<see_pto::metadata::MetadataError>,
    },
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing key.
    #[error(transparent)]
    Key(#[from] see_prefetch_backend::signer::KeyError),
    /// The resource store cannot be opened or filled with the catalogue's resources.
    #[error(transparent)]
    Store(#[from] crate::guest::FillError),
    /// The Wasm task module cannot be read, does not compile, or does not fit the catalogue.
    #[error(transparent)]
    TaskModule(#[from] crate::tasks::TaskModuleError),
    /// The vhost-user backend.
    #[error("vhost-user backend: {0}")]
    Backend(Box<see_prefetch_backend::BackendError>),
    /// The version floors file.
    #[error(transparent)]
    Floors(#[from] see_prefetch_backend::floors::FloorsError),
    /// The history database.
    #[error("history {path}: {source}")]
    History {
        /// The file.
        path: PathBuf,
        /// Why.
        source: see_pto::history::HistoryError,
    },
    /// The audit key could not be loaded.
    #[error(transparent)]
    AuditKey(see_pto::audit::checkpoint::KeyError),
    /// The audit log.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: see_pto::audit::AuditError,
    },
    /// The predictor or the orchestrator.
    #[error("PTO: {0}")]
    Online(#[from] see_pto::online::OnlineError),
    /// The oracle's future cannot be read.
    #[error("oracle trace {path}, line {line}: {why}")]
    Oracle {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 when the file cannot be read).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The modelled origin's parameters.
    #[error("origin model: {0}")]
    Origin(#[from] see_pto::online::origin::OriginError),
    /// The front door cannot listen.
    #[error("cannot listen on {address}: {source} (is another daemon using it?)")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime or a thread could not start.
    #[error("cannot start the {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl From<see_prefetch_backend::BackendError> for DaemonError {
    fn from(e: see_prefetch_backend::BackendError) -> Self {
        DaemonError::Backend(Box::new(e))
    }
}
