//! The history: past sessions and requests, task executions and prefetch outcomes, in SQLite.
//!
//! Offline, `pto import` fills it from traces and training reads it back as a [`Trace`].
//! Online, the backend records each request ([`History::record_request`]), each task's
//! execution ([`History::record_task`]) and the fate of each prefetched or demanded resource
//! ([`History::record_prefetch`]).
//!
//! Rows whose content the guest reported (task executions from its completion reports,
//! prefetch outcomes from its claim reports, the guest half of a request's result) carry
//! `guest_reported = 1`: a compromised guest can write them, so training can leave out every
//! session that has one ([`LoadOptions::exclude_guest_reported`]).
//!
//! Requests carry attributes ([`crate::context`]) in `request_attributes`, one row per
//! request and attribute with a known value; the time features are derived from `at_ms` when
//! a trace is loaded.
//!
//! Schema versions: 1 had no `guest_reported` columns, 2 no attribute tables; [`History::open`]
//! migrates a version 1 or 2 file in place (each step in one transaction). From 1, the rows
//! version 1 only ever wrote from the guest's reports (every task execution and prefetch
//! outcome, and the results with a guest status) are marked; from 2, the attribute tables are
//! added, empty.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{
    context::{AttrValues, Attributes, MAX_ATTRIBUTES},
    trace::{Request, Session, Trace},
    vocab::Vocabulary,
};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 3;

/// Migrates a version 1 file to version 2.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE task_executions ADD COLUMN guest_reported INTEGER NOT NULL DEFAULT 0;
UPDATE task_executions SET guest_reported = 1;
ALTER TABLE prefetch_outcomes ADD COLUMN guest_reported INTEGER NOT NULL DEFAULT 0;
UPDATE prefetch_outcomes SET guest_reported = 1;
ALTER TABLE request_results ADD COLUMN guest_reported INTEGER NOT NULL DEFAULT 0;
UPDATE request_results SET guest_reported = (guest_status IS NOT NULL);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
";

/// The attribute tables (version 3).
const ATTRIBUTE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS attribute_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS request_attributes (
    request_id INTEGER NOT NULL REFERENCES requests(id),
    attribute_id INTEGER NOT NULL REFERENCES attribute_names(id),
    value TEXT NOT NULL,
    PRIMARY KEY (request_id, attribute_id)
) WITHOUT ROWID;
";

/// Migrates a version 2 file to version 3: the attribute tables, empty.
const MIGRATE_2_TO_3: &str = "UPDATE meta SET value = '3' WHERE key = 'schema_version';";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS request_types (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    user TEXT,
    UNIQUE (source, key)
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    type_id INTEGER NOT NULL REFERENCES request_types(id),
    at_ms INTEGER NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE TABLE IF NOT EXISTS task_executions (
    id INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests(id),
    task TEXT NOT NULL,
    started_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    wait_us INTEGER NOT NULL,
    staged INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    guest_reported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS prefetch_outcomes (
    id INTEGER PRIMARY KEY,
    session_id INTEGER REFERENCES sessions(id),
    request_id INTEGER REFERENCES requests(id),
    predictor TEXT NOT NULL,
    resource TEXT NOT NULL,
    version INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('hit', 'miss', 'wasted')),
    bytes INTEGER NOT NULL,
    probability REAL,
    predicted_us INTEGER,
    staged_us INTEGER,
    resolved_us INTEGER,
    guest_reported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS request_results (
    request_id INTEGER PRIMARY KEY REFERENCES requests(id),
    http_status INTEGER NOT NULL,
    guest_status INTEGER,
    host_us INTEGER NOT NULL,
    guest_us INTEGER,
    guest_reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_by_session ON requests (session_id, seq);
CREATE INDEX IF NOT EXISTS outcomes_by_predictor ON prefetch_outcomes (predictor, outcome);
";

/// Errors of the history database.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite failed.
    #[error("history database: {0}; check the path, or move a corrupt file away")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by another schema version.
    #[error("history database has schema version {found}, this build reads {SCHEMA_VERSION} (and migrates 1 and 2); re-import the traces into a new file")]
    Schema {
        /// The version found.
        found: String,
    },
    /// A number does not fit SQLite's 64-bit integers.
    #[error("history: {0} does not fit a 64-bit integer")]
    TooLarge(u64),
    /// A request's type is not in its trace's vocabulary.
    #[error("history: session {session} has request type id {type_id} outside its vocabulary")]
    UnknownType {
        /// The session key.
        session: String,
        /// The request type id.
        type_id: u32,
    },
}

/// The id of a session row.
pub type SessionRow = i64;
/// The id of a request row.
pub type RequestRow = i64;

/// How a request served through the PTO service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestResult {
    /// The request's row.
    pub request: RequestRow,
    /// The HTTP status the client got.
    pub http_status: u16,
    /// The guest's completion status, when the guest completed it.
    pub guest_status: Option<u32>,
    /// Latency at the host (arrival to response), us.
    pub host_us: u64,
    /// Latency in the guest, us, when the guest completed it.
    pub guest_us: Option<u64>,
}

/// One task's execution, as the guest reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskExecution {
    /// The request it ran for.
    pub request: RequestRow,
    /// Task id (from the service metadata).
    pub task: String,
    /// Start, microseconds since the request arrived.
    pub started_us: u64,
    /// Run time, microseconds.
    pub duration_us: u64,
    /// Time spent waiting for resources (claim or demand fetch), microseconds.
    pub wait_us: u64,
    /// True when every resource was staged in time.
    pub staged: bool,
    /// Bytes of resources it used.
    pub bytes: u64,
    /// True when it succeeded.
    pub ok: bool,
    /// True when the guest reported it (every execution the online service records).
    pub guest_reported: bool,
}

/// What became of one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Prefetched and claimed.
    Hit,
    /// Needed but not staged: demand-fetched.
    Miss,
    /// Prefetched but evicted or never claimed.
    Wasted,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Wasted => "wasted",
        }
    }
}

/// A prefetch (or demand fetch) outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefetchOutcome {
    /// The session it was for, if known.
    pub session: Option<SessionRow>,
    /// The request that claimed it (hits and misses).
    pub request: Option<RequestRow>,
    /// The predictor in charge.
    pub predictor: String,
    /// Resource id and version.
    pub resource: String,
    /// Resource version.
    pub version: u64,
    /// What became of it.
    pub outcome: Outcome,
    /// Bytes moved.
    pub bytes: u64,
    /// The predicted probability, for prefetches.
    pub probability: Option<f32>,
    /// When it was predicted, staged and claimed or evicted (microseconds, any epoch).
    pub predicted_us: Option<u64>,
    /// See `predicted_us`.
    pub staged_us: Option<u64>,
    /// See `predicted_us`.
    pub resolved_us: Option<u64>,
    /// True when a guest's report decided the outcome.
    pub guest_reported: bool,
}

/// Totals of prefetch outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchSummary {
    /// Prefetched and claimed.
    pub hits: u64,
    /// Demand-fetched.
    pub misses: u64,
    /// Prefetched for nothing.
    pub wasted: u64,
    /// Bytes of hits.
    pub hit_bytes: u64,
    /// Bytes of wasted prefetches.
    pub wasted_bytes: u64,
}

/// Sessions and requests per source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Source name.
    pub source: String,
    /// Sessions.
    pub sessions: u64,
    /// Requests.
    pub requests: u64,
}

/// What [`History::load_trace_with`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Leave out every session with a guest-reported row (a task execution, prefetch outcome
    /// or result from a guest's report): train only on what no guest wrote.
    pub exclude_guest_reported: bool,
}

/// The history database.
#[derive(Debug)]
pub struct History {
    conn: Connection,
}

fn int(v: u64) -> Result<i64, HistoryError> {
    i64::try_from(v).map_err(|_| HistoryError::TooLarge(v))
}

impl History {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A fresh database in memory.
    pub fn open_in_memory() -> Result<Self, HistoryError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, HistoryError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(ATTRIBUTE_TABLES)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) if v == "1" || v == "2" => {
                let tx = conn.unchecked_transaction()?;
                if v == "1" {
                    tx.execute_batch(MIGRATE_1_TO_2)?;
                }
                tx.execute_batch(MIGRATE_2_TO_3)?;
                tx.commit()?;
                log::info!("history: migrated schema version {v} to {SCHEMA_VERSION}");
            }
            Some(found) => return Err(HistoryError::Schema { found }),
        }
        Ok(Self { conn })
    }

    fn type_id(&self, name: &str) -> Result<i64, HistoryError> {
        self.conn
            .prepare_cached("INSERT INTO request_types (name) VALUES (?1) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id")?
            .query_row([name], |r| r.get(0))
            .map_err(Into::into)
    }

    /// Stores every session of `trace` under `source`; sessions already stored under the same
    /// source and key are left as they are. Returns the number of sessions added.
    pub fn import_trace(&mut self, source: &str, trace: &Trace) -> Result<u64, HistoryError> {
        let tx = self.conn.transaction()?;
        let mut type_ids = vec![0i64; trace.vocab.len()];
        for (id, name) in trace.vocab.iter() {
            type_ids[id as usize] = tx
                .prepare_cached("INSERT INTO request_types (name) VALUES (?1) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id")?
                .query_row([name], |r| r.get(0))?;
        }
        let mut attr_ids = Vec::with_capacity(trace.attributes.len());
        for name in trace.attributes.names() {
            attr_ids.push(
                tx.prepare_cached("INSERT INTO attribute_names (name) VALUES (?1) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id")?
                    .query_row([name], |r| r.get::<_, i64>(0))?,
            );
        }
        let mut added = 0;
        {
            let mut ins_attr = tx.prepare_cached(
                "INSERT INTO request_attributes (request_id, attribute_id, value) VALUES (?1, ?2, ?3)",
            )?;
            let mut ins_session = tx.prepare_cached(
                "INSERT INTO sessions (source, key, user) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING RETURNING id",
            )?;
            let mut ins_request = tx.prepare_cached(
                "INSERT INTO requests (session_id, seq, type_id, at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for s in &trace.sessions {
                let Some(sid) = ins_session
                    .query_row(params![source, s.key, s.user], |r| r.get::<_, i64>(0))
                    .optional()?
                else {
                    continue;
                };
                added += 1;
                for (seq, r) in s.requests.iter().enumerate() {
                    let tid = type_ids.get(r.kind as usize).copied().filter(|&t| t != 0);
                    let Some(tid) = tid else {
                        return Err(HistoryError::UnknownType {
                            session: s.key.clone(),
                            type_id: r.kind,
                        });
                    };
                    ins_request.execute(params![sid, seq as i64, tid, r.at_ms])?;
                    if r.attrs.is_unknown() {
                        continue;
                    }
                    let rid = tx.last_insert_rowid();
                    for (i, &aid) in attr_ids.iter().enumerate() {
                        let value = trace
                            .attributes
                            .values(i)
                            .and_then(|v| v.name(u32::from(r.attrs.get(i))))
                            .filter(|_| r.attrs.get(i) != 0);
                        if let Some(value) = value {
                            ins_attr.execute(params![rid, aid, value])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// The sessions of `source` (all sources when `None`), in insertion order, with request
    /// types interned into `vocab`.
    pub fn load_trace(
        &self,
        source: Option<&str>,
        vocab: Vocabulary,
    ) -> Result<Trace, HistoryError> {
        self.load_trace_with(source, vocab, LoadOptions::default())
    }

    /// [`History::load_trace`], with `options`.
    pub fn load_trace_with(
        &self,
        source: Option<&str>,
        mut vocab: Vocabulary,
        options: LoadOptions,
    ) -> Result<Trace, HistoryError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.id, s.key, s.user, t.name, r.at_ms, r.id FROM sessions s \
             JOIN requests r ON r.session_id = s.id JOIN request_types t ON t.id = r.type_id \
             WHERE (?1 IS NULL OR s.source = ?1) AND NOT (?2 AND s.id IN ( \
                 SELECT q.session_id FROM requests q JOIN task_executions e \
                     ON e.request_id = q.id WHERE e.guest_reported \
                 UNION SELECT q.session_id FROM requests q JOIN request_results x \
                     ON x.request_id = q.id WHERE x.guest_reported \
                 UNION SELECT o.session_id FROM prefetch_outcomes o \
                     WHERE o.guest_reported AND o.session_id IS NOT NULL \
                 UNION SELECT q.session_id FROM requests q JOIN prefetch_outcomes o \
                     ON o.request_id = q.id WHERE o.guest_reported)) \
             ORDER BY s.id, r.seq",
        )?;
        let mut attributes = self.attributes_of(source)?;
        let mut attr_stmt = self.conn.prepare(
            "SELECT n.name, a.value FROM request_attributes a \
             JOIN attribute_names n ON n.id = a.attribute_id WHERE a.request_id = ?1",
        )?;
        let mut rows = stmt.query(params![source, options.exclude_guest_reported])?;
        let mut sessions: Vec<Session> = Vec::new();
        let mut last = None;
        while let Some(row) = rows.next()? {
            let sid: i64 = row.get(0)?;
            if last != Some(sid) {
                last = Some(sid);
                sessions.push(Session {
                    key: row.get(1)?,
                    user: row.get(2)?,
                    ..Session::default()
                });
            }
            let name: String = row.get(3)?;
            let kind = vocab.intern(&name);
            let mut attrs = AttrValues::default();
            if !attributes.is_empty() {
                let mut values = attr_stmt.query([row.get::<_, i64>(5)?])?;
                while let Some(v) = values.next()? {
                    let name: String = v.get(0)?;
                    if let Some(i) = attributes.index(&name) {
                        let value: String = v.get(1)?;
                        attrs.0[i] = attributes.intern(i, Some(value.as_bytes()));
                    }
                }
            }
            if let Some(s) = sessions.last_mut() {
                s.requests.push(Request {
                    kind,
                    at_ms: row.get(4)?,
                    attrs,
                });
            }
        }
        Ok(Trace {
            vocab,
            sessions,
            attributes,
        })
    }

    /// The attributes the requests of `source` (all sources when `None`) carry, in the order
    /// they were first stored; the first [`MAX_ATTRIBUTES`] when there are more.
    fn attributes_of(&self, source: Option<&str>) -> Result<Attributes, HistoryError> {
        let mut stmt = self.conn.prepare(
            "SELECT n.name FROM attribute_names n WHERE EXISTS ( \
                 SELECT 1 FROM request_attributes a JOIN requests r ON r.id = a.request_id \
                 JOIN sessions s ON s.id = r.session_id \
                 WHERE a.attribute_id = n.id AND (?1 IS NULL OR s.source = ?1)) ORDER BY n.id",
        )?;
        let mut names: Vec<String> = stmt
            .query_map([source], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if names.len() > MAX_ATTRIBUTES {
            log::warn!(
                "history: {} attributes stored, the first {MAX_ATTRIBUTES} are used: {}",
                names.len(),
                names[..MAX_ATTRIBUTES].join(", ")
            );
            names.truncate(MAX_ATTRIBUTES);
        }
        // Stored names passed the same check on import; one that does not is left out.
        names.retain(|n| Attributes::new(&[n]).is_ok());
        Ok(Attributes::new(&names).unwrap_or_default())
    }

    /// The sources stored, with their sizes.
    pub fn sources(&self) -> Result<Vec<SourceInfo>, HistoryError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.source, COUNT(DISTINCT s.id), COUNT(r.id) FROM sessions s \
             LEFT JOIN requests r ON r.session_id = s.id GROUP BY s.source ORDER BY s.source",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SourceInfo {
                source: r.get(0)?,
                sessions: r.get::<_, i64>(1)? as u64,
                requests: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.collect::<Result<_, _>>().map_err(Into::into)
    }

    /// Starts (or finds) a live session.
    pub fn begin_session(
        &mut self,
        source: &str,
        key: &str,
        user: Option<&str>,
    ) -> Result<SessionRow, HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (source, key, user) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (source, key) DO UPDATE SET key = key RETURNING id",
            )?
            .query_row(params![source, key, user], |r| r.get(0))
            .map_err(Into::into)
    }

    /// Appends a request of type `kind` to `session`.
    pub fn record_request(
        &mut self,
        session: SessionRow,
        kind: &str,
        at_ms: i64,
    ) -> Result<RequestRow, HistoryError> {
        let tid = self.type_id(kind)?;
        self.conn
            .prepare_cached(
                "INSERT INTO requests (session_id, seq, type_id, at_ms) VALUES \
                 (?1, (SELECT COUNT(*) FROM requests WHERE session_id = ?1), ?2, ?3) RETURNING id",
            )?
            .query_row(params![session, tid, at_ms], |r| r.get(0))
            .map_err(Into::into)
    }

    /// Records how a served request ended (once per request: a second result for the same
    /// request is an error).
    pub fn record_result(&mut self, r: &RequestResult) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO request_results (request_id, http_status, guest_status, host_us, \
                 guest_us, guest_reported) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.request,
                r.http_status,
                r.guest_status,
                r.host_us as i64,
                r.guest_us.map(|u| u as i64),
                r.guest_status.is_some() || r.guest_us.is_some()
            ])?;
        Ok(())
    }

    /// Records a task execution.
    pub fn record_task(&mut self, t: &TaskExecution) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached(
                "INSERT INTO task_executions (request_id, task, started_us, duration_us, wait_us, staged, bytes, ok, \
                 guest_reported) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                t.request,
                t.task,
                int(t.started_us)?,
                int(t.duration_us)?,
                int(t.wait_us)?,
                t.staged,
                int(t.bytes)?,
                t.ok,
                t.guest_reported
            ])?;
        Ok(())
    }

    /// Records a prefetch outcome.
    pub fn record_prefetch(&mut self, o: &PrefetchOutcome) -> Result<(), HistoryError> {
        let opt = |v: Option<u64>| v.map(int).transpose();
        self.conn
            .prepare_cached(
                "INSERT INTO prefetch_outcomes (session_id, request_id, predictor, resource, version, outcome, \
                 bytes, probability, predicted_us, staged_us, resolved_us, guest_reported) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                o.session,
                o.request,
                o.predictor,
                o.resource,
                int(o.version)?,
                o.outcome.as_str(),
                int(o.bytes)?,
                o.probability,
                opt(o.predicted_us)?,
                opt(o.staged_us)?,
                opt(o.resolved_us)?,
                o.guest_reported
            ])?;
        Ok(())
    }

    /// Totals of prefetch outcomes, for one predictor or all.
    pub fn prefetch_summary(
        &self,
        predictor: Option<&str>,
    ) -> Result<PrefetchSummary, HistoryError> {
        let mut s = PrefetchSummary::default();
        let mut stmt = self.conn.prepare(
            "SELECT outcome, COUNT(*), COALESCE(SUM(bytes), 0) FROM prefetch_outcomes \
             WHERE ?1 IS NULL OR predictor = ?1 GROUP BY outcome",
        )?;
        let mut rows = stmt.query([predictor])?;
        while let Some(r) = rows.next()? {
            let (n, bytes) = (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64);
            match r.get::<_, String>(0)?.as_str() {
                "hit" => (s.hits, s.hit_bytes) = (n, bytes),
                "miss" => s.misses = n,
                _ => (s.wasted, s.wasted_bytes) = (n, bytes),
            }
        }
        Ok(s)
    }

    /// Number of task executions recorded.
    pub fn task_count(&self) -> Result<u64, HistoryError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM task_executions", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Rows the guest reported: task executions, prefetch outcomes and results.
    pub fn guest_reported_count(&self) -> Result<u64, HistoryError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM task_executions WHERE guest_reported) \
             + (SELECT COUNT(*) FROM prefetch_outcomes WHERE guest_reported) \
             + (SELECT COUNT(*) FROM request_results WHERE guest_reported)",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}

#[cfg(test)]
mod tests;
