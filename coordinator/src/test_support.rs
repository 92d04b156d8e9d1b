//! Small fixtures shared by the unit tests: a tiny global state and updates that fit it.

use mpcl_protocol::messages::{ClientUpdate, GlobalState, LocalMetrics, PrototypeBank, RunId};
use mpcl_protocol::{
    CooccurrenceStatistics, F32Vec, NamedTensor, ParameterSet, PrototypeStatistics,
};

pub const RUN: RunId = [7; 16];

/// Parameters `enc.w` (2x2) = [1, 2, 3, 4] and `enc.b` (2) = [0, 0]; one `physiological` bank of
/// 2 emotions x 2 prototypes x width 2 holding 0..8; empty co-occurrence for 2 emotions.
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

/// An update for `round` whose delta is `value` everywhere, with unit prototype weights and one
/// co-occurrence label.
pub fn update(g: &GlobalState, round: u64, samples: u64, value: f32) -> ClientUpdate {
    let mut delta = g.parameters.zeros_like();
    for tensor in &mut delta.tensors {
        tensor.values.0.fill(value);
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
        sample_count: samples,
        metrics: LocalMetrics {
            train_loss: 1.0,
            train_kl: 0.5,
            seconds: 1.0,
        },
        evaluation: None,
    }
}
