//! The per-round metrics the dashboard plots, read from the coordinator's round log
//! (`rounds.jsonl`) as it grows.
//!
//! The log is the record of what each round produced, whatever it holds: today the training
//! loss, norms, bytes and epsilon; any numeric field added later (federated evaluation metrics,
//! for example, in a nested object) becomes a series with no change here. Every number at the
//! top level of a record is a series named by its key, and every number one object down is one
//! named `outer.inner`; arrays, strings and booleans are skipped. A resumed run may log a round
//! twice: the last record of a round wins, as in
//! [`read_round_log`](mpcl_coordinator::round_log::read_round_log).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// One plotted quantity: `(round, value)` pairs in round order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(u64, f64)>,
}

/// The round log read so far.
#[derive(Debug)]
pub struct RoundLogTail {
    path: PathBuf,
    /// Bytes consumed (complete lines only).
    offset: u64,
    /// Lines consumed.
    lines: usize,
    records: BTreeMap<u64, Map<String, Value>>,
    /// The last line that could not be used, with its reason.
    problem: Option<String>,
}

impl RoundLogTail {
    /// A reader of the round log at `path` (which need not exist yet).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            offset: 0,
            lines: 0,
            records: BTreeMap::new(),
            problem: None,
        }
    }

    /// Reads what was appended since the last call. A missing file is an empty log; a file
    /// shorter than what was read (replaced) is read again from the start.
    pub fn refresh(&mut self) {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
            Err(error) => {
                self.problem = Some(format!("cannot open {}: {error}", self.path.display()));
                return;
            }
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        if length < self.offset {
            self.offset = 0;
            self.lines = 0;
            self.records.clear();
        }
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_string(&mut text));
        if let Err(error) = read {
            self.problem = Some(format!("cannot read {}: {error}", self.path.display()));
            return;
        }
        // Only complete lines: the writer may be halfway through one.
        let Some(end) = text.rfind('\n') else {
            return;
        };
        for line in text[..end].split('\n') {
            self.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            match parse_record(line) {
                Ok((round, record)) => {
                    self.records.insert(round, record);
                }
                Err(reason) => {
                    self.problem = Some(format!(
                        "{} line {}: {reason}",
                        self.path.display(),
                        self.lines
                    ));
                }
            }
        }
        self.offset += end as u64 + 1;
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> usize {
        self.records.len()
    }

    /// The last problem met, if any.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Every numeric field as a series: nested fields and losses first (the quality of the
    /// model), then epsilon (the privacy spent), then the rest, and series that never change
    /// (nothing to see) last; each group by name.
    pub fn series(&self) -> Vec<Series> {
        let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        for (round, record) in &self.records {
            for (key, value) in record {
                if key == "round" {
                    continue;
                }
                match value {
                    Value::Number(number) => {
                        if let Some(x) = number.as_f64() {
                            series.entry(key.clone()).or_default().push((*round, x));
                        }
                    }
                    Value::Object(inner) => {
                        for (name, value) in inner {
                            if let Some(x) = value.as_f64() {
                                series
                                    .entry(format!("{key}.{name}"))
                                    .or_default()
                                    .push((*round, x));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut series: Vec<Series> = series
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect();
        series.sort_by_key(|s| {
            let constant = s.points.len() > 1 && s.points.windows(2).all(|w| w[0].1 == w[1].1);
            (constant, rank(&s.name), s.name.clone())
        });
        series
    }
}

/// 0: the model's quality, 1: privacy, 2: the rest.
fn rank(name: &str) -> u8 {
    if name.contains('.') || name.contains("loss") {
        0
    } else if name.contains("epsilon") {
        1
    } else {
        2
    }
}

fn parse_record(line: &str) -> Result<(u64, Map<String, Value>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let Value::Object(record) = value else {
        return Err("not a JSON object".into());
    };
    let round = record
        .get("round")
        .and_then(Value::as_u64)
        .ok_or("no `round` number")?;
    Ok((round, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_numeric_field_becomes_a_series_and_the_last_record_of_a_round_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rounds.jsonl");
        let mut tail = RoundLogTail::new(&path);
        tail.refresh();
        assert_eq!(tail.rounds(), 0, "a missing log is empty");

        let mut file = File::create(&path).unwrap();
        writeln!(file, r#"{{"round":1,"mean_train_loss":0.9,"participants":["aa"],"secure_aggregation":false,"evaluation":{{"kl":0.5,"arm":"x"}},"rejected":0,"applied_norm":1}}"#).unwrap();
        // Half a line: not read until it is complete.
        write!(file, r#"{{"round":2,"mean_train_loss":0.8"#).unwrap();
        file.flush().unwrap();
        tail.refresh();
        assert_eq!(tail.rounds(), 1);
        writeln!(file, r#","applied_norm":2}}"#).unwrap();
        // Round 2 again (a resumed run): the later record counts.
        writeln!(
            file,
            r#"{{"round":2,"mean_train_loss":0.7,"applied_norm":3,"rejected":0,"epsilon":2.5}}"#
        )
        .unwrap();
        writeln!(file, "not json").unwrap();
        file.flush().unwrap();
        tail.refresh();
        assert_eq!(tail.rounds(), 2);
        assert!(
            tail.problem()
                .unwrap()
                .ends_with("rounds.jsonl line 4: expected ident at line 1 column 2"),
            "{:?}",
            tail.problem()
        );

        let series = tail.series();
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        // Model quality first, then privacy, then the rest, then what never changed.
        assert_eq!(
            names,
            [
                "evaluation.kl",
                "mean_train_loss",
                "epsilon",
                "applied_norm",
                "rejected"
            ]
        );
        assert_eq!(series[0].points, [(1, 0.5)]);
        assert_eq!(series[1].points, [(1, 0.9), (2, 0.7)]);
        assert_eq!(series[2].points, [(2, 2.5)]);
        assert_eq!(series[3].points, [(1, 1.0), (2, 3.0)]);
        assert_eq!(series[4].points, [(1, 0.0), (2, 0.0)]);

        // A replaced (shorter) file is read from the start.
        std::fs::write(&path, "{\"round\":1,\"x\":1}\n").unwrap();
        tail.refresh();
        assert_eq!(tail.rounds(), 1);
        assert_eq!(tail.series()[0].name, "x");
    }
}
