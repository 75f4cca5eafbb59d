//! Request traces: sessions of timed requests, as the predictors see them.

use serde::{Deserialize, Serialize};

use crate::{
    context::{AttrValues, Attributes, Features},
    vocab::{TypeId, Vocabulary},
};

/// One request of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its request type.
    pub kind: TypeId,
    /// When it arrived, in milliseconds since the Unix epoch (or since the trace's start).
    pub at_ms: i64,
    /// Its attribute values, by index into its trace's [`Trace::attributes`].
    #[serde(default, skip_serializing_if = "AttrValues::is_unknown")]
    pub attrs: AttrValues,
}

impl Request {
    /// A request without attributes.
    pub fn new(kind: TypeId, at_ms: i64) -> Self {
        Self {
            kind,
            at_ms,
            attrs: AttrValues::default(),
        }
    }
}

/// A probability distribution over the next request type, sparse, most likely first.
pub type Distribution = Vec<(TypeId, f32)>;

/// A session: the requests of one visitor, in time order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Its key in the source (session id, or user id when the trace has no sessions).
    pub key: String,
    /// The user, when the source names one.
    pub user: Option<String>,
    /// The requests, in time order.
    pub requests: Vec<Request>,
    /// For generated sessions only: `truth[i]` is the true distribution of request `i + 1`
    /// given requests `0..=i` (and the session continuing). Empty for real traces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truth: Vec<Distribution>,
}

impl Session {
    /// The request types, in order.
    pub fn kinds(&self) -> Vec<TypeId> {
        self.requests.iter().map(|r| r.kind).collect()
    }

    /// The context of each request: its attributes and its time features.
    pub fn features(&self) -> Vec<Features> {
        let mut prev = None;
        let start = self.requests.first().map_or(0, |r| r.at_ms);
        self.requests
            .iter()
            .map(|r| {
                let f = Features::of(start, prev, r.at_ms, r.attrs);
                prev = Some(r.at_ms);
                f
            })
            .collect()
    }
}

/// A set of sessions over one vocabulary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The request types the sessions use.
    pub vocab: Vocabulary,
    /// The sessions, in order of first appearance.
    pub sessions: Vec<Session>,
    /// The attributes its requests carry, with their values.
    #[serde(default)]
    pub attributes: Attributes,
}

impl Trace {
    /// Number of requests over all sessions.
    pub fn request_count(&self) -> usize {
        self.sessions.iter().map(|s| s.requests.len()).sum()
    }

    /// The sessions with their request types re-interned into `vocab` (types it lacks become
    /// [`crate::vocab::UNKNOWN`]): to feed a trace to a model trained over another vocabulary.
    pub fn sessions_in(&self, vocab: &Vocabulary) -> Vec<Session> {
        let map: Vec<TypeId> = (0..self.vocab.len() as TypeId)
            .map(|id| {
                self.vocab
                    .name(id)
                    .map_or(crate::vocab::UNKNOWN, |n| vocab.id_or_unknown(n))
            })
            .collect();
        self.sessions
            .iter()
            .map(|s| Session {
                requests: s
                    .requests
                    .iter()
                    .map(|r| Request {
                        kind: map
                            .get(r.kind as usize)
                            .copied()
                            .unwrap_or(crate::vocab::UNKNOWN),
                        ..*r
                    })
                    .collect(),
                truth: Vec::new(),
                ..s.clone()
            })
            .collect()
    }

    /// Drops every request of a type outside the vocabulary ([`crate::vocab::UNKNOWN`]), and
    /// the sessions left empty; returns how many requests were dropped. For replaying a trace
    /// through a service catalogue, which can serve only the request types it describes.
    pub fn drop_unknown(&mut self) -> usize {
        let before = self.request_count();
        for s in &mut self.sessions {
            let n = s.requests.len();
            s.requests.retain(|r| r.kind != crate::vocab::UNKNOWN);
            // Truths are per position: they no longer line up once requests are removed.
            if s.requests.len() != n {
                s.truth.clear();
            }
        }
        self.sessions.retain(|s| !s.requests.is_empty());
        before - self.request_count()
    }

    /// True when every session carries its true next-request distributions.
    pub fn has_truth(&self) -> bool {
        !self.sessions.is_empty()
            && self
                .sessions
                .iter()
                .all(|s| s.truth.len() + 1 >= s.requests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_reinterned_by_name() {
        let trace = Trace {
            attributes: Default::default(),
            vocab: Vocabulary::from_names(["a", "b", "c"]),
            sessions: vec![Session {
                key: "s".into(),
                requests: [1, 2, 3]
                    .iter()
                    .map(|&kind| Request::new(kind, 5))
                    .collect(),
                ..Session::default()
            }],
        };
        let other = Vocabulary::from_names(["c", "a"]);
        let s = trace.sessions_in(&other);
        assert_eq!(s[0].kinds(), [2, 0, 1]);
        assert_eq!((s[0].key.as_str(), s[0].requests[0].at_ms), ("s", 5));
    }

    #[test]
    fn unknown_requests_and_empty_sessions_are_dropped() {
        let vocab = Vocabulary::from_names(["a"]);
        let session = |kinds: &[TypeId]| Session {
            key: format!("{kinds:?}"),
            requests: kinds.iter().map(|&kind| Request::new(kind, 0)).collect(),
            ..Session::default()
        };
        let mut t = Trace {
            attributes: Default::default(),
            vocab,
            sessions: vec![session(&[1, 0, 1]), session(&[0, 0]), session(&[1])],
        };
        assert_eq!(t.drop_unknown(), 3);
        assert_eq!(t.sessions.len(), 2);
        assert_eq!(t.sessions[0].kinds(), [1, 1]);
        assert_eq!(t.drop_unknown(), 0);
    }
}
