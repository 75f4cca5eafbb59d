//! Wasm tasks on the host: checking a module before it is published, and running a task's
//! module over the store's bytes to compute the result the guest must report.
//!
//! The host checks a Wasm task's result by running the same module with `see-task` as the
//! guest runs: there is no second implementation to drift. [`StoreTaskHost`] is the
//! [`TaskHost`] over a [`ResourceStore`]: the task's inputs are its data resources in the
//! guest's `see.allow` order, and a claim of a resource of another app is refused with the
//! store's app metadata, as the guest's claim API refuses it. [`run_task`] picks a task's
//! module (its one code resource) and runs it; the demo and the daemon use it to check
//! reported results. It lives here, not in `see-task`, which stays `no_std` and store-agnostic.

use std::collections::BTreeMap;

use see_prefetch_backend::store::{ResourceStore, StoreError, StoredResource};
use see_task::{ClaimRefusal, Limits, Outcome, Runtime, TaskError, TaskHost};
use virtio_prefetch_wire::ResourceKind;

/// The fuel of a task whose catalogue entry sets none (the catalogue's default). Fuel counts
/// wasmi's charges, not instructions executed: `tasks/shop.c` (clang -O2) is charged about 340
/// million per MiB of see-workload resource.
pub const DEFAULT_FUEL: u64 = see_pto::metadata::TaskLimits::DEFAULT_FUEL;
/// The memory limit of a task whose catalogue entry sets none (the catalogue's default).
pub const DEFAULT_MEMORY_MIB: u32 = see_pto::metadata::TaskLimits::DEFAULT_MEMORY_MIB;

/// Why a Wasm task could not be run on the host.
#[derive(Debug, thiserror::Error)]
pub enum WasmTaskError {
    /// A resource of the task could not be read from the store.
    #[error("resource {id}: {source}")]
    Store {
        /// The resource.
        id: u64,
        /// Why.
        source: StoreError,
    },
    /// Not exactly one code resource among the task's resources.
    #[error("the task has {count} code resources; a Wasm task has exactly one, its module")]
    ModuleCount {
        /// How many it has.
        count: usize,
    },
    /// A resource of the task belongs to another app.
    #[error("resource {id} belongs to app {owner}, not to app {app} whose task it is")]
    ForeignResource {
        /// The resource.
        id: u64,
        /// Its app.
        owner: u32,
        /// The task's app.
        app: u32,
    },
    /// The module did not compile, or its run failed.
    #[error("module {module}: {source}")]
    Task {
        /// The module's resource id.
        module: u64,
        /// Why.
        source: TaskError,
    },
}

/// A [`TaskHost`] over a store: `app`'s task with `inputs`; claims check the store's app.
#[derive(Debug)]
pub struct StoreTaskHost<'s, S: ResourceStore + ?Sized> {
    store: &'s S,
    app: u32,
    inputs: Vec<u64>,
    claimed: BTreeMap<u64, Vec<u8>>,
}

impl<'s, S: ResourceStore + ?Sized> StoreTaskHost<'s, S> {
    /// A run of `app`'s task whose inputs are `inputs` (data resource ids, in order).
    pub fn new(store: &'s S, app: u32, inputs: Vec<u64>) -> Self {
        Self {
            store,
            app,
            inputs,
            claimed: BTreeMap::new(),
        }
    }
}

impl<S: ResourceStore + ?Sized> TaskHost for StoreTaskHost<'_, S> {
    fn input(&self, index: u32) -> Option<u64> {
        self.inputs.get(usize::try_from(index).ok()?).copied()
    }

    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        if let Some(bytes) = self.claimed.get(&resource) {
            return Ok(bytes.len() as u64);
        }
        let r = self
            .store
            .get(resource, 0)
            .map_err(|_| ClaimRefusal::Unavailable)?;
        if r.app_id != self.app {
            return Err(ClaimRefusal::Denied);
        }
        let len = r.content.len() as u64;
        self.claimed.insert(resource, r.content);
        Ok(len)
    }

    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        let bytes = self
            .claimed
            .get(&resource)
            .ok_or(ClaimRefusal::NotClaimed)?;
        let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

/// A Wasm task's resources, split: its module and its inputs.
#[derive(Debug)]
pub struct WasmTask {
    /// The module (the task's one code resource).
    pub module: StoredResource,
    /// The data resources, in the task's order: `see.input(0)`, `see.input(1)`, ...
    pub inputs: Vec<u64>,
}

/// Splits `app`'s task whose resources are `resources` (in `see.allow` order) into its module
/// and its inputs, from the store's newest versions (what the guest is served).
pub fn split_task<S: ResourceStore + ?Sized>(
    store: &S,
    app: u32,
    resources: &[u64],
) -> Result<WasmTask, WasmTaskError> {
    let mut modules = Vec::new();
    let mut inputs = Vec::new();
    for &id in resources {
        let r = store
            .get(id, 0)
            .map_err(|source| WasmTaskError::Store { id, source })?;
        if r.app_id != app {
            return Err(WasmTaskError::ForeignResource {
                id,
                owner: r.app_id,
                app,
            });
        }
        match r.kind {
            ResourceKind::Code => modules.push(r),
            ResourceKind::Data => inputs.push(id),
        }
    }
    if modules.len() != 1 {
        return Err(WasmTaskError::ModuleCount {
            count: modules.len(),
        });
    }
    let module = modules.pop().expect("exactly one");
    Ok(WasmTask { module, inputs })
}

/// Runs `app`'s Wasm task over the store's bytes: compiles its module and runs it under
/// `limits` with its data resources as inputs. The outcome's result is what the guest must
/// report for the task.
pub fn run_task<S: ResourceStore + ?Sized>(
    runtime: &Runtime,
    store: &S,
    app: u32,
    resources: &[u64],
    limits: Limits,
) -> Result<Outcome, WasmTaskError> {
    let task = split_task(store, app, resources)?;
    let module = task.module.id;
    let failed = |source| WasmTaskError::Task { module, source };
    let compiled = runtime.compile(&task.module.content).map_err(failed)?;
    let mut host = StoreTaskHost::new(store, app, task.inputs);
    runtime.run(&compiled, limits, &mut host).map_err(failed)
}

/// Why a module was refused for publishing.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Not a Wasm binary at all (a text file, a native binary, ...).
    #[error("not a Wasm module: it does not start with the binary magic `\\0asm` and version 1 (build it with `cargo xtask tasks`)")]
    NotWasm,
    /// A Wasm module that does not pass the task interface, or whose memory does not fit.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// The first 8 bytes of a Wasm binary module: the magic and version 1.
const WASM_PREAMBLE: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Checks a module before it is published: the task interface ([`Runtime::check`]: valid
/// Wasm, only the `see.*` imports, `run` and `memory` exported), and that its initial memory
/// fits `memory_bytes`.
pub fn check_module(runtime: &Runtime, wasm: &[u8], memory_bytes: u64) -> Result<(), ModuleError> {
    if !wasm.starts_with(&WASM_PREAMBLE) {
        return Err(ModuleError::NotWasm);
    }
    let compiled = runtime.compile(wasm)?;
    // No fuel: instantiation (which allocates the initial memory) is all that runs.
    let limits = Limits {
        fuel: 0,
        memory_bytes,
    };
    let mut host = NoInputs;
    match runtime.run(&compiled, limits, &mut host) {
        Err(e @ TaskError::MemoryLimit { .. }) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A host with no inputs and nothing to claim.
struct NoInputs;

impl TaskHost for NoInputs {
    fn input(&self, _: u32) -> Option<u64> {
        None
    }
    fn claim(&mut self, _: u64) -> Result<u64, ClaimRefusal> {
        Err(ClaimRefusal::Unavailable)
    }
    fn read(&mut self, _: u64, _: u64, _: &mut [u8]) -> Result<usize, ClaimRefusal> {
        Err(ClaimRefusal::NotClaimed)
    }
}

#[cfg(test)]
mod tests {
    use see_prefetch_backend::store::DiskStore;

    use super::*;

    /// Sums the bytes of every input, after claiming resource 99 if input 0 is 0 (the
    /// claim's code is the result).
    const SUM: &str = r#"(module
      (import "see" "input" (func $input (param i32) (result i64)))
      (import "see" "claim" (func $claim (param i64) (result i64)))
      (import "see" "read" (func $read (param i64 i64 i32 i32) (result i32)))
      (import "see" "result" (func $result (param i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (local $i i32) (local $id i64) (local $n i32) (local $j i32) (local $sum i64)
        (block $done
          (loop $next
            (local.set $id (call $input (local.get $i)))
            (br_if $done (i64.lt_s (local.get $id) (i64.const 0)))
            (if (i64.lt_s (call $claim (local.get $id)) (i64.const 0)) (then (return (i32.const 7))))
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

    const LIMITS: Limits = Limits {
        fuel: 1_000_000,
        memory_bytes: 1 << 20,
    };

    fn store() -> (tempfile::TempDir, DiskStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let wasm = wat::parse_str(SUM).unwrap();
        store.add(1, 1, ResourceKind::Code, 7, &wasm).unwrap();
        store.add(2, 1, ResourceKind::Data, 7, &[1, 2, 3]).unwrap();
        store.add(3, 1, ResourceKind::Data, 7, &[10; 10]).unwrap();
        store.add(4, 1, ResourceKind::Data, 8, &[5]).unwrap();
        store.add(5, 1, ResourceKind::Code, 7, &wasm).unwrap();
        (dir, store)
    }

    #[test]
    fn a_task_runs_its_module_over_its_data_in_order() {
        let (_dir, store) = store();
        let rt = Runtime::new();
        let out = run_task(&rt, &store, 7, &[2, 1, 3], LIMITS).unwrap();
        assert_eq!(out.result, 6 + 100);
        let task = split_task(&store, 7, &[3, 1, 2]).unwrap();
        assert_eq!((task.module.id, task.inputs), (1, vec![3, 2]));
    }

    #[test]
    fn another_apps_resource_is_refused() {
        let (_dir, store) = store();
        let rt = Runtime::new();
        // Listed in the task: refused before the run.
        assert!(matches!(
            run_task(&rt, &store, 7, &[1, 2, 4], LIMITS),
            Err(WasmTaskError::ForeignResource {
                id: 4,
                owner: 8,
                app: 7
            })
        ));
        // Claimed by the module: the claim is denied, and the module fails (its code 7).
        let compiled = rt.compile(&wat::parse_str(SUM).unwrap()).unwrap();
        let mut host = StoreTaskHost::new(&store, 7, vec![2, 4]);
        assert!(matches!(
            rt.run(&compiled, LIMITS, &mut host),
            Err(TaskError::Failed(7))
        ));
        assert_eq!(host.claim(4), Err(ClaimRefusal::Denied));
        assert_eq!(host.claim(404), Err(ClaimRefusal::Unavailable));
        let mut buf = [0u8; 4];
        assert_eq!(host.read(3, 0, &mut buf), Err(ClaimRefusal::NotClaimed));
    }

    #[test]
    fn a_task_needs_exactly_one_module() {
        let (_dir, store) = store();
        let rt = Runtime::new();
        for (resources, count) in [(&[2u64, 3][..], 0), (&[1, 2, 5][..], 2)] {
            assert!(matches!(
                run_task(&rt, &store, 7, resources, LIMITS),
                Err(WasmTaskError::ModuleCount { count: c }) if c == count
            ));
        }
    }

    #[test]
    fn a_module_whose_initial_memory_is_over_the_limit_is_refused() {
        let rt = Runtime::new();
        let wasm = wat::parse_str(SUM.replace(
            "(memory (export \"memory\") 1)",
            "(memory (export \"memory\") 20)",
        ))
        .unwrap();
        assert!(check_module(&rt, &wasm, 20 << 16).is_ok());
        assert!(matches!(
            check_module(&rt, b"\x7fELF\x02\x01\x01", 1 << 20),
            Err(ModuleError::NotWasm)
        ));
        assert!(matches!(
            check_module(&rt, &wasm, 1 << 20),
            Err(ModuleError::Task(TaskError::MemoryLimit { .. }))
        ));
    }
}
