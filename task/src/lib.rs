//! Wasm tasks: code a task runs, shipped as a signed resource and run under limits.
//!
//! A task module is compiled once ([`Runtime::compile`]: parse, validate, translate) and run
//! many times ([`Runtime::run`]), each run in a fresh instance with its own fuel (an instruction
//! budget) and memory limit ([`Limits`]). The guest compiles a module as soon as its bundle is
//! verified, before a request asks for it; the host runs the same module over the store's bytes
//! to check the result the guest reports.
//!
//! The module's interface ([`abi`]) is small on purpose: it may import only the four functions
//! of module `see` (the task's inputs, claim one, read a claimed one, set the result) and must
//! export `run: () -> i32` and its memory. A module importing anything else does not compile.
//! Claims go through the embedder's [`TaskHost`], which applies the same access control as the
//! claim API: a task claims only its own app's resources.
//!
//! `no_std` + `alloc`, so the same code runs in the guest kernel (ring 3) and on the host.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod abi;
mod error;
mod runtime;

pub use error::{ClaimRefusal, TaskError};
pub use runtime::{Compiled, Limits, Outcome, Runtime, TaskHost, MAX_MODULE_LEN};
