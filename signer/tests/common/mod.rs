//! Test scaffolding: a key file, a store, a real `see-signer` process on a real socket, and
//! statements for the store's resources.

#![allow(dead_code)]

use std::{
    io::Read,
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use p384::{
    ecdsa::SigningKey,
    pkcs8::{EncodePrivateKey, LineEnding},
    SecretKey,
};
use see_prefetch_backend::{
    signer::{bundle_header, BundleSpec, Session},
    store::{DiskStore, ResourceStore, StoredResource},
};
use virtio_prefetch_wire::{ResourceKind, BUNDLE_TBS_LEN};

/// The resources in the test store: (id, version, content).
pub const RESOURCES: &[(u64, u64, &[u8])] =
    &[(3, 1, b"three v1"), (3, 2, b"three v2"), (7, 1, b"seven")];

/// A signer's files.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key_path: PathBuf,
    pub store: PathBuf,
    pub audit: PathBuf,
    pub socket: PathBuf,
    pub secret: SecretKey,
}

impl Fixture {
    /// A key file of `mode`, a store with [`RESOURCES`].
    pub fn new(mode: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = SecretKey::from_slice(&[0x5a; 48]).expect("a valid scalar");
        let key_path = dir.path().join("pto.key");
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("pem");
        std::fs::write(&key_path, pem.as_bytes()).expect("key file");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let store = dir.path().join("store");
        let disk = DiskStore::open(&store).expect("store");
        for &(id, version, content) in RESOURCES {
            disk.add(id, version, ResourceKind::Data, 1, content)
                .unwrap();
        }
        Self {
            key_path,
            audit: dir.path().join("signer-audit.jsonl"),
            socket: dir.path().join("signer.sock"),
            store,
            secret,
            dir,
        }
    }

    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from(&self.secret)
    }

    /// A resource version from the store.
    pub fn resource(&self, id: u64, version: u64) -> StoredResource {
        DiskStore::open(&self.store)
            .unwrap()
            .get_version(id, version)
            .unwrap()
    }

    /// The command that starts the signer on these files.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_see-signer"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--key")
            .arg(&self.key_path)
            .arg("--store")
            .arg(&self.store)
            .arg("--audit")
            .arg(&self.audit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the signer with `args` and waits until it accepts connections.
    pub fn start(&self, args: &[&str]) -> SignerProcess {
        let _ = std::fs::remove_file(&self.socket);
        let child = self
            .command()
            .args(args)
            .spawn()
            .expect("see-signer starts");
        let mut process = SignerProcess { child };
        wait_for_socket(&self.socket, &mut process.child);
        process
    }
}

/// Waits until `socket` accepts a connection; panics with `child`'s stderr if it exits.
pub fn wait_for_socket(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("see-signer exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "see-signer did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A signer process, killed when dropped.
pub struct SignerProcess {
    pub child: Child,
}

impl SignerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then its exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SESSION: Session = Session {
    nonce: [0x11; 32],
    epoch: 4,
};

/// The statement of a bundle of `resource` with sequence number `seq`.
pub fn statement(resource: &StoredResource, seq: u64) -> [u8; BUNDLE_TBS_LEN] {
    let spec = BundleSpec {
        resource,
        task_id: 9,
        demand_cookie: 0,
    };
    bundle_header(&spec, &SESSION, seq).to_be_signed()
}
