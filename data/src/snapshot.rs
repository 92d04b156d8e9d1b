//! Dataset snapshots: a bit-exact copy of a [`Dataset`] in one JSON file.
//!
//! `mpcl simulate --network` hands each client process its training split this way, so that the
//! networked run trains on exactly the values the in-process run trains on. Every `f32` is
//! stored as its bit pattern (`u32`): decimal text would round-trip through `f64` parsing and
//! could change the last bit, and then the two modes would no longer give identical numbers.
//! The study-folder format ([`super::study`]) is the one for people to write; this one is for
//! machines.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Dataset, ReadError, Sample, Schema};

/// Format tag, so that another JSON file is refused with a clear error.
const FORMAT: &str = "mpcl-dataset-snapshot-1";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: String,
    name: String,
    schema: Schema,
    samples: Vec<SnapshotSample>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotSample {
    /// Bit patterns of the features, one vector per modality.
    features: Vec<Vec<u32>>,
    /// Bit patterns of the label.
    label: Vec<u32>,
    subject: String,
    trial: u32,
    time: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stimulus: Option<String>,
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn floats(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

/// Writes `dataset` to `path` (replacing it).
pub fn write_snapshot(dataset: &Dataset, path: &Path) -> Result<(), ReadError> {
    let snapshot = Snapshot {
        format: FORMAT.to_string(),
        name: dataset.name.clone(),
        schema: dataset.schema.clone(),
        samples: dataset
            .samples
            .iter()
            .map(|s| SnapshotSample {
                features: s.features.iter().map(|f| bits(f)).collect(),
                label: bits(&s.label),
                subject: s.subject.clone(),
                trial: s.trial,
                time: s.time,
                stimulus: s.stimulus.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_string(&snapshot).expect("plain data serialises");
    std::fs::write(path, text).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a snapshot written by [`write_snapshot`] and checks it against its schema.
pub fn read_snapshot(path: &Path) -> Result<Dataset, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let snapshot: Snapshot = serde_json::from_str(&text).map_err(|e| ReadError::Format {
        path: path.to_path_buf(),
        format: "dataset snapshot (JSON)",
        reason: e.to_string(),
    })?;
    if snapshot.format != FORMAT {
        return Err(ReadError::Field {
            path: path.to_path_buf(),
            field: "format".into(),
            reason: format!("is `{}`, expected `{FORMAT}`", snapshot.format),
        });
    }
    let dataset = Dataset {
        name: snapshot.name,
        schema: snapshot.schema,
        samples: snapshot
            .samples
            .into_iter()
            .map(|s| Sample {
                features: s.features.iter().map(|f| floats(f)).collect(),
                label: floats(&s.label),
                subject: s.subject,
                trial: s.trial,
                time: s.time,
                stimulus: s.stimulus,
            })
            .collect(),
    };
    dataset.validate().map_err(|source| ReadError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Modality, ModalityGroup};

    fn dataset() -> Dataset {
        let schema = Schema {
            emotions: vec!["joy".into(), "fear".into()],
            modalities: vec![Modality::new("eda", ModalityGroup::Physiological, 1, 3)],
        };
        Dataset {
            name: "tiny".into(),
            schema,
            samples: vec![Sample {
                // Values whose shortest decimal text is long, and a subnormal.
                features: vec![vec![0.1 + 0.2, 1.0 / 3.0, f32::from_bits(1)]],
                label: vec![1.0 / 3.0, 1.0 - 1.0 / 3.0],
                subject: "s1".into(),
                trial: 4,
                time: 2,
                stimulus: Some("clip 3".into()),
            }],
        }
    }

    #[test]
    fn a_snapshot_round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.json");
        write_snapshot(&dataset(), &path).unwrap();
        assert_eq!(read_snapshot(&path).unwrap(), dataset());
    }

    #[test]
    fn other_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.json");
        std::fs::write(&path, r#"{"format":"something-else","name":"x","schema":{"emotions":[],"modalities":[]},"samples":[]}"#).unwrap();
        let error = read_snapshot(&path).unwrap_err().to_string();
        assert!(
            error.contains("other.json") && error.contains("format"),
            "{error}"
        );
        std::fs::write(&path, "not json").unwrap();
        let error = read_snapshot(&path).unwrap_err().to_string();
        assert!(
            error.contains("other.json") && error.contains("snapshot"),
            "{error}"
        );
    }
}
