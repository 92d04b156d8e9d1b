//! The PyTorch twin's training throughput, when its results are at hand.
//!
//! The twin (`../shared/reference/pytorch_twin/twin.py bench --out FILE`) is a PyTorch copy of
//! the default MPCL network; it appends one JSON object per (system, batch size) to a JSON-lines
//! file. The bench reads every `*.jsonl` file in the twin's folder (and its `raw/` folder) if
//! there is one, so its figures can be printed beside mpcl's; nothing requires them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::stats::median;

/// The twin's median figures for one (system, batch size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwinRow {
    /// `pytorch-eager`, `pytorch-compile`, ... (with the thread count when it was above 1).
    pub system: String,
    pub batch_size: usize,
    pub samples_per_second: f64,
    pub samples_per_cpu_second: f64,
    /// Result lines the medians are over.
    pub lines: usize,
}

#[derive(Deserialize)]
struct Line {
    system: String,
    batch_size: usize,
    samples_per_second: f64,
    samples_per_cpu_second: f64,
    #[serde(default)]
    threads: Option<usize>,
}

/// The twin's rows from `folder` (empty when it has no results); unreadable lines are skipped.
pub fn read(folder: &Path) -> Vec<TwinRow> {
    let mut groups: BTreeMap<(String, usize), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for dir in [folder.to_path_buf(), folder.join("raw")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let Ok(line) = serde_json::from_str::<Line>(line) else {
                    continue;
                };
                let system = match line.threads {
                    Some(threads) if threads > 1 => format!("{} ({threads} threads)", line.system),
                    _ => line.system,
                };
                let entry = groups.entry((system, line.batch_size)).or_default();
                entry.0.push(line.samples_per_second);
                entry.1.push(line.samples_per_cpu_second);
            }
        }
    }
    groups
        .into_iter()
        .map(|((system, batch_size), (wall, cpu))| TwinRow {
            system,
            batch_size,
            samples_per_second: median(&wall),
            samples_per_cpu_second: median(&cpu),
            lines: wall.len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_grouped_and_other_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bench.jsonl"),
            concat!(
                r#"{"system": "pytorch-eager", "threads": 1, "batch_size": 32, "samples_per_second": 900, "samples_per_cpu_second": 1300}"#,
                "\n",
                r#"{"system": "pytorch-eager", "threads": 1, "batch_size": 32, "samples_per_second": 1000, "samples_per_cpu_second": 1500}"#,
                "\n",
                "not json\n",
                r#"{"system": "pytorch-eager", "threads": 2, "batch_size": 128, "samples_per_second": 800, "samples_per_cpu_second": 1200}"#,
                "\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.md"), "ignored").unwrap();
        let rows = read(dir.path());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].system, "pytorch-eager");
        assert_eq!((rows[0].batch_size, rows[0].lines), (32, 2));
        assert_eq!(rows[0].samples_per_cpu_second, 1400.0);
        assert_eq!(rows[1].system, "pytorch-eager (2 threads)");
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
