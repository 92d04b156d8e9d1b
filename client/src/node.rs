//! The participant node: connects to the coordinator, asks for work, trains on its private data
//! when sampled, signs and uploads the update, and keeps at it until the run is over. What to
//! send and when is the protocol machine's ([`crate::machine`]); this is the thin async layer
//! around it that carries its requests over QUIC, trains on a blocking thread, sleeps, injects
//! the test faults and reconnects.
//!
//! ```text
//! connect + Hello ──► Welcome (model config, schema: checked against the local data)
//!   machine: RequestWork ─► StartRound ─► train ─► sign ─► Update ─► ack ─► RequestWork ...
//! ```
//!
//! The coordinator long-polls `RequestWork`: with nothing to hand out it holds the request and
//! answers `StartRound` the moment a round opens for this node (or `Wait { retry_after_ms: 0 }`
//! after its `network.long_poll_secs`, and the node asks again at once), so the request timeout
//! ([`SessionConfig::request_timeout`], 10 minutes by default) must exceed the long poll (20 s by
//! default); the QUIC keep-alive keeps the connection up meanwhile. Under secure aggregation each
//! step is one request answered when the coordinator closes the step ([`crate::secure`]).
//!
//! When the connection is lost (the coordinator restarts, the network drops), the node
//! reconnects with capped exponential backoff and starts again with `Hello`; the machine keeps
//! an update trained but not acknowledged for the resumed round. Errors that reconnecting cannot
//! fix (this key is not enrolled, the server is not the pinned coordinator, the run's schema
//! does not fit the local data, local training fails) end the node.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Schema, Standardizer};
use mpcl_model::personalize::PersonalizeScope;
use mpcl_model::{Device, ModelPool};
use mpcl_protocol::codec::CodecError;
use mpcl_protocol::messages::EvaluationSplit;
use mpcl_protocol::messages::{ClientMessage, CoordinatorMessage, GlobalState, RunId, Welcome};
use mpcl_protocol::privacy_noise::NoiseSource;
use mpcl_protocol::secure_aggregation::SecAggUpload;
use mpcl_protocol::{RoundPhase, StatusReport};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::evaluation::{LocalSplit, split_for_evaluation};
use crate::events::NodeEvent;
use crate::faults::{FaultInjection, send_half_then_disconnect};
use crate::machine::{ClientMachine, HandedRound, Output, ProtocolError};
use crate::participant::{
    LocalTrainer, Participant, ParticipantError, ParticipantSettings, TrainedUpdate,
};
use crate::personalize::{options_from_training, personalize_locally};
use crate::session::{Session, SessionConfig, SessionError};

/// How a node behaves.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// How to reach the coordinator.
    pub session: SessionConfig,
    /// First reconnection delay (doubled after each failed attempt).
    pub backoff_initial: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// Longest sleep when told to wait (caps the coordinator's `retry_after_ms`).
    pub max_wait: Duration,
    /// Give up when no connection succeeded for this long (`None`: keep trying).
    pub give_up_after: Option<Duration>,
    /// Local training choices.
    pub participant: ParticipantSettings,
    /// Faults to inject, for fault tests only (see [`crate::faults`]).
    pub faults: FaultInjection,
    /// Fine-tune the run's global model on the local data once the run is over (`None`: no).
    pub personalization: Option<PersonalizationRequest>,
}

/// What `mpcl client --personalize-epochs E` asks for after the run: the run's global model
/// (the best round's on federated validation when the run evaluated, else the last round's)
/// fine-tuned on this participant's own training part for up to `epochs` epochs, the epoch
/// chosen on its validation part, both models scored on its test part. Needs a run with
/// federated evaluation (or `--validation-data` / `--test-data`). The personal model stays on
/// this machine: nothing of it is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonalizationRequest {
    pub epochs: usize,
    pub scope: PersonalizeScope,
    /// Where to write the personal model (a model file); `None`: only report its metrics.
    pub model_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Defaults: backoff from 0.5 s up to 30 s, waits capped at 30 s, never give up.
    pub fn new(session: SessionConfig) -> Self {
        Self {
            session,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_wait: Duration::from_secs(30),
            give_up_after: None,
            participant: ParticipantSettings::default(),
            faults: FaultInjection::default(),
            personalization: None,
        }
    }
}

/// How a node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutcome {
    /// The coordinator said the run is over after `rounds` rounds.
    Finished { rounds: u64 },
    /// The cancellation token was cancelled.
    Cancelled,
}

/// Errors that end a node.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Reconnecting cannot help (see [`SessionError::is_fatal`]).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No connection succeeded for too long.
    #[error("gave up after {elapsed:?} without reaching the coordinator; last error: {last}")]
    GaveUp {
        elapsed: Duration,
        last: SessionError,
    },
    /// The run's model or schema does not fit the local data.
    #[error("this node cannot take part in the run: {0}")]
    Incompatible(String),
    /// Local training failed.
    #[error("local training failed in round {round}: {source}")]
    Training {
        round: u64,
        #[source]
        source: ParticipantError,
    },
    /// The update could not be encoded within the limits.
    #[error("cannot encode the update of round {round}: {source}")]
    Encode {
        round: u64,
        #[source]
        source: CodecError,
    },
    /// Personalization after the run failed (no validation part, an unwritable model file).
    #[error("personalization failed: {0}")]
    Personalization(String),
    /// A bug (the training thread panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a session ended.
enum SessionEnd {
    Finished(u64),
    Cancelled,
}

/// A participant node (see the module documentation).
pub struct Node {
    config: NodeConfig,
    dataset: Arc<Dataset>,
    device: Device,
    /// The local trainer and the model config it was built for.
    participant: Option<(ModelConfig, Box<dyn LocalTrainer>)>,
    /// The trainer was given ([`Node::with_trainer`]), not built from the run's model config.
    given_trainer: bool,
    /// The protocol: what to send, train and wait for (kept across reconnections).
    machine: ClientMachine,
    events: Option<UnboundedSender<NodeEvent>>,
    /// Whether the injected mid-upload drop already happened (it happens once).
    dropped_mid_upload: bool,
    /// Whether the injected vanishing after a masked input already happened (once).
    vanished_after_masked_input: bool,
    /// Validation and test parts given by the operator (`--validation-data`, `--test-data`);
    /// without them a run that evaluates splits the local data by its `[evaluation]` fractions.
    given_evaluation: Option<(Arc<Dataset>, Arc<Dataset>)>,
    /// The local data as split for the run (training, validation, test), once admitted.
    split: Option<Arc<LocalSplit>>,
    /// The run's model configuration, once admitted.
    model_config: Option<ModelConfig>,
    /// The run's model, asked for after `Finished` when personalizing.
    final_model: Option<FinalModel>,
}

/// The run's model as the coordinator sent it: the global state after round `round` (the
/// best round's on federated validation when the run evaluated, else the last round's).
struct FinalModel {
    run_id: RunId,
    round: u64,
    state: Arc<GlobalState>,
}

impl Node {
    /// A node training on `dataset` (its local training samples) on `device`.
    pub fn new(config: NodeConfig, dataset: Dataset, device: Device) -> Result<Self, NodeError> {
        dataset
            .validate()
            .map_err(|e| NodeError::Incompatible(format!("local data: {e}")))?;
        let machine = ClientMachine::new(
            Arc::clone(&config.session.identity),
            NoiseSource::OperatingSystem,
        );
        Ok(Self {
            config,
            dataset: Arc::new(dataset),
            device,
            participant: None,
            given_trainer: false,
            machine,
            events: None,
            dropped_mid_upload: false,
            vanished_after_masked_input: false,
            given_evaluation: None,
            split: None,
            model_config: None,
            final_model: None,
        })
    }

    /// Evaluates on these validation and test parts instead of splitting the local data (which
    /// is then the training part only). Each must have the local data's schema.
    pub fn with_evaluation_data(
        mut self,
        validation: Dataset,
        test: Dataset,
    ) -> Result<Self, NodeError> {
        for (part, data) in [("validation", &validation), ("test", &test)] {
            data.validate()
                .map_err(|e| NodeError::Incompatible(format!("local {part} data: {e}")))?;
            if data.schema != self.dataset.schema {
                return Err(NodeError::Incompatible(format!(
                    "the local {part} data has another schema than the training data"
                )));
            }
        }
        self.given_evaluation = Some((Arc::new(validation), Arc::new(test)));
        Ok(self)
    }

    /// How the local data divides for a run with `evaluation` (`None`: no evaluation, so no
    /// validation or test part, unless the operator gave them).
    fn split_for(
        &self,
        evaluation: Option<EvaluationSplit>,
        participant_id: &str,
    ) -> Result<LocalSplit, NodeError> {
        if let Some((validation, test)) = &self.given_evaluation {
            return Ok(LocalSplit {
                train: (*self.dataset).clone(),
                validation: (**validation).clone(),
                test: (**test).clone(),
            });
        }
        let Some(evaluation) = evaluation else {
            let empty = self.dataset.subset(&[]);
            return Ok(LocalSplit {
                train: (*self.dataset).clone(),
                validation: empty.clone(),
                test: empty,
            });
        };
        // Each participant its own split, the same one every time it starts.
        let digest = Sha256::digest(format!("mpcl/evaluation-split/{participant_id}"));
        let seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        split_for_evaluation(
            &self.dataset,
            evaluation.test_fraction,
            evaluation.validation_fraction,
            seed,
        )
        .map_err(|e| {
            NodeError::Incompatible(format!(
                "the run evaluates on {:.0}% of each participant's trials (test) and {:.0}% of the rest (validation), but the local data cannot be split so: {e}",
                evaluation.test_fraction * 100.0,
                evaluation.validation_fraction * 100.0
            ))
        })
    }

    /// Asks the coordinator for the run's model, which personalization starts from: the last
    /// state a `StartRound` handed this node is the model before that round, which need not be
    /// the run's (the best round's, or without evaluation the last one's). Failing (a lost
    /// connection), the node falls back to it and says so.
    async fn fetch_final_model(&mut self, session: &Session) {
        match session.final_model().await {
            Ok((run_id, round, state)) if run_id == session.welcome().run_id => {
                debug!(round, "received the run's model");
                self.final_model = Some(FinalModel {
                    run_id,
                    round,
                    state: Arc::new(state),
                });
            }
            Ok(_) => warn!("the coordinator sent the model of another run; ignored"),
            Err(error) => warn!(%error, "could not get the run's model"),
        }
    }

    /// Runs the requested personalization (if any) on the run's model (or, if this node could
    /// not get it, on the last global model it was handed), logs both models' test metrics and
    /// writes the personal model where asked.
    async fn personalize(&mut self) -> Result<(), NodeError> {
        let Some(request) = self.config.personalization.clone() else {
            return Ok(());
        };
        let fail = |m: String| NodeError::Personalization(m);
        let (Some(split), Some(model_config), Some(last)) = (
            self.split.clone(),
            self.model_config.clone(),
            self.machine.last_round().cloned(),
        ) else {
            return Err(fail(
                "the node took part in no round, so it has no global model to personalize".into(),
            ));
        };
        if split.validation.samples.is_empty() || split.test.samples.is_empty() {
            return Err(fail(
                "it needs a validation and a test part: a run with [evaluation] enabled, or --validation-data and --test-data".into(),
            ));
        }
        let (global, global_round) = match &self.final_model {
            Some(model) if model.run_id == last.run_id => (Arc::clone(&model.state), model.round),
            _ => {
                // The state handed with round r is the model after round r - 1.
                let round = last.round.saturating_sub(1);
                warn!(
                    global_round = round,
                    "personalizing the global model after round {round}, the last this node was \
                     handed: the run's model did not reach it"
                );
                (Arc::clone(&last.state), round)
            }
        };
        let device = self.device.clone();
        let options = options_from_training(request.epochs, request.scope, &last.config);
        let outcome = tokio::task::spawn_blocking(move || {
            let standardizer = Standardizer::fit(&split.train);
            personalize_locally(
                &split,
                &standardizer,
                &model_config,
                &device,
                &global,
                &options,
            )
            .map(|outcome| (outcome, split))
        })
        .await
        .map_err(|e| NodeError::Internal(format!("personalization panicked: {e}")))?;
        let (outcome, split) = outcome.map_err(|e| fail(e.to_string()))?;
        let run_hex: String = last.run_id.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(path) = &request.model_file {
            outcome
                .model_file(&split, &run_hex, global_round)
                .write(path)
                .map_err(|e| fail(e.to_string()))?;
        }
        info!(
            global_test_kl = outcome.global_test.kl,
            personal_test_kl = outcome.personal_test.kl,
            prior_test_kl = outcome.prior_test.kl,
            chosen_epoch = outcome.report.chosen_epoch,
            test_samples = outcome.personal_test.samples,
            global_round,
            "personalized the global model on the local data"
        );
        self.emit(NodeEvent::Personalized {
            global_round,
            global_test: outcome.global_test,
            personal_test: outcome.personal_test,
            prior_test: outcome.prior_test,
            chosen_epoch: outcome.report.chosen_epoch,
            model_file: request.model_file,
        });
        Ok(())
    }

    /// Trains with `trainer` instead of the MPCL model the run's config describes (benchmarks
    /// that measure the framework with a stand-in for training).
    pub fn with_trainer(mut self, trainer: Box<dyn LocalTrainer>) -> Self {
        // The config beside a given trainer is never compared: `prepare` keeps it as it is.
        self.participant = Some((ModelConfig::default(), trainer));
        self.given_trainer = true;
        self
    }

    /// Reports what the node does on `events`.
    pub fn with_events(mut self, events: UnboundedSender<NodeEvent>) -> Self {
        self.events = Some(events);
        self
    }

    fn emit(&self, event: NodeEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Runs until the run is finished, `shutdown` is cancelled, or an error reconnecting cannot
    /// fix.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<NodeOutcome, NodeError> {
        let span = info_span!("node", participant = %self.config.session.identity.id());
        async move {
            let mut backoff = self.config.backoff_initial;
            let mut failing_since: Option<tokio::time::Instant> = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(NodeOutcome::Cancelled);
                }
                let attempt_started = tokio::time::Instant::now();
                // While failing, the attempt itself counts against --give-up-after: it stops at
                // the deadline instead of running its whole connect timeout past it.
                let give_up_at = failing_since
                    .zip(self.config.give_up_after)
                    .map(|(since, limit)| since + limit);
                let connected = tokio::select! {
                    () = shutdown.cancelled() => return Ok(NodeOutcome::Cancelled),
                    connected = Session::connect(&self.config.session) => connected,
                    () = sleep_until_or_forever(give_up_at) => Err(SessionError::Timeout {
                        addr: self.config.session.coordinator,
                        timeout: attempt_started.elapsed(),
                    }),
                };
                let error = match connected {
                    Ok(session) => {
                        backoff = self.config.backoff_initial;
                        failing_since = None;
                        match self.serve(session, &shutdown).await {
                            Ok(SessionEnd::Finished(rounds)) => {
                                self.personalize().await?;
                                return Ok(NodeOutcome::Finished { rounds });
                            }
                            Ok(SessionEnd::Cancelled) => return Ok(NodeOutcome::Cancelled),
                            Err(SessionFailure::Fatal(error)) => return Err(error),
                            Err(SessionFailure::Lost(error)) => error,
                            Err(SessionFailure::Vanished(reason)) => {
                                warn!(%reason, "vanished on purpose (test fault)");
                                self.emit(NodeEvent::Disconnected { reason });
                                tokio::select! {
                                    () = shutdown.cancelled() => return Ok(NodeOutcome::Cancelled),
                                    () = tokio::time::sleep(backoff) => {}
                                }
                                continue;
                            }
                        }
                    }
                    Err(SessionError::RunOver) => {
                        info!("the run is over");
                        self.emit(NodeEvent::Finished { rounds: 0 });
                        return Ok(NodeOutcome::Finished { rounds: 0 });
                    }
                    Err(error) if error.is_fatal() => return Err(error.into()),
                    Err(error) => error,
                };
                // The clock starts when the first failing attempt started, not when it failed.
                let since = *failing_since.get_or_insert(attempt_started);
                let mut delay = self.jittered(backoff);
                if let Some(limit) = self.config.give_up_after {
                    let left = limit.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(NodeError::GaveUp {
                            elapsed: since.elapsed(),
                            last: error,
                        });
                    }
                    delay = delay.min(left);
                }
                warn!(%error, retry_in = ?delay, "not connected to the coordinator");
                self.emit(NodeEvent::Disconnected {
                    reason: error.to_string(),
                });
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(NodeOutcome::Cancelled),
                    () = tokio::time::sleep(delay) => {}
                }
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
        .instrument(span)
        .await
    }

    /// Up to 25 % more delay, fixed per node (from its key), so that nodes reconnecting after a
    /// coordinator restart do not all knock at once.
    fn jittered(&self, delay: Duration) -> Duration {
        let byte = self.config.session.identity.public_key().as_bytes()[0];
        delay.mul_f64(1.0 + f64::from(byte) / 255.0 * 0.25)
    }

    /// Serves one admitted session until it ends.
    async fn serve(
        &mut self,
        session: Session,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SessionFailure> {
        let welcome = session.welcome().clone();
        info!(
            round = welcome.current_round,
            total_rounds = welcome.total_rounds,
            "admitted by the coordinator"
        );
        if let Err(error) = self.prepare(&welcome).await {
            session.abort();
            return Err(SessionFailure::Fatal(error));
        }
        self.emit(NodeEvent::Admitted {
            welcome: welcome.clone(),
        });
        let result = self.work(&session, &welcome, shutdown).await;
        if matches!(result, Ok(SessionEnd::Finished(_))) && self.config.personalization.is_some() {
            self.fetch_final_model(&session).await;
        }
        // Whatever the machine awaited went with the session; a pending update stays.
        self.machine.session_lost();
        let result = match result {
            // The coordinator closed the connection because the run is over (this node missed
            // the `Finished` answer, for example while it slept).
            Err(SessionFailure::Lost(SessionError::RunOver)) => {
                info!("the coordinator closed the connection: the run is over");
                self.emit(NodeEvent::Finished {
                    rounds: welcome.total_rounds,
                });
                Ok(SessionEnd::Finished(welcome.total_rounds))
            }
            other => other,
        };
        match &result {
            Ok(_) => session.close().await,
            Err(_) => session.abort(),
        }
        result
    }

    /// Checks the run's model and schema against the local data and builds the local model
    /// (once; again only if the model configuration changed).
    async fn prepare(&mut self, welcome: &Welcome) -> Result<(), NodeError> {
        let config = check_compatible(welcome, &self.dataset.schema)?;
        self.model_config = Some(config.clone());
        if self.given_trainer {
            return Ok(());
        }
        if let Some((built_for, _)) = &self.participant
            && *built_for == welcome.model_config
        {
            return Ok(());
        }
        let split = Arc::new(self.split_for(welcome.evaluation, &welcome.participant_id)?);
        let evaluates = welcome.evaluation.is_some() || self.given_evaluation.is_some();
        if evaluates {
            info!(
                train = split.train.samples.len(),
                validation = split.validation.samples.len(),
                test = split.test.samples.len(),
                "local data split for federated evaluation"
            );
        }
        self.split = Some(Arc::clone(&split));
        let device = self.device.clone();
        let settings = self.config.participant.clone();
        let participant = tokio::task::spawn_blocking(move || {
            // A node trains one participant: its pool holds that participant's one model.
            let models = ModelPool::new(&split.train.schema, &config, &device)?;
            if evaluates {
                Participant::with_evaluation(&split, &models, settings)
            } else {
                Participant::new(&split.train, &models, settings)
            }
        })
        .await
        .map_err(|e| NodeError::Internal(format!("model construction panicked: {e}")))?
        .map_err(|e| NodeError::Incompatible(format!("cannot build the model: {e}")))?;
        info!(
            samples = participant.sample_count(),
            "local model built from the run's model config"
        );
        self.participant = Some((welcome.model_config.clone(), Box::new(participant)));
        Ok(())
    }

    /// Drives the protocol machine over `session` until the run is over or the session fails.
    async fn work(
        &mut self,
        session: &Session,
        welcome: &Welcome,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SessionFailure> {
        let mut outputs: VecDeque<Output> = self.machine.start_session(welcome.run_id).into();
        while let Some(output) = outputs.pop_front() {
            if shutdown.is_cancelled() {
                return Ok(SessionEnd::Cancelled);
            }
            let next = match output {
                Output::Request {
                    message,
                    round_deadline,
                } => {
                    self.inject_vanishing(&message)?;
                    let reply = tokio::select! {
                        () = shutdown.cancelled() => return Ok(SessionEnd::Cancelled),
                        reply = async {
                            match round_deadline {
                                // Answered when the step closes: at the latest shortly before
                                // the round's deadline.
                                Some(deadline) => {
                                    session
                                        .request_within(&message, deadline + session.request_timeout())
                                        .await
                                }
                                None => session.request(&message).await,
                            }
                        } => reply?,
                    };
                    self.machine.handle_reply(reply)?
                }
                Output::Upload { round, update } => {
                    let Some(reply) = self.upload(session, round, &update, shutdown).await? else {
                        return Ok(SessionEnd::Cancelled);
                    };
                    self.machine.handle_reply(reply)?
                }
                Output::Train(round) => {
                    let trained = tokio::select! {
                        () = shutdown.cancelled() => return Ok(SessionEnd::Cancelled),
                        trained = self.train(round) => trained?,
                    };
                    self.machine.trained(trained)?
                }
                Output::Wait(delay) => {
                    let delay = delay.min(self.config.max_wait);
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(SessionEnd::Cancelled),
                        () = tokio::time::sleep(delay) => {}
                    }
                    self.machine.wait_over()?
                }
                Output::Event(event) => {
                    self.emit(event);
                    continue;
                }
                Output::Finished { rounds } => return Ok(SessionEnd::Finished(rounds)),
            };
            outputs.extend(next);
        }
        Err(SessionFailure::Fatal(NodeError::Internal(
            "the protocol machine stopped without an answer to wait for".into(),
        )))
    }

    /// Signs and uploads `update` (with the injected faults, if any); `None` when cancelled.
    async fn upload(
        &mut self,
        session: &Session,
        round: u64,
        update: &TrainedUpdate,
        shutdown: &CancellationToken,
    ) -> Result<Option<CoordinatorMessage>, SessionFailure> {
        let signed = update
            .sign(&self.config.session.identity, &session.limits())
            .map_err(|source| SessionFailure::Fatal(NodeError::Encode { round, source }))?;
        let upload = ClientMessage::Update(signed);
        if let Some(delay) = self.config.faults.delay_before_upload {
            warn!(round, ?delay, "injected fault: stalling before the upload");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
        }
        if self.config.faults.drop_connection_mid_upload && !self.dropped_mid_upload {
            self.dropped_mid_upload = true;
            let sent = send_half_then_disconnect(session, &upload).await?;
            warn!(
                round,
                bytes = sent,
                "injected fault: dropped the connection mid-upload"
            );
            return Err(SessionFailure::Lost(SessionError::Connection(
                quinn::ConnectionError::LocallyClosed,
            )));
        }
        tokio::select! {
            () = shutdown.cancelled() => Ok(None),
            reply = session.request(&upload) => Ok(Some(reply?)),
        }
    }

    /// The injected vanishing: in the configured secure-aggregation round, drop the connection
    /// instead of signing the survivor list (once).
    fn inject_vanishing(&mut self, message: &ClientMessage) -> Result<(), SessionFailure> {
        if let ClientMessage::SecureAggregation {
            round,
            upload: SecAggUpload::Signature(_),
            ..
        } = message
            && self.config.faults.vanish_after_masked_input == Some(*round)
            && !self.vanished_after_masked_input
        {
            self.vanished_after_masked_input = true;
            return Err(SessionFailure::Vanished(format!(
                "test fault: vanished after the masked input of round {round}"
            )));
        }
        Ok(())
    }

    /// Trains on a blocking thread (the connection's keep-alives go on meanwhile).
    async fn train(&mut self, handed: HandedRound) -> Result<Arc<TrainedUpdate>, SessionFailure> {
        let HandedRound {
            run_id,
            round,
            state,
            config,
        } = handed;
        let (json, mut participant) = self
            .participant
            .take()
            .ok_or_else(|| SessionFailure::Fatal(NodeError::Internal("no local model".into())))?;
        let (participant, result) = tokio::task::spawn_blocking(move || {
            let result = participant.train_round(run_id, round, &state, &config);
            (participant, result)
        })
        .await
        .map_err(|e| {
            SessionFailure::Fatal(NodeError::Internal(format!("training panicked: {e}")))
        })?;
        self.participant = Some((json, participant));
        let trained = result
            .map_err(|source| SessionFailure::Fatal(NodeError::Training { round, source }))?;
        let update = &trained.update;
        info!(
            round,
            samples = update.sample_count,
            loss = update.metrics.train_loss,
            seconds = update.metrics.seconds,
            compression = %trained
                .compressed
                .as_ref()
                .map(|c| c.compression())
                .unwrap_or_default(),
            "trained"
        );
        Ok(Arc::new(trained))
    }
}

/// How a session failed.
enum SessionFailure {
    /// Reconnect and carry on.
    Lost(SessionError),
    /// Stop the node.
    Fatal(NodeError),
    /// Test fault: drop the connection without a word, then reconnect.
    Vanished(String),
}

impl From<ProtocolError> for SessionFailure {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::Coordinator { reason } => {
                Self::Lost(SessionError::Coordinator { reason })
            }
            ProtocolError::Unexpected { request, reply } => {
                Self::Lost(SessionError::Unexpected { request, reply })
            }
            ProtocolError::OtherRun => Self::Lost(SessionError::Coordinator {
                reason: error.to_string(),
            }),
            ProtocolError::OutOfOrder { .. } => Self::Fatal(NodeError::Internal(error.to_string())),
        }
    }
}

impl From<SessionError> for SessionFailure {
    fn from(error: SessionError) -> Self {
        if error.is_fatal() {
            Self::Fatal(error.into())
        } else {
            Self::Lost(error)
        }
    }
}

/// The run's model config, after checking that the run's schema is the local data's.
pub fn check_compatible(welcome: &Welcome, local: &Schema) -> Result<ModelConfig, NodeError> {
    let schema = &welcome.schema;
    if schema.emotions != local.emotions {
        return Err(NodeError::Incompatible(format!(
            "the run's emotions are [{}], the local data's are [{}]",
            schema.emotions.join(", "),
            local.emotions.join(", ")
        )));
    }
    if schema.modalities != local.modalities {
        let describe = |s: &Schema| {
            s.modalities
                .iter()
                .map(|m| m.describe())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(NodeError::Incompatible(format!(
            "the run's modalities are [{}], the local data's are [{}]",
            describe(schema),
            describe(local)
        )));
    }
    welcome
        .model_config
        .validate(local)
        .map_err(|e| NodeError::Incompatible(format!("model config: {e}")))?;
    Ok(welcome.model_config.clone())
}

/// Asks the coordinator where the run stands (`mpcl status`).
pub async fn query_status(config: &SessionConfig) -> Result<StatusReport, SessionError> {
    let session = Session::connect(config).await?;
    let reply = session.request(&ClientMessage::StatusRequest).await;
    let report = match reply {
        Ok(CoordinatorMessage::Status(report)) => Ok(report),
        Ok(CoordinatorMessage::Error { reason }) => Err(SessionError::Coordinator { reason }),
        Ok(other) => Err(SessionError::Unexpected {
            request: "StatusRequest",
            reply: other.kind(),
        }),
        Err(error) => Err(error),
    };
    session.close().await;
    report
}

/// A phase in words.
pub fn phase_name(phase: RoundPhase) -> &'static str {
    match phase {
        RoundPhase::WaitingForParticipants => "waiting for participants",
        RoundPhase::Training => "training",
        RoundPhase::Aggregating => "aggregating",
        RoundPhase::Finished => "finished",
    }
}

/// Sleeps until `at`, or forever when there is no deadline.
async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpcl_data::{Modality, ModalityGroup};

    fn schema(emotions: &[&str], width: usize) -> Schema {
        Schema {
            emotions: emotions.iter().map(|e| e.to_string()).collect(),
            modalities: vec![Modality::new("eeg", ModalityGroup::Physiological, 2, width)],
        }
    }

    fn welcome(schema: &Schema, model: ModelConfig) -> Welcome {
        Welcome {
            run_id: [0; 16],
            protocol_version: mpcl_protocol::PROTOCOL_VERSION,
            participant_id: "p".into(),
            max_message_bytes: 1 << 20,
            total_rounds: 1,
            current_round: 0,
            model_config: model,
            schema: schema.clone(),
            evaluation: None,
        }
    }

    #[test]
    fn a_matching_schema_gives_the_model_config() {
        let local = schema(&["joy", "fear"], 3);
        let config = check_compatible(
            &welcome(
                &local,
                ModelConfig {
                    width: 8,
                    ..ModelConfig::default()
                },
            ),
            &local,
        )
        .unwrap();
        assert_eq!(config.width, 8);
        assert_eq!(config.memory_slots, ModelConfig::default().memory_slots);
    }

    #[test]
    fn other_emotions_or_modalities_are_incompatible_and_named() {
        let local = schema(&["joy", "fear"], 3);
        let error = check_compatible(
            &welcome(&schema(&["joy", "anger"], 3), ModelConfig::default()),
            &local,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("anger") && error.contains("fear"), "{error}");
        let error = check_compatible(
            &welcome(&schema(&["joy", "fear"], 4), ModelConfig::default()),
            &local,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("2x4") && error.contains("2x3"), "{error}");
    }

    #[test]
    fn a_model_config_that_does_not_fit_is_incompatible_and_named() {
        // An unknown `[model]` field is refused when the run file is read (run_file.rs); what
        // reaches a client can still not fit its data.
        let local = schema(&["joy", "fear"], 3);
        let model = ModelConfig {
            emotions: 5,
            ..ModelConfig::default()
        };
        let error = check_compatible(&welcome(&local, model), &local)
            .unwrap_err()
            .to_string();
        assert!(error.contains("5 emotions"), "{error}");
    }
}
