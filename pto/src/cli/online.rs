//! `pto audit verify` and `pto simulate`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Subcommand};
use see_pto::{
    audit::{self, hex, parse_hash},
    nn::{self, ModelKind},
    online::{
        origin::OriginModel,
        predictor_for,
        simulate::{measure_work_ns_per_byte, run_modes, working_set_bytes, SimConfig, Targets},
        Mode, ModeSummary, Orchestrator, Policy,
    },
    predict::{observe_sessions, Ppm, Predictor},
    trace::Trace,
};

use super::{train_with_bar, CliResult, DataArgs, HyperArgs, SplitArgs};

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check an audit log: its hash chain, the signature of every checkpoint by a trusted audit
    /// key, and that it ends with a closing checkpoint. Names the first broken record; exit 1
    /// if anything fails.
    Verify {
        /// The log (JSON lines).
        file: PathBuf,
        /// A trusted audit public key (SEC1, like target/see-keys/audit.pub); repeat for
        /// several. Required unless --chain-only.
        #[arg(long = "key", required_unless_present = "chain_only")]
        keys: Vec<PathBuf>,
        /// Check the hash chain alone: no signatures, so neither a log cut at its end nor one
        /// rewritten from scratch is detected (use with --expect-head).
        #[arg(long, conflicts_with = "keys")]
        chain_only: bool,
        /// Accept a log that does not end with a closing checkpoint (its writer crashed);
        /// the records after the last checkpoint are still reported.
        #[arg(long)]
        allow_unclosed: bool,
        /// The head hash kept elsewhere: also catches whole runs cut off the end.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

pub fn audit_cmd(a: &AuditArgs) -> CliResult<()> {
    let AuditCommand::Verify {
        file,
        keys,
        chain_only,
        allow_unclosed,
        expect_head,
    } = &a.command;
    let verified = if *chain_only {
        audit::verify(file)?
    } else {
        let mut trusted = audit::TrustedKeys::none();
        for k in keys {
            trusted = trusted.with_file(k)?;
        }
        audit::verify_file_anchored(file, &trusted)?
    }
    .map_err(|b| format!("{}: broken at {b}", file.display()))?;
    if !*chain_only {
        if let Err(unclosed) = verified.require_closed() {
            if !*allow_unclosed {
                return Err(format!("{}: {unclosed}", file.display()).into());
            }
            log::warn!("{}: {unclosed}", file.display());
        }
    }
    let head = verified.head.map(|h| (h.seq, hex(&h.hash)));
    if let Some(want) = expect_head {
        let want_hash = parse_hash(want).ok_or("--expect-head: want 64 hex digits")?;
        if head.as_ref().map(|h| h.1.as_str()) != Some(hex(&want_hash).as_str()) {
            return Err(format!(
                "{}: the chain is intact but its head is not {want}: records were cut off the end or the log was replaced",
                file.display()
            )
            .into());
        }
    }
    match head {
        Some((seq, hash)) => println!(
            "{}: ok, {} records ({} signed checkpoints{}), head seq {seq} hash {hash}",
            file.display(),
            verified.records,
            verified.checkpoints,
            if verified.closed() {
                ", closed"
            } else {
                ", NOT closed"
            }
        ),
        None => println!("{}: ok, empty", file.display()),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    split: SplitArgs,
    #[command(flatten)]
    hyper: HyperArgs,
    /// Modes to run.
    #[arg(
        long,
        value_parser = super::by_name::<Mode>(Mode::ALL.map(Mode::name)),
        value_delimiter = ',',
        default_values_t = Mode::ALL
    )]
    modes: Vec<Mode>,
    /// Checkpoint for the learned mode (default: train an LSTM on the training split here).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Test sessions to replay (at most).
    #[arg(long, default_value_t = 300)]
    replay: usize,
    /// Staging budget, MiB.
    #[arg(long, default_value_t = (Policy::default().budget_bytes >> 20) as f64)]
    budget_mib: f64,
    /// Confidence threshold.
    #[arg(long, default_value_t = Policy::default().threshold)]
    threshold: f32,
    /// Predictions considered per request.
    #[arg(long, default_value_t = Policy::default().top_k)]
    top_k: usize,
    /// Requests after which an unwanted staged resource is stale.
    #[arg(long, default_value_t = Policy::default().stale_after)]
    stale_after: u64,
    /// Origin latency, ms.
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    /// Origin bandwidth, MiB/s.
    #[arg(long, default_value_t = 100.0)]
    bandwidth_mib: f64,
    /// Multiply every resource size by this (e.g. 0.0156 for a 64x smaller catalogue).
    #[arg(long, default_value_t = 1.0)]
    size_scale: f64,
    /// Guest work per byte, ns (default: measure see-workload's process here).
    #[arg(long)]
    work_ns_per_byte: Option<f64>,
}

fn learned(
    a: &SimulateArgs,
    trace: &Trace,
    split: &see_pto::split::Split,
) -> CliResult<Box<dyn Predictor>> {
    if let Some(m) = &a.model {
        let cat = a.data.catalogue()?;
        return Ok(predictor_for(Mode::Learned, &cat, trace, Some(m))?);
    }
    let vocab = Arc::new(trace.vocab.clone());
    let hp = a.hyper.params(ModelKind::Lstm);
    let trained = train_with_bar(&hp, vocab.clone(), &split.train, &split.val)?;
    let model = nn::NeuralPredictor::new(&trained)?;
    let mut ppm = Ppm::new(vocab, 4);
    observe_sessions(&mut ppm, &split.train);
    let weights = nn::fit_weights(&model, &ppm, &split.val);
    observe_sessions(&mut ppm, &split.val);
    Ok(Box::new(nn::Hybrid::new(model, ppm, weights)?))
}

pub fn simulate_cmd(a: &SimulateArgs) -> CliResult<()> {
    if !(a.size_scale.is_finite() && a.size_scale > 0.0) {
        return Err(format!("--size-scale {} must be a positive number", a.size_scale).into());
    }
    let mut cat = a.data.catalogue()?;
    cat.scale_sizes(a.size_scale);
    let cat = Arc::new(cat);
    let (trace, desc) = a.data.load(&cat)?;
    let mut trace = Trace {
        sessions: trace.sessions_in(&cat.vocabulary()),
        vocab: cat.vocabulary(),
    };
    let unknown = trace.drop_unknown();
    if unknown > 0 {
        println!("{unknown} requests of types the catalogue does not describe left out");
    }
    let split = a.split.spec()?.split(&trace.sessions);
    let mut past = split.train.clone();
    past.extend(split.val.iter().cloned());
    let past = Trace {
        vocab: trace.vocab.clone(),
        sessions: past,
    };
    let test: Vec<_> = split.test.iter().take(a.replay).cloned().collect();
    if test.is_empty() {
        return Err(
            "no test sessions to replay: generate more sessions or raise --test-percent".into(),
        );
    }
    let policy = Policy {
        budget_bytes: (a.budget_mib * 1024.0 * 1024.0) as u64,
        threshold: a.threshold,
        top_k: a.top_k,
        stale_after: a.stale_after,
    };
    policy.validate()?;
    let origin = OriginModel::new(
        Duration::from_secs_f64(a.latency_ms.max(0.0) / 1e3),
        a.bandwidth_mib * 1024.0 * 1024.0,
    )?;
    let work = match a.work_ns_per_byte {
        Some(w) if w.is_finite() && w >= 0.0 => w,
        Some(w) => return Err(format!("--work-ns-per-byte {w} must be >= 0").into()),
        None => measure_work_ns_per_byte()?,
    };
    let cfg = SimConfig {
        origin,
        work_ns_per_byte: work,
        store_budget: policy.budget_bytes,
        ..SimConfig::default()
    };
    let mut learned_predictor = if a.modes.contains(&Mode::Learned) {
        Some(learned(a, &trace, &split)?)
    } else {
        None
    };
    let requests: usize = test.iter().map(|s| s.requests.len()).sum();
    println!(
        "workload: {desc}; replaying {} test sessions ({requests} requests), trained on {}",
        test.len(),
        past.sessions.len()
    );
    let work_source = if a.work_ns_per_byte.is_some() {
        "given"
    } else {
        "see-workload process, measured here"
    };
    println!("{origin}; guest work {work:.2} ns/byte ({work_source}); claim {} us, demand round trip {} us, bundle check {} us",
        cfg.claim_ns / 1000, cfg.demand_rtt_ns / 1000, cfg.verify_ns / 1000);
    let total: u64 = cat.resources.iter().map(|r| r.size).sum();
    println!(
        "catalogue {}: {} request types, {} resources, {:.1} MiB in all (size scale {})",
        cat.name,
        cat.requests.len(),
        cat.resources.len(),
        total as f64 / 1048576.0,
        a.size_scale
    );
    let working_set = working_set_bytes(&cat, &test);
    println!(
        "working set of the replayed requests: {:.1} MiB",
        working_set as f64 / 1048576.0
    );
    println!(
        "policy: budget {:.0} MiB, threshold {}, top {}, stale after {} requests",
        a.budget_mib, policy.threshold, policy.top_k, policy.stale_after
    );
    let rows = run_modes(&cat, &test, &a.modes, &cfg, &mut |m, order| match m {
        Mode::Oracle => Orchestrator::oracle(cat.clone(), policy.clone(), order),
        Mode::Learned => {
            let p = learned_predictor
                .take()
                .ok_or(see_pto::online::OnlineError::DuplicateMode(m))?;
            Ok(Orchestrator::new(cat.clone(), m, p, policy.clone())?.with_starts(&past))
        }
        _ => {
            let p = predictor_for(m, &cat, &past, None)?;
            Ok(Orchestrator::new(cat.clone(), m, p, policy.clone())?.with_starts(&past))
        }
    })?;
    println!("{}", ModeSummary::header());
    for r in &rows {
        println!("{r}");
    }
    if let Some(t) = Targets::from_rows(&rows) {
        println!("{}", t.with_working_set(&rows, working_set));
    }
    Ok(())
}
