//! The process-mining evaluation protocol (Tax et al., "Predictive business process monitoring
//! with LSTM neural networks", CAiSE 2017), beside this crate's own random split by session.
//!
//! - Sessions are ordered by the time of their first request; the first two thirds train and
//!   the last third is tested (a chronological split: no test session started before a
//!   training one). The last fifth of the training part, chronologically, is held out for
//!   early stopping and for choosing the context-aware PPM's conditioning, as Keras'
//!   `validation_split` does in the paper's code.
//! - The end of a session is a class of its own: every session gets a last request of the
//!   type [`END_NAME`], which the predictors learn and are scored on like any other.
//! - Accuracy is counted over every prefix: after each request of a test session, the
//!   next one (or the end) is predicted, so a session of `n` requests gives `n` positions.
//!   [`crate::eval::evaluate`] over the sessions with their end request counts exactly these.

use crate::{
    split::Split,
    trace::{Request, Session, Trace},
    vocab::Vocabulary,
};

/// The request type that marks the end of a session.
pub const END_NAME: &str = "<end>";

/// Which evaluation protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Sessions split at random by a hash of their key ([`crate::split::SplitSpec`]); no end
    /// class; every request after the first is a position.
    #[default]
    Random,
    /// Tax et al. (2017): chronological split, end of session as a class, every prefix.
    ProcessMining,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 2] = [Protocol::Random, Protocol::ProcessMining];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Random => "random",
            Protocol::ProcessMining => "process-mining",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Protocol {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("protocol", s, &Self::ALL, Self::name)
    }
}

/// `trace` with the end class: [`END_NAME`] added to its vocabulary and a request of it closing
/// every session (at the time of the session's last request, with its attributes).
pub fn with_end(trace: &Trace) -> Trace {
    let mut vocab: Vocabulary = trace.vocab.clone();
    let end = vocab.intern(END_NAME);
    let sessions = trace
        .sessions
        .iter()
        .map(|s| {
            let mut s = Session {
                truth: Vec::new(),
                ..s.clone()
            };
            if let Some(last) = s.requests.last().copied() {
                s.requests.push(Request { kind: end, ..last });
            }
            s
        })
        .collect();
    Trace {
        vocab,
        sessions,
        attributes: trace.attributes.clone(),
    }
}

/// The chronological split of `sessions`: by the time of their first request (ties by key),
/// the first two thirds train (its last fifth validates), the last third is tested.
pub fn chronological(sessions: &[Session]) -> Split {
    let mut order: Vec<&Session> = sessions.iter().filter(|s| !s.requests.is_empty()).collect();
    order.sort_by(|a, b| {
        let start = |s: &Session| s.requests[0].at_ms;
        start(a).cmp(&start(b)).then_with(|| a.key.cmp(&b.key))
    });
    let n = order.len();
    let train_end = 2 * n / 3;
    let val_start = train_end - train_end / 5;
    Split {
        train: order[..val_start].iter().map(|s| (*s).clone()).collect(),
        val: order[val_start..train_end]
            .iter()
            .map(|s| (*s).clone())
            .collect(),
        test: order[train_end..].iter().map(|s| (*s).clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        eval::{evaluate, EvalConfig},
        predict::{observe_sessions, Ppm},
    };

    fn session(key: &str, start: i64, kinds: &[u32]) -> Session {
        Session {
            key: key.into(),
            requests: kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| Request::new(k, start + i as i64))
                .collect(),
            ..Session::default()
        }
    }

    /// Six sessions over a (1), b (2), c (3), listed out of time order. By start time the
    /// first four train: a b, a b, a c, a b (the last fifth of four is none: no validation);
    /// the last two test: a b and a c a. First-order Markov after the training sessions, end
    /// class included, predicts b after a (3 of 4) and the end after b and after c.
    /// Positions: [a]->b right, [a b]->end right; [a]->c wrong, [a c]->a wrong (it says end),
    /// [a c a]->end wrong (it says b). Accuracy over every prefix: 2 of 5.
    #[test]
    fn a_hand_made_log_scores_as_counted_by_hand() {
        let trace = Trace {
            vocab: Vocabulary::from_names(["a", "b", "c"]),
            sessions: vec![
                session("t2", 500, &[1, 3, 1]),
                session("r1", 10, &[1, 2]),
                session("r3", 30, &[1, 3]),
                session("t1", 400, &[1, 2]),
                session("r2", 20, &[1, 2]),
                session("r4", 40, &[1, 2]),
            ],
            attributes: Default::default(),
        };
        let t = with_end(&trace);
        assert_eq!(t.vocab.get(END_NAME), Some(4));
        assert_eq!(t.sessions[0].kinds(), [1, 3, 1, 4]);
        let split = chronological(&t.sessions);
        let keys = |s: &[Session]| s.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&split.train), ["r1", "r2", "r3", "r4"]);
        assert!(split.val.is_empty());
        assert_eq!(keys(&split.test), ["t1", "t2"]);
        let mut m = Ppm::markov1(Arc::new(t.vocab.clone()));
        observe_sessions(&mut m, &split.train);
        let r = evaluate(&m, &split.test, EvalConfig::default());
        assert_eq!(r.positions, 5);
        assert_eq!(r.top1, 0.4);
    }

    #[test]
    fn two_thirds_train_and_a_fifth_of_them_validate() {
        let sessions: Vec<Session> = (0..30)
            .map(|i| session(&format!("s{i:02}"), 1000 - i, &[1, 2]))
            .collect();
        let s = chronological(&sessions);
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (16, 4, 10));
        // Latest starts are tested: s00 started last.
        assert!(s.test.iter().any(|x| x.key == "s00"));
        assert!(s.train.iter().any(|x| x.key == "s29"));
        let last_train = s.val.iter().map(|x| x.requests[0].at_ms).max().unwrap();
        let first_test = s.test.iter().map(|x| x.requests[0].at_ms).min().unwrap();
        assert!(last_train < first_test);
        assert_eq!(
            Protocol::ALL.map(Protocol::name),
            ["random", "process-mining"]
        );
    }
}
