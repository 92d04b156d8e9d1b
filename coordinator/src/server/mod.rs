//! The QUIC server around the round state machine: a thin async layer that turns connections
//! and requests into [`Event`](crate::round::Event)s and the resulting actions into replies,
//! timers, checkpoints and round-log lines.
//!
//! - **Who gets in.** TLS 1.3 with client certificates ([`mpcl_protocol::tls::server_config`]):
//!   only enrolled ed25519 keys complete the handshake. The key that authenticated the
//!   connection is the participant's [`ParticipantId`]; its first request must be a `Hello`
//!   naming the same participant.
//! - **Transport.** One UDP endpoint: its socket's receive buffer ([`udp_socket`]), datagrams up
//!   to [`mpcl_protocol::MAX_UDP_PAYLOAD_BYTES`] where the path allows ([`endpoint_config`]),
//!   keep-alives and stream limits from [`NetworkSettings`] ([`transport_config`]).
//! - **Conversation.** One request per bidirectional stream (see [`mpcl_protocol::messages`]).
//!   Requests are read with the run's [`MessageLimits`] (computed from the model); a frame larger
//!   than [`MessageLimits::CONTROL`] (an update) must first get one of
//!   [`NetworkSettings::max_concurrent_uploads`] permits, so that concurrent uploads cannot
//!   exhaust memory. Updates are verified ([`UpdateVerifier`]: enrolled signer, same key as the
//!   connection, signature, run, payload) before the state machine sees them; the state machine
//!   alone decides whether the round, the participant and the values are acceptable.
//! - **State.** One actor task ([`actor`]) owns the [`Coordinator`]; nothing holds it across a
//!   network await. It writes checkpoints atomically ([`crate::checkpoint::write_checkpoint`])
//!   and appends the round log before the clients hear about the next round.
//! - **Stopping.** After the last round the server keeps answering `Finished` until every
//!   participant has left or [`NetworkSettings::finish_grace_secs`] passed. Cancelling the
//!   shutdown token writes a checkpoint and closes every connection; [`resume_coordinator`] picks
//!   the run up again from the output folder.
//!
//! Every log line about a peer carries its participant id (`participant` field).

mod actor;
pub mod live;
mod quic;
pub mod run_file;

use mpcl_data::{ModelConfig, Schema};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mpcl_protocol::codec::{self, CodecError, MessageLimits, PROTOCOL_VERSION};
use mpcl_protocol::framing::{self, FRAME_HEADER_BYTES};
use mpcl_protocol::messages::{
    ClientMessage, CoordinatorMessage, EvaluationSplit, GlobalState, RunId, Welcome,
};
use mpcl_protocol::start_round::SplicedPayload;
use mpcl_protocol::tls::{TlsError, peer_public_key_from_identity};
use mpcl_protocol::{DeltaLayout, Enrolment, NodeIdentity, UpdateVerifier};
use quinn::crypto::rustls::QuicServerConfig;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::checkpoint::{CheckpointError, read_latest_checkpoint, write_checkpoint};
use crate::config::CoordinatorConfig;
use crate::evaluation::FederatedMetrics;
use crate::round::{Coordinator, CoordinatorError, ParticipantId, RoundSummary};
use crate::round_log::{RoundLog, RoundLogError, RoundTraffic};

use actor::{Actor, Command, Polling, Traffic, WorkReply};
pub use run_file::{NetworkSettings, RunFile, RunFileError};

pub use live::{LiveParticipant, LivePhase, LiveStatus};
pub use quic::{endpoint_config, transport_config, udp_socket};

/// File name of the checkpoint in the output folder (its previous copy is
/// `checkpoint.prev.bin`).
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// File name of the best round's state (lowest federated validation KL), kept as a checkpoint
/// of that round beside the latest (runs with federated evaluation only).
pub const BEST_CHECKPOINT_FILE: &str = "checkpoint.best.bin";
/// File name of the per-round JSON-lines log in the output folder.
pub const ROUND_LOG_FILE: &str = "rounds.jsonl";

use mpcl_protocol::close_code::{CLOSE_FINISHED, CLOSE_PROTOCOL, CLOSE_REPLACED, CLOSE_SHUTDOWN};

/// How long shutdown waits for connections to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The checkpoint path inside an output folder.
pub fn checkpoint_path(out_dir: &Path) -> PathBuf {
    out_dir.join(CHECKPOINT_FILE)
}

/// Errors of the server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// quinn refused the TLS configuration.
    #[error("the TLS configuration does not suit QUIC: {0}")]
    Quic(String),
    /// A network setting is out of range.
    #[error("invalid network settings: {0}")]
    Settings(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The output folder could not be prepared.
    #[error("cannot use output folder {}: {source}", path.display())]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The round log could not be opened.
    #[error(transparent)]
    RoundLog(#[from] RoundLogError),
    /// The checkpoint does not make a coordinator.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// `--resume` found no checkpoint.
    #[error("nothing to resume: no checkpoint in {}", path.display())]
    NothingToResume { path: PathBuf },
    /// A bug (a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Everything a server needs.
pub struct ServerSetup {
    /// The state machine, new ([`Coordinator::new`]) or resumed ([`resume_coordinator`]).
    pub coordinator: Coordinator,
    /// The coordinator's own key (its TLS certificate; clients pin its public key).
    pub identity: NodeIdentity,
    /// Who may connect.
    pub enrolment: Enrolment,
    /// The network's configuration, sent in `Welcome`.
    pub model_config: ModelConfig,
    /// The dataset schema, sent in `Welcome`.
    pub schema: Schema,
    /// Transport settings.
    pub network: NetworkSettings,
    /// Address to listen on (port 0 picks a free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Folder for the checkpoint and the round log (created if missing).
    pub out_dir: PathBuf,
}

/// One aggregated round, as an observer of the server sees it ([`Server::observe_rounds`]).
#[derive(Clone, Debug)]
pub struct AggregatedRound {
    /// The round's summary (what the round log records).
    pub summary: RoundSummary,
    /// The new global state.
    pub state: Arc<GlobalState>,
    /// Wall time and bytes of the round.
    pub traffic: RoundTraffic,
    /// The federated evaluation this round's participants made of the model they received (the
    /// one after the previous round), when the round evaluated.
    pub evaluated: Option<FederatedMetrics>,
}

/// How a server run ended.
#[derive(Clone, Debug)]
pub struct ServerOutcome {
    /// Whether every round was aggregated (false: stopped by the shutdown token).
    pub finished: bool,
    /// Rounds aggregated so far.
    pub completed_rounds: u64,
    /// The global state after the last completed round.
    pub global: Arc<GlobalState>,
    /// Summaries of the completed rounds.
    pub history: Vec<RoundSummary>,
    /// Federated metrics of every evaluated global model, in round order.
    pub evaluations: Vec<FederatedMetrics>,
    /// The run id.
    pub run_id: RunId,
}

/// What connection tasks share.
struct Shared {
    enrolment: Enrolment,
    run_id: RunId,
    total_rounds: u64,
    limits: MessageLimits,
    verifier: UpdateVerifier,
    model_config: ModelConfig,
    schema: Schema,
    /// How participants split their data for federated evaluation (sent in `Welcome`).
    evaluation: Option<EvaluationSplit>,
    uploads: Semaphore,
    request_timeout: Duration,
    commands: mpsc::Sender<Command>,
    traffic: Arc<Traffic>,
    shutdown: CancellationToken,
    /// Per participant, the connection that last asked for work (see [`claim_worker`]).
    workers: std::sync::Mutex<std::collections::HashMap<ParticipantId, quinn::Connection>>,
}

impl Shared {
    /// The `Welcome` for `participant_id`, whose messages may be up to `max_message_bytes`.
    fn welcome(
        &self,
        participant_id: &str,
        max_message_bytes: usize,
        current_round: u64,
    ) -> CoordinatorMessage {
        CoordinatorMessage::Welcome(Box::new(Welcome {
            run_id: self.run_id,
            protocol_version: PROTOCOL_VERSION,
            participant_id: participant_id.to_string(),
            max_message_bytes: max_message_bytes as u64,
            total_rounds: self.total_rounds,
            current_round,
            model_config: self.model_config.clone(),
            schema: self.schema.clone(),
            evaluation: self.evaluation,
        }))
    }
}

/// A bound, not yet running server.
pub struct Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    actor: Actor,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    /// Kept to build the live view's roster on request.
    enrolment: Enrolment,
}

/// A fresh random run id.
pub fn new_run_id() -> RunId {
    rand::random()
}

/// The message limits of a run whose global state is `state`.
pub fn limits_for_state(state: &GlobalState) -> MessageLimits {
    let prototype_values: usize = state.prototypes.iter().map(|b| b.values.len()).sum();
    MessageLimits::for_model(
        state.parameters.value_count(),
        prototype_values,
        state.cooccurrence.emotions,
    )
}

/// Refuses a run that could never start or finish with `enrolled` participants: a cohort
/// (`clients_per_round`), an aggregation minimum (`min_clients_to_aggregate`) or an
/// availability rule (`min_available_clients`) larger than the enrolment. The message gives
/// the numbers.
pub fn check_against_enrolment(config: &CoordinatorConfig, enrolled: usize) -> Result<(), String> {
    let rules = [
        ("clients_per_round", config.clients_per_round),
        (
            "min_clients_to_aggregate",
            Some(config.min_clients_to_aggregate),
        ),
        ("min_available_clients", config.min_available_clients),
    ];
    for (name, value) in rules {
        if let Some(value) = value
            && value > enrolled
        {
            return Err(format!(
                "`{name}` is {value} but only {enrolled} participant(s) are enrolled: the run \
                 would wait for participants forever (lower `{name}` to at most {enrolled}, or \
                 enrol more participants)"
            ));
        }
    }
    Ok(())
}

/// A coordinator resumed from the latest usable checkpoint in `out_dir` (falling back to the
/// previous copy, with a warning, when the latest is damaged). The round log is made to match
/// the checkpoint: lines of rounds after it are cut (they are redone), rounds it holds but the
/// log lacks are added from its history.
pub fn resume_coordinator(out_dir: &Path) -> Result<Coordinator, ServerError> {
    let path = checkpoint_path(out_dir);
    let loaded = read_latest_checkpoint(&path).map_err(|error| {
        if error.is_missing() {
            ServerError::NothingToResume {
                path: out_dir.to_path_buf(),
            }
        } else {
            ServerError::Checkpoint(error)
        }
    })?;
    if let Some(problem) = &loaded.primary_error {
        warn!(%problem, used = %loaded.path.display(), "latest checkpoint unusable; resuming from the previous copy");
    }
    info!(
        completed_rounds = loaded.checkpoint.completed_rounds,
        path = %loaded.path.display(),
        "resuming from checkpoint"
    );
    let log = out_dir.join(ROUND_LOG_FILE);
    let repair = crate::round_log::align_with_history(
        &log,
        &loaded.checkpoint.history,
        &loaded.checkpoint.evaluations,
    )?;
    if repair.removed > 0 || repair.added > 0 {
        warn!(
            removed = repair.removed,
            added = repair.added,
            log = %log.display(),
            completed_rounds = loaded.checkpoint.completed_rounds,
            "round log realigned with the checkpoint (rounds after it will be redone)"
        );
    }
    Ok(Coordinator::resume(loaded.checkpoint)?)
}

impl Server {
    /// Binds the UDP socket and prepares the output folder. Must be called inside a tokio
    /// runtime.
    pub fn bind(setup: ServerSetup) -> Result<Self, ServerError> {
        setup.network.validate().map_err(ServerError::Settings)?;
        let run = setup.coordinator.config();
        if run.privacy.secure_aggregation
            && run.round_deadline_secs as f64 <= 3.0 * setup.network.secure_step_timeout_secs
        {
            // The masked inputs are awaited until two step timeouts before the round's deadline;
            // a shorter round would leave no time to train.
            return Err(ServerError::Settings(format!(
                "round_deadline_secs ({}) must exceed 3 x network.secure_step_timeout_secs ({}) under privacy.secure_aggregation",
                run.round_deadline_secs, setup.network.secure_step_timeout_secs
            )));
        }
        check_against_enrolment(run, setup.enrolment.len()).map_err(ServerError::Settings)?;

        // Bind before writing anything: a port in use leaves the output folder untouched, so
        // that the same command works again once the port is free.
        let network = &setup.network;
        let tls = mpcl_protocol::tls::server_config(
            &setup.identity,
            setup
                .enrolment
                .public_keys()
                .chain(setup.enrolment.operator_keys()),
        )?;
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| ServerError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(network)?));
        let bind_error = |source| ServerError::Bind {
            addr: setup.listen,
            source,
        };
        let socket =
            udp_socket(setup.listen, network.udp_receive_buffer_bytes).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
            addr: setup.listen,
            source,
        })?;

        std::fs::create_dir_all(&setup.out_dir).map_err(|source| ServerError::OutDir {
            path: setup.out_dir.clone(),
            source,
        })?;
        let checkpoint = checkpoint_path(&setup.out_dir);
        if !checkpoint.exists() {
            // A run stopped before its first round can then still be resumed with its run id.
            write_checkpoint(&checkpoint, &setup.coordinator.checkpoint())?;
        }
        let round_log = RoundLog::open(setup.out_dir.join(ROUND_LOG_FILE))?;

        let coordinator = setup.coordinator;
        let run_id = coordinator.run_id();
        let limits = limits_for_state(coordinator.global_state());
        let traffic = Arc::new(Traffic::default());
        let (sender, commands) = mpsc::channel(256);
        let shared = Arc::new(Shared {
            // The layout lets the verifier decompress compressed deltas on receipt.
            verifier: UpdateVerifier::new(setup.enrolment.clone(), limits)
                .with_delta_layout(DeltaLayout::of(&coordinator.global_state().parameters)),
            enrolment: setup.enrolment.clone(),
            run_id,
            total_rounds: coordinator.config().rounds,
            limits,
            model_config: setup.model_config,
            schema: setup.schema,
            evaluation: coordinator.config().evaluation.split(),
            uploads: Semaphore::new(network.max_concurrent_uploads),
            request_timeout: network.request_timeout(),
            commands: sender,
            traffic: Arc::clone(&traffic),
            shutdown: CancellationToken::new(),
            workers: Default::default(),
        });
        let actor = Actor::new(
            coordinator,
            setup.enrolment.len(),
            checkpoint,
            Some(round_log),
            traffic,
            Polling {
                poll_interval_ms: network.poll_interval_ms,
                long_poll: network.long_poll(),
                limits,
            },
            network.finish_grace(),
            network.secure_step_timeout_ms(),
        );
        Ok(Self {
            endpoint,
            local_addr,
            actor,
            commands,
            shared,
            enrolment: setup.enrolment,
        })
    }

    /// The address actually bound (with the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every round aggregated from now on is also sent here (when its round-log line is written),
    /// for drivers that evaluate the global model as the run goes, such as
    /// `mpcl simulate --network`.
    pub fn observe_rounds(&mut self) -> mpsc::UnboundedReceiver<AggregatedRound> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.actor.set_observer(sender);
        receiver
    }

    /// A read-only view of the run that the actor keeps current (see [`live`]): what the live
    /// dashboard shows. Observers cannot block or change the run. Nothing is published unless
    /// this was called; call it once (a second call replaces the first view, which then stays
    /// at its last value).
    pub fn live_status(&mut self) -> tokio::sync::watch::Receiver<Arc<LiveStatus>> {
        let (publisher, receiver) =
            live::LivePublisher::new(&self.enrolment, self.actor.coordinator());
        self.actor.set_live(publisher);
        receiver
    }

    /// Serves until the run is finished or `shutdown` is cancelled (then a checkpoint is
    /// written first). Errors only when the state cannot be persisted or a task panicked.
    pub async fn run(self, shutdown: CancellationToken) -> Result<ServerOutcome, ServerError> {
        let Self {
            endpoint,
            local_addr,
            actor,
            commands,
            shared,
            ..
        } = self;
        info!(%local_addr, run_id = %hex(&shared.run_id), "coordinator listening");
        let actor_run = actor.run(commands, shutdown.clone());
        tokio::pin!(actor_run);
        let mut connections = JoinSet::new();
        let result = loop {
            tokio::select! {
                outcome = &mut actor_run => break outcome,
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => {
                        connections.spawn(serve_connection(incoming, Arc::clone(&shared)));
                    }
                    None => break Err(ServerError::Internal("the endpoint closed unexpectedly".into())),
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = joined && error.is_panic() {
                        error!(%error, "a connection task panicked");
                    }
                }
            }
        };
        // Stop every connection: the run is over or the coordinator is going away.
        shared.shutdown.cancel();
        let (code, reason): (u32, &[u8]) = match &result {
            Ok(outcome) if outcome.finished => (CLOSE_FINISHED, b"run finished"),
            _ => (CLOSE_SHUTDOWN, b"coordinator shutting down"),
        };
        endpoint.close(code.into(), reason);
        connections.shutdown().await;
        if tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("connections did not close within {CLOSE_WAIT:?}");
        }
        let outcome = result?;
        info!(
            finished = outcome.finished,
            completed_rounds = outcome.completed_rounds,
            "coordinator stopped"
        );
        Ok(ServerOutcome {
            finished: outcome.finished,
            completed_rounds: outcome.completed_rounds,
            global: outcome.global,
            history: outcome.history,
            evaluations: outcome.evaluations,
            run_id: shared.run_id,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Handshake, `Hello`, then one task per request until the connection closes.
async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            log_handshake_failure(remote, &error);
            return;
        }
    };
    let key = match connection
        .peer_identity()
        .as_deref()
        .ok_or(TlsError::NoPeerCertificate)
        .and_then(peer_public_key_from_identity)
    {
        Ok(key) => key,
        Err(error) => {
            warn!(participant = %"unknown", %remote, %error, "cannot read the peer's key; closing");
            connection.close(CLOSE_PROTOCOL.into(), b"no usable client certificate");
            return;
        }
    };
    if let Some(operator) = shared.enrolment.operator_by_key(&key).cloned() {
        let span = info_span!("operator", operator = %operator.id);
        return serve_operator(connection, shared, operator.id, key)
            .instrument(span)
            .await;
    }
    let Some(enrolled) = shared.enrolment.by_key(&key).cloned() else {
        // The TLS verifier admits only enrolled keys; this is a second fence.
        warn!(participant = %"unknown", %remote, "key not enrolled; closing");
        connection.close(CLOSE_PROTOCOL.into(), b"not enrolled");
        return;
    };
    let span = info_span!("peer", participant = %enrolled.id);
    async move {
        debug!(%remote, "connection established");
        let participant = ParticipantId(key.to_bytes());
        let admitted = serve_admitted(&connection, &shared, participant, &enrolled.id, key).await;
        release_worker(&shared, participant, &connection);
        if admitted {
            let _ = shared.commands.send(Command::Leave { participant }).await;
        }
        debug!(%remote, reason = ?connection.close_reason(), "connection ended");
    }
    .instrument(span)
    .await
}

fn log_handshake_failure(remote: SocketAddr, error: &quinn::ConnectionError) {
    let reason = match error {
        quinn::ConnectionError::TransportError(transport) => transport.reason.clone(),
        other => other.to_string(),
    };
    if let Some(fingerprint) = mpcl_protocol::tls::not_enrolled_fingerprint(&reason) {
        warn!(
            participant = %fingerprint,
            %remote,
            "refused a connection: key {fingerprint} is not in the enrolment file (to admit \
             this participant, add the [[participant]] lines its `mpcl keygen` printed to the \
             enrolment file and restart the coordinator with --resume)"
        );
        return;
    }
    warn!(
        participant = %"unauthenticated",
        %remote,
        %reason,
        "TLS handshake failed (unenrolled key, or the client refused this coordinator)"
    );
}

/// Serves an authenticated connection; returns whether the participant was admitted (and so
/// must be reported as gone).
async fn serve_admitted(
    connection: &quinn::Connection,
    shared: &Arc<Shared>,
    participant: ParticipantId,
    name: &str,
    key: mpcl_protocol::VerifyingKey,
) -> bool {
    // The first stream must be a Hello.
    let (mut send, mut recv) = tokio::select! {
        () = shared.shutdown.cancelled() => return false,
        stream = connection.accept_bi() => match stream {
            Ok(stream) => stream,
            Err(error) => {
                debug!(%error, "connection closed before Hello");
                return false;
            }
        },
    };
    let hello = tokio::time::timeout(
        shared.request_timeout,
        framing::read_message::<_, ClientMessage>(&mut recv, &MessageLimits::CONTROL),
    )
    .await;
    let reply = match hello {
        Ok(Ok(ClientMessage::Hello {
            participant_id,
            protocol_version,
        })) => {
            if protocol_version != PROTOCOL_VERSION {
                Err(format!(
                    "protocol version {protocol_version} is not supported (this coordinator speaks {PROTOCOL_VERSION})"
                ))
            } else if participant_id != name {
                Err(format!(
                    "Hello names participant `{participant_id}` but the connection is authenticated as `{name}`"
                ))
            } else {
                Ok(())
            }
        }
        Ok(Ok(other)) => Err(format!("expected Hello first, got {}", other.kind())),
        Ok(Err(error)) => Err(format!("unreadable Hello: {error}")),
        Err(_) => Err(format!("no Hello within {:?}", shared.request_timeout)),
    };
    if let Err(reason) = reply {
        warn!(%reason, "refused Hello; closing");
        let _ = send_reply(
            &mut send,
            &CoordinatorMessage::Error { reason },
            &MessageLimits::CONTROL,
            shared,
        )
        .await;
        let _ = tokio::time::timeout(CLOSE_WAIT, send.stopped()).await;
        connection.close(CLOSE_PROTOCOL.into(), b"bad hello");
        return false;
    }
    let (reply_to, current) = oneshot::channel();
    if shared
        .commands
        .send(Command::Admit {
            participant,
            name: name.to_string(),
            reply: reply_to,
        })
        .await
        .is_err()
    {
        return false;
    }
    let Ok(current_round) = current.await else {
        return false;
    };
    let welcome = shared.welcome(name, shared.limits.max_message_bytes, current_round);
    if let Err(error) = send_reply(&mut send, &welcome, &MessageLimits::CONTROL, shared).await {
        debug!(%error, "cannot send Welcome");
    }
    info!("participant admitted");

    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let shared = Arc::clone(shared);
                    requests.spawn(
                        serve_request(send, recv, shared, participant, key, connection.clone())
                            .instrument(tracing::Span::current()),
                    );
                }
                Err(error) => {
                    debug!(%error, "connection closed");
                    // Requests still in flight fail at once on a closed connection; let them
                    // finish so that each logs what happened to it (an upload cut off halfway).
                    while let Some(joined) = requests.join_next().await {
                        if let Err(error) = joined && error.is_panic() {
                            error!(%error, "a request task panicked");
                        }
                    }
                    break;
                }
            },
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                if let Err(error) = joined && error.is_panic() {
                    error!(%error, "a request task panicked");
                }
            }
        }
    }
    requests.shutdown().await;
    true
}

/// Reads one request, answers it, finishes the stream.
async fn serve_request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    participant: ParticipantId,
    key: mpcl_protocol::VerifyingKey,
    connection: quinn::Connection,
) {
    let read = tokio::time::timeout(
        shared.request_timeout,
        read_request(&mut recv, &shared.limits, &shared.uploads),
    )
    .await;
    let (request, _permit) = match read {
        Ok(Ok((request, bytes, permit))) => {
            shared
                .traffic
                .bytes_in
                .fetch_add(bytes as u64, Ordering::Relaxed);
            (request, permit)
        }
        Ok(Err(CodecError::Closed)) => {
            debug!("stream closed without a request");
            return;
        }
        Ok(Err(error @ CodecError::Io { .. })) => {
            // The stream or the connection ended before the whole request arrived (for example
            // an upload cut off by a network drop); nothing of it is used.
            warn!(reason = %error, "request cut off before it was complete; discarded");
            let _ = recv.stop(0u32.into());
            return;
        }
        Ok(Err(error)) => {
            warn!(reason = %error, "rejected request: unreadable frame");
            let _ = recv.stop(0u32.into());
            let reply = CoordinatorMessage::Error {
                reason: format!("unreadable request: {error}"),
            };
            let _ = send_reply(&mut send, &reply, &MessageLimits::CONTROL, &shared).await;
            return;
        }
        Err(_) => {
            warn!(timeout = ?shared.request_timeout, "rejected request: not received in time");
            let _ = recv.stop(0u32.into());
            let reply = CoordinatorMessage::Error {
                reason: format!("request not received within {:?}", shared.request_timeout),
            };
            let _ = send_reply(&mut send, &reply, &MessageLimits::CONTROL, &shared).await;
            return;
        }
    };
    let kind = request.kind();
    let reply = match request {
        ClientMessage::Hello { .. } => CoordinatorMessage::Error {
            reason: "Hello was already received on this connection".into(),
        },
        ClientMessage::Goodbye => {
            info!("participant said goodbye");
            CoordinatorMessage::Goodbye
        }
        ClientMessage::RequestWork { .. } => {
            claim_worker(&shared, participant, &connection);
            let (reply, answer) = oneshot::channel();
            let answer = match shared
                .commands
                .send(Command::RequestWork { participant, reply })
                .await
            {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            match answer {
                Some(WorkReply::StartRound(payload)) => {
                    debug!(request = kind, reply = "StartRound", "answered");
                    if let Err(error) = send_spliced_reply(&mut send, &payload, &shared).await {
                        warn!(%error, request = kind, "cannot send the reply");
                    }
                    return;
                }
                Some(WorkReply::Message(message)) => message,
                None => shutting_down(),
            }
        }
        ClientMessage::StatusRequest => {
            ask(&shared, |reply| Command::Status { participant, reply }).await
        }
        ClientMessage::RequestFinalModel => {
            ask(&shared, |reply| Command::FinalModel { participant, reply }).await
        }
        ClientMessage::SecureAggregation {
            round,
            nonce,
            upload,
        } => {
            ask(&shared, |reply| Command::SecureAggregation {
                participant,
                round,
                nonce,
                upload: Box::new(upload),
                reply,
            })
            .await
        }
        ClientMessage::Update(signed) => {
            let round = signed.round;
            match shared.verifier.verify(&signed, Some(&key)) {
                Ok(verified) => {
                    ask(&shared, |reply| Command::Update {
                        participant,
                        update: Box::new(verified.update),
                        reply,
                    })
                    .await
                }
                Err(error) => {
                    warn!(round, reason = %error, "rejected update");
                    CoordinatorMessage::UpdateRejected {
                        round,
                        reason: error.reject_reason(),
                    }
                }
            }
        }
    };
    debug!(request = kind, reply = reply.kind(), "answered");
    if let Err(error) = send_reply(&mut send, &reply, &shared.limits, &shared).await {
        warn!(%error, request = kind, "cannot send the reply");
    }
}

/// Records `connection` as the one `participant` works on. Another connection that asked for
/// work with the same key before is closed with [`CLOSE_REPLACED`]: two clients started with
/// one key would otherwise both train and one's updates be rejected as duplicates every round.
/// The newer one wins, so that a client restarted after a crash is never locked out by the
/// connection its dead predecessor left behind. Status queries never ask for work and so never
/// replace anything.
fn claim_worker(shared: &Shared, participant: ParticipantId, connection: &quinn::Connection) {
    let previous = {
        let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
        match workers.get(&participant) {
            Some(current) if current.stable_id() == connection.stable_id() => None,
            _ => workers.insert(participant, connection.clone()),
        }
    };
    if let Some(previous) = previous {
        warn!(
            old_remote = %previous.remote_address(),
            new_remote = %connection.remote_address(),
            "participant connected again with the same key: closing its older connection (run \
             one client per key)"
        );
        previous.close(
            CLOSE_REPLACED.into(),
            b"replaced by a newer connection with the same key",
        );
    }
}

/// Forgets `connection` as `participant`'s working connection when it ends.
fn release_worker(shared: &Shared, participant: ParticipantId, connection: &quinn::Connection) {
    let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
    if workers
        .get(&participant)
        .is_some_and(|c| c.stable_id() == connection.stable_id())
    {
        workers.remove(&participant);
    }
}

/// Serves an operator's connection: read-only. `Hello` (naming the operator) gets a `Welcome`,
/// `StatusRequest` the run's status; anything else (work, updates, secure aggregation) closes
/// the connection with [`CLOSE_PROTOCOL`] and a reason saying why, and the operator never counts
/// as a participant.
async fn serve_operator(
    connection: quinn::Connection,
    shared: Arc<Shared>,
    name: String,
    key: mpcl_protocol::VerifyingKey,
) {
    // The actor answers status queries for any id; an operator's has no accepted updates.
    let id = ParticipantId(key.to_bytes());
    let mut greeted = false;
    loop {
        let (mut send, mut recv) = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(error) => {
                    debug!(%error, "operator connection closed");
                    return;
                }
            },
        };
        let request = tokio::time::timeout(
            shared.request_timeout,
            framing::read_message::<_, ClientMessage>(&mut recv, &MessageLimits::CONTROL),
        )
        .await;
        let reply = match request {
            Ok(Ok(ClientMessage::Hello {
                participant_id,
                protocol_version,
            })) if !greeted => {
                if protocol_version != PROTOCOL_VERSION || participant_id != name {
                    warn!(%participant_id, protocol_version, "refused operator Hello; closing");
                    let _ = send_reply(
                        &mut send,
                        &CoordinatorMessage::Error {
                            reason: format!(
                                "Hello names `{participant_id}` (protocol {protocol_version}) but \
                                 the connection is authenticated as operator `{name}` (protocol \
                                 {PROTOCOL_VERSION})"
                            ),
                        },
                        &MessageLimits::CONTROL,
                        &shared,
                    )
                    .await;
                    let _ = tokio::time::timeout(CLOSE_WAIT, send.stopped()).await;
                    connection.close(CLOSE_PROTOCOL.into(), b"bad hello");
                    return;
                }
                greeted = true;
                let current_round = match ask(&shared, |reply| Command::Status {
                    participant: id,
                    reply,
                })
                .await
                {
                    CoordinatorMessage::Status(report) => report.round,
                    _ => 0,
                };
                info!("operator connected (read-only)");
                shared.welcome(
                    &name,
                    MessageLimits::CONTROL.max_message_bytes,
                    current_round,
                )
            }
            Ok(Ok(ClientMessage::StatusRequest)) if greeted => {
                ask(&shared, |reply| Command::Status {
                    participant: id,
                    reply,
                })
                .await
            }
            Ok(Ok(ClientMessage::Goodbye)) => CoordinatorMessage::Goodbye,
            Ok(Ok(other)) => {
                // Work, updates and secure aggregation: an operator's key will never be allowed
                // them, so the connection is closed as a protocol refusal, which a client takes
                // as final (instead of asking again until it gives up).
                warn!(
                    request = other.kind(),
                    "refused request: an operator key may only ask for the status; closing"
                );
                let reason = format!(
                    "the key of operator `{name}` may only ask for the status (mpcl status), \
                     not send {}: start `mpcl client` with a participant's key",
                    other.kind()
                );
                connection.close(CLOSE_PROTOCOL.into(), reason.as_bytes());
                return;
            }
            Ok(Err(CodecError::Closed)) => continue,
            Ok(Err(error)) => CoordinatorMessage::Error {
                reason: format!("unreadable request: {error}"),
            },
            Err(_) => CoordinatorMessage::Error {
                reason: format!("request not received within {:?}", shared.request_timeout),
            },
        };
        if let Err(error) = send_reply(&mut send, &reply, &MessageLimits::CONTROL, &shared).await {
            debug!(%error, "cannot answer the operator");
        }
    }
}

/// Sends a command to the actor and waits for its answer.
async fn ask(
    shared: &Shared,
    command: impl FnOnce(oneshot::Sender<CoordinatorMessage>) -> Command,
) -> CoordinatorMessage {
    let (reply, answer) = oneshot::channel();
    if shared.commands.send(command(reply)).await.is_err() {
        return shutting_down();
    }
    answer.await.unwrap_or_else(|_| shutting_down())
}

fn shutting_down() -> CoordinatorMessage {
    CoordinatorMessage::Error {
        reason: "the coordinator is shutting down".into(),
    }
}

/// Reads one request frame. Frames above [`MessageLimits::CONTROL`] wait for an upload permit
/// before their payload is read; the permit is returned so that it is held until the update has
/// been handled.
async fn read_request<'a>(
    recv: &mut quinn::RecvStream,
    limits: &MessageLimits,
    uploads: &'a Semaphore,
) -> Result<
    (
        ClientMessage,
        usize,
        Option<tokio::sync::SemaphorePermit<'a>>,
    ),
    CodecError,
> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(received)) => {
            return Err(framing::header_cut_off(received));
        }
        Err(quinn::ReadExactError::ReadError(error)) => {
            return Err(CodecError::Io {
                action: "reading a frame header",
                source: error.into(),
            });
        }
    }
    let length = framing::declared_length(header, limits)?;
    let permit = if length > MessageLimits::CONTROL.max_message_bytes as u64 {
        Some(
            uploads
                .acquire()
                .await
                .map_err(|_| CodecError::Malformed("the coordinator is shutting down".into()))?,
        )
    } else {
        None
    };
    let mut payload = framing::payload_buffer(length);
    (&mut *recv)
        .take(length)
        .read_to_end(&mut payload)
        .await
        .map_err(|source| CodecError::Io {
            action: "reading a frame",
            source,
        })?;
    framing::check_payload_length(&payload, length)?;
    let message = codec::decode_message(&payload, limits)?;
    Ok((message, FRAME_HEADER_BYTES + payload.len(), permit))
}

/// Writes a `StartRound` assembled around the round's shared state and finishes the stream.
async fn send_spliced_reply(
    send: &mut quinn::SendStream,
    payload: &SplicedPayload,
    shared: &Shared,
) -> Result<(), CodecError> {
    let mut chunks = framing::spliced_frame(payload, &shared.limits)?;
    send_chunks(send, &mut chunks, shared).await
}

/// Writes `message` as one frame and finishes the stream.
async fn send_reply(
    send: &mut quinn::SendStream,
    message: &CoordinatorMessage,
    limits: &MessageLimits,
    shared: &Shared,
) -> Result<(), CodecError> {
    let frame = framing::encode_frame(message, limits)?;
    send_chunks(send, &mut [frame.into()], shared).await
}

/// Writes a whole frame in one call (one wake-up of quinn's connection, the buffers handed over
/// without a copy), counts it, and finishes the stream.
async fn send_chunks(
    send: &mut quinn::SendStream,
    chunks: &mut [bytes::Bytes],
    shared: &Shared,
) -> Result<(), CodecError> {
    let length: usize = chunks.iter().map(|c| c.len()).sum();
    send.write_all_chunks(chunks)
        .await
        .map_err(|e| CodecError::Io {
            action: "writing a reply",
            source: e.into(),
        })?;
    shared
        .traffic
        .bytes_out
        .fetch_add(length as u64, Ordering::Relaxed);
    send.finish().map_err(|e| CodecError::Io {
        action: "finishing a reply",
        source: std::io::Error::other(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_socket_asks_for_its_receive_buffer() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let small = udp_socket(addr, 64 << 10).unwrap();
        let default =
            udp_socket(addr, NetworkSettings::default().udp_receive_buffer_bytes).unwrap();
        let size = |socket: &std::net::UdpSocket| {
            socket2::SockRef::from(socket).recv_buffer_size().unwrap()
        };
        // The system may cap the larger request, but never below what the smaller one got.
        assert!(
            size(&default) >= size(&small),
            "{} < {}",
            size(&default),
            size(&small)
        );
        assert!(small.local_addr().unwrap().port() != 0);
    }

    #[test]
    fn a_run_larger_than_its_enrolment_is_refused_with_the_numbers() {
        let mut config = CoordinatorConfig {
            clients_per_round: Some(10),
            ..CoordinatorConfig::default()
        };
        let message = check_against_enrolment(&config, 3).unwrap_err();
        assert!(
            message.contains("`clients_per_round` is 10 but only 3 participant(s)"),
            "{message}"
        );
        config.clients_per_round = Some(3);
        assert!(check_against_enrolment(&config, 3).is_ok());
        config.min_available_clients = Some(4);
        let message = check_against_enrolment(&config, 3).unwrap_err();
        assert!(
            message.contains("`min_available_clients` is 4"),
            "{message}"
        );
        config.min_available_clients = None;
        config.min_clients_to_aggregate = 5;
        let message = check_against_enrolment(&config, 3).unwrap_err();
        assert!(
            message.contains("`min_clients_to_aggregate` is 5"),
            "{message}"
        );
    }
}
