//! Checkpoints: safetensors weights plus a JSON sidecar, both checked on load.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    model::HyperParams, Hybrid, MixWeights, NeuralPredictor, NnError, TrainReport, Trained,
};
use crate::{
    context::{Attributes, MAX_ATTRIBUTES, MAX_ATTRIBUTE_VALUES},
    predict::{observe_sessions, CountModel, CountSpec, Predictor},
    split::SplitSpec,
    trace::Session,
    vocab::Vocabulary,
};

/// The sidecar's `format` field.
pub const FORMAT: &str = "see-pto-model";
/// The sidecar's `version` field this build writes. Version 1 (the mixture's count model
/// always the context-blind PPM, recorded as `ppm_order`) is still read, and migrated
/// ([`read_sidecar`]); version 2 records the count model chosen on validation
/// ([`MixSpec::counts`]).
pub const FORMAT_VERSION: u32 = 2;
/// The largest weights file accepted (256 MiB).
const MAX_WEIGHTS: u64 = 256 << 20;

/// The sidecar beside the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Hyper-parameters.
    pub hyper: HyperParams,
    /// The vocabulary the ids refer to.
    pub vocabulary: Vocabulary,
    /// The split the model was trained with, if any.
    pub split: Option<SplitSpec>,
    /// Where the training data came from.
    pub data: String,
    /// SHA-256 of the weights file, hex.
    pub weights_sha256: String,
    /// What training did.
    pub report: TrainReport,
    /// How to mix the model with a PPM model online ([`super::Hybrid`]), if fitted.
    #[serde(default)]
    pub mix: Option<MixSpec>,
    /// The attribute schema the model's context ids refer to (empty without attributes).
    #[serde(default)]
    pub attributes: Attributes,
}

/// The count model and weights of a [`super::Hybrid`] chosen at training time
/// ([`super::choose_mixture`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSpec {
    /// The count model (its attribute keys index the sidecar's `attributes`), counted online
    /// over the history.
    pub counts: CountSpec,
    /// Weights on the learned model.
    pub weights: MixWeights,
}

/// The oldest sidecar version [`read_sidecar`] still reads (and migrates).
const OLDEST_VERSION: u32 = 1;

/// A version-1 sidecar's mixture: always the context-blind PPM, of this order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MixSpecV1 {
    ppm_order: usize,
    weights: MixWeights,
}

/// Rewrites a version-1 sidecar as version 2: its mixture's `ppm_order` becomes a
/// context-blind PPM count model of that order, which is what version 1 meant.
fn migrate_v1(v: &mut serde_json::Value) -> Result<(), serde_json::Error> {
    if let Some(mix) = v.get_mut("mix").filter(|m| !m.is_null()) {
        let old: MixSpecV1 = serde_json::from_value(mix.take())?;
        *mix = serde_json::to_value(MixSpec {
            counts: CountSpec::Ppm {
                order: old.ppm_order,
            },
            weights: old.weights,
        })?;
    }
    v["version"] = FORMAT_VERSION.into();
    Ok(())
}

fn paths(path: &Path) -> (PathBuf, PathBuf) {
    (
        path.with_extension("safetensors"),
        path.with_extension("json"),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `trained` to `path` (`.safetensors` and `.json` beside each other).
pub fn save(
    trained: &Trained,
    path: &Path,
    split: Option<SplitSpec>,
    data: &str,
    mix: Option<MixSpec>,
) -> Result<(PathBuf, PathBuf), NnError> {
    let (wpath, spath) = paths(path);
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| NnError::Io { path: p, source }
    };
    candle_core::safetensors::save(&trained.weights, &wpath)?;
    let bytes = std::fs::read(&wpath).map_err(io(&wpath))?;
    let sidecar = Sidecar {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        hyper: trained.hp.clone(),
        vocabulary: (*trained.vocab).clone(),
        split,
        data: data.into(),
        weights_sha256: hex(&Sha256::digest(&bytes)),
        report: trained.report.clone(),
        mix,
        attributes: trained.attributes.clone(),
    };
    let json = serde_json::to_string_pretty(&sidecar).map_err(|error| NnError::SidecarEncode {
        path: spath.display().to_string(),
        error,
    })?;
    std::fs::write(&spath, json).map_err(io(&spath))?;
    Ok((wpath, spath))
}

/// Reads and checks the sidecar of the checkpoint at `path` (not the weights): enough to
/// learn the model's vocabulary before loading it.
pub fn read_sidecar(path: &Path) -> Result<Sidecar, NnError> {
    let (_, spath) = paths(path);
    let path = || spath.display().to_string();
    let text = std::fs::read_to_string(&spath).map_err(|error| NnError::SidecarRead {
        path: path(),
        error,
    })?;
    let parse_error = |error| NnError::SidecarParse {
        path: path(),
        error,
    };
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(parse_error)?;
    // The format and version first: another format or version is named as such, not as a
    // shape error.
    let format = value.get("format").and_then(serde_json::Value::as_str);
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if let (Some(format), Some(version)) = (format, version) {
        let known = u64::from(OLDEST_VERSION)..=u64::from(FORMAT_VERSION);
        if format != FORMAT || !known.contains(&version) {
            return Err(NnError::SidecarFormat {
                path: path(),
                format: format.to_owned(),
                version: u32::try_from(version).unwrap_or(u32::MAX),
                expected_format: FORMAT,
                expected_version: FORMAT_VERSION,
            });
        }
        if version == 1 {
            migrate_v1(&mut value).map_err(parse_error)?;
        }
    }
    let sidecar: Sidecar = serde_json::from_value(value).map_err(parse_error)?;
    sidecar
        .hyper
        .validate()
        .map_err(|error| NnError::SidecarHyper {
            path: path(),
            error,
        })?;
    // The attribute schema is read from the file: bounded like an imported one.
    let attrs = &sidecar.attributes;
    let largest = (0..attrs.len())
        .map(|i| attrs.values(i).map_or(0, |v| v.len()))
        .max()
        .unwrap_or(0);
    for (name, value, hi) in [
        ("attributes", attrs.len(), MAX_ATTRIBUTES),
        ("attribute values", largest, MAX_ATTRIBUTE_VALUES + 1),
        (
            "context attributes beyond the schema",
            sidecar
                .hyper
                .context
                .attribute_values
                .len()
                .saturating_sub(attrs.len()),
            0,
        ),
    ] {
        if value > hi {
            return Err(NnError::SidecarHyper {
                path: path(),
                error: super::HyperError::OutOfRange {
                    name,
                    value,
                    lo: 0,
                    hi,
                },
            });
        }
    }
    if let Some(mix) = &sidecar.mix {
        mix.counts
            .validate(attrs)
            .map_err(|error| NnError::SidecarMix {
                path: path(),
                error,
            })?;
    }
    Ok(sidecar)
}

/// Reads and checks the checkpoint at `path` (either file's name, or the common stem).
pub fn load(path: &Path) -> Result<(Sidecar, Trained), NnError> {
    let sidecar = read_sidecar(path)?;
    let (wpath, _) = paths(path);
    let len = std::fs::metadata(&wpath)
        .map_err(|source| NnError::Io {
            path: wpath.display().to_string(),
            source,
        })?
        .len();
    if len > MAX_WEIGHTS {
        return Err(NnError::WeightsTooLarge {
            path: wpath.display().to_string(),
            len,
        });
    }
    let bytes = std::fs::read(&wpath).map_err(|source| NnError::Io {
        path: wpath.display().to_string(),
        source,
    })?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != sidecar.weights_sha256 {
        return Err(NnError::WeightsDigest {
            path: wpath.display().to_string(),
            found: digest,
            expected: sidecar.weights_sha256,
        });
    }
    let weights: HashMap<_, _> =
        candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).map_err(
            |error| NnError::Weights {
                path: wpath.display().to_string(),
                error,
            },
        )?;
    let trained = Trained {
        hp: sidecar.hyper.clone(),
        vocab: Arc::new(sidecar.vocabulary.clone()),
        weights,
        report: sidecar.report.clone(),
        attributes: sidecar.attributes.clone(),
    };
    Ok((sidecar, trained))
}

/// Loads the checkpoint at `path` as a predictor.
pub fn load_predictor(path: &Path) -> Result<NeuralPredictor, NnError> {
    let (_, trained) = load(path)?;
    NeuralPredictor::new(&trained)
}

/// Loads the checkpoint at `path` as the online [`Hybrid`]: the model mixed with the count
/// model chosen at training time (the context-aware PPM where it won on validation) counted
/// over `history` (sessions whose ids are in the model's vocabulary, e.g. from
/// `History::load_trace(None, model_vocabulary)`; their attribute ids refer to
/// `history_attributes`, translated here to the checkpoint's schema), with the weights fitted
/// at training time. A checkpoint without a mixture serves the model alone (weight 1).
pub fn load_hybrid(
    path: &Path,
    history: &[Session],
    history_attributes: &Attributes,
) -> Result<Hybrid, NnError> {
    let (side, trained) = load(path)?;
    let model = NeuralPredictor::new(&trained)?;
    let mix = side.mix.unwrap_or(MixSpec {
        counts: CountSpec::Ppm { order: 4 },
        weights: MixWeights([1.0; 6]),
    });
    let mut counts = mix
        .counts
        .build(trained.vocab.clone(), &trained.attributes)
        .map_err(|error| NnError::SidecarMix {
            path: paths(path).1.display().to_string(),
            error,
        })?;
    if matches!(counts, CountModel::Context(_)) && !history_attributes.same_ids(&trained.attributes)
    {
        let translated = history_attributes.translate_sessions(history, &trained.attributes);
        observe_sessions(&mut counts, &translated);
    } else {
        observe_sessions(&mut counts, history);
    }
    Hybrid::new(model, counts, mix.weights)
}

/// Loads the checkpoint at `path`, or, if it is missing, corrupt or mismatched, logs why and
/// returns `fallback()` (typically a Markov model) with the error.
pub fn load_or_fallback(
    path: &Path,
    fallback: impl FnOnce() -> Box<dyn Predictor>,
) -> (Box<dyn Predictor>, Option<NnError>) {
    match load_predictor(path) {
        Ok(p) => (Box::new(p), None),
        Err(e) => {
            let f = fallback();
            log::warn!("{e}; falling back to the {} predictor", f.name());
            (f, Some(e))
        }
    }
}
