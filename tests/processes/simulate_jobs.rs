//! `mpcl simulate`'s jobs in child processes (`mpcl simulate-job`) against one thread of one
//! process: the same round log, tables and model files, byte for byte; a job process that
//! dies is an error naming the job.

use std::path::{Path, PathBuf};

use anyhow::Result;
use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::job_process::JobProgram;
use mpcl_simulations::round_log::read_round_log;
use mpcl_simulations::simulate::{
    Arm, ExecutionMode, SimulationConfig, SimulationError, run_simulation_with,
};
use mpcl_simulations::simulation_result::RoundRecord;
use mpcl_simulations::synthetic::SyntheticConfig;

fn small_simulation(threads: usize) -> SimulationConfig {
    SimulationConfig {
        dataset: "synthetic".into(),
        synthetic: SyntheticConfig {
            subjects: 4,
            trials_per_subject: 6,
            windows_per_trial: 3,
            ..SyntheticConfig::default()
        },
        // Two folds and three arms: six jobs, partitions other than the first.
        protocol: EvaluationProtocol::SubjectIndependent { folds: 2 },
        model: ModelConfig::tiny(),
        rounds: 2,
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 8,
            learning_rate: 1e-2,
            ..TrainingSettings::default()
        },
        arms: vec![Arm::Federated, Arm::LocalOnly, Arm::LabelPrior],
        seed: 9,
        threads: Some(threads),
        ..SimulationConfig::default()
    }
}

fn job_processes() -> ExecutionMode {
    ExecutionMode::JobProcesses(JobProgram::mpcl(PathBuf::from(env!("CARGO_BIN_EXE_mpcl"))))
}

/// The round log's records without their wall times.
fn untimed_log(dir: &Path) -> Result<Vec<RoundRecord>> {
    let records = read_round_log(&dir.join("rounds.jsonl"))?;
    Ok(records.into_iter().map(RoundRecord::untimed).collect())
}

/// Writes `config` on one thread and in job processes on two, and checks that both wrote the
/// same files; returns the one-thread run's round log.
fn compare(config: &SimulationConfig, dir: &Path) -> Result<Vec<RoundRecord>> {
    let (serial_dir, parallel_dir) = (dir.join("serial"), dir.join("jobs"));
    let serial = run_simulation_with(
        &SimulationConfig {
            threads: Some(1),
            ..config.clone()
        },
        &ExecutionMode::InProcess,
        Some(&serial_dir),
        false,
    )?;
    let parallel = run_simulation_with(
        &SimulationConfig {
            threads: Some(2),
            ..config.clone()
        },
        &job_processes(),
        Some(&parallel_dir),
        false,
    )?;
    assert_eq!(parallel.mode, "in-process");
    assert!(serial.final_states == parallel.final_states);
    assert_eq!(serial.selected_predictions, parallel.selected_predictions);
    assert_eq!(serial.notes, parallel.notes);
    let log = untimed_log(&serial_dir)?;
    assert_eq!(log, untimed_log(&parallel_dir)?);
    let mut compared = 0;
    for entry in std::fs::read_dir(&serial_dir)? {
        let name = entry?.file_name();
        // The round log holds wall times, the text table the run's wall time.
        if name == "rounds.jsonl" || name == "final.md" {
            continue;
        }
        assert_eq!(
            std::fs::read(serial_dir.join(&name))?,
            std::fs::read(parallel_dir.join(&name))?,
            "{name:?} differs"
        );
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} files compared");
    Ok(log)
}

#[test]
fn jobs_in_child_processes_write_what_one_thread_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = compare(&small_simulation(1), &dir.path().join("folds"))?;
    assert_eq!(log.len(), 2 * 3 * 2, "two folds, three arms, two rounds");
    // The personalized arm runs inside the federated arm's job process.
    let personalized = SimulationConfig {
        protocol: EvaluationProtocol::SubjectDependent {
            test_fraction: 0.25,
        },
        arms: vec![Arm::Federated, Arm::Personalized, Arm::Centralized],
        personalize_epochs: 2,
        ..small_simulation(1)
    };
    compare(&personalized, &dir.path().join("personalized"))?;
    let table = std::fs::read_to_string(dir.path().join("personalized/jobs/final.csv"))?;
    assert!(table.contains("personalized"), "{table}");
    Ok(())
}

#[test]
fn a_job_process_that_dies_is_an_error_naming_the_job() -> Result<()> {
    // A "program" that exits at once, without reading its job or writing a frame.
    let mode = ExecutionMode::JobProcesses(JobProgram {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), "exit 3".into()],
    });
    let error = run_simulation_with(&small_simulation(2), &mode, None, false).unwrap_err();
    assert!(
        matches!(error, SimulationError::JobProcess { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("federated MPCL (fold 1/2)"),
        "{message}"
    );
    assert!(message.contains("exit status: 3"), "{message}");
    Ok(())
}
