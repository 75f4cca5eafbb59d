//! The engine: compiling a task module once and running it under limits.

use alloc::{boxed::Box, vec::Vec};

use wasmi::{
    Caller, CompilationMode, Config, EnforcedLimits, Engine, ExternType, Linker, Module, Store,
    StoreLimits, StoreLimitsBuilder, TrapCode, ValType,
};

use wasmi::errors::{ErrorKind, InstantiationError, MemoryError};

use crate::{abi, ClaimRefusal, TaskError};

/// The largest module [`Runtime::compile`] accepts (16 MiB).
pub const MAX_MODULE_LEN: usize = 16 << 20;

/// What one run may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The instruction budget (wasmi fuel units; about one per instruction).
    pub fuel: u64,
    /// The most linear memory the instance may have, in bytes.
    pub memory_bytes: u64,
}

/// What the embedder gives a running task: its inputs and the claim API.
pub trait TaskHost {
    /// The task's `index`-th input resource id, if it has that many inputs.
    fn input(&self, index: u32) -> Option<u64>;
    /// Claims `resource` for the task under the claim API's access control: its length.
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal>;
    /// Copies the bytes of a claimed `resource` from `offset` into `dst`: how many were copied
    /// (fewer than `dst.len()` only at the end of the resource).
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal>;
}

/// A run's result and what it cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The word the task set with `see.result`.
    pub result: u64,
    /// Fuel used.
    pub fuel_used: u64,
}

/// A validated, compiled module, ready to instantiate.
#[derive(Clone, Debug)]
pub struct Compiled {
    module: Module,
    len: usize,
}

impl Compiled {
    /// The length of the module it was compiled from.
    pub fn module_len(&self) -> usize {
        self.len
    }
}

/// The Wasm engine, configured for tasks: fuel metering, eager compilation (all the work is done
/// by [`Runtime::compile`], none at the first call) and wasmi's strict structural limits.
#[derive(Clone, Debug)]
pub struct Runtime {
    engine: Engine,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

/// A run's state inside the store.
struct RunState<'h> {
    host: &'h mut dyn TaskHost,
    limits: StoreLimits,
    result: Option<u64>,
    claims: Vec<u64>,
}

impl Runtime {
    /// An engine for tasks.
    pub fn new() -> Self {
        let mut config = Config::default();
        config
            .consume_fuel(true)
            .compilation_mode(CompilationMode::Eager)
            .enforced_limits(EnforcedLimits::strict());
        Self {
            engine: Engine::new(&config),
        }
    }

    /// Checks a module against the task interface without keeping the compiled form: what a
    /// publisher runs before adding a module to the store.
    pub fn check(&self, wasm: &[u8]) -> Result<(), TaskError> {
        self.compile(wasm).map(drop)
    }

    /// Parses, validates and compiles `wasm`, and checks its imports and exports against
    /// [`abi`]: nothing is left to do at the first call but instantiate.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, TaskError> {
        if wasm.len() > MAX_MODULE_LEN {
            return Err(TaskError::TooLarge {
                len: wasm.len(),
                max: MAX_MODULE_LEN,
            });
        }
        let module =
            Module::new(&self.engine, wasm).map_err(|e| TaskError::Invalid(Box::new(e)))?;
        for import in module.imports() {
            let signature = match import.ty() {
                ExternType::Func(f) if import.module() == abi::MODULE => {
                    expected_signature(import.name()).map(|expected| (f, expected))
                }
                _ => None,
            };
            let Some((found, (params, results))) = signature else {
                return Err(TaskError::ForbiddenImport {
                    module: import.module().into(),
                    name: import.name().into(),
                });
            };
            if found.params() != params || found.results() != results {
                return Err(TaskError::WrongSignature {
                    name: import.name().into(),
                });
            }
        }
        check_exports(&module)?;
        Ok(Compiled {
            module,
            len: wasm.len(),
        })
    }

    /// Runs `compiled` in a fresh instance: `run()` under `limits`, with `host` behind the
    /// imports. The instance and its memory are dropped afterwards.
    pub fn run(
        &self,
        compiled: &Compiled,
        limits: Limits,
        host: &mut dyn TaskHost,
    ) -> Result<Outcome, TaskError> {
        let memory_limit = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine,
            RunState {
                host,
                limits: StoreLimitsBuilder::new()
                    .memory_size(memory_limit)
                    .memories(1)
                    .tables(1)
                    .instances(1)
                    .trap_on_grow_failure(true)
                    .build(),
                result: None,
                claims: Vec::new(),
            },
        );
        store.limiter(|state| &mut state.limits);
        store.set_fuel(limits.fuel).expect("the engine meters fuel");
        let classify = |e: wasmi::Error| classify(e, limits);
        let instance = self
            .linker()
            .instantiate_and_start(&mut store, &compiled.module)
            .map_err(classify)?;
        let run = instance
            .get_typed_func::<(), i32>(&store, abi::ENTRY)
            .map_err(|e| TaskError::Interface(Box::new(e)))?;
        let code = run.call(&mut store, ()).map_err(classify)?;
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        if code != 0 {
            return Err(TaskError::Failed(code));
        }
        let result = store.data().result.ok_or(TaskError::NoResult)?;
        Ok(Outcome { result, fuel_used })
    }

    fn linker<'h>(&self) -> Linker<RunState<'h>> {
        let mut linker = Linker::new(&self.engine);
        let defined = linker
            .func_wrap(abi::MODULE, abi::INPUT, input)
            .and_then(|l| l.func_wrap(abi::MODULE, abi::CLAIM, claim))
            .and_then(|l| l.func_wrap(abi::MODULE, abi::READ, read))
            .and_then(|l| l.func_wrap(abi::MODULE, abi::RESULT, set_result));
        defined.expect("four distinct names");
        linker
    }
}

/// Maps an instantiation or call error to what the user is told.
fn classify(e: wasmi::Error, limits: Limits) -> TaskError {
    match e.as_trap_code() {
        Some(TrapCode::OutOfFuel) => TaskError::OutOfFuel { fuel: limits.fuel },
        Some(TrapCode::GrowthOperationLimited) => TaskError::MemoryLimit {
            limit: limits.memory_bytes,
        },
        Some(code) => TaskError::Trap(code),
        None if is_memory_denied(e.kind()) => TaskError::MemoryLimit {
            limit: limits.memory_bytes,
        },
        None => TaskError::Interface(Box::new(e)),
    }
}

/// Whether the limiter refused the module's memory (at instantiation: its initial size).
fn is_memory_denied(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Memory(MemoryError::ResourceLimiterDeniedAllocation)
            | ErrorKind::Instantiation(InstantiationError::FailedToInstantiateMemory(
                MemoryError::ResourceLimiterDeniedAllocation
            ))
    )
}

/// `run: () -> i32` and a memory named `memory` must be exported.
fn check_exports(module: &Module) -> Result<(), TaskError> {
    let mut run = false;
    let mut memory = false;
    for export in module.exports() {
        match (export.name(), export.ty()) {
            (abi::ENTRY, ExternType::Func(f)) => {
                run = f.params().is_empty() && f.results() == [ValType::I32];
            }
            (abi::MEMORY, ExternType::Memory(_)) => memory = true,
            _ => {}
        }
    }
    if run && memory {
        Ok(())
    } else {
        Err(TaskError::Interface(Box::new(wasmi::Error::new(
            "the module must export `run: () -> i32` and `memory`",
        ))))
    }
}

/// The parameter and result types of an allowed import, by name.
fn expected_signature(name: &str) -> Option<(&'static [ValType], &'static [ValType])> {
    use ValType::{I32, I64};
    match name {
        abi::INPUT => Some((&[I32], &[I64])),
        abi::CLAIM => Some((&[I64], &[I64])),
        abi::READ => Some((&[I64, I64, I32, I32], &[I32])),
        abi::RESULT => Some((&[I64], &[])),
        _ => None,
    }
}

fn input(caller: Caller<'_, RunState<'_>>, index: i32) -> i64 {
    u32::try_from(index)
        .ok()
        .and_then(|i| caller.data().host.input(i))
        .and_then(|id| i64::try_from(id).ok())
        .unwrap_or(abi::NO_INPUT)
}

fn claim(mut caller: Caller<'_, RunState<'_>>, resource: i64) -> i64 {
    let state = caller.data_mut();
    let Ok(id) = u64::try_from(resource) else {
        return abi::ERR_DENIED;
    };
    if !state.claims.contains(&id) && state.claims.len() >= abi::MAX_CLAIMS {
        return abi::ERR_TOO_MANY;
    }
    match state.host.claim(id) {
        Ok(len) => {
            if !state.claims.contains(&id) {
                state.claims.push(id);
            }
            i64::try_from(len).unwrap_or(i64::MAX)
        }
        Err(refusal) => refusal.code(),
    }
}

fn read(
    mut caller: Caller<'_, RunState<'_>>,
    resource: i64,
    offset: i64,
    dst: i32,
    len: i32,
) -> i32 {
    let (Ok(id), Ok(offset), Ok(dst), Ok(len)) = (
        u64::try_from(resource),
        u64::try_from(offset),
        usize::try_from(dst),
        usize::try_from(len),
    ) else {
        return abi::ERR_BOUNDS as i32;
    };
    if !caller.data().claims.contains(&id) {
        return abi::ERR_NOT_CLAIMED as i32;
    }
    let Some(memory) = caller.get_export(abi::MEMORY).and_then(|e| e.into_memory()) else {
        return abi::ERR_BOUNDS as i32;
    };
    let (bytes, state) = memory.data_and_store_mut(&mut caller);
    let Some(window) = dst.checked_add(len).and_then(|end| bytes.get_mut(dst..end)) else {
        return abi::ERR_BOUNDS as i32;
    };
    match state.host.read(id, offset, window) {
        // At most `len`, which came from an i32.
        Ok(n) => n as i32,
        Err(refusal) => refusal.code() as i32,
    }
}

fn set_result(mut caller: Caller<'_, RunState<'_>>, word: i64) {
    caller.data_mut().result = Some(word as u64);
}
