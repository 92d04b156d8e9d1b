//! Measurements that need a process of their own, so that the peak resident memory (`VmHWM`)
//! belongs to one configuration only: the parent re-runs its own binary with a hidden
//! subcommand (`mpcl bench-child SPEC`), which calls [`run_child`] and prints a [`ChildResult`]
//! as JSON on stdout. Memory is reported above the child's baseline (its peak before the
//! measured work allocated anything: the binary, the allocator, the runtime).

use std::path::PathBuf;
use std::process::Command;

use mpcl_coordinator::{
    Action, Coordinator, CoordinatorConfig, Event, ParticipantId, TrainingSettings,
};
use mpcl_data::ModelConfig;
use mpcl_simulations::evaluation::EvaluationProtocol;
use mpcl_simulations::simulate::{Arm, SimulationConfig, run_simulation};
use mpcl_simulations::synthetic::SyntheticConfig;
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::stats::{peak_rss_bytes, seconds};
use crate::synthetic_state::{client_update, global_state};

/// What a child process measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChildTask {
    /// The coordinator's round state machine (validation, streaming FedAvg, checkpoint) through
    /// one round of `clients` synthetic updates of `parameters` values, fed one at a time.
    CoordinatorRound { clients: usize, parameters: usize },
    /// An in-process federated simulation of `clients` participants (synthetic data, tiny model,
    /// one local epoch a round).
    ManyClients { clients: usize, rounds: u64 },
}

/// What a child reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    /// Peak resident memory before the measured work, bytes.
    pub baseline_bytes: u64,
    /// Peak resident memory at the end, bytes.
    pub peak_bytes: u64,
    /// Wall time of the measured work, seconds.
    pub seconds: f64,
    /// Final KL of the federated arm (`ManyClients`).
    pub final_kl: Option<f64>,
}

impl ChildResult {
    /// Peak memory the measured work added, bytes.
    pub fn added_bytes(&self) -> u64 {
        self.peak_bytes.saturating_sub(self.baseline_bytes)
    }
}

/// How to start a child: a program and the arguments before the task's JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildLauncher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl ChildLauncher {
    /// Runs `task` in a child process and parses its answer.
    pub fn run(&self, task: &ChildTask) -> Result<ChildResult, BenchError> {
        let spec = serde_json::to_string(task).expect("serialisable");
        let output = Command::new(&self.program)
            .args(&self.args)
            .arg(&spec)
            .output()
            .map_err(|e| BenchError::Child {
                task: spec.clone(),
                message: format!("cannot start {}: {e}", self.program.display()),
            })?;
        if !output.status.success() {
            return Err(BenchError::Child {
                task: spec,
                message: format!(
                    "exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line).map_err(|e| BenchError::Child {
            task: spec,
            message: format!("unreadable answer `{line}`: {e}"),
        })
    }
}

/// Runs `task` in this process (what the hidden subcommand calls).
pub fn run_child(task: &ChildTask) -> Result<ChildResult, BenchError> {
    let baseline_bytes = peak_rss_bytes().unwrap_or(0);
    let (final_kl, secs) = match task {
        ChildTask::CoordinatorRound {
            clients,
            parameters,
        } => {
            let (result, secs) = seconds(|| coordinator_round(*clients, *parameters));
            result?;
            (None, secs)
        }
        ChildTask::ManyClients { clients, rounds } => {
            let (result, secs) = seconds(|| many_clients(*clients, *rounds));
            (Some(result?), secs)
        }
    };
    Ok(ChildResult {
        baseline_bytes,
        peak_bytes: peak_rss_bytes().unwrap_or(0),
        seconds: secs,
        final_kl,
    })
}

fn coordinator_round(clients: usize, parameters: usize) -> Result<(), BenchError> {
    let fail = |message: String| BenchError::Measure {
        what: format!("coordinator round with {clients} clients x {parameters} parameters"),
        message,
    };
    let run_id = [3; 16];
    let global = global_state(parameters);
    // One template update, cloned for every client: the driver holds one update at a time, as
    // the server does per upload.
    let template = client_update(&global, run_id, 1, 0);
    let config = CoordinatorConfig {
        // The protocol alone: no evaluation round, no held-out data.
        evaluation: mpcl_coordinator::evaluation::EvaluationConfig::disabled(),
        start_at_label_prior: false,
        rounds: 1,
        clients_per_round: Some(clients),
        min_clients_to_aggregate: clients,
        min_available_clients: Some(clients),
        ..CoordinatorConfig::default()
    };
    let mut coordinator =
        Coordinator::new(config, run_id, global).map_err(|e| fail(e.to_string()))?;
    let ids: Vec<ParticipantId> = (0..clients as u64).map(ParticipantId::from_index).collect();
    for &participant in &ids {
        coordinator.handle(0, Event::ClientConnected { participant });
    }
    for &participant in &ids {
        coordinator.handle(1, Event::WorkRequested { participant });
    }
    let mut aggregated = false;
    for &participant in &ids {
        let actions = coordinator.handle(
            2,
            Event::UpdateReceived {
                participant,
                update: Box::new(template.clone()),
            },
        );
        for action in actions {
            match action {
                Action::Reject { reason, .. } => return Err(fail(format!("rejected: {reason}"))),
                Action::Aggregated { .. } => aggregated = true,
                _ => {}
            }
        }
    }
    if !aggregated {
        return Err(fail("the round was not aggregated".into()));
    }
    Ok(())
}

/// The federated arm on `clients` synthetic subjects; returns its final KL.
pub fn many_clients(clients: usize, rounds: u64) -> Result<f64, BenchError> {
    let config = SimulationConfig {
        dataset: "synthetic".into(),
        synthetic: SyntheticConfig {
            subjects: clients,
            trials_per_subject: 4,
            windows_per_trial: 2,
            face_width: 8,
            ..SyntheticConfig::default()
        },
        protocol: EvaluationProtocol::SubjectDependent {
            test_fraction: 0.25,
        },
        model: ModelConfig::tiny(),
        rounds,
        training: TrainingSettings {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 1e-2,
            ..TrainingSettings::default()
        },
        arms: vec![Arm::Federated],
        ..SimulationConfig::default()
    };
    let result = run_simulation(&config, None, false).map_err(|e| BenchError::Measure {
        what: format!("simulation of {clients} clients"),
        message: e.to_string(),
    })?;
    result
        .rounds
        .iter()
        .rev()
        .find(|r| r.arm == Arm::Federated)
        .map(|r| r.metrics.kl)
        .ok_or_else(|| BenchError::Measure {
            what: format!("simulation of {clients} clients"),
            message: "no round ran".into(),
        })
}
