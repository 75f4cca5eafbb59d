//! What the demo builds before the first VM: the disk store with the catalogue's resources,
//! the guest's `see.allow` registry, the workload and the learned predictor.

use std::{path::Path, sync::Arc};

use indicatif::{ProgressBar, ProgressStyle};
use see_prefetch_backend::store::DiskStore;
use see_pto::{
    generate::{generate, Workload, WorkloadSpec},
    import::{import_path, ImportOptions, Malformed},
    metadata::ServiceCatalogue,
    nn::{self, HyperParams, ModelKind},
    online::WireIds,
    predict::{observe_sessions, Ppm, Predictor},
    trace::{Session, Trace},
    vocab::Vocabulary,
};

use crate::DemoError;

/// (app, task, resource) wire ids for every task of every request type, in catalogue order
/// (the guest claims a task's resources in this order).
pub fn allow_entries(cat: &ServiceCatalogue) -> Vec<(u32, u64, u64)> {
    let ids = WireIds::new(cat);
    let mut out = Vec::new();
    for r in &cat.requests {
        let app = ids.app_of(&r.name).unwrap_or(1);
        for &t in &r.tasks {
            for &res in &cat.tasks[t].resources {
                let e = (app, WireIds::task(t), WireIds::resource(res));
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

/// The guest's command line: the serve app, quiet, with the catalogue's registry and the
/// verified store sized to the staging budget (`see.store_kib`).
pub fn cmdline(cat: &ServiceCatalogue, store_budget: u64) -> String {
    let allow: Vec<String> = allow_entries(cat)
        .iter()
        .map(|(a, t, r)| format!("{a}:{t}:{r}"))
        .collect();
    format!(
        "see.selftest=0 see.app=serve see.quiet=1 see.idle_ms=60000 see.store_kib={} see.allow={}",
        store_budget.div_ceil(1024).clamp(64, 1 << 20),
        allow.join(",")
    )
}

/// Writes every catalogue resource into a disk store at `dir`; returns the bytes stored.
pub fn fill_store(cat: &ServiceCatalogue, dir: &Path) -> Result<u64, DemoError> {
    let store = DiskStore::open(dir).map_err(|e| DemoError::Io(e.to_string()))?;
    let entries = allow_entries(cat);
    let mut total = 0;
    for (i, r) in cat.resources.iter().enumerate() {
        let id = WireIds::resource(i);
        let mut apps = entries.iter().filter(|e| e.2 == id).map(|e| e.0);
        let Some(app) = apps.next() else {
            continue; // no task uses it
        };
        if apps.any(|a| a != app) {
            log::warn!(
                "resource {} is used by several apps; only app {app} may claim it",
                r.id
            );
        }
        let content = cat
            .content(r)
            .map_err(|e| DemoError::Io(format!("resource {}: {e}", r.id)))?;
        store
            .add(id, r.version, r.kind, app, &content)
            .map_err(|e| DemoError::Io(format!("store add of {}: {e}", r.id)))?;
        total += content.len() as u64;
    }
    Ok(total)
}

/// The sessions: a trace file, or a generated goal-directed workload.
pub fn load_sessions(
    cat: &ServiceCatalogue,
    trace: Option<&Path>,
    sessions: usize,
    seed: u64,
) -> Result<(Trace, String), DemoError> {
    let vocab = cat.vocabulary();
    let (t, desc) = match trace {
        Some(p) => {
            let opts = ImportOptions {
                malformed: Malformed::Skip,
                ..ImportOptions::default()
            };
            let (t, rep) = import_path(p, &opts, vocab.clone())
                .map_err(|e| DemoError::Usage(format!("{}: {e}", p.display())))?;
            (
                t,
                format!(
                    "trace {} ({} rows, {} skipped)",
                    p.display(),
                    rep.rows,
                    rep.skipped
                ),
            )
        }
        None => {
            let spec = WorkloadSpec::preset(Workload::Goal, sessions, seed);
            let t = generate(&vocab, &spec).map_err(|e| DemoError::Usage(e.to_string()))?;
            (
                t,
                format!("generated goal workload ({sessions} sessions, seed {seed})"),
            )
        }
    };
    let mut t = Trace {
        sessions: t.sessions_in(&vocab),
        vocab,
    };
    // The catalogue serves only the request types it describes: a trace's other types are
    // left out of the replay (and said so), not sent to the orchestrator.
    let unknown = t.drop_unknown();
    let desc = if unknown > 0 {
        format!("{desc}; {unknown} requests of types the catalogue does not describe left out")
    } else {
        desc
    };
    if t.sessions.is_empty() {
        return Err(DemoError::Usage(format!(
            "{desc}: no request of the trace has a request type of the catalogue {}",
            cat.name
        )));
    }
    Ok((t, desc))
}

/// The first sessions of `test` holding `requests` requests (the last one cut short).
pub fn take_requests(test: &[Session], requests: usize) -> Vec<Session> {
    let mut out = Vec::new();
    let mut n = 0;
    for s in test {
        if n >= requests {
            break;
        }
        let mut s = s.clone();
        s.requests.truncate(requests - n);
        s.truth.truncate(s.requests.len());
        n += s.requests.len();
        if !s.requests.is_empty() {
            out.push(s);
        }
    }
    out
}

/// Trains the LSTM on `train` (early stopping on `val`) and mixes it with PPM, as `pto
/// simulate` does; `epochs` caps training.
pub fn train_learned(
    vocab: Vocabulary,
    train: &[Session],
    val: &[Session],
    epochs: usize,
) -> Result<Box<dyn Predictor>, DemoError> {
    let vocab = Arc::new(vocab);
    let hp = HyperParams {
        epochs,
        ..HyperParams::default_for(ModelKind::Lstm)
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} steps {elapsed} {msg}")
            .map_err(|e| DemoError::Usage(e.to_string()))?
            .progress_chars("=> "),
    );
    bar.set_prefix("train lstm");
    let trained = nn::train(&hp, vocab.clone(), train, val, &mut |p| {
        bar.set_length((p.epochs * p.steps) as u64);
        bar.set_position(((p.epoch - 1) * p.steps + p.step) as u64);
        bar.set_message(format!("epoch {}/{} loss {:.3}", p.epoch, p.epochs, p.loss));
    })
    .map_err(|e| DemoError::Online(e.to_string()))?;
    bar.finish_and_clear();
    let model = nn::NeuralPredictor::new(&trained).map_err(|e| DemoError::Online(e.to_string()))?;
    let mut ppm = Ppm::new(vocab, 4);
    observe_sessions(&mut ppm, train);
    let weights = nn::fit_weights(&model, &ppm, val);
    observe_sessions(&mut ppm, val);
    Ok(Box::new(
        nn::Hybrid::new(model, ppm, weights).map_err(|e| DemoError::Online(e.to_string()))?,
    ))
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
        let line = cmdline(&cat, 3 << 20);
        assert!(
            line.contains("see.app=serve")
                && line.contains("see.store_kib=3072 ")
                && line.len() < 4000,
            "{}",
            line.len()
        );
    }

    #[test]
    fn a_trace_replays_only_the_catalogue_s_request_types() {
        let cat = ServiceCatalogue::default_catalogue();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "user_id,session_id,event,timestamp\n\
             u1,s1,home,2024-03-13 10:21:14\n\
             u1,s1,teleport,2024-03-13 10:21:20\n\
             u1,s1,product_view,2024-03-13 10:21:28\n\
             u2,s2,teleport,2024-03-13 11:00:00\n",
        )
        .unwrap();
        let (t, desc) = load_sessions(&cat, Some(&csv), 0, 0).unwrap();
        assert!(desc.contains("2 requests of types the catalogue does not describe left out"));
        assert_eq!(t.sessions.len(), 1, "{desc}");
        let names: Vec<&str> = t.sessions[0]
            .requests
            .iter()
            .map(|r| t.vocab.name(r.kind).unwrap())
            .collect();
        assert_eq!(names, ["home", "product_view"]);
        // Nothing the catalogue knows: a clear error, not an empty replay.
        std::fs::write(
            &csv,
            "user_id,session_id,event,timestamp\nu2,s2,teleport,2024-03-13 11:00:00\n",
        )
        .unwrap();
        let err = load_sessions(&cat, Some(&csv), 0, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no request of the trace"), "{err}");
    }

    #[test]
    fn the_shared_ecom_trace_maps_onto_the_shop_catalogue() {
        let ecom =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ecom.csv.gz");
        let cat = ServiceCatalogue::default_catalogue();
        let (t, desc) = load_sessions(&cat, Some(&ecom), 0, 0).unwrap();
        assert!(!desc.contains("left out"), "{desc}");
        assert!(
            t.sessions.len() > 1000 && t.request_count() > 10_000,
            "{desc}"
        );
    }

    #[test]
    fn take_requests_cuts_the_last_session() {
        let cat = ServiceCatalogue::default_catalogue();
        let (t, _) = load_sessions(&cat, None, 50, 1).unwrap();
        let cut = take_requests(&t.sessions, 17);
        assert_eq!(cut.iter().map(|s| s.requests.len()).sum::<usize>(), 17);
        assert!(take_requests(&t.sessions, 0).is_empty());
    }
}
