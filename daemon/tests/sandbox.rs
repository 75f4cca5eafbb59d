//! The daemon's confinement, seen from outside: the real `see-daemon` process starts confined
//! (the default) and answers HTTP; a syscall off a thread's seccomp list kills it with SIGSYS
//! (through the `test-hooks` feature, which the dev-dependency on itself turns on for these
//! tests only); a path outside its Landlock rules is refused; `--no-sandbox` turns both off;
//! `--user` without root is refused before anything runs. No VMM is needed: the daemon waits
//! for one on its socket.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use see_daemon::confine::{FORBIDDEN_SYSCALL_ENV, READ_PATH_ENV};

/// `see-daemon` with its files in `dir`, listening on an ephemeral port.
fn daemon(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_see-daemon"));
    c.arg("--store")
        .arg(dir.join("store"))
        .arg("--key")
        .arg(&see_e2e::pto_keys().0)
        .arg("--socket")
        .arg(dir.join("run/prefetch.sock"))
        .arg("--history")
        .arg(dir.join("state/history.sqlite"))
        .arg("--audit")
        .arg(dir.join("state/audit.jsonl"))
        .args(["--listen", "127.0.0.1:0", "--size-scale", "0.01"])
        .args(args)
        .env_remove(FORBIDDEN_SYSCALL_ENV)
        .env_remove(READ_PATH_ENV)
        .env_remove("SEE_DAEMON_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits up to 60 s for the process to end; kills it past that.
fn wait(child: &mut Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// Starts the daemon and waits for its "listening" line; returns the address.
fn listening(child: &mut Child) -> Option<String> {
    let out = BufReader::new(child.stdout.take().unwrap());
    out.lines().map_while(Result::ok).find_map(|l| {
        l.strip_prefix("see-daemon: listening on ")
            .map(str::to_owned)
    })
}

fn sigterm(child: &Child) {
    // SAFETY: kill with a pid this test owns and a plain signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn the_confined_daemon_serves_http_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(dir.path(), &["--require-sandbox"]).spawn().unwrap();
    let address = listening(&mut child).expect("the daemon listens");
    let health = ureq::get(&format!("{address}/v1/health")).call();
    let metrics = ureq::get(&format!("{address}/metrics"))
        .call()
        .map(|r| r.into_body().read_to_string().unwrap_or_default());
    sigterm(&child);
    let (status, err) = wait(&mut child);
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    // Up but without a guest: the health answer may be an error status; it must be an answer.
    match health {
        Ok(_) | Err(ureq::Error::StatusCode(_)) => {}
        Err(e) => panic!("no health answer: {e}\n{err}"),
    }
    assert!(metrics.expect("metrics").contains("# HELP"), "{err}");
    assert!(
        dir.path().join("state/history.sqlite").exists(),
        "the history was written beneath its rule"
    );
}

fn assert_killed_by_sigsys(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(dir.path(), &[])
        .env(FORBIDDEN_SYSCALL_ENV, kind)
        .spawn()
        .unwrap();
    let (status, err) = wait(&mut child);
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "{kind}: {status} {err}"
    );
    // The hook logged before its call: the death is the hook's, not a missing list entry.
    assert!(
        err.contains(&format!("test hook: the {kind} thread calls socket()")),
        "{err}"
    );
}

#[test]
fn a_forbidden_syscall_on_any_thread_kills_the_daemon_with_sigsys() {
    for kind in ["main", "http", "engine", "events", "vhost", "fetch", "seal"] {
        assert_killed_by_sigsys(kind);
    }
}

#[test]
fn a_path_outside_the_landlock_rules_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"not for the daemon").unwrap();
    for (args, expect) in [
        (&[][..], "Permission denied"),
        (&["--no-sandbox"][..], "18 bytes"),
    ] {
        let mut child = daemon(dir.path(), args)
            .env(READ_PATH_ENV, &secret)
            .spawn()
            .unwrap();
        assert!(listening(&mut child).is_some());
        sigterm(&child);
        let (status, err) = wait(&mut child);
        assert_eq!(status.code(), Some(0), "{args:?}: {status}: {err}");
        let line = format!("test hook: read {}: {expect}", secret.display());
        assert!(
            err.contains(&line),
            "{args:?}: expected {line:?} in:\n{err}"
        );
    }
}

#[test]
fn no_sandbox_lets_the_forbidden_syscall_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(dir.path(), &["--no-sandbox"])
        .env(FORBIDDEN_SYSCALL_ENV, "http")
        .spawn()
        .unwrap();
    assert!(listening(&mut child).is_some());
    sigterm(&child);
    let (status, err) = wait(&mut child);
    assert_eq!(status.code(), Some(0), "{status}: {err}");
    assert!(err.contains("test hook"), "{err}");
    let out = daemon(dir.path(), &["--no-sandbox", "--require-sandbox"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the flags conflict");
}

#[test]
fn user_without_root_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = daemon(dir.path(), &["--user", "65533:65533"]);
    // SAFETY: getuid has no arguments.
    if unsafe { libc::getuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--user needs the process to start as root"),
        "{err}"
    );
    assert!(!dir.path().join("store").exists(), "nothing ran: {err}");
}
