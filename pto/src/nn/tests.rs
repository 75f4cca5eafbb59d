use std::{path::Path, sync::Arc};

use candle_core::{Device, Tensor};

use super::{
    train::{batch, init, loss},
    *,
};
use crate::{
    predict::{Ppm, Predictor, SessionContext},
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

#[test]
fn every_parameter_receives_a_non_zero_gradient() {
    for kind in KINDS {
        let (vm, net) = init(&tiny(kind), 6).unwrap();
        let seqs = [
            vec![6u32, 1, 2, 3, 4],
            vec![6, 5, 0],
            vec![6, 2, 2, 2, 1, 3, 5],
        ];
        let refs: Vec<&Vec<u32>> = seqs.iter().collect();
        let (i, t, m) = batch(&refs, &Device::Cpu).unwrap();
        let mut d = Dropout::new(0.1, 3);
        let (l, n) = loss(net.as_ref(), &i, &t, &m, Some(&mut d)).unwrap();
        assert_eq!(n, 12.0);
        let grads = l.backward().unwrap();
        let data = vm.data().lock().unwrap();
        assert!(
            data.len() >= if kind == ModelKind::Lstm { 7 } else { 30 },
            "{kind:?}: {} vars",
            data.len()
        );
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
    }
}

#[test]
fn the_fast_path_agrees_with_the_candle_graph() {
    for (kind, pairs) in KINDS.into_iter().flat_map(|k| [(k, true), (k, false)]) {
        let hp = HyperParams {
            pairs,
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
        for seq in [
            vec![6u32],
            vec![6, 1, 2],
            vec![6, 5, 4, 3, 2, 1, 0, 1, 2, 3],
        ] {
            let t = Tensor::from_vec(seq.clone(), (1, seq.len()), &Device::Cpu).unwrap();
            let all = net
                .forward(&t, None)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let want = all.last().unwrap();
            let got = fast.logits(&seq);
            for (a, b) in want.iter().zip(&got) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "{kind:?} {seq:?}: {want:?} vs {got:?}"
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

/// Mean negative log-likelihood per request of `sessions` under `weights`, computed apart from
/// training (the fast path, no dropout).
fn nll(hp: &HyperParams, weights: &Weights, sessions: &[Session]) -> f32 {
    let v = vocab().len();
    let fast = FastModel::from_weights(hp, v, weights).unwrap();
    let (mut total, mut n) = (0f64, 0f64);
    for seq in super::train::sequences(sessions, v, hp.max_len) {
        for j in 0..seq.len() - 1 {
            let logits = fast.logits(&seq[..=j]);
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
        ppm_order: 2,
        weights: MixWeights([0.5; 6]),
    });
    let (wpath, spath) = save(&t, &stem, split, "test", mix).unwrap();
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
    let hybrid = load_hybrid(&stem, &data).unwrap();
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
    std::fs::write(&spath, good_s.replace("\"version\": 1", "\"version\": 9")).unwrap();
    expect("a future format", "version 9");
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
