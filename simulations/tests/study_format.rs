//! A simulation on a study folder (schema.toml + one CSV per subject) gives the same numbers as
//! on the same data read by the built-in path. Features travel exactly; the labels are
//! re-normalised by the folder's `normalize` rule, which can move a value by one f32 rounding step,
//! so the numbers agree to 1e-6 rather than bit for bit.

use anyhow::Result;
use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_data::study::write_study_dir;
use mpcl_simulations::simulate::{Arm, SimulationConfig, run_simulation};
use mpcl_simulations::synthetic::{SyntheticConfig, generate};

#[test]
fn a_study_folder_simulates_exactly_like_the_built_in_dataset() -> Result<()> {
    let synthetic = SyntheticConfig {
        subjects: 3,
        trials_per_subject: 8,
        windows_per_trial: 2,
        ..SyntheticConfig::default()
    };
    let folder = tempfile::tempdir()?;
    write_study_dir(&generate(&synthetic), folder.path())?;
    let base = SimulationConfig {
        dataset: "synthetic".into(),
        synthetic,
        model: ModelConfig::tiny(),
        rounds: 2,
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 8,
            ..TrainingSettings::default()
        },
        arms: vec![Arm::Federated, Arm::Centralized, Arm::LabelPrior],
        ..SimulationConfig::default()
    };
    let built_in = run_simulation(&base, None, false)?;
    let from_folder = run_simulation(
        &SimulationConfig {
            dataset: format!("study:{}", folder.path().display()),
            ..base.clone()
        },
        None,
        false,
    )?;
    assert_eq!(built_in.rounds.len(), from_folder.rounds.len());
    for (a, b) in built_in.rounds.iter().zip(&from_folder.rounds) {
        assert_eq!(
            (a.arm, a.round, a.metrics.samples),
            (b.arm, b.round, b.metrics.samples)
        );
        for (x, y) in a.metrics.values().iter().zip(b.metrics.values()) {
            assert!(
                (x - y).abs() < 1e-6,
                "{:?} round {}: {x} vs {y}",
                a.arm,
                a.round
            );
        }
    }
    for (arm, states) in &built_in.final_states {
        let other = &from_folder.final_states[arm];
        for (a, b) in states.iter().zip(other) {
            let max_difference = a
                .parameters
                .iter_values()
                .zip(b.parameters.iter_values())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_difference < 1e-4,
                "{arm:?}: parameters differ by {max_difference}"
            );
        }
    }
    Ok(())
}
