//! The networked execution mode of `mpcl simulate --network`: the coordinator is the real QUIC
//! server ([`mpcl_coordinator::server`]) on 127.0.0.1, and every participant is a real
//! `mpcl client` process talking to it over QUIC with TLS, signed updates and all.
//!
//! Both modes drive the same state machine with the same inputs, so they give identical numbers:
//! - each participant's key is [`simulation_signing_key`] of the run seed and its index, and its
//!   participant id is that key's public half in both modes, so cohort sampling and the
//!   per-participant training seeds agree;
//! - each client process reads its training split from a bit-exact snapshot
//!   ([`mpcl_data::snapshot`]) written here;
//! - the run id is [`run_id_from_seed`], and aggregation does not depend on the order in which
//!   updates arrive ([`mpcl_coordinator::exact_sum`]).
//!
//! The working folder keeps what a user would look at after a failure: the coordinator's
//! checkpoint and round log (`coordinator/`), and each client's log (`clients/NNN/client.log`).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mpcl_client::ParticipantSettings;
use mpcl_coordinator::evaluation::FederatedMetrics;
use mpcl_coordinator::server::{NetworkSettings, Server, ServerError, ServerSetup};
use mpcl_coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
use mpcl_data::Dataset;
use mpcl_data::ModelConfig;
use mpcl_data::snapshot::write_snapshot;
use mpcl_model::DeviceChoice;
use mpcl_protocol::identity::{IdentityError, Participant as Enrolled, public_key_hex};
use mpcl_protocol::messages::GlobalState;
use mpcl_protocol::{Enrolment, NodeIdentity};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::federation::{RoundOutcome, run_id_from_seed};
use crate::secure::simulation_signing_key;

/// How long the client processes may take to leave after the run finished.
const CLIENT_EXIT_GRACE: Duration = Duration::from_secs(30);
/// How often the driver looks at the client processes while waiting for a round.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// What the networked mode needs besides the simulation's config.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// The `mpcl` executable the client processes run (`mpcl client ...`).
    pub client_program: PathBuf,
}

/// Errors of a networked federation, each naming the file, process or participant at fault.
#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the dataset snapshot of subject `{subject}`: {source}")]
    Snapshot {
        subject: String,
        source: Box<mpcl_data::ReadError>,
    },
    #[error("participant keys: {0}")]
    Keys(#[from] IdentityError),
    #[error("enrolment: {0}")]
    Enrolment(String),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("coordinator server: {0}")]
    Server(#[from] ServerError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start client process `{program}`: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the client process of subject `{subject}` exited with {status} during the run; its log is {}:\n{tail}",
        log.display()
    )]
    ClientFailed {
        subject: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("the coordinator stopped after {completed} of {total} rounds without finishing")]
    Unfinished { completed: u64, total: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// One networked federated run: prepares keys, enrolment and data snapshots in `work_dir`,
/// serves the coordinator, runs one `mpcl client` process per subject of `train_set` (in order
/// of first appearance), and calls `on_round` after each aggregated round. With `evaluation`
/// (pooled validation and test samples) each client process gets its subject's samples of them
/// as `--validation-data` and `--test-data` (federated evaluation). Returns the final global
/// state, why the run stopped early (the privacy budget) if it did, and the coordinator's
/// federated metrics of every evaluated global model.
#[allow(clippy::too_many_arguments)]
pub fn run_network_federation<E: From<NetworkError>>(
    train_set: &Dataset,
    evaluation: Option<(&Dataset, &Dataset)>,
    model_config: &ModelConfig,
    settings: &ParticipantSettings,
    config: CoordinatorConfig,
    initial: GlobalState,
    device: DeviceChoice,
    deterministic_noise: bool,
    options: &NetworkOptions,
    work_dir: &Path,
    mut on_round: impl FnMut(&RoundOutcome) -> Result<(), E>,
) -> Result<(GlobalState, Option<String>, Vec<FederatedMetrics>), E> {
    let total_rounds = config.rounds;
    let seed = config.seed;
    let prepared = prepare(train_set, evaluation, seed, work_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(NetworkError::Runtime)?;
    let mut coordinator =
        Coordinator::new(config, run_id_from_seed(seed), initial).map_err(NetworkError::from)?;
    if deterministic_noise {
        coordinator.use_deterministic_noise_for_tests(seed);
    }
    let setup = ServerSetup {
        coordinator,
        identity: prepared.coordinator_identity,
        enrolment: prepared.enrolment,
        model_config: model_config.clone(),
        schema: train_set.schema.clone(),
        network: NetworkSettings {
            // Clients waiting between rounds ask again soon: a simulation should not idle.
            poll_interval_ms: 100,
            finish_grace_secs: 5.0,
            ..NetworkSettings::default()
        },
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        out_dir: work_dir.join("coordinator"),
    };
    let (server, mut rounds) = runtime
        .block_on(async {
            let mut server = Server::bind(setup)?;
            let rounds = server.observe_rounds();
            Ok::<_, ServerError>((server, rounds))
        })
        .map_err(NetworkError::from)?;
    let address = server.local_addr();
    let shutdown = CancellationToken::new();
    let server_task = runtime.spawn(server.run(shutdown.clone()));

    let mut clients = ClientProcesses::default();
    let spawned = prepared.clients.iter().try_for_each(|client| {
        clients.spawn(
            client,
            options,
            address,
            &prepared.coordinator_key,
            device,
            settings,
        )
    });
    let driven = spawned.map_err(E::from).and_then(|()| {
        loop {
            let next = runtime
                .block_on(async { tokio::time::timeout(WATCH_INTERVAL, rounds.recv()).await });
            match next {
                Ok(Some(round)) => {
                    let outcome = RoundOutcome {
                        round: round.summary.round,
                        state: round.state.as_ref().clone(),
                        participants: round.summary.contributors.len(),
                        bytes_down: round.traffic.bytes_out.unwrap_or(0),
                        bytes_up: round.traffic.bytes_in.unwrap_or(0),
                        seconds: round.traffic.wall_seconds.unwrap_or(0.0),
                        mean_train_loss: round.summary.mean_train_loss.unwrap_or(f64::NAN),
                        updates: Vec::new(),
                        privacy: round.summary.privacy.clone(),
                    };
                    on_round(&outcome)?;
                }
                // The server stopped: the run is over (or failed; its task says which).
                Ok(None) => break Ok(()),
                Err(_elapsed) => clients.check().map_err(E::from)?,
            }
        }
    });
    if driven.is_err() {
        shutdown.cancel();
    }
    let served = runtime.block_on(server_task);
    let finished = clients.wait_for_exit(CLIENT_EXIT_GRACE);
    driven?;
    let outcome = served
        .map_err(|e| NetworkError::Internal(format!("the coordinator task failed: {e}")))?
        .map_err(NetworkError::from)?;
    finished?;
    let stopped = (outcome.completed_rounds < total_rounds).then(|| {
        format!(
            "stopped after {} of {total_rounds} rounds (privacy budget)",
            outcome.completed_rounds
        )
    });
    if !outcome.finished {
        return Err(NetworkError::Unfinished {
            completed: outcome.completed_rounds,
            total: total_rounds,
        }
        .into());
    }
    Ok((
        outcome.global.as_ref().clone(),
        stopped,
        outcome.evaluations,
    ))
}

/// What [`prepare`] wrote.
struct Prepared {
    coordinator_identity: NodeIdentity,
    coordinator_key: PathBuf,
    enrolment: Enrolment,
    clients: Vec<ClientFiles>,
}

/// One client's files.
struct ClientFiles {
    subject: String,
    key_dir: PathBuf,
    snapshot: PathBuf,
    /// Validation and test snapshots (federated evaluation).
    evaluation: Option<(PathBuf, PathBuf)>,
    log: PathBuf,
}

/// Writes the keys (the participants' derived from the seed, see the module docs), the
/// coordinator's public key and one training snapshot per subject. `work_dir` is emptied first:
/// it belongs to this run.
fn prepare(
    train_set: &Dataset,
    evaluation: Option<(&Dataset, &Dataset)>,
    seed: u64,
    work_dir: &Path,
) -> Result<Prepared, NetworkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NetworkError::Write { path, source }
    };
    if work_dir.exists() {
        std::fs::remove_dir_all(work_dir).map_err(io(work_dir))?;
    }
    let clients_dir = work_dir.join("clients");
    std::fs::create_dir_all(&clients_dir).map_err(io(&clients_dir))?;

    let coordinator_identity = NodeIdentity::generate(Some("coordinator"))?;
    let coordinator_key = work_dir.join("coordinator_public_key.hex");
    std::fs::write(
        &coordinator_key,
        format!("{}\n", public_key_hex(&coordinator_identity.public_key())),
    )
    .map_err(io(&coordinator_key))?;

    let mut enrolled = Vec::new();
    let mut clients = Vec::new();
    for (index, subject) in train_set.subjects().into_iter().enumerate() {
        let dir = clients_dir.join(format!("{index:03}"));
        let key_dir = dir.join("key");
        let identity = NodeIdentity::from_signing_key(
            Some(&format!("client-{index:03}")),
            simulation_signing_key(seed, index as u64),
        )?;
        identity.save_new(&key_dir)?;
        enrolled.push(Enrolled {
            id: identity.id().to_string(),
            public_key: identity.public_key(),
        });
        let write = |data: &Dataset, name: &str| {
            let path = dir.join(name);
            write_snapshot(&data.subject_subset(&subject), &path)
                .map(|()| path)
                .map_err(|source| NetworkError::Snapshot {
                    subject: subject.clone(),
                    source: Box::new(source),
                })
        };
        let snapshot = write(train_set, "train.json")?;
        let evaluation = match evaluation {
            Some((validation, test)) => Some((
                write(validation, "validation.json")?,
                write(test, "test.json")?,
            )),
            None => None,
        };
        clients.push(ClientFiles {
            subject,
            key_dir,
            snapshot,
            evaluation,
            log: dir.join("client.log"),
        });
    }
    let enrolment = Enrolment::from_participants(enrolled)
        .map_err(|e| NetworkError::Enrolment(e.to_string()))?;
    Ok(Prepared {
        coordinator_identity,
        coordinator_key,
        enrolment,
        clients,
    })
}

/// The running client processes; killed when dropped, so that no process outlives a failed run.
#[derive(Default)]
struct ClientProcesses {
    running: Vec<(Child, String, PathBuf)>,
}

impl ClientProcesses {
    fn spawn(
        &mut self,
        client: &ClientFiles,
        options: &NetworkOptions,
        address: SocketAddr,
        coordinator_key: &Path,
        device: DeviceChoice,
        settings: &ParticipantSettings,
    ) -> Result<(), NetworkError> {
        let log = File::create(&client.log).map_err(|source| NetworkError::Write {
            path: client.log.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| NetworkError::Write {
            path: client.log.clone(),
            source,
        })?;
        let child = Command::new(&options.client_program)
            .arg("client")
            .arg("--coordinator")
            .arg(address.to_string())
            .arg("--coordinator-key")
            .arg(coordinator_key)
            .arg("--key")
            .arg(&client.key_dir)
            .arg("--data")
            .arg(format!("snapshot:{}", client.snapshot.display()))
            .args(client.evaluation.iter().flat_map(|(validation, test)| {
                [
                    "--validation-data".to_string(),
                    format!("snapshot:{}", validation.display()),
                    "--test-data".to_string(),
                    format!("snapshot:{}", test.display()),
                ]
            }))
            .arg("--device")
            .arg(device.to_string())
            .arg("--min-prototype-mass")
            .arg(settings.min_prototype_mass.to_string())
            .arg("--give-up-after-secs")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| NetworkError::Spawn {
                program: options.client_program.clone(),
                source,
            })?;
        self.running
            .push((child, client.subject.clone(), client.log.clone()));
        Ok(())
    }

    /// An error for the first client process that exited unsuccessfully.
    fn check(&mut self) -> Result<(), NetworkError> {
        for (child, subject, log) in &mut self.running {
            if let Ok(Some(status)) = child.try_wait()
                && !status.success()
            {
                return Err(NetworkError::ClientFailed {
                    subject: subject.clone(),
                    status,
                    log: log.clone(),
                    tail: log_tail(log),
                });
            }
        }
        Ok(())
    }

    /// Waits up to `grace` for every process to exit, then kills the rest; an error for the
    /// first that failed.
    fn wait_for_exit(&mut self, grace: Duration) -> Result<(), NetworkError> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && self
                .running
                .iter_mut()
                .any(|(child, _, _)| matches!(child.try_wait(), Ok(None)))
        {
            std::thread::sleep(WATCH_INTERVAL);
        }
        let result = self.check();
        self.kill_all();
        result
    }

    fn kill_all(&mut self) {
        for (child, _, _) in &mut self.running {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.running.clear();
    }
}

impl Drop for ClientProcesses {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The last lines of a client's log, for the error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
