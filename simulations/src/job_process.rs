//! One (partition, arm) job of an in-process simulation in a child process of its own.
//!
//! Why: every autodiff operation of burn 0.22 registers in one process-wide graph registry
//! behind one lock, and every backward pass sweeps the whole registry. Two jobs training on two
//! threads of one process therefore slow each other down (the default `mpcl simulate` on this
//! 2-core machine: 29% more CPU on two threads than on one), while two processes do not (5%;
//! NOTES.md, session 8). So `mpcl simulate` runs each job in a child process (its own registry),
//! and the simulation's process only gathers their rounds and outcomes.
//!
//! The parent writes the (sampled) dataset once as a bit-exact snapshot
//! ([`mpcl_data::snapshot`]) and starts `PROGRAM simulate-job` per job with a [`JobSpec`] (JSON)
//! on its stdin. The child rebuilds the job's partition exactly as the parent does (the same
//! split, standardisation and initial weights from the same seed), runs it with
//! [`run_job`], and writes frames to its stdout: one per round, then the outcome (or why it
//! failed). Frames are the protocol's own ([`mpcl_protocol::framing`]: bincode payloads behind a
//! little-endian `u32` length), so floats cross bit for bit and the outputs are identical to a
//! one-thread run (tested in `tests/processes/simulate_jobs.rs`).

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use mpcl_data::Dataset;
use mpcl_data::snapshot::{read_snapshot, write_snapshot};
use mpcl_protocol::codec::{CodecError, HARD_MAX_MESSAGE_BYTES, MessageLimits};
use mpcl_protocol::framing::{read_message_blocking, write_message_blocking};
use serde::{Deserialize, Serialize};

use crate::simulate::{
    Arm, FederationMode, JobOutcome, PartitionSets, RoundReport, SimulationConfig, SimulationError,
    config_partitions, run_job,
};

/// The hidden subcommand of `mpcl` that runs one job ([`serve_job`]).
pub const SIMULATE_JOB_COMMAND: &str = "simulate-job";

/// The program that runs jobs: `program args... simulate-job`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobProgram {
    pub program: PathBuf,
    /// Arguments before [`SIMULATE_JOB_COMMAND`] (none for `mpcl`).
    pub args: Vec<String>,
}

impl JobProgram {
    /// The `mpcl` executable at `program`.
    pub fn mpcl(program: PathBuf) -> Self {
        Self {
            program,
            args: Vec::new(),
        }
    }
}

/// What a job process is asked to run (its stdin, JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobSpec {
    pub(crate) config: SimulationConfig,
    /// Index into the config's partitions.
    pub(crate) partition: usize,
    pub(crate) arm: Arm,
    /// Participants a federated arm trains at once.
    pub(crate) threads: usize,
}

/// The request on the wire: the spec and where the dataset snapshot is.
#[derive(Serialize, Deserialize)]
struct JobRequest {
    spec: JobSpec,
    snapshot: PathBuf,
}

/// What a job process writes to its stdout.
#[derive(Serialize, Deserialize)]
enum JobFrame {
    Round(RoundReport),
    Finished(Box<JobOutcome>),
    /// The job failed: its error, with its causes.
    Failed(String),
}

/// The child processes of one simulation, and the dataset snapshot they read.
pub(crate) struct JobProcesses<'a> {
    program: &'a JobProgram,
    /// Holds the snapshot; removed when the simulation ends.
    folder: tempfile::TempDir,
}

impl<'a> JobProcesses<'a> {
    /// Writes `dataset`'s snapshot for the jobs of `program` to come.
    pub(crate) fn new(program: &'a JobProgram, dataset: &Dataset) -> Result<Self, SimulationError> {
        let folder = tempfile::Builder::new()
            .prefix("mpcl-simulate-jobs")
            .tempdir()
            .map_err(|source| SimulationError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let processes = Self { program, folder };
        write_snapshot(dataset, &processes.snapshot())
            .map_err(|e| SimulationError::Load(e.into()))?;
        Ok(processes)
    }

    /// The dataset snapshot every job reads.
    fn snapshot(&self) -> PathBuf {
        self.folder.path().join("dataset.json")
    }

    /// Runs `spec` in a child process named `job` in errors, handing its rounds to `on_round`
    /// as they come. The child is killed if `on_round` fails.
    pub(crate) fn run(
        &self,
        spec: &JobSpec,
        job: &str,
        on_round: &mut dyn FnMut(RoundReport) -> Result<(), SimulationError>,
    ) -> Result<JobOutcome, SimulationError> {
        let failed = |reason: String| SimulationError::JobProcess {
            job: job.to_string(),
            reason,
        };
        let mut child = Command::new(&self.program.program)
            .args(&self.program.args)
            .arg(SIMULATE_JOB_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot start `{}`: {e}",
                    self.program.program.display()
                ))
            })?;
        let request = JobRequest {
            spec: spec.clone(),
            snapshot: self.snapshot(),
        };
        let sent = child
            .stdin
            .take()
            .map(|stdin| serde_json::to_writer(stdin, &request));
        if let Some(Err(error)) = sent {
            return Err(failed(ended(
                &mut child,
                &format!("cannot send the job: {error}"),
            )));
        }
        let mut frames = BufReader::new(child.stdout.take().expect("stdout is piped"));
        loop {
            match read_frame(&mut frames) {
                Ok(JobFrame::Round(report)) => {
                    if let Err(error) = on_round(report) {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(error);
                    }
                }
                Ok(JobFrame::Finished(outcome)) => {
                    let _ = child.wait();
                    return Ok(*outcome);
                }
                Ok(JobFrame::Failed(reason)) => {
                    let _ = child.wait();
                    return Err(failed(reason));
                }
                Err(error) => {
                    return Err(failed(ended(
                        &mut child,
                        &format!("no result from the job process ({error})"),
                    )));
                }
            }
        }
    }
}

/// `what` went wrong with `child`: waits for it and adds how it ended.
fn ended(child: &mut Child, what: &str) -> String {
    let _ = child.kill();
    match child.wait() {
        Ok(status) => format!("{what}; the process ended with {status}"),
        Err(e) => format!("{what}; cannot wait for the process: {e}"),
    }
}

/// The child's side (`mpcl simulate-job`): reads a request from `input`, runs the job and
/// writes its frames to `output`. A failed job is reported in a frame (the parent names the
/// job); the `Err` returned is only for a request that cannot be read or frames that cannot be
/// written.
pub fn serve_job(input: impl Read, mut output: impl Write) -> Result<(), SimulationError> {
    let request: JobRequest = serde_json::from_reader(input)
        .map_err(|e| SimulationError::Config(format!("invalid job request on stdin: {e}")))?;
    let mut write = |frame: &JobFrame| {
        write_frame(&mut output, frame).map_err(|e| SimulationError::Write {
            path: PathBuf::from("<stdout>"),
            source: std::io::Error::other(e),
        })
    };
    let frame = match run_request(&request, &mut |report| write(&JobFrame::Round(report))) {
        Ok(outcome) => JobFrame::Finished(Box::new(outcome)),
        Err(error) => JobFrame::Failed(with_causes(&error)),
    };
    write(&frame)
}

fn run_request(
    request: &JobRequest,
    on_round: &mut dyn FnMut(RoundReport) -> Result<(), SimulationError>,
) -> Result<JobOutcome, SimulationError> {
    let JobSpec {
        config,
        partition,
        arm,
        threads,
    } = &request.spec;
    let dataset = read_snapshot(&request.snapshot).map_err(|e| SimulationError::Load(e.into()))?;
    let device = config.device.resolve()?.device;
    let parts = config_partitions(&dataset, config)?;
    let part = parts.get(*partition).ok_or_else(|| {
        SimulationError::Config(format!(
            "job for partition {partition}, but the protocol gives {}",
            parts.len()
        ))
    })?;
    let set = PartitionSets::new(&dataset, part, config, &device)?;
    let federation = FederationMode::InProcess { threads: *threads };
    run_job(*arm, &set, &federation, config, &device, on_round)
}

/// `error`'s message followed by those of its causes that it does not already contain.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = source.source();
    }
    message
}

/// Job frames come from this program's own child: the protocol's hard cap is the only limit.
fn limits() -> MessageLimits {
    MessageLimits::new(HARD_MAX_MESSAGE_BYTES).expect("the hard cap is a valid limit")
}

fn write_frame(output: &mut impl Write, frame: &JobFrame) -> Result<(), CodecError> {
    write_message_blocking(output, frame, &limits())
}

fn read_frame(input: &mut impl Read) -> Result<JobFrame, CodecError> {
    read_message_blocking(input, &limits())
}

#[cfg(test)]
mod tests {
    use mpcl_coordinator::TrainingSettings;
    use mpcl_data::ModelConfig;

    use super::*;
    use crate::evaluation::EvaluationProtocol;
    use crate::synthetic::{SyntheticConfig, generate};

    fn config() -> SimulationConfig {
        SimulationConfig {
            dataset: "synthetic".into(),
            synthetic: SyntheticConfig {
                subjects: 3,
                trials_per_subject: 6,
                windows_per_trial: 2,
                ..SyntheticConfig::default()
            },
            protocol: EvaluationProtocol::SubjectIndependent { folds: 3 },
            model: ModelConfig::tiny(),
            rounds: 2,
            training: TrainingSettings {
                local_epochs: 1,
                batch_size: 8,
                learning_rate: 1e-2,
                ..TrainingSettings::default()
            },
            ..SimulationConfig::default()
        }
    }

    /// Runs a request through [`serve_job`] and returns the frames it wrote.
    fn serve(request: &JobRequest) -> Vec<JobFrame> {
        let input = serde_json::to_vec(request).unwrap();
        let mut output = Vec::new();
        serve_job(input.as_slice(), &mut output).unwrap();
        let mut frames = Vec::new();
        let mut reader = output.as_slice();
        while !reader.is_empty() {
            frames.push(read_frame(&mut reader).unwrap());
        }
        frames
    }

    #[test]
    fn a_served_job_reports_every_round_and_the_outcome_of_the_same_job_on_a_thread() {
        let config = config();
        let dataset = generate(&config.synthetic);
        let program = JobProgram::mpcl("unused".into());
        let processes = JobProcesses::new(&program, &dataset).unwrap();
        let spec = JobSpec {
            config: config.clone(),
            partition: 1,
            arm: Arm::Federated,
            threads: 1,
        };
        let frames = serve(&JobRequest {
            spec: spec.clone(),
            snapshot: processes.snapshot(),
        });

        let device = config.device.resolve().unwrap().device;
        let parts = config_partitions(&dataset, &config).unwrap();
        let set = PartitionSets::new(&dataset, &parts[1], &config, &device).unwrap();
        let mut rounds = Vec::new();
        let JobOutcome {
            trace,
            state,
            stopped,
            ..
        } = run_job(
            Arm::Federated,
            &set,
            &FederationMode::InProcess { threads: 1 },
            &config,
            &device,
            &mut |report| {
                rounds.push(report);
                Ok(())
            },
        )
        .unwrap();

        assert_eq!(frames.len(), 3, "two rounds and the outcome");
        for (frame, expected) in frames.iter().zip(&rounds) {
            let JobFrame::Round(report) = frame else {
                panic!("a round frame expected");
            };
            assert_eq!((report.round, report.kl), (expected.round, expected.kl));
            assert!(
                report.json.contains("\"partition\":\"fold 2/3\""),
                "{}",
                report.json
            );
        }
        let JobFrame::Finished(outcome) = &frames[2] else {
            panic!("the outcome expected last");
        };
        let (served_trace, served_state, served_stopped) =
            (&outcome.trace, &outcome.state, &outcome.stopped);
        assert_eq!(served_trace.predictions, trace.predictions);
        assert_eq!(served_trace.best.round(), trace.best.round());
        assert!(served_state == &state && state.is_some());
        assert_eq!(served_stopped, &stopped);
    }

    #[test]
    fn a_job_that_cannot_run_reports_why_in_its_last_frame() {
        let spec = JobSpec {
            config: config(),
            partition: 0,
            arm: Arm::Centralized,
            threads: 1,
        };
        let frames = serve(&JobRequest {
            spec: spec.clone(),
            snapshot: PathBuf::from("/nonexistent/dataset.json"),
        });
        let [JobFrame::Failed(reason)] = frames.as_slice() else {
            panic!("one failure frame expected");
        };
        assert!(reason.contains("/nonexistent/dataset.json"), "{reason}");

        // A partition the protocol does not have.
        let dataset = generate(&spec.config.synthetic);
        let program = JobProgram::mpcl("unused".into());
        let processes = JobProcesses::new(&program, &dataset).unwrap();
        let frames = serve(&JobRequest {
            spec: JobSpec {
                partition: 7,
                ..spec
            },
            snapshot: processes.snapshot(),
        });
        let [JobFrame::Failed(reason)] = frames.as_slice() else {
            panic!("one failure frame expected");
        };
        assert!(reason.contains("partition 7"), "{reason}");
    }

    #[test]
    fn a_garbled_request_is_an_error_not_a_frame() {
        let mut output = Vec::new();
        let error = serve_job(&b"{not json"[..], &mut output).unwrap_err();
        assert!(error.to_string().contains("job request"), "{error}");
        assert!(output.is_empty());
    }
}
