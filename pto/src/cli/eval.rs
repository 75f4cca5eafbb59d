//! `pto eval`: every predictor side by side on the held-out sessions.

use std::{path::PathBuf, sync::Arc};

use clap::Args;
use see_pto::{
    eval::{
        bayes_optimal, comparison, evaluate, latency_by_context, table, versus_limit, EvalConfig,
        Metrics,
    },
    nn::{self, fit_weights, Hybrid, ModelKind, NeuralPredictor},
    plot::plot,
    predict::{observe_sessions, ContextPpm, CountModel, Ppm, Predictor, Reactive, StaticGraph},
    protocol::{chronological, with_end, Protocol},
};

use super::{train_with_bar, CliResult, DataArgs, HyperArgs, SplitArgs};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    split: SplitArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    /// Evaluation protocol: `random` splits sessions by a hash of their key (--split-seed,
    /// --test-percent, --val-percent); `process-mining` is Tax et al. (2017): the first two
    /// thirds of sessions by start time train (the last fifth of them validates), the last
    /// third is tested, the end of a session is a class, and every prefix is scored.
    #[arg(
        long,
        value_parser = super::by_name::<Protocol>(Protocol::ALL.map(Protocol::name)),
        default_value_t = Protocol::Random
    )]
    protocol: Protocol,
    /// Learned models to train on the training split (validation split for early stopping).
    #[arg(
        long,
        value_parser = super::by_name::<ModelKind>(ModelKind::ALL.map(ModelKind::name)),
        value_delimiter = ',',
        default_values_t = [ModelKind::Lstm, ModelKind::Transformer]
    )]
    models: Vec<ModelKind>,
    /// Train no learned model (only baselines and --load).
    #[arg(long)]
    no_train: bool,
    /// Also evaluate these checkpoints (trained with the same split and vocabulary).
    #[arg(long)]
    load: Vec<PathBuf>,
    /// Save the models trained here into this directory.
    #[arg(long)]
    save_dir: Option<PathBuf>,
    /// Prefetch budget K: predicted request types staged per request.
    #[arg(long, default_value_t = 3)]
    budget: usize,
    /// Confidence threshold for staging.
    #[arg(long, default_value_t = 0.05)]
    threshold: f32,
    /// Longest context of the PPM baseline.
    #[arg(long, default_value_t = 4)]
    ppm_order: usize,
    /// Write the figures as a PNG plot.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Calls per context length in the stateless latency table.
    #[arg(long, default_value_t = 2000)]
    latency_calls: usize,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: &EvalArgs) -> CliResult<()> {
    let cat = a.data.catalogue()?;
    let (trace, desc) = a.data.load(&cat)?;
    let spec = a.split.spec()?;
    let (trace, split, saved_split) = match a.protocol {
        Protocol::Random => {
            let split = spec.split(&trace.sessions);
            (trace, split, Some(spec))
        }
        Protocol::ProcessMining => {
            if !a.load.is_empty() {
                return Err("--load with --protocol process-mining: a checkpoint was trained without the end-of-session class; train here instead".into());
            }
            let t = with_end(&trace);
            let split = chronological(&t.sessions);
            (t, split, None)
        }
    };
    if split.test.is_empty() || split.train.is_empty() {
        return Err("the split leaves no training or no test session; use more data or other --test-percent".into());
    }
    let vocab = Arc::new(trace.vocab.clone());
    let cfg = EvalConfig {
        budget: a.budget,
        threshold: a.threshold,
    };
    let fit: Vec<_> = split.train.iter().chain(&split.val).cloned().collect();
    let mut predictors: Vec<Box<dyn Predictor>> = vec![
        Box::new(Reactive::new(vocab.clone())),
        Box::new(StaticGraph::new(vocab.clone(), &cat)),
    ];
    for mut p in [
        Ppm::popularity(vocab.clone()),
        Ppm::markov1(vocab.clone()),
        Ppm::new(vocab.clone(), a.ppm_order),
    ] {
        observe_sessions(&mut p, &fit);
        predictors.push(Box::new(p));
    }
    // The context-aware count baseline: the conditioning is chosen on the validation split
    // (trained on the training split), then refitted on training and validation.
    let (chosen, tried) = ContextPpm::select(
        vocab.clone(),
        &trace.attributes,
        a.ppm_order,
        &split.train,
        &split.val,
    );
    eprintln!(
        "context-aware PPM, validation top-1 by conditioning: {}",
        tried
            .iter()
            .map(|(n, s)| format!("{n} {:.1} %", 100.0 * s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The count model the learned models are mixed with: the best count model on the
    // validation split (the context-aware PPM included), fitted like the weights on the
    // training split, then refitted on training and validation for the mixture.
    let ppm_name = Ppm::new(vocab.clone(), a.ppm_order).name().to_owned();
    let mut ctx_ppm = chosen.fresh();
    let (mix_counts, mix_tried) =
        CountModel::select(vocab.clone(), chosen, a.ppm_order, &split.train, &split.val);
    super::report_mixture(&mix_counts, &mix_tried);
    observe_sessions(&mut ctx_ppm, &fit);
    let ctx_ppm_name = ctx_ppm.name().to_owned();
    predictors.push(Box::new(ctx_ppm));
    let mut learned = Vec::new();
    if !a.no_train {
        for &kind in &a.models {
            let hp = a.hyper.params_for(kind, &trace.attributes);
            let trained = train_with_bar(
                &hp,
                vocab.clone(),
                &trace.attributes,
                &split.train,
                &split.val,
            )?;
            if let Some(dir) = &a.save_dir {
                std::fs::create_dir_all(dir)?;
                let (w, _) = nn::save(&trained, &dir.join(kind.name()), saved_split, &desc, None)?;
                eprintln!("saved {}", w.display());
            }
            learned.push(NeuralPredictor::new(&trained)?);
        }
    }
    for path in &a.load {
        let (side, trained) = nn::load(path)?;
        if side.split != Some(spec) {
            return Err(format!(
                "{} was trained with split {:?}, this evaluation uses {spec:?}: its training sessions could be in the test set; pass the same --split-seed/--test-percent/--val-percent or retrain",
                path.display(),
                side.split
            )
            .into());
        }
        if *trained.vocab != *vocab {
            return Err(format!(
                "{} was trained with another vocabulary; retrain it on this data",
                path.display()
            )
            .into());
        }
        if side.data != desc {
            log::warn!(
                "{} was trained on {}, evaluating on {desc}",
                path.display(),
                side.data
            );
        }
        learned.push(NeuralPredictor::new(&trained)?);
    }
    // Each learned model alone, then mixed with the chosen count model (weight fitted on the
    // validation split against the count model counted on the training split; the mixture
    // uses the one counted on training and validation).
    let mut hybrids: Vec<Box<dyn Predictor>> = Vec::new();
    for m in learned {
        let w = fit_weights(&m, &mix_counts, &split.val);
        let mut ppm = mix_counts.fresh();
        observe_sessions(&mut ppm, &fit);
        eprintln!(
            "{}+{}: weights {:?} on the learned model by count evidence 0, 1-3, 4-15, 16-63, 64-255, 256+ (fitted on the validation split)",
            m.name(),
            ppm.name(),
            w.0
        );
        hybrids.push(Box::new(Hybrid::new(m.clone(), ppm, w)?));
        predictors.push(Box::new(m));
    }
    predictors.extend(hybrids);
    let mut rows: Vec<Metrics> = predictors
        .iter()
        .map(|p| evaluate(p.as_ref(), &split.test, cfg))
        .collect();
    if let Some(b) = bayes_optimal(&split.test, cfg) {
        rows.push(b);
    }
    let how = match a.protocol {
        Protocol::Random => format!("split seed {}", spec.seed),
        Protocol::ProcessMining => {
            "process-mining protocol: chronological split, end of session a class, every prefix"
                .into()
        }
    };
    println!(
        "data: {desc}; {} request types; sessions: {} train, {} validation, {} test ({how}); {} test positions; budget K = {}, threshold {}",
        vocab.len() - 1,
        split.train.len(),
        split.val.len(),
        split.test.len(),
        rows[0].positions,
        cfg.budget,
        cfg.threshold
    );
    print!("{}", table(&rows, cfg));
    // The baselines (the best by top-1 is the reference); every other row is compared.
    let baselines = [
        "reactive",
        "static-graph",
        "popularity",
        "markov1",
        &ppm_name,
        &ctx_ppm_name,
    ];
    let versus = comparison(&rows, &baselines);
    if !versus.is_empty() {
        println!(
            "\nagainst the best count-based baseline, paired on the same positions (95 % intervals, sessions resampled):"
        );
        print!("{versus}");
    }
    if let Some(limit) = rows.iter().find(|m| !m.expected_top1.is_empty()) {
        println!(
            "\nagainst the Bayes limit's top-1, paired on the same positions (95 % intervals, sessions resampled):"
        );
        println!("| predictor | top-1 points vs the limit (95 % CI) |");
        println!("| --- | ---: |");
        for m in &rows {
            if let Some(d) = versus_limit(m, limit) {
                println!(
                    "| {} | {:+.1} ± {:.1} |",
                    m.name,
                    100.0 * d.mean,
                    100.0 * d.ci95
                );
            }
        }
    }
    let lengths = [1, 8, 24, 47];
    println!(
        "\nstateless predict (a full pass over the context): us per call by context length, {} calls each, one core:",
        a.latency_calls
    );
    println!(
        "| predictor | {} |",
        lengths.map(|n| format!("{n} requests")).join(" | ")
    );
    println!("| --- |{}", " ---: |".repeat(lengths.len()));
    for p in predictors.iter().skip(1) {
        let lat = latency_by_context(p.as_ref(), &lengths, a.latency_calls, cfg.budget);
        let cells: Vec<String> = lat.iter().map(|u| format!("{u:.2}")).collect();
        println!("| {} | {} |", p.name(), cells.join(" | "));
    }
    if let Some(p) = &a.plot {
        plot(&rows, &format!("pto eval: {desc}"), p)?;
        println!("plot: {}", p.display());
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
