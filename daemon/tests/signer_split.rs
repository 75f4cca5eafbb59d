//! The key stays out of the daemon: a real `see-daemon` wired to a real `see-signer` holds no
//! byte of the PTO's private scalar in any readable region of its memory, while the same scan
//! finds it in the signer and in a daemon given the key itself (so the scan can fail); and a
//! daemon running as another user than the key's owner cannot open the key file.
//!
//! The signer binary: `SEE_SIGNER_BIN`, or the release build (`see_e2e::signer_bin`).

use std::{
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use p384::{
    elliptic_curve::PrimeField,
    pkcs8::{EncodePrivateKey, LineEnding},
    Scalar, SecretKey,
};

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A key file of mode 0600 in `dir`.
fn write_key(dir: &Path) -> (PathBuf, SecretKey) {
    let secret = SecretKey::from_slice(&[0x6b; 48]).expect("a valid scalar");
    let path = dir.join("pto.key");
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, secret)
}

/// The forms the scalar takes in memory: big-endian (the file's encoding), little-endian,
/// and the Montgomery form p384's `Scalar` keeps (s·2^384 mod n, 64-bit limbs, little-endian).
fn key_patterns(secret: &SecretKey) -> Vec<[u8; 48]> {
    let be: [u8; 48] = secret.to_bytes().into();
    let mut le = be;
    le.reverse();
    let s: Scalar = *secret.to_nonzero_scalar();
    // 2^384 mod n, by doubling.
    let r = (0..384).fold(Scalar::ONE, |r, _| r.double());
    let mut mont: [u8; 48] = (s * r).to_repr().into();
    mont.reverse();
    vec![be, le, mont]
}

/// How many times any of `patterns` occurs in the readable mappings of process `pid`.
fn count_in_memory(pid: u32, patterns: &[[u8; 48]]) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem (needs ptrace rights)");
    let mut found = 0;
    let mut scanned = 0u64;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        scanned += end - start;
        found += region
            .windows(48)
            .filter(|w| patterns.iter().any(|p| w == p))
            .count();
    }
    assert!(
        scanned > 1 << 20,
        "only {scanned} bytes of {pid} could be read"
    );
    found
}

fn signer_bin() -> PathBuf {
    see_e2e::signer_bin().to_owned()
}

/// Starts the signer on `key` and `store`; returns once it accepts connections.
fn start_signer(dir: &Path, key: &Path, store: &Path) -> (Process, PathBuf) {
    let socket = dir.join("signer.sock");
    let child = Command::new(signer_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("--key")
        .arg(key)
        .arg("--store")
        .arg(store)
        .arg("--audit")
        .arg(dir.join("signer-audit.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("see-signer starts");
    let mut signer = Process(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(signer.0.try_wait().unwrap().is_none(), "see-signer exited");
        assert!(Instant::now() < deadline, "see-signer did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (signer, socket)
}

/// A daemon with its own files under `dir/name`, signing with `signing` (`--signer SOCKET`
/// or `--key FILE`); returns once its front door listens.
fn start_daemon(dir: &Path, name: &str, store: &Path, signing: [&std::ffi::OsStr; 2]) -> Process {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_see-daemon"))
        .arg("--socket")
        .arg(own.join("prefetch.sock"))
        .arg("--store")
        .arg(store)
        .arg("--size-scale")
        .arg("0.01")
        .arg("--history")
        .arg(own.join("history.sqlite"))
        .arg("--audit")
        .arg(own.join("audit.jsonl"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(signing)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("see-daemon starts");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("see-daemon: listening on "));
    assert!(listening, "see-daemon did not listen: {:?}", child.wait());
    std::thread::spawn(move || lines.for_each(drop));
    Process(child)
}

#[test]
fn no_key_bytes_in_the_daemons_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = write_key(dir.path());
    let patterns = key_patterns(&secret);
    let store = dir.path().join("store");
    let (signer, socket) = start_signer(dir.path(), &key, &store);
    let split = start_daemon(
        dir.path(),
        "split",
        &store,
        ["--signer".as_ref(), socket.as_ref()],
    );
    let in_process = start_daemon(
        dir.path(),
        "in-process",
        &store,
        ["--key".as_ref(), key.as_ref()],
    );
    assert_eq!(
        count_in_memory(split.0.id(), &patterns),
        0,
        "the daemon wired to a signer holds key bytes"
    );
    assert!(
        count_in_memory(signer.0.id(), &patterns) > 0,
        "the scan does not find the key in the signer: it could not fail"
    );
    assert!(
        count_in_memory(in_process.0.id(), &patterns) > 0,
        "the scan does not find the key in a daemon that loaded it"
    );
}

/// As root: the key file is 0600 and root's; a daemon running as `nobody` (the daemon's user
/// in a deployment, never the key's owner) is refused the file by the kernel.
#[test]
fn a_daemon_of_another_user_cannot_open_the_key() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run the daemon as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The directory is the daemon's (its store, floors, history and audit log go there): only
    // the key's own owner and mode stand in the way.
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let (key, _) = write_key(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_see-daemon"))
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .arg("--key")
        .arg(&key)
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the signing key") && stderr.contains("Permission denied"),
        "{stderr}"
    );
}
