//! `see-e2e-backend SOCKET STORE KEY APP OP [WORD...]`: the virtio-prefetch backend in a
//! process of its own (the in-process `Backend` of the rig), for the test that SIGKILLs it in
//! the middle of a demand fetch (tests/prefetch/failure.rs). It serves the disk store STORE on
//! SOCKET, signs with KEY (PKCS#8 PEM), dispatches one serve-app request of app APP
//! (operation OP, then the u64 words) once the guest's Hello arrives, and prints every backend
//! event as `event <Debug>` on stdout, flushed, so the test can kill it at the right moment.
//! Exit 2 for usage errors, 1 when the backend cannot start, 0 when the VMM disconnects.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use see_e2e::rig::request_args;
use see_prefetch_backend::{
    signer::load_key, store::DiskStore, Backend, BackendConfig, BackendEvent, Request,
};

const USAGE: &str = "usage: see-e2e-backend SOCKET STORE KEY APP OP [WORD...]";

struct Args {
    socket: PathBuf,
    store: PathBuf,
    key: PathBuf,
    app: u32,
    op: u32,
    words: Vec<u64>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let [socket, store, key, app, op, words @ ..] = args else {
        return Err(USAGE.into());
    };
    let number = |what: &str, v: &str| format!("{what} must be a number, not {v:?} ({USAGE})");
    Ok(Args {
        socket: socket.into(),
        store: store.into(),
        key: key.into(),
        app: app.parse().map_err(|_| number("APP", app))?,
        op: op.parse().map_err(|_| number("OP", op))?,
        words: words
            .iter()
            .map(|w| w.parse().map_err(|_| number("WORD", w)))
            .collect::<Result<_, _>>()?,
    })
}

fn serve(args: Args) -> Result<(), String> {
    let store = DiskStore::open(&args.store).map_err(|e| e.to_string())?;
    let key = load_key(&args.key).map_err(|e| e.to_string())?;
    let backend = Backend::spawn(BackendConfig::new(&args.socket, Arc::new(store), key))
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening");
    let _ = out.flush();
    let mut dispatched = false;
    while backend.is_running() {
        let Some(event) = backend.next_event(Duration::from_millis(100)) else {
            continue;
        };
        let _ = writeln!(out, "event {event:?}");
        let _ = out.flush();
        if !dispatched && matches!(event, BackendEvent::Hello { .. }) {
            dispatched = true;
            backend
                .dispatch(Request {
                    request_id: 1,
                    session_id: 1,
                    app_id: args.app,
                    request_type: args.op,
                    args: request_args(args.op, &args.words),
                })
                .map_err(|e| format!("dispatch: {e}"))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&argv) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("see-e2e-backend: {why}");
            return ExitCode::from(2);
        }
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("see-e2e-backend: {why}");
            ExitCode::FAILURE
        }
    }
}
