//! The small synthetic study the simulation tests start from; each test then sets what it is
//! about (rounds, arms, epochs, compression, ...).

use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::simulate::SimulationConfig;
use mpcl_simulations::synthetic::SyntheticConfig;

/// `subjects` synthetic subjects with `trials_per_subject` trials of three windows each, a
/// quarter of every subject's trials held out for testing, the tiny model, and quick local
/// training (one epoch, batches of 16, learning rate 0.01).
pub fn small_study(subjects: usize, trials_per_subject: usize) -> SimulationConfig {
    SimulationConfig {
        dataset: "synthetic".into(),
        synthetic: SyntheticConfig {
            subjects,
            trials_per_subject,
            windows_per_trial: 3,
            ..SyntheticConfig::default()
        },
        protocol: EvaluationProtocol::SubjectDependent {
            test_fraction: 0.25,
        },
        model: ModelConfig::tiny(),
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 1e-2,
            ..TrainingSettings::default()
        },
        ..SimulationConfig::default()
    }
}
