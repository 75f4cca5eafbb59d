//! The task runtime over WAT modules: the interface, the limits and the claim rules.

use std::collections::BTreeMap;

use see_task::{abi, ClaimRefusal, Limits, Runtime, TaskError, TaskHost};

/// A host with per-resource bytes; resources of other apps are listed apart and refused.
#[derive(Default)]
struct Host {
    inputs: Vec<u64>,
    own: BTreeMap<u64, Vec<u8>>,
    foreign: Vec<u64>,
    claimed: Vec<u64>,
}

impl TaskHost for Host {
    fn input(&self, index: u32) -> Option<u64> {
        self.inputs.get(index as usize).copied()
    }
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        if self.foreign.contains(&resource) {
            return Err(ClaimRefusal::Denied);
        }
        let bytes = self.own.get(&resource).ok_or(ClaimRefusal::Unavailable)?;
        self.claimed.push(resource);
        Ok(bytes.len() as u64)
    }
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        let bytes = self.own.get(&resource).ok_or(ClaimRefusal::NotClaimed)?;
        let start = (offset as usize).min(bytes.len());
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

const LIMITS: Limits = Limits {
    fuel: 10_000_000,
    memory_bytes: 1 << 20,
};

fn module(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test WAT parses")
}

/// Sums the bytes of every input: claim, read into memory at 0, add.
const SUM_INPUTS: &str = r#"(module
  (import "see" "input" (func $input (param i32) (result i64)))
  (import "see" "claim" (func $claim (param i64) (result i64)))
  (import "see" "read" (func $read (param i64 i64 i32 i32) (result i32)))
  (import "see" "result" (func $result (param i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $i i32) (local $id i64) (local $len i64) (local $n i32) (local $j i32) (local $sum i64)
    (block $done
      (loop $next
        (local.set $id (call $input (local.get $i)))
        (br_if $done (i64.lt_s (local.get $id) (i64.const 0)))
        (local.set $len (call $claim (local.get $id)))
        (if (i64.lt_s (local.get $len) (i64.const 0)) (then (return (i32.const 7))))
        (local.set $n (call $read (local.get $id) (i64.const 0) (i32.const 0) (i32.const 4096)))
        (local.set $j (i32.const 0))
        (block $end (loop $byte
          (br_if $end (i32.ge_s (local.get $j) (local.get $n)))
          (local.set $sum (i64.add (local.get $sum) (i64.load8_u (local.get $j))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $byte)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $result (local.get $sum))
    (i32.const 0)))"#;

#[test]
fn a_module_claims_its_inputs_and_sets_a_result() {
    let rt = Runtime::new();
    let compiled = rt.compile(&module(SUM_INPUTS)).unwrap();
    let mut host = Host {
        inputs: vec![3, 9],
        ..Host::default()
    };
    host.own.insert(3, vec![1, 2, 3]);
    host.own.insert(9, vec![10; 100]);
    let outcome = rt.run(&compiled, LIMITS, &mut host).unwrap();
    assert_eq!(outcome.result, 6 + 1000);
    assert!(outcome.fuel_used > 0 && outcome.fuel_used < LIMITS.fuel);
    assert_eq!(host.claimed, vec![3, 9]);
}

#[test]
fn another_apps_resource_is_refused_to_the_module() {
    let rt = Runtime::new();
    let compiled = rt.compile(&module(SUM_INPUTS)).unwrap();
    let mut host = Host {
        inputs: vec![3, 44],
        foreign: vec![44],
        ..Host::default()
    };
    host.own.insert(3, vec![1]);
    // The module returns 7 when a claim fails.
    assert!(matches!(
        rt.run(&compiled, LIMITS, &mut host),
        Err(TaskError::Failed(7))
    ));
    assert_eq!(host.claimed, vec![3]);
}

#[test]
fn reading_an_unclaimed_resource_is_refused() {
    let rt = Runtime::new();
    let wat = r#"(module
      (import "see" "read" (func $read (param i64 i64 i32 i32) (result i32)))
      (import "see" "result" (func $result (param i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (call $result (i64.extend_i32_s (call $read (i64.const 3) (i64.const 0) (i32.const 0) (i32.const 8))))
        (i32.const 0)))"#;
    let compiled = rt.compile(&module(wat)).unwrap();
    let mut host = Host::default();
    host.own.insert(3, vec![1; 8]);
    let outcome = rt.run(&compiled, LIMITS, &mut host).unwrap();
    assert_eq!(outcome.result as i64, abi::ERR_NOT_CLAIMED);
}

#[test]
fn a_read_outside_the_modules_memory_is_refused() {
    let rt = Runtime::new();
    let wat = r#"(module
      (import "see" "claim" (func $claim (param i64) (result i64)))
      (import "see" "read" (func $read (param i64 i64 i32 i32) (result i32)))
      (import "see" "result" (func $result (param i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (drop (call $claim (i64.const 3)))
        (call $result (i64.extend_i32_s (call $read (i64.const 3) (i64.const 0) (i32.const 65530) (i32.const 8))))
        (i32.const 0)))"#;
    let compiled = rt.compile(&module(wat)).unwrap();
    let mut host = Host::default();
    host.own.insert(3, vec![1; 8]);
    let outcome = rt.run(&compiled, LIMITS, &mut host).unwrap();
    assert_eq!(outcome.result as i64, abi::ERR_BOUNDS);
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel() {
    let rt = Runtime::new();
    let wat = r#"(module
      (memory (export "memory") 1)
      (func (export "run") (result i32) (loop $l (br $l)) (i32.const 0)))"#;
    let compiled = rt.compile(&module(wat)).unwrap();
    let err = rt.run(&compiled, LIMITS, &mut Host::default()).unwrap_err();
    assert!(
        matches!(err, TaskError::OutOfFuel { fuel } if fuel == LIMITS.fuel),
        "{err}"
    );
}

#[test]
fn a_memory_bomb_is_refused() {
    let rt = Runtime::new();
    // Grows by 64 KiB pages until refused; a limit of 1 MiB stops it at 16 pages.
    let grows = r#"(module
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (loop $l (br_if $l (i32.ge_s (memory.grow (i32.const 1)) (i32.const 0))))
        (i32.const 0)))"#;
    let compiled = rt.compile(&module(grows)).unwrap();
    let err = rt.run(&compiled, LIMITS, &mut Host::default()).unwrap_err();
    assert!(
        matches!(err, TaskError::MemoryLimit { limit } if limit == LIMITS.memory_bytes),
        "{err}"
    );
    // Asking for 1 GiB up front fails at instantiation.
    let big = r#"(module (memory (export "memory") 16384)
      (func (export "run") (result i32) (i32.const 0)))"#;
    let compiled = rt.compile(&module(big)).unwrap();
    let err = rt.run(&compiled, LIMITS, &mut Host::default()).unwrap_err();
    assert!(matches!(err, TaskError::MemoryLimit { .. }), "{err}");
}

#[test]
fn an_unknown_import_is_refused_at_compile_time() {
    let rt = Runtime::new();
    for (wat, name) in [
        (
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#,
            "fd_write",
        ),
        (
            r#"(module (import "see" "exec" (func))
            (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#,
            "exec",
        ),
        (
            r#"(module (import "see" "memory" (memory 1))
            (func (export "run") (result i32) (i32.const 0)))"#,
            "memory",
        ),
    ] {
        match rt.compile(&module(wat)) {
            Err(TaskError::ForbiddenImport { name: found, .. }) => assert_eq!(&*found, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    let wrong = r#"(module (import "see" "claim" (func (param i32) (result i32)))
        (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#;
    assert!(matches!(
        rt.compile(&module(wrong)),
        Err(TaskError::WrongSignature { .. })
    ));
}

#[test]
fn malformed_modules_and_missing_exports_fail_clearly() {
    let rt = Runtime::new();
    let err = rt.compile(b"\0asm\x01\0\0\0\x01\xff").unwrap_err();
    assert!(matches!(err, TaskError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("not valid Wasm"));
    assert!(matches!(
        rt.compile(b"not wasm"),
        Err(TaskError::Invalid(_))
    ));
    let no_run = r#"(module (memory (export "memory") 1))"#;
    assert!(matches!(
        rt.compile(&module(no_run)),
        Err(TaskError::Interface(_))
    ));
    let no_memory = r#"(module (func (export "run") (result i32) (i32.const 0)))"#;
    assert!(matches!(
        rt.compile(&module(no_memory)),
        Err(TaskError::Interface(_))
    ));
}

#[test]
fn a_trap_fails_the_run_and_the_next_run_is_served() {
    let rt = Runtime::new();
    let trap = r#"(module (memory (export "memory") 1)
      (func (export "run") (result i32) (unreachable)))"#;
    let compiled = rt.compile(&module(trap)).unwrap();
    assert!(matches!(
        rt.run(&compiled, LIMITS, &mut Host::default()),
        Err(TaskError::Trap(wasmi_trap)) if wasmi_trap.to_string().contains("unreachable")
    ));
    let good = rt.compile(&module(SUM_INPUTS)).unwrap();
    let mut host = Host {
        inputs: vec![1],
        ..Host::default()
    };
    host.own.insert(1, vec![5]);
    assert_eq!(rt.run(&good, LIMITS, &mut host).unwrap().result, 5);
}

#[test]
fn a_run_without_a_result_is_an_error() {
    let rt = Runtime::new();
    let wat = r#"(module (memory (export "memory") 1)
      (func (export "run") (result i32) (i32.const 0)))"#;
    let compiled = rt.compile(&module(wat)).unwrap();
    assert!(matches!(
        rt.run(&compiled, LIMITS, &mut Host::default()),
        Err(TaskError::NoResult)
    ));
}

#[test]
fn each_run_starts_from_fresh_memory() {
    let rt = Runtime::new();
    // Adds 1 to the word at address 0 and reports it: 1 every time with fresh memory.
    let wat = r#"(module
      (import "see" "result" (func $result (param i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
        (call $result (i64.load (i32.const 0)))
        (i32.const 0)))"#;
    let compiled = rt.compile(&module(wat)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            rt.run(&compiled, LIMITS, &mut Host::default())
                .unwrap()
                .result,
            1
        );
    }
}
