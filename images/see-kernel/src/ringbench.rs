//! `see.test=ring3-bench`: how fast the same code runs in ring 0 and in ring 3 (usermode.rs).
//!
//! Under `kvm_pvm` ring 0 is emulated one instruction at a time and ring 3 runs on the CPU, so
//! this prints, for each ring, a tight loop (iterations/s), SHA-384 (MiB/s), one P-384 ECDSA
//! verification (us), and the cost of one [`usermode::run`] call; and, in ring 3 only, SHA-256
//! through the backend chosen at boot (SHA-NI where the CPU has it), SHA-256 in software and
//! SHA-384, each timed inside ring 3 over the same data. The ring-0 P-384 figure takes
//! about 10 s under PVM; the whole bench about 11 s. Every result is checked, so a wrong answer
//! in either ring ends the VM with the self-test failure status instead of a figure.

use core::hint::black_box;

use p384::ecdsa::{
    signature::{Signer, Verifier},
    Signature, SigningKey, VerifyingKey,
};
use sha2::{Digest, Sha256, Sha384};

use crate::{exit::Status, time, usermode};

/// Iterations of the tight loop (about 7 instructions each) in ring 0 and in ring 3.
const SPIN_RING0: u64 = 20_000;
const SPIN_RING3: u64 = 100_000_000;
/// SHA-384 input: 4 KiB once in ring 0, 64 KiB 100 times in ring 3.
const SHA_RING0: usize = 4 << 10;
const SHA_BUF: usize = 64 << 10;
const SHA_REPS: u64 = 100;
const VERIFIES_RING3: u64 = 20;
const ROUND_TRIPS: u64 = 1000;

/// A fixed signing key (any scalar below the group order) and the signed message's length.
const SIGNING_SCALAR: [u8; 48] = [7; 48];
const MESSAGE_LEN: usize = 1024;

fn spin(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

fn sha(data: &[u8], reps: u64) -> [u8; 48] {
    let mut digest = [0u8; 48];
    for _ in 0..reps {
        digest = Sha384::digest(black_box(data)).into();
    }
    digest
}

/// `reps` SHA-256 digests of `data` through `see_guest_driver::sha256` (its boot-time backend).
fn sha256_driver(data: &[u8], reps: u64) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for _ in 0..reps {
        digest = see_guest_driver::sha256::sha256(black_box(data));
    }
    digest
}

/// `reps` SHA-256 digests of `data` through `sha2`: portable code on this target (its CPU
/// detection answers no on `target_os = "none"`), the driver's software backend.
fn sha256_software(data: &[u8], reps: u64) -> [u8; 32] {
    let mut digest = [0u8; 32];
    for _ in 0..reps {
        digest = Sha256::digest(black_box(data)).into();
    }
    digest
}

/// MiB/s of `bytes` hashed in `us` microseconds.
fn mib_s(bytes: u64, us: u64) -> u64 {
    (bytes * 1_000_000 / us) >> 20
}

/// Runs `f` and returns its result with the elapsed microseconds (at least 1).
fn timed<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let start = time::tsc();
    let r = f();
    (r, time::ticks_to_us(time::tsc() - start).max(1))
}

/// Runs the bench and returns the exit status: success, or self-test failure on a wrong result.
pub fn run() -> Status {
    match measure() {
        Ok(()) => Status::Success,
        Err(why) => {
            println!("see: ring3-bench: FAILED: {why}");
            Status::SelfTestFailure
        }
    }
}

fn measure() -> Result<(), &'static str> {
    let (_, us) = timed(|| {
        for _ in 0..ROUND_TRIPS {
            usermode::run(|| black_box(0u32));
        }
    });
    println!(
        "see: ring3-bench: usermode::run round trip {} ns",
        us * 1000 / ROUND_TRIPS
    );

    let (r0, us0) = timed(|| spin(SPIN_RING0));
    if usermode::run(|| spin(SPIN_RING0)) != r0 {
        return Err("the tight loop computed different values in ring 0 and ring 3");
    }
    let (_, us3) = timed(|| usermode::run(|| spin(SPIN_RING3)));
    println!(
        "see: ring3-bench: loop ring0 {} it/s, ring3 {} it/s",
        SPIN_RING0 * 1_000_000 / us0,
        SPIN_RING3 * 1_000_000 / us3
    );

    let data = alloc::vec![0x5au8; SHA_BUF];
    let (d0, us0) = timed(|| sha(&data[..SHA_RING0], 1));
    if usermode::run(|| sha(&data[..SHA_RING0], 1)) != d0 {
        return Err("SHA-384 differs between ring 0 and ring 3");
    }
    let (_, us3) = timed(|| usermode::run(|| sha(&data, SHA_REPS)));
    println!(
        "see: ring3-bench: sha384 ring0 {} KiB/s, ring3 {} MiB/s",
        (SHA_RING0 as u64 >> 10) * 1_000_000 / us0,
        (SHA_BUF as u64 * SHA_REPS * 1_000_000 / us3) >> 20
    );

    // SHA-256 in ring 3 only: `kvm_pvm` emulates ring 0 and knows no SHA instructions. Timed
    // inside ring 3, so the cost of the `usermode::run` call is left out.
    let bytes = SHA_BUF as u64 * SHA_REPS;
    let (hw, soft, sha384) = usermode::run(|| {
        (
            timed(|| sha256_driver(&data, SHA_REPS)),
            timed(|| sha256_software(&data, SHA_REPS)),
            timed(|| sha(&data, SHA_REPS)).1,
        )
    });
    if hw.0 != soft.0 {
        return Err("SHA-256 differs between the boot-time backend and sha2");
    }
    println!(
        "see: ring3-bench: in ring 3, {} KiB x {SHA_REPS}: sha256 {} {} MiB/s, sha256 software {} MiB/s, sha384 {} MiB/s",
        SHA_BUF >> 10,
        crate::sha256_name(see_guest_driver::sha256::backend()),
        mib_s(bytes, hw.1),
        mib_s(bytes, soft.1),
        mib_s(bytes, sha384)
    );

    let message = &data[..MESSAGE_LEN];
    let (signature, key) = usermode::run(|| -> Result<(Signature, VerifyingKey), &'static str> {
        let sk = SigningKey::from_slice(&SIGNING_SCALAR).map_err(|_| "bad signing scalar")?;
        Ok((sk.sign(message), *sk.verifying_key()))
    })?;
    let (ok3, us3) = timed(|| {
        usermode::run(|| (0..VERIFIES_RING3).all(|_| key.verify(message, &signature).is_ok()))
    });
    let (ok0, us0) = timed(|| key.verify(message, &signature).is_ok());
    if !(ok0 && ok3) {
        return Err("a valid P-384 signature did not verify");
    }
    println!(
        "see: ring3-bench: p384 verify ring0 {us0} us, ring3 {} us",
        us3 / VERIFIES_RING3
    );
    Ok(())
}
