//! The C tasks of tasks/ (built with clang-19 by the same function as `cargo xtask tasks`)
//! against the native work they port: tasks/shop.c must report exactly the fold of
//! `see_workload::resource_word` over its inputs, and fail (never trap, hang or agree with a
//! corrupt resource) where `see_workload::process` fails.
//!
//! Skips only when clang-19/lld-19 are missing and SEE_REQUIRE_CLANG is unset; `cargo xtask
//! test` (CI) installs them and sets it.

use std::{collections::BTreeMap, path::Path};

use see_task::{ClaimRefusal, Compiled, Limits, Runtime, TaskError, TaskHost};
use see_task_c::Toolchain;
use see_workload::{
    generate, process, resource_word, Header, Kind, Spec, TaskResult, HEADER_LEN, MAGIC,
};
use sha2::{Digest, Sha384};

/// Resources by id, every one the task's app's; inputs in order.
struct Host {
    inputs: Vec<u64>,
    resources: BTreeMap<u64, Vec<u8>>,
}

impl TaskHost for Host {
    fn input(&self, index: u32) -> Option<u64> {
        self.inputs.get(index as usize).copied()
    }
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        let bytes = self
            .resources
            .get(&resource)
            .ok_or(ClaimRefusal::Unavailable)?;
        Ok(bytes.len() as u64)
    }
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        let bytes = self
            .resources
            .get(&resource)
            .ok_or(ClaimRefusal::NotClaimed)?;
        let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

const LIMITS: Limits = Limits {
    fuel: 20_000_000_000,
    memory_bytes: 64 << 20,
};

/// tasks/shop.c, built and compiled; None when the toolchain is missing and not required.
fn shop(rt: &Runtime) -> Option<Compiled> {
    task(rt, "shop")
}

/// tasks/NAME.c, built and compiled; None when the toolchain is missing and not required.
fn task(rt: &Runtime, name: &str) -> Option<Compiled> {
    let Some(toolchain) =
        Toolchain::find_or_skip().expect("clang-19 and lld-19 (SEE_REQUIRE_CLANG is set)")
    else {
        eprintln!("SKIPPED: clang-19/lld-19 are not installed (`cargo xtask deps`)");
        return None;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tasks");
    let wasm = toolchain.build(name, &out).expect("the task builds");
    Some(
        rt.compile(&wasm)
            .expect("the module passes the task interface"),
    )
}

fn data(id: u64, size: u64) -> Vec<u8> {
    generate(&Spec {
        resource_id: id,
        version: 2,
        size,
        kind: Kind::Data,
    })
    .unwrap()
}

fn native(resources: &[&[u8]]) -> u64 {
    let mut fold = TaskResult::new();
    for r in resources {
        fold.add(process(r).expect("generated resources process").digest);
    }
    fold.value()
}

fn run(rt: &Runtime, shop: &Compiled, resources: &[(u64, Vec<u8>)]) -> Result<u64, TaskError> {
    let mut host = Host {
        inputs: resources.iter().map(|(id, _)| *id).collect(),
        resources: resources.iter().cloned().collect(),
    };
    rt.run(shop, LIMITS, &mut host).map(|o| o.result)
}

/// The README's example task.
#[test]
fn the_readme_sum_task_sums_its_first_input() {
    let rt = Runtime::new();
    let Some(sum) = task(&rt, "sum") else { return };
    assert_eq!(run(&rt, &sum, &[(8, vec![1, 2, 3, 250])]).unwrap(), 256);
    assert!(matches!(run(&rt, &sum, &[]), Err(TaskError::Failed(1))));
}

#[test]
fn shop_in_c_matches_the_native_work() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let sizes = [256u64, 4 << 10, 64 << 10, 300 << 10, 1 << 20];
    let all: Vec<(u64, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| (10 + i as u64, data(10 + i as u64, size)))
        .collect();
    for one in &all {
        let want = native(&[&one.1]);
        assert_eq!(
            run(&rt, &shop, std::slice::from_ref(one)).unwrap(),
            want,
            "{} bytes",
            one.1.len()
        );
    }
    let want = native(&all.iter().map(|(_, b)| b.as_slice()).collect::<Vec<_>>());
    assert_eq!(run(&rt, &shop, &all).unwrap(), want, "all inputs, in order");
    let mut reversed = all.clone();
    reversed.reverse();
    assert_ne!(
        run(&rt, &shop, &reversed).unwrap(),
        want,
        "the fold keeps the order"
    );
    // No inputs: the fold's seed, as TaskResult::new().
    assert_eq!(run(&rt, &shop, &[]).unwrap(), TaskResult::new().value());
}

/// The native task's result over `resources`: see_workload::resource_word folded in order,
/// with the SHA-384 the host and the guest take from the store and the signed bundle.
fn native_words(resources: &[&[u8]]) -> Result<u64, see_workload::WorkloadError> {
    let mut fold = TaskResult::new();
    for r in resources {
        let sha: [u8; 48] = Sha384::digest(r).into();
        fold.add(resource_word(r, &sha)?);
    }
    Ok(fold.value())
}

/// A resource without the workload magic is not an error: both the C task and the native
/// work fold in the first 8 bytes of its SHA-384, at every length around SHA-512's block and
/// padding boundaries, for content that only starts like a workload resource, and beside
/// workload resources in one task.
#[test]
fn shop_in_c_matches_the_native_work_on_any_content() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let mut contents: Vec<Vec<u8>> = [
        0usize, 1, 3, 4, 55, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 1000,
    ]
    .iter()
    .map(|&n| (0..n).map(|i| (i * 131 + n) as u8).collect())
    .collect();
    // Bigger than the task's read piece (64 KiB), and a length that is not a multiple of it.
    contents.push((0..(200 << 10) + 77).map(|i| (i % 251) as u8).collect());
    // The magic's first three bytes only; the magic at offset 1.
    contents.push(b"SEE".to_vec());
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&MAGIC.to_le_bytes());
    shifted.extend_from_slice(&[9; 60]);
    contents.push(shifted);
    for (i, c) in contents.iter().enumerate() {
        let want = native_words(&[c]).expect("content without the magic always has a word");
        let got = run(&rt, &shop, &[(30 + i as u64, c.clone())])
            .unwrap_or_else(|e| panic!("{} bytes: {e}", c.len()));
        assert_eq!(got, want, "{} bytes", c.len());
    }
    // Against a known digest, not only against the native code: SHA-384("abc") starts
    // cb 00 75 3f 45 a3 5e 8b (FIPS 180-2, appendix D.1).
    let mut fold = TaskResult::new();
    fold.add(u64::from_le_bytes([
        0xcb, 0x00, 0x75, 0x3f, 0x45, 0xa3, 0x5e, 0x8b,
    ]));
    assert_eq!(
        run(&rt, &shop, &[(1, b"abc".to_vec())]).unwrap(),
        fold.value()
    );
    // Workload and other resources mixed in one task, in order.
    let mixed: Vec<(u64, Vec<u8>)> = vec![
        (1, data(1, 4 << 10)),
        (2, contents[9].clone()),
        (3, data(3, 64 << 10)),
        (4, contents[contents.len() - 3].clone()),
    ];
    let want = native_words(&mixed.iter().map(|(_, b)| b.as_slice()).collect::<Vec<_>>())
        .expect("generated resources process");
    assert_eq!(run(&rt, &shop, &mixed).unwrap(), want);
}

#[test]
fn a_corrupt_resource_fails_the_task() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let good = data(3, 16 << 10);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    // 11: the CRC-32 over header and body.
    assert!(matches!(
        run(&rt, &shop, &[(3, good.clone()), (4, bad)]),
        Err(TaskError::Failed(11))
    ));
    // A refused claim (the host has no resource 9).
    let mut host = Host {
        inputs: vec![9],
        resources: BTreeMap::new(),
    };
    assert!(matches!(
        rt.run(&shop, LIMITS, &mut host),
        Err(TaskError::Failed(2))
    ));
}

/// Damage past the CRC (a forged header CRC): the C inflate and record checks must agree with
/// the native ones: both fail, or both give the same digest. Never a trap or a runaway loop.
#[test]
fn forged_corruption_is_judged_like_the_native_work() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let good = data(6, 8 << 10);
    let h = Header::parse(&good).unwrap();
    let stream_end = HEADER_LEN + h.deflate_len as usize;
    let (mut failed, mut checked) = (0, 0);
    for (i, flip) in (HEADER_LEN..stream_end)
        .step_by(17)
        .zip([0x01u8, 0x10, 0x80, 0xff].iter().cycle())
    {
        let mut bad = good.clone();
        bad[i] ^= flip;
        let forged = Header {
            crc: h.checksum(&bad[HEADER_LEN..]),
            ..h
        };
        bad[..HEADER_LEN].copy_from_slice(&forged.encode());
        let native = process(&bad).map(|s| {
            let mut fold = TaskResult::new();
            fold.add(s.digest);
            fold.value()
        });
        let wasm = run(&rt, &shop, &[(1, bad)]);
        checked += 1;
        match (native, wasm) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "flip at {i}"),
            (Err(_), Err(TaskError::Failed(code))) => {
                assert!((10..=14).contains(&code), "flip at {i}: code {code}");
                failed += 1;
            }
            (n, w) => panic!("flip at {i}: native {n:?}, wasm {w:?}"),
        }
    }
    assert!(
        checked > 100 && failed > checked / 2,
        "{failed} of {checked} failed"
    );
}

/// The shop task under limits too small for its input: a clean MemoryLimit or OutOfFuel,
/// and the next run with enough is served.
#[test]
fn the_shop_task_stops_at_its_limits() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let big = data(20, 1 << 20);
    let input = |bytes: &Vec<u8>| Host {
        inputs: vec![20],
        resources: [(20, bytes.clone())].into(),
    };
    let tight_memory = Limits {
        memory_bytes: 2 << 20,
        ..LIMITS
    };
    assert!(matches!(
        rt.run(&shop, tight_memory, &mut input(&big)),
        Err(TaskError::MemoryLimit { limit }) if limit == 2 << 20
    ));
    let little_fuel = Limits {
        fuel: 1_000_000,
        ..LIMITS
    };
    assert!(matches!(
        rt.run(&shop, little_fuel, &mut input(&big)),
        Err(TaskError::OutOfFuel { fuel: 1_000_000 })
    ));
    let served = rt.run(&shop, LIMITS, &mut input(&big)).unwrap();
    assert_eq!(served.result, native(&[&big]));
}

/// Deflate bits, least significant first (RFC 1951 3.1.1).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    /// `n` bits of `v`, low bit first (header fields and extra bits).
    fn put(&mut self, v: u32, n: u32) {
        for i in 0..n {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let last = self.bytes.len() - 1;
            self.bytes[last] |= (((v >> i) & 1) as u8) << (self.used % 8);
            self.used += 1;
        }
    }
    /// A Huffman code of `n` bits, most significant bit first.
    fn code(&mut self, code: u32, n: u32) {
        for i in (0..n).rev() {
            self.put((code >> i) & 1, 1);
        }
    }
    /// A symbol of the fixed literal/length code (RFC 1951 3.2.6).
    fn fixed(&mut self, sym: u32) {
        match sym {
            0..=143 => self.code(0x30 + sym, 8),
            144..=255 => self.code(0x190 + sym - 144, 9),
            256..=279 => self.code(sym - 256, 7),
            _ => self.code(0xc0 + sym - 280, 8),
        }
    }
}

/// A see-workload resource whose body is `stream`, with a valid header CRC.
fn resource_with_stream(stream: &[u8], raw_len: u32, records: u32) -> Vec<u8> {
    let mut h = Header {
        kind: Kind::Data,
        resource_id: 1,
        version: 1,
        records,
        raw_len,
        deflate_len: stream.len() as u32,
        crc: 0,
    };
    h.crc = h.checksum(stream);
    let mut bytes = h.encode().to_vec();
    bytes.extend_from_slice(stream);
    bytes
}

/// Hand-made malicious deflate streams behind a valid header CRC: a match reaching before the
/// output's start, distance codes 30 and 31, length codes 286 and 287, an over-subscribed and
/// an incomplete code, a stream that ends without its end-of-block code, a 258-byte match
/// overlapping its source and one longer than the output. Each fails the task with a
/// corruption code where the native work fails too; none traps, hangs or succeeds.
#[test]
fn malicious_deflate_streams_fail_the_task() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let fixed_block = |body: &dyn Fn(&mut Bits)| {
        let mut b = Bits::default();
        b.put(1, 1); // final block
        b.put(1, 2); // fixed codes
        body(&mut b);
        b.bytes
    };
    let mut cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "a match before the output's start",
            fixed_block(&|b| {
                b.fixed(257); // length 3
                b.code(0, 5); // distance 1, with no output yet
                b.fixed(256);
            }),
            3,
        ),
        (
            "a match 5 back after 1 byte",
            fixed_block(&|b| {
                b.fixed(b'7' as u32);
                b.fixed(257);
                b.code(4, 5); // distance 5..6
                b.put(0, 1);
                b.fixed(256);
            }),
            4,
        ),
        (
            "a match longer than the output",
            fixed_block(&|b| {
                b.fixed(b'7' as u32);
                b.fixed(285); // length 258
                b.code(0, 5);
                b.fixed(256);
            }),
            100,
        ),
        (
            "a 258-byte overlapping match (valid deflate, not records)",
            fixed_block(&|b| {
                b.fixed(b'7' as u32);
                b.fixed(b'8' as u32);
                b.fixed(285);
                b.code(1, 5); // distance 2
                b.fixed(256);
            }),
            260,
        ),
        (
            "no end-of-block code before the input ends",
            fixed_block(&|b| {
                for _ in 0..20 {
                    b.fixed(0x30 + 0x40);
                }
            }),
            400,
        ),
    ];
    for (name, dist) in [("distance code 30", 30), ("distance code 31", 31)] {
        cases.push((
            name,
            fixed_block(&|b| {
                b.fixed(b'7' as u32);
                b.fixed(257);
                b.code(dist, 5);
                b.put(0, 13);
                b.fixed(256);
            }),
            4,
        ));
    }
    for (name, sym) in [("length code 286", 286), ("length code 287", 287)] {
        cases.push((
            name,
            fixed_block(&|b| {
                b.fixed(b'7' as u32);
                b.fixed(sym);
                b.code(0, 5);
                b.fixed(256);
            }),
            4,
        ));
    }
    // Dynamic blocks: 257 literal/length and 1 distance code lengths, 19 code-length codes.
    let dynamic = |cl_lengths: [u32; 19], body: &dyn Fn(&mut Bits)| {
        let mut b = Bits::default();
        b.put(1, 1);
        b.put(2, 2);
        b.put(0, 5);
        b.put(0, 5);
        b.put(15, 4);
        for l in cl_lengths {
            b.put(l, 3);
        }
        body(&mut b);
        b.bytes
    };
    cases.push((
        "an over-subscribed code-length code",
        dynamic([1; 19], &|_| {}),
        4,
    ));
    // Code-length code: only symbol 1 (stored order position 17), one bit: an incomplete code
    // whose unused code (bit 1) comes next.
    let mut incomplete = [0u32; 19];
    incomplete[17] = 1;
    cases.push((
        "an incomplete code's unused code",
        dynamic(incomplete, &|b| b.code(1, 1)),
        4,
    ));
    for (name, stream, raw_len) in cases {
        let bytes = resource_with_stream(&stream, raw_len, 0);
        assert!(
            process(&bytes).is_err(),
            "{name}: the native work refuses it"
        );
        match run(&rt, &shop, &[(1, bytes)]) {
            Err(TaskError::Failed(code)) => {
                assert!(
                    (12..=13).contains(&code),
                    "{name}: code {code}, not an inflate or record failure"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// Random deflate streams (block types, code lengths and symbols all random) behind a valid
/// header CRC: the task agrees with the native work on every one (both fail, or both give the
/// same digest), and never traps, hangs or runs out of fuel.
#[test]
fn random_deflate_streams_are_judged_like_the_native_work() {
    let rt = Runtime::new();
    let Some(shop) = shop(&rt) else { return };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut failed, mut dynamic) = (0, 0);
    for case in 0..400 {
        let len = 1 + (next() % 600) as usize;
        let mut stream: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of them start a final dynamic-code block, the richest header to get wrong.
        if case % 2 == 0 {
            stream[0] = (stream[0] & !0b111) | 0b101;
            dynamic += 1;
        }
        let raw_len = (next() % 4096) as u32;
        let bytes = resource_with_stream(&stream, raw_len, 0);
        let native = process(&bytes).map(|s| {
            let mut fold = TaskResult::new();
            fold.add(s.digest);
            fold.value()
        });
        match (native, run(&rt, &shop, &[(1, bytes)])) {
            (Ok(want), Ok(got)) => assert_eq!(got, want, "case {case}"),
            (Err(_), Err(TaskError::Failed(code))) => {
                assert!((10..=14).contains(&code), "case {case}: code {code}");
                failed += 1;
            }
            (n, w) => panic!("case {case}: native {n:?}, wasm {w:?}"),
        }
    }
    assert!(dynamic == 200 && failed > 300, "{failed} of 400 failed");
}
