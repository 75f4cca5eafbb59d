//! One rig per test: a temporary store with the test's resources, the backend serving it on a
//! temporary socket (in-process, `see_prefetch_backend::Backend::spawn`), and the VMM booting
//! the guest's `serve` app with `--prefetch-socket`. The test drives the guest through the
//! backend's `dispatch` (requests whose arguments name an operation and task ids, see
//! images/see-kernel/src/prefetch/app.rs) and reads its console lines.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use crate::{guest::Guest, pto_keys, Vmm, DEADLINE};
use see_abi::cmdline as key;
use see_prefetch_backend::{
    floors::Floors,
    signer::load_key,
    store::{DiskStore, ResourceStore},
    Backend, BackendConfig, BackendEvent, BackendHandle, PrefetchOrder, Request, Tamper,
};
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::ResourceKind;

pub use see_abi::serve::{
    OP_AWAIT, OP_BAD_DESCRIPTOR, OP_BENCH, OP_C_CLAIM, OP_PROBE, OP_RESET, OP_RUN, OP_STOP,
    OP_THROUGHPUT, OP_VICTIM,
};

/// A resource the test puts in the store.
#[derive(Debug, Clone)]
pub struct Res {
    /// The app that may claim it.
    pub app: u32,
    /// The task it is for.
    pub task: u64,
    /// Resource id.
    pub id: u64,
    /// Version.
    pub version: u64,
    /// The bytes.
    pub content: Vec<u8>,
    /// Code (a Wasm task module) or data.
    pub kind: ResourceKind,
}

impl Res {
    /// A data resource of `len` deterministic, non-repeating bytes.
    pub fn data(app: u32, task: u64, id: u64, version: u64, len: usize) -> Self {
        let mut content = Vec::with_capacity(len);
        let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
        while content.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            content.extend_from_slice(&x.to_le_bytes());
        }
        content.truncate(len);
        Self {
            app,
            task,
            id,
            version,
            content,
            kind: ResourceKind::Data,
        }
    }

    /// A code resource: a Wasm task module.
    pub fn code(app: u32, task: u64, id: u64, version: u64, wasm: Vec<u8>) -> Self {
        Self {
            app,
            task,
            id,
            version,
            content: wasm,
            kind: ResourceKind::Code,
        }
    }

    /// Lower-case hex SHA-384 of the content, as the guest prints it.
    pub fn sha384(&self) -> String {
        Sha384::digest(&self.content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The rig's options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resources in the store (every (app, task, id) is also in the guest's `see.allow`).
    pub resources: Vec<Res>,
    /// Extra `see.allow` entries the store does not hold.
    pub extra_allow: Vec<(u32, u64, u64)>,
    /// Polled completion in the guest.
    pub polling: bool,
    /// Another secret key for the backend (PKCS#8 PEM path) than the image's.
    pub signing_key: Option<PathBuf>,
    /// Extra kernel command-line text.
    pub cmdline: String,
    /// Boot the test image (feature `test-ops`: the hostile ops) instead of the default one.
    pub test_image: bool,
    /// The backend's floors file (kept across rigs to model a guest reboot); in memory when
    /// None.
    pub floors: Option<PathBuf>,
}

/// Backend + guest.
#[derive(Debug)]
pub struct Rig {
    /// Socket and store.
    pub dir: tempfile::TempDir,
    /// The in-process backend.
    pub backend: BackendHandle,
    /// The running VM.
    pub guest: Guest,
    /// The store the backend serves (for the host's own run of a task over the same bytes).
    pub store: Arc<DiskStore>,
    /// Every backend event received so far.
    pub seen: Vec<BackendEvent>,
    next_request: u64,
}

impl Rig {
    /// Builds the store, starts the backend, boots the guest and waits for its "device
    /// ready" line.
    pub fn start(options: &Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        let socket = dir.path().join("prefetch.sock");
        let key = options
            .signing_key
            .clone()
            .unwrap_or_else(|| pto_keys().0.clone());
        let key = load_key(&key).unwrap_or_else(|e| panic!("signing key: {e}"));
        let store = Arc::new(fill_store(&store, &options.resources));
        let served: Arc<dyn ResourceStore> = store.clone();
        let mut config = BackendConfig::new(&socket, served, key);
        if let Some(path) = &options.floors {
            config.floors =
                Arc::new(Floors::open(path).unwrap_or_else(|e| panic!("floors file: {e}")));
        }
        let backend =
            Backend::spawn(config).unwrap_or_else(|e| panic!("the backend did not start: {e}"));
        let mut allow: Vec<String> = options
            .resources
            .iter()
            .map(|r| format!("{}:{}:{}", r.app, r.task, r.id))
            .collect();
        allow.extend(
            options
                .extra_allow
                .iter()
                .map(|(a, t, r)| format!("{a}:{t}:{r}")),
        );
        allow.sort();
        allow.dedup();
        let mut cmdline = format!(
            "{}=0 {}={} {}=30000 {}={}",
            key::SELFTEST,
            key::APP,
            key::APP_SERVE,
            key::IDLE_MS,
            key::ALLOW,
            allow.join(",")
        );
        if options.polling {
            cmdline.push_str(&format!(" {}=1", key::POLL));
        }
        if !options.cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&options.cmdline);
        }
        let image = if options.test_image {
            crate::test_kernel_image()
        } else {
            crate::kernel_image()
        };
        let vmm = Vmm::bare(crate::vmm_bin())
            .arg("--kernel")
            .arg(image)
            .arg("--prefetch-socket")
            .arg(&socket)
            .arg("--cmdline")
            .arg(cmdline);
        let mut guest = Guest::spawn(vmm);
        guest.wait_line("\"see: prefetch device ready\"", |l| {
            l.starts_with("see: prefetch device ready")
        });
        Self {
            dir,
            backend,
            guest,
            store,
            seen: Vec::new(),
            next_request: 1,
        }
    }

    /// Orders a prefetch of `r` for its task.
    pub fn prefetch(&mut self, r: &Res) {
        self.backend
            .prefetch(PrefetchOrder {
                app_id: r.app,
                task_id: r.task,
                resource_id: r.id,
            })
            .unwrap_or_else(|e| panic!("prefetch of resource {} refused: {e}", r.id));
    }

    /// Dispatches a request of `app` with `op` and its u64 arguments into the guest.
    pub fn dispatch(&mut self, app: u32, op: u32, words: &[u64]) -> u64 {
        let args = request_args(op, words);
        let request_id = self.next_request;
        self.next_request += 1;
        self.backend
            .dispatch(Request {
                request_id,
                session_id: 1,
                app_id: app,
                request_type: op,
                args,
            })
            .unwrap_or_else(|e| panic!("dispatch of request {request_id} failed: {e}"));
        request_id
    }

    /// Waits for a backend event that satisfies `pred`, among those not received yet (every
    /// event is kept in `seen`, for the failure message).
    pub fn wait_event(&mut self, what: &str, pred: impl Fn(&BackendEvent) -> bool) -> BackendEvent {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.backend.next_event(left) {
                Some(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                None if left.is_zero() || !self.backend.is_running() => panic!(
                    "no backend event {what} within {DEADLINE:?} (backend running: {}); events: {:?}\n--- console\n{}",
                    self.backend.is_running(),
                    self.seen,
                    self.guest.transcript()
                ),
                None => {}
            }
        }
    }

    /// Sets the fault the backend injects into the next bundles.
    pub fn tamper(&mut self, t: Tamper) {
        self.backend
            .set_tamper(t)
            .unwrap_or_else(|e| panic!("set_tamper({t:?}): {e}"));
    }

    /// Stops the guest (OP_STOP), waits for exit 0 and returns the console.
    pub fn stop(mut self) -> String {
        self.dispatch(1, OP_STOP, &[]);
        let out = self.guest.finish();
        out.assert_code(see_abi::exit::SUCCESS);
        self.backend.shutdown();
        out.stdout
    }
}

/// A serve-app request's arguments: `op` (`u32` LE, 4 reserved bytes), then `words` (`u64` LE).
pub use see_abi::serve::encode_args as request_args;

/// Puts every resource in a disk store at `dir` (versions of one id in increasing order).
fn fill_store(dir: &Path, resources: &[Res]) -> DiskStore {
    let store = DiskStore::open(dir).unwrap_or_else(|e| panic!("store {}: {e}", dir.display()));
    let mut sorted: Vec<&Res> = resources.iter().collect();
    sorted.sort_by_key(|r| (r.id, r.version));
    for r in sorted {
        store
            .add(r.id, r.version, r.kind, r.app, &r.content)
            .unwrap_or_else(|e| panic!("store add of resource {} v{}: {e}", r.id, r.version));
    }
    store
}
