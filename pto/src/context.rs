//! A request's context beside its type: attributes (platform, channel, cohort, ...) and time
//! features derived from the timestamps (the gap since the previous request, the hour of day).
//!
//! Every attribute has its own small vocabulary of values, with id 0 the unknown bucket: a
//! missing, empty, over-long or non-UTF-8 value, and every value past the cardinality limit,
//! falls into it, and [`Attributes`] counts how many did. Nothing about an attribute's content
//! can make an import or a prediction fail, and the memory it takes is bounded by
//! [`MAX_ATTRIBUTES`], [`MAX_ATTRIBUTE_VALUES`] and [`MAX_ATTRIBUTE_LEN`].

use serde::{Deserialize, Serialize};

use crate::vocab::Vocabulary;

/// Most attributes a trace (or a request of the API) carries.
pub const MAX_ATTRIBUTES: usize = 8;
/// Most distinct values an attribute keeps; later new values fall into the unknown bucket.
pub const MAX_ATTRIBUTE_VALUES: usize = 256;
/// Longest attribute name or value kept, in bytes; a longer value is bucketed as unknown.
pub const MAX_ATTRIBUTE_LEN: usize = 64;

/// The id of an attribute's value in its vocabulary; 0 is the unknown bucket.
pub type ValueId = u16;

/// One request's attribute values, by attribute index ([`Attributes::names`]); 0 where the
/// value is unknown or the attribute absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttrValues(pub [ValueId; MAX_ATTRIBUTES]);

impl AttrValues {
    /// True when every value is unknown.
    pub fn is_unknown(&self) -> bool {
        self.0.iter().all(|&v| v == 0)
    }

    /// The value of attribute `i` (0 when out of range).
    pub fn get(&self, i: usize) -> ValueId {
        self.0.get(i).copied().unwrap_or(0)
    }
}

/// Why a value fell into the unknown bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucketed {
    /// Absent or empty.
    Empty,
    /// Longer than [`MAX_ATTRIBUTE_LEN`] bytes.
    TooLong,
    /// Not UTF-8, or holding a control character.
    NotText,
    /// A new value after [`MAX_ATTRIBUTE_VALUES`] distinct ones.
    Overflow,
}

/// Counts of values bucketed as unknown, per cause, for one attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// Absent or empty values.
    pub empty: u64,
    /// Over-long values.
    pub too_long: u64,
    /// Non-UTF-8 values or values with control characters.
    pub not_text: u64,
    /// New values past the cardinality limit.
    pub overflow: u64,
}

/// The attributes of a trace: their names and one vocabulary of values each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    names: Vec<String>,
    values: Vec<Vocabulary>,
    #[serde(skip)]
    bucketed: Vec<BucketCounts>,
}

/// An attribute name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("{0} attribute columns, at most {MAX_ATTRIBUTES} are kept; name the ones to use with --attribute-columns")]
    TooMany(usize),
    /// Empty, too long or with control characters.
    #[error("attribute name {0:?} is empty, longer than {MAX_ATTRIBUTE_LEN} bytes or holds control characters; rename the column")]
    BadName(String),
    /// Named twice.
    #[error("attribute {0:?} is named twice")]
    Duplicate(String),
}

fn is_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl Attributes {
    /// Whether ids of this schema mean the same as ids of `other`: the same attribute names
    /// and values in the same order (what was bucketed on import aside).
    pub fn same_ids(&self, other: &Attributes) -> bool {
        self.names == other.names && self.values == other.values
    }

    /// Attributes of these names, each with an empty vocabulary.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<Self, AttributeError> {
        if names.len() > MAX_ATTRIBUTES {
            return Err(AttributeError::TooMany(names.len()));
        }
        let mut out = Self::default();
        for n in names {
            let n = n.as_ref();
            if n.trim().is_empty() || n.len() > MAX_ATTRIBUTE_LEN || !is_text(n) {
                return Err(AttributeError::BadName(n.to_owned()));
            }
            if out.names.iter().any(|x| x == n) {
                return Err(AttributeError::Duplicate(n.to_owned()));
            }
            out.names.push(n.to_owned());
            out.values.push(Vocabulary::new());
            out.bucketed.push(BucketCounts::default());
        }
        Ok(out)
    }

    /// Takes the values (and bucket counts) of `other`'s attributes, which must be this
    /// schema's first attributes in the same order (a schema grown by one attribute).
    pub fn take_values_from(&mut self, other: &Attributes) {
        for (i, name) in other.names.iter().enumerate() {
            if self.names.get(i) == Some(name) {
                self.values[i] = other.values[i].clone();
                self.bucketed[i] = other.bucketed(i);
            }
        }
    }

    /// The attribute names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of attribute `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The vocabulary of attribute `i` (id 0: unknown).
    pub fn values(&self, i: usize) -> Option<&Vocabulary> {
        self.values.get(i)
    }

    /// What was bucketed as unknown for attribute `i` while interning.
    pub fn bucketed(&self, i: usize) -> BucketCounts {
        self.bucketed.get(i).copied().unwrap_or_default()
    }

    /// The id of raw `value` for attribute `i`, adding it while the attribute has room; the
    /// unknown bucket (0) and its cause otherwise, counted.
    pub fn intern(&mut self, i: usize, value: Option<&[u8]>) -> ValueId {
        match self.classify(i, value) {
            Ok(id) => id,
            Err(why) => {
                if let Some(c) = self.bucketed.get_mut(i) {
                    match why {
                        Bucketed::Empty => c.empty += 1,
                        Bucketed::TooLong => c.too_long += 1,
                        Bucketed::NotText => c.not_text += 1,
                        Bucketed::Overflow => c.overflow += 1,
                    }
                }
                0
            }
        }
    }

    /// The id of `value` for attribute `i` without adding it: 0 for anything unknown.
    pub fn lookup(&self, i: usize, value: &str) -> ValueId {
        self.values
            .get(i)
            .and_then(|v| v.get(value))
            .and_then(|id| ValueId::try_from(id).ok())
            .unwrap_or(0)
    }

    /// Values for every attribute from `(name, value)` pairs (an API request's map); names
    /// this schema lacks are ignored, unknown values are 0.
    pub fn lookup_all<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> AttrValues {
        let mut out = AttrValues::default();
        for (name, value) in pairs {
            if let Some(i) = self.index(name) {
                out.0[i] = self.lookup(i, value);
            }
        }
        out
    }

    /// `v`, whose ids refer to this schema, with its ids in `to` (matched by attribute and
    /// value name; what `to` lacks is unknown).
    pub fn translate(&self, v: &AttrValues, to: &Attributes) -> AttrValues {
        let mut out = AttrValues::default();
        for (i, name) in self.names.iter().enumerate() {
            let (Some(j), Some(value)) = (to.index(name), self.values[i].name(u32::from(v.get(i))))
            else {
                continue;
            };
            if v.get(i) != 0 {
                out.0[j] = to.lookup(j, value);
            }
        }
        out
    }

    /// `sessions`, whose attribute ids refer to this schema, with their ids in `to` (as
    /// [`Attributes::translate`]); generated sessions lose their true distributions.
    pub fn translate_sessions(
        &self,
        sessions: &[crate::trace::Session],
        to: &Attributes,
    ) -> Vec<crate::trace::Session> {
        sessions
            .iter()
            .map(|s| crate::trace::Session {
                requests: s
                    .requests
                    .iter()
                    .map(|r| crate::trace::Request {
                        attrs: self.translate(&r.attrs, to),
                        ..*r
                    })
                    .collect(),
                key: s.key.clone(),
                user: s.user.clone(),
                truth: Vec::new(),
            })
            .collect()
    }

    fn classify(&mut self, i: usize, value: Option<&[u8]>) -> Result<ValueId, Bucketed> {
        let raw = value.ok_or(Bucketed::Empty)?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| Bucketed::NotText)?
            .trim();
        if text.is_empty() {
            return Err(Bucketed::Empty);
        }
        if text.len() > MAX_ATTRIBUTE_LEN {
            return Err(Bucketed::TooLong);
        }
        if !is_text(text) || text == crate::vocab::UNKNOWN_NAME {
            return Err(Bucketed::NotText);
        }
        let vocab = self.values.get_mut(i).ok_or(Bucketed::Empty)?;
        if let Some(id) = vocab.get(text) {
            return ValueId::try_from(id).map_err(|_| Bucketed::Overflow);
        }
        if vocab.len() > MAX_ATTRIBUTE_VALUES {
            return Err(Bucketed::Overflow);
        }
        ValueId::try_from(vocab.intern(text)).map_err(|_| Bucketed::Overflow)
    }

    /// A warning per attribute whose values were bucketed, for import reports.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            let c = self.bucketed(i);
            if c.overflow > 0 {
                out.push(format!(
                    "attribute {name:?}: more than {MAX_ATTRIBUTE_VALUES} distinct values (an identifier?); {} values past the limit count as unknown; leave it out with --attribute-columns",
                    c.overflow
                ));
            }
            if c.too_long > 0 {
                out.push(format!(
                    "attribute {name:?}: {} values longer than {MAX_ATTRIBUTE_LEN} bytes count as unknown",
                    c.too_long
                ));
            }
            if c.not_text > 0 {
                out.push(format!(
                    "attribute {name:?}: {} values not UTF-8 text count as unknown",
                    c.not_text
                ));
            }
        }
        out
    }
}

/// Gap buckets, upper bounds in milliseconds: bucket `i + 1` holds gaps below `GAP_BOUNDS_MS[i]`,
/// the last bucket the rest, bucket 0 the first request of a session.
pub const GAP_BOUNDS_MS: [i64; 6] = [1_000, 4_000, 15_000, 60_000, 300_000, 1_800_000];
/// Number of gap buckets, the first request's included.
pub const GAP_BUCKETS: usize = GAP_BOUNDS_MS.len() + 2;
/// Hour buckets: 0 when the time is not a wall-clock time, else the UTC hour plus one.
pub const HOUR_BUCKETS: usize = 25;
/// Timestamps before this (1990-01-01 UTC, in ms) are taken as relative, without an hour.
pub const WALL_CLOCK_FROM_MS: i64 = 631_152_000_000;

/// The gap bucket of a request at `at_ms` after one at `prev_ms` (`None`: the first).
pub fn gap_bucket(prev_ms: Option<i64>, at_ms: i64) -> u8 {
    let Some(prev) = prev_ms else { return 0 };
    let gap = at_ms.saturating_sub(prev);
    let i = GAP_BOUNDS_MS.iter().take_while(|&&b| gap >= b).count();
    (i + 1) as u8
}

/// The hour bucket of `at_ms`: 0 for a relative time, else the UTC hour plus one.
pub fn hour_bucket(at_ms: i64) -> u8 {
    if at_ms < WALL_CLOCK_FROM_MS {
        return 0;
    }
    (at_ms.div_euclid(3_600_000).rem_euclid(24) + 1) as u8
}

/// A request's context as the predictors see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// Its attribute values.
    pub attrs: AttrValues,
    /// Its gap bucket ([`gap_bucket`]).
    pub gap: u8,
    /// Its hour bucket ([`hour_bucket`]).
    pub hour: u8,
    /// Milliseconds since the previous request of its session (0 for the first).
    pub gap_ms: i64,
    /// Milliseconds since its session's first request.
    pub since_start_ms: i64,
    /// When it arrived (ms since the epoch, or since the trace's start).
    pub at_ms: i64,
}

/// Numeric time features per request ([`Features::time_vector`]).
pub const TIME_FEATURES: usize = 6;

impl Features {
    /// The features of a request at `at_ms` with `attrs`, after one at `prev_ms`, in a
    /// session that began at `start_ms`.
    pub fn of(start_ms: i64, prev_ms: Option<i64>, at_ms: i64, attrs: AttrValues) -> Self {
        Self {
            attrs,
            gap: gap_bucket(prev_ms, at_ms),
            hour: hour_bucket(at_ms),
            gap_ms: prev_ms.map_or(0, |p| at_ms.saturating_sub(p).max(0)),
            since_start_ms: at_ms.saturating_sub(start_ms).max(0),
            at_ms,
        }
    }

    /// The scaled numeric time features a learned model reads: the gap since the previous
    /// request and the time since the session began (log seconds, scaled to about 0..1), and
    /// the time of day and of week as sine and cosine (all 0 for a relative timestamp).
    pub fn time_vector(&self) -> [f32; TIME_FEATURES] {
        let log_s = |ms: i64| ((ms.max(0) as f64 / 1000.0).ln_1p() / 10.0) as f32;
        let mut out = [0f32; TIME_FEATURES];
        out[0] = log_s(self.gap_ms);
        out[1] = log_s(self.since_start_ms);
        if self.at_ms >= WALL_CLOCK_FROM_MS {
            let tau = std::f64::consts::TAU;
            let day = self.at_ms.rem_euclid(86_400_000) as f64 / 86_400_000.0;
            // 1970-01-01 was a Thursday: shift so that the week starts on Monday.
            let week = (self.at_ms + 3 * 86_400_000).rem_euclid(7 * 86_400_000) as f64
                / (7.0 * 86_400_000.0);
            out[2] = (tau * day).sin() as f32;
            out[3] = (tau * day).cos() as f32;
            out[4] = (tau * week).sin() as f32;
            out[5] = (tau * week).cos() as f32;
        }
        out
    }
}

/// One feature of the context a count model may condition on (in a checkpoint: `"gap"`,
/// `"hour"` or `{"attribute": i}`, `i` indexing the checkpoint's attribute schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextKey {
    /// Attribute `i`'s value.
    Attribute(usize),
    /// The gap bucket.
    Gap,
    /// The hour bucket.
    Hour,
}

impl ContextKey {
    /// The bucket of `f` under this key.
    pub fn of(self, f: &Features) -> u32 {
        match self {
            ContextKey::Attribute(i) => u32::from(f.attrs.get(i)),
            ContextKey::Gap => u32::from(f.gap),
            ContextKey::Hour => u32::from(f.hour),
        }
    }

    /// Its name in reports, with `attrs` naming the attributes.
    pub fn describe(self, attrs: &Attributes) -> String {
        match self {
            ContextKey::Attribute(i) => attrs
                .names()
                .get(i)
                .map_or_else(|| format!("attribute {i}"), Clone::clone),
            ContextKey::Gap => "gap".into(),
            ContextKey::Hour => "hour".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_interned_and_the_bad_ones_bucketed() {
        let mut a = Attributes::new(&["platform", "cohort"]).unwrap();
        assert_eq!(a.intern(0, Some(b"desktop")), 1);
        assert_eq!(a.intern(0, Some(b" mobile ")), 2);
        assert_eq!(a.intern(0, Some(b"desktop")), 1);
        assert_eq!(a.intern(0, None), 0);
        assert_eq!(a.intern(0, Some(b"  ")), 0);
        assert_eq!(a.intern(0, Some(&[b'x'; MAX_ATTRIBUTE_LEN + 1])), 0);
        assert_eq!(a.intern(0, Some(&[b'x'; MAX_ATTRIBUTE_LEN])), 3);
        assert_eq!(a.intern(0, Some(b"\xff\xfe")), 0);
        assert_eq!(a.intern(0, Some(b"a\x07b")), 0);
        assert_eq!(a.intern(0, Some(b"<unk>")), 0);
        assert_eq!(
            a.bucketed(0),
            BucketCounts {
                empty: 2,
                too_long: 1,
                not_text: 3,
                overflow: 0
            }
        );
        // Past the cardinality limit new values are unknown, known ones still map.
        for i in 0..MAX_ATTRIBUTE_VALUES + 10 {
            a.intern(1, Some(format!("v{i}").as_bytes()));
        }
        assert_eq!(a.values(1).unwrap().len(), MAX_ATTRIBUTE_VALUES + 1);
        assert_eq!(a.bucketed(1).overflow, 10);
        assert_eq!(a.intern(1, Some(b"v0")), 1);
        assert_eq!(a.lookup(1, "v9999"), 0);
        assert_eq!(a.lookup(0, "mobile"), 2);
        let w = a.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("\"cohort\"") && w.contains("identifier")),
            "{w:?}"
        );
        let v = a.lookup_all([("cohort", "v1"), ("nope", "x"), ("platform", "mobile")]);
        assert_eq!(&v.0[..2], &[2, 2]);
        // Into a schema of other order and ids: by name; what it lacks is unknown.
        let mut b = Attributes::new(&["cohort", "other"]).unwrap();
        b.intern(0, Some(b"v5"));
        b.intern(0, Some(b"v1"));
        assert_eq!(&a.translate(&v, &b).0[..3], &[2, 0, 0]);
        assert_eq!(b.translate(&b.lookup_all([("cohort", "v5")]), &a).0[1], 6);
    }

    #[test]
    fn bad_attribute_names_are_errors() {
        let many: Vec<String> = (0..=MAX_ATTRIBUTES).map(|i| format!("a{i}")).collect();
        assert_eq!(
            Attributes::new(&many),
            Err(AttributeError::TooMany(MAX_ATTRIBUTES + 1))
        );
        assert!(matches!(
            Attributes::new(&[""]),
            Err(AttributeError::BadName(_))
        ));
        assert!(matches!(
            Attributes::new(&["a", "a"]),
            Err(AttributeError::Duplicate(_))
        ));
    }

    #[test]
    fn time_buckets() {
        assert_eq!(gap_bucket(None, 5), 0);
        assert_eq!(gap_bucket(Some(0), 999), 1);
        assert_eq!(gap_bucket(Some(0), 1_000), 2);
        assert_eq!(gap_bucket(Some(0), 3_999), 2);
        assert_eq!(gap_bucket(Some(0), 4_000), 3);
        assert_eq!(gap_bucket(Some(0), i64::MAX), (GAP_BUCKETS - 1) as u8);
        assert_eq!(gap_bucket(Some(10), 0), 1, "a negative gap is the shortest");
        assert_eq!(hour_bucket(1_000), 0);
        // 2024-03-13 10:21:14 UTC.
        assert_eq!(hour_bucket(1_710_325_274_000), 11);
        let f = Features::of(1_000, Some(2_000), 5_000, AttrValues::default());
        assert_eq!((f.gap_ms, f.since_start_ms, f.gap), (3_000, 4_000, 2));
        let t = f.time_vector();
        assert!((t[0] - (4f32.ln() / 10.0)).abs() < 1e-6, "{t:?}");
        assert_eq!(&t[2..], &[0.0; 4], "no wall clock, no time of day");
        // Monday 2024-03-11 06:00 UTC: a quarter of the day, 1/28 of the week.
        let w = Features::of(0, None, 1_710_136_800_000, AttrValues::default()).time_vector();
        assert!((w[2] - 1.0).abs() < 1e-5 && w[3].abs() < 1e-5, "{w:?}");
        let week = std::f32::consts::TAU / 28.0;
        assert!(
            (w[4] - week.sin()).abs() < 1e-4 && (w[5] - week.cos()).abs() < 1e-4,
            "{w:?}"
        );
    }
}
