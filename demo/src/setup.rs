//! What the demo prepares before the first SEE: the workload, the learned model's checkpoint
//! (trained here on the training split) and the oracle's future.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use see_pto::{
    context::Attributes,
    faas::FaasSpec,
    generate::{generate, Workload, WorkloadSpec},
    import::{import_path, ImportOptions, Malformed},
    metadata::ServiceCatalogue,
    nn::{self, HyperParams, MixSpec, ModelKind},
    split::SplitSpec,
    trace::{Session, Trace},
    vocab::Vocabulary,
};

use crate::DemoError;

/// The sessions: a trace file, the faas preset's own sessions over `cat` (its catalogue),
/// or a generated goal-directed workload.
pub fn load_sessions(
    cat: &ServiceCatalogue,
    trace: Option<&Path>,
    faas: Option<&FaasSpec>,
    sessions: usize,
    seed: u64,
) -> Result<(Trace, String), DemoError> {
    let vocab = cat.vocabulary();
    let (t, desc) = match (trace, faas) {
        (Some(p), _) => {
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
        (None, Some(spec)) => {
            let t = spec
                .sessions(cat)
                .map_err(|e| DemoError::Usage(e.to_string()))?;
            (t, spec.describe())
        }
        (None, None) => {
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
        attributes: t.attributes.clone(),
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

/// Trains the LSTM on `train` (early stopping on `val`), chooses its mixture's count model
/// and weights on `val` as `pto train` does, and saves the checkpoint under `out/model/lstm`; returns its path.
pub fn train_learned(
    vocab: &Vocabulary,
    train: &[Session],
    val: &[Session],
    epochs: usize,
    out: &Path,
) -> Result<PathBuf, DemoError> {
    let vocab = std::sync::Arc::new(vocab.clone());
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
    let trained = nn::train(&hp, vocab, train, val, &mut |p| {
        bar.set_length((p.epochs * p.steps) as u64);
        bar.set_position(((p.epoch - 1) * p.steps + p.step) as u64);
        bar.set_message(format!("epoch {}/{} loss {:.3}", p.epoch, p.epochs, p.loss));
    })
    .map_err(|e| DemoError::Pto(e.to_string()))?;
    bar.finish_and_clear();
    let model = nn::NeuralPredictor::new(&trained).map_err(|e| DemoError::Pto(e.to_string()))?;
    // The count model chosen on validation, as `pto train` chooses it (the demo's model
    // reads no attributes; the count model may still condition on the gap or hour bucket).
    let (counts, weights, _) = nn::choose_mixture(&model, &Attributes::default(), 4, train, val);
    let dir = out.join("model");
    std::fs::create_dir_all(&dir).map_err(|e| DemoError::Io(format!("{}: {e}", dir.display())))?;
    let path = dir.join("lstm");
    nn::save(
        &trained,
        &path,
        Some(SplitSpec::default()),
        "the demo's training split",
        Some(MixSpec {
            counts: counts.spec(),
            weights,
        }),
    )
    .map_err(|e| DemoError::Pto(e.to_string()))?;
    Ok(path)
}

/// Writes the oracle's future: `session,type` per line, sessions keyed as the client keys
/// them (`s1`, `s2`, ... in replay order).
pub fn write_oracle(path: &Path, order: &[(u64, String)]) -> Result<(), DemoError> {
    let text: String = order
        .iter()
        .map(|(s, kind)| format!("s{s},{kind}\n"))
        .collect();
    std::fs::write(path, text).map_err(|e| DemoError::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_file_keys_sessions_as_the_client_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oracle.csv");
        write_oracle(&path, &[(1, "home".into()), (2, "search".into())]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "s1,home\ns2,search\n"
        );
    }
}
