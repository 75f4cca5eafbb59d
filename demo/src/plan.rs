//! The order of the runs and the sessions each repetition replays. Every repetition runs
//! every mode once, in the order given (rep 1: A B C, rep 2: A B C, ...), so a slow spell of
//! the machine falls on all modes alike rather than on whichever ran then. Each repetition
//! replays its own held-out sessions: the test split is cut, in order, into `reps` disjoint
//! groups of `requests` requests (a group's last session cut short), and every mode of a
//! repetition replays the same group.

/// The runs in order: (repetition from 1, mode), modes interleaved within each repetition.
pub fn interleave<T: Clone>(reps: usize, modes: &[T]) -> Vec<(usize, T)> {
    (1..=reps)
        .flat_map(|rep| modes.iter().map(move |m| (rep, m.clone())))
        .collect()
}

/// Cuts the held-out sessions into `reps` disjoint groups of `requests` requests each, in
/// order: the same cut `pto simulate` replays, so the two compare like with like.
pub use see_pto::online::simulate::rep_groups;

#[cfg(test)]
mod tests {
    use super::*;
    use see_pto::trace::Session;

    #[test]
    fn modes_are_interleaved_within_each_repetition() {
        assert_eq!(
            interleave(3, &["a", "b", "c"]),
            [
                (1, "a"),
                (1, "b"),
                (1, "c"),
                (2, "a"),
                (2, "b"),
                (2, "c"),
                (3, "a"),
                (3, "b"),
                (3, "c")
            ]
        );
        assert!(interleave::<&str>(0, &["a"]).is_empty());
        assert!(interleave::<&str>(2, &[]).is_empty());
    }

    fn session(n: usize, at: i64) -> Session {
        Session {
            requests: vec![
                see_pto::trace::Request {
                    kind: 1,
                    at_ms: at,
                    attrs: Default::default(),
                };
                n
            ],
            ..Session::default()
        }
    }

    #[test]
    fn repetitions_replay_disjoint_sessions() {
        // Sessions tagged by their first timestamp.
        let test: Vec<Session> = (0..6).map(|i| session(3, i)).collect();
        let groups = rep_groups(&test, 2, 5).unwrap();
        let tags: Vec<Vec<(i64, usize)>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|s| (s.requests[0].at_ms, s.requests.len()))
                    .collect()
            })
            .collect();
        // Rep 1: sessions 0 and 1 (cut to 2); rep 2 starts after the session cut short.
        assert_eq!(tags, [vec![(0, 3), (1, 2)], vec![(2, 3), (3, 2)]]);
        // Each repetition uses two sessions: a fourth finds none left.
        assert_eq!(rep_groups(&test, 3, 5).unwrap().len(), 3);
        let e = rep_groups(&test, 4, 5).unwrap_err().to_string();
        assert!(
            e.contains("repetition 4") && e.contains("--sessions"),
            "{e}"
        );
        assert!(rep_groups(&test, 0, 5).unwrap().is_empty());
    }
}
