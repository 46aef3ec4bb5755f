//! `--output FILE`: every submission as one JSON line, the file rotated at a size limit.
//!
//! # Lines
//! One object per submission, in the run's order:
//! `{"timestamp": <run start, Unix seconds>, "check_id": "...", "<kind>": {...}}`, where
//! `<kind>` is `metric`, `service_check`, `event`, `histogram_bucket`,
//! `event_platform_event`, `log`, `metadata` (`{"name", "value"}`) or `external_tags`
//! (`[hostname, {source_type: [tags]}]`), and the value is the entry of that kind in the
//! `outpost check run --json` document (non-finite numbers as `"+Inf"`, `"-Inf"`, `"NaN"`).
//!
//! # Rotation
//! Before writing a run's lines, if the file is not empty and the lines would take it past
//! the limit, `FILE` is renamed to `FILE.1` (replacing the previous `FILE.1`) and a new, empty
//! `FILE` is started: one previous file is kept. `rename(2)` replaces `FILE.1` in one step, so
//! a reader sees either the old or the new one, never a mix; a crash between the rename and
//! the new file leaves `FILE.1` complete and `FILE` created at the next write. A run's lines
//! always go to one file; a single run bigger than the limit is written whole to a fresh file.
//!
//! Lines are written with one `write` per run and flushed at once (no fsync: this is a
//! stream for people and tools, not a journal). Write errors are logged and counted; the
//! agent keeps running and retries with the next run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use outpost_checks::RunReport;
use serde_json::{Map, Value};

use super::RunFormat;
use crate::error::{AgentError, InvalidValue, OutputStep};
use crate::scheduler::unix_seconds;

/// The keys of a `check run --json` instance entry that hold lists of submissions, and the
/// kind each element becomes in a line.
const LIST_KINDS: [(&str, &str); 6] = [
    ("metrics", "metric"),
    ("service_checks", "service_check"),
    ("events", "event"),
    ("histogram_buckets", "histogram_bucket"),
    ("event_platform_events", "event_platform_event"),
    ("external_tags", "external_tags"),
];

/// The JSON lines of one run: what [`RunFormat::run_entry`] shows, one line per submission.
pub fn submission_lines(format: &dyn RunFormat, report: &RunReport) -> String {
    let entry = format.run_entry(report);
    let timestamp = Value::from(unix_seconds(report.started_at));
    let check_id = Value::from(report.check_id.as_str());
    let mut out = String::new();
    let mut push = |kind: &str, value: Value| {
        let mut line = Map::with_capacity(3);
        line.insert("timestamp".into(), timestamp.clone());
        line.insert("check_id".into(), check_id.clone());
        line.insert(kind.into(), value);
        // A map of JSON values always serialises.
        if let Ok(text) = serde_json::to_string(&line) {
            out.push_str(&text);
            out.push('\n');
        }
    };
    for (key, kind) in LIST_KINDS {
        if let Some(Value::Array(items)) = entry.get(key) {
            for item in items {
                push(kind, item.clone());
            }
        }
        if key == "event_platform_events" {
            for log in &report.submissions.logs {
                push("log", Value::from(log.line.as_str()));
            }
        }
    }
    if let Some(Value::Object(metadata)) = entry.get("metadata") {
        for (name, value) in metadata {
            push(
                "metadata",
                serde_json::json!({"name": name, "value": value}),
            );
        }
    }
    out
}

#[derive(Debug)]
struct Writer {
    file: Option<fs_err::File>,
    size: u64,
}

/// The `--output` file. `Send + Sync`: runner threads write through one lock.
#[derive(Debug)]
pub struct JsonLines {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    writer: Mutex<Writer>,
    errors: AtomicU64,
    rotations: AtomicU64,
}

fn open_append(path: &Path) -> Result<(fs_err::File, u64), AgentError> {
    let file = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AgentError::Output {
            op: OutputStep::Opening,
            path: path.to_owned(),
            source,
        })?;
    let size = file
        .metadata()
        .map_err(|source| AgentError::Output {
            op: OutputStep::Opening,
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok((file, size))
}

impl JsonLines {
    /// Opens (creating or appending to) `path`, rotated at `max_bytes`.
    ///
    /// # Errors
    /// [`AgentError::InvalidConfig`] for a zero limit; [`AgentError::Output`] when the file
    /// cannot be opened (its directory must exist).
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, AgentError> {
        if max_bytes == 0 {
            return Err(AgentError::InvalidConfig {
                key: "--output-max-bytes",
                problem: InvalidValue::NotPositive,
            });
        }
        let path = path.into();
        let (file, size) = open_append(&path)?;
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        Ok(Self {
            rotated: PathBuf::from(rotated),
            path,
            max_bytes,
            writer: Mutex::new(Writer {
                file: Some(file),
                size,
            }),
            errors: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Rotations so far.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// Appends `lines` (whole lines), rotating first when needed.
    ///
    /// # Errors
    /// [`AgentError::Output`] when rotating or writing failed (also counted in
    /// [`JsonLines::errors`]); the next call tries again.
    pub fn write(&self, lines: &str) -> Result<(), AgentError> {
        if lines.is_empty() {
            return Ok(());
        }
        let result = self.write_locked(lines.as_bytes());
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn write_locked(&self, bytes: &[u8]) -> Result<(), AgentError> {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let len = bytes.len() as u64;
        if w.size > 0 && w.size.saturating_add(len) > self.max_bytes {
            w.file = None;
            match fs_err::rename(&self.path, &self.rotated) {
                Ok(()) => {
                    self.rotations.fetch_add(1, Ordering::Relaxed);
                }
                // Removed under us: there is nothing to keep, start afresh.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AgentError::Output {
                        op: OutputStep::Rotating,
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            w.size = 0;
        }
        if w.file.is_none() {
            let (file, size) = open_append(&self.path)?;
            w.file = Some(file);
            w.size = size;
        }
        let Some(file) = w.file.as_mut() else {
            return Ok(());
        };
        match file.write_all(bytes) {
            Ok(()) => {
                w.size += len;
                Ok(())
            }
            Err(source) => {
                // Reopen next time: the file may have been removed or the disk filled.
                w.file = None;
                Err(AgentError::Output {
                    op: OutputStep::Writing,
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_into_one_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs_err::write(&path, "{\"old\":1}\n").unwrap();
        let out = JsonLines::open(&path, 30).unwrap();
        out.write("{\"a\":1}\n{\"a\":2}\n").unwrap(); // 10 + 16 = 26 bytes: fits
        assert_eq!(out.rotations(), 0);
        out.write("{\"b\":1}\n").unwrap(); // 34 > 30: rotate first
        assert_eq!(out.rotations(), 1);
        assert_eq!(
            fs_err::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
            "{\"old\":1}\n{\"a\":1}\n{\"a\":2}\n"
        );
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "{\"b\":1}\n");
        // A run bigger than the limit goes whole into a fresh file.
        let big = "{\"c\":\"0123456789012345678901234567890123456789\"}\n";
        out.write(big).unwrap();
        assert_eq!(out.rotations(), 2);
        assert_eq!(
            fs_err::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
            "{\"b\":1}\n",
            "the file before the previous one is gone"
        );
        assert_eq!(fs_err::read_to_string(&path).unwrap(), big);
        out.write("{\"d\":1}\n").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "{\"d\":1}\n");
        assert_eq!(out.errors(), 0);
    }

    #[test]
    fn a_removed_file_is_recreated_and_failed_rotations_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let out = JsonLines::open(&path, 10).unwrap();
        out.write("{\"x\":12345}\n").unwrap();
        fs_err::remove_file(&path).unwrap();
        out.write("{\"y\":1}\n").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "{\"y\":1}\n");
        // FILE.1 cannot be replaced (a non-empty directory): the run's lines are not
        // written, the error is counted, and the next run tries again.
        fs_err::create_dir_all(dir.path().join("out.jsonl.1/keep")).unwrap();
        let e = out.write("{\"z\":1}\n").unwrap_err();
        assert!(
            matches!(
                e,
                AgentError::Output {
                    op: OutputStep::Rotating,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("out.jsonl"), "{e}");
        assert_eq!(out.errors(), 1);
        fs_err::remove_dir_all(dir.path().join("out.jsonl.1")).unwrap();
        out.write("{\"w\":1}\n").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "{\"w\":1}\n");
        assert_eq!(
            fs_err::read_to_string(dir.path().join("out.jsonl.1")).unwrap(),
            "{\"y\":1}\n"
        );
        assert!(matches!(
            JsonLines::open(dir.path().join("missing/out.jsonl"), 10),
            Err(AgentError::Output {
                op: OutputStep::Opening,
                ..
            })
        ));
        assert!(matches!(
            JsonLines::open(&path, 0),
            Err(AgentError::InvalidConfig { .. })
        ));
    }
}
