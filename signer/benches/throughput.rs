//! The cost of the split: signatures per second through a `see-signer` process (the daemon's
//! `RemoteSigner` over the Unix socket: framing, the policy's store check, the audit record)
//! against the key in this process (`LocalSigner`), interleaved round by round so that both
//! see the same machine.
//!
//! `cargo bench -p see-signer --bench throughput [-- ROUNDS SIGNATURES]` (default 5 rounds of
//! 500 signatures each way; about 10 s on a quiet machine). Prints one line per round and the
//! medians.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{statement, Fixture};
use see_prefetch_backend::signer::{LocalSigner, StatementSigner};
use see_signer::RemoteSigner;

fn rate(signer: &dyn StatementSigner, statements: &[[u8; 170]]) -> f64 {
    let start = Instant::now();
    for s in statements {
        signer.sign_statement(s).expect("signed");
    }
    statements.len() as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(5).max(1);
    let n = args.get(1).copied().unwrap_or(500).max(1);
    let f = Fixture::new(0o600);
    let _signer = f.start(&[
        "--rate",
        "1e9",
        "--burst",
        "1e9",
        "--global-rate",
        "1e9",
        "--global-burst",
        "1e9",
    ]);
    let remote = RemoteSigner::new(&f.socket);
    let local = LocalSigner::new(f.signing_key());
    let resource = f.resource(3, 2);
    let statements: Vec<[u8; 170]> = (1..=n).map(|seq| statement(&resource, seq)).collect();
    // Warm up both (the signer's first check reads and hashes the object).
    remote.sign_statement(&statements[0]).expect("signed");
    local.sign_statement(&statements[0]).expect("signed");
    let (mut in_process, mut split) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let l = rate(&local, &statements);
        let r = rate(&remote, &statements);
        println!("round {round}: in-process {l:8.0} signatures/s, through see-signer {r:8.0} signatures/s ({:.2}x)", l / r);
        in_process.push(l);
        split.push(r);
    }
    let (l, r) = (median(in_process), median(split));
    println!(
        "median of {rounds} rounds of {n}: in-process {l:.0}/s, through see-signer {r:.0}/s; the split costs {:.1} us per signature",
        1e6 / r - 1e6 / l
    );
}
