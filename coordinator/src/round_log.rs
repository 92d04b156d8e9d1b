//! The per-round metrics log: one JSON object per line, appended and flushed after each round,
//! so that a crashed or still-running run can be plotted and `tail -f` shows progress.
//!
//! Records come from the state machine's [`RoundSummary`] plus what only the driver knows (wall
//! time, bytes on the wire). A resumed run redoes the round that was in progress when it stopped;
//! [`align_with_history`] first cuts the log back to the checkpoint it resumes from (which may be
//! the previous copy, a round behind), so that each round has one line. [`read_round_log`] still
//! keeps the last record of each round of a file written by an older version.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::evaluation::FederatedMetrics;
use crate::round::{ParticipantId, RoundSummary};

/// Errors from writing or reading a round log; each names the file.
#[derive(Debug, Error)]
pub enum RoundLogError {
    /// An I/O operation failed.
    #[error("cannot {action} round log {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode a round record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A line is not a round record.
    #[error("round log {} line {line}: {source}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// What only the driver can measure about a round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundTraffic {
    /// Wall-clock seconds the round took.
    pub wall_seconds: Option<f64>,
    /// Bytes received from clients during the round.
    pub bytes_in: Option<u64>,
    /// Bytes sent to clients during the round.
    pub bytes_out: Option<u64>,
}

/// One line of the round log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    /// Participants sampled (replacements included).
    pub sampled: usize,
    /// Ids of the participants whose updates were aggregated, in arrival order.
    pub participants: Vec<ParticipantId>,
    /// Their sample counts, in the same order.
    pub sample_counts: Vec<u64>,
    pub total_samples: u64,
    /// Sample-weighted mean of the clients' reported train loss.
    pub mean_train_loss: Option<f64>,
    /// L2 norms of the clients' encoder deltas, in the same order.
    pub update_norms: Vec<f64>,
    /// L2 norm of the combined delta and of the change applied to the global encoder.
    pub combined_delta_norm: f64,
    pub applied_norm: f64,
    /// Updates rejected during the round.
    pub rejected: usize,
    pub deadline_extensions: u32,
    /// Round duration on the driver's clock.
    pub round_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// The round was aggregated under secure aggregation (the coordinator saw only the sum).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure_aggregation: bool,
    /// Deltas scaled down by clipping (plain mode with a clip norm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clipped: Option<usize>,
    /// Epsilon spent by the run up to and including this round (differential privacy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// The delta epsilon is reported at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Federated metrics of the global model after this round (runs with evaluation due this
    /// round; the model is evaluated by the participants of the next round, or the final
    /// evaluation round, so the line is written once they have reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<FederatedMetrics>,
}

impl RoundRecord {
    /// The record for a round summary plus the driver's measurements.
    pub fn new(summary: &RoundSummary, traffic: &RoundTraffic) -> Self {
        Self {
            round: summary.round,
            sampled: summary.sampled,
            participants: summary.contributors.iter().map(|c| c.participant).collect(),
            sample_counts: summary
                .contributors
                .iter()
                .map(|c| c.sample_count)
                .collect(),
            total_samples: summary.total_samples,
            mean_train_loss: summary.mean_train_loss,
            update_norms: summary.contributors.iter().map(|c| c.update_norm).collect(),
            combined_delta_norm: summary.combined_delta_norm,
            applied_norm: summary.applied_norm,
            rejected: summary.rejected,
            deadline_extensions: summary.deadline_extensions,
            round_ms: summary
                .completed_at_ms
                .saturating_sub(summary.started_at_ms),
            wall_seconds: traffic.wall_seconds,
            bytes_in: traffic.bytes_in,
            bytes_out: traffic.bytes_out,
            secure_aggregation: summary
                .privacy
                .as_ref()
                .is_some_and(|p| p.secure_aggregation),
            clipped: summary.privacy.as_ref().and_then(|p| p.clipped),
            epsilon: summary.epsilon(),
            delta: summary.privacy.as_ref().and_then(|p| p.delta),
            evaluation: None,
        }
    }
}

/// An open round log (append mode: a resumed run continues the same file).
pub struct RoundLog {
    path: PathBuf,
    file: File,
}

impl RoundLog {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RoundLogError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| RoundLogError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        Ok(Self { path, file })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a JSON line and flushes it to the operating system.
    pub fn append(&mut self, record: &RoundRecord) -> Result<(), RoundLogError> {
        let mut line = serde_json::to_vec(record).map_err(RoundLogError::Encode)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| RoundLogError::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            })
    }

    /// Builds the record for `summary` and appends it.
    pub fn append_summary(
        &mut self,
        summary: &RoundSummary,
        traffic: &RoundTraffic,
    ) -> Result<(), RoundLogError> {
        self.append(&RoundRecord::new(summary, traffic))
    }
}

/// What [`align_with_history`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRepair {
    /// Lines removed: rounds after the checkpoint, repeated rounds, or an unreadable line (a
    /// write cut off by a crash).
    pub removed: usize,
    /// Rounds of the checkpoint's history the log lacked, added from the history (without the
    /// driver's wall time and bytes).
    pub added: usize,
}

/// Makes the round log at `path` hold exactly one line per round of `history` (the checkpoint
/// a run resumes from), in round order: later rounds are cut, missing ones added. The file is
/// replaced atomically; a missing file is left missing when `history` is empty.
pub fn align_with_history(
    path: impl AsRef<Path>,
    history: &[RoundSummary],
    evaluations: &[FederatedMetrics],
) -> Result<LogRepair, RoundLogError> {
    let path = path.as_ref();
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| RoundLogError::Io {
            action,
            path,
            source,
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && history.is_empty() => {
            return Ok(LogRepair::default());
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(io("read")(error)),
    };
    let completed = history.last().map_or(0, |s| s.round);
    let mut repair = LogRepair::default();
    let mut kept: BTreeMap<u64, String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<RoundRecord>(line) {
            Ok(record) if record.round <= completed => {
                if kept.insert(record.round, line.to_string()).is_some() {
                    repair.removed += 1;
                }
            }
            _ => repair.removed += 1,
        }
    }
    for summary in history {
        if let std::collections::btree_map::Entry::Vacant(entry) = kept.entry(summary.round) {
            let mut record = RoundRecord::new(summary, &RoundTraffic::default());
            record.evaluation = evaluations
                .iter()
                .find(|m| m.round == summary.round)
                .copied();
            entry.insert(serde_json::to_string(&record).map_err(RoundLogError::Encode)?);
            repair.added += 1;
        }
    }
    if repair == LogRepair::default() {
        return Ok(repair);
    }
    let mut out = String::new();
    for line in kept.values() {
        out.push_str(line);
        out.push('\n');
    }
    let temporary = path.with_extension("jsonl.tmp");
    std::fs::write(&temporary, out).map_err(io("rewrite"))?;
    std::fs::rename(&temporary, path).map_err(io("replace"))?;
    Ok(repair)
}

/// Reads a round log, keeping the last record of each round, in round order. Blank lines are
/// skipped; a malformed line is an error naming it.
pub fn read_round_log(path: impl AsRef<Path>) -> Result<Vec<RoundRecord>, RoundLogError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| RoundLogError::Io {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = BTreeMap::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| RoundLogError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record: RoundRecord =
            serde_json::from_str(&line).map_err(|source| RoundLogError::Parse {
                path: path.to_path_buf(),
                line: index + 1,
                source,
            })?;
        records.insert(record.round, record);
    }
    Ok(records.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{ContributorSummary, RoundPrivacy};

    fn summary(round: u64, loss: f64) -> RoundSummary {
        RoundSummary {
            round,
            sampled: 3,
            contributors: vec![
                ContributorSummary {
                    participant: ParticipantId::from_index(1),
                    sample_count: 10,
                    update_norm: 0.5,
                    train_loss: loss,
                    train_kl: 0.1,
                    train_seconds: 2.0,
                },
                ContributorSummary {
                    participant: ParticipantId::from_index(2),
                    sample_count: 30,
                    update_norm: 1.5,
                    train_loss: loss,
                    train_kl: 0.2,
                    train_seconds: 3.0,
                },
            ],
            rejected: 1,
            total_samples: 40,
            mean_train_loss: Some(loss),
            combined_delta_norm: 1.0,
            applied_norm: 1.0,
            started_at_ms: 1_000,
            completed_at_ms: 4_500,
            deadline_extensions: 0,
            privacy: None,
        }
    }

    #[test]
    fn records_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        let mut log = RoundLog::open(&path).unwrap();
        let traffic = RoundTraffic {
            wall_seconds: Some(3.25),
            bytes_in: Some(2048),
            bytes_out: None,
        };
        log.append_summary(&summary(1, 0.9), &traffic).unwrap();
        // Visible to a reader right away (flushed per round).
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(value["round"], 1);
        assert_eq!(value["sample_counts"], serde_json::json!([10, 30]));
        assert_eq!(value["update_norms"], serde_json::json!([0.5, 1.5]));
        assert_eq!(value["round_ms"], 3500);
        assert_eq!(value["wall_seconds"], 3.25);
        assert_eq!(value["bytes_in"], 2048);
        assert!(value.get("bytes_out").is_none());
        assert_eq!(
            value["participants"][0],
            "0000000000000000000000000000000000000000000000000000000000000001"
        );
        drop(log);

        // Reopening appends; a redone round supersedes the earlier record.
        let mut log = RoundLog::open(&path).unwrap();
        log.append_summary(&summary(2, 0.8), &RoundTraffic::default())
            .unwrap();
        log.append_summary(&summary(2, 0.7), &RoundTraffic::default())
            .unwrap();
        let records = read_round_log(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], RoundRecord::new(&summary(1, 0.9), &traffic));
        assert_eq!(records[1].mean_train_loss, Some(0.7));
        // No privacy fields without privacy.
        assert!(!std::fs::read_to_string(&path).unwrap().contains("epsilon"));
    }

    #[test]
    fn epsilon_and_delta_are_logged_with_differential_privacy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        let mut log = RoundLog::open(&path).unwrap();
        let mut dp = summary(1, 0.5);
        dp.privacy = Some(RoundPrivacy {
            secure_aggregation: false,
            clip_norm: Some(1.0),
            clipped: Some(2),
            noise_std: Some(1.1),
            sampling_rate: Some(0.5),
            epsilon: Some(1.25),
            delta: Some(1e-5),
        });
        log.append_summary(&dp, &RoundTraffic::default()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(value["epsilon"], 1.25);
        assert_eq!(value["delta"], 1e-5);
        assert_eq!(value["clipped"], 2);
        assert!(value.get("secure_aggregation").is_none());
        let records = read_round_log(&path).unwrap();
        assert_eq!(records[0].epsilon, Some(1.25));
    }

    #[test]
    fn resuming_from_an_older_checkpoint_cuts_the_log_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        let mut log = RoundLog::open(&path).unwrap();
        for round in 1..=3 {
            log.append_summary(&summary(round, 0.9), &RoundTraffic::default())
                .unwrap();
        }
        drop(log);
        // The checkpoint in use (the previous copy) holds rounds 1 and 2 only.
        let history = vec![summary(1, 0.9), summary(2, 0.9)];
        let repair = align_with_history(&path, &history, &[]).unwrap();
        assert_eq!(
            repair,
            LogRepair {
                removed: 1,
                added: 0
            }
        );
        // The resumed run redoes round 3: one line per round, none twice.
        let mut log = RoundLog::open(&path).unwrap();
        log.append_summary(&summary(3, 0.5), &RoundTraffic::default())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rounds: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<RoundRecord>(l).unwrap().round)
            .collect();
        assert_eq!(rounds, vec![1, 2, 3]);
        assert_eq!(read_round_log(&path).unwrap()[2].mean_train_loss, Some(0.5));
        // Aligned already: nothing changes.
        let history: Vec<_> = (1..=3).map(|r| summary(r, 0.5)).collect();
        assert_eq!(
            align_with_history(&path, &history, &[]).unwrap(),
            LogRepair::default()
        );
    }

    #[test]
    fn rounds_the_log_lacks_are_added_from_the_history_and_a_torn_line_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        let line = serde_json::to_string(&RoundRecord::new(
            &summary(1, 0.9),
            &RoundTraffic::default(),
        ))
        .unwrap();
        std::fs::write(&path, format!("{line}\n{{\"round\": 2, \"samp")).unwrap();
        let history = vec![summary(1, 0.9), summary(2, 0.8)];
        let repair = align_with_history(&path, &history, &[]).unwrap();
        assert_eq!(
            repair,
            LogRepair {
                removed: 1,
                added: 1
            }
        );
        let records = read_round_log(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].mean_train_loss, Some(0.8));
    }

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        std::fs::write(&path, "\n{\"round\": 1}\n").unwrap();
        let message = read_round_log(&path).unwrap_err().to_string();
        assert!(
            message.contains("rounds.jsonl") && message.contains("line 2"),
            "{message}"
        );
    }
}
