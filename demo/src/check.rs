//! The guest's work, checked: every task of every request reports a result (a fold of what its
//! work computed on each resource, `see_workload::TaskResult`; for a Wasm task, what its module
//! set), and the host computes the result the task must report from the store's bytes (the
//! same `see_workload` code, once per resource; for a Wasm task, the same module run with the
//! same engine, `see_task`, over the store) and compares. A task whose result differs worked on other bytes, or did other
//! work; one whose entry is missing from its completion did not report.

use std::{collections::HashMap, fmt, sync::Mutex};

use see_daemon::wasm_task::StoreTaskHost;
use see_prefetch_backend::store::{DiskStore, ResourceStore};
use see_pto::metadata::{ServiceCatalogue, TaskLimits};
use see_workload::{resource_word, TaskResult};
use virtio_prefetch_wire::ResourceKind;

use crate::DemoError;

/// The results tasks must report, computed from the store's bytes (cached per resource).
#[derive(Debug)]
pub struct Expected {
    store: DiskStore,
    /// (app, task, resource) in the guest's `see.allow` order: a task's resources, in order.
    allow: Vec<(u32, u64, u64)>,
    words: Mutex<HashMap<u64, u64>>,
    /// Wasm tasks: each task's limits (by wire id), the engine, and results by (app, task).
    wasm: Option<WasmTasks>,
}

#[derive(Debug)]
struct WasmTasks {
    limits: HashMap<u64, TaskLimits>,
    runtime: see_task::Runtime,
    results: Mutex<HashMap<(u32, u64), u64>>,
}

impl Expected {
    /// Results from `store`'s newest versions (what the guest is served), for the tasks of
    /// `allow` (the guest's registry, in its order).
    pub fn new(store: DiskStore, allow: Vec<(u32, u64, u64)>) -> Self {
        Self {
            store,
            allow,
            words: Mutex::new(HashMap::new()),
            wasm: None,
        }
    }

    /// The tasks of `cat` run as Wasm modules: a task's result is what its code resource's
    /// module sets, run over its data resources under the task's limits.
    pub fn with_wasm_tasks(mut self, cat: &ServiceCatalogue) -> Self {
        let limits = cat
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (see_pto::online::WireIds::task(i), t.limits))
            .collect();
        self.wasm = Some(WasmTasks {
            limits,
            runtime: see_task::Runtime::new(),
            results: Mutex::new(HashMap::new()),
        });
        self
    }

    /// What `app`'s Wasm task `task` must report: its module run over the store.
    fn wasm_task(&self, wasm: &WasmTasks, app: u32, task: u64) -> Result<u64, DemoError> {
        let key = (app, task);
        if let Some(&r) = wasm
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(r);
        }
        let fail =
            |what: String| DemoError::Io(format!("checking task {task} of app {app}: {what}"));
        let (mut module, mut inputs) = (None, Vec::new());
        for &(a, t, r) in &self.allow {
            if a != app || t != task {
                continue;
            }
            let stored = self.store.get(r, 0).map_err(|e| fail(e.to_string()))?;
            match stored.kind {
                ResourceKind::Code => module = Some(stored.content),
                ResourceKind::Data => inputs.push(r),
            }
        }
        let module = module.ok_or_else(|| fail("no code resource".into()))?;
        let compiled = wasm
            .runtime
            .compile(&module)
            .map_err(|e| fail(e.to_string()))?;
        let limits = wasm.limits.get(&task).copied().unwrap_or_default();
        let mut host = StoreTaskHost::new(&self.store, app, inputs);
        let limits = see_task::Limits {
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes(),
        };
        let outcome = wasm
            .runtime
            .run(&compiled, limits, &mut host)
            .map_err(|e| fail(e.to_string()))?;
        wasm.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, outcome.result);
        Ok(outcome.result)
    }

    /// The word resource `id` adds to a task's result.
    fn word(&self, id: u64) -> Result<u64, DemoError> {
        let mut words = self.words.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&w) = words.get(&id) {
            return Ok(w);
        }
        let r = self
            .store
            .get(id, 0)
            .map_err(|e| DemoError::Io(format!("checking results: resource {id}: {e}")))?;
        let w = resource_word(&r.content, &r.sha384).map_err(|e| {
            DemoError::Io(format!(
                "checking results: resource {id} in the store does not process: {e}"
            ))
        })?;
        words.insert(id, w);
        Ok(w)
    }

    /// The result `task` must report when `app` runs it.
    pub fn task(&self, app: u32, task: u64) -> Result<u64, DemoError> {
        if let Some(wasm) = &self.wasm {
            return self.wasm_task(wasm, app, task);
        }
        let mut result = TaskResult::new();
        for &(a, t, r) in &self.allow {
            if a == app && t == task {
                result.add(self.word(r)?);
            }
        }
        Ok(result.value())
    }
}

/// One task whose report is not what the host computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrong {
    /// The request.
    pub request_id: u64,
    /// The task dispatched (or, for an entry beyond them, the one reported).
    pub task_id: u64,
    /// What the guest reported: (task id, result); None when the entry is missing.
    pub reported: Option<(u64, u64)>,
    /// What the host computed; None for an entry of no dispatched task.
    pub expected: Option<u64>,
}

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {} task {}: ", self.request_id, self.task_id)?;
        match (self.reported, self.expected) {
            (None, _) => write!(f, "no result reported"),
            (Some((t, r)), None) => write!(f, "task {t} reported ({r:#018x}) but not dispatched"),
            (Some((t, _)), Some(_)) if t != self.task_id => {
                write!(f, "the entry is task {t}'s")
            }
            (Some((_, r)), Some(e)) => write!(f, "reported result {r:#018x}, expected {e:#018x}"),
        }
    }
}

/// One mode's checked results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tasks dispatched in completed requests.
    pub dispatched: u64,
    /// Tasks whose reported result was compared with the host's.
    pub checked: u64,
    /// Tasks whose result differed, or whose entry was missing or out of place.
    pub wrong: u64,
}

impl Tally {
    /// Checks a completion of request `request_id` (dispatched to `app` with `tasks`) whose
    /// task entries are `reported`, (task id, result) in order; counts and returns the wrong
    /// ones.
    pub fn check(
        &mut self,
        expected: &Expected,
        request_id: u64,
        app: u32,
        tasks: &[u64],
        reported: &[(u64, u64)],
    ) -> Result<Vec<Wrong>, DemoError> {
        let mut wrong = Vec::new();
        self.dispatched += tasks.len() as u64;
        for (i, &task) in tasks.iter().enumerate() {
            let want = expected.task(app, task)?;
            let got = reported.get(i).copied();
            if let Some((t, r)) = got {
                if t == task {
                    self.checked += 1;
                    if r == want {
                        continue;
                    }
                }
            }
            wrong.push(Wrong {
                request_id,
                task_id: task,
                reported: got,
                expected: Some(want),
            });
        }
        for &(t, r) in reported.iter().skip(tasks.len()) {
            wrong.push(Wrong {
                request_id,
                task_id: t,
                reported: Some((t, r)),
                expected: None,
            });
        }
        self.wrong += wrong.len() as u64;
        Ok(wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use see_workload::{generate, Kind, Spec};
    use sha2::{Digest, Sha384};
    use virtio_prefetch_wire::ResourceKind;

    /// A store with a workload resource (1) and a plain one (2); task 10 uses both, task 11
    /// only the plain one, both for app 1.
    fn setup() -> (tempfile::TempDir, Expected, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let workload = generate(&Spec {
            resource_id: 1,
            version: 1,
            size: 8192,
            kind: Kind::Data,
        })
        .unwrap();
        let plain = b"plain bytes".to_vec();
        store.add(1, 1, ResourceKind::Data, 1, &workload).unwrap();
        store.add(2, 1, ResourceKind::Code, 1, &plain).unwrap();
        let allow = vec![(1, 10, 1), (1, 10, 2), (1, 11, 2)];
        (dir, Expected::new(store, allow), workload, plain)
    }

    fn fold(words: &[u64]) -> u64 {
        let mut r = TaskResult::new();
        for &w in words {
            r.add(w);
        }
        r.value()
    }

    /// A task module that adds the lengths of its inputs.
    const INPUT_LENGTHS: &str = r#"(module
      (import "see" "input" (func $input (param i32) (result i64)))
      (import "see" "claim" (func $claim (param i64) (result i64)))
      (import "see" "result" (func $result (param i64)))
      (memory (export "memory") 1)
      (func (export "run") (result i32)
        (local $i i32) (local $id i64) (local $sum i64)
        (block $done (loop $next
          (local.set $id (call $input (local.get $i)))
          (br_if $done (i64.lt_s (local.get $id) (i64.const 0)))
          (local.set $sum (i64.add (local.get $sum) (call $claim (local.get $id))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
        (call $result (local.get $sum))
        (i32.const 0)))"#;

    #[test]
    fn a_wasm_tasks_expected_result_is_its_module_run_over_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let module = wat::parse_str(INPUT_LENGTHS).unwrap();
        store.add(1, 1, ResourceKind::Code, 1, &module).unwrap();
        store.add(2, 1, ResourceKind::Data, 1, &[0; 300]).unwrap();
        store.add(3, 1, ResourceKind::Data, 1, &[0; 45]).unwrap();
        store.add(4, 1, ResourceKind::Data, 2, &[0; 7]).unwrap();
        // Task 1 reads both of its inputs; task 2's input belongs to app 2, so its claim is
        // refused and the module adds the refusal code (-1) instead.
        let allow = vec![(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 2, 1), (1, 2, 4)];
        let cat = see_pto::metadata::ServiceCatalogue::default_catalogue();
        let expected = Expected::new(store, allow).with_wasm_tasks(&cat);
        assert_eq!(expected.task(1, 1).unwrap(), 345);
        assert_eq!(expected.task(1, 2).unwrap(), u64::MAX);
        let mut tally = Tally::default();
        let wrong = tally
            .check(&expected, 5, 1, &[1, 2], &[(1, 345), (2, 7)])
            .unwrap();
        assert_eq!(wrong.len(), 1);
        assert_eq!(wrong[0].task_id, 2);
    }

    #[test]
    fn expected_results_fold_the_tasks_resources_in_order() {
        let (_dir, expected, workload, plain) = setup();
        let w1 = see_workload::process(&workload).unwrap().digest;
        let sha: [u8; 48] = Sha384::digest(&plain).into();
        let w2 = u64::from_le_bytes(sha[..8].try_into().unwrap());
        assert_eq!(expected.task(1, 10).unwrap(), fold(&[w1, w2]));
        assert_eq!(expected.task(1, 11).unwrap(), fold(&[w2]));
        assert_eq!(
            expected.task(2, 10).unwrap(),
            fold(&[]),
            "another app's task"
        );
    }

    #[test]
    fn right_results_pass_and_a_wrong_one_is_detected() {
        let (_dir, expected, ..) = setup();
        let (a, b) = (expected.task(1, 10).unwrap(), expected.task(1, 11).unwrap());
        let mut tally = Tally::default();
        let ok = tally
            .check(&expected, 5, 1, &[10, 11], &[(10, a), (11, b)])
            .unwrap();
        assert!(ok.is_empty(), "{ok:?}");
        let bad = tally
            .check(&expected, 6, 1, &[10, 11], &[(10, a), (11, b ^ 1)])
            .unwrap();
        assert_eq!(
            bad,
            vec![Wrong {
                request_id: 6,
                task_id: 11,
                reported: Some((11, b ^ 1)),
                expected: Some(b),
            }]
        );
        assert!(
            bad[0].to_string().contains("request 6 task 11"),
            "{}",
            bad[0]
        );
        assert_eq!(
            tally,
            Tally {
                dispatched: 4,
                checked: 4,
                wrong: 1
            }
        );
    }

    #[test]
    fn missing_misplaced_and_extra_entries_are_wrong() {
        let (_dir, expected, ..) = setup();
        let (a, b) = (expected.task(1, 10).unwrap(), expected.task(1, 11).unwrap());
        let mut tally = Tally::default();
        let missing = tally.check(&expected, 1, 1, &[10, 11], &[(10, a)]).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!((missing[0].task_id, missing[0].reported), (11, None));
        let swapped = tally
            .check(&expected, 2, 1, &[10, 11], &[(11, b), (10, a)])
            .unwrap();
        assert_eq!(swapped.len(), 2, "entries out of order: {swapped:?}");
        let extra = tally
            .check(&expected, 3, 1, &[10], &[(10, a), (11, b)])
            .unwrap();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].expected, None);
        assert_eq!(
            tally,
            Tally {
                dispatched: 5,
                checked: 2,
                wrong: 4
            }
        );
    }

    #[test]
    fn a_store_resource_that_does_not_process_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let mut bad = generate(&Spec {
            resource_id: 3,
            version: 1,
            size: 4096,
            kind: Kind::Code,
        })
        .unwrap();
        bad[100] ^= 0xFF;
        store.add(3, 1, ResourceKind::Code, 1, &bad).unwrap();
        let expected = Expected::new(store, vec![(1, 7, 3)]);
        let e = expected.task(1, 7).unwrap_err();
        assert!(e.to_string().contains("resource 3"), "{e}");
        let e = Expected::new(DiskStore::open(dir.path()).unwrap(), vec![(1, 7, 99)])
            .task(1, 7)
            .unwrap_err();
        assert!(e.to_string().contains("resource 99"), "{e}");
    }
}
