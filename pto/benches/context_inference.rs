//! The stateful inference cost per request with request context (the online target:
//! 50 us or less per request on one core).
//!
//! Trains a small LSTM and Transformer (defaults, a few epochs: the cost does not depend on
//! how well they are trained) with attribute and time features on a generated cohort
//! workload, then replays the test sessions request by request, as the online path does:
//! `predict_session` with one carried state per session, and the orchestrator's whole
//! `on_request_with` (prediction, expansion into resources, staging) with the request's
//! attributes. Prints one row per measurement and whether it meets the target, and the same
//! for the models without context (context width 0) on the same machine at the same time:
//! the difference is what the context costs, whatever else loads the machine. The models with
//! context are also measured as the learned mode serves them online: mixed with the count model
//! chosen on validation (`nn::choose_mixture`, the context-aware PPM on this workload).
//!
//! Run: `nice -n 19 cargo bench -p see-pto --bench context_inference` (about 1 to 2 minutes on
//! 2 cores, the training included).

use std::{sync::Arc, time::Instant};

use see_pto::{
    generate::{generate, Workload, WorkloadSpec},
    metadata::ServiceCatalogue,
    nn::{
        choose_mixture, train_with_context, ContextShape, Hybrid, HyperParams, ModelKind,
        NeuralPredictor,
    },
    online::{Mode, Orchestrator, Policy},
    predict::{observe_sessions, Predictor, SessionContext, SessionState},
    split::SplitSpec,
    trace::Session,
};

/// The online target, microseconds per request.
const TARGET_US: f64 = 50.0;

/// Mean microseconds of one stateful prediction per request over `sessions` (repeated `reps`
/// times), with the requests' context.
fn stateful_us(p: &dyn Predictor, sessions: &[Session], reps: usize) -> f64 {
    let (mut n, start) = (0u64, Instant::now());
    let mut sink = 0usize;
    for _ in 0..reps {
        for s in sessions {
            let mut state = SessionState::default();
            let mut ctx = SessionContext::new();
            for (r, f) in s.requests.iter().zip(s.features()) {
                ctx.push_with(r.kind, f);
                sink += p.predict_session(&mut state, &ctx, 3).len();
                n += 1;
            }
        }
    }
    std::hint::black_box(sink);
    start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Mean microseconds of the orchestrator's `on_request_with` per request, in the learned mode.
fn orchestrator_us(
    cat: &Arc<ServiceCatalogue>,
    p: Box<dyn Predictor>,
    sessions: &[Session],
    vocab: &see_pto::vocab::Vocabulary,
    cohort_of: &dyn Fn(&Session) -> String,
) -> f64 {
    let mut o = Orchestrator::new(cat.clone(), Mode::Learned, p, Policy::default())
        .expect("the default policy is valid");
    let (mut n, start) = (0u64, Instant::now());
    for (i, s) in sessions.iter().enumerate() {
        let cohort = cohort_of(s);
        for r in &s.requests {
            let name = vocab.name(r.kind).expect("generated over the catalogue");
            o.on_request_with(
                i as u64 + 1,
                name,
                (r.at_ms * 1000) as u64,
                &[("cohort", &cohort)],
            )
            .expect("a catalogue request");
            n += 1;
        }
        o.end_session(i as u64 + 1).expect("ends");
    }
    start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
}

fn main() {
    let cat = Arc::new(ServiceCatalogue::default_catalogue());
    let trace = generate(
        &cat.vocabulary(),
        &WorkloadSpec::preset(Workload::Cohort, 1500, 1),
    )
    .expect("the preset is valid");
    let split = SplitSpec::default().split(&trace.sessions);
    let vocab = Arc::new(trace.vocab.clone());
    let cohort_of = |s: &Session| {
        let id = s.requests.first().map_or(0, |r| r.attrs.get(0));
        trace
            .attributes
            .values(0)
            .and_then(|v| v.name(u32::from(id)))
            .unwrap_or("")
            .to_owned()
    };
    let shapes = [
        ContextShape::of(&trace.attributes, true),
        ContextShape::default(),
    ];
    let learned: Vec<(ModelKind, usize, NeuralPredictor)> =
        [ModelKind::Lstm, ModelKind::Transformer]
            .into_iter()
            .flat_map(|k| shapes.clone().map(|s| (k, s)))
            .map(|(kind, context)| {
                let hp = HyperParams {
                    epochs: 2,
                    context,
                    ..HyperParams::default_for(kind)
                };
                let trained = train_with_context(
                    &hp,
                    vocab.clone(),
                    &trace.attributes,
                    &split.train,
                    &split.val,
                    &mut |_| {},
                )
                .expect("training runs");
                let p = NeuralPredictor::new(&trained).expect("fresh weights load");
                (kind, hp.context.width(), p)
            })
            .collect();
    // Each model alone, and each model with context mixed with its count model as online.
    type Make = Box<dyn Fn() -> Box<dyn Predictor>>;
    let mut models: Vec<(String, usize, Make)> = Vec::new();
    for (kind, width, p) in learned {
        if width > 0 {
            let (mut counts, weights, _) =
                choose_mixture(&p, &trace.attributes, 4, &split.train, &split.val);
            observe_sessions(&mut counts, &split.val);
            let h = Hybrid::new(p.clone(), counts, weights).expect("one vocabulary");
            let name = h.name().to_owned();
            models.push((name, width, Box::new(move || Box::new(h.clone()))));
        }
        let name = kind.name().to_owned();
        models.push((name, width, Box::new(move || Box::new(p.clone()))));
    }
    // Five rounds; each round measures every model and measure in turn, so that each sees the
    // same load from the rest of the machine. The fastest round is the least disturbed one,
    // the median says how disturbed they were.
    const MEASURES: [&str; 2] = ["predict_session", "orchestrator on_request_with"];
    let mut times = vec![Vec::new(); models.len() * MEASURES.len()];
    for _ in 0..5 {
        for (i, (_, _, make)) in models.iter().enumerate() {
            times[2 * i].push(stateful_us(make().as_ref(), &split.test, 1));
            times[2 * i + 1].push(orchestrator_us(
                &cat,
                make(),
                &split.test,
                &trace.vocab,
                &cohort_of,
            ));
        }
    }
    println!(
        "| model | context width | measure | us/request (best of 5) | median | target {TARGET_US} us |"
    );
    println!("| --- | ---: | --- | ---: | ---: | --- |");
    for (i, (name, width, _)) in models.iter().enumerate() {
        for (j, what) in MEASURES.iter().enumerate() {
            let v = &mut times[2 * i + j];
            v.sort_by(f64::total_cmp);
            let (best, median) = (v[0], v[v.len() / 2]);
            println!(
                "| {name} | {width} | {what} | {best:.2} | {median:.2} | {} |",
                if best <= TARGET_US { "met" } else { "missed" }
            );
        }
    }
}
