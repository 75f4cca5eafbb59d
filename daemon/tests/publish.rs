//! `see-daemon store publish`, run as a process: a module that passes the task interface is
//! added as a code resource; one that does not is refused with the reason and a non-zero
//! exit, and the store is left as it was.

use std::{path::Path, process::Output};

use see_prefetch_backend::store::{DiskStore, ResourceStore};
use virtio_prefetch_wire::ResourceKind;

const GOOD: &str = r#"(module
  (import "see" "input" (func $input (param i32) (result i64)))
  (import "see" "result" (func $result (param i64)))
  (memory (export "memory") 1)
  (func (export "run") (result i32)
    (call $result (call $input (i32.const 0)))
    (i32.const 0)))"#;

fn publish(store: &Path, id: u64, module: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_see-daemon"))
        .args(["store", "publish", "--store"])
        .arg(store)
        .args(["--id", &id.to_string(), "--version", "1", "--app", "3"])
        .args(extra)
        .arg(module)
        .env("RUST_LOG", "warn")
        .output()
        .expect("see-daemon runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_valid_module_is_published_as_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let module = dir.path().join("good.wasm");
    let wasm = wat::parse_str(GOOD).unwrap();
    std::fs::write(&module, &wasm).unwrap();
    let out = publish(
        &store,
        40,
        &module,
        &["--fuel", "5000", "--memory-mib", "2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("resource 40") && said.contains("fuel = 5000"),
        "{said}"
    );
    let stored = DiskStore::open(&store).unwrap().get(40, 0).unwrap();
    assert_eq!(
        (stored.kind, stored.app_id, stored.content),
        (ResourceKind::Code, 3, wasm)
    );
    // The same version again: the store's own rule refuses it.
    let again = publish(&store, 40, &module, &[]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already has version 1"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn the_c_shop_task_is_published() {
    let Some(toolchain) =
        see_task_c::Toolchain::find_or_skip().expect("clang-19 (SEE_REQUIRE_CLANG is set)")
    else {
        eprintln!("SKIPPED: clang-19/lld-19 are not installed (`cargo xtask deps`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wasm = toolchain
        .build("shop", dir.path())
        .expect("tasks/shop.c builds");
    let store = dir.path().join("store");
    let out = publish(&store, 41, &dir.path().join("shop.wasm"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = DiskStore::open(&store).unwrap().get(41, 0).unwrap();
    assert_eq!(stored.content, wasm);
}

fn refused(module_bytes: &[u8], extra: &[&str], reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let module = dir.path().join("task.wasm");
    std::fs::write(&module, module_bytes).unwrap();
    let out = publish(&store, 42, &module, extra);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("task.wasm refused") && err.contains(reason),
        "{err}"
    );
    assert!(
        DiskStore::open(&store).unwrap().get(42, 0).is_err(),
        "nothing stored"
    );
}

#[test]
fn a_module_importing_an_unknown_function_is_refused_with_its_name() {
    let wasm = wat::parse_str(GOOD.replace(
        r#"(import "see" "result""#,
        r#"(import "env" "system" (func (param i32)))
  (import "see" "result""#,
    ))
    .unwrap();
    refused(&wasm, &[], "imports `env.system`, which is not allowed");
    let renamed = wat::parse_str(GOOD.replace(r#""see" "input""#, r#""see" "spawn""#)).unwrap();
    refused(&renamed, &[], "`see.spawn`");
}

#[test]
fn a_malformed_module_is_refused_clearly() {
    refused(b"#!/bin/sh\necho hello\n", &[], "not a Wasm module");
    let mut truncated = wat::parse_str(GOOD).unwrap();
    truncated.truncate(truncated.len() - 5);
    refused(&truncated, &[], "not valid Wasm");
    let no_run = wat::parse_str(GOOD.replace(r#"(export "run")"#, "")).unwrap();
    refused(&no_run, &[], "must export `run: () -> i32` and `memory`");
}

#[test]
fn a_module_larger_than_its_memory_limit_is_refused() {
    let big = wat::parse_str(GOOD.replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 64)"#,
    ))
    .unwrap();
    refused(&big, &["--memory-mib", "2"], "more memory than its limit");
}
