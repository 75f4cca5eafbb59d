//! The interface between a task module and the SEE: import and export names, and the codes the
//! host functions return. `tasks/include/see_task.h` is the C side of the same contract.
//!
//! | import `see.*` | signature | meaning |
//! | --- | --- | --- |
//! | `input` | `(i32) -> i64` | the task's i-th input resource id, or [`NO_INPUT`] past the last |
//! | `claim` | `(i64) -> i64` | claims a resource of the task's app: its length, or a negative code |
//! | `read` | `(i64, i64, i32, i32) -> i32` | copies bytes of a claimed resource (id, offset, destination, length) into memory: the count, or a negative code |
//! | `result` | `(i64) -> ()` | sets the task's 64-bit result |
//!
//! The module exports `run: () -> i32` (0: success; anything else: the task failed, with that
//! code) and `memory`.

/// The import module every host function lives in.
pub const MODULE: &str = "see";
/// `input(index: i32) -> i64`.
pub const INPUT: &str = "input";
/// `claim(resource: i64) -> i64`.
pub const CLAIM: &str = "claim";
/// `read(resource: i64, offset: i64, dst: i32, len: i32) -> i32`.
pub const READ: &str = "read";
/// `result(word: i64)`.
pub const RESULT: &str = "result";
/// The imports a module may have, all in [`MODULE`].
pub const ALLOWED_IMPORTS: [&str; 4] = [INPUT, CLAIM, READ, RESULT];
/// The entry point: `run() -> i32`.
pub const ENTRY: &str = "run";
/// The exported memory `read` writes into.
pub const MEMORY: &str = "memory";

/// `input`: no input at that index.
pub const NO_INPUT: i64 = -1;
/// `claim`/`read`: the resource is not the task's app's (access control).
pub const ERR_DENIED: i64 = -1;
/// `claim`/`read`: the resource could not be had (not published, fetch failed, bad signature).
pub const ERR_UNAVAILABLE: i64 = -2;
/// `read`: the resource was not claimed first.
pub const ERR_NOT_CLAIMED: i64 = -3;
/// `claim`: the task already holds [`MAX_CLAIMS`] resources.
pub const ERR_TOO_MANY: i64 = -4;
/// `read`: the destination is outside the module's memory, or the offset past the end.
pub const ERR_BOUNDS: i64 = -5;
/// How many resources one run may claim.
pub const MAX_CLAIMS: usize = 64;
