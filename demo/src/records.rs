//! The raw measurements: one record per replayed request, written as CSV
//! (`target/see-demo/requests.csv`) so that every figure of the report can be recomputed
//! from it, by `see-demo --from-csv FILE` or by any other tool.
//!
//! Columns, in order:
//! - `catalogue`: the service catalogue replayed (`shop`, `faas-synthetic`, ...);
//! - `mode`: the prefetch mode (`reactive`, `push`, `learned`, `oracle`, ...);
//! - `rep`: the repetition, from 1; every repetition replays its own held-out sessions;
//! - `session`: the session's number within the repetition, from 1 (the same sessions in
//!   every mode of a repetition: the bootstrap resamples `(rep, session)` pairs);
//! - `request`: the request's index within its session, from 0;
//! - `type`: the request type;
//! - `host_ns`: latency at the host, the HTTP client: request sent to response read;
//! - `guest_ns`: latency in the guest, as the guest measured it;
//! - `daemon_us`, `queue_us`: the daemon's own time for the request, and its wait in the
//!   daemon's queue;
//! - `claim_us`, `fetch_us`, `work_us`: the guest's time claiming staged or cached resources,
//!   demand-fetching, and working on the bytes (all tasks);
//! - `staged_hits`, `demands`: resources the tasks found staged, and demanded;
//! - `traffic_bytes`: bytes the daemon moved into the guest (prefetched + demanded) since the
//!   previous session of the run ended, on the last request of each session (0 on the others;
//!   what arrived after the last session is added to the run's last request).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DemoError;

/// One replayed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The catalogue replayed.
    pub catalogue: String,
    /// The prefetch mode.
    pub mode: String,
    /// The repetition, from 1.
    pub rep: u32,
    /// The session within the repetition, from 1.
    pub session: u32,
    /// The request's index in its session.
    pub request: u32,
    /// The request type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Latency at the HTTP client, ns.
    pub host_ns: u64,
    /// Latency in the guest, ns.
    pub guest_ns: u64,
    /// The daemon's time for the request, us.
    pub daemon_us: f64,
    /// Wait in the daemon's queue, us.
    pub queue_us: f64,
    /// Guest time claiming, us.
    pub claim_us: f64,
    /// Guest time demand-fetching, us.
    pub fetch_us: f64,
    /// Guest time working, us.
    pub work_us: f64,
    /// Resources found staged.
    pub staged_hits: u32,
    /// Resources demanded.
    pub demands: u32,
    /// Bytes moved into the guest, attributed to the session's last request.
    pub traffic_bytes: u64,
}

fn io(path: &Path, e: impl std::fmt::Display) -> DemoError {
    DemoError::Io(format!("{}: {e}", path.display()))
}

/// Writes `records` to `path` as CSV with a header line.
pub fn write(path: &Path, records: &[Record]) -> Result<(), DemoError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| io(path, e))?;
    for r in records {
        w.serialize(r).map_err(|e| io(path, e))?;
    }
    w.flush().map_err(|e| io(path, e))
}

/// Reads records written by [`write()`]; the error names the line that does not parse.
pub fn read(path: &Path) -> Result<Vec<Record>, DemoError> {
    let mut r = csv::Reader::from_path(path).map_err(|e| io(path, e))?;
    let mut out = Vec::new();
    for rec in r.deserialize() {
        let rec: Record = rec.map_err(|e| {
            DemoError::Usage(format!(
                "{}: not a see-demo requests file: {e}",
                path.display()
            ))
        })?;
        if rec.rep == 0 || rec.session == 0 {
            return Err(DemoError::Usage(format!(
                "{}: request {} of mode {}: rep and session count from 1",
                path.display(),
                out.len() + 1,
                rec.mode
            )));
        }
        out.push(rec);
    }
    if out.is_empty() {
        return Err(DemoError::Usage(format!(
            "{}: no requests in the file",
            path.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: &str, rep: u32, session: u32, request: u32) -> Record {
        Record {
            catalogue: "shop".into(),
            mode: mode.into(),
            rep,
            session,
            request,
            kind: "add-to-cart".into(),
            host_ns: 27_690_123 + u64::from(request),
            guest_ns: 25_570_000,
            daemon_us: 26_001.25,
            queue_us: 3.5,
            claim_us: 30.125,
            fetch_us: 13_360.1,
            work_us: 17_400.000_000_1,
            staged_hits: 4,
            demands: 2,
            traffic_bytes: 1 << 33,
        }
    }

    #[test]
    fn records_round_trip_through_csv_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.csv");
        let records = vec![
            record("reactive", 1, 1, 0),
            record("reactive-nocache", 1, 1, 1),
            record("oracle", 2, 7, 0),
        ];
        write(&path, &records).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("catalogue,mode,rep,session,request,type,host_ns,guest_ns,"),
            "{text}"
        );
        assert_eq!(read(&path).unwrap(), records);
    }

    #[test]
    fn a_bad_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "mode,rep\nreactive,1\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("not a see-demo requests file"), "{e}");
        write(&path, &[record("reactive", 0, 1, 0)]).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("count from 1"), "{e}");
        write(&path, &[]).unwrap();
        assert!(read(&path).is_err(), "an empty file");
        assert!(read(&dir.path().join("none.csv")).is_err());
    }
}
