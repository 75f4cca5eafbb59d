//! The names of the library's choice enums ([`Mode`](crate::online::Mode),
//! [`ModelKind`](crate::nn::ModelKind), [`Workload`](crate::generate::Workload),
//! [`Format`](crate::import::Format)): each parses from its name with `FromStr` and prints it
//! with `Display`, so that binaries can take them as arguments without the library depending
//! on a command-line parser.

/// A name that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: use one of {}", accepted.join(", "))]
pub struct UnknownName {
    /// What was being named (`mode`, `model`, ...).
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The names accepted.
    pub accepted: Vec<&'static str>,
}

/// The value of `all` whose `name` is `value`.
pub(crate) fn parse<T: Copy>(
    what: &'static str,
    value: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v) == value)
        .ok_or_else(|| UnknownName {
            what,
            value: value.to_owned(),
            accepted: all.iter().map(|v| name(*v)).collect(),
        })
}

#[cfg(test)]
mod tests {
    use crate::{generate::Workload, import::Format, nn::ModelKind, online::Mode};

    #[test]
    fn every_name_parses_back_and_a_wrong_one_lists_the_accepted() {
        for m in Mode::ALL {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        for k in ModelKind::ALL {
            assert_eq!(k.to_string().parse::<ModelKind>(), Ok(k));
        }
        for w in Workload::ALL {
            assert_eq!(w.to_string().parse::<Workload>(), Ok(w));
        }
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        let err = "gru".parse::<ModelKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown model \"gru\": use one of lstm, transformer"
        );
    }
}
