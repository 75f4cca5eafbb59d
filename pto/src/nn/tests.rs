use std::{path::Path, sync::Arc};

use candle_core::{Device, Tensor};

use super::{
    train::{batch, init, loss, Seq},
    *,
};
use crate::{
    context::{AttrValues, Attributes, ContextKey, Features},
    predict::{CountSpec, Ppm, Predictor, SessionContext},
    trace::{Request, Session},
};

fn tiny(kind: ModelKind) -> HyperParams {
    HyperParams {
        embed: 8,
        hidden: 12,
        layers: 2,
        heads: 2,
        max_len: 10,
        batch: 8,
        epochs: 60,
        patience: 60,
        learning_rate: 1e-2,
        ..HyperParams::default_for(kind)
    }
}

const KINDS: [ModelKind; 2] = [ModelKind::Lstm, ModelKind::Transformer];

/// A context of two attributes (3 and 4 values, the unknown included) and the time features.
fn ctx_shape() -> ContextShape {
    ContextShape {
        attribute_values: vec![3, 4],
        attr_embed: 3,
        time: true,
        gap_embed: 2,
        cross: true,
    }
}

/// The context of `seq`'s tokens: attribute values that vary with the position and real gaps
/// (the start token's unknown).
fn features_of(seq: &[u32]) -> Vec<Features> {
    let mut out = vec![Features::default()];
    let mut prev = None;
    for (j, &tok) in seq.iter().enumerate().skip(1) {
        let mut a = AttrValues::default();
        a.0[0] = (j % 3) as u16;
        a.0[1] = ((j + tok as usize) % 5) as u16; // 4 is past the vocabulary: unknown
        let at = 1_710_136_800_000 + (j * j * 1_700) as i64;
        out.push(Features::of(1_710_136_800_000, prev, at, a));
        prev = Some(at);
    }
    out
}

fn seq(tokens: Vec<u32>, context: bool) -> Seq {
    if context {
        Seq {
            features: features_of(&tokens),
            tokens,
        }
    } else {
        Seq::plain(tokens)
    }
}

#[test]
fn every_parameter_receives_a_non_zero_gradient() {
    for (kind, context) in KINDS.into_iter().flat_map(|k| [(k, false), (k, true)]) {
        let hp = HyperParams {
            context: if context {
                ctx_shape()
            } else {
                ContextShape::default()
            },
            ..tiny(kind)
        };
        let (vm, net) = init(&hp, 6).unwrap();
        let seqs = [
            seq(vec![6u32, 1, 2, 3, 4], context),
            seq(vec![6, 5, 0], context),
            seq(vec![6, 2, 2, 2, 1, 3, 5], context),
        ];
        let refs: Vec<&Seq> = seqs.iter().collect();
        let (i, t, m, c) = batch(&refs, &hp.context, 7, &Device::Cpu).unwrap();
        let mut d = Dropout::new(0.1, 3);
        let (l, n) = loss(net.as_ref(), &i, &c, &t, &m, Some(&mut d)).unwrap();
        assert_eq!(n, 12.0);
        let grads = l.backward().unwrap();
        let data = vm.data().lock().unwrap();
        let base = if kind == ModelKind::Lstm { 7 } else { 30 };
        let extra = match (context, kind) {
            (false, _) => 0,
            (true, ModelKind::Lstm) => 4,
            (true, ModelKind::Transformer) => 6,
        };
        assert!(data.len() >= base + extra, "{kind:?}: {} vars", data.len());
        for name in ["ctx.attr1.weight", "ctx.cross1.weight"] {
            assert_eq!(
                data.contains_key(name),
                context,
                "{kind:?}: {name} exists exactly when asked for"
            );
        }
        for (name, var) in data.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{kind:?}: {name} has no gradient"));
            let size = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(size > 0.0, "{kind:?}: the gradient of {name} is zero");
        }
        if context {
            // The time features reach the output too: other times, other logits.
            let (i, _, _, c) = batch(&refs, &hp.context, 7, &Device::Cpu).unwrap();
            let zero_time = ContextBatch {
                attrs: c.attrs.clone(),
                gap: c.gap.clone(),
                time: c.time.as_ref().map(|t| t.zeros_like().unwrap()),
                cross: c.cross.clone(),
            };
            let a = net.forward(&i, &c, None).unwrap();
            let b = net.forward(&i, &zero_time, None).unwrap();
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff > 1e-4, "{kind:?}: the time features are not read");
        }
    }
}

#[test]
fn the_fast_path_agrees_with_the_candle_graph() {
    let combos = KINDS
        .into_iter()
        .flat_map(|k| [(k, true, false), (k, false, false), (k, true, true)]);
    for (kind, pairs, context) in combos {
        let hp = HyperParams {
            pairs,
            context: if context {
                ctx_shape()
            } else {
                ContextShape::default()
            },
            ..tiny(kind)
        };
        let (vm, net) = init(&hp, 6).unwrap();
        let has_pair = vm.data().lock().unwrap().contains_key("pair.weight");
        assert_eq!(has_pair, pairs);
        let weights: Weights = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let fast = FastModel::from_weights(&hp, 6, &weights).unwrap();
        for tokens in [
            vec![6u32],
            vec![6, 1, 2],
            vec![6, 5, 4, 3, 2, 1, 0, 1, 2, 3],
        ] {
            let s = seq(tokens.clone(), context);
            // The context of every position, the last included.
            let c_all = ContextBatch::new(
                &hp.context,
                &[&s.tokens],
                &[&s.features],
                tokens.len(),
                7,
                &Device::Cpu,
            )
            .unwrap();
            let t = Tensor::from_vec(tokens.clone(), (1, tokens.len()), &Device::Cpu).unwrap();
            let all = net
                .forward(&t, &c_all, None)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let want = all.last().unwrap();
            let got = fast.logits(&tokens, &s.features);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{kind:?} {tokens:?}: {want:?} vs {got:?}"
                );
            }
        }
    }
}

/// Sessions where the first request (1 or 2) decides what follows every 3: 4 after 1, 5 after 2.
fn long_range(n: usize) -> Vec<Session> {
    (0..n)
        .map(|i| {
            let first = 1 + (i % 2) as u32;
            let mut kinds = vec![first];
            for j in 0..3 + i % 3 {
                kinds.push(3);
                kinds.push(if j % 2 == 0 { 3 + first } else { 6 });
            }
            Session {
                key: format!("s{i}"),
                requests: kinds.iter().map(|&kind| Request::new(kind, 0)).collect(),
                ..Session::default()
            }
        })
        .collect()
}

fn vocab() -> Arc<Vocabulary> {
    Arc::new(Vocabulary::from_names(["a", "b", "c", "d", "e", "f"]))
}

#[test]
fn training_learns_a_long_range_pattern_and_is_deterministic() {
    for kind in KINDS {
        let hp = tiny(kind);
        let data = long_range(96);
        let mut calls = 0;
        let t1 = train(&hp, vocab(), &data[..80], &data[80..], &mut |_| calls += 1).unwrap();
        assert!(calls > 40, "progress is reported");
        let t2 = train(&hp, vocab(), &data[..80], &data[80..], &mut |_| {}).unwrap();
        let mut names: Vec<_> = t1.weights.keys().collect();
        names.sort();
        for n in names {
            let (a, b) = (&t1.weights[n], &t2.weights[n]);
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(
                diff, 0.0,
                "{kind:?}: {n} differs between two runs with one seed"
            );
        }
        let p = NeuralPredictor::new(&t1).unwrap();
        // After "a c c c" the next "c" is followed by "d"; after "b c c c" by "e": a context
        // longer than first-order Markov can see.
        let after_a = p.predict(&SessionContext::from_ids(&[1, 3, 4, 3, 6, 3]), 1);
        let after_b = p.predict(&SessionContext::from_ids(&[2, 3, 5, 3, 6, 3]), 1);
        assert_eq!(
            (after_a[0].kind, after_b[0].kind),
            (4, 5),
            "{kind:?}: {:?}",
            t1.report
        );
        assert!(t1.report.best_val_loss < 0.7, "{kind:?}: {:?}", t1.report);
    }
}

/// Sessions of 6 requests over 5 types whose `group` attribute decides every step: after x
/// comes x + 1 in group 1 and x + 2 in group 2 (mod 5). The sequence alone cannot tell.
fn grouped(n: usize) -> (Vec<Session>, crate::context::Attributes) {
    let mut attrs = crate::context::Attributes::new(&["group"]).unwrap();
    attrs.intern(0, Some(b"one"));
    attrs.intern(0, Some(b"two"));
    let sessions = (0..n)
        .map(|i| {
            let group = 1 + (i % 2) as u16;
            let mut a = AttrValues::default();
            a.0[0] = group;
            let mut kind = 1 + (i / 2 % 5) as u32;
            let requests = (0..6)
                .map(|j| {
                    let r = Request {
                        kind,
                        at_ms: j * 2_000,
                        attrs: a,
                    };
                    kind = (kind - 1 + u32::from(group)) % 5 + 1;
                    r
                })
                .collect();
            Session {
                key: format!("g{i}"),
                requests,
                ..Session::default()
            }
        })
        .collect();
    (sessions, attrs)
}

#[test]
fn training_with_context_is_deterministic_and_reads_the_attribute() {
    for kind in KINDS {
        let (data, attrs) = grouped(96);
        let hp = HyperParams {
            context: ContextShape::of(&attrs, true),
            ..tiny(kind)
        };
        let run = || {
            train_with_context(&hp, vocab(), &attrs, &data[..80], &data[80..], &mut |_| {}).unwrap()
        };
        let (t1, t2) = (run(), run());
        assert!(t1.weights.contains_key("ctx.attr0.weight"));
        for (n, a) in &t1.weights {
            let same = a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == t2.weights[n]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
            assert!(same, "{kind:?}: {n} differs between two runs with one seed");
        }
        assert_eq!(t1.attributes, attrs, "the schema travels with the model");
        let p = NeuralPredictor::new(&t1).unwrap();
        assert!(p.attributes().is_some());
        let at = |group: u16| {
            let mut a = AttrValues::default();
            a.0[0] = group;
            SessionContext::with_features(&[3], &[Features::of(0, None, 0, a)])
        };
        // The same first request, another group, another answer: 3 -> 4 or 3 -> 5.
        let (one, two) = (p.predict(&at(1), 1), p.predict(&at(2), 1));
        assert_eq!(
            (one[0].kind, two[0].kind),
            (4, 5),
            "{kind:?}: {:?}",
            t1.report
        );
    }
}

/// Mean negative log-likelihood per request of `sessions` under `weights`, computed apart from
/// training (the fast path, no dropout).
fn nll(hp: &HyperParams, weights: &Weights, sessions: &[Session]) -> f32 {
    let v = vocab().len();
    let fast = FastModel::from_weights(hp, v, weights).unwrap();
    let (mut total, mut n) = (0f64, 0f64);
    for s in super::train::sequences(sessions, v, hp.max_len) {
        let seq = &s.tokens;
        for j in 0..seq.len() - 1 {
            let logits = fast.logits(&seq[..=j], &s.features[..=j]);
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_z = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
            total += f64::from(log_z - logits[seq[j + 1] as usize]);
            n += 1.0;
        }
    }
    (total / n) as f32
}

#[test]
fn early_stopping_ends_training_and_keeps_the_best_epoch() {
    // Validation sessions contradict the training ones (after "a ... c" comes "e", not "d"):
    // the better the model learns the training pattern, the worse it does on validation.
    let train_set = long_range(64);
    let val: Vec<Session> = long_range(16)
        .into_iter()
        .map(|mut s| {
            for r in &mut s.requests {
                r.kind = match r.kind {
                    4 => 5,
                    5 => 4,
                    k => k,
                };
            }
            s
        })
        .collect();
    for kind in KINDS {
        for patience in [1, 2] {
            let hp = HyperParams {
                epochs: 60,
                patience,
                ..tiny(kind)
            };
            let mut val_losses = Vec::new();
            let t = train(&hp, vocab(), &train_set, &val, &mut |p| {
                if let Some(v) = p.val_loss {
                    val_losses.push(v);
                }
            })
            .unwrap();
            let r = &t.report;
            assert!(r.stopped_early, "{kind:?} patience {patience}: {r:?}");
            assert!(r.epochs_run < hp.epochs, "{kind:?}: {r:?}");
            assert_eq!(val_losses.len(), r.epochs_run, "one validation per epoch");
            assert_eq!(
                r.epochs_run,
                r.best_epoch + patience,
                "{kind:?}: stops `patience` epochs after the best: {val_losses:?}"
            );
            let best = val_losses.iter().copied().fold(f32::INFINITY, f32::min);
            assert_eq!(r.best_val_loss, best, "{kind:?}: {val_losses:?}");
            assert_eq!(val_losses[r.best_epoch - 1], best);
            let last = *val_losses.last().unwrap();
            assert!(last > best, "{kind:?}: the last epoch was not the best");
            // The weights kept are the best epoch's, not the last epoch's.
            let kept = nll(&hp, &t.weights, &val);
            assert!(
                (kept - best).abs() < 1e-4,
                "{kind:?} patience {patience}: kept weights score {kept}, best epoch {best}, last {last}"
            );
        }
    }
}

#[test]
fn predictions_survive_odd_contexts() {
    let hp = tiny(ModelKind::Transformer);
    let (vm, _) = init(&hp, 7).unwrap();
    let weights: Weights = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let trained = Trained {
        hp,
        vocab: vocab(),
        weights,
        report: report(),
        attributes: Default::default(),
    };
    let p = NeuralPredictor::new(&trained).unwrap();
    let long: Vec<u32> = (0..100).map(|i| i % 7).collect();
    for ctx in [vec![], vec![999, 0, 3], long] {
        let out = p.predict(&SessionContext::from_ids(&ctx), 3);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|x| x.kind != 0 && x.probability > 0.0));
        let total: f32 = p.distribution(&SessionContext::from_ids(&ctx)).iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
}

fn report() -> TrainReport {
    TrainReport {
        epochs_run: 0,
        best_epoch: 0,
        best_val_loss: 0.0,
        train_loss: 0.0,
        stopped_early: false,
        seconds: 0.0,
        train_sessions: 0,
        val_sessions: 0,
    }
}

#[test]
fn checkpoints_round_trip_and_bad_ones_are_refused_or_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let hp = HyperParams {
        epochs: 2,
        ..tiny(ModelKind::Lstm)
    };
    let data = long_range(16);
    let t = train(&hp, vocab(), &data, &[], &mut |_| {}).unwrap();
    let stem = dir.path().join("m");
    let split = Some(crate::split::SplitSpec::default());
    let mix = Some(MixSpec {
        counts: CountSpec::Ppm { order: 2 },
        weights: MixWeights([0.5; 6]),
    });
    let (wpath, spath) = save(&t, &stem, split, "test", mix.clone()).unwrap();
    assert!(wpath.ends_with("m.safetensors") && spath.ends_with("m.json"));
    let (side, _) = load(&wpath).unwrap();
    assert_eq!(
        (side.split, side.data.as_str(), side.hyper.clone()),
        (split, "test", hp.clone())
    );
    let ctx = SessionContext::from_ids(&[1, 3, 4]);
    let original = NeuralPredictor::new(&t).unwrap().predict(&ctx, 4);
    assert_eq!(load_predictor(&spath).unwrap().predict(&ctx, 4), original);
    assert_eq!(side.mix, mix);
    assert_eq!(read_sidecar(&stem).unwrap(), side);
    let hybrid = load_hybrid(&stem, &data, &Attributes::default()).unwrap();
    assert_eq!(
        (hybrid.name(), hybrid.weights()),
        ("lstm+ppm2", MixWeights([0.5; 6]))
    );
    let mixed = hybrid.distribution(&ctx);
    let alone = NeuralPredictor::new(&t).unwrap().distribution(&ctx);
    let mut ppm = Ppm::new(vocab(), 2);
    crate::predict::observe_sessions(&mut ppm, &data);
    let counts = ppm.distribution(&ctx);
    for i in 0..mixed.len() {
        assert!((mixed[i] - 0.5 * (alone[i] + counts[i])).abs() < 1e-6);
    }

    let good_w = std::fs::read(&wpath).unwrap();
    let good_s = std::fs::read_to_string(&spath).unwrap();
    let restore = || {
        std::fs::write(&wpath, &good_w).unwrap();
        std::fs::write(&spath, &good_s).unwrap();
    };
    let expect = |what: &str, want: &str| {
        let err = load_predictor(&stem).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{what}: {err}");
        restore();
    };
    std::fs::write(&wpath, &good_w[..good_w.len() / 2]).unwrap();
    expect("truncated weights", "SHA-256");
    std::fs::write(&spath, "{ not json").unwrap();
    expect("garbage sidecar", "not a model sidecar");
    std::fs::write(&spath, good_s.replace("\"hidden\": 12", "\"hidden\": 16")).unwrap();
    expect("other hyper-parameters", "shape");
    std::fs::write(&spath, good_s.replace("\"f\"\n", "\"f\",\n    \"g\"\n")).unwrap();
    expect("a longer vocabulary", "shape");
    std::fs::write(&spath, good_s.replace("\"version\": 2", "\"version\": 9")).unwrap();
    expect("a future format", "version 9");
    // A count model beyond the attribute schema (the model has none).
    let mut bad: serde_json::Value = serde_json::from_str(&good_s).unwrap();
    bad["mix"]["counts"] =
        serde_json::json!({"kind": "context-ppm", "order": 2, "on": [{"attribute": 0}]});
    std::fs::write(&spath, bad.to_string()).unwrap();
    expect("a count model on a missing attribute", "attribute 0");
    bad["mix"]["counts"] = serde_json::json!({"kind": "ppm", "order": 99});
    std::fs::write(&spath, bad.to_string()).unwrap();
    expect("a count model of a huge order", "order 99");
    // Version 1 (the mixture always the blind PPM, as `ppm_order`) is read as that count model.
    let mut v1: serde_json::Value = serde_json::from_str(&good_s).unwrap();
    v1["version"] = 1.into();
    v1["mix"] = serde_json::json!({"ppm_order": 3, "weights": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]});
    std::fs::write(&spath, v1.to_string()).unwrap();
    let migrated = read_sidecar(&stem).unwrap();
    assert_eq!(
        (migrated.version, migrated.mix),
        (
            FORMAT_VERSION,
            Some(MixSpec {
                counts: CountSpec::Ppm { order: 3 },
                weights: MixWeights([0.5; 6]),
            })
        )
    );
    assert_eq!(
        load_hybrid(&stem, &data, &Attributes::default())
            .unwrap()
            .name(),
        "lstm+ppm3"
    );
    // Version 1 never had `counts`: a version-1 file with it is no sidecar of either version.
    v1["mix"] = serde_json::json!({"counts": {"kind": "markov1"}, "weights": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]});
    std::fs::write(&spath, v1.to_string()).unwrap();
    let err = read_sidecar(&stem).unwrap_err().to_string();
    assert!(err.contains("not a model sidecar"), "{err}");
    restore();
    std::fs::write(
        &spath,
        good_s.replace(&side.weights_sha256, &format!("{:064x}", 0)),
    )
    .unwrap();
    expect("another weights file", "SHA-256");
    // valid safetensors bytes that are not this model, with a matching digest
    let other = train(
        &HyperParams {
            embed: 4,
            epochs: 1,
            ..hp.clone()
        },
        vocab(),
        &data,
        &[],
        &mut |_| {},
    )
    .unwrap();
    let alt = dir.path().join("alt");
    save(&other, &alt, None, "x", None).unwrap();
    let alt_side: Sidecar =
        serde_json::from_str(&std::fs::read_to_string(alt.with_extension("json")).unwrap())
            .unwrap();
    std::fs::copy(alt.with_extension("safetensors"), &wpath).unwrap();
    std::fs::write(
        &spath,
        good_s.replace(&side.weights_sha256, &alt_side.weights_sha256),
    )
    .unwrap();
    expect("weights of another model", "shape");
    std::fs::remove_file(&spath).unwrap();
    expect("no sidecar", "cannot read");

    let (p, err) = load_or_fallback(Path::new("/nonexistent/model"), || {
        Box::new(Ppm::markov1(vocab()))
    });
    assert_eq!(p.name(), "markov1");
    assert!(err.is_some());
    let (p, err) = load_or_fallback(&stem, || Box::new(Ppm::markov1(vocab())));
    assert_eq!((p.name(), err.is_none()), ("lstm", true));
}

#[test]
fn bad_hyper_parameters_and_empty_data_are_errors() {
    let bad = HyperParams {
        heads: 3,
        ..tiny(ModelKind::Transformer)
    };
    assert!(matches!(
        train(&bad, vocab(), &long_range(4), &[], &mut |_| {}),
        Err(NnError::Hyper(_))
    ));
    let hp = tiny(ModelKind::Lstm);
    assert!(matches!(
        train(&hp, vocab(), &[], &[], &mut |_| {}),
        Err(NnError::NoTrainingData)
    ));
}

#[test]
fn incremental_session_predictions_equal_full_passes() {
    for kind in KINDS {
        let hp = tiny(kind);
        let (vm, _) = init(&hp, 7).unwrap();
        let weights: Weights = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let trained = Trained {
            hp,
            vocab: vocab(),
            weights,
            report: report(),
            attributes: Default::default(),
        };
        let p = NeuralPredictor::new(&trained).unwrap();
        let mut ppm = Ppm::new(vocab(), 2);
        crate::predict::observe_sessions(&mut ppm, &long_range(10));
        let hybrid = Hybrid::new(p.clone(), ppm, MixWeights([0.3; 6])).unwrap();
        let other = Ppm::new(Arc::new(Vocabulary::from_names(["x"])), 2);
        assert!(Hybrid::new(p.clone(), other, MixWeights([0.3; 6])).is_err());
        let (mut s1, mut s2) = (
            crate::predict::SessionState::default(),
            crate::predict::SessionState::default(),
        );
        let mut ctx = SessionContext::new();
        // From the empty session to 15 requests: past max_len (10) the state resets to full
        // passes.
        for t in [0u32, 1, 3, 4, 3, 6, 3, 2, 2, 5, 1, 1, 3, 4, 6, 6] {
            if t > 0 {
                ctx.push(t);
            }
            let full = p.distribution(&ctx);
            let inc = p.distribution_session(&mut s1, &ctx);
            for (a, b) in full.iter().zip(&inc) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "{kind:?} at {}: {full:?} vs {inc:?}",
                    ctx.requests.len()
                );
            }
            assert_eq!(
                hybrid.predict_session(&mut s2, &ctx, 3),
                hybrid.predict(&ctx, 3)
            );
        }
        // A state reused for a shorter (other) session starts over.
        let short = SessionContext::from_ids(&[2]);
        assert_eq!(
            p.distribution_session(&mut s1, &short),
            p.distribution(&short)
        );
    }
}

/// Where an attribute decides the next request, a model that reads no context must be mixed
/// with the count model that does: [`choose_mixture`] (what `pto train` and `pto simulate`
/// call) picks the context-aware PPM on validation, the checkpoint records it, and
/// [`load_hybrid`] rebuilds it over a history whose attribute ids are interned in another
/// order, so that the mixture ranks the attribute's successor first.
#[test]
fn the_mixture_keeps_the_context_aware_count_model_through_a_checkpoint() {
    let (data, attrs) = grouped(80);
    let (train_s, val) = data.split_at(60);
    let hp = HyperParams {
        epochs: 2,
        ..tiny(ModelKind::Lstm)
    };
    let t = train_with_context(&hp, vocab(), &attrs, train_s, val, &mut |_| {}).unwrap();
    let model = NeuralPredictor::new(&t).unwrap();
    assert!(model.attributes().is_none(), "the model reads no context");
    let (counts, weights, tried) = choose_mixture(&model, &attrs, 2, train_s, val);
    let want = CountSpec::ContextPpm {
        order: 2,
        on: vec![ContextKey::Attribute(0)],
    };
    assert_eq!(counts.spec(), want, "{tried:?}");
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("m");
    let mix = MixSpec {
        counts: counts.spec(),
        weights,
    };
    save(&t, &stem, None, "grouped", Some(mix.clone())).unwrap();
    assert_eq!(read_sidecar(&stem).unwrap().mix, Some(mix));
    // The same history, its group values interned the other way round.
    let mut other = Attributes::new(&["group"]).unwrap();
    other.intern(0, Some(b"two"));
    other.intern(0, Some(b"one"));
    let swapped = attrs.translate_sessions(&data, &other);
    assert_ne!(swapped[0].requests[0].attrs, data[0].requests[0].attrs);
    let hybrid = load_hybrid(&stem, &swapped, &other).unwrap();
    let same = load_hybrid(&stem, &data, &attrs).unwrap();
    assert_eq!(hybrid.name(), "lstm+ctx-ppm2[group]");
    assert!(
        hybrid.attributes().is_some_and(|a| a.same_ids(&attrs)),
        "online ids are the checkpoint's"
    );
    // After request 1: 2 in group one, 3 in group two (ids of the checkpoint's schema).
    for (group, next) in [(1u16, 2u32), (2, 3)] {
        let mut a = AttrValues::default();
        a.0[0] = group;
        let mut ctx = SessionContext::new();
        ctx.push_with(1, Features::of(0, None, 0, a));
        assert_eq!(hybrid.distribution(&ctx), same.distribution(&ctx));
        assert_eq!(
            hybrid.predict(&ctx, 1).first().map(|p| p.kind),
            Some(next),
            "group {group}"
        );
    }
}
