//! `pto audit verify` and `pto simulate` (its sweeps are in [`super::sweep`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Subcommand};
use see_pto::{
    audit::{self, hex, parse_hash},
    metadata::ServiceCatalogue,
    nn::{self, ModelKind},
    online::{
        origin::OriginModel,
        predictor_for,
        simulate::{
            measure_verify_cost, measure_work_ns_per_byte, rep_groups, replay_modes,
            working_set_bytes, SimConfig, Targets, VerifyCost,
        },
        Mode, ModeSummary, OnlineError, Orchestrator, Policy,
    },
    predict::{observe_sessions, CountModel, Predictor},
    split::Split,
    trace::{Session, Trace},
};

use super::{sweep::SweepArgs, train_with_bar, CliResult, DataArgs, HyperArgs, SplitArgs};

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

/// Flags mirror `see-demo`'s one to one where both have them: `--latency-ms`,
/// `--bandwidth-mib`, `--size-scale`, `--budget-mib`, `--requests`, `--reps`, `--eager-prefetch`,
/// `--threshold`, `--top-k`, `--epochs`, `--modes`; the demo's `--think-ms` is
/// `--think-cap-ms` here and the demo's `--sessions N --seed S` are
/// `--workload goal --sessions N --workload-seed S`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Modes to run.
    #[arg(
        long,
        value_parser = super::by_name::<Mode>(Mode::ALL.map(Mode::name)),
        value_delimiter = ',',
        default_values_t = Mode::ALL
    )]
    pub modes: Vec<Mode>,
    /// Checkpoint for the learned mode (default: train an LSTM on the training split here).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Test sessions to replay (at most).
    #[arg(long, default_value_t = 300)]
    pub replay: usize,
    /// Replay the first test sessions holding this many requests, the last one cut short (as
    /// the demo's --requests does), in each of --reps repetitions, instead of --replay
    /// sessions once.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Repetitions of --requests requests, as the demo's --reps: the held-out sessions cut in
    /// order into disjoint groups, each mode replaying each group from a cold guest cache and
    /// a fresh predictor; the figure compared with the VM is the median over them of each
    /// one's p50.
    #[arg(long, default_value_t = 3, requires = "requests")]
    pub reps: usize,
    /// Staging budget and the guest's store, MiB.
    #[arg(long, default_value_t = (Policy::default().budget_bytes >> 20) as f64)]
    pub budget_mib: f64,
    /// The budget as a share of the replay's working set (e.g. 0.25), instead of --budget-mib.
    #[arg(long)]
    pub budget_share: Option<f64>,
    /// Confidence threshold.
    #[arg(long, default_value_t = Policy::default().threshold)]
    pub threshold: f32,
    /// Predictions considered per request.
    #[arg(long, default_value_t = Policy::default().top_k)]
    pub top_k: usize,
    /// Requests after which an unwanted staged resource is stale.
    #[arg(long, default_value_t = Policy::default().stale_after)]
    pub stale_after: u64,
    /// Origin latency, ms.
    #[arg(long, default_value_t = 20.0)]
    pub latency_ms: f64,
    /// Origin bandwidth, MiB/s.
    #[arg(long, default_value_t = 100.0)]
    pub bandwidth_mib: f64,
    /// Multiply every resource size by this (e.g. 0.0156 for a 64x smaller catalogue).
    #[arg(long, default_value_t = 1.0)]
    pub size_scale: f64,
    /// Longest think time taken from the trace, ms; also the pause before a session's first
    /// request (the demo's --think-ms).
    #[arg(long, default_value_t = SimConfig::default().think_cap_ms)]
    pub think_cap_ms: f64,
    /// Demand fetches a request keeps outstanding (the guest driver's max_demands).
    #[arg(long, default_value_t = SimConfig::default().max_demands)]
    pub max_demands: usize,
    /// Origin fetches in progress at once (the backend's pool of fetchers).
    #[arg(long, default_value_t = SimConfig::default().origin_workers)]
    pub origin_workers: usize,
    /// Send a request's prefetch orders at dispatch, not at its completion.
    #[arg(long)]
    pub eager_prefetch: bool,
    /// Guest work per byte, ns (default: measure see-workload's process here).
    #[arg(long)]
    pub work_ns_per_byte: Option<f64>,
    /// The guest's signature check of a bundle, us (default: time the driver's P-384 check
    /// here, scaled like the work: by --work-ns-per-byte over the work measured here).
    #[arg(long)]
    pub verify_sig_us: Option<f64>,
    /// The guest's hash of a bundle's bytes, ns per byte (default: time SHA-384 here, scaled
    /// like the signature check).
    #[arg(long)]
    pub verify_ns_per_byte: Option<f64>,
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// Builds a fresh learned predictor for each run: from the checkpoint, or from one LSTM
/// trained here on the training split and mixed with the count model chosen on validation as
/// `pto train` does.
pub enum LearnedSource {
    /// A checkpoint on disk.
    Checkpoint(PathBuf),
    /// Trained here.
    Trained {
        /// The LSTM.
        trained: Box<nn::Trained>,
        /// The count model chosen on validation, over the training and validation sessions.
        counts: Box<CountModel>,
        /// The mixture's weights, fitted on validation.
        weights: nn::MixWeights,
    },
}

impl LearnedSource {
    /// Trains (or finds) the learned model of `a`.
    pub fn new(a: &SimulateArgs, trace: &Trace, split: &Split) -> CliResult<Self> {
        if let Some(m) = &a.model {
            return Ok(Self::Checkpoint(m.clone()));
        }
        let vocab = Arc::new(trace.vocab.clone());
        let hp = a.hyper.params_for(ModelKind::Lstm, &trace.attributes);
        let trained = train_with_bar(&hp, vocab, &trace.attributes, &split.train, &split.val)?;
        let model = nn::NeuralPredictor::new(&trained)?;
        let (mut counts, weights, tried) =
            nn::choose_mixture(&model, &trace.attributes, 4, &split.train, &split.val);
        super::report_mixture(&counts, &tried);
        observe_sessions(&mut counts, &split.val);
        Ok(Self::Trained {
            trained: Box::new(trained),
            counts: Box::new(counts),
            weights,
        })
    }

    /// A fresh predictor.
    pub fn make(
        &self,
        cat: &ServiceCatalogue,
        trace: &Trace,
    ) -> Result<Box<dyn Predictor>, OnlineError> {
        match self {
            Self::Checkpoint(m) => predictor_for(Mode::Learned, cat, trace, Some(m)),
            Self::Trained {
                trained,
                counts,
                weights,
            } => {
                let model = nn::NeuralPredictor::new(trained).map_err(OnlineError::Model)?;
                Ok(Box::new(
                    nn::Hybrid::new(model, (**counts).clone(), *weights)
                        .map_err(OnlineError::Model)?,
                ))
            }
        }
    }
}

/// What every run of `pto simulate` shares: the sessions, split, and the replay.
pub struct Setup {
    /// The catalogue at size scale 1 (each run scales its own copy).
    pub catalogue: ServiceCatalogue,
    /// Every session.
    pub trace: Trace,
    /// Where they came from.
    pub desc: String,
    /// The split.
    pub split: Split,
    /// Training and validation sessions: what the predictors learn from.
    pub past: Trace,
    /// The replayed test sessions, one group per repetition.
    pub groups: Vec<Vec<Session>>,
    /// Every group's sessions, in order.
    pub test: Vec<Session>,
}

impl Setup {
    /// Loads and splits the sessions of `a`.
    pub fn new(a: &SimulateArgs) -> CliResult<Self> {
        let catalogue = a.data.catalogue()?;
        let (trace, desc) = a.data.load(&catalogue)?;
        let mut trace = Trace {
            attributes: trace.attributes.clone(),
            sessions: trace.sessions_in(&catalogue.vocabulary()),
            vocab: catalogue.vocabulary(),
        };
        let unknown = trace.drop_unknown();
        if unknown > 0 {
            println!("{unknown} requests of types the catalogue does not describe left out");
        }
        let split = a.split.spec()?.split(&trace.sessions);
        let mut past = split.train.clone();
        past.extend(split.val.iter().cloned());
        let past = Trace {
            attributes: trace.attributes.clone(),
            vocab: trace.vocab.clone(),
            sessions: past,
        };
        let groups = match a.requests {
            Some(n) => rep_groups(&split.test, a.reps, n)?,
            None => vec![split.test.iter().take(a.replay).cloned().collect()],
        };
        let test: Vec<Session> = groups.iter().flatten().cloned().collect();
        if test.is_empty() {
            return Err(
                "no test sessions to replay: generate more sessions or raise --test-percent".into(),
            );
        }
        Ok(Self {
            catalogue,
            trace,
            desc,
            split,
            past,
            groups,
            test,
        })
    }

    /// The sessions of the first repetition: what a budget given as a share of the working
    /// set is a share of (each repetition starts cold, and the demo is given the same budget).
    pub fn first_group(&self) -> &[Session] {
        self.groups.first().map_or(&[], Vec::as_slice)
    }

    /// The catalogue scaled by `size_scale`.
    pub fn scaled(&self, size_scale: f64) -> Arc<ServiceCatalogue> {
        let mut cat = self.catalogue.clone();
        cat.scale_sizes(size_scale);
        Arc::new(cat)
    }
}

/// Checks a positive finite number.
pub fn positive(what: &str, x: f64) -> CliResult<f64> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{what} {x} must be a positive number").into())
    }
}

/// The guest's work per byte: given, or measured here; and where it came from.
pub fn work_cost(a: &SimulateArgs) -> CliResult<(f64, &'static str)> {
    match a.work_ns_per_byte {
        Some(w) if w.is_finite() && w >= 0.0 => Ok((w, "given")),
        Some(w) => Err(format!("--work-ns-per-byte {w} must be >= 0").into()),
        None => Ok((
            measure_work_ns_per_byte()?,
            "see-workload process, measured here",
        )),
    }
}

/// The guest's bundle check: given, or timed here and scaled by how much slower the guest
/// works than this host (a given --work-ns-per-byte over the work measured here); and where it
/// came from.
pub fn verify_cost(a: &SimulateArgs, work: f64) -> CliResult<(VerifyCost, String)> {
    let given = |x: Option<f64>, what: &str| match x {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        Some(v) => Err(format!("{what} {v} must be >= 0")),
        None => Ok(None),
    };
    let sig_us = given(a.verify_sig_us, "--verify-sig-us")?;
    let per_byte = given(a.verify_ns_per_byte, "--verify-ns-per-byte")?;
    if let (Some(s), Some(b)) = (sig_us, per_byte) {
        return Ok((
            VerifyCost {
                sig_ns: s * 1e3,
                ns_per_byte: b,
            },
            "given".into(),
        ));
    }
    // Timed in turns with the work (best of three each), so that a busy host slows both alike.
    let mut here = measure_verify_cost()?;
    let mut host_work = f64::INFINITY;
    if a.work_ns_per_byte.is_some() {
        for _ in 0..3 {
            host_work = host_work.min(measure_work_ns_per_byte()?);
            let c = measure_verify_cost()?;
            here.sig_ns = here.sig_ns.min(c.sig_ns);
            here.ns_per_byte = here.ns_per_byte.min(c.ns_per_byte);
        }
    }
    let factor = match a.work_ns_per_byte {
        Some(_) => work / host_work.max(1e-9),
        None => 1.0,
    };
    let c = here.scaled(factor);
    Ok((
        VerifyCost {
            sig_ns: sig_us.map_or(c.sig_ns, |s| s * 1e3),
            ns_per_byte: per_byte.unwrap_or(c.ns_per_byte),
        },
        format!(
            "timed here ({:.0} us + {:.2} ns/byte), times {factor:.2} for the guest's speed",
            here.sig_ns / 1e3,
            here.ns_per_byte
        ),
    ))
}

/// The simulated costs of `a` with the origin, budget and think-time cap given.
pub fn sim_config(
    a: &SimulateArgs,
    origin: OriginModel,
    budget: u64,
    think_ms: f64,
    work: f64,
    verify: VerifyCost,
) -> SimConfig {
    SimConfig {
        origin,
        work_ns_per_byte: work,
        verify_sig_ns: verify.sig_ns as u64,
        verify_ns_per_byte: verify.ns_per_byte,
        store_budget: budget,
        think_cap_ms: think_ms,
        session_gap_ms: think_ms,
        max_demands: a.max_demands.max(1),
        origin_workers: a.origin_workers.max(1),
        eager_prefetch: a.eager_prefetch,
        ..SimConfig::default()
    }
}

/// The policy of `a` with `budget` bytes.
pub fn policy(a: &SimulateArgs, budget: u64) -> CliResult<Policy> {
    let policy = Policy {
        budget_bytes: budget,
        threshold: a.threshold,
        top_k: a.top_k,
        stale_after: a.stale_after,
    };
    policy.validate()?;
    Ok(policy)
}

/// Builds the orchestrator of mode `m` (the oracle gets the replay order `order`).
pub fn orchestrator(
    m: Mode,
    order: Vec<(u64, String)>,
    cat: &Arc<ServiceCatalogue>,
    policy: &Policy,
    past: &Trace,
    learned: Option<&LearnedSource>,
) -> Result<Orchestrator, OnlineError> {
    match m {
        Mode::Oracle => Orchestrator::oracle(cat.clone(), policy.clone(), order),
        Mode::Learned => {
            let p = learned.ok_or(OnlineError::NoCheckpoint)?.make(cat, past)?;
            Ok(Orchestrator::new(cat.clone(), m, p, policy.clone())?
                .with_starts(past)
                .with_trace_attributes(&past.attributes))
        }
        _ => {
            let p = predictor_for(m, cat, past, None)?;
            Ok(Orchestrator::new(cat.clone(), m, p, policy.clone())?
                .with_starts(past)
                .with_trace_attributes(&past.attributes))
        }
    }
}

pub fn simulate_cmd(a: &SimulateArgs) -> CliResult<()> {
    let mut seen = std::collections::HashSet::new();
    if let Some(m) = a.modes.iter().find(|m| !seen.insert(**m)) {
        return Err(OnlineError::DuplicateMode(*m).into());
    }
    if !a.sweep.sweep.is_empty() {
        return super::sweep::sweep_cmd(a);
    }
    positive("--size-scale", a.size_scale)?;
    let setup = Setup::new(a)?;
    let cat = setup.scaled(a.size_scale);
    let test = &setup.test;
    let working_set = working_set_bytes(&cat, setup.first_group());
    let budget = match a.budget_share {
        Some(s) => (working_set as f64 * positive("--budget-share", s)?) as u64,
        None => (positive("--budget-mib", a.budget_mib)? * 1024.0 * 1024.0) as u64,
    };
    let policy = policy(a, budget)?;
    let origin = OriginModel::new(
        Duration::from_secs_f64(a.latency_ms.max(0.0) / 1e3),
        a.bandwidth_mib * 1024.0 * 1024.0,
    )?;
    let (work, work_source) = work_cost(a)?;
    let (verify, verify_source) = verify_cost(a, work)?;
    let cfg = sim_config(a, origin, budget, a.think_cap_ms, work, verify);
    let learned = if a.modes.contains(&Mode::Learned) {
        Some(LearnedSource::new(a, &setup.trace, &setup.split)?)
    } else {
        None
    };
    let requests: usize = test.iter().map(|s| s.requests.len()).sum();
    if let Some(l) = &learned {
        println!(
            "the learned mode's predictor: {}",
            l.make(&cat, &setup.past)?.name()
        );
    }
    println!(
        "workload: {}; replaying {} test sessions ({requests} requests) in {} repetitions, each mode and repetition from a cold guest and predictor; trained on {}",
        setup.desc,
        test.len(),
        setup.groups.len(),
        setup.past.sessions.len()
    );
    println!("{origin}; guest work {work:.2} ns/byte ({work_source}); claim {} us, demand round trip {} us, bundle check {:.0} us + {:.2} ns/byte ({verify_source}); {} demands outstanding, {} origin fetchers",
        cfg.claim_ns / 1000, cfg.demand_rtt_ns / 1000, verify.sig_ns / 1e3, verify.ns_per_byte, cfg.max_demands, cfg.origin_workers);
    let total: u64 = cat.resources.iter().map(|r| r.size).sum();
    println!(
        "catalogue {}: {} request types, {} resources, {:.1} MiB in all (size scale {})",
        cat.name,
        cat.requests.len(),
        cat.resources.len(),
        total as f64 / 1048576.0,
        a.size_scale
    );
    println!(
        "working set of the first repetition's requests: {:.1} MiB",
        working_set as f64 / 1048576.0
    );
    println!(
        "policy: budget {:.1} MiB, threshold {}, top {}, stale after {} requests; think time at most {} ms; prefetch orders sent at {}",
        budget as f64 / 1048576.0,
        policy.threshold,
        policy.top_k,
        policy.stale_after,
        a.think_cap_ms,
        if a.eager_prefetch { "dispatch" } else { "completion" }
    );
    let replays = replay_modes(&cat, &setup.groups, &a.modes, &cfg, &mut |m, order| {
        orchestrator(m, order, &cat, &policy, &setup.past, learned.as_ref())
    })?;
    let rows: Vec<ModeSummary> = replays.iter().map(|r| r.summary.clone()).collect();
    println!("the guest's latencies (from the app's start of a request), every repetition pooled");
    println!("{}", ModeSummary::header());
    for r in &rows {
        println!("{r}");
    }
    println!("p50 ms, the median over the repetitions of each one's: at the host (from the request's arrival: push waits included) and in the guest");
    for r in &replays {
        println!(
            "{:<16} host {:>8.2}  guest {:>8.2}",
            r.summary.mode,
            r.median_rep_p50_ms(true),
            r.median_rep_p50_ms(false)
        );
    }
    if let Some(t) = Targets::from_rows(&rows) {
        println!("{}", t.with_working_set(&rows, working_set));
    }
    Ok(())
}
