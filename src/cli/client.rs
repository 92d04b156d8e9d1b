//! `mpcl client` and `mpcl status`: a participant node on local data, and a look at where a run
//! stands. The node is `mpcl_client::node`; this file picks the local data (including the
//! synthetic demo subjects, which the client crate does not know about) and the device.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use mpcl_client::node::PersonalizationRequest;
use mpcl_client::node::{phase_name, query_status};
use mpcl_client::session::SessionError;
use mpcl_client::{
    Node, NodeConfig, NodeError, NodeEvent, NodeOutcome, ParticipantSettings, SessionConfig,
};
use mpcl_data::Dataset;
use mpcl_model::DeviceChoice;
use mpcl_model::metrics::DistributionMetrics;
use mpcl_model::personalize::PersonalizeScope;
use mpcl_protocol::identity::read_public_key_file;
use mpcl_protocol::{NodeIdentity, RoundPhase, StatusReport, VerifyingKey};
use tokio_util::sync::CancellationToken;

/// How to reach the coordinator (shared by `client` and `status`).
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The coordinator's address, HOST:PORT (as printed by `mpcl coordinator`).
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: String,

    /// The coordinator's public key file (its DIR/public_key.hex from `mpcl keygen`): only a
    /// server holding this key is accepted.
    #[arg(long, value_name = "FILE")]
    coordinator_key: PathBuf,

    /// This participant's key directory (from `mpcl keygen`); its public key must be in the
    /// coordinator's enrolment file.
    #[arg(long, value_name = "DIR")]
    key: PathBuf,

    /// QUIC keep-alive interval in seconds (keeps the connection up while training).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    keep_alive_secs: f64,

    /// QUIC idle timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    idle_timeout_secs: f64,

    /// Seconds connecting (handshake and Hello) may take.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    connect_timeout_secs: f64,
}

impl ConnectArgs {
    async fn session_config(&self) -> anyhow::Result<SessionConfig> {
        let identity = NodeIdentity::load(&self.key)
            .with_context(|| format!("cannot load this node's key from {}", self.key.display()))?;
        let coordinator_key: VerifyingKey = read_public_key_file(&self.coordinator_key)?;
        let address = resolve(&self.coordinator).await?;
        for (name, value) in [
            ("--keep-alive-secs", self.keep_alive_secs),
            ("--idle-timeout-secs", self.idle_timeout_secs),
            ("--connect-timeout-secs", self.connect_timeout_secs),
        ] {
            if !(value.is_finite() && value > 0.0) {
                bail!("{name} must be a positive number of seconds, got {value}");
            }
        }
        if self.keep_alive_secs >= self.idle_timeout_secs {
            bail!("--keep-alive-secs must be below --idle-timeout-secs");
        }
        let mut config = SessionConfig::new(address, coordinator_key, Arc::new(identity));
        config.keep_alive = Duration::from_secs_f64(self.keep_alive_secs);
        config.idle_timeout = Duration::from_secs_f64(self.idle_timeout_secs);
        config.connect_timeout = Duration::from_secs_f64(self.connect_timeout_secs);
        Ok(config)
    }
}

impl ConnectArgs {
    /// Names the pinned key's file when the server was not the expected coordinator.
    fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let wrong = error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<SessionError>(),
                Some(SessionError::WrongCoordinator { .. })
            ) || matches!(
                cause.downcast_ref::<NodeError>(),
                Some(NodeError::Session(SessionError::WrongCoordinator { .. }))
            )
        });
        if wrong {
            error.context(format!(
                "the expected coordinator key is the one in {} (--coordinator-key)",
                self.coordinator_key.display()
            ))
        } else {
            error
        }
    }
}

async fn resolve(address: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("cannot resolve the coordinator address `{address}`"))?
        .next()
        .with_context(|| format!("`{address}` resolves to no address"))
}

/// Take part in a federated run as a participant: train locally on private data when sampled
/// and send only signed updates (encoder delta, prototype and co-occurrence statistics).
///
/// Reconnects with exponential backoff when the coordinator goes away (for example while it
/// restarts with --resume); exits 0 when the run is finished or on Ctrl-C or SIGTERM (a round in
/// progress is abandoned and the coordinator told goodbye, so it stops waiting for this node),
/// and with an error when the coordinator refuses this key or the run's schema does not fit the
/// local data.
#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// Local training data: `synthetic:INDEX` (subject INDEX, from 0, of the default synthetic
    /// dataset: a demo), `larwood2019`, `larwood:DIR`, `dmer:DIR` (or `dmer:FILE.mat`),
    /// `wesad:DIR`, a study folder, or `snapshot:FILE` (a bit-exact dataset copy, as
    /// `mpcl simulate --network` writes for its client processes). Its schema must be the run's.
    #[arg(long, value_name = "SPEC")]
    data: String,

    /// Use only this subject's samples of --data (for datasets holding several subjects).
    #[arg(long, value_name = "ID")]
    subject: Option<String>,

    /// Federated evaluation on this held-out validation data (same forms as --data; with
    /// --test-data). By default a run with `[evaluation]` splits --data itself, trial-wise:
    /// the run's `test_fraction` of the trials for test, `validation_fraction` of the rest for
    /// validation (which only chooses the best round).
    #[arg(long, value_name = "SPEC", requires = "test_data")]
    validation_data: Option<String>,

    /// Federated evaluation on this held-out test data (with --validation-data); --data is then
    /// the training part only.
    #[arg(long, value_name = "SPEC", requires = "validation_data")]
    test_data: Option<String>,

    /// Where to train: `cpu`, `wgpu` (needs a build with --features wgpu) or `auto`.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,

    /// Prototype statistics of an emotion with less local label mass than this are not sent.
    #[arg(long, value_name = "MASS", default_value_t = 1.0)]
    min_prototype_mass: f32,

    /// After the run, fine-tune the run's global model (the best round's on federated
    /// validation when the run evaluates, else the last round's) on this participant's own
    /// training part for up to E epochs (0: off), keeping the epoch with the lowest validation
    /// KL (epoch 0 is the global model itself), and print both models' metrics on the local
    /// test part. Needs a run with [evaluation] (or --validation-data and --test-data). Nothing
    /// of it is sent.
    #[arg(long, value_name = "E", default_value_t = 0)]
    personalize_epochs: usize,

    /// What personalization trains: `head` (the head, with the prototype banks re-estimated
    /// from the local data) or `all` (every parameter).
    #[arg(long, value_name = "SCOPE", default_value_t = PersonalizeScope::default())]
    personalize_scope: PersonalizeScope,

    /// Write the personalized model here (a model file for `mpcl evaluate` / `mpcl predict`;
    /// it stays on this machine). Needs --personalize-epochs.
    #[arg(long, value_name = "FILE")]
    personal_model: Option<PathBuf>,

    /// Stop after this many seconds without reaching the coordinator (default: keep trying).
    #[arg(long, value_name = "SECS")]
    give_up_after_secs: Option<f64>,

    /// Fault injection for the fault tests: sleep this long before every upload.
    #[arg(long, value_name = "SECS", hide = true)]
    test_delay_before_upload_secs: Option<f64>,

    /// Fault injection for the fault tests: drop the connection halfway through the first
    /// upload (then reconnect as usual).
    #[arg(long, hide = true)]
    test_drop_connection_mid_upload: bool,
}

/// The local test table of a personalized run.
fn print_personalization(
    global_round: u64,
    global: &DistributionMetrics,
    personal: &DistributionMetrics,
    prior: &DistributionMetrics,
    chosen_epoch: usize,
    model_file: Option<&std::path::Path>,
) {
    println!(
        "\npersonalization on this participant's own test part ({} samples; epoch {chosen_epoch} kept on validation KL):\n",
        personal.samples
    );
    println!("| model | chebyshev ↓ | clark ↓ | canberra ↓ | kl ↓ | cosine ↑ | intersection ↑ |");
    println!("|---|---|---|---|---|---|---|");
    let global_name = format!("global model (after round {global_round})");
    for (name, m) in [
        (global_name.as_str(), global),
        ("personalized", personal),
        ("label prior", prior),
    ] {
        let values: Vec<String> = m.values().iter().map(|v| format!("{v:.4}")).collect();
        println!("| {name} | {} |", values.join(" | "));
    }
    if let Some(path) = model_file {
        println!(
            "\npersonal model written to {} (it stays here)",
            path.display()
        );
    }
}

/// Loads the local data of `mpcl client --data SPEC [--subject ID]`.
pub fn load_local_data(spec: &str, subject: Option<&str>) -> anyhow::Result<Dataset> {
    let dataset = if let Some(index) = spec.strip_prefix("synthetic:") {
        use mpcl_simulations::synthetic::{SyntheticConfig, generate};
        let index: usize = index
            .parse()
            .with_context(|| format!("`{spec}`: expected synthetic:SUBJECT_INDEX"))?;
        let all = generate(&SyntheticConfig::default());
        let subjects = all.subjects();
        let Some(id) = subjects.get(index) else {
            bail!(
                "`{spec}`: the synthetic dataset has subjects 0..{}",
                subjects.len()
            );
        };
        only_subject(&all, id)
    } else if let Some(path) = spec.strip_prefix("snapshot:") {
        mpcl_data::snapshot::read_snapshot(std::path::Path::new(path))?
    } else {
        mpcl_data::open(spec)
            .with_context(|| format!("cannot open the local data `{spec}`"))?
            .0
    };
    match subject {
        None => Ok(dataset),
        Some(id) => {
            let picked = only_subject(&dataset, id);
            if picked.samples.is_empty() {
                bail!(
                    "subject `{id}` is not in `{spec}` (subjects: {})",
                    dataset.subjects().join(", ")
                );
            }
            Ok(picked)
        }
    }
}

fn only_subject(dataset: &Dataset, subject: &str) -> Dataset {
    let mut picked = dataset.subject_subset(subject);
    picked.name = format!("{} ({subject})", dataset.name);
    picked
}

impl ClientArgs {
    /// Runs `mpcl client`.
    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let result = runtime.block_on(self.serve());
        // After Ctrl-C, local training may still be running on a blocking thread: abandon it
        // rather than wait for it (its result would go nowhere).
        runtime.shutdown_background();
        result
    }

    async fn serve(self) -> anyhow::Result<()> {
        let session = self.connect.session_config().await?;
        let dataset = load_local_data(&self.data, self.subject.as_deref())?;
        let device = self.device.resolve()?;
        tracing::info!(
            data = %dataset.name,
            samples = dataset.samples.len(),
            device = %device.description,
            "local data loaded"
        );
        let mut config = NodeConfig::new(session);
        config.participant = ParticipantSettings {
            min_prototype_mass: self.min_prototype_mass,
        };
        if let Some(secs) = self.give_up_after_secs {
            if !(secs.is_finite() && secs > 0.0) {
                bail!("--give-up-after-secs must be a positive number, got {secs}");
            }
            config.give_up_after = Some(Duration::from_secs_f64(secs));
        }
        if let Some(secs) = self.test_delay_before_upload_secs {
            if !(secs.is_finite() && secs >= 0.0) {
                bail!("--test-delay-before-upload-secs must be a number of seconds, got {secs}");
            }
            config.faults.delay_before_upload = Some(Duration::from_secs_f64(secs));
        }
        config.faults.drop_connection_mid_upload = self.test_drop_connection_mid_upload;
        if self.personal_model.is_some() && self.personalize_epochs == 0 {
            bail!("--personal-model needs --personalize-epochs E (E > 0)");
        }
        if let Some(path) = &self.personal_model
            && path.exists()
        {
            bail!(
                "--personal-model {}: the file exists; choose another name or remove it",
                path.display()
            );
        }
        config.personalization = (self.personalize_epochs > 0).then(|| PersonalizationRequest {
            epochs: self.personalize_epochs,
            scope: self.personalize_scope,
            model_file: self.personal_model.clone(),
        });
        let mut node = Node::new(config, dataset, device.device)?;
        if let (Some(validation), Some(test)) = (&self.validation_data, &self.test_data) {
            let validation = load_local_data(validation, self.subject.as_deref())
                .context("--validation-data")?;
            let test = load_local_data(test, self.subject.as_deref()).context("--test-data")?;
            node = node.with_evaluation_data(validation, test)?;
        }
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        node = node.with_events(events);
        let shutdown = CancellationToken::new();
        tokio::spawn(super::coordinator::cancel_on_signal(shutdown.clone()));
        let outcome = node
            .run(shutdown)
            .await
            .map_err(|error| self.connect.explain(error.into()))?;
        match outcome {
            NodeOutcome::Finished { rounds } => {
                println!("run finished after {rounds} rounds");
                while let Ok(event) = received.try_recv() {
                    if let NodeEvent::Personalized {
                        global_round,
                        global_test,
                        personal_test,
                        prior_test,
                        chosen_epoch,
                        model_file,
                    } = event
                    {
                        print_personalization(
                            global_round,
                            &global_test,
                            &personal_test,
                            &prior_test,
                            chosen_epoch,
                            model_file.as_deref(),
                        );
                    }
                }
            }
            NodeOutcome::Cancelled => {
                tracing::info!("stopped on request; any round in progress is abandoned");
                println!("stopped");
            }
        }
        Ok(())
    }
}

/// Show where a run stands: phase, round, participants connected, updates received.
///
/// Connects with an enrolled key without taking part in the run: best an operator key (an
/// `[[operator]]` entry of the enrolment file, made with `mpcl keygen --operator`; it may only
/// ask for the status), or a participant's own key. With --watch, asks again every SECS seconds
/// and prints one line each time until the run is finished or Ctrl-C.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,

    /// Keep watching: one line every SECS seconds (default 2) until the run is finished.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

/// The one-line form of a status report (`status --watch`).
pub fn status_line(report: &StatusReport) -> String {
    let mut line = format!(
        "{} round {}/{}: {} of {} updates, {} connected of {} enrolled",
        phase_name(report.phase),
        report.round,
        report.total_rounds,
        report.updates_received,
        report.updates_expected,
        report.connected_participants,
        report.enrolled_participants
    );
    if let Some(ms) = report.deadline_in_ms {
        line.push_str(&format!(", deadline in {:.1} s", ms as f64 / 1000.0));
    }
    line
}

fn print_report(report: &StatusReport) {
    let run_id: String = report.run_id.iter().map(|b| format!("{b:02x}")).collect();
    println!("run           {run_id}");
    println!("phase         {}", phase_name(report.phase));
    println!("round         {} of {}", report.round, report.total_rounds);
    println!(
        "participants  {} connected, {} enrolled",
        report.connected_participants, report.enrolled_participants
    );
    println!(
        "updates       {} of {} received",
        report.updates_received, report.updates_expected
    );
    if let Some(ms) = report.deadline_in_ms {
        println!("deadline      in {:.1} s", ms as f64 / 1000.0);
    }
    if let Some(round) = report.last_accepted_round {
        println!("your last accepted update: round {round}");
    }
}

impl StatusArgs {
    /// Runs `mpcl status`.
    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async {
            let config = self.connect.session_config().await?;
            let Some(every) = self.watch else {
                let report = query_status(&config)
                    .await
                    .map_err(|e| self.connect.explain(e.into()))?;
                print_report(&report);
                return Ok(());
            };
            if !(every.is_finite() && every > 0.0) {
                bail!("--watch must be a positive number of seconds, got {every}");
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(super::coordinator::cancel_on_signal(shutdown.clone()));
            loop {
                let started = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() % 86_400)
                    .unwrap_or(0);
                let clock = format!(
                    "{:02}:{:02}:{:02}",
                    started / 3600,
                    started / 60 % 60,
                    started % 60
                );
                match query_status(&config).await {
                    Ok(report) => {
                        println!("{clock} {}", status_line(&report));
                        if report.phase == RoundPhase::Finished {
                            return Ok(());
                        }
                    }
                    Err(error) if error.is_fatal() => {
                        return Err(self.connect.explain(error.into()));
                    }
                    Err(error) => println!("{clock} not reachable: {error}"),
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs_f64(every)) => {}
                }
            }
        })
    }
}
