//! Splitting sessions into training, validation and test sets, by session.
//!
//! A session's part depends only on its key and the split seed (a hash), not on the order of
//! the trace or on what else it holds: a model trained with one [`SplitSpec`] is evaluated on
//! sessions it never saw as long as the evaluation uses the same spec (its sidecar records it).

use serde::{Deserialize, Serialize};

use crate::trace::Session;

/// Which part a session belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Training.
    Train,
    /// Validation (early stopping).
    Val,
    /// Held-out test.
    Test,
}

/// How sessions are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Seed of the hash.
    pub seed: u64,
    /// Percent of sessions held out for testing.
    pub test_percent: u32,
    /// Percent of sessions for validation.
    pub val_percent: u32,
}

impl Default for SplitSpec {
    fn default() -> Self {
        Self {
            seed: 42,
            test_percent: 20,
            val_percent: 10,
        }
    }
}

/// Sessions by part.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// Training sessions.
    pub train: Vec<Session>,
    /// Validation sessions.
    pub val: Vec<Session>,
    /// Test sessions.
    pub test: Vec<Session>,
}

/// A [`SplitSpec`] that cannot split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The test and validation parts take everything.
    #[error(
        "test ({test_percent}%) and validation ({val_percent}%) leave nothing to train on: \
         lower them below 100% together"
    )]
    NothingToTrain {
        /// The test share.
        test_percent: u32,
        /// The validation share.
        val_percent: u32,
    },
}

impl SplitSpec {
    /// Checks that the percentages leave room for training.
    pub fn validate(&self) -> Result<(), SplitError> {
        if self.test_percent + self.val_percent >= 100 {
            return Err(SplitError::NothingToTrain {
                test_percent: self.test_percent,
                val_percent: self.val_percent,
            });
        }
        Ok(())
    }

    /// The part of the session called `key`.
    pub fn part(&self, key: &str) -> Part {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in self.seed.to_le_bytes().iter().chain(key.as_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // splitmix64 finaliser: spreads FNV's low bits
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        let bucket = (h % 100) as u32;
        if bucket < self.test_percent {
            Part::Test
        } else if bucket < self.test_percent + self.val_percent {
            Part::Val
        } else {
            Part::Train
        }
    }

    /// Splits `sessions`.
    pub fn split(&self, sessions: &[Session]) -> Split {
        let mut s = Split::default();
        for x in sessions {
            match self.part(&x.key) {
                Part::Train => s.train.push(x.clone()),
                Part::Val => s.val.push(x.clone()),
                Part::Test => s.test.push(x.clone()),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(n: usize) -> Vec<Session> {
        (0..n)
            .map(|i| Session {
                key: format!("s{i}"),
                ..Session::default()
            })
            .collect()
    }

    #[test]
    fn parts_are_disjoint_sized_and_order_independent() {
        let spec = SplitSpec::default();
        let all = sessions(5000);
        let s = spec.split(&all);
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 5000);
        assert!((900..1100).contains(&s.test.len()), "{}", s.test.len());
        assert!((400..600).contains(&s.val.len()), "{}", s.val.len());
        let mut reversed = all.clone();
        reversed.reverse();
        let r = spec.split(&reversed);
        let keys = |v: &[Session]| {
            let mut k: Vec<_> = v.iter().map(|s| s.key.clone()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&s.test), keys(&r.test));
        let other = SplitSpec { seed: 7, ..spec }.split(&all);
        assert_ne!(keys(&s.test), keys(&other.test));
        assert!(SplitSpec {
            test_percent: 60,
            val_percent: 40,
            seed: 0
        }
        .validate()
        .is_err());
    }
}
