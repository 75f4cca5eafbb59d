//! Wasm tasks end to end: modules written in WAT, stored as signed code resources,
//! run by the guest's `OP_RUN_WASM`. The host computes each expected result by running the same
//! module with see-task over the store's bytes (`see_e2e::task_host`).
//!
//! Resource ids of one task have the same number of digits: the rig sorts `see.allow` as text,
//! and a task's inputs are its data resources in `see.allow` order.

use see_abi::serve::{
    OP_RUN_WASM, STATUS_BAD_MODULE, STATUS_MEMORY_LIMIT, STATUS_OUT_OF_FUEL, STATUS_TASK_FAILED,
    STATUS_TASK_TRAPPED,
};
use see_e2e::{
    guest::{field, field_u64},
    kvm_available,
    rig::{Options, Res, Rig},
    task_host::run_over_store,
};
use see_prefetch_backend::{BackendEvent, Eviction, Tamper};
use see_task::{Limits, Runtime, TaskError};
use virtio_prefetch_wire::{RejectReason, TaskTiming};
use virtio_prefetch_wire::{ReportKind, ResourceKind};

const FUEL: u64 = 50_000_000;
const MEMORY: u64 = 1 << 20;
const LIMITS: Limits = Limits {
    fuel: FUEL,
    memory_bytes: MEMORY,
};

/// The four imports every test module declares (a module may import fewer).
const IMPORTS: &str = r#"
  (import "see" "input" (func $input (param i32) (result i64)))
  (import "see" "claim" (func $claim (param i64) (result i64)))
  (import "see" "read" (func $read (param i64 i64 i32 i32) (result i32)))
  (import "see" "result" (func $result (param i64)))"#;

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap_or_else(|e| panic!("test WAT: {e}\n{wat}"))
}

/// Folds every byte of every input (`h = h * 31 + byte`, order-sensitive), reading each in
/// 4 KiB chunks. A refused claim returns 100 - code (101: denied), a refused read 200 - code.
fn hash_inputs() -> Vec<u8> {
    wasm(&format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $i i32) (local $id i64) (local $len i64) (local $off i64) (local $n i32) (local $j i32)
    (local $h i64)
    (block $done (loop $next
      (local.set $id (call $input (local.get $i)))
      (br_if $done (i64.lt_s (local.get $id) (i64.const 0)))
      (local.set $len (call $claim (local.get $id)))
      (if (i64.lt_s (local.get $len) (i64.const 0))
        (then (return (i32.wrap_i64 (i64.sub (i64.const 100) (local.get $len))))))
      (local.set $off (i64.const 0))
      (block $eof (loop $chunk
        (local.set $n (call $read (local.get $id) (local.get $off) (i32.const 0) (i32.const 4096)))
        (if (i32.lt_s (local.get $n) (i32.const 0))
          (then (return (i32.sub (i32.const 200) (local.get $n)))))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $j (i32.const 0))
        (block $end (loop $byte
          (br_if $end (i32.ge_u (local.get $j) (local.get $n)))
          (local.set $h (i64.add (i64.mul (local.get $h) (i64.const 31))
                                 (i64.load8_u (local.get $j))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $byte)))
        (local.set $off (i64.add (local.get $off) (i64.extend_i32_u (local.get $n))))
        (br $chunk)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $result (local.get $h))
    (i32.const 0)))"#
    ))
}

/// Claims resource `id` (not one of its inputs): its length as the result, or fails with
/// 100 - the refusal code (101: access denied).
fn claim_of(id: u64) -> Vec<u8> {
    wasm(&format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $r i64)
    (local.set $r (call $claim (i64.const {id})))
    (if (i64.lt_s (local.get $r) (i64.const 0))
      (then (return (i32.wrap_i64 (i64.sub (i64.const 100) (local.get $r))))))
    (call $result (local.get $r))
    (i32.const 0)))"#
    ))
}

/// Sets `word` as its result.
fn constant(word: u64) -> Vec<u8> {
    wasm(&format!(
        r#"(module {IMPORTS}
  (memory (export "memory") 1)
  (func (export "run") (result i32) (call $result (i64.const {word})) (i32.const 0)))"#
    ))
}

/// Loops until its fuel runs out, with integer and float arithmetic whose intermediate values
/// wasmi keeps in its registers. It guards the guest's Wasm dispatch: the handlers that write
/// those registers are the ones that call the next handler unless tail calls are guaranteed
/// (see-task's `tail-dispatch`), and `FUEL` runs millions of them, so with such calls the 1 MiB
/// ring-3 stack would overflow after some tens of thousands (the VM triple faults and the test
/// fails) instead of the task running out of fuel.
fn infinite_loop() -> Vec<u8> {
    wasm(
        r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32)
    (local $i i32) (local $j i64) (local $f f32) (local $d f64)
    (loop $l
      (local.set $i (i32.add (i32.mul (local.get $i) (i32.const 3)) (i32.const 1)))
      (local.set $j (i64.add (i64.mul (local.get $j) (i64.const 5)) (i64.const 7)))
      (local.set $f (f32.add (f32.mul (local.get $f) (f32.const 0.5)) (f32.const 1)))
      (local.set $d (f64.add (f64.mul (local.get $d) (f64.const 0.5)) (f64.const 1)))
      (br $l))
    (i32.const 0)))"#,
    )
}

/// Grows its memory a page at a time until a grow fails (which traps under the limit).
fn memory_bomb() -> Vec<u8> {
    wasm(
        r#"(module (memory (export "memory") 1)
  (func (export "run") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    (i32.const 0)))"#,
    )
}

fn unknown_import() -> Vec<u8> {
    wasm(
        r#"(module (import "see" "exec" (func $exec (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (drop (call $exec (i64.const 0))) (i32.const 0)))"#,
    )
}

/// Recurses a million calls deep: wasmi's call-depth limit (1000) traps it; the guest's native stack
/// is not involved.
fn deep_recursion() -> Vec<u8> {
    wasm(
        r#"(module (memory (export "memory") 1)
  (func $down (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (call $down (i32.sub (local.get 0) (i32.const 1))))))
  (func (export "run") (result i32) (call $down (i32.const 1000000))))"#,
    )
}

fn trap() -> Vec<u8> {
    wasm(r#"(module (memory (export "memory") 1) (func (export "run") (result i32) unreachable))"#)
}

/// Dispatches one `OP_RUN_WASM` task with the test's limits and waits for its completion:
/// (status, task timings).
fn run_wasm(rig: &mut Rig, app: u32, task: u64, limits: Limits) -> (u32, Vec<TaskTiming>) {
    let id = rig.dispatch(app, OP_RUN_WASM, &[task, limits.fuel, limits.memory_bytes]);
    let done = rig.wait_event(
        &format!("Complete of request {id}"),
        |e| matches!(e, BackendEvent::Complete { request_id, .. } if *request_id == id),
    );
    match done {
        BackendEvent::Complete { status, tasks, .. } => (status, tasks),
        _ => unreachable!("matched above"),
    }
}

/// The guest's `see: wasm task=T ...` line (the next one for that task).
fn task_line(rig: &mut Rig, task: u64) -> String {
    rig.guest.wait_line(&format!("wasm task={task}"), |l| {
        l.starts_with(&format!("see: wasm task={task} "))
    })
}

/// The guest's `see: wasm-failed ... task=T ...` line.
fn failed_line(rig: &mut Rig, task: u64) -> String {
    rig.guest
        .wait_line(&format!("wasm-failed task={task}"), |l| {
            l.starts_with("see: wasm-failed ") && l.contains(&format!(" task={task} "))
        })
}

/// Waits until the guest compiled resource `res` ahead (idle): its `ok` field.
fn compiled_ahead(rig: &mut Rig, app: u32, res: u64) -> u64 {
    let line = rig
        .guest
        .wait_line(&format!("wasm-compiled res={res}"), |l| {
            l.starts_with(&format!("see: wasm-compiled app={app} res={res} "))
        });
    field_u64(&line, "ok")
}

#[test]
fn a_prefetched_module_is_compiled_ahead_and_a_demanded_one_is_not() {
    if !kvm_available() {
        return;
    }
    // Task 20: module 100 on inputs 101 and 102 (prefetched); task 21: the same module as
    // resource 110 on input 111 (demand-fetched).
    let module = hash_inputs();
    let resources = vec![
        Res::code(1, 20, 100, 1, module.clone()),
        Res::data(1, 20, 101, 1, 5000),
        Res::data(1, 20, 102, 1, 200_000),
        Res::code(1, 21, 110, 1, module),
        Res::data(1, 21, 111, 1, 777),
    ];
    let mut rig = Rig::start(&Options {
        resources: resources.clone(),
        ..Options::default()
    });
    for r in &resources[..3] {
        rig.prefetch(r);
    }
    assert_eq!(compiled_ahead(&mut rig, 1, 100), 1, "module 100 compiles");

    let expected = run_over_store(&*rig.store, 1, 100, vec![101, 102], LIMITS)
        .expect("the host runs the module");
    let (status, tasks) = run_wasm(&mut rig, 1, 20, LIMITS);
    assert_eq!(status, 0, "{}", rig.guest.transcript());
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id, 20);
    assert_eq!(tasks[0].result, expected.result, "guest and host disagree");
    assert_eq!((tasks[0].hits, tasks[0].misses), (3, 0));
    let line = task_line(&mut rig, 20);
    assert_eq!(field_u64(&line, "compiled"), 1, "compiled ahead: {line}");
    assert_eq!(field_u64(&line, "compile_ns"), 0, "{line}");
    assert_eq!(field_u64(&line, "status"), 0, "{line}");
    assert_eq!(field_u64(&line, "fuel"), expected.fuel_used, "{line}");

    let expected = run_over_store(&*rig.store, 1, 110, vec![111], LIMITS).expect("host run");
    let (status, tasks) = run_wasm(&mut rig, 1, 21, LIMITS);
    assert_eq!(status, 0, "{}", rig.guest.transcript());
    assert_eq!(tasks[0].result, expected.result);
    assert_eq!((tasks[0].hits, tasks[0].misses), (0, 2));
    let line = task_line(&mut rig, 21);
    assert_eq!(field_u64(&line, "compiled"), 0, "demand-fetched: {line}");
    assert!(field_u64(&line, "compile_ns") > 0, "{line}");
    // The module compiled for the request is kept: the next request only instantiates it.
    let (status, _) = run_wasm(&mut rig, 1, 21, LIMITS);
    assert_eq!(status, 0);
    let line = task_line(&mut rig, 21);
    assert_eq!(field_u64(&line, "compiled"), 1, "second run: {line}");
    rig.stop();
}

#[test]
fn a_module_tampered_after_signing_is_refused_before_it_is_compiled() {
    if !kvm_available() {
        return;
    }
    let module = Res::code(1, 50, 150, 1, hash_inputs());
    let input = Res::data(1, 50, 151, 1, 1000);
    let mut rig = Rig::start(&Options {
        resources: vec![module.clone(), input.clone()],
        ..Options::default()
    });
    rig.tamper(Tamper::FlipContentBit);
    rig.prefetch(&module);
    rig.wait_event("Report Reject DigestMismatch for 150", |e| {
        matches!(
            e,
            BackendEvent::Report {
                reason: Some(RejectReason::DigestMismatch),
                resource_id: 150,
                ..
            }
        )
    });
    // The request demand-fetches it, tampered again: refused, the task fails, nothing compiled.
    let (status, tasks) = run_wasm(&mut rig, 1, 50, LIMITS);
    assert_eq!(status, STATUS_TASK_FAILED, "{}", rig.guest.transcript());
    assert!(tasks.is_empty(), "{tasks:?}");
    let failed = failed_line(&mut rig, 50);
    assert!(failed.contains("could not be claimed"), "{failed}");
    let console = rig.guest.transcript();
    assert!(
        !console.contains("see: wasm-compiled app=1 res=150")
            && !console.contains("see: wasm task=50"),
        "a tampered module reached the compiler:\n{console}"
    );
    // The genuine module is accepted, compiled and run.
    rig.tamper(Tamper::None);
    let (status, tasks) = run_wasm(&mut rig, 1, 50, LIMITS);
    assert_eq!(status, 0, "{}", rig.guest.transcript());
    let expected = run_over_store(&*rig.store, 1, 150, vec![151], LIMITS).expect("host run");
    assert_eq!(tasks[0].result, expected.result);
    let line = task_line(&mut rig, 50);
    assert_eq!(field_u64(&line, "compiled"), 0, "{line}");
    rig.stop();
}

#[test]
fn limits_refusals_and_traps_fail_their_request_and_the_app_serves_on() {
    if !kvm_available() {
        return;
    }
    let bad = unknown_import();
    // Refused at publish time too.
    assert!(matches!(
        Runtime::new().check(&bad),
        Err(TaskError::ForbiddenImport { .. })
    ));
    let resources = vec![
        Res::code(1, 30, 130, 1, infinite_loop()),
        Res::code(1, 31, 131, 1, memory_bomb()),
        Res::code(1, 32, 132, 1, bad),
        Res::code(1, 33, 133, 1, trap()),
        Res::code(1, 37, 137, 1, deep_recursion()),
        // A task with no code resource, and one with two.
        Res::data(1, 38, 138, 1, 100),
        Res::code(1, 39, 191, 1, trap()),
        Res::code(1, 39, 192, 1, trap()),
        // App 1's module claims app 2's resource 140.
        Res::code(1, 34, 134, 1, claim_of(140)),
        Res::data(2, 40, 140, 1, 4096),
        Res::code(1, 35, 135, 1, hash_inputs()),
        Res::data(1, 35, 136, 1, 3000),
    ];
    let mut rig = Rig::start(&Options {
        resources: resources.clone(),
        ..Options::default()
    });

    // Malformed arguments: a failed request, not a crash.
    let id = rig.dispatch(1, OP_RUN_WASM, &[30, FUEL]);
    rig.wait_event("Complete of the malformed request", |e| {
        matches!(e, BackendEvent::Complete { request_id, status, .. }
            if *request_id == id && *status == STATUS_TASK_FAILED)
    });
    rig.guest.wait_line("wasm-bad-request", |l| {
        l.starts_with("see: wasm-bad-request ")
    });

    let (status, _) = run_wasm(&mut rig, 1, 30, LIMITS);
    assert_eq!(status, STATUS_OUT_OF_FUEL, "{}", rig.guest.transcript());
    assert!(failed_line(&mut rig, 30).contains("ran out of fuel"));

    let limits = Limits {
        fuel: FUEL,
        memory_bytes: 4 << 20,
    };
    let (status, _) = run_wasm(&mut rig, 1, 31, limits);
    assert_eq!(status, STATUS_MEMORY_LIMIT, "{}", rig.guest.transcript());

    // Compiled ahead, refused, and remembered as refused (not compiled again).
    rig.prefetch(&resources[2]);
    assert_eq!(
        compiled_ahead(&mut rig, 1, 132),
        0,
        "an unknown import compiled"
    );
    let (status, _) = run_wasm(&mut rig, 1, 32, LIMITS);
    assert_eq!(status, STATUS_BAD_MODULE, "{}", rig.guest.transcript());
    let line = task_line(&mut rig, 32);
    assert_eq!(field_u64(&line, "compiled"), 1, "{line}");
    assert!(failed_line(&mut rig, 32).contains("see.exec"));

    let (status, _) = run_wasm(&mut rig, 1, 33, LIMITS);
    assert_eq!(status, STATUS_TASK_TRAPPED, "{}", rig.guest.transcript());
    assert!(failed_line(&mut rig, 33).contains("unreachable"));
    let (status, _) = run_wasm(&mut rig, 1, 37, LIMITS);
    assert_eq!(status, STATUS_TASK_TRAPPED, "{}", rig.guest.transcript());
    for (task, n) in [(38, 0), (39, 2)] {
        let (status, _) = run_wasm(&mut rig, 1, task, LIMITS);
        assert_eq!(status, STATUS_BAD_MODULE, "{}", rig.guest.transcript());
        let failed = failed_line(&mut rig, task);
        assert!(
            failed.contains(&format!("has {n} code resources")),
            "{failed}"
        );
    }

    // Access control: the claim is refused (code 101 = 100 - ERR_DENIED), on the host too.
    let (status, _) = run_wasm(&mut rig, 1, 34, LIMITS);
    assert_eq!(status, STATUS_TASK_FAILED, "{}", rig.guest.transcript());
    let failed = failed_line(&mut rig, 34);
    assert!(failed.contains("task failed with code 101"), "{failed}");
    assert!(matches!(
        run_over_store(&*rig.store, 1, 134, vec![], LIMITS),
        Err(TaskError::Failed(101))
    ));
    // App 2 owns it: the same module run as app 2's task would get it.
    assert_eq!(
        run_over_store(&*rig.store, 2, 134, vec![], LIMITS)
            .expect("owner's claim")
            .result,
        4096
    );

    // After all of that, a good task is served with the right result.
    let expected = run_over_store(&*rig.store, 1, 135, vec![136], LIMITS).expect("host run");
    let (status, tasks) = run_wasm(&mut rig, 1, 35, LIMITS);
    assert_eq!(status, 0, "{}", rig.guest.transcript());
    assert_eq!(tasks[0].result, expected.result);
    let line = task_line(&mut rig, 35);
    assert_eq!(field(&line, "status"), "0", "{line}");
    rig.stop();
}

#[test]
fn an_evicted_or_replaced_module_is_never_run_from_a_stale_compile() {
    if !kvm_available() {
        return;
    }
    let v1 = Res::code(1, 60, 160, 1, constant(1111));
    let mut rig = Rig::start(&Options {
        resources: vec![v1.clone()],
        ..Options::default()
    });
    rig.prefetch(&v1);
    assert_eq!(compiled_ahead(&mut rig, 1, 160), 1);
    let (status, tasks) = run_wasm(&mut rig, 1, 60, LIMITS);
    assert_eq!((status, tasks[0].result), (0, 1111));
    assert_eq!(field_u64(&task_line(&mut rig, 60), "compiled"), 1);

    // The host evicts it: the compiled module goes with it, the next request compiles again.
    rig.backend
        .evict(Eviction {
            app_id: 1,
            resource_id: 160,
        })
        .expect("evict sent");
    rig.wait_event("Report Evict for 160", |e| {
        matches!(
            e,
            BackendEvent::Report {
                kind: ReportKind::Evict,
                resource_id: 160,
                ..
            }
        )
    });
    rig.guest.wait_line("wasm-dropped res=160 ver=1", |l| {
        l.starts_with("see: wasm-dropped app=1 res=160 ver=1")
    });
    let (status, tasks) = run_wasm(&mut rig, 1, 60, LIMITS);
    assert_eq!((status, tasks[0].result), (0, 1111));
    assert_eq!(
        (tasks[0].hits, tasks[0].misses),
        (0, 1),
        "demand-fetched again"
    );
    assert_eq!(field_u64(&task_line(&mut rig, 60), "compiled"), 0);

    // A newer version is published and staged: version 1's module is dropped, version 2's
    // compiled ahead and run.
    rig.store
        .add(160, 2, ResourceKind::Code, 1, &constant(2222))
        .expect("store add of version 2");
    rig.prefetch(&v1);
    rig.guest.wait_line("wasm-dropped res=160 ver=1", |l| {
        l.starts_with("see: wasm-dropped app=1 res=160 ver=1")
    });
    let line = rig.guest.wait_line("wasm-compiled res=160 ver=2", |l| {
        l.starts_with("see: wasm-compiled app=1 res=160 ver=2 ")
    });
    assert_eq!(field_u64(&line, "ok"), 1, "{line}");
    let (status, tasks) = run_wasm(&mut rig, 1, 60, LIMITS);
    assert_eq!(
        (status, tasks[0].result),
        (0, 2222),
        "{}",
        rig.guest.transcript()
    );
    assert_eq!(field_u64(&task_line(&mut rig, 60), "compiled"), 1);
    rig.stop();
}

/// The guest's Wasm speed against the host's, on the same module and input (hashing 1 MB):
/// prints both run times, min and median of 12 runs each (the guest's is its `run_ns`). A
/// measurement, not run by default: `SEE_REQUIRE_KVM=1 cargo test -p see-e2e --test prefetch
/// guest_wasm_speed -- --ignored --nocapture` (a few seconds).
#[test]
#[ignore = "a measurement"]
fn guest_wasm_speed() {
    if !kvm_available() {
        return;
    }
    let resources = vec![
        Res::code(1, 20, 100, 1, hash_inputs()),
        Res::data(1, 20, 101, 1, 1_000_000),
    ];
    let mut rig = Rig::start(&Options {
        resources: resources.clone(),
        ..Options::default()
    });
    let limits = Limits {
        fuel: 1 << 40,
        memory_bytes: MEMORY,
    };
    let expected = run_over_store(&*rig.store, 1, 100, vec![101], limits).expect("host run");
    let mut guest = Vec::new();
    for _ in 0..12 {
        let (status, tasks) = run_wasm(&mut rig, 1, 20, limits);
        assert_eq!(status, 0, "{}", rig.guest.transcript());
        assert_eq!(tasks[0].result, expected.result, "guest and host disagree");
        guest.push(field_u64(&task_line(&mut rig, 20), "run_ns"));
    }
    let mut host = Vec::new();
    for _ in 0..12 {
        let t = std::time::Instant::now();
        run_over_store(&*rig.store, 1, 100, vec![101], limits).expect("host run");
        host.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    rig.stop();
    guest.sort_unstable();
    host.sort_unstable();
    eprintln!(
        "guest_wasm_speed: fuel={} guest run_ns min={} median={}, host ns min={} median={}",
        expected.fuel_used,
        guest[0],
        guest[guest.len() / 2],
        host[0],
        host[host.len() / 2]
    );
}
