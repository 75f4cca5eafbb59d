//! The PTO's version floors: per resource, the lowest version a guest may accept, kept in a
//! file that only ever rises, so rollback protection survives a guest reboot (SPEC.md
//! section 8). The device sends them to each session as a signed floors snapshot.
//!
//! The file is JSON: `{"format": 1, "serial": N, "updated_at": S, "floors": [[id, version],
//! ...]}`, ids strictly increasing. Every change is written to a temporary file beside it,
//! flushed to disk and renamed over it, so a crash leaves the old file or the new one. A file
//! that does not parse (or breaks a rule above) is an error naming it, and is left untouched.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use virtio_prefetch_wire::{Floor, MAX_FLOOR_ENTRIES};

/// The format version of the floors file.
pub const FLOORS_FORMAT: u32 = 1;
/// Largest floors file read (a full one is about 200 KiB).
const MAX_FILE_LEN: u64 = 1 << 20;

/// Why the floors could not be read or raised.
#[derive(Debug, Error)]
pub enum FloorsError {
    /// The file could not be read or written.
    #[error("floors file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not parse or breaks a rule; it was left as it is.
    #[error("floors file {path} is corrupt ({problem}); it was left as it is: restore it from a backup (never start with an empty one: that lifts every floor)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// More resources than a snapshot can carry.
    #[error("the floors already cover {MAX_FLOOR_ENTRIES} resources; resource {resource_id} cannot be added")]
    Full {
        /// The resource refused.
        resource_id: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorsFileJson {
    format: u32,
    serial: u64,
    updated_at: u64,
    floors: Vec<(u64, u64)>,
}

/// What a snapshot carries: the serial and the floors, sorted by resource id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FloorsView {
    /// Rises with every raised floor.
    pub serial: u64,
    /// The floors.
    pub floors: Vec<Floor>,
}

#[derive(Debug, Clone, Default)]
struct State {
    serial: u64,
    updated_at: u64,
    floors: BTreeMap<u64, u64>,
}

/// The floors, in memory and (unless [`Floors::in_memory`]) in a file.
#[derive(Debug)]
pub struct Floors {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl Floors {
    /// Floors kept only in this process (tests, and a backend run without `--floors`: a
    /// guest reboot then starts from the floors raised since this process started).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Opens `path`: a missing file is no floors yet (created on the first raise); a corrupt
    /// one is [`FloorsError::Corrupt`].
    pub fn open(path: &Path) -> Result<Self, FloorsError> {
        let io = |source| FloorsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let state = match fs::File::open(path) {
            Ok(file) => {
                let mut text = Vec::new();
                file.take(MAX_FILE_LEN + 1)
                    .read_to_end(&mut text)
                    .map_err(io)?;
                parse(&text).map_err(|problem| FloorsError::Corrupt {
                    path: path.to_path_buf(),
                    problem,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(e)),
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            state: Mutex::new(state),
        })
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current floors.
    pub fn view(&self) -> FloorsView {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        FloorsView {
            serial: state.serial,
            floors: state
                .floors
                .iter()
                .map(|(&resource_id, &min_version)| Floor {
                    resource_id,
                    min_version,
                })
                .collect(),
        }
    }

    /// Raises the floor of `resource_id` to `version` (a version was published or signed).
    /// A version at or below the floor changes nothing. The file is written before the
    /// floor counts: on an error the floors (in memory and on disk) are as they were.
    /// Returns whether the floor rose.
    pub fn raise(&self, resource_id: u64, version: u64) -> Result<bool, FloorsError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let current = state.floors.get(&resource_id).copied();
        if current.is_some_and(|v| v >= version) || (current.is_none() && version == 0) {
            return Ok(false);
        }
        if current.is_none() && state.floors.len() >= MAX_FLOOR_ENTRIES as usize {
            return Err(FloorsError::Full { resource_id });
        }
        let mut next = state.clone();
        next.floors.insert(resource_id, version);
        next.serial = state.serial.saturating_add(1);
        next.updated_at = now_s();
        if let Some(path) = &self.path {
            write_atomically(path, &next)?;
        }
        *state = next;
        Ok(true)
    }
}

/// Seconds since the Unix epoch on this host's clock.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse(text: &[u8]) -> Result<State, String> {
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(format!("larger than {MAX_FILE_LEN} bytes"));
    }
    let json: FloorsFileJson = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if json.format != FLOORS_FORMAT {
        return Err(format!(
            "format {} (this build reads {FLOORS_FORMAT})",
            json.format
        ));
    }
    if json.floors.len() > MAX_FLOOR_ENTRIES as usize {
        return Err(format!("more than {MAX_FLOOR_ENTRIES} floors"));
    }
    if json.floors.windows(2).any(|p| p[1].0 <= p[0].0) {
        return Err("resource ids are not strictly increasing".into());
    }
    if json.serial == 0 && !json.floors.is_empty() {
        return Err("floors with serial 0".into());
    }
    Ok(State {
        serial: json.serial,
        updated_at: json.updated_at,
        floors: json.floors.into_iter().collect(),
    })
}

fn write_atomically(path: &Path, state: &State) -> Result<(), FloorsError> {
    let io = |source| FloorsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let json = FloorsFileJson {
        format: FLOORS_FORMAT,
        serial: state.serial,
        updated_at: state.updated_at,
        floors: state.floors.iter().map(|(&k, &v)| (k, v)).collect(),
    };
    let text = serde_json::to_vec_pretty(&json).map_err(|e| io(std::io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(&text).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    // The rename itself reaches the disk with the directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(resource_id: u64, min_version: u64) -> Floor {
        Floor {
            resource_id,
            min_version,
        }
    }

    #[test]
    fn floors_only_rise_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floors.json");
        let f = Floors::open(&path).unwrap();
        assert_eq!(f.view(), FloorsView::default());
        assert!(f.raise(7, 2).unwrap());
        assert!(f.raise(3, 1).unwrap());
        assert!(
            !f.raise(7, 1).unwrap(),
            "a lower version never lowers a floor"
        );
        assert!(!f.raise(7, 2).unwrap());
        assert!(!f.raise(9, 0).unwrap());
        assert_eq!(f.view().serial, 2);
        let again = Floors::open(&path).unwrap();
        assert_eq!(
            again.view(),
            FloorsView {
                serial: 2,
                floors: vec![floor(3, 1), floor(7, 2)],
            }
        );
        assert!(again.raise(7, 5).unwrap());
        assert_eq!(Floors::open(&path).unwrap().view().floors[1], floor(7, 5));
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_and_stays_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floors.json");
        let cases: [&[u8]; 7] = [
            b"{not json",
            br#"{"format":2,"serial":1,"updated_at":0,"floors":[[1,1]]}"#,
            br#"{"format":1,"serial":1,"updated_at":0,"floors":[[5,1],[5,2]]}"#,
            br#"{"format":1,"serial":1,"updated_at":0,"floors":[[5,1],[4,2]]}"#,
            br#"{"format":1,"serial":0,"updated_at":0,"floors":[[5,1]]}"#,
            br#"{"format":1,"serial":1,"updated_at":0,"floors":[[5,1]],"extra":1}"#,
            br#"{"format":1,"serial":1,"updated_at":0,"floors":[[5,-1]]}"#,
        ];
        for bytes in cases {
            fs::write(&path, bytes).unwrap();
            let err = Floors::open(&path).unwrap_err();
            assert!(matches!(err, FloorsError::Corrupt { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains("floors.json") && message.contains("restore"));
            assert_eq!(
                fs::read(&path).unwrap(),
                bytes,
                "the file is left as it was"
            );
        }
        let mut huge = br#"{"format":1,"serial":1,"updated_at":0,"floors":[]}"#.to_vec();
        huge.resize(MAX_FILE_LEN as usize + 10, b' ');
        fs::write(&path, &huge).unwrap();
        assert!(matches!(
            Floors::open(&path),
            Err(FloorsError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_failed_write_keeps_the_old_floors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floors.json");
        let f = Floors::open(&path).unwrap();
        f.raise(1, 1).unwrap();
        let before = fs::read(&path).unwrap();
        // The temporary file's place is taken by a directory: the write fails.
        fs::create_dir(dir.path().join("floors.json.tmp")).unwrap();
        assert!(matches!(f.raise(1, 2), Err(FloorsError::Io { .. })));
        assert_eq!(f.view().floors, vec![floor(1, 1)]);
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn the_number_of_floors_is_bounded() {
        let f = Floors::in_memory();
        for id in 0..u64::from(MAX_FLOOR_ENTRIES) {
            f.raise(id, 1).unwrap();
        }
        assert!(matches!(
            f.raise(u64::MAX, 1),
            Err(FloorsError::Full { .. })
        ));
        assert!(f.raise(0, 2).unwrap(), "an existing floor still rises");
    }
}
