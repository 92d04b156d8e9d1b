//! Helpers shared by the fuzz targets: valid inputs to mutate (so that the fuzzer reaches past
//! the first length check into the decoders' depths), a byte patcher, and a poller for the
//! async frame reader over an in-memory slice.

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use mpcl_coordinator::{Checkpoint, CoordinatorConfig};
use mpcl_data::{Dataset, Modality, ModalityGroup, ModelConfig, Sample, Schema, Standardizer};
use mpcl_protocol::messages::{ClientUpdate, GlobalState, LocalMetrics, PrototypeBank, RunId};
use mpcl_protocol::metrics::DistributionMetrics;
use mpcl_protocol::model_file::{InputStandardisation, ModelFile, Provenance};
use mpcl_protocol::{
    CooccurrenceStatistics, F32Vec, NamedTensor, NodeIdentity, ParameterSet, PrototypeStatistics,
    SigningKey,
};

/// The run id of the fixtures.
pub const RUN: RunId = [7; 16];

/// Runs a future that never waits (the frame reader over a byte slice is always ready).
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a reader over a slice is never pending"),
    }
}

/// `bytes` changed as `data` says: each 3-byte chunk (position u16 LE, xor mask) flips bits at
/// a position modulo the length; one byte left over truncates that many bytes from the end, two
/// insert the second at the first's position.
pub fn patch(mut bytes: Vec<u8>, data: &[u8]) -> Vec<u8> {
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        if bytes.is_empty() {
            break;
        }
        let position = usize::from(u16::from_le_bytes([chunk[0], chunk[1]])) % bytes.len();
        bytes[position] ^= chunk[2];
    }
    match *chunks.remainder() {
        [cut] => {
            let keep = bytes.len().saturating_sub(usize::from(cut));
            bytes.truncate(keep);
        }
        [at, value] => {
            let position = usize::from(at).min(bytes.len());
            bytes.insert(position, value);
        }
        _ => {}
    }
    bytes
}

/// A valid sealed file (checkpoint or model file) whose payload `data` patches (see [`patch`]),
/// under a recomputed length and checksum: a bug or a format change, not disk damage.
pub fn reseal(valid: &[u8], data: &[u8]) -> Vec<u8> {
    use mpcl_protocol::sealed_file::{HEADER_LEN, seal};
    let magic: [u8; 8] = valid[..8].try_into().expect("a sealed file has a magic");
    let version = u32::from_le_bytes(valid[8..12].try_into().expect("and a version"));
    seal(magic, version, &patch(valid[HEADER_LEN..].to_vec(), data))
}

/// A fixed participant identity ("alice").
pub fn alice() -> NodeIdentity {
    NodeIdentity::from_signing_key(Some("alice"), SigningKey::from_bytes(&[1; 32]))
        .expect("valid identity")
}

/// A tiny global state: two parameter tensors, one prototype bank, co-occurrence of 2 emotions.
pub fn global() -> GlobalState {
    GlobalState {
        parameters: ParameterSet {
            tensors: vec![
                NamedTensor {
                    name: "enc.w".into(),
                    shape: vec![2, 2],
                    values: F32Vec(vec![1.0, 2.0, 3.0, 4.0]),
                },
                NamedTensor {
                    name: "enc.b".into(),
                    shape: vec![2],
                    values: F32Vec(vec![0.0, 0.0]),
                },
            ],
        },
        prototypes: vec![PrototypeBank {
            group: "physiological".into(),
            emotions: 2,
            prototypes: 2,
            width: 2,
            values: F32Vec((0..8).map(|v| v as f32).collect()),
        }],
        cooccurrence: CooccurrenceStatistics::zeros(2),
    }
}

/// An update that fits [`global`].
pub fn update(round: u64) -> ClientUpdate {
    let g = global();
    let mut delta = g.parameters.zeros_like();
    for tensor in &mut delta.tensors {
        tensor.values.0.fill(0.25);
    }
    let mut stats = PrototypeStatistics::zeros("physiological", 2, 2, 2);
    stats.weight.0.fill(1.0);
    stats.sum.0.fill(1.0);
    let mut cooccurrence = CooccurrenceStatistics::zeros(2);
    cooccurrence.add_label(&[0.5, 0.5]);
    ClientUpdate {
        run_id: RUN,
        round,
        delta,
        prototypes: vec![stats],
        cooccurrence,
        sample_count: 10,
        metrics: LocalMetrics {
            train_loss: 1.0,
            train_kl: 0.5,
            seconds: 1.0,
        },
        evaluation: None,
    }
}

/// A checkpoint of a run over [`global`] after one round.
pub fn checkpoint() -> Checkpoint {
    let config = CoordinatorConfig {
        rounds: 3,
        ..CoordinatorConfig::default()
    };
    Checkpoint {
        config_toml: config.to_toml_string().expect("config encodes"),
        run_id: RUN,
        completed_rounds: 1,
        global: global(),
        fedadam: None,
        history: Vec::new(),
        privacy_ledger: None,
        evaluations: Vec::new(),
        final_evaluated: false,
        label_prior_applied: true,
    }
}

/// An empty folder of this process's own for file-based readers (study folders, snapshots),
/// emptied on every call.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpcl-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
    dir
}

/// The schema of [`dataset`]: two emotions, one modality of each group.
pub fn schema() -> Schema {
    Schema {
        emotions: vec!["joy".into(), "fear".into()],
        modalities: vec![
            Modality::new("eda", ModalityGroup::Physiological, 2, 1),
            Modality::new("face", ModalityGroup::Behavioral, 1, 2),
        ],
    }
}

/// A four-sample dataset of two subjects over [`schema`].
pub fn dataset() -> Dataset {
    let samples = (0..4u32)
        .map(|i| Sample {
            features: vec![vec![i as f32, 0.5], vec![-1.0, i as f32 * 0.25]],
            label: if i % 2 == 0 {
                vec![0.75, 0.25]
            } else {
                vec![0.0, 1.0]
            },
            subject: if i < 2 { "s1".into() } else { "s2".into() },
            trial: i,
            time: 0,
            stimulus: (i == 3).then(|| "clip".to_string()),
        })
        .collect();
    Dataset {
        name: "fuzz".into(),
        schema: schema(),
        samples,
    }
}

/// A model file over [`global`] and [`schema`].
pub fn model_file() -> ModelFile {
    ModelFile {
        schema: schema(),
        config: ModelConfig::tiny(),
        state: global(),
        standardisation: InputStandardisation::per_subject_then(Standardizer::identity(&schema())),
        label_prior: vec![0.375, 0.625],
        provenance: Provenance {
            source: "fuzz".into(),
            run_id: "00".into(),
            round: 1,
            metrics: Some(DistributionMetrics::default()),
            metrics_on: "nothing".into(),
            split: None,
            mpcl_version: "0.0.0".into(),
        },
    }
}
