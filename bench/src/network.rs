//! System overhead per round in network mode: the real QUIC coordinator ([`Server`]) and real
//! participant [`Node`]s as tasks of one process, talking over loopback. For each round,
//! overhead = the round's wall time on the coordinator (round started to aggregated, from its
//! round log) minus the slowest client's local training time (`LocalMetrics::seconds` of the
//! updates that were aggregated). What is left is the framework: polling for work, transfers,
//! TLS, encoding, signing and verification, validation, aggregation, checkpointing.
//!
//! [`Server`]: mpcl_coordinator::server::Server

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mpcl_client::{Node, NodeConfig, NodeEvent, SessionConfig, UpdateOutcome};
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::{NetworkSettings, ROUND_LOG_FILE};
use mpcl_data::ModelConfig;
use mpcl_model::Device;
use mpcl_protocol::Compression;
use mpcl_simulations::synthetic::{SyntheticConfig, generate};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

use crate::BenchError;
use crate::federation_setup::{BenchKeys, every_client_config, initial_state};
use crate::stats::median;

/// One network configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverheadRow {
    pub clients: usize,
    pub rounds: u64,
    /// How often a waiting client asks for work again (the coordinator's `poll_interval_ms`).
    pub poll_interval_ms: u64,
    pub compression: Compression,
    /// Median over rounds of the coordinator's round wall time.
    pub round_seconds: f64,
    /// Median over rounds of the slowest aggregated client's local training time.
    pub slowest_training_seconds: f64,
    /// Median over rounds of (round wall time - slowest training time).
    pub overhead_seconds: f64,
    /// Per-round overheads, seconds.
    pub overheads: Vec<f64>,
}

/// Runs a federation of `clients` nodes for `rounds` rounds (tiny model, synthetic data, one
/// local epoch) and measures every round.
pub fn measure(
    clients: usize,
    rounds: u64,
    poll_interval_ms: u64,
    compression: Compression,
) -> Result<OverheadRow, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::setup("tokio runtime", e))?;
    runtime.block_on(run(clients, rounds, poll_interval_ms, compression))
}

async fn run(
    clients: usize,
    rounds: u64,
    poll_interval_ms: u64,
    compression: Compression,
) -> Result<OverheadRow, BenchError> {
    let data = generate(&SyntheticConfig {
        seed: 3,
        subjects: clients,
        trials_per_subject: 8,
        windows_per_trial: 3,
        face_width: 8,
        ..SyntheticConfig::default()
    });
    let keys = BenchKeys::new(clients, "network round overhead")?;
    let mut config = every_client_config("bench", rounds, clients);
    config.training.local_epochs = 1;
    config.training.batch_size = 16;
    config.training.learning_rate = 0.01;
    config.training.compression = compression;
    let model = ModelConfig::tiny();
    let initial = initial_state(&data.schema, &model)?;
    let coordinator = Coordinator::new(config, [9; 16], initial)
        .map_err(|e| BenchError::setup("coordinator", e))?;
    let out = tempfile::tempdir().map_err(|e| BenchError::setup("temporary folder", e))?;
    let network = NetworkSettings {
        poll_interval_ms,
        finish_grace_secs: 1.0,
        ..NetworkSettings::default()
    };
    let server = keys.bind_server(coordinator, &model, &data.schema, network, out.path())?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let server_task = tokio::spawn(server.run(shutdown.clone()));

    let subjects = data.subjects();
    let mut nodes = Vec::new();
    for (participant, subject) in keys.participants.iter().zip(&subjects) {
        let rows: Vec<usize> = (0..data.samples.len())
            .filter(|&r| data.samples[r].subject == *subject)
            .collect();
        let session =
            SessionConfig::new(addr, keys.coordinator.public_key(), Arc::clone(participant));
        let (sender, events) = unbounded_channel();
        let node = Node::new(NodeConfig::new(session), data.subset(&rows), Device::flex())
            .map_err(|e| BenchError::setup("node", e))?
            .with_events(sender);
        nodes.push((tokio::spawn(node.run(shutdown.clone())), events));
    }

    let limit = Duration::from_secs(120 + 60 * rounds);
    let mut slowest: BTreeMap<u64, f64> = BTreeMap::new();
    for (task, mut events) in nodes {
        let outcome = tokio::time::timeout(limit, task).await;
        let finished = matches!(outcome, Ok(Ok(Ok(_))));
        if !finished {
            shutdown.cancel();
            return Err(BenchError::Measure {
                what: "network round overhead".into(),
                message: format!("a node did not finish: {outcome:?}"),
            });
        }
        while let Ok(event) = events.try_recv() {
            if let NodeEvent::UpdateSent {
                round,
                update,
                outcome: UpdateOutcome::Accepted,
            } = event
            {
                let entry = slowest.entry(round).or_insert(0.0);
                *entry = entry.max(update.metrics.seconds);
            }
        }
    }
    let served = tokio::time::timeout(Duration::from_secs(30), server_task).await;
    if !matches!(served, Ok(Ok(Ok(_)))) {
        shutdown.cancel();
        return Err(BenchError::Measure {
            what: "network round overhead".into(),
            message: format!("the server did not finish: {served:?}"),
        });
    }
    let logged = LoggedRounds::read(out.path(), &slowest, "network round overhead")?;
    Ok(OverheadRow {
        clients,
        rounds,
        poll_interval_ms,
        compression,
        round_seconds: median(&logged.walls),
        slowest_training_seconds: median(&logged.trainings),
        overhead_seconds: median(&logged.overheads),
        overheads: logged.overheads,
    })
}

/// The rounds a bench run's coordinator logged, each with the slowest client's training.
pub(crate) struct LoggedRounds {
    /// Each round's wall time.
    pub walls: Vec<f64>,
    /// Each round's slowest training.
    pub trainings: Vec<f64>,
    /// Each round's wall time minus its slowest training.
    pub overheads: Vec<f64>,
}

impl LoggedRounds {
    /// Reads the round log in `out_dir` and pairs each timed round with `slowest[round]` (rounds
    /// without either are left out); `what` names the measurement in errors.
    pub fn read(
        out_dir: &std::path::Path,
        slowest: &BTreeMap<u64, f64>,
        what: &str,
    ) -> Result<Self, BenchError> {
        let log = read_round_log(out_dir.join(ROUND_LOG_FILE))
            .map_err(|e| BenchError::setup("round log", e))?;
        let mut rounds = Self {
            walls: Vec::new(),
            trainings: Vec::new(),
            overheads: Vec::new(),
        };
        for record in log {
            let (Some(wall), Some(&train)) = (record.wall_seconds, slowest.get(&record.round))
            else {
                continue;
            };
            rounds.walls.push(wall);
            rounds.trainings.push(train);
            rounds.overheads.push(wall - train);
        }
        if rounds.overheads.is_empty() {
            return Err(BenchError::Measure {
                what: what.into(),
                message: "no round was logged".into(),
            });
        }
        Ok(rounds)
    }
}
