//! Shared by the service tests: an SEE with its daemon started as `see up` starts them (real
//! VMM on KVM, real daemon process, real vhost-user socket), a real HTTP client, and the result
//! every task must report, computed from the store's bytes.

#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use see_daemon::{
    api::{RunRequest, RunResponse},
    config::PredictorKind,
    launch::{LaunchSpec, Launched},
    Config,
};
use see_prefetch_backend::store::{DiskStore, ResourceStore};
use see_pto::{metadata::ServiceCatalogue, online::WireIds};

/// The catalogue's sizes in these tests (small: the tests are about the service).
pub const SIZE_SCALE: f64 = 0.0625;

/// A test SEE: its files live in `dir`.
pub struct TestSee {
    pub see: Launched,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub catalogue: ServiceCatalogue,
}

/// Writes a test audit key pair into `dir` (`audit.key`, PKCS#8 PEM; `audit.pub`, SEC1);
/// returns the secret key's path.
pub fn audit_key(dir: &std::path::Path) -> PathBuf {
    use p384::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p384::SecretKey::from_slice(&[5u8; 48]).expect("a valid scalar");
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let path = dir.join("audit.key");
    std::fs::write(&path, pem.as_bytes()).expect("audit.key");
    std::fs::write(dir.join("audit.pub"), secret.public_key().to_sec1_bytes()).expect("audit.pub");
    path
}

/// The audit log at `path` verified with the test audit key of `dir` and closed cleanly.
pub fn verify_audit(dir: &std::path::Path, path: &std::path::Path) -> see_pto::audit::Verified {
    let keys = see_pto::audit::TrustedKeys::none()
        .with_file(&dir.join("audit.pub"))
        .expect("audit.pub");
    let v = see_pto::audit::verify_file_anchored(path, &keys)
        .expect("audit log readable")
        .unwrap_or_else(|b| panic!("audit log broken at {b}"));
    v.require_closed()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v
}

/// The configuration of a test daemon whose files live in `dir`.
pub fn config(dir: &std::path::Path, predictor: PredictorKind) -> Config {
    Config {
        store: dir.join("store"),
        key: see_e2e::pto_keys().0.clone(),
        audit_key: Some(audit_key(dir)),
        audit_checkpoint_every: 64,
        size_scale: SIZE_SCALE,
        predictor,
        history: dir.join("history.sqlite"),
        audit: dir.join("audit.jsonl"),
        budget: 1 << 20,
        listen: "127.0.0.1:0".parse().expect("listen"),
        request_timeout_ms: 20_000,
        guest_idle_ms: 120_000,
        ..Config::default()
    }
}

/// Starts an SEE and its daemon with `config` (files under `dir`).
pub fn start_with(dir: tempfile::TempDir, config: Config) -> TestSee {
    let spec = LaunchSpec {
        daemon_bin: PathBuf::from(env!("CARGO_BIN_EXE_see-daemon")),
        vmm_bin: see_e2e::vmm_bin().to_owned(),
        signer_bin: Some(see_e2e::signer_bin().to_owned()),
        kernel: see_e2e::kernel_image().to_owned(),
        config: config.clone(),
        memory_mib: 128,
        run_dir: dir.path().join("run"),
        ready_timeout: Duration::from_secs(60),
        daemon_log_to_file: true,
        daemon_log_level: Some("info".into()),
    };
    let see = Launched::start(&spec).unwrap_or_else(|e| panic!("the SEE did not start: {e}"));
    let catalogue = config.load_catalogue().expect("catalogue");
    TestSee {
        see,
        dir,
        config,
        catalogue,
    }
}

/// Starts an SEE and its daemon running `predictor`.
pub fn start(predictor: PredictorKind) -> TestSee {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), predictor);
    start_with(dir, config)
}

/// An HTTP client that returns every status as a response.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl TestSee {
    /// The base URL.
    pub fn url(&self) -> String {
        self.see.address().to_owned()
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.see.run_dir().join("daemon.log")).unwrap_or_default()
    }

    /// POSTs a raw body; returns the status, the Retry-After header and the body.
    pub fn post_raw(&self, agent: &ureq::Agent, body: &[u8]) -> (u16, Option<String>, String) {
        let mut r = agent
            .post(format!("{}/v1/requests", self.url()))
            .header("content-type", "application/json")
            .send(body)
            .unwrap_or_else(|e| panic!("POST: {e}"));
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), retry, text)
    }

    /// Runs a request of `kind` for `session`; the status and the body.
    pub fn run(&self, agent: &ureq::Agent, session: &str, kind: &str) -> (u16, String) {
        let app = self
            .catalogue
            .request(kind)
            .map_or("shop".to_owned(), |r| r.app.clone());
        let body = serde_json::to_vec(&RunRequest {
            session: session.into(),
            app,
            kind: kind.into(),
            attributes: Default::default(),
        })
        .expect("json");
        let (status, _, text) = self.post_raw(agent, &body);
        (status, text)
    }

    /// Checks every task's result in `response` against the host's work on the store's
    /// bytes; panics naming the first wrong one.
    pub fn check(&self, response: &RunResponse) {
        let ids = WireIds::new(&self.catalogue);
        let app = ids.app_of(&response.kind).expect("app of the type");
        let req = self.catalogue.request(&response.kind).expect("type");
        let want: Vec<u64> = req.tasks.iter().map(|&t| WireIds::task(t)).collect();
        let got: Vec<u64> = response.tasks.iter().map(|t| t.task_id).collect();
        assert_eq!(got, want, "tasks of request {}", response.request_id);
        let store = DiskStore::open(&self.config.store).expect("store");
        let allow = see_daemon::guest::allow_entries(&self.catalogue);
        for t in &response.tasks {
            let mut fold = see_workload::TaskResult::new();
            for &(a, task, r) in &allow {
                if a == app && task == t.task_id {
                    let res = store.get(r, 0).expect("resource");
                    fold.add(see_workload::resource_word(&res.content, &res.sha384).expect("word"));
                }
            }
            assert_eq!(
                t.result,
                format!("{:016x}", fold.value()),
                "request {} task {}",
                response.request_id,
                t.task
            );
        }
    }
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The request type names of the catalogue.
pub fn kinds(cat: &ServiceCatalogue) -> Vec<String> {
    cat.requests.iter().map(|r| r.name.clone()).collect()
}

/// Counts rows of `sql` in the history.
pub fn count(history: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(history).expect("history");
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The audit log's records: (kind, fields as JSON).
pub fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit record"))
        .collect()
}
