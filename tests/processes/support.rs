//! What the process-level tests share: a run folder with keys made by `mpcl keygen`, an
//! enrolment and a run file for a tiny model on the synthetic data; coordinator and client
//! processes whose logs go to files that the tests read; and [`check_run`], which reads what a
//! finished run left on disk and replays it.
//!
//! The replay is the check that "nothing was lost and nothing else got in": starting from the
//! run's initial model, every round's recorded contributors (the round log, in arrival order)
//! are trained again in this process from the replayed global state with the seeds the
//! coordinator hands out, and aggregated with the coordinator's own aggregator. The result must
//! equal the checkpoint's final global state exactly: any lost round, extra or missing update,
//! or update trained from another state would show.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mpcl_client::{Participant, ParticipantSettings};
use mpcl_coordinator::round::training_config;
use mpcl_coordinator::round_log::{RoundRecord, read_round_log};
use mpcl_coordinator::server::{CHECKPOINT_FILE, ROUND_LOG_FILE, RunFile};
use mpcl_coordinator::{Checkpoint, ParticipantId, RoundAggregator};
use mpcl_data::Dataset;
use mpcl_model::{Device, ModelPool, MpclModel};
use mpcl_protocol::identity::read_public_key_file;
use mpcl_protocol::messages::GlobalState;
use mpcl_simulations::synthetic::{SyntheticConfig, generate, synthetic_schema};
use tempfile::TempDir;

/// The binary under test.
pub const MPCL: &str = env!("CARGO_BIN_EXE_mpcl");

/// How long any one thing the tests wait for may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The shape of a test run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub rounds: u64,
    /// Participants sampled per round.
    pub clients_per_round: usize,
    /// Accepted updates a round needs.
    pub min_clients: usize,
    /// Participants that must be connected before a round starts.
    pub min_available: usize,
    pub deadline_secs: u64,
    /// How long the coordinator keeps answering `Finished` to clients still connected.
    pub finish_grace_secs: u64,
    /// Federated evaluation (`[evaluation] enabled`): off in the protocol and fault tests, which
    /// count rounds and messages of training alone.
    pub evaluation: bool,
    /// The opening label-prior round (`start_at_label_prior`): off here for the same reason
    /// (and because `check_run` replays the training rounds from the initial model); it has
    /// tests of its own.
    pub label_prior: bool,
}

impl RunSpec {
    /// Every one of `clients` clients trains every round.
    pub fn all(rounds: u64, clients: usize) -> Self {
        Self {
            rounds,
            clients_per_round: clients,
            min_clients: clients,
            min_available: clients,
            deadline_secs: 60,
            finish_grace_secs: 3,
            evaluation: false,
            label_prior: false,
        }
    }

    fn toml(&self) -> String {
        format!(
            r#"name = "fault-test"
seed = 7
rounds = {rounds}
clients_per_round = {per_round}
min_clients_to_aggregate = {min}
min_available_clients = {available}
round_deadline_secs = {deadline}
start_at_label_prior = {label_prior}
schema = "synthetic"

[training]
local_epochs = 1
batch_size = 16
learning_rate = 0.01

[evaluation]
enabled = {evaluation}

[model]
width = 16
prototypes_per_emotion = 2
memory_slots = 4

[network]
keep_alive_secs = 0.5
idle_timeout_secs = 3
poll_interval_ms = 50
request_timeout_secs = 5
finish_grace_secs = {grace}
"#,
            rounds = self.rounds,
            per_round = self.clients_per_round,
            min = self.min_clients,
            available = self.min_available,
            deadline = self.deadline_secs,
            grace = self.finish_grace_secs,
            evaluation = self.evaluation,
            label_prior = self.label_prior,
        )
    }
}

/// A run folder: keys, enrolment, run file, the coordinator's output folder and the logs.
pub struct RunDir {
    dir: TempDir,
    /// Participant names; participant `i` trains on synthetic subject `i`.
    pub names: Vec<String>,
}

impl RunDir {
    /// Keys for a coordinator and for `names` (made by `mpcl keygen`), their enrolment and a
    /// run file for `spec`.
    pub fn new(names: &[&str], spec: &RunSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let mut enrolment = String::new();
        for name in std::iter::once(&"coordinator").chain(names) {
            let keys = dir.path().join("keys").join(name);
            let output = Command::new(MPCL)
                .args(["keygen", "--id", name, "--out"])
                .arg(&keys)
                .output()?;
            ensure!(output.status.success(), "mpcl keygen failed: {output:?}");
            if *name != "coordinator" {
                let key = std::fs::read_to_string(keys.join("public_key.hex"))?;
                enrolment.push_str(&format!(
                    "[[participant]]\nid = \"{name}\"\npublic_key = \"{}\"\n\n",
                    key.trim()
                ));
            }
        }
        std::fs::write(dir.path().join("enrolment.toml"), enrolment)?;
        std::fs::write(dir.path().join("run.toml"), spec.toml())?;
        Ok(Self {
            dir,
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The coordinator's output folder.
    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.out().join(CHECKPOINT_FILE)
    }

    /// A key directory made by `mpcl keygen` (a participant's or "coordinator").
    pub fn key_dir(&self, name: &str) -> PathBuf {
        self.path().join("keys").join(name)
    }

    /// Starts `mpcl coordinator` listening on `listen` (`127.0.0.1:0` for any port), with
    /// `--resume` when `resume`; waits until it prints its address. Its log is `logs/LABEL.log`.
    pub fn coordinator(&self, label: &str, listen: &str, resume: bool) -> anyhow::Result<Process> {
        let mut process = self.spawn_coordinator(label, listen, resume)?;
        process.wait_for_stdout("listening on", PATIENCE)?;
        Ok(process)
    }

    /// Starts `mpcl coordinator` like [`RunDir::coordinator`] without waiting for anything.
    pub fn spawn_coordinator(
        &self,
        label: &str,
        listen: &str,
        resume: bool,
    ) -> anyhow::Result<Process> {
        self.spawn_coordinator_with(label, listen, resume, &[])
    }

    /// [`RunDir::spawn_coordinator`] with `extra` flags.
    pub fn spawn_coordinator_with(
        &self,
        label: &str,
        listen: &str,
        resume: bool,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(MPCL);
        command
            .arg("coordinator")
            .arg("--enrol")
            .arg(self.path().join("enrolment.toml"))
            .arg("--key")
            .arg(self.key_dir("coordinator"))
            .args(["--listen", listen])
            .arg("--out")
            .arg(self.out());
        if resume {
            command.arg("--resume");
        } else {
            command.arg("--config").arg(self.path().join("run.toml"));
        }
        command.args(extra);
        self.spawn(label, command)
    }

    /// Starts `mpcl client` for participant `name` (subject `index` of the synthetic data) with
    /// short network timeouts and `extra` flags. Its log is `logs/LABEL.log`.
    pub fn client(
        &self,
        label: &str,
        name: &str,
        coordinator: &Process,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let index = self
            .names
            .iter()
            .position(|n| n == name)
            .with_context(|| format!("no participant {name}"))?;
        self.client_command(label, &self.key_dir(name), index, coordinator, extra)
    }

    /// Starts `mpcl client` with the key in `key_dir` (enrolled or not) on subject 0.
    pub fn client_with_key(
        &self,
        label: &str,
        key_dir: &Path,
        coordinator: &Process,
    ) -> anyhow::Result<Process> {
        self.client_command(label, key_dir, 0, coordinator, &[])
    }

    fn client_command(
        &self,
        label: &str,
        key_dir: &Path,
        index: usize,
        coordinator: &Process,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let mut command = Command::new(MPCL);
        command
            .arg("client")
            .args(["--coordinator", &coordinator.address()?.to_string()])
            .arg("--coordinator-key")
            .arg(self.key_dir("coordinator").join("public_key.hex"))
            .arg("--key")
            .arg(key_dir)
            .args(["--data", &format!("synthetic:{index}")])
            .args(["--keep-alive-secs", "0.5", "--idle-timeout-secs", "3"])
            .args(["--connect-timeout-secs", "2", "--give-up-after-secs", "60"])
            .args(extra);
        self.spawn(label, command)
    }

    fn spawn(&self, label: &str, mut command: Command) -> anyhow::Result<Process> {
        let log = self.path().join("logs").join(format!("{label}.log"));
        let stdout = self.path().join("logs").join(format!("{label}.out"));
        let child = command
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {label}"))?;
        Ok(Process {
            child,
            label: label.to_string(),
            log,
            stdout,
            status: None,
        })
    }

    /// The participant name of every enrolled key.
    pub fn names_by_id(&self) -> anyhow::Result<BTreeMap<ParticipantId, String>> {
        let mut names = BTreeMap::new();
        for name in &self.names {
            let key = read_public_key_file(&self.key_dir(name).join("public_key.hex"))?;
            names.insert(ParticipantId(key.to_bytes()), name.clone());
        }
        Ok(names)
    }
}

/// A running `mpcl` process whose stderr (the log) and stdout go to files.
pub struct Process {
    child: Child,
    pub label: String,
    pub log: PathBuf,
    stdout: PathBuf,
    status: Option<ExitStatus>,
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn matches(line: &str, needles: &[&str]) -> bool {
    needles.iter().all(|n| line.contains(n))
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        lines_of(&self.log)
            .into_iter()
            .filter(|l| matches(l, needles))
            .collect()
    }

    /// The whole log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits for a log line containing every one of `needles`; fails (quoting the log) when
    /// the process exits first or `within` passes.
    pub fn wait_for_log(&mut self, needles: &[&str], within: Duration) -> anyhow::Result<String> {
        self.wait_for_count(needles, 1, within)
    }

    /// Waits until `count` log lines contain every one of `needles`; returns the last.
    pub fn wait_for_count(
        &mut self,
        needles: &[&str],
        count: usize,
        within: Duration,
    ) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let found = self.log_lines(needles);
            if found.len() >= count {
                return Ok(found[count - 1].clone());
            }
            if let Some(status) = self.try_status()? {
                bail!(
                    "{} exited ({status}) before logging {needles:?}:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            if start.elapsed() > within {
                bail!(
                    "{} did not log {needles:?} within {within:?}:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a line on stdout containing `needle`.
    pub fn wait_for_stdout(&mut self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = lines_of(&self.stdout)
                .into_iter()
                .find(|l| l.contains(needle))
            {
                return Ok(line);
            }
            if let Some(status) = self.try_status()? {
                bail!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            if start.elapsed() > within {
                bail!(
                    "{} did not print {needle:?} within {within:?}:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address a coordinator printed.
    pub fn address(&self) -> anyhow::Result<std::net::SocketAddr> {
        let line = lines_of(&self.stdout)
            .into_iter()
            .find(|l| l.contains("listening on"))
            .with_context(|| format!("{} printed no address", self.label))?;
        line.trim_start_matches("listening on")
            .trim()
            .parse()
            .with_context(|| format!("unreadable address in {line:?}"))
    }

    fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// SIGKILL: the process dies at once, writing nothing more.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.status = Some(self.child.wait()?);
        Ok(())
    }

    /// Sends SIGINT (what Ctrl-C in a terminal does).
    pub fn interrupt(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill -INT failed");
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if start.elapsed() > within {
                bail!(
                    "{} did not exit within {within:?}:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit and requires exit status 0.
    pub fn wait_success(&mut self, within: Duration) -> anyhow::Result<()> {
        let status = self.wait(within)?;
        ensure!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.label,
            self.log_text()
        );
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished run left on disk, checked and replayed (see the module documentation).
pub struct CheckedRun {
    pub checkpoint: Checkpoint,
    /// The last record of each round, in round order.
    pub records: Vec<RoundRecord>,
    /// The contributors' names of each round, in arrival order.
    pub contributors: Vec<Vec<String>>,
}

/// Checks the finished run in `run`'s output folder: the checkpoint is intact and complete, the
/// round log has every round once with the checkpoint's contributors, and replaying the
/// recorded contributors gives exactly the final global state.
pub fn check_run(run: &RunDir, rounds: u64) -> anyhow::Result<CheckedRun> {
    let checkpoint = mpcl_coordinator::read_checkpoint(run.checkpoint())?;
    ensure!(
        checkpoint.completed_rounds == rounds,
        "the checkpoint has {} completed rounds, expected {rounds}",
        checkpoint.completed_rounds
    );
    ensure!(checkpoint.history.len() as u64 == rounds);
    let records = read_round_log(run.out().join(ROUND_LOG_FILE))?;
    ensure!(
        records.iter().map(|r| r.round).collect::<Vec<_>>() == (1..=rounds).collect::<Vec<_>>(),
        "the round log holds rounds {:?}",
        records.iter().map(|r| r.round).collect::<Vec<_>>()
    );
    let names = run.names_by_id()?;
    let mut contributors = Vec::new();
    for (record, summary) in records.iter().zip(&checkpoint.history) {
        let from_history: Vec<ParticipantId> =
            summary.contributors.iter().map(|c| c.participant).collect();
        ensure!(
            record.participants == from_history,
            "round {}: the round log and the checkpoint disagree on the contributors",
            record.round
        );
        contributors.push(
            record
                .participants
                .iter()
                .map(|p| names.get(p).cloned().context("an unknown contributor"))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
    }
    let replayed = replay(run, &records)?;
    ensure!(
        replayed == checkpoint.global,
        "the final global state is not what the recorded contributors determine"
    );
    Ok(CheckedRun {
        checkpoint,
        records,
        contributors,
    })
}

/// Subject `index` of the default synthetic dataset (what `mpcl client --data synthetic:INDEX`
/// trains on).
fn synthetic_subject(all: &Dataset, index: usize) -> Dataset {
    all.subject_subset(&all.subjects()[index])
}

/// The global state after `records`, recomputed from the run file saved in the output folder.
fn replay(run: &RunDir, records: &[RoundRecord]) -> anyhow::Result<GlobalState> {
    let run_file = RunFile::load(run.out().join("config.toml"))?;
    let config = &run_file.coordinator;
    ensure!(
        run_file.schema == "synthetic",
        "the replay knows only the synthetic schema"
    );
    let schema = synthetic_schema(SyntheticConfig::default().face_width);
    let model_config = &run_file.model;
    let device = Device::flex();
    let mut state = MpclModel::new(&schema, model_config, &device, config.seed)?.global_state();
    let models = ModelPool::new(&schema, model_config, &device)?;
    let run_id = mpcl_coordinator::read_checkpoint(run.checkpoint())?.run_id;

    let all = generate(&SyntheticConfig::default());
    let index_of: BTreeMap<ParticipantId, usize> = run
        .names_by_id()?
        .into_iter()
        .map(|(id, name)| (id, run.names.iter().position(|n| *n == name).unwrap()))
        .collect();
    let mut participants: BTreeMap<ParticipantId, Participant> = BTreeMap::new();
    let mut adam = None;
    for record in records {
        let mut aggregator = RoundAggregator::with_policy(
            &state,
            &config.aggregation.rule,
            config.privacy.contribution_policy(),
        );
        for id in &record.participants {
            let participant = match participants.entry(*id) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let data = synthetic_subject(&all, index_of[id]);
                    entry.insert(Participant::new(
                        &data,
                        &models,
                        ParticipantSettings::default(),
                    )?)
                }
            };
            let training = training_config(config, record.round, id);
            let update = participant
                .train_round(run_id, record.round, &state, &training)?
                .update;
            aggregator.add(&update)?;
        }
        state = aggregator
            .finish(&state, &config.aggregation, &mut adam)?
            .state;
    }
    Ok(state)
}
