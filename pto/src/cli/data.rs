//! Where a command's sessions come from: a history database, a trace file or a generated
//! workload; and the options they share (split, metadata, hyper-parameters).

use std::path::{Path, PathBuf};

use clap::Args;
use see_pto::{
    generate::{generate, Workload, WorkloadSpec},
    history::History,
    import::{import_path, ImportOptions, Malformed},
    metadata::ServiceCatalogue,
    nn::{HyperParams, ModelKind},
    split::SplitSpec,
    trace::Trace,
};

use super::CliResult;

/// The sessions to work on: exactly one of --db, --input, --workload.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// History database (from `pto import`) to read sessions from.
    #[arg(long, conflicts_with_all = ["input", "workload"])]
    pub db: Option<PathBuf>,
    /// Only the sessions imported under this source name (with --db).
    #[arg(long, requires = "db")]
    pub source: Option<String>,
    /// A trace file: CSV or JSON lines, optionally gzipped.
    #[arg(long, conflicts_with = "workload")]
    pub input: Option<PathBuf>,
    /// Refuse malformed rows of --input instead of skipping them.
    #[arg(long, requires = "input")]
    pub strict: bool,
    /// A generated workload over the service catalogue.
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// Sessions to generate (with --workload).
    #[arg(long, default_value_t = 4000)]
    pub sessions: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub workload_seed: u64,
    /// Service metadata (TOML); default: the embedded shop catalogue.
    #[arg(long)]
    pub metadata: Option<PathBuf>,
}

impl DataArgs {
    /// The service catalogue.
    pub fn catalogue(&self) -> CliResult<ServiceCatalogue> {
        Ok(match &self.metadata {
            Some(p) => ServiceCatalogue::load(p)?,
            None => ServiceCatalogue::default_catalogue(),
        })
    }

    /// Loads the sessions; returns them with a one-line description of where they came from.
    pub fn load(&self, catalogue: &ServiceCatalogue) -> CliResult<(Trace, String)> {
        let vocab = catalogue.vocabulary();
        if let Some(db) = &self.db {
            let h = History::open(db)?;
            let t = h.load_trace(self.source.as_deref(), vocab)?;
            if t.sessions.is_empty() {
                return Err(format!(
                    "{}: no sessions{}; run `pto import` first",
                    db.display(),
                    self.source
                        .as_ref()
                        .map_or(String::new(), |s| format!(" under source {s:?}"))
                )
                .into());
            }
            let name = self.source.clone().unwrap_or_else(|| "all sources".into());
            return Ok((t, format!("history {} ({name})", file_name(db))));
        }
        if let Some(input) = &self.input {
            let opts = ImportOptions {
                malformed: if self.strict {
                    Malformed::Refuse
                } else {
                    Malformed::Skip
                },
                ..ImportOptions::default()
            };
            let (t, report) = import_path(input, &opts, vocab)?;
            if report.skipped > 0 {
                log::warn!(
                    "{}: skipped {} malformed rows of {}",
                    input.display(),
                    report.skipped,
                    report.rows
                );
            }
            return Ok((t, format!("trace {}", file_name(input))));
        }
        let w = self
            .workload
            .ok_or("say where the sessions come from: --db, --input or --workload")?;
        let spec = WorkloadSpec::preset(w, self.sessions, self.workload_seed);
        let t = generate(&vocab, &spec)?;
        Ok((
            t,
            format!(
                "generated {w:?} workload ({} sessions, seed {})",
                spec.sessions, spec.seed
            )
            .to_lowercase(),
        ))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// How sessions are split into training, validation and test sets.
#[derive(Args, Debug, Clone)]
pub struct SplitArgs {
    /// Seed of the split (a hash of each session's key).
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,
    /// Percent of sessions held out for testing.
    #[arg(long, default_value_t = 20)]
    pub test_percent: u32,
    /// Percent of sessions for validation (early stopping).
    #[arg(long, default_value_t = 10)]
    pub val_percent: u32,
}

impl SplitArgs {
    /// The spec, checked.
    pub fn spec(&self) -> CliResult<SplitSpec> {
        let s = SplitSpec {
            seed: self.split_seed,
            test_percent: self.test_percent,
            val_percent: self.val_percent,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Overrides of the default hyper-parameters.
#[derive(Args, Debug, Clone, Default)]
pub struct HyperArgs {
    /// Most epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Embedding (model) width.
    #[arg(long)]
    pub embed: Option<usize>,
    /// LSTM hidden width / Transformer feed-forward width.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Transformer layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Transformer heads.
    #[arg(long)]
    pub heads: Option<usize>,
    /// Longest sequence, start token included.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// AdamW learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sessions per batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Dropout probability while training.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Leave out the (previous, current) request pair embedding.
    #[arg(long)]
    pub no_pairs: bool,
    /// Early-stopping patience, in epochs.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Seed of initialisation and shuffling.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl HyperArgs {
    /// The defaults of `kind` with the overrides applied.
    pub fn params(&self, kind: ModelKind) -> HyperParams {
        let d = HyperParams::default_for(kind);
        HyperParams {
            epochs: self.epochs.unwrap_or(d.epochs),
            embed: self.embed.unwrap_or(d.embed),
            hidden: self.hidden.unwrap_or(d.hidden),
            layers: self.layers.unwrap_or(d.layers),
            heads: self.heads.unwrap_or(d.heads),
            max_len: self.max_len.unwrap_or(d.max_len),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            batch: self.batch.unwrap_or(d.batch),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            dropout: self.dropout.unwrap_or(d.dropout),
            pairs: d.pairs && !self.no_pairs,
            patience: self.patience.unwrap_or(d.patience),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        }
    }
}
