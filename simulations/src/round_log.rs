//! `rounds.jsonl` while arms run in parallel: one JSON line per arm, partition and round, in
//! the order a one-thread run writes them, so that the file does not depend on the number of
//! threads. The job first in order writes its lines as its rounds end; the others keep theirs
//! until every job before them is done, then write them at once and go on writing directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::simulation_result::RoundRecord;

/// Why a simulation's round log could not be read back; each names the file.
#[derive(Debug, Error)]
pub enum ReadRoundLogError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {source}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// The records of the round log at `path`, in file order (blank lines skipped).
pub fn read_round_log(path: &Path) -> Result<Vec<RoundRecord>, ReadRoundLogError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadRoundLogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|source| ReadRoundLogError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                source,
            })
        })
        .collect()
}

/// The round log of one simulation (see the module documentation).
pub struct RoundLog {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    writer: BufWriter<File>,
    /// The job whose lines are written as they come.
    current: usize,
    /// Lines of later jobs, kept until their turn.
    waiting: BTreeMap<usize, Vec<String>>,
    /// Later jobs that have finished.
    finished: BTreeSet<usize>,
}

impl RoundLog {
    /// Creates (or truncates) the log at `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                writer: BufWriter::new(File::create(path)?),
                current: 0,
                waiting: BTreeMap::new(),
                finished: BTreeSet::new(),
            }),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `line` (without its newline) for `job`.
    pub fn line(&self, job: usize, line: String) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if job == state.current {
            writeln!(state.writer, "{line}")?;
            state.writer.flush()
        } else {
            state.waiting.entry(job).or_default().push(line);
            Ok(())
        }
    }

    /// Marks `job` as finished: once every job before it is, the next jobs' lines follow.
    pub fn finished(&self, job: usize) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.finished.insert(job);
        loop {
            let current = state.current;
            if !state.finished.remove(&current) {
                break;
            }
            state.current = current + 1;
            for line in state.waiting.remove(&(current + 1)).unwrap_or_default() {
                writeln!(state.writer, "{line}")?;
            }
        }
        state.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_land_in_job_order_whatever_order_they_come_in() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = RoundLog::create(&dir.path().join("rounds.jsonl"))?;
        log.line(1, "b1".into())?;
        log.line(0, "a1".into())?;
        log.line(2, "c1".into())?;
        log.finished(2)?;
        log.line(1, "b2".into())?;
        let text = || std::fs::read_to_string(log.path());
        // Job 0 writes directly; the others wait for it.
        assert_eq!(text()?, "a1\n");
        log.line(0, "a2".into())?;
        log.finished(0)?;
        assert_eq!(text()?, "a1\na2\nb1\nb2\n");
        log.line(1, "b3".into())?;
        assert_eq!(text()?, "a1\na2\nb1\nb2\nb3\n");
        log.finished(1)?;
        assert_eq!(text()?, "a1\na2\nb1\nb2\nb3\nc1\n");
        Ok(())
    }

    #[test]
    fn a_malformed_line_is_named_with_its_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rounds.jsonl");
        std::fs::write(&path, "\n{\"arm\": 3}\n")?;
        let error = read_round_log(&path).unwrap_err().to_string();
        assert!(
            error.contains("rounds.jsonl line 2"),
            "the error names the file and line: {error}"
        );
        std::fs::write(&path, "\n")?;
        assert!(read_round_log(&path).unwrap().is_empty());
        Ok(())
    }
}
