//! Where a command's sessions come from: a history database, a trace file or a generated
//! workload; and the options they share (split, metadata, hyper-parameters).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use see_pto::{
    context::Attributes,
    faas::FaasSpec,
    generate::{generate, Workload, WorkloadSpec, MAX_COHORTS, MAX_ORDER, MAX_THINK_MS},
    history::{History, LoadOptions},
    import::{import_path, AttributeColumns, Format, ImportOptions, Malformed},
    metadata::ServiceCatalogue,
    nn::{ContextShape, HyperParams, ModelKind},
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
    /// Leave out the sessions with rows a guest reported (with --db): learn only from what no
    /// guest wrote.
    #[arg(long, requires = "db")]
    pub exclude_guest_reported: bool,
    /// A trace file: CSV or JSON lines, optionally gzipped.
    #[arg(long, conflicts_with = "workload")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// A generated workload over the service catalogue.
    #[arg(long, value_parser = super::by_name::<Workload>(Workload::ALL.map(Workload::name)))]
    pub workload: Option<Workload>,
    /// Sessions to generate (with --workload).
    #[arg(long, default_value_t = 4000)]
    pub sessions: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub workload_seed: u64,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Service metadata (TOML); default: the embedded shop catalogue.
    #[arg(long)]
    pub metadata: Option<PathBuf>,
    #[command(flatten)]
    pub faas: FaasArgs,
}

impl DataArgs {
    /// The service catalogue.
    pub fn catalogue(&self) -> CliResult<ServiceCatalogue> {
        if let Some(spec) = self.faas.spec(self.sessions, self.workload_seed) {
            return Ok(spec.catalogue()?);
        }
        Ok(match &self.metadata {
            Some(p) => ServiceCatalogue::load(p)?,
            None => ServiceCatalogue::default_catalogue(),
        })
    }

    /// Refuses the column options without an --input file to read them on: a command must
    /// not accept them and then ignore them.
    pub fn check_columns(&self) -> CliResult<()> {
        if self.input.is_none() && self.columns.is_given() {
            return Err(
                "--format, the --*-column options, --no-attributes and --strict read an \
                 --input file (`pto import` applies them when it fills a history)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Loads the sessions; returns them with a one-line description of where they came from.
    pub fn load(&self, catalogue: &ServiceCatalogue) -> CliResult<(Trace, String)> {
        let vocab = catalogue.vocabulary();
        if self.workload.is_none() && !self.shape.is_empty() {
            return Err(
                "--order, --branching, --noise, --think-ms, --goals, --goal-strength, --cohorts \
                 and --segments shape a generated workload: use them with --workload"
                    .into(),
            );
        }
        // Checked first: a history or a generated workload would silently ignore them.
        self.check_columns()?;
        if let Some(db) = &self.db {
            let h = History::open(db)?;
            let options = LoadOptions {
                exclude_guest_reported: self.exclude_guest_reported,
            };
            let t = h.load_trace_with(self.source.as_deref(), vocab, options)?;
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
            let (t, report) = import_path(input, &self.columns.options(), vocab)?;
            if report.skipped > 0 {
                log::warn!(
                    "{}: skipped {} malformed rows of {}",
                    input.display(),
                    report.skipped,
                    report.rows
                );
            }
            for w in &report.warnings {
                log::warn!("{}: {w}", input.display());
            }
            return Ok((t, format!("trace {}", file_name(input))));
        }
        if let (None, Some(spec)) = (
            self.workload,
            self.faas.spec(self.sessions, self.workload_seed),
        ) {
            let t = spec.sessions(catalogue)?;
            return Ok((t, FaasArgs::describe(&spec)));
        }
        let w = self.workload.ok_or(
            "say where the sessions come from: --db, --input, --workload or --catalogue-preset",
        )?;
        let preset = WorkloadSpec::preset(w, self.sessions, self.workload_seed);
        let spec = self.shape.apply(preset.clone(), vocab.len() - 1)?;
        let t = generate(&vocab, &spec)?;
        Ok((
            t,
            format!(
                "generated {} workload ({} sessions, seed {}{})",
                format!("{w:?}").to_lowercase(),
                spec.sessions,
                spec.seed,
                ShapeArgs::describe(&preset, &spec)
            ),
        ))
    }
}

/// How a trace file's rows are read: the same options for `pto import` and for `--input`.
#[derive(Args, Debug, Clone, Default)]
pub struct ColumnArgs {
    /// Input format; default: from the file name (.jsonl/.ndjson/.json: JSON lines, else CSV).
    #[arg(long, value_parser = super::by_name::<Format>(Format::ALL.map(Format::name)))]
    pub format: Option<Format>,
    /// Column (or JSON key) of the session; default: session_id, session, sessionid, user_id, user.
    #[arg(long)]
    pub session_column: Option<String>,
    /// Column of the request type; default: request_type, event, type, request, event_type.
    #[arg(long)]
    pub type_column: Option<String>,
    /// Column of the timestamp; default: timestamp, time, ts, at.
    #[arg(long)]
    pub time_column: Option<String>,
    /// Column of the user; default: user_id, user.
    #[arg(long)]
    pub user_column: Option<String>,
    /// Attribute columns, comma-separated; default: every column that is not the session,
    /// request type, timestamp or user (at most 8).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_attributes")]
    pub attribute_columns: Option<Vec<String>>,
    /// Read no attribute column.
    #[arg(long)]
    pub no_attributes: bool,
    /// Refuse the whole file at the first malformed row (default: skip and count).
    #[arg(long)]
    pub strict: bool,
}

impl ColumnArgs {
    /// True when any option is given.
    pub fn is_given(&self) -> bool {
        self.format.is_some()
            || self.session_column.is_some()
            || self.type_column.is_some()
            || self.time_column.is_some()
            || self.user_column.is_some()
            || self.attribute_columns.is_some()
            || self.no_attributes
            || self.strict
    }

    /// The import options.
    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            format: self.format,
            session_column: self.session_column.clone(),
            type_column: self.type_column.clone(),
            time_column: self.time_column.clone(),
            user_column: self.user_column.clone(),
            attributes: match (&self.attribute_columns, self.no_attributes) {
                (_, true) => AttributeColumns::None,
                (Some(names), false) => AttributeColumns::Named(names.clone()),
                (None, false) => AttributeColumns::All,
            },
            malformed: if self.strict {
                Malformed::Refuse
            } else {
                Malformed::Skip
            },
        }
    }
}

/// A built-in catalogue generated instead of one read from a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CataloguePreset {
    /// A synthetic function platform ([`see_pto::faas`]): apps with shared code and
    /// per-function data, hundreds of resources, Zipf-popular request types (`see-demo
    /// --catalogue-preset faas` runs it in the VM).
    Faas,
}

/// The generated function-platform catalogue and its sessions (`--catalogue-preset faas`).
#[derive(Args, Debug, Clone, Default)]
pub struct FaasArgs {
    /// A generated catalogue instead of --metadata, seeded by the workload seed; without
    /// --db, --input or --workload the sessions are the preset's own.
    #[arg(long, value_enum, conflicts_with = "metadata")]
    pub catalogue_preset: Option<CataloguePreset>,
    /// Apps of the faas preset (6 functions each).
    #[arg(long, requires = "catalogue_preset")]
    pub apps: Option<usize>,
    /// Zipf exponent of the faas preset's request popularity (0: uniform).
    #[arg(long, requires = "catalogue_preset", allow_negative_numbers = true)]
    pub zipf: Option<f64>,
}

impl FaasArgs {
    /// The faas spec with `sessions` sessions and `seed`, if the preset is chosen.
    pub fn spec(&self, sessions: usize, seed: u64) -> Option<FaasSpec> {
        let d = FaasSpec::default();
        self.catalogue_preset.map(|CataloguePreset::Faas| FaasSpec {
            apps: self.apps.unwrap_or(d.apps),
            zipf: self.zipf.unwrap_or(d.zipf),
            sessions,
            seed,
            ..d
        })
    }

    /// How the sessions of `spec` are described in reports: always as synthetic.
    pub fn describe(spec: &FaasSpec) -> String {
        spec.describe()
    }
}

/// Overrides of a workload preset's structure (`pto generate` and `--workload`).
#[derive(Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// How many previous requests the next one depends on (1 to 4); default: the preset's.
    #[arg(long)]
    pub order: Option<usize>,
    /// Likely successors per context (1 to the number of request types).
    #[arg(long)]
    pub branching: Option<usize>,
    /// Probability that a request is drawn uniformly instead (0 to 1).
    #[arg(long, allow_negative_numbers = true)]
    pub noise: Option<f32>,
    /// Mean think time between a session's requests, in milliseconds (exponential).
    #[arg(long, allow_negative_numbers = true)]
    pub think_ms: Option<f64>,
    /// Goals the first request sets (0: none; at most the number of request types).
    #[arg(long)]
    pub goals: Option<usize>,
    /// Weight of the goal-specific transitions against the shared ones (0 to 1).
    #[arg(long, allow_negative_numbers = true)]
    pub goal_strength: Option<f32>,
    /// Cohorts, each session's `cohort` attribute (0: none; at most 64); their transitions
    /// differ by --goal-strength.
    #[arg(long)]
    pub cohorts: Option<usize>,
    /// Hidden segments the cohorts fall into (0: none; at most --cohorts): cohort c behaves
    /// as segment c mod the segments.
    #[arg(long)]
    pub segments: Option<usize>,
}

impl ShapeArgs {
    /// True when no override is given.
    pub fn is_empty(&self) -> bool {
        self.order.is_none()
            && self.branching.is_none()
            && self.noise.is_none()
            && self.think_ms.is_none()
            && self.goals.is_none()
            && self.goal_strength.is_none()
            && self.cohorts.is_none()
            && self.segments.is_none()
    }

    /// `preset` with the overrides applied, over `types` request types; an out-of-range
    /// value is an error naming the option and its range.
    pub fn apply(&self, preset: WorkloadSpec, types: usize) -> CliResult<WorkloadSpec> {
        let range = |flag: &str, v: String, want: String| -> CliResult<WorkloadSpec> {
            Err(format!("--{flag} {v}: want {want}").into())
        };
        let mut s = preset;
        if let Some(v) = self.order {
            if !(1..=MAX_ORDER).contains(&v) {
                return range("order", v.to_string(), format!("1 to {MAX_ORDER}"));
            }
            s.order = v;
        }
        if let Some(v) = self.branching {
            if !(1..=types).contains(&v) {
                return range(
                    "branching",
                    v.to_string(),
                    format!("1 to {types} (the catalogue's request types)"),
                );
            }
            s.branching = v;
        }
        if let Some(v) = self.noise {
            if !(0.0..=1.0).contains(&v) {
                return range("noise", v.to_string(), "a probability, 0 to 1".into());
            }
            s.noise = v;
        }
        if let Some(v) = self.think_ms {
            if !(v > 0.0 && v <= MAX_THINK_MS) {
                return range(
                    "think-ms",
                    v.to_string(),
                    format!("more than 0 and at most {MAX_THINK_MS} (a day)"),
                );
            }
            s.think_ms = v;
        }
        if let Some(v) = self.goals {
            if v > types {
                return range(
                    "goals",
                    v.to_string(),
                    format!("0 to {types} (the catalogue's request types)"),
                );
            }
            s.goals = v;
        }
        if let Some(v) = self.goal_strength {
            if !(0.0..=1.0).contains(&v) {
                return range("goal-strength", v.to_string(), "0 to 1".into());
            }
            s.goal_strength = v;
        }
        if let Some(v) = self.cohorts {
            if v > MAX_COHORTS {
                return range("cohorts", v.to_string(), format!("0 to {MAX_COHORTS}"));
            }
            s.cohorts = v;
        }
        if let Some(v) = self.segments {
            s.segments = v;
        }
        if s.segments > s.cohorts {
            return range(
                "segments",
                s.segments.to_string(),
                format!("0 to {} (the cohorts)", s.cohorts),
            );
        }
        if s.goals > 0 && s.goal_strength == 0.0 {
            log::warn!(
                "{} goals with goal strength 0: the goal sets only the first request",
                s.goals
            );
        }
        Ok(s)
    }

    /// The fields in which `spec` differs from `preset`, as `", order 3, noise 0.1"`.
    pub fn describe(preset: &WorkloadSpec, spec: &WorkloadSpec) -> String {
        let mut out = String::new();
        let mut add = |name: &str, differs: bool, v: String| {
            if differs {
                out.push_str(&format!(", {name} {v}"));
            }
        };
        add("order", spec.order != preset.order, spec.order.to_string());
        add(
            "branching",
            spec.branching != preset.branching,
            spec.branching.to_string(),
        );
        add("noise", spec.noise != preset.noise, spec.noise.to_string());
        add(
            "think ms",
            spec.think_ms != preset.think_ms,
            spec.think_ms.to_string(),
        );
        add("goals", spec.goals != preset.goals, spec.goals.to_string());
        add(
            "goal strength",
            spec.goal_strength != preset.goal_strength,
            spec.goal_strength.to_string(),
        );
        add(
            "cohorts",
            spec.cohorts != preset.cohorts,
            spec.cohorts.to_string(),
        );
        add(
            "segments",
            spec.segments != preset.segments,
            spec.segments.to_string(),
        );
        out
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
    /// Feed the learned models no request context (attributes and time features): the
    /// request types only. By default a model is trained with and without context and the
    /// one with the lower validation loss is kept.
    #[arg(long)]
    pub no_context: bool,
    /// Leave out the (request, attribute value, gap bucket) cross embeddings of a model with
    /// context: it then learns the attributes only through their own embeddings. By default
    /// the model with context is trained with and without them, and the one with the lower
    /// validation loss is kept.
    #[arg(long)]
    pub no_cross: bool,
    /// Width of each attribute's embedding in a model with context (default 8).
    #[arg(long)]
    pub attr_embed: Option<usize>,
    /// Width of the gap bucket's embedding in a model with context (default 4; 0: none, the
    /// gap then reaches the model only as a log-scaled number).
    #[arg(long)]
    pub gap_embed: Option<usize>,
}

impl HyperArgs {
    /// [`HyperArgs::params`] reading the context of a trace with `attrs` (every attribute
    /// and the time features) unless --no-context.
    pub fn params_for(&self, kind: ModelKind, attrs: &Attributes) -> HyperParams {
        HyperParams {
            context: if self.no_context {
                ContextShape::default()
            } else {
                let d = ContextShape::of(attrs, true);
                ContextShape {
                    cross: !self.no_cross && !attrs.is_empty(),
                    attr_embed: if attrs.is_empty() {
                        0
                    } else {
                        self.attr_embed.unwrap_or(d.attr_embed)
                    },
                    gap_embed: self.gap_embed.unwrap_or(d.gap_embed),
                    ..d
                }
            },
            ..self.params(kind)
        }
    }

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
