//! Any bytes as a task module (`see-task`): validate and compile must refuse or accept without
//! panicking, and a module that compiles must run under a small fuel budget and memory limit
//! against a host with two inputs (one of them another app's) and end in a result or a
//! `TaskError`, never a panic or a run past its budget.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use see_task::{ClaimRefusal, Limits, Runtime, TaskError, TaskHost};

/// Inputs 5 (the task's app's, 300 bytes) and 6 (another app's).
struct Host;

const OWN: [u8; 300] = [0x5a; 300];

impl TaskHost for Host {
    fn input(&self, index: u32) -> Option<u64> {
        [5, 6].get(index as usize).copied()
    }
    fn claim(&mut self, resource: u64) -> Result<u64, ClaimRefusal> {
        match resource {
            5 => Ok(OWN.len() as u64),
            6 => Err(ClaimRefusal::Denied),
            _ => Err(ClaimRefusal::Unavailable),
        }
    }
    fn read(&mut self, resource: u64, offset: u64, dst: &mut [u8]) -> Result<usize, ClaimRefusal> {
        if resource != 5 {
            return Err(ClaimRefusal::NotClaimed);
        }
        let start = usize::try_from(offset).map_or(OWN.len(), |o| o.min(OWN.len()));
        let n = dst.len().min(OWN.len() - start);
        dst[..n].copy_from_slice(&OWN[start..start + n]);
        Ok(n)
    }
}

const LIMITS: Limits = Limits {
    fuel: 20_000,
    memory_bytes: 4 << 20,
};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(Runtime::new)
}

fuzz_target!(|data: &[u8]| {
    let runtime = runtime();
    let Ok(compiled) = runtime.compile(data) else {
        return;
    };
    assert_eq!(compiled.module_len(), data.len());
    assert!(runtime.check(data).is_ok(), "check agrees with compile");
    match runtime.run(&compiled, LIMITS, &mut Host) {
        Ok(outcome) => assert!(outcome.fuel_used <= LIMITS.fuel),
        Err(TaskError::OutOfFuel { fuel }) => assert_eq!(fuel, LIMITS.fuel),
        Err(_) => {}
    }
});
