//! The in-process federation trains a round's participants in parallel; the run must be
//! bit-identical to training them one after another.

use anyhow::Result;
use mpcl_client::ParticipantSettings;
use mpcl_model::{DeviceChoice, MpclModel};
use mpcl_protocol::Compression;
use mpcl_protocol::messages::GlobalState;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::federation::{InProcessFederation, RoundOutcome};
use mpcl_simulations::round_log::read_round_log;
use mpcl_simulations::simulate::{
    Arm, SimulationConfig, SimulationResult, coordinator_config, run_simulation,
};
use mpcl_simulations::simulation_result::RoundRecord;

use mpcl_simulations::synthetic::generate;

mod common;

const SUBJECTS: usize = 5;

fn simulation() -> SimulationConfig {
    let mut config = SimulationConfig {
        rounds: 3,
        clients_per_round: Some(4),
        arms: vec![Arm::Federated],
        ..common::small_study(SUBJECTS, 8)
    };
    // A sampled cohort (not everyone) and int8 updates, whose error feedback is state each
    // participant carries from round to round.
    config.training.batch_size = 8;
    config.training.compression = Compression::Int8;
    config
}

fn federate(threads: usize) -> Result<(Vec<RoundOutcome>, GlobalState)> {
    let config = simulation();
    let dataset = generate(&config.synthetic);
    let device = DeviceChoice::Cpu.resolve()?.device;
    let initial = MpclModel::new(&dataset.schema, &config.model, &device, 0)?.global_state();
    let mut federation = InProcessFederation::new(
        &dataset,
        None,
        &config.model,
        &ParticipantSettings {
            min_prototype_mass: 1.0,
        },
        coordinator_config(&config, SUBJECTS)?,
        initial,
        &device,
    )?;
    federation.set_threads(threads);
    let mut outcomes = Vec::new();
    let last = federation.run(|outcome| {
        outcomes.push(outcome.clone());
        Ok::<(), anyhow::Error>(())
    })?;
    Ok((outcomes, last))
}

#[test]
fn two_threads_give_the_one_thread_run_bit_for_bit() -> Result<()> {
    let (serial, serial_last) = federate(1)?;
    let (parallel, parallel_last) = federate(2)?;
    assert_eq!(serial.len(), 3);
    assert_eq!(parallel.len(), serial.len());
    for (a, b) in serial.iter().zip(&parallel) {
        assert_eq!(a.participants, 4, "round {}: a cohort of 4", a.round);
        assert_eq!(a.round, b.round);
        // Same updates, in the same order (but for the training's wall time), and the same
        // global state after the round.
        let untimed = |o: &RoundOutcome| {
            let mut updates: Vec<_> = o.updates.iter().map(|u| (**u).clone()).collect();
            for update in &mut updates {
                update.metrics.seconds = 0.0;
            }
            updates
        };
        assert_eq!(untimed(a), untimed(b), "round {}: updates differ", a.round);
        assert_eq!(a.state, b.state, "round {}: global state differs", a.round);
        assert_eq!((a.bytes_down, a.bytes_up), (b.bytes_down, b.bytes_up));
    }
    assert_eq!(serial_last, parallel_last);
    // The rounds did move the model (so the comparison is not between two untouched states).
    assert_ne!(serial[0].state, serial[2].state);
    Ok(())
}

#[test]
fn the_simulation_reports_the_same_metrics_on_one_thread_and_on_two() -> Result<()> {
    let run = |threads| -> Result<SimulationResult> {
        Ok(run_simulation(
            &SimulationConfig {
                threads: Some(threads),
                ..simulation()
            },
            None,
            false,
        )?)
    };
    let (serial, parallel) = (run(1)?, run(2)?);
    assert_eq!(serial.rounds.len(), 3);
    let metrics = |r: &SimulationResult| r.rounds.iter().map(|r| r.metrics).collect::<Vec<_>>();
    assert_eq!(metrics(&serial), metrics(&parallel));
    Ok(())
}

/// Every arm and every fold is a job of its own, taken by several threads at once: the outputs
/// (round log, final table, model files) must be those of a one-thread run.
#[test]
fn arms_and_folds_in_parallel_write_what_one_thread_writes() -> Result<()> {
    let plans = [
        (
            EvaluationProtocol::SubjectDependent {
                test_fraction: 0.25,
            },
            vec![
                Arm::Federated,
                Arm::Personalized,
                Arm::FedavgEncoder,
                Arm::Centralized,
                Arm::LocalOnly,
                Arm::LabelPrior,
            ],
        ),
        (
            EvaluationProtocol::SubjectIndependent { folds: 2 },
            vec![Arm::Federated, Arm::Centralized, Arm::LabelPrior],
        ),
    ];
    for (protocol, arms) in plans {
        let dir = tempfile::tempdir()?;
        let run = |threads: usize| -> Result<(SimulationResult, std::path::PathBuf)> {
            let out = dir.path().join(format!("threads-{threads}"));
            let config = SimulationConfig {
                protocol,
                arms: arms.clone(),
                clients_per_round: None,
                threads: Some(threads),
                ..simulation()
            };
            Ok((run_simulation(&config, Some(&out), false)?, out))
        };
        let (serial, serial_dir) = run(1)?;
        let (parallel, parallel_dir) = run(3)?;
        let untimed = |r: &SimulationResult| {
            r.rounds
                .iter()
                .map(|r| (r.arm, r.round, r.metrics))
                .collect::<Vec<_>>()
        };
        assert_eq!(untimed(&serial), untimed(&parallel), "{protocol}");
        assert_eq!(serial.selected_predictions, parallel.selected_predictions);
        assert_eq!(serial.final_states, parallel.final_states);
        assert_eq!(serial.notes, parallel.notes);
        // The round log lists the same records in the same order (but for the wall times).
        let log = |dir: &std::path::Path| -> Result<Vec<RoundRecord>> {
            let records = read_round_log(&dir.join("rounds.jsonl"))?;
            Ok(records.into_iter().map(RoundRecord::untimed).collect())
        };
        let serial_log = log(&serial_dir)?;
        assert!(
            serial_log.len() >= arms.len(),
            "{protocol}: {} lines",
            serial_log.len()
        );
        assert_eq!(serial_log, log(&parallel_dir)?, "{protocol}");
        for file in ["final.csv", "per_subject.csv"] {
            assert_eq!(
                std::fs::read(serial_dir.join(file))?,
                std::fs::read(parallel_dir.join(file))?,
                "{protocol}: {file}"
            );
        }
    }
    Ok(())
}
