//! `mpcl coordinator`: runs the coordinator of a federated run over QUIC. The server itself is
//! `mpcl_coordinator::server`; this file turns the run file's schema spec and `[model]` table
//! into the initial global state, and wires the output folder and signals.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::evaluation::FederatedMetrics;
use mpcl_coordinator::final_table::FINAL_MARKDOWN_FILE;
use mpcl_coordinator::server::{
    CHECKPOINT_FILE, ROUND_LOG_FILE, RunFile, Server, ServerSetup, checkpoint_path, new_run_id,
    resume_coordinator,
};
use mpcl_data::Schema;
use mpcl_model::{Device, MpclModel};
use mpcl_protocol::{Enrolment, NodeIdentity};
use tokio_util::sync::CancellationToken;

/// File name of the run file copy in the output folder.
pub const SAVED_CONFIG_FILE: &str = "config.toml";
/// File name of the enrolment copy in the output folder.
pub const SAVED_ENROLMENT_FILE: &str = "enrolment.toml";

/// Run the coordinator of a federated run: admit enrolled participants over QUIC, hand out
/// rounds, verify and aggregate their signed updates, checkpoint after every round.
///
/// Prints `listening on ADDR` as the first line on stdout (useful with port 0), logs to stderr.
/// Writes to --out: config.toml (the run file), enrolment.toml, checkpoint.bin (and its previous
/// copy checkpoint.prev.bin) and rounds.jsonl (one JSON line per aggregated round, with the
/// federated metrics of that round's model); with [evaluation] on (the default) also
/// checkpoint.best.bin (the round with the lowest federated validation KL) and, at the end,
/// final.md and final.csv (last round, best round and label prior on the clients' own test
/// parts), which it also prints. Ctrl-C or
/// SIGTERM writes a checkpoint and exits 0; `--resume` continues from it. Nothing is written
/// before the port is bound, so a port in use leaves --out as it was.
///
/// Prints one line per aggregated round on stdout (round, updates, samples, train loss, time).
/// `mpcl init DIR` writes a run-file template listing every key with its default.
#[derive(Debug, Args)]
#[command(
    override_usage = "mpcl coordinator --config <FILE> --enrol <FILE> --key <DIR> --out <DIR> [OPTIONS]\n       \
                           mpcl coordinator --resume --enrol <FILE> --key <DIR> --out <DIR> [OPTIONS]"
)]
pub struct CoordinatorArgs {
    /// Run file (TOML): the run configuration (rounds, clients per round, deadline, training,
    /// aggregation), `schema = "synthetic" | DATASET_SPEC`, a `[model]` table and an optional
    /// `[network]` table (keep-alive, idle timeout, upload concurrency). Required for a new run;
    /// with --resume the copy saved in --out is used (if given, it must be the same).
    #[arg(long, value_name = "FILE", required_unless_present = "resume")]
    config: Option<PathBuf>,

    /// Enrolment file: the `[[participant]]` ids and public keys allowed to join (as printed by
    /// `mpcl keygen`). Anyone else fails the TLS handshake.
    #[arg(long, value_name = "FILE")]
    enrol: PathBuf,

    /// The coordinator's key directory (from `mpcl keygen`). Participants pin its public key
    /// (DIR/public_key.hex).
    #[arg(long, value_name = "DIR")]
    key: PathBuf,

    /// UDP address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4433")]
    listen: SocketAddr,

    /// Output folder for the saved config, checkpoints and the round log.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Continue the run whose checkpoint is in --out (after a crash or a Ctrl-C).
    #[arg(long)]
    resume: bool,

    /// Serve a read-only live dashboard over HTTP on ADDR (e.g. 127.0.0.1:8080; port 0 picks a
    /// free one). Off by default. Its URL, with a fresh access token, is printed at start
    /// (`dashboard: http://...`); requests without the token get 401. Keep it on loopback and
    /// use an SSH tunnel to view it from elsewhere (other addresses log a warning).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<SocketAddr>,
}

/// Turns a run file's `schema` spec into a schema: `synthetic` (the synthetic DMER layout with
/// the generator's default face width), `synthetic:FACE_WIDTH`, or a dataset spec that is opened
/// only to read its schema.
pub fn resolve_schema(spec: &str) -> anyhow::Result<Schema> {
    use mpcl_simulations::synthetic::{SyntheticConfig, synthetic_schema};
    if spec == "synthetic" {
        return Ok(synthetic_schema(SyntheticConfig::default().face_width));
    }
    if let Some(width) = spec.strip_prefix("synthetic:") {
        let width: usize = width
            .parse()
            .with_context(|| format!("schema `{spec}`: the face width must be a number"))?;
        return Ok(synthetic_schema(width));
    }
    // A study folder: only its schema.toml is read (it may hold no CSV yet).
    let study = spec.strip_prefix("study:").unwrap_or(spec);
    if mpcl_data::study::is_study_dir(Path::new(study)) {
        let schema = mpcl_data::study::read_schema_file(Path::new(study))
            .with_context(|| format!("cannot read the schema of study folder `{study}`"))?;
        return Ok(schema.schema);
    }
    let (dataset, _) = mpcl_data::open(spec)
        .with_context(|| format!("cannot open dataset `{spec}` to read its schema"))?;
    Ok(dataset.schema)
}

/// The run's initial model on the CPU, seeded with the run seed. With `start_at_label_prior`
/// its head starts at a (uniform) prior, zero weights, so that the opening round's logit offsets
/// alone make it predict the participants' label prior.
pub fn initial_model(run: &RunFile, schema: &Schema) -> anyhow::Result<MpclModel> {
    let mut model = MpclModel::new(schema, &run.model, &Device::flex(), run.coordinator.seed)
        .context("the [model] section does not fit the schema")?;
    if run.coordinator.start_at_label_prior {
        let emotions = schema.emotion_count();
        model.start_at_prior(&vec![1.0 / emotions as f32; emotions]);
    }
    Ok(model)
}

impl CoordinatorArgs {
    /// Runs `mpcl coordinator`.
    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> anyhow::Result<()> {
        // First, so that a busy port stops the coordinator before it writes anything.
        let dashboard = match self.dashboard {
            Some(addr) => Some(mpcl_dashboard::Dashboard::bind(addr).await?),
            None => None,
        };
        let identity = NodeIdentity::load(&self.key).with_context(|| {
            format!(
                "cannot load the coordinator key from {}",
                self.key.display()
            )
        })?;
        let enrolment = Enrolment::load(&self.enrol)?;
        let saved_config = self.out.join(SAVED_CONFIG_FILE);

        let (run, coordinator, schema) = if self.resume {
            let run = RunFile::load(&saved_config).with_context(|| {
                format!(
                    "--resume needs the run file saved in {}",
                    self.out.display()
                )
            })?;
            if let Some(path) = &self.config {
                let given = RunFile::load(path)?;
                let same = given.coordinator == run.coordinator
                    && given.schema == run.schema
                    && given.model == run.model
                    && given.network == run.network;
                if !same {
                    bail!(
                        "{} differs from the run file this run started with ({}); a resumed \
                         run keeps its configuration (leave out --config, or start a new run \
                         in another --out)",
                        path.display(),
                        saved_config.display()
                    );
                }
            }
            let coordinator = resume_coordinator(&self.out)?;
            let schema = resolve_schema(&run.schema)?;
            let model = initial_model(&run, &schema)?;
            model
                .parameters()
                .check_same_layout(&coordinator.global_state().parameters)
                .context("the checkpoint does not fit the model of the saved run file")?;
            (run, coordinator, schema)
        } else {
            let Some(path) = &self.config else {
                bail!("--config FILE is required for a new run (or --resume to continue one)");
            };
            let run = RunFile::load(path)?;
            if checkpoint_path(&self.out).exists() {
                bail!(
                    "{} already holds a run ({CHECKPOINT_FILE}); continue it with --resume or \
                     choose another --out",
                    self.out.display()
                );
            }
            let schema = resolve_schema(&run.schema)?;
            let model = initial_model(&run, &schema)?;
            let coordinator =
                Coordinator::new(run.coordinator.clone(), new_run_id(), model.global_state())?;
            (run, coordinator, schema)
        };
        let run_text = (!self.resume).then(|| run.text.clone());
        let enrolment_text = enrolment.to_toml();
        let setup = ServerSetup {
            coordinator,
            identity,
            enrolment,
            model_config: run.model.clone(),
            schema,
            network: run.network.clone(),
            listen: self.listen,
            out_dir: self.out.clone(),
        };
        let mut server = Server::bind(setup).with_context(|| {
            format!(
                "cannot start the coordinator (enrolment {}, run file {})",
                self.enrol.display(),
                self.config.as_deref().unwrap_or(&saved_config).display()
            )
        })?;
        // Bound: only now is anything written to --out.
        if let Some(text) = run_text {
            write_file(&saved_config, &text)?;
        }
        write_file(&self.out.join(SAVED_ENROLMENT_FILE), &enrolment_text)?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {}", server.local_addr())?;
        stdout.flush()?;
        let rounds = server.observe_rounds();
        tokio::spawn(print_rounds(rounds, run.coordinator.rounds));

        let shutdown = CancellationToken::new();
        if let Some(dashboard) = dashboard {
            writeln!(stdout, "dashboard: {}", dashboard.url())?;
            stdout.flush()?;
            let round_log = self.out.join(ROUND_LOG_FILE);
            mpcl_dashboard::spawn_beside(&mut server, dashboard, round_log, shutdown.clone());
        }
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let outcome = server.run(shutdown).await?;
        if outcome.finished {
            if let Some(last) = outcome
                .evaluations
                .last()
                .filter(|m| m.round == outcome.completed_rounds)
            {
                println!("{}", evaluation_line(last));
            }
            if let Ok(text) = std::fs::read_to_string(self.out.join(FINAL_MARKDOWN_FILE)) {
                println!("\n{text}");
            }
            println!(
                "finished {} rounds; results in {} ({CHECKPOINT_FILE}, {ROUND_LOG_FILE})",
                outcome.completed_rounds,
                self.out.display()
            );
        } else {
            println!(
                "stopped after {} completed rounds; continue with --resume --out {}",
                outcome.completed_rounds,
                self.out.display()
            );
        }
        Ok(())
    }
}

/// One line per aggregated round on stdout, so that a coordinator without a terminal (nohup,
/// ssh, CI) shows its progress as it goes.
async fn print_rounds(
    mut rounds: tokio::sync::mpsc::UnboundedReceiver<mpcl_coordinator::server::AggregatedRound>,
    total: u64,
) {
    while let Some(round) = rounds.recv().await {
        if let Some(metrics) = &round.evaluated {
            println!("{}", evaluation_line(metrics));
        }
        println!("{}", round_line(&round, total));
        let _ = std::io::stdout().flush();
    }
}

/// The stdout line of one aggregated round.
fn round_line(round: &mpcl_coordinator::server::AggregatedRound, total: u64) -> String {
    let summary = &round.summary;
    let loss = summary
        .mean_train_loss
        .map_or_else(|| "-".to_string(), |l| format!("{l:.4}"));
    let mut line = format!(
        "round {}/{total} aggregated: {} update(s), {} samples, train loss {loss}",
        summary.round,
        summary.contributors.len(),
        summary.total_samples,
    );
    if summary.rejected > 0 {
        line.push_str(&format!(", {} rejected", summary.rejected));
    }
    if let Some(epsilon) = summary.epsilon() {
        line.push_str(&format!(", epsilon {epsilon:.3}"));
    }
    if let Some(seconds) = round.traffic.wall_seconds {
        line.push_str(&format!(" ({seconds:.1} s)"));
    }
    line
}

/// The stdout line of one evaluated global model.
fn evaluation_line(m: &FederatedMetrics) -> String {
    let mut line = format!(
        "model after round {} evaluated by {} participant(s): validation KL {:.4}, test KL {:.4} (label prior {:.4}) on {} test samples",
        m.round, m.clients, m.validation.kl, m.test.kl, m.prior_test.kl, m.test.samples
    );
    if let Some(c) = &m.prior_comparison {
        line.push_str(&format!(
            "; KL − prior {} over participants: {}",
            c.interval_text(),
            c.verdict()
        ));
    }
    line
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Cancels `token` on Ctrl-C or (on Unix) SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received: shutting down");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A study folder holding only its schema.toml serves as a run's schema (no CSV needed).
    #[test]
    fn a_study_folder_with_only_a_schema_gives_the_schema() -> anyhow::Result<()> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/tests/fixtures/study/valid/schema.toml");
        let dir = tempfile::tempdir()?;
        std::fs::copy(&fixture, dir.path().join("schema.toml"))?;
        let spec = format!("study:{}", dir.path().display());
        let schema = resolve_schema(&spec)?;
        assert!(schema.emotion_count() > 0);
        assert_eq!(resolve_schema(&dir.path().display().to_string())?, schema);
        Ok(())
    }
}
