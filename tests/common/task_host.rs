//! The host's side of a Wasm task: a [`TaskHost`] over a resource store, so a test (or the
//! PTO) computes the result a task must report by running the same module with see-task over
//! the store's bytes. Its claim rule is the guest's: a task claims only its own app's
//! resources (another app's are refused as [`ClaimRefusal::Denied`]).

use std::collections::BTreeMap;

use see_prefetch_backend::store::ResourceStore;
use see_task::{ClaimRefusal, Limits, Outcome, Runtime, TaskError, TaskHost};

/// A task's view of a store: its app, its inputs (data resource ids, in `see.allow` order)
/// and what it claimed (the newest version of each).
pub struct StoreTaskHost<'s> {
    store: &'s dyn ResourceStore,
    app: u32,
    inputs: Vec<u64>,
    claimed: BTreeMap<u64, Vec<u8>>,
}

impl<'s> StoreTaskHost<'s> {
    /// App `app`'s task with `inputs`, over `store`.
    pub fn new(store: &'s dyn ResourceStore, app: u32, inputs: Vec<u64>) -> Self {
        Self {
            store,
            app,
            inputs,
            claimed: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for StoreTaskHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTaskHost")
            .field("app", &self.app)
            .field("inputs", &self.inputs)
            .field("claimed", &self.claimed.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TaskHost for StoreTaskHost<'_> {
    fn input(&self, index: u32) -> Option<u64> {
        self.inputs.get(usize::try_from(index).ok()?).copied()
    }

    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
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
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = dst.len().min(bytes.len() - start);
        dst[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

/// Runs `module` (the store's newest version) as app `app`'s task over `inputs`, under
/// `limits`: what the guest must report for the same task.
pub fn run_over_store(
    store: &dyn ResourceStore,
    app: u32,
    module: u64,
    inputs: Vec<u64>,
    limits: Limits,
) -> Result<Outcome, TaskError> {
    let wasm = store
        .get(module, 0)
        .unwrap_or_else(|e| panic!("module {module} is not in the store: {e}"))
        .content;
    let runtime = Runtime::new();
    let compiled = runtime.compile(&wasm)?;
    runtime.run(
        &compiled,
        limits,
        &mut StoreTaskHost::new(store, app, inputs),
    )
}
