//! Request types interned as small dense integer ids.
//!
//! Every predictor works on [`TypeId`]s of one [`Vocabulary`]. Id 0 is reserved for request
//! types the vocabulary has never seen ([`UNKNOWN`]): a context may contain it, a prediction
//! never names it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A request type, as a dense id into a [`Vocabulary`].
pub type TypeId = u32;

/// The id of every request type the vocabulary does not know.
pub const UNKNOWN: TypeId = 0;

/// The name stored for [`UNKNOWN`].
pub const UNKNOWN_NAME: &str = "<unk>";

/// Errors of building a vocabulary from a list of names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VocabError {
    /// The list does not start with the reserved unknown entry.
    #[error("a vocabulary list must start with \"{UNKNOWN_NAME}\"; the file is not a vocabulary or is corrupt")]
    MissingUnknown,
    /// A name appears twice.
    #[error("request type \"{0}\" appears twice in the vocabulary; the file is corrupt")]
    Duplicate(String),
    /// A name is empty or reserved.
    #[error("request type name {0:?} is empty or reserved; rename it")]
    BadName(String),
    /// Too many names for 32-bit ids.
    #[error("more than {max} request types; split the trace", max = u32::MAX)]
    TooMany,
}

/// A bidirectional map between request-type names and dense ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Vocabulary {
    names: Vec<String>,
    index: HashMap<String, TypeId>,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self::new()
    }
}

impl Vocabulary {
    /// An empty vocabulary: only [`UNKNOWN`].
    pub fn new() -> Self {
        Self {
            names: vec![UNKNOWN_NAME.to_owned()],
            index: HashMap::new(),
        }
    }

    /// A vocabulary holding `names` in order (ids 1, 2, ...); duplicates are interned once.
    pub fn from_names<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        let mut v = Self::new();
        for n in names {
            v.intern(n.as_ref());
        }
        v
    }

    /// The id of `name`, adding it if it is new. The reserved name maps to [`UNKNOWN`].
    pub fn intern(&mut self, name: &str) -> TypeId {
        if name == UNKNOWN_NAME || name.is_empty() {
            return UNKNOWN;
        }
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = TypeId::try_from(self.names.len()).unwrap_or(UNKNOWN);
        if id == UNKNOWN {
            return UNKNOWN;
        }
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }

    /// The id of `name`, if known.
    pub fn get(&self, name: &str) -> Option<TypeId> {
        self.index.get(name).copied()
    }

    /// The id of `name`, or [`UNKNOWN`].
    pub fn id_or_unknown(&self, name: &str) -> TypeId {
        self.get(name).unwrap_or(UNKNOWN)
    }

    /// The name of `id`, if it is in range.
    pub fn name(&self, id: TypeId) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// Number of ids, [`UNKNOWN`] included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when only [`UNKNOWN`] is present.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 1
    }

    /// The known names with their ids, [`UNKNOWN`] excluded.
    pub fn iter(&self) -> impl Iterator<Item = (TypeId, &str)> {
        self.names
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| (i as TypeId, n.as_str()))
    }
}

impl TryFrom<Vec<String>> for Vocabulary {
    type Error = VocabError;

    fn try_from(names: Vec<String>) -> Result<Self, VocabError> {
        if names.first().map(String::as_str) != Some(UNKNOWN_NAME) {
            return Err(VocabError::MissingUnknown);
        }
        if u32::try_from(names.len()).is_err() {
            return Err(VocabError::TooMany);
        }
        let mut v = Self::new();
        for n in &names[1..] {
            if n.is_empty() || n == UNKNOWN_NAME {
                return Err(VocabError::BadName(n.clone()));
            }
            if v.get(n).is_some() {
                return Err(VocabError::Duplicate(n.clone()));
            }
            v.intern(n);
        }
        Ok(v)
    }
}

impl From<Vocabulary> for Vec<String> {
    fn from(v: Vocabulary) -> Self {
        v.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_densely_and_reserves_zero() {
        let mut v = Vocabulary::new();
        assert!(v.is_empty());
        assert_eq!(v.intern("home"), 1);
        assert_eq!(v.intern("cart"), 2);
        assert_eq!(v.intern("home"), 1);
        assert_eq!(v.intern(UNKNOWN_NAME), UNKNOWN);
        assert_eq!(v.get("nope"), None);
        assert_eq!(v.id_or_unknown("nope"), UNKNOWN);
        assert_eq!(v.name(2), Some("cart"));
        assert_eq!(v.name(9), None);
        assert_eq!(v.len(), 3);
        let names: Vec<_> = v.iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["home", "cart"]);
    }

    #[test]
    fn round_trips_through_json_and_rejects_corrupt_lists() {
        let v = Vocabulary::from_names(["a", "b"]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"["<unk>","a","b"]"#);
        let back: Vocabulary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert!(serde_json::from_str::<Vocabulary>(r#"["a"]"#).is_err());
        assert!(serde_json::from_str::<Vocabulary>(r#"["<unk>","a","a"]"#).is_err());
        assert!(serde_json::from_str::<Vocabulary>(r#"["<unk>",""]"#).is_err());
    }
}
