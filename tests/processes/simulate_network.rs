//! `mpcl simulate --network` against the in-process mode: the same seed must give identical
//! aggregated models and identical metrics, bit for bit.

use mpcl_coordinator::TrainingSettings;
use std::path::PathBuf;

use anyhow::Result;
use mpcl_data::ModelConfig;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::network::NetworkOptions;
use mpcl_simulations::simulate::{
    Arm, ExecutionMode, SimulationConfig, SimulationResult, run_simulation_with,
};
use mpcl_simulations::synthetic::SyntheticConfig;

fn small_simulation() -> SimulationConfig {
    SimulationConfig {
        dataset: "synthetic".into(),
        synthetic: SyntheticConfig {
            subjects: 4,
            trials_per_subject: 8,
            windows_per_trial: 3,
            ..SyntheticConfig::default()
        },
        protocol: EvaluationProtocol::SubjectDependent {
            test_fraction: 0.25,
        },
        model: ModelConfig::tiny(),
        rounds: 3,
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 8,
            learning_rate: 1e-2,
            ..TrainingSettings::default()
        },
        // Three of four clients per round: sampling must agree between the modes too.
        clients_per_round: Some(3),
        arms: vec![Arm::Federated, Arm::FedavgEncoder],
        seed: 5,
        ..SimulationConfig::default()
    }
}

fn network_mode() -> ExecutionMode {
    ExecutionMode::Network(NetworkOptions {
        client_program: PathBuf::from(env!("CARGO_BIN_EXE_mpcl")),
    })
}

#[test]
fn network_and_in_process_modes_give_identical_models_and_metrics() -> Result<()> {
    let config = small_simulation();
    let out = tempfile::tempdir()?;
    let networked = run_simulation_with(&config, &network_mode(), Some(out.path()), false)?;
    let in_process = run_simulation_with(&config, &ExecutionMode::InProcess, None, false)?;
    assert_eq!(networked.mode, "network");
    assert_eq!(in_process.mode, "in-process");

    // The aggregated models: every parameter, prototype and co-occurrence value, bit for bit.
    for arm in [Arm::Federated, Arm::FedavgEncoder] {
        let net = &networked.final_states[&arm];
        let local = &in_process.final_states[&arm];
        assert_eq!(net.len(), 1);
        assert!(net == local, "{arm:?}: the final global states differ");
    }
    // The memories were learned in the federated arm and not in the ablation.
    let federated = &networked.final_states[&Arm::Federated][0];
    let ablation = &networked.final_states[&Arm::FedavgEncoder][0];
    assert!(federated.cooccurrence.count > 0.0);
    assert_eq!(ablation.cooccurrence.count, 0.0);

    // Every round's metrics of every arm.
    assert_eq!(round_metrics(&networked), round_metrics(&in_process));
    assert_eq!(networked.rounds.len(), 2 * config.rounds as usize);

    // The participants' federated evaluation of every global model (the initial one, each
    // round's, the final evaluation round's): the same exact totals in both modes.
    for arm in [Arm::Federated, Arm::FedavgEncoder] {
        let (net, local) = (
            &networked.federated_evaluations[&arm][0],
            &in_process.federated_evaluations[&arm][0],
        );
        assert_eq!(net.len(), config.rounds as usize + 1, "{arm:?}");
        assert_eq!(net, local, "{arm:?}: federated metrics differ");
    }

    // The run really went over the wire: the coordinator's round log and the clients' logs.
    let log = std::fs::read_to_string(
        out.path()
            .join("network/federated-0/coordinator/rounds.jsonl"),
    )?;
    assert_eq!(log.lines().count(), config.rounds as usize);
    for (round, line) in (1..).zip(log.lines()) {
        let record: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(record["participants"].as_array().map(Vec::len), Some(3));
        assert!(record["bytes_in"].as_u64().unwrap_or(0) > 0, "{line}");
        // Each line carries the federated metrics of the model after its round.
        assert_eq!(
            record["evaluation"]["round"].as_u64(),
            Some(round),
            "{line}"
        );
    }
    // The coordinator's final table and its best round's state.
    let coordinator = out.path().join("network/federated-0/coordinator");
    let table = std::fs::read_to_string(coordinator.join("final.md"))?;
    assert!(
        table.contains("best round") && table.contains("label prior"),
        "{table}"
    );
    assert!(coordinator.join("final.csv").exists());
    assert!(coordinator.join("checkpoint.best.bin").exists());
    for client in 0..4 {
        let log = out.path().join(format!(
            "network/federated-0/clients/{client:03}/client.log"
        ));
        assert!(log.exists(), "{} missing", log.display());
    }
    Ok(())
}

#[test]
fn under_secure_aggregation_both_modes_agree_too() -> Result<()> {
    let mut config = small_simulation();
    config.arms = vec![Arm::Federated];
    config.rounds = 2;
    config.privacy.secure_aggregation = true;
    let networked = run_simulation_with(&config, &network_mode(), None, false)?;
    let in_process = run_simulation_with(&config, &ExecutionMode::InProcess, None, false)?;
    // Masks cancel exactly (arithmetic modulo 2^32) and quantisation is deterministic.
    assert!(networked.final_states == in_process.final_states);
    assert_eq!(round_metrics(&networked), round_metrics(&in_process));
    // The evaluation travelled inside the masked sums: the same totals in both modes.
    let (net, local) = (
        &networked.federated_evaluations[&Arm::Federated][0],
        &in_process.federated_evaluations[&Arm::Federated][0],
    );
    assert_eq!(net.len(), config.rounds as usize + 1);
    for (a, b) in net.iter().zip(local) {
        assert_eq!(a.round, b.round);
        for (x, y) in a.test.values().iter().zip(b.test.values()) {
            assert!((x - y).abs() < 1e-6, "round {}: {x} vs {y}", a.round);
        }
    }
    Ok(())
}

fn round_metrics(result: &SimulationResult) -> Vec<(Arm, u64, String)> {
    result
        .rounds
        .iter()
        .map(|r| (r.arm, r.round, format!("{:?}", r.metrics)))
        .collect()
}

#[test]
fn a_failing_client_process_stops_the_run_with_an_error_naming_it() -> Result<()> {
    // `false` exits 1 at once, as a client that cannot start would.
    let mode = ExecutionMode::Network(NetworkOptions {
        client_program: PathBuf::from("false"),
    });
    let out = tempfile::tempdir()?;
    let error = run_simulation_with(&small_simulation(), &mode, Some(out.path()), false)
        .expect_err("no client can take part")
        .to_string();
    assert!(
        error.contains("client process of subject") && error.contains("client.log"),
        "{error}"
    );
    Ok(())
}

/// Early stopping (`--patience`) stops a networked arm at the same round as in-process, with
/// the same chosen round and model.
#[test]
fn patience_stops_both_modes_at_the_same_round() -> Result<()> {
    let mut config = small_simulation();
    config.arms = vec![Arm::Federated];
    config.rounds = 8;
    config.selection.patience = 1;
    // A step size this large overshoots soon, so validation KL stops improving early.
    config.training.learning_rate = 0.2;
    let networked = run_simulation_with(&config, &network_mode(), None, false)?;
    let in_process = run_simulation_with(&config, &ExecutionMode::InProcess, None, false)?;
    assert_eq!(round_metrics(&networked), round_metrics(&in_process));
    let ran = in_process.rounds.len();
    assert!(ran < config.rounds as usize, "no early stop: {ran} rounds");
    assert!(networked.best_states == in_process.best_states);
    let chosen = |r: &SimulationResult| r.final_table.rows[0].rounds.clone();
    assert_eq!(chosen(&networked), chosen(&in_process));
    Ok(())
}
