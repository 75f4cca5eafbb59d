//! What the daemon tells the SEE and what it must hold for it: the guest's command line (the
//! app registry `see.allow` and the store budget), the serve app's request arguments, what a
//! completion status means, and the store filled with the catalogue's resources.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use see_abi::serve::WasmTask;
use see_prefetch_backend::store::{DiskStore, ResourceStore, StoreError};
use see_pto::{metadata::ServiceCatalogue, online::WireIds};
use virtio_prefetch_wire::ResourceKind;

use crate::tasks::TaskModule;

pub use see_abi::serve::{status_reason, STATUS_WORK_FAILED};

/// The arguments of a request that runs `tasks` (wire ids).
pub fn run_args(tasks: &[u64]) -> Vec<u8> {
    see_abi::serve::encode_args(see_abi::serve::OP_RUN, tasks)
}

/// The arguments of a request that runs `tasks` (wire ids) as Wasm tasks: per task, its wire
/// id, fuel and memory limit in bytes (from the catalogue).
pub fn run_wasm_args(cat: &ServiceCatalogue, tasks: &[u64]) -> Vec<u8> {
    let tasks: Vec<WasmTask> = tasks
        .iter()
        .map(|&task_id| {
            let limits = task_id
                .checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| cat.tasks.get(i))
                .map(|t| t.limits)
                .unwrap_or_default();
            WasmTask {
                task_id,
                fuel: limits.fuel,
                memory_limit_bytes: limits.memory_bytes(),
            }
        })
        .collect();
    see_abi::serve::encode_wasm_tasks(&tasks)
}

/// The arguments of the request that stops the guest.
pub fn stop_args() -> Vec<u8> {
    see_abi::serve::encode_args(see_abi::serve::OP_STOP, &[])
}

/// The app registry: (app, task, resource) wire ids, every task's resources in claim order.
pub fn allow_entries(cat: &ServiceCatalogue) -> Vec<(u32, u64, u64)> {
    let ids = WireIds::new(cat);
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for r in &cat.requests {
        let app = ids.app_of(&r.name).unwrap_or(1);
        for &t in &r.tasks {
            for &res in &cat.tasks[t].resources {
                let e = (app, WireIds::task(t), WireIds::resource(res));
                if seen.insert(e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

/// The guest's command line for `config` serving `cat`: [`cmdline`] with the store sized to
/// the budget, and for the naive baseline (`reactive-nocache`) a guest without its cache that
/// demands one resource at a time (`see.cache=0 see.max_demands=1`).
pub fn cmdline_for(cat: &ServiceCatalogue, config: &crate::Config) -> String {
    let mut line = cmdline(cat, config.budget, config.guest_idle_ms);
    if config.predictor.naive() {
        line.push_str(&format!(
            " {}=0 {}=1",
            see_abi::cmdline::CACHE,
            see_abi::cmdline::MAX_DEMANDS
        ));
    }
    line
}

/// The guest's command line for serving `cat` with a store of `budget` bytes; the guest ends
/// after `idle_ms` without a request.
pub fn cmdline(cat: &ServiceCatalogue, budget: u64, idle_ms: u64) -> String {
    let allow: Vec<String> = allow_entries(cat)
        .iter()
        .map(|(a, t, r)| format!("{a}:{t}:{r}"))
        .collect();
    format!(
        "see.selftest=0 see.app=serve see.quiet=1 see.idle_ms={idle_ms} see.store_kib={} see.allow={}",
        budget.div_ceil(1024).clamp(64, 1 << 20),
        allow.join(",")
    )
}

/// Request type name -> the name of the app that serves it.
pub fn request_apps(cat: &ServiceCatalogue) -> HashMap<String, String> {
    cat.requests
        .iter()
        .map(|r| (r.name.clone(), r.app.clone()))
        .collect()
}

/// Adds every resource of `cat` that `store` lacks at the catalogue's version (generated from
/// the catalogue's origin, owned by the one app whose tasks use it; with a task `module`,
/// each code resource holds the module, [`crate::tasks`]); returns how many were added and
/// the bytes of all the catalogue's resources. A resource the store holds at that version
/// with other content (made for the other kind of task) is an error: the store cannot take a
/// second content for a version.
pub fn fill_store(
    cat: &ServiceCatalogue,
    store: &DiskStore,
    module: Option<&TaskModule>,
) -> Result<(u64, u64), FillError> {
    let mut users: HashMap<u64, Vec<u32>> = HashMap::new();
    for (app, _, res) in allow_entries(cat) {
        users.entry(res).or_default().push(app);
    }
    let (mut added, mut total) = (0, 0);
    for (i, r) in cat.resources.iter().enumerate() {
        let id = WireIds::resource(i);
        let mut apps = users.get(&id).into_iter().flatten().copied();
        let Some(app) = apps.next() else {
            continue; // no task uses it
        };
        if apps.any(|a| a != app) {
            log::warn!(
                "resource {} is used by several apps; only app {app} may claim it",
                r.id
            );
        }
        total += r.size;
        let wasm = module.filter(|_| r.kind == ResourceKind::Code);
        if let Ok(stored) = store.get_version(id, r.version) {
            let fits = match wasm {
                Some(m) => stored.content == m.content(r.size),
                None => {
                    stored.content.len() as u64 == r.size
                        && !(r.kind == ResourceKind::Code && stored.content.starts_with(b"\0asm"))
                }
            };
            if fits {
                continue;
            }
            return Err(FillError::OtherContent {
                resource: r.id.clone(),
                version: r.version,
            });
        }
        let content = match wasm {
            Some(m) => m.content(r.size),
            None => cat.content(r).map_err(|source| FillError::Content {
                resource: r.id.clone(),
                source,
            })?,
        };
        store
            .add(id, r.version, r.kind, app, &content)
            .map_err(|source| FillError::Store {
                resource: r.id.clone(),
                source,
            })?;
        added += 1;
    }
    Ok((added, total))
}

/// Opens (creating) the store at `dir` and fills it from `cat` (code resources holding
/// `module` when there is one).
pub fn open_filled(
    cat: &ServiceCatalogue,
    dir: &Path,
    module: Option<&TaskModule>,
) -> Result<DiskStore, FillError> {
    let store = DiskStore::open(dir).map_err(|source| FillError::Store {
        resource: dir.display().to_string(),
        source,
    })?;
    let (added, total) = fill_store(cat, &store, module)?;
    if added > 0 {
        log::info!(
            "store {}: added {added} resources of the catalogue {} ({:.1} MiB in all)",
            dir.display(),
            cat.name,
            total as f64 / 1048576.0
        );
    }
    Ok(store)
}

/// Why the store could not be filled.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// A resource's content cannot be made.
    #[error("resource {resource}: cannot make its content: {source}")]
    Content {
        /// The resource.
        resource: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store holds the resource at this version with other content.
    #[error(
        "store: resource {resource} version {version} holds other content (made for the other \
         kind of task: Wasm or native); use another --store, or remove this one"
    )]
    OtherContent {
        /// The resource.
        resource: String,
        /// Its version.
        version: u64,
    },
    /// The store refused it.
    #[error("store: {resource}: {source}")]
    Store {
        /// The resource (or the store's directory).
        resource: String,
        /// Why.
        source: StoreError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_covers_every_task_resource_once_in_order() {
        let cat = ServiceCatalogue::default_catalogue();
        let allow = allow_entries(&cat);
        for r in &cat.requests {
            for &t in &r.tasks {
                let want: Vec<u64> = cat.tasks[t]
                    .resources
                    .iter()
                    .map(|&i| i as u64 + 1)
                    .collect();
                let got: Vec<u64> = allow
                    .iter()
                    .filter(|e| e.1 == t as u64 + 1)
                    .map(|e| e.2)
                    .collect();
                assert_eq!(got, want, "task {}", cat.tasks[t].id);
            }
        }
        let line = cmdline(&cat, 3 << 20, 1000);
        assert!(
            line.contains("see.app=serve")
                && line.contains("see.store_kib=3072 ")
                && line.contains("see.idle_ms=1000 ")
                && line.len() < 4000,
            "{}",
            line.len()
        );
    }

    #[test]
    fn the_function_platform_s_registry_fits_the_command_line() {
        // The synthetic function platform at its default size (40 apps x 6 functions, 320
        // resources): one registry entry per (app, task, resource), the whole line well
        // within the guest's bound, and the line grows linearly with the apps.
        let line = |apps| {
            let spec = see_pto::faas::FaasSpec {
                apps,
                ..see_pto::faas::FaasSpec::default()
            };
            let cat = spec.catalogue().unwrap();
            assert_eq!(allow_entries(&cat).len(), apps * 8);
            let config = crate::Config {
                predictor: crate::PredictorKind::ReactiveNocache,
                ..crate::Config::default()
            };
            cmdline_for(&cat, &config)
        };
        let default = line(40);
        log::info!("faas command line: {} bytes", default.len());
        assert!(
            (3000..4000).contains(&default.len()),
            "{}: {default}",
            default.len()
        );
        let wide = line(400);
        assert!(
            wide.len() < see_abi::bootinfo::MAX_CMDLINE - 256,
            "400 apps: {} bytes",
            wide.len()
        );
        let parsed = see_abi::cmdline::Cmdline::new(&wide);
        let allow = parsed.get(see_abi::cmdline::ALLOW).unwrap_or("");
        assert_eq!(allow.split(',').count(), 400 * 8);
        // Its Wasm shape (a module per function besides the data) at the default size.
        let cat = see_pto::faas::FaasSpec::default().wasm_catalogue().unwrap();
        assert_eq!(allow_entries(&cat).len(), 40 * 14);
        let wasm = cmdline_for(&cat, &crate::Config::default());
        assert!(
            wasm.len() < see_abi::bootinfo::MAX_CMDLINE / 4,
            "{} bytes",
            wasm.len()
        );
    }

    #[test]
    fn only_the_naive_baseline_turns_the_guest_cache_off() {
        let cat = ServiceCatalogue::default_catalogue();
        for kind in crate::PredictorKind::ALL {
            let config = crate::Config {
                predictor: kind,
                ..crate::Config::default()
            };
            let line = cmdline_for(&cat, &config);
            let naive = line.ends_with(" see.cache=0 see.max_demands=1");
            assert_eq!(
                naive,
                kind == crate::PredictorKind::ReactiveNocache,
                "{kind}"
            );
            assert!(line.starts_with(&cmdline(&cat, config.budget, config.guest_idle_ms)));
            // Every key is one the guest kernel knows.
            assert_eq!(
                see_abi::cmdline::Cmdline::new(&line).unknown_keys().count(),
                0,
                "{line}"
            );
        }
    }

    #[test]
    fn args_encode_the_op_and_the_words() {
        let a = run_args(&[3, 1 << 40]);
        assert_eq!(&a[..4], &1u32.to_le_bytes());
        assert_eq!(&a[4..8], &[0; 4]);
        assert_eq!(&a[8..16], &3u64.to_le_bytes());
        assert_eq!(&a[16..], &(1u64 << 40).to_le_bytes());
        assert_eq!(stop_args(), [0xFF, 0xFF, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn wasm_args_carry_each_tasks_limits_from_the_catalogue() {
        let cat = ServiceCatalogue::default_catalogue();
        let (op, words) = see_abi::serve::decode_args(&run_wasm_args(&cat, &[1, 3])).unwrap();
        assert_eq!(op, see_abi::serve::OP_RUN_WASM);
        let tasks: Vec<WasmTask> = see_abi::serve::parse_wasm_tasks(&words).unwrap().collect();
        assert_eq!(tasks.len(), 2);
        for (task, index) in tasks.iter().zip([0, 2]) {
            assert_eq!(task.task_id, index as u64 + 1);
            assert_eq!(task.fuel, cat.tasks[index].limits.fuel);
            assert_eq!(
                task.memory_limit_bytes,
                cat.tasks[index].limits.memory_bytes()
            );
        }
    }

    #[test]
    fn fill_adds_what_is_missing_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = ServiceCatalogue::default_catalogue();
        cat.scale_sizes(0.01);
        let store = DiskStore::open(dir.path()).unwrap();
        let (added, total) = fill_store(&cat, &store, None).unwrap();
        assert!(added > 0 && total > 0);
        assert_eq!(
            fill_store(&cat, &store, None).unwrap().0,
            0,
            "a second fill adds nothing"
        );
    }
}
