//! Why a module did not compile or a run did not produce a result.

use alloc::boxed::Box;

/// Why a task module was refused or its run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The module is longer than [`crate::MAX_MODULE_LEN`].
    #[error("task module is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid Wasm module, or over the engine's structural limits.
    #[error("task module is not valid Wasm: {0}")]
    Invalid(#[source] Box<wasmi::Error>),
    /// An import other than the four of [`crate::abi`].
    #[error("task module imports `{module}.{name}`, which is not allowed (allowed: see.input, see.claim, see.read, see.result)")]
    ForbiddenImport {
        /// The import's module.
        module: Box<str>,
        /// The import's name.
        name: Box<str>,
    },
    /// An allowed import with another signature than [`crate::abi`] gives it.
    #[error("task module imports `see.{name}` with the wrong signature (see the task ABI)")]
    WrongSignature {
        /// The import's name.
        name: Box<str>,
    },
    /// A missing or mistyped `run`/`memory` export, or an instantiation the interface forbids.
    #[error("task module does not match the task interface: {0}")]
    Interface(#[source] Box<wasmi::Error>),
    /// The module's initial memory is larger than the run's limit.
    #[error("task module asks for more memory than its limit of {limit} bytes")]
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The run used up its fuel.
    #[error("task ran out of fuel (budget {fuel} instructions)")]
    OutOfFuel {
        /// The budget it had.
        fuel: u64,
    },
    /// The run trapped (or grew its memory past the limit).
    #[error("task trapped: {0}")]
    Trap(wasmi::TrapCode),
    /// `run` returned a non-zero code: the task itself reports a failure.
    #[error("task failed with code {0}")]
    Failed(i32),
    /// `run` returned 0 without calling `see.result`.
    #[error("task finished without setting a result")]
    NoResult,
}

/// Why an embedder refused a claim or a read ([`crate::TaskHost`]); the module sees the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefusal {
    /// The resource is not the task's app's.
    #[error("access denied")]
    Denied,
    /// The resource could not be had.
    #[error("resource unavailable")]
    Unavailable,
    /// Read of a resource not claimed first.
    #[error("resource not claimed")]
    NotClaimed,
}

impl ClaimRefusal {
    /// The negative code the module sees.
    pub fn code(self) -> i64 {
        match self {
            Self::Denied => crate::abi::ERR_DENIED,
            Self::Unavailable => crate::abi::ERR_UNAVAILABLE,
            Self::NotClaimed => crate::abi::ERR_NOT_CLAIMED,
        }
    }
}
