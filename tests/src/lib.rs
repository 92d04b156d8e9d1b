//! Shared harness of the end-to-end tests in `tests/tests/`: deterministic keys and an enrolment,
//! small synthetic federations (one client per subject, held-out trials per subject), a
//! coordinator server and participant nodes run as tokio tasks talking real QUIC on 127.0.0.1,
//! and the evaluation of a global state on the held-out data beside the label prior.
//!
//! Everything runs on the CPU with `ModelConfig::tiny()` and small data so that a whole run
//! takes seconds even in a debug build on two cores.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mpcl_client::{Node, NodeConfig, NodeEvent, NodeOutcome, Participant, SessionConfig};
use mpcl_coordinator::server::{NetworkSettings, Server, ServerOutcome, ServerSetup};
use mpcl_coordinator::{Coordinator, CoordinatorConfig};
use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Schema, split};
use mpcl_model::metrics::{DistributionMetrics, evaluate, label_prior_metrics};
use mpcl_model::{Device, ModelPool, MpclModel};
use mpcl_protocol::identity::Participant as Enrolled;
use mpcl_protocol::messages::{ClientUpdate, GlobalState, RunId, TrainingConfig};
use mpcl_protocol::{Enrolment, NodeIdentity, SigningKey};
use mpcl_simulations::synthetic::{SyntheticConfig, generate};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A deterministic identity (the same id and seed give the same key in every run, so training
/// seeds, which depend on the key, repeat too).
pub fn identity(id: &str, seed: u8) -> NodeIdentity {
    NodeIdentity::from_signing_key(Some(id), SigningKey::from_bytes(&[seed; 32]))
        .expect("valid test identity")
}

/// The coordinator's key and the participants' keys, with the enrolment of the participants.
pub struct Keys {
    pub coordinator: NodeIdentity,
    pub participants: Vec<Arc<NodeIdentity>>,
    pub enrolment: Enrolment,
}

impl Keys {
    /// `names.len()` enrolled participants (seeds 1, 2, ...) and a coordinator (seed 200).
    pub fn new(names: &[&str]) -> Self {
        let participants: Vec<Arc<NodeIdentity>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Arc::new(identity(name, i as u8 + 1)))
            .collect();
        let enrolment = Enrolment::from_participants(
            participants
                .iter()
                .map(|p| Enrolled {
                    id: p.id().to_string(),
                    public_key: p.public_key(),
                })
                .collect(),
        )
        .expect("valid enrolment");
        Self {
            coordinator: identity("coordinator", 200),
            participants,
            enrolment,
        }
    }

    /// A copy of the coordinator identity (identities are not `Clone`).
    pub fn coordinator_identity(&self) -> NodeIdentity {
        NodeIdentity::from_signing_key(
            Some(self.coordinator.id()),
            self.coordinator.signing_key().clone(),
        )
        .expect("valid identity")
    }
}

/// Synthetic data cut into one client per subject, with held-out trials per subject.
pub struct Federation {
    pub schema: Schema,
    /// Training samples of each client (subject), in subject order.
    pub train: Vec<Dataset>,
    /// Held-out trials of each subject (never trained on).
    pub test: Vec<Dataset>,
}

impl Federation {
    /// `subjects` subjects of seeded synthetic data (10 trials of 4 windows each, a narrow face
    /// vector); a quarter of each subject's trials is held out.
    pub fn synthetic(subjects: usize) -> Self {
        let data = generate(&SyntheticConfig {
            seed: 11,
            subjects,
            trials_per_subject: 10,
            windows_per_trial: 4,
            face_width: 8,
            ..SyntheticConfig::default()
        });
        let parts = split::subject_dependent(&data, 0.25, 5).expect("splittable");
        let mut train = Vec::new();
        let mut test = Vec::new();
        for subject in data.subjects() {
            let of = |indices: &[usize]| -> Vec<usize> {
                indices
                    .iter()
                    .copied()
                    .filter(|&i| data.samples[i].subject == subject)
                    .collect()
            };
            train.push(data.subset(&of(&parts.train)));
            test.push(data.subset(&of(&parts.test)));
        }
        Self {
            schema: data.schema.clone(),
            train,
            test,
        }
    }

    /// The run's initial global state: the tiny model seeded with `seed`, on the CPU.
    pub fn initial_state(&self, seed: u64) -> GlobalState {
        MpclModel::new(&self.schema, &ModelConfig::tiny(), &Device::flex(), seed)
            .expect("tiny model fits the schema")
            .global_state()
    }

    /// The mean training label of all clients (the pooled label prior).
    pub fn training_label_prior(&self) -> Vec<f32> {
        let mut prior = vec![0.0f64; self.schema.emotion_count()];
        let mut n = 0.0;
        for sample in self.train.iter().flat_map(|d| &d.samples) {
            for (p, v) in prior.iter_mut().zip(&sample.label) {
                *p += f64::from(*v);
            }
            n += 1.0;
        }
        prior.iter().map(|p| (p / n) as f32).collect()
    }

    /// The global model `state`'s predictions on each client's held-out samples, in order
    /// (standardised with that client's own training statistics).
    pub fn predict(&self, state: &GlobalState) -> Vec<Vec<f32>> {
        let mut predictions = Vec::new();
        // One model, lent to each client's participant in turn.
        let models = ModelPool::new(&self.schema, &ModelConfig::tiny(), &Device::flex())
            .expect("model pool");
        for (train, test) in self.train.iter().zip(&self.test) {
            let participant =
                Participant::new(train, &models, Default::default()).expect("participant");
            predictions.extend(participant.predict_with(state, test).expect("predict"));
        }
        predictions
    }

    /// The global model `state` on every held-out sample (each subject's features standardised
    /// with that subject's own training statistics, as its client would), and the label-prior
    /// baseline (the mean training label of all clients) on the same samples.
    pub fn evaluate(&self, state: &GlobalState) -> (DistributionMetrics, DistributionMetrics) {
        let predictions = self.predict(state);
        let labels: Vec<Vec<f32>> = self
            .test
            .iter()
            .flat_map(|test| test.samples.iter().map(|s| s.label.clone()))
            .collect();
        let prior = self.training_label_prior();
        let model = evaluate(
            labels
                .iter()
                .zip(&predictions)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        );
        let baseline = label_prior_metrics(labels.iter().map(Vec::as_slice), &prior);
        (model, baseline)
    }
}

/// A run of `rounds` rounds in which all `clients` take part every round (so that sampling,
/// and with it the result, does not depend on who connects first). Training only: these tests
/// count rounds and messages of the protocol; federated evaluation has tests of its own.
pub fn run_config(rounds: u64, clients: usize) -> CoordinatorConfig {
    let mut config = CoordinatorConfig {
        evaluation: mpcl_coordinator::evaluation::EvaluationConfig::disabled(),
        start_at_label_prior: false,
        name: "e2e".into(),
        seed: 7,
        rounds,
        clients_per_round: Some(clients),
        min_clients_to_aggregate: clients,
        min_available_clients: Some(clients),
        round_deadline_secs: 60,
        ..CoordinatorConfig::default()
    };
    config.training.local_epochs = 2;
    config.training.batch_size = 16;
    config.training.learning_rate = 0.01;
    config
}

/// [`run_config`] under secure aggregation (every client masks; the coordinator sees sums).
pub fn secure_run_config(rounds: u64, clients: usize) -> CoordinatorConfig {
    let mut config = run_config(rounds, clients);
    config.privacy.secure_aggregation = true;
    config
}

/// Network settings for tests: quick polls and keep-alives, short grace after the last round.
pub fn test_network() -> NetworkSettings {
    NetworkSettings {
        keep_alive_secs: 1.0,
        idle_timeout_secs: 10.0,
        poll_interval_ms: 50,
        request_timeout_secs: 10.0,
        finish_grace_secs: 3.0,
        secure_step_timeout_secs: 3.0,
        ..NetworkSettings::default()
    }
}

/// A running coordinator.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<ServerOutcome>>,
}

/// Binds a server for `coordinator` on `listen` (port 0 for any) writing to `out_dir`, and runs
/// it as a task.
pub fn start_server(
    coordinator: Coordinator,
    keys: &Keys,
    schema: &Schema,
    out_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<RunningServer> {
    start_server_with(coordinator, keys, schema, out_dir, listen, test_network())
}

/// Starts a coordinator for run `run_id` of `config` from `federation`'s initial state (seeded
/// with the config's seed), on 127.0.0.1 with any port, writing to `out_dir`.
pub fn start_run(
    federation: &Federation,
    keys: &Keys,
    config: CoordinatorConfig,
    run_id: RunId,
    out_dir: &Path,
) -> anyhow::Result<RunningServer> {
    let initial = federation.initial_state(config.seed);
    let coordinator = Coordinator::new(config, run_id, initial)?;
    start_server(
        coordinator,
        keys,
        &federation.schema,
        out_dir,
        "127.0.0.1:0".parse()?,
    )
}

/// [`start_server`] with other network settings.
pub fn start_server_with(
    coordinator: Coordinator,
    keys: &Keys,
    schema: &Schema,
    out_dir: &Path,
    listen: SocketAddr,
    network: NetworkSettings,
) -> anyhow::Result<RunningServer> {
    let setup = ServerSetup {
        coordinator,
        identity: keys.coordinator_identity(),
        enrolment: keys.enrolment.clone(),
        model_config: ModelConfig::tiny(),
        schema: schema.clone(),
        network,
        listen,
        out_dir: out_dir.to_path_buf(),
    };
    let server = Server::bind(setup)?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { server.run(token).await.context("server failed") });
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}

/// Binds like [`start_server`], retrying for a few seconds while the port is still held by a
/// coordinator that was just killed.
pub async fn restart_server(
    coordinator: impl Fn() -> anyhow::Result<Coordinator>,
    keys: &Keys,
    schema: &Schema,
    out_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<RunningServer> {
    let mut last = None;
    for _ in 0..50 {
        match start_server(coordinator()?, keys, schema, out_dir, listen) {
            Ok(server) => return Ok(server),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("cannot bind")))
}

/// Session settings for a test node: short timeouts.
pub fn session_config(addr: SocketAddr, keys: &Keys, identity: Arc<NodeIdentity>) -> SessionConfig {
    let mut config = SessionConfig::new(addr, keys.coordinator.public_key(), identity);
    config.keep_alive = Duration::from_secs(1);
    config.idle_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(30);
    config
}

/// A running participant node and what it reports.
pub struct RunningNode {
    pub task: JoinHandle<Result<NodeOutcome, mpcl_client::NodeError>>,
    pub events: UnboundedReceiver<NodeEvent>,
}

/// Starts a node for `identity` training on `data`.
pub fn start_node(
    addr: SocketAddr,
    keys: &Keys,
    identity: Arc<NodeIdentity>,
    data: Dataset,
    shutdown: CancellationToken,
) -> RunningNode {
    start_node_with(addr, keys, identity, data, shutdown, |_| {})
}

/// [`start_node`] with the node's config adjusted by `configure` (test hooks, timeouts).
pub fn start_node_with(
    addr: SocketAddr,
    keys: &Keys,
    identity: Arc<NodeIdentity>,
    data: Dataset,
    shutdown: CancellationToken,
    configure: impl FnOnce(&mut NodeConfig),
) -> RunningNode {
    let mut config = NodeConfig::new(session_config(addr, keys, identity));
    config.backoff_initial = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(800);
    config.give_up_after = Some(Duration::from_secs(30));
    configure(&mut config);
    let (sender, events) = unbounded_channel();
    let node = Node::new(config, data, Device::flex())
        .expect("valid local data")
        .with_events(sender);
    RunningNode {
        task: tokio::spawn(node.run(shutdown)),
        events,
    }
}

/// Starts one node per identity, each training on the dataset at the same position.
pub fn start_nodes(
    addr: SocketAddr,
    keys: &Keys,
    identities: &[Arc<NodeIdentity>],
    train: &[Dataset],
    shutdown: &CancellationToken,
) -> Vec<RunningNode> {
    identities
        .iter()
        .zip(train)
        .map(|(identity, data)| {
            start_node(addr, keys, identity.clone(), data.clone(), shutdown.clone())
        })
        .collect()
}

/// Runs `coordinator` on loopback with one node per participant of `keys`, each training on
/// `federation`'s data at the same position, until every node has finished `rounds` training
/// rounds and the server has stopped. Returns each node's events, in participant order, and
/// the server's outcome.
pub async fn run_federation(
    coordinator: Coordinator,
    keys: &Keys,
    federation: &Federation,
    out_dir: &Path,
    rounds: u64,
) -> anyhow::Result<(Vec<Vec<NodeEvent>>, ServerOutcome)> {
    let server = start_server(
        coordinator,
        keys,
        &federation.schema,
        out_dir,
        "127.0.0.1:0".parse()?,
    )?;
    let shutdown = CancellationToken::new();
    let nodes = start_nodes(
        server.addr,
        keys,
        &keys.participants,
        &federation.train,
        &shutdown,
    );
    let mut events = Vec::new();
    for mut node in nodes {
        let outcome = join(node.task, Duration::from_secs(120), "node").await??;
        anyhow::ensure!(
            outcome == NodeOutcome::Finished { rounds },
            "a node ended with {outcome:?}, not after {rounds} rounds"
        );
        events.push(drain(&mut node.events));
    }
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    Ok((events, outcome))
}

/// Everything a node reported, once it has stopped.
pub fn drain(events: &mut UnboundedReceiver<NodeEvent>) -> Vec<NodeEvent> {
    let mut all = Vec::new();
    while let Ok(event) = events.try_recv() {
        all.push(event);
    }
    all
}

/// The (state, config) each `RoundStarted` event carried, by round (the last one wins when a
/// round was handed out twice).
pub fn rounds_started(
    events: &[NodeEvent],
) -> std::collections::BTreeMap<u64, (Arc<GlobalState>, TrainingConfig)> {
    events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::RoundStarted {
                round,
                state,
                config,
            } => Some((*round, (Arc::clone(state), config.clone()))),
            _ => None,
        })
        .collect()
}

/// The accepted updates a node sent, by round.
pub fn accepted_updates(
    events: &[NodeEvent],
) -> std::collections::BTreeMap<u64, Arc<ClientUpdate>> {
    events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::UpdateSent {
                round,
                update,
                outcome: mpcl_client::UpdateOutcome::Accepted,
            } => Some((*round, Arc::clone(update))),
            _ => None,
        })
        .collect()
}

/// The masked updates a node had in each round's sum under secure aggregation, by round (the
/// last one wins when a round was restarted).
pub fn masked_updates(events: &[NodeEvent]) -> std::collections::BTreeMap<u64, Arc<ClientUpdate>> {
    events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::MaskedInputSent { round, update } => Some((*round, Arc::clone(update))),
            _ => None,
        })
        .collect()
}

/// The state a round must produce from `previous` and the accepted `updates` under FedAvg with
/// prototype blend `blend`, recomputed independently of the coordinator's aggregator (in f64).
pub fn expected_state(
    previous: &GlobalState,
    updates: &[&ClientUpdate],
    blend: f64,
) -> GlobalState {
    let mut next = previous.clone();
    // Encoder: previous + sample-weighted mean of the deltas.
    let total: f64 = updates.iter().map(|u| u.sample_count as f64).sum();
    let base = previous.parameters.to_flat();
    let mut flat: Vec<f64> = base.iter().map(|v| f64::from(*v)).collect();
    for update in updates {
        let weight = update.sample_count as f64 / total;
        for (value, delta) in flat.iter_mut().zip(update.delta.to_flat()) {
            *value += weight * f64::from(delta);
        }
    }
    let flat: Vec<f32> = flat.iter().map(|v| *v as f32).collect();
    next.parameters = previous.parameters.with_flat(&flat).expect("same layout");
    // Prototype banks: blend * previous + (1 - blend) * sum S / sum W where sum W > 0.
    for bank in &mut next.prototypes {
        let width = bank.width.max(1);
        let (sum, weight) = summed_prototypes(updates, &bank.group, bank.values.len(), width);
        let rows = bank.values.0.chunks_mut(width).zip(sum.chunks(width));
        for ((values, sums), w) in rows.zip(&weight) {
            if *w > 0.0 {
                for (value, s) in values.iter_mut().zip(sums) {
                    *value = (blend * f64::from(*value) + (1.0 - blend) * s / w) as f32;
                }
            }
        }
    }
    // Co-occurrence: this round's merged statistics replace the previous ones.
    let mut sum = vec![0.0f64; next.cooccurrence.sum.len()];
    let mut count = 0.0;
    for update in updates {
        for (s, v) in sum.iter_mut().zip(&update.cooccurrence.sum.0) {
            *s += f64::from(*v);
        }
        count += update.cooccurrence.count;
    }
    next.cooccurrence.sum.0 = sum.iter().map(|v| *v as f32).collect();
    next.cooccurrence.count = count;
    next
}

/// The summed prototype statistics (S of `values` numbers, W per row of `width`) of `group`.
pub fn summed_prototypes(
    updates: &[&ClientUpdate],
    group: &str,
    values: usize,
    width: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0.0f64; values];
    let mut weight = vec![0.0f64; values / width.max(1)];
    for update in updates {
        let stats = update
            .prototypes
            .iter()
            .find(|s| s.group == group)
            .expect("statistics for every group");
        for (s, v) in sum.iter_mut().zip(&stats.sum.0) {
            *s += f64::from(*v);
        }
        for (w, v) in weight.iter_mut().zip(&stats.weight.0) {
            *w += f64::from(*v);
        }
    }
    (sum, weight)
}

/// Largest absolute difference between two global states' numbers (parameters, banks,
/// co-occurrence); `None` when their layouts differ.
pub fn max_state_difference(a: &GlobalState, b: &GlobalState) -> Option<f64> {
    if a.parameters.check_same_layout(&b.parameters).is_err()
        || a.prototypes.len() != b.prototypes.len()
        || a.cooccurrence.sum.len() != b.cooccurrence.sum.len()
    {
        return None;
    }
    let mut worst = 0.0f64;
    let mut compare = |x: &[f32], y: &[f32]| {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((f64::from(*p) - f64::from(*q)).abs());
        }
    };
    compare(&a.parameters.to_flat(), &b.parameters.to_flat());
    for (x, y) in a.prototypes.iter().zip(&b.prototypes) {
        if x.values.len() != y.values.len() {
            return None;
        }
        compare(&x.values.0, &y.values.0);
    }
    compare(&a.cooccurrence.sum.0, &b.cooccurrence.sum.0);
    worst = worst.max((a.cooccurrence.count - b.cooccurrence.count).abs());
    Some(worst)
}

/// Waits for a task with a timeout, turning a timeout or a panic into an error.
pub async fn join<T>(task: JoinHandle<T>, within: Duration, what: &str) -> anyhow::Result<T> {
    tokio::time::timeout(within, task)
        .await
        .with_context(|| format!("{what} did not finish within {within:?}"))?
        .with_context(|| format!("{what} panicked"))
}
