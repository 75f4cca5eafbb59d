//! The `pto` command line: import, generate, train, eval, predict, audit, simulate.

mod data;
mod eval;
mod online;
mod sweep;

use std::{io::Write, path::PathBuf, sync::Arc};

use clap::{
    builder::{PossibleValuesParser, TypedValueParser},
    Args, Parser, Subcommand,
};
use indicatif::{ProgressBar, ProgressStyle};
use see_pto::{
    context::Attributes,
    generate::{generate, Workload, WorkloadSpec},
    history::History,
    import::import_path,
    metadata::ServiceCatalogue,
    nn::{self, HyperParams, ModelKind, Trained},
    predict::{observe_sessions, CountModel, Ppm, Predictor, SessionContext, StaticGraph},
    trace::Session,
    vocab::Vocabulary,
};

pub use data::{ColumnArgs, DataArgs, FaasArgs, HyperArgs, ShapeArgs, SplitArgs};

/// A command's result; errors are printed by `main`.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The predictive task orchestrator's offline tools.
/// A clap parser for one of the library's choice enums: `names` are the possible values (in the
/// help and in clap's error), the enum's `FromStr` makes the value.
pub(crate) fn by_name<T>(
    names: impl IntoIterator<Item = &'static str>,
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

#[derive(Parser, Debug)]
#[command(name = "pto", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Import a request trace (CSV or JSON lines, optionally gzipped) into the history database.
    Import(ImportArgs),
    /// Generate a synthetic workload over the service catalogue as JSON lines.
    Generate(GenerateArgs),
    /// Train a learned model and save it as a checkpoint.
    Train(TrainArgs),
    /// Evaluate every predictor side by side on held-out sessions.
    Eval(eval::EvalArgs),
    /// Predict the next requests after a session.
    Predict(PredictArgs),
    /// Audit log tools: `pto audit verify FILE`.
    Audit(online::AuditArgs),
    /// Replay a workload through the online orchestrator in every mode against a simulated
    /// guest and origin; print the per-mode table.
    Simulate(Box<online::SimulateArgs>),
}

impl Cli {
    /// Runs the command.
    pub fn run(self) -> CliResult<()> {
        match self.command {
            Command::Import(a) => import(&a),
            Command::Generate(a) => generate_cmd(&a),
            Command::Train(a) => train_cmd(&a),
            Command::Eval(a) => eval::run(&a),
            Command::Predict(a) => predict(&a),
            Command::Audit(a) => online::audit_cmd(&a),
            Command::Simulate(a) => online::simulate_cmd(&a),
        }
    }
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The trace file.
    input: PathBuf,
    /// History database (created if missing).
    #[arg(long, default_value = "pto-history.db")]
    db: PathBuf,
    /// Source name to file the sessions under; default: the file name.
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    columns: ColumnArgs,
}

fn import(a: &ImportArgs) -> CliResult<()> {
    let opts = a.columns.options();
    let (trace, report) = import_path(&a.input, &opts, Vocabulary::new())?;
    let source = a.source.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .map_or("trace".into(), |f| f.to_string_lossy().into_owned())
    });
    let mut h = History::open(&a.db)?;
    let added = h.import_trace(&source, &trace)?;
    println!(
        "{}: {} rows, {} skipped as malformed; {} sessions, {} requests, {} request types; {} new sessions stored in {} under source {:?}",
        a.input.display(),
        report.rows,
        report.skipped,
        trace.sessions.len(),
        trace.request_count(),
        trace.vocab.len() - 1,
        added,
        a.db.display(),
        source
    );
    for (line, reason) in &report.examples {
        println!("  skipped line {line}: {reason}");
    }
    if !trace.attributes.is_empty() {
        let described: Vec<String> = trace
            .attributes
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let values = trace.attributes.values(i).map_or(0, |v| v.len() - 1);
                format!("{n} ({values} values)")
            })
            .collect();
        println!("attributes: {}", described.join(", "));
    }
    for w in &report.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Workload shape.
    #[arg(
        long,
        value_parser = by_name::<Workload>(Workload::ALL.map(Workload::name)),
        default_value = "goal",
        conflicts_with = "catalogue_preset"
    )]
    workload: Workload,
    /// Sessions.
    #[arg(long, default_value_t = 4000)]
    sessions: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (JSON lines: session, request_type, timestamp in ms); default: stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Service metadata; default: the embedded catalogue.
    #[arg(long)]
    metadata: Option<PathBuf>,
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    faas: FaasArgs,
}

fn generate_cmd(a: &GenerateArgs) -> CliResult<()> {
    let t = if let Some(spec) = a.faas.spec(a.sessions, a.seed) {
        if !a.shape.is_empty() {
            return Err(
                "--order, --branching, --noise, --think-ms, --goals, --goal-strength, \
                        --cohorts and --segments shape the generated workloads, not --catalogue-preset faas"
                    .into(),
            );
        }
        log::info!("{}", FaasArgs::describe(&spec));
        spec.sessions(&spec.catalogue()?)?
    } else {
        let cat = match &a.metadata {
            Some(p) => ServiceCatalogue::load(p)?,
            None => ServiceCatalogue::default_catalogue(),
        };
        let vocab = cat.vocabulary();
        let spec = a.shape.apply(
            WorkloadSpec::preset(a.workload, a.sessions, a.seed),
            vocab.len() - 1,
        )?;
        generate(&vocab, &spec)?
    };
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for s in &t.sessions {
        for r in &s.requests {
            let mut line = serde_json::json!({
                "session": s.key,
                "request_type": t.vocab.name(r.kind).unwrap_or("<unk>"),
                "timestamp": r.at_ms,
            });
            for (i, name) in t.attributes.names().iter().enumerate() {
                let id = u32::from(r.attrs.get(i));
                if let Some(v) = t.attributes.values(i).and_then(|v| v.name(id)) {
                    if id != 0 {
                        line[name] = v.into();
                    }
                }
            }
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Which model.
    #[arg(long, value_parser = by_name::<ModelKind>(ModelKind::ALL.map(ModelKind::name)))]
    model: ModelKind,
    /// Checkpoint path (NAME.safetensors and NAME.json are written).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    split: SplitArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    /// Longest context of the count models the checkpoint may be mixed with online (the
    /// context-blind PPM, the context-aware PPM and first-order Markov: the best on the
    /// validation split is kept, as `pto eval` keeps it).
    #[arg(long, default_value_t = 4)]
    ppm_order: usize,
}

/// Prints the count models compared for a mixture and the one chosen.
pub fn report_mixture(counts: &CountModel, tried: &[(String, f64)]) {
    eprintln!(
        "count model for the mixture, validation top-1: {} (chosen: {})",
        tried
            .iter()
            .map(|(n, s)| format!("{n} {:.1} %", 100.0 * s))
            .collect::<Vec<_>>()
            .join(", "),
        counts.name()
    );
}

/// Trains with a progress bar on stderr. A model that reads context is trained a second time
/// without it, and the one with the lower validation loss is kept: context that carries no
/// signal only gives the network more to overfit.
pub fn train_with_bar(
    hp: &HyperParams,
    vocab: Arc<Vocabulary>,
    attrs: &Attributes,
    train: &[Session],
    val: &[Session],
) -> CliResult<Trained> {
    let with = train_one(hp, vocab.clone(), attrs, train, val)?;
    if hp.context.is_empty() {
        return Ok(with);
    }
    // The cross embeddings learn each (request, attribute value, gap bucket) apart, as a count
    // model does; where many attribute values share a behaviour (the segments workload) the
    // attribute embeddings alone pool them better. Which one holds is decided on validation.
    let mut kept = (with, "with context");
    if hp.context.cross {
        let plain_hp = HyperParams {
            context: nn::ContextShape {
                cross: false,
                ..hp.context.clone()
            },
            ..hp.clone()
        };
        let plain = train_one(&plain_hp, vocab.clone(), attrs, train, val)?;
        let (a, b) = (kept.0.report.best_val_loss, plain.report.best_val_loss);
        eprintln!(
            "{}: validation loss {b:.4} with context but no cross embedding, {a:.4} with them",
            hp.kind.name()
        );
        if b < a {
            kept = (plain, "with context, no cross embedding");
        }
    }
    let blind_hp = HyperParams {
        context: nn::ContextShape::default(),
        ..hp.clone()
    };
    let blind = train_one(&blind_hp, vocab, attrs, train, val)?;
    let (a, b) = (kept.0.report.best_val_loss, blind.report.best_val_loss);
    if b < a {
        eprintln!(
            "{}: the context-free model has the lower validation loss ({b:.4} against {a:.4} with context): kept",
            hp.kind.name()
        );
        Ok(blind)
    } else {
        eprintln!(
            "{}: the model {} has the lower validation loss ({a:.4} against {b:.4} without): kept",
            hp.kind.name(),
            kept.1
        );
        Ok(kept.0)
    }
}

fn train_one(
    hp: &HyperParams,
    vocab: Arc<Vocabulary>,
    attrs: &Attributes,
    train: &[Session],
    val: &[Session],
) -> CliResult<Trained> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} steps, {elapsed} {msg}")?
            .progress_chars("=> "),
    );
    bar.set_prefix(hp.kind.name());
    let mut val_loss = f32::NAN;
    let trained = nn::train_with_context(hp, vocab, attrs, train, val, &mut |p| {
        bar.set_length((p.epochs * p.steps) as u64);
        bar.set_position(((p.epoch - 1) * p.steps + p.step) as u64);
        if let Some(v) = p.val_loss {
            val_loss = v;
        }
        bar.set_message(format!(
            "epoch {}/{} loss {:.3} val {:.3}",
            p.epoch, p.epochs, p.loss, val_loss
        ));
    })?;
    bar.finish_and_clear();
    let r = &trained.report;
    eprintln!(
        "{}: {} epochs in {:.1} s{}, best validation loss {:.4} at epoch {}",
        hp.kind.name(),
        r.epochs_run,
        r.seconds,
        if r.stopped_early { " (early stop)" } else { "" },
        r.best_val_loss,
        r.best_epoch
    );
    Ok(trained)
}

fn train_cmd(a: &TrainArgs) -> CliResult<()> {
    let cat = a.data.catalogue()?;
    let (trace, desc) = a.data.load(&cat)?;
    let spec = a.split.spec()?;
    let split = spec.split(&trace.sessions);
    let hp = a.hyper.params_for(a.model, &trace.attributes);
    let vocab = Arc::new(trace.vocab.clone());
    let trained = train_with_bar(&hp, vocab, &trace.attributes, &split.train, &split.val)?;
    // The online mixture: the count model and the weights chosen on the validation split (the
    // context-aware PPM where it wins), as `pto eval` chooses them.
    let model = nn::NeuralPredictor::new(&trained)?;
    let (counts, weights, tried) = nn::choose_mixture(
        &model,
        &trace.attributes,
        a.ppm_order,
        &split.train,
        &split.val,
    );
    report_mixture(&counts, &tried);
    let mix = nn::MixSpec {
        counts: counts.spec(),
        weights,
    };
    let (w, s) = nn::save(&trained, &a.out, Some(spec), &desc, Some(mix))?;
    println!(
        "saved {} and {} (trained on {} sessions of {desc})",
        w.display(),
        s.display(),
        split.train.len()
    );
    Ok(())
}

#[derive(Args, Debug)]
struct PredictArgs {
    /// The session so far: request type names, oldest first.
    #[arg(required = true)]
    requests: Vec<String>,
    /// A trained checkpoint (mixed with PPM over the data options' sessions, if given, as
    /// online); falls back to --predictor if it cannot be loaded.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Count-based predictor (trained on the data options): popularity, markov1, ppm, static-graph.
    #[arg(long, default_value = "ppm")]
    predictor: String,
    /// Longest context of ppm.
    #[arg(long, default_value_t = 4)]
    ppm_order: usize,
    /// How many predictions.
    #[arg(short, default_value_t = 5)]
    k: usize,
    #[command(flatten)]
    data: DataArgs,
}

fn predict(a: &PredictArgs) -> CliResult<()> {
    a.data.check_columns()?;
    let cat = a.data.catalogue()?;
    let baseline = || -> CliResult<Box<dyn Predictor>> {
        if a.predictor == "static-graph" {
            return Ok(Box::new(StaticGraph::new(Arc::new(cat.vocabulary()), &cat)));
        }
        let (trace, _) = a.data.load(&cat)?;
        let vocab = Arc::new(trace.vocab.clone());
        let mut p = match a.predictor.as_str() {
            "popularity" => Ppm::popularity(vocab),
            "markov1" => Ppm::markov1(vocab),
            "ppm" => Ppm::new(vocab, a.ppm_order),
            other => {
                return Err(format!(
                    "unknown predictor {other:?}: popularity, markov1, ppm or static-graph"
                )
                .into())
            }
        };
        observe_sessions(&mut p, &trace.sessions);
        Ok(Box::new(p))
    };
    let has_data = a.data.db.is_some() || a.data.input.is_some() || a.data.workload.is_some();
    let learned = |path: &PathBuf| -> Result<Box<dyn Predictor>, Box<dyn std::error::Error>> {
        if !has_data {
            return Ok(Box::new(nn::load_predictor(path)?));
        }
        // With history: the online predictor, the model mixed with PPM over that history.
        let vocab = nn::read_sidecar(path)?.vocabulary;
        let (trace, _) = a.data.load(&cat)?;
        Ok(Box::new(nn::load_hybrid(
            path,
            &trace.sessions_in(&vocab),
            &trace.attributes,
        )?))
    };
    let p: Box<dyn Predictor> = match &a.model {
        Some(path) => match learned(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("pto: {e}; falling back to {}", a.predictor);
                baseline()?
            }
        },
        None => baseline()?,
    };
    let vocab = p.vocabulary().clone();
    for r in &a.requests {
        if vocab.get(r).is_none() {
            eprintln!(
                "pto: request type {r:?} is unknown to the {} predictor; it counts as unknown",
                p.name()
            );
        }
    }
    let ctx = SessionContext::from_names(&vocab, &a.requests);
    let preds = p.predict(&ctx, a.k);
    println!("predictor {}:", p.name());
    if preds.is_empty() {
        println!("no prediction");
    }
    println!(
        "{:>4}  {:<20} {:>8}  {:>10}  resources",
        "rank", "request type", "p", "bytes"
    );
    for (i, x) in preds.iter().enumerate() {
        let name = vocab.name(x.kind).unwrap_or("?");
        let res = cat.resources_of(name);
        let bytes: u64 = res.iter().map(|r| r.size).sum();
        let ids: Vec<&str> = res.iter().map(|r| r.id.as_str()).collect();
        println!(
            "{:>4}  {:<20} {:>8.4}  {:>10}  {}",
            i + 1,
            name,
            x.probability,
            bytes,
            ids.join(" ")
        );
    }
    Ok(())
}
