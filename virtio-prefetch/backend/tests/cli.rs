//! The `see-prefetch-backend` binary: `store add` puts a resource where the daemon finds it (and
//! refuses a stale version); a usage error (an argument missing or a value that does not parse)
//! ends with exit 2, any other bad input with exit 1, each with a message that says what to do.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use p384::{
    elliptic_curve::Generate,
    pkcs8::{EncodePrivateKey, LineEnding},
    SecretKey,
};

use see_prefetch_backend::store::{DiskStore, ResourceStore};
use virtio_prefetch_wire::ResourceKind;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_see-prefetch-backend"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A valid signing key (PKCS#8 PEM) in `dir`.
fn key_file(dir: &Path) -> PathBuf {
    let secret = SecretKey::try_generate().expect("system RNG");
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("encode key");
    let path = dir.join("good.key");
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    path
}

#[test]
fn store_add_then_the_store_serves_it_and_refuses_a_stale_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, b"resource bytes").unwrap();
    let add = |version: &str| {
        run(&[
            "store",
            "add",
            "--store",
            store.to_str().unwrap(),
            "--id",
            "42",
            "--version",
            version,
            "--kind",
            "code",
            "--app",
            "3",
            "--file",
            file.to_str().unwrap(),
        ])
    };
    let out = add("2");
    assert!(out.status.success(), "store add failed: {}", stderr(&out));
    let opened = DiskStore::open(&store).unwrap();
    let got = opened.get(42, 0).unwrap();
    assert_eq!(
        (got.version, got.kind, got.app_id, got.content.as_slice()),
        (2, ResourceKind::Code, 3, &b"resource bytes"[..])
    );
    let out = add("2");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must be higher"),
        "a stale version is refused: {}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2_and_bad_input_exit_1_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pto.key");
    std::fs::write(&key, "not a key").unwrap();
    let socket = dir.path().join("s.sock");
    let store = dir.path().join("store");
    let out = run(&[
        "--socket",
        socket.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cargo xtask keys"),
        "{}",
        stderr(&out)
    );
    // Missing --store and --key: a usage error, naming them.
    let out = run(&["--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("required") && err.contains("--store") && err.contains("--key"),
        "{err}"
    );
    // Nothing at all: the same.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--socket"), "{}", stderr(&out));
    let prefetch = dir.path().join("orders");
    std::fs::write(&prefetch, "1 2\n").unwrap();
    let out = run(&[
        "store",
        "add",
        "--store",
        store.to_str().unwrap(),
        "--id",
        "1",
        "--version",
        "1",
        "--kind",
        "firmware",
        "--app",
        "1",
        "--file",
        prefetch.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("code or data"), "{}", stderr(&out));
    // A prefetch list that does not parse is bad input, not usage: exit 1.
    let key = key_file(dir.path());
    let out = run(&[
        "--socket",
        socket.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--prefetch",
        prefetch.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expected `app task resource`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn store_add_with_floors_raises_the_floor_and_a_corrupt_file_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let floors = dir.path().join("floors.json");
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, b"resource bytes").unwrap();
    let add = |version: &str| {
        run(&[
            "store",
            "add",
            "--store",
            store.to_str().unwrap(),
            "--id",
            "42",
            "--version",
            version,
            "--kind",
            "data",
            "--app",
            "3",
            "--file",
            file.to_str().unwrap(),
            "--floors",
            floors.to_str().unwrap(),
        ])
    };
    let out = add("4");
    assert!(out.status.success(), "store add failed: {}", stderr(&out));
    let view = see_prefetch_backend::floors::Floors::open(&floors)
        .unwrap()
        .view();
    assert_eq!(
        view.floors,
        [virtio_prefetch_wire::Floor {
            resource_id: 42,
            min_version: 4
        }]
    );
    // A corrupt floors file: a clear error, the store unchanged, the file left as it was.
    std::fs::write(&floors, b"{\"format\":1,").unwrap();
    let out = add("5");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("floors.json") && stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&floors).unwrap(), b"{\"format\":1,");
    assert_eq!(
        DiskStore::open(&store).unwrap().get(42, 0).unwrap().version,
        4
    );
}
