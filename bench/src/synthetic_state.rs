//! Global states and client updates of any size, for measuring the coordinator without
//! training anything: random deltas, prototype banks and co-occurrence statistics of the default
//! model's shape (2 groups x 10 emotions x 4 prototypes x width 64).

use mpcl_protocol::messages::{ClientUpdate, GlobalState, LocalMetrics, PrototypeBank, RunId};
use mpcl_protocol::{
    CooccurrenceStatistics, F32Vec, NamedTensor, ParameterSet, PrototypeStatistics,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EMOTIONS: usize = 10;
const PROTOTYPES: usize = 4;
const WIDTH: usize = 64;
const GROUPS: [&str; 2] = ["physiological", "behavioral"];

/// A global state with `parameters` encoder values in four tensors.
pub fn global_state(parameters: usize) -> GlobalState {
    let quarter = parameters / 4;
    let sizes = [quarter, quarter, quarter, parameters - 3 * quarter];
    GlobalState {
        parameters: ParameterSet {
            tensors: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| NamedTensor {
                    name: format!("encoder.block_{i}.weight"),
                    shape: vec![n],
                    values: F32Vec(vec![0.01; n]),
                })
                .collect(),
        },
        prototypes: GROUPS
            .iter()
            .map(|group| PrototypeBank {
                group: (*group).into(),
                emotions: EMOTIONS,
                prototypes: PROTOTYPES,
                width: WIDTH,
                values: F32Vec(vec![0.1; EMOTIONS * PROTOTYPES * WIDTH]),
            })
            .collect(),
        cooccurrence: CooccurrenceStatistics::zeros(EMOTIONS),
    }
}

/// A plausible update for `global` (any state: the shapes are `global`'s): deltas of size about
/// 1e-3, positive prototype statistics, one co-occurrence label per sample.
pub fn client_update(global: &GlobalState, run_id: RunId, round: u64, seed: u64) -> ClientUpdate {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut delta = global.parameters.zeros_like();
    for tensor in &mut delta.tensors {
        for v in &mut tensor.values.0 {
            *v = 1e-3 * (rng.random::<f32>() * 2.0 - 1.0);
        }
    }
    let samples = 20 + seed % 30;
    let prototypes = global
        .prototypes
        .iter()
        .map(|bank| {
            let mut stats =
                PrototypeStatistics::zeros(&bank.group, bank.emotions, bank.prototypes, bank.width);
            stats.sum.0.iter_mut().for_each(|v| *v = rng.random());
            stats
                .weight
                .0
                .iter_mut()
                .for_each(|v| *v = 1.0 + rng.random::<f32>());
            stats
        })
        .collect();
    let emotions = global.cooccurrence.emotions;
    let mut cooccurrence = CooccurrenceStatistics::zeros(emotions);
    for _ in 0..samples {
        let label: Vec<f32> = (0..emotions).map(|_| rng.random::<f32>() + 0.01).collect();
        let total: f32 = label.iter().sum();
        let label: Vec<f32> = label.iter().map(|v| v / total).collect();
        cooccurrence.add_label(&label);
    }
    ClientUpdate {
        run_id,
        round,
        delta,
        prototypes,
        cooccurrence,
        sample_count: samples,
        metrics: LocalMetrics {
            train_loss: 1.0,
            train_kl: 0.5,
            seconds: 0.0,
        },
        evaluation: None,
    }
}
