//! Importing request traces from CSV or JSON lines, plain or gzip-compressed.
//!
//! Each row is one request: a session (or user) key, a request type and a timestamp, and
//! attributes: by default every other column (or JSON key), or the columns named
//! ([`AttributeColumns`]). Rows are grouped by session in order of first appearance and each
//! session is sorted by time. A malformed row is skipped and counted, or refused, per
//! [`Malformed`]. An attribute's value never makes a row malformed: a missing, empty,
//! over-long or non-UTF-8 value, or a new value past the cardinality limit, is counted in the
//! unknown bucket ([`crate::context`]).

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;

use crate::{
    context::{AttrValues, AttributeError, Attributes},
    trace::{Request, Session, Trace},
    vocab::Vocabulary,
};

/// The longest request-type name or key accepted.
pub const MAX_FIELD_LEN: usize = 256;

/// Errors of importing a trace.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be opened or read.
    #[error("cannot read {path}: {source}; check the path and permissions")]
    Io {
        /// The input.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A required column is missing from the CSV header.
    #[error("{path}: no {what} column (tried {tried}); name it with --{flag}")]
    MissingColumn {
        /// The input.
        path: PathBuf,
        /// Which column.
        what: &'static str,
        /// The names looked for.
        tried: String,
        /// The CLI flag that names it.
        flag: &'static str,
    },
    /// A row is malformed and the policy is to refuse (`--strict`; skipping is the default).
    #[error("{path}:{line}: {reason} (rerun without --strict to skip and count such rows)")]
    Malformed {
        /// The input.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The attribute columns cannot be used.
    #[error("{path}: {source}")]
    Attributes {
        /// The input.
        path: PathBuf,
        /// Why.
        source: AttributeError,
    },
    /// Nothing usable was found.
    #[error("{path}: no valid request rows; check the format (--format) and the column names")]
    Empty {
        /// The input.
        path: PathBuf,
    },
}

/// Input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 2] = [Format::Csv, Format::Jsonl];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = crate::names::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("format", s, &Self::ALL, Self::name)
    }
}

/// What to do with a malformed row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Malformed {
    /// Skip it and count it in the report.
    #[default]
    Skip,
    /// Stop the import with an error naming the line.
    Refuse,
}

/// Which columns (or JSON keys) are a request's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AttributeColumns {
    /// Every column that is not the session, request type, timestamp or user (the first
    /// [`crate::context::MAX_ATTRIBUTES`]; the import report warns about the rest).
    #[default]
    All,
    /// None.
    None,
    /// These (case-insensitive); a missing one is an error.
    Named(Vec<String>),
}

/// Import options; `None` columns are found among common names.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Format; `None` guesses from the file name (`.jsonl`, `.ndjson`, `.json` are JSON lines).
    pub format: Option<Format>,
    /// Session column.
    pub session_column: Option<String>,
    /// Request-type column.
    pub type_column: Option<String>,
    /// Timestamp column.
    pub time_column: Option<String>,
    /// User column.
    pub user_column: Option<String>,
    /// Attribute columns.
    pub attributes: AttributeColumns,
    /// Malformed-row policy.
    pub malformed: Malformed,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows read (header excluded).
    pub rows: u64,
    /// Rows skipped as malformed.
    pub skipped: u64,
    /// The first few skipped rows: line and reason.
    pub examples: Vec<(u64, String)>,
    /// What the report's reader should know: attribute columns left out, values bucketed.
    pub warnings: Vec<String>,
}

const SESSION_NAMES: &[&str] = &["session_id", "session", "sessionid", "user_id", "user"];
const TYPE_NAMES: &[&str] = &["request_type", "event", "type", "request", "event_type"];
const TIME_NAMES: &[&str] = &["timestamp", "time", "ts", "at"];
const USER_NAMES: &[&str] = &["user_id", "user"];

/// Imports the file at `path`, interning request types into `vocab`.
pub fn import_path(
    path: &Path,
    opts: &ImportOptions,
    vocab: Vocabulary,
) -> Result<(Trace, ImportReport), ImportError> {
    let io = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let name = path.to_string_lossy().to_lowercase();
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let format = opts.format.unwrap_or(
        if [".jsonl", ".ndjson", ".json"]
            .iter()
            .any(|e| stem.ends_with(e))
        {
            Format::Jsonl
        } else {
            Format::Csv
        },
    );
    import_reader(reader, path, format, opts, vocab)
}

/// Imports from `reader`; `path` only names the input in errors.
pub fn import_reader(
    reader: impl Read,
    path: &Path,
    format: Format,
    opts: &ImportOptions,
    vocab: Vocabulary,
) -> Result<(Trace, ImportReport), ImportError> {
    let mut b = Builder::new(path, opts.malformed, vocab);
    match format {
        Format::Csv => read_csv(reader, path, opts, &mut b)?,
        Format::Jsonl => read_jsonl(reader, path, opts, &mut b)?,
    }
    b.finish()
}

struct Row {
    session: String,
    kind: String,
    at_ms: i64,
    user: Option<String>,
    /// Raw values by attribute index; `None` where absent.
    attrs: Vec<Option<Vec<u8>>>,
}

struct Builder<'a> {
    path: &'a Path,
    policy: Malformed,
    trace: Trace,
    by_key: HashMap<String, usize>,
    report: ImportReport,
}

impl<'a> Builder<'a> {
    fn new(path: &'a Path, policy: Malformed, vocab: Vocabulary) -> Self {
        Self {
            path,
            policy,
            trace: Trace {
                attributes: Default::default(),
                vocab,
                sessions: Vec::new(),
            },
            by_key: HashMap::new(),
            report: ImportReport::default(),
        }
    }

    /// Sets the trace's attributes from the column names; returns the indices into `names`
    /// kept. Named explicitly, every name must be usable; by default an unusable name, a
    /// duplicate or a name past [`crate::context::MAX_ATTRIBUTES`] is left out with a warning.
    fn set_attributes(
        &mut self,
        names: &[&str],
        explicit: bool,
    ) -> Result<Vec<usize>, ImportError> {
        let err = |source| ImportError::Attributes {
            path: self.path.to_owned(),
            source,
        };
        if explicit {
            self.trace.attributes = Attributes::new(names).map_err(err)?;
            return Ok((0..names.len()).collect());
        }
        let mut kept: Vec<usize> = Vec::new();
        for (j, n) in names.iter().enumerate() {
            let mut with: Vec<&str> = kept.iter().map(|&k| names[k]).collect();
            with.push(n);
            match Attributes::new(&with) {
                Ok(_) => kept.push(j),
                Err(e) => self
                    .report
                    .warnings
                    .push(format!("column {n:?} left out: {e}")),
            }
        }
        let chosen: Vec<&str> = kept.iter().map(|&k| names[k]).collect();
        self.trace.attributes = Attributes::new(&chosen).map_err(err)?;
        Ok(kept)
    }

    /// Adds attribute `name` (JSON lines, found as the rows come) if there is room; its index.
    fn add_attribute(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.trace.attributes.index(name) {
            return Some(i);
        }
        let mut names: Vec<String> = self.trace.attributes.names().to_vec();
        names.push(name.to_owned());
        match Attributes::new(&names) {
            Ok(mut a) => {
                // Keep the values interned so far (the new attribute starts empty).
                a.take_values_from(&self.trace.attributes);
                self.trace.attributes = a;
                Some(names.len() - 1)
            }
            Err(e) => {
                if self.report.warnings.len() < 20 {
                    self.report
                        .warnings
                        .push(format!("key {name:?} left out: {e}"));
                }
                None
            }
        }
    }

    fn row(&mut self, line: u64, row: Result<Row, String>) -> Result<(), ImportError> {
        self.report.rows += 1;
        let row = match row.and_then(check_row) {
            Ok(r) => r,
            Err(reason) => {
                if self.policy == Malformed::Refuse {
                    return Err(ImportError::Malformed {
                        path: self.path.to_owned(),
                        line,
                        reason,
                    });
                }
                self.report.skipped += 1;
                if self.report.examples.len() < 5 {
                    self.report.examples.push((line, reason));
                }
                return Ok(());
            }
        };
        let kind = self.trace.vocab.intern(&row.kind);
        let mut attrs = AttrValues::default();
        for i in 0..self.trace.attributes.len() {
            let v = row.attrs.get(i).and_then(Option::as_deref);
            attrs.0[i] = self.trace.attributes.intern(i, v);
        }
        let sessions = &mut self.trace.sessions;
        let idx = *self.by_key.entry(row.session.clone()).or_insert_with(|| {
            sessions.push(Session {
                key: row.session,
                user: row.user,
                ..Session::default()
            });
            sessions.len() - 1
        });
        sessions[idx].requests.push(Request {
            kind,
            at_ms: row.at_ms,
            attrs,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<(Trace, ImportReport), ImportError> {
        if self.trace.sessions.is_empty() {
            return Err(ImportError::Empty {
                path: self.path.to_owned(),
            });
        }
        for s in &mut self.trace.sessions {
            s.requests.sort_by_key(|r| r.at_ms);
        }
        self.report
            .warnings
            .extend(self.trace.attributes.warnings());
        Ok((self.trace, self.report))
    }
}

fn check_row(r: Row) -> Result<Row, String> {
    for (what, v) in [("session", &r.session), ("request type", &r.kind)] {
        if v.trim().is_empty() {
            return Err(format!("empty {what}"));
        }
        if v.len() > MAX_FIELD_LEN {
            return Err(format!("{what} longer than {MAX_FIELD_LEN} bytes"));
        }
    }
    if r.kind == crate::vocab::UNKNOWN_NAME {
        return Err("reserved request type name".into());
    }
    Ok(r)
}

fn find_column(
    header: &csv::StringRecord,
    given: Option<&str>,
    candidates: &[&str],
) -> Option<usize> {
    let names: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    match given {
        Some(g) => names.iter().position(|h| *h == g.to_lowercase()),
        None => candidates
            .iter()
            .find_map(|c| names.iter().position(|h| h == c)),
    }
}

fn read_csv(
    reader: impl Read,
    path: &Path,
    opts: &ImportOptions,
    b: &mut Builder<'_>,
) -> Result<(), ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let header = rdr.headers().map_err(|e| csv_io(path, e))?.clone();
    let missing = |what, given: &Option<String>, cands: &[&str], flag| {
        let tried = given.clone().unwrap_or_else(|| cands.join(", "));
        ImportError::MissingColumn {
            path: path.to_owned(),
            what,
            tried,
            flag,
        }
    };
    let type_col = find_column(&header, opts.type_column.as_deref(), TYPE_NAMES)
        .ok_or_else(|| missing("request type", &opts.type_column, TYPE_NAMES, "type-column"))?;
    let session_col = find_column(&header, opts.session_column.as_deref(), SESSION_NAMES)
        .ok_or_else(|| {
            missing(
                "session",
                &opts.session_column,
                SESSION_NAMES,
                "session-column",
            )
        })?;
    let time_col = find_column(&header, opts.time_column.as_deref(), TIME_NAMES)
        .ok_or_else(|| missing("timestamp", &opts.time_column, TIME_NAMES, "time-column"))?;
    let user_col = find_column(&header, opts.user_column.as_deref(), USER_NAMES);
    let keys = [Some(session_col), Some(type_col), Some(time_col), user_col];
    let attr_cols: Vec<usize> = match &opts.attributes {
        AttributeColumns::None => Vec::new(),
        AttributeColumns::All => (0..header.len())
            .filter(|i| !keys.contains(&Some(*i)))
            .collect(),
        AttributeColumns::Named(names) => names
            .iter()
            .map(|n| {
                find_column(&header, Some(n), &[])
                    .ok_or_else(|| missing("attribute", &Some(n.clone()), &[], "attribute-columns"))
            })
            .collect::<Result<_, _>>()?,
    };
    let names: Vec<&str> = attr_cols.iter().map(|&i| header[i].trim()).collect();
    let explicit = matches!(opts.attributes, AttributeColumns::Named(_));
    let attr_cols: Vec<usize> = b
        .set_attributes(&names, explicit)?
        .into_iter()
        .map(|j| attr_cols[j])
        .collect();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let field = |i: usize| -> Option<Result<&str, String>> {
                    record.get(i).map(|f| {
                        std::str::from_utf8(f)
                            .map(str::trim)
                            .map_err(|_| "not UTF-8".to_owned())
                    })
                };
                let row = match (field(session_col), field(type_col), field(time_col)) {
                    (Some(s), Some(k), Some(t)) => (|| {
                        let (s, k, t) = (s?, k?, t?);
                        let at_ms = parse_time(t).map_err(|e| e.to_string())?;
                        Ok(Row {
                            session: s.to_owned(),
                            kind: k.to_owned(),
                            at_ms,
                            user: user_col
                                .and_then(field)
                                .and_then(Result::ok)
                                .map(str::to_owned),
                            attrs: attr_cols
                                .iter()
                                .map(|&i| record.get(i).map(<[u8]>::to_vec))
                                .collect(),
                        })
                    })(),
                    _ => Err(format!("{} fields, too few", record.len())),
                };
                b.row(line, row)?;
            }
            Err(e) if e.is_io_error() => return Err(csv_io(path, e)),
            Err(e) => b.row(line, Err(e.to_string()))?,
        }
    }
    Ok(())
}

fn csv_io(path: &Path, e: csv::Error) -> ImportError {
    let source = match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_jsonl(
    reader: impl Read,
    path: &Path,
    opts: &ImportOptions,
    b: &mut Builder<'_>,
) -> Result<(), ImportError> {
    let pick = |obj: &serde_json::Map<String, serde_json::Value>,
                given: &Option<String>,
                cands: &[&str]|
     -> Option<serde_json::Value> {
        match given {
            Some(g) => obj.get(g).cloned(),
            None => cands.iter().find_map(|c| obj.get(*c).cloned()),
        }
    };
    if let AttributeColumns::Named(names) = &opts.attributes {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        b.set_attributes(&names, true)?;
    }
    for (i, line) in BufReader::new(reader).split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let mut bytes = line.map_err(|source| ImportError::Io {
            path: path.to_owned(),
            source,
        })?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        // A line that is not UTF-8 is a malformed row, not a failed read.
        let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned());
        if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        let row = text
            .and_then(|t| {
                serde_json::from_str::<serde_json::Value>(&t).map_err(|e| format!("not JSON: {e}"))
            })
            .and_then(|v| match v {
                serde_json::Value::Object(o) => Ok(o),
                _ => Err("not a JSON object".to_owned()),
            })
            .and_then(|o| {
                let s = pick(&o, &opts.session_column, SESSION_NAMES).ok_or("no session key")?;
                let k = pick(&o, &opts.type_column, TYPE_NAMES).ok_or("no request type")?;
                let t = pick(&o, &opts.time_column, TIME_NAMES).ok_or("no timestamp")?;
                let user = pick(&o, &opts.user_column, USER_NAMES).and_then(|u| scalar(&u));
                let attrs = json_attributes(&o, opts, b);
                Ok(Row {
                    session: scalar(&s).ok_or("session is not a string or number")?,
                    kind: scalar(&k).ok_or("request type is not a string")?,
                    at_ms: match &t {
                        serde_json::Value::Number(n) => n
                            .as_f64()
                            .and_then(seconds_or_ms)
                            .ok_or_else(|| out_of_range(&n.to_string()).to_string())?,
                        serde_json::Value::String(s) => parse_time(s).map_err(|e| e.to_string())?,
                        _ => return Err("timestamp is not a number or string".into()),
                    },
                    user,
                    attrs,
                })
            });
        b.row(line_no, row)?;
    }
    Ok(())
}

/// The raw attribute values of a JSON row, by attribute index; with [`AttributeColumns::All`]
/// every key that is not a key column becomes an attribute when first seen (while there is room).
fn json_attributes(
    o: &serde_json::Map<String, serde_json::Value>,
    opts: &ImportOptions,
    b: &mut Builder<'_>,
) -> Vec<Option<Vec<u8>>> {
    let value = |v: &serde_json::Value| -> Option<Vec<u8>> {
        match v {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(x) => Some(x.to_string().into_bytes()),
            other => scalar(other)
                .or_else(|| Some(other.to_string()))
                .map(String::into_bytes),
        }
    };
    if opts.attributes == AttributeColumns::All {
        let key = |given: &Option<String>, cands: &[&str]| -> Option<String> {
            match given {
                Some(g) => Some(g.clone()),
                None => cands
                    .iter()
                    .find(|c| o.contains_key(**c))
                    .map(|c| (*c).to_owned()),
            }
        };
        let keys = [
            key(&opts.session_column, SESSION_NAMES),
            key(&opts.type_column, TYPE_NAMES),
            key(&opts.time_column, TIME_NAMES),
            key(&opts.user_column, USER_NAMES),
        ];
        for k in o.keys() {
            if !keys.iter().any(|x| x.as_deref() == Some(k.as_str())) {
                b.add_attribute(k);
            }
        }
    }
    b.trace
        .attributes
        .names()
        .iter()
        .map(|n| o.get(n).and_then(value))
        .collect()
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The earliest timestamp accepted: 0001-01-01 00:00:00 UTC, in milliseconds since the epoch.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
/// The latest timestamp accepted: 9999-12-31 23:59:59.999 UTC, in milliseconds since the epoch.
/// With [`MIN_TIME_MS`] it keeps every timestamp, and the difference of any two, far from
/// the `i64` limits.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A timestamp [`parse_time`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither a number nor a date and time.
    #[error("bad timestamp {0:?} (want seconds or YYYY-MM-DD HH:MM:SS)")]
    Format(String),
    /// Outside years 1 to 9999.
    #[error("timestamp {0:?} out of range (years 1 to 9999)")]
    OutOfRange(String),
}

fn out_of_range(s: &str) -> TimeError {
    TimeError::OutOfRange(s.to_owned())
}

/// A number of seconds since the epoch, or of milliseconds when it is larger than 1e11 (a
/// date after 5138 in seconds); `None` outside years 1 to 9999.
fn seconds_or_ms(x: f64) -> Option<i64> {
    let ms = if x.abs() > 1e11 { x } else { x * 1000.0 };
    // The bounds are exact in f64 (below 2^53), so the cast cannot saturate.
    (ms.is_finite() && (MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms)).then_some(ms as i64)
}

/// Parses a timestamp: a number (seconds, or milliseconds above 1e11) or `YYYY-MM-DD[ T]HH:MM:SS[.fff][Z]`
/// (UTC), to milliseconds since the Unix epoch. Dates outside years 1 to 9999 are refused.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let s = s.trim();
    if let Ok(x) = s.parse::<f64>() {
        if x.is_finite() {
            return seconds_or_ms(x).ok_or_else(|| out_of_range(s));
        }
    }
    let bad = || TimeError::Format(s.to_owned());
    let s2 = s.strip_suffix('Z').unwrap_or(s);
    let s2 = s2.strip_suffix("+00:00").unwrap_or(s2);
    let (date, time) = s2.split_once([' ', 'T']).unwrap_or((s2, "00:00:00"));
    let num = |p: &str| p.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm) = (num(t[0])?, num(t[1])?);
    let secs: f64 = t[2].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0.0..61.0).contains(&secs)
    {
        return Err(bad());
    }
    if !(1..=9999).contains(&y) {
        return Err(out_of_range(s));
    }
    // With the year in range every term is below about 3e14: no overflow is possible.
    let days = days_from_civil(y, m, day);
    let ms = (days * 86_400 + hh * 3600 + mm * 60) * 1000 + (secs * 1000.0).round() as i64;
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(out_of_range(s))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod attribute_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "user_id,session_id,event,timestamp,platform\n\
        u1,s1,home,2024-03-13 10:21:14,desktop\n\
        u1,s1,cart,2024-03-13 10:21:28,desktop\n\
        u2,s2,search,2024-03-13 11:00:00,mobile\n\
        u1,s1,catalog,2024-03-13 10:21:20,desktop\n\
        u2,s2,,2024-03-13 11:00:05,mobile\n\
        u2,s2,home,yesterday,mobile\n\
        u2,s2\n";

    fn import(
        text: &str,
        format: Format,
        policy: Malformed,
    ) -> Result<(Trace, ImportReport), ImportError> {
        let opts = ImportOptions {
            malformed: policy,
            ..ImportOptions::default()
        };
        import_reader(
            text.as_bytes(),
            Path::new("t"),
            format,
            &opts,
            Vocabulary::new(),
        )
    }

    #[test]
    fn csv_groups_sorts_and_counts_malformed_rows() {
        let (t, r) = import(CSV, Format::Csv, Malformed::Skip).unwrap();
        assert_eq!(r.rows, 7);
        assert_eq!(r.skipped, 3);
        assert_eq!(
            r.examples.iter().map(|e| e.0).collect::<Vec<_>>(),
            [6, 7, 8]
        );
        assert_eq!(t.sessions.len(), 2);
        let s1: Vec<_> = t.sessions[0]
            .kinds()
            .iter()
            .map(|&k| t.vocab.name(k).unwrap())
            .collect();
        assert_eq!(s1, ["home", "catalog", "cart"], "sorted by time");
        assert_eq!(t.sessions[0].user.as_deref(), Some("u1"));
        assert_eq!(t.sessions[1].requests.len(), 1);
    }

    #[test]
    fn csv_refuses_malformed_rows_when_asked() {
        let err = import(CSV, Format::Csv, Malformed::Refuse).unwrap_err();
        assert!(
            matches!(err, ImportError::Malformed { line: 6, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "t:6: empty request type (rerun without --strict to skip and count such rows)"
        );
    }

    #[test]
    fn csv_without_a_type_column_names_the_flag() {
        let err = import("a,b\n1,2\n", Format::Csv, Malformed::Skip).unwrap_err();
        assert!(err.to_string().contains("--type-column"), "{err}");
    }

    #[test]
    fn jsonl_reads_numbers_and_strings_and_skips_garbage() {
        let text = "{\"session\":7,\"type\":\"a\",\"ts\":1.5}\n\n\
            not json\n[1]\n{\"session\":7,\"type\":\"b\",\"ts\":\"1970-01-01T00:00:02Z\"}\n\
            {\"session\":7,\"type\":\"c\"}\n";
        let (t, r) = import(text, Format::Jsonl, Malformed::Skip).unwrap();
        assert_eq!(r.skipped, 3);
        assert_eq!(t.sessions[0].key, "7");
        assert_eq!(t.sessions[0].requests[0].at_ms, 1500);
        assert_eq!(t.sessions[0].requests[1].at_ms, 2000);
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(matches!(
            import("session,type,ts\n", Format::Csv, Malformed::Skip),
            Err(ImportError::Empty { .. })
        ));
    }

    #[test]
    fn parses_dates() {
        assert_eq!(parse_time("1970-01-02 00:00:01"), Ok(86_401_000));
        assert_eq!(
            parse_time("2024-03-13 10:21:14").unwrap(),
            1_710_325_274_000
        );
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert!(parse_time("2024-13-01 00:00:00").is_err());
        assert!(parse_time("nan").is_err());
    }

    #[test]
    fn out_of_range_dates_are_row_errors_not_overflows() {
        for bad in [
            "300000000-01-01 00:00:00",
            "0-01-01 00:00:00",
            "10000-01-01 00:00:00",
            "9223372036854775807-12-31 23:59:59",
            "1e300",
            "-1e300",
            "1e15",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(matches!(err, TimeError::OutOfRange(_)), "{bad}: {err}");
            assert!(err.to_string().contains("out of range"), "{bad}: {err}");
        }
        assert!(parse_time("-300000000-01-01 00:00:00").is_err());
        assert_eq!(parse_time("0001-01-01 00:00:00"), Ok(MIN_TIME_MS));
        assert_eq!(parse_time("9999-12-31 23:59:59.999"), Ok(MAX_TIME_MS));
        assert_eq!(parse_time("253402300799999"), Ok(MAX_TIME_MS));

        let text = "session,type,ts\ns1,a,2024-01-01 00:00:00\n\
            s1,b,300000000-01-01 00:00:00\ns1,c,2024-01-01 00:00:01\n";
        let (t, r) = import(text, Format::Csv, Malformed::Skip).unwrap();
        assert_eq!((r.rows, r.skipped, t.request_count()), (3, 1, 2));
        assert_eq!(r.examples[0].0, 3);
        assert!(r.examples[0].1.contains("out of range"), "{:?}", r.examples);
        let err = import(text, Format::Csv, Malformed::Refuse).unwrap_err();
        assert!(
            matches!(err, ImportError::Malformed { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("out of range"), "{err}");

        let json = "{\"session\":1,\"type\":\"a\",\"ts\":1e300}\n\
            {\"session\":1,\"type\":\"b\",\"ts\":\"300000000-01-01 00:00:00\"}\n\
            {\"session\":1,\"type\":\"c\",\"ts\":5}\n";
        let (t, r) = import(json, Format::Jsonl, Malformed::Skip).unwrap();
        assert_eq!((r.rows, r.skipped, t.request_count()), (3, 2, 1));
        assert!(matches!(
            import(json, Format::Jsonl, Malformed::Refuse),
            Err(ImportError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_malformed_row() {
        let mut text = b"{\"session\":1,\"type\":\"a\",\"ts\":1}\r\n".to_vec();
        text.extend_from_slice(b"{\"session\":1,\"type\":\"\xff\",\"ts\":2}\n");
        text.extend_from_slice(b"{\"session\":1,\"type\":\"b\",\"ts\":3}");
        let opts = ImportOptions::default();
        let (t, r) = import_reader(
            &text[..],
            Path::new("t"),
            Format::Jsonl,
            &opts,
            Vocabulary::new(),
        )
        .unwrap();
        assert_eq!((r.rows, r.skipped, t.request_count()), (3, 1, 2));
        assert_eq!(r.examples, [(2, "not UTF-8".to_owned())]);
    }

    /// Valid rows of both formats, with dates and numbers, the material of the mutation test.
    fn valid_rows(format: Format) -> (Vec<u8>, Vec<u8>) {
        let rows = [
            ("s1", "home", "2024-03-13 10:21:14"),
            ("s1", "catalog", "2024-03-13T10:21:20.250Z"),
            ("s2", "search", "1710325274"),
            ("s1", "cart", "1710325290123"),
            ("s2", "home", "0001-01-01 00:00:00"),
            ("s3", "checkout", "9999-12-31 23:59:59"),
            ("s3", "home", "2024-02-29 23:59:59+00:00"),
        ];
        match format {
            Format::Csv => {
                let mut body = String::new();
                for (s, k, t) in rows {
                    body.push_str(&format!("u,{s},{k},{t},desktop\n"));
                }
                (
                    b"user_id,session_id,event,timestamp,platform\n".to_vec(),
                    body.into_bytes(),
                )
            }
            Format::Jsonl => {
                let mut body = String::new();
                for (i, (s, k, t)) in rows.iter().enumerate() {
                    let ts = if i % 2 == 0 {
                        format!("{t:?}")
                    } else {
                        parse_time(t).unwrap().to_string()
                    };
                    body.push_str(&format!(
                        "{{\"session\":{s:?},\"type\":{k:?},\"ts\":{ts}}}\n"
                    ));
                }
                (Vec::new(), body.into_bytes())
            }
        }
    }

    /// One random edit of `body`: a byte replaced, inserted or deleted, a run of digits or
    /// a syntax character inserted, or the input cut short.
    fn mutate(rng: &mut rand_chacha::ChaCha8Rng, body: &mut Vec<u8>) {
        use rand::Rng;
        const SPICE: &[&[u8]] = &[
            b"999999999",
            b"-",
            b"\"",
            b",",
            b"\n",
            b"\r\n",
            b"{",
            b"}",
            b":",
            b"e308",
            b"\xff\xfe",
            b"\0",
            b"NaN",
        ];
        let at = rng.random_range(0..=body.len());
        match rng.random_range(0..5) {
            0 if at < body.len() => body[at] = rng.random(),
            1 => body.insert(at, rng.random()),
            2 if at < body.len() => {
                body.remove(at);
            }
            3 => {
                let s = SPICE[rng.random_range(0..SPICE.len())];
                body.splice(at..at, s.iter().copied());
            }
            _ => body.truncate(at),
        }
    }

    #[test]
    fn mutated_inputs_never_panic_and_every_row_is_accounted_for() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5ee_9170);
        for format in [Format::Csv, Format::Jsonl] {
            let (header, body) = valid_rows(format);
            let (mut ok, mut skipped, mut empty) = (0, 0u64, 0);
            for iteration in 0..3000 {
                let mut b = body.clone();
                for _ in 0..rng.random_range(1..=6) {
                    mutate(&mut rng, &mut b);
                }
                let input = [header.clone(), b].concat();
                let shown = String::from_utf8_lossy(&input).into_owned();
                for policy in [Malformed::Skip, Malformed::Refuse] {
                    let opts = ImportOptions {
                        malformed: policy,
                        ..ImportOptions::default()
                    };
                    let result =
                        import_reader(&input[..], Path::new("m"), format, &opts, Vocabulary::new());
                    match (result, policy) {
                        (Ok((t, r)), _) => {
                            assert_eq!(
                                r.rows,
                                t.request_count() as u64 + r.skipped,
                                "{format:?} #{iteration}: imported + skipped != rows for {shown:?}"
                            );
                            assert!(r.examples.len() as u64 == r.skipped.min(5));
                            if policy == Malformed::Refuse {
                                assert_eq!(r.skipped, 0);
                            } else {
                                ok += 1;
                                skipped += r.skipped;
                            }
                            for s in &t.sessions {
                                assert!(s.requests.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                                assert!(s
                                    .requests
                                    .iter()
                                    .all(|q| (MIN_TIME_MS..=MAX_TIME_MS).contains(&q.at_ms)));
                            }
                        }
                        (Err(ImportError::Empty { .. }), Malformed::Skip) => empty += 1,
                        (Err(ImportError::Malformed { line, .. }), Malformed::Refuse) => {
                            assert!(line >= 1, "{format:?} #{iteration}: line {line}");
                        }
                        (Err(ImportError::Empty { .. }), Malformed::Refuse) => {}
                        (Err(e), _) => {
                            panic!("{format:?} #{iteration} {policy:?}: {e} for {shown:?}")
                        }
                    }
                }
            }
            // The mutations exercised both outcomes.
            assert!(
                ok > 1000 && skipped > 1000 && empty > 0,
                "{format:?}: {ok} {skipped} {empty}"
            );
        }
    }

    fn gzip(members: &[&[u8]]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        for m in members {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(m).unwrap();
            out.extend(enc.finish().unwrap());
        }
        out
    }

    fn kinds(t: &Trace, session: usize) -> Vec<&str> {
        t.sessions[session]
            .kinds()
            .iter()
            .map(|&k| t.vocab.name(k).unwrap())
            .collect()
    }

    #[test]
    fn gzipped_csv_and_json_lines_files_import() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ImportOptions::default();

        let csv = dir.path().join("trace.csv.gz");
        std::fs::write(&csv, gzip(&[CSV.as_bytes()])).unwrap();
        let (t, r) = import_path(&csv, &opts, Vocabulary::new()).unwrap();
        assert_eq!((r.rows, r.skipped), (7, 3));
        assert_eq!(t.sessions.len(), 2);
        assert_eq!(kinds(&t, 0), ["home", "catalog", "cart"]);
        assert_eq!(kinds(&t, 1), ["search"]);
        assert_eq!(t.sessions[0].requests[0].at_ms, 1_710_325_274_000);

        // JSON lines found by the name under .gz, in two gzip members (as `cat a.gz b.gz`).
        let jsonl = dir.path().join("trace.jsonl.gz");
        let first = b"{\"session\":\"a\",\"type\":\"home\",\"ts\":10}\n\
            {\"session\":\"b\",\"type\":\"search\",\"ts\":\"1970-01-01 00:00:20\"}\n";
        let second = b"{\"session\":\"a\",\"type\":\"cart\",\"ts\":12.5}\nnot json\n";
        std::fs::write(&jsonl, gzip(&[first, second])).unwrap();
        let (t, r) = import_path(&jsonl, &opts, Vocabulary::new()).unwrap();
        assert_eq!((r.rows, r.skipped), (4, 1));
        assert_eq!(r.examples[0].0, 4);
        let keys: Vec<&str> = t.sessions.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(kinds(&t, 0), ["home", "cart"]);
        let at: Vec<i64> = t.sessions[0].requests.iter().map(|r| r.at_ms).collect();
        assert_eq!(at, [10_000, 12_500]);
        assert_eq!(t.sessions[1].requests[0].at_ms, 20_000);

        // Gzip is recognised by its magic bytes, whatever the name.
        let plain_name = dir.path().join("trace.ndjson");
        std::fs::copy(&jsonl, &plain_name).unwrap();
        let (t2, _) = import_path(&plain_name, &opts, Vocabulary::new()).unwrap();
        assert_eq!(t2, t);

        // A cut gzip stream is a read error naming the file, not a panic or a silent stop.
        let cut = dir.path().join("cut.csv.gz");
        let bytes = gzip(&[CSV.as_bytes()]);
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = import_path(&cut, &opts, Vocabulary::new()).unwrap_err();
        assert!(matches!(err, ImportError::Io { .. }), "{err}");
        assert!(err.to_string().contains("cut.csv.gz"), "{err}");
    }

    #[test]
    fn reads_the_shared_ecom_trace_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ecom.csv.gz");
        if !path.exists() {
            return;
        }
        let (t, r) = import_path(&path, &ImportOptions::default(), Vocabulary::new()).unwrap();
        assert_eq!(r.skipped, 0);
        assert_eq!(t.sessions.len(), 3605);
        assert_eq!(t.request_count(), 31_106);
        assert_eq!(t.vocab.len(), 20);
    }
}
