//! Load test (a benchmark, not a CI test): many participant nodes against one coordinator over
//! QUIC on loopback, with the tiny model.
//!
//! ```text
//! cargo run --release -p mpcl-tests --bin load-test -- [--clients 200] [--rounds 5]
//! ```
//!
//! The coordinator runs in a child process (this binary again, with `coordinator` as its first
//! argument) so that its peak memory is its own: it reports `VmHWM` from `/proc/self/status`
//! when the run is over. The participant nodes run as tokio tasks in this process, each with its
//! own QUIC endpoint and connection, training on one synthetic subject. Every client takes part
//! in every round. Reported: rounds completed, p50/p95 of the round wall time (from the round
//! log), the coordinator's peak memory, and rejected connections (refused handshakes in the
//! coordinator's log, failed connection attempts and errors on the clients' side).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mpcl_client::{Node, NodeConfig, NodeEvent, NodeOutcome, SessionConfig};
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::{NetworkSettings, ROUND_LOG_FILE, Server, ServerSetup};
use mpcl_coordinator::{Coordinator, CoordinatorConfig};
use mpcl_data::ModelConfig;
use mpcl_model::{Device, MpclModel};
use mpcl_protocol::identity::Participant as Enrolled;
use mpcl_protocol::{Enrolment, NodeIdentity, SigningKey};
use mpcl_simulations::synthetic::synthetic_schema;
use mpcl_tests::Federation;
use tokio_util::sync::CancellationToken;

const SEED: u64 = 7;
/// The synthetic data's face width in [`Federation::synthetic`].
const FACE_WIDTH: usize = 8;

struct Args {
    clients: usize,
    rounds: u64,
    out: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut parsed = Args {
        clients: 200,
        rounds: 5,
        out: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => parsed.clients = value()?.parse().context("--clients")?,
            "--rounds" => parsed.rounds = value()?.parse().context("--rounds")?,
            "--out" => parsed.out = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other} (use --clients N --rounds R)"),
        }
    }
    if parsed.clients == 0 || parsed.rounds == 0 {
        bail!("--clients and --rounds must be at least 1");
    }
    Ok(parsed)
}

/// Participant `index`'s key (deterministic, so both processes know the enrolment).
fn participant(index: usize) -> NodeIdentity {
    let mut seed = [0xA5u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    NodeIdentity::from_signing_key(Some(&format!("p{index:04}")), SigningKey::from_bytes(&seed))
        .expect("valid identity")
}

fn coordinator_identity() -> NodeIdentity {
    NodeIdentity::from_signing_key(Some("coordinator"), SigningKey::from_bytes(&[0xC0; 32]))
        .expect("valid identity")
}

fn enrolment(clients: usize) -> anyhow::Result<Enrolment> {
    Ok(Enrolment::from_participants(
        (0..clients)
            .map(|i| {
                let p = participant(i);
                Enrolled {
                    id: p.id().to_string(),
                    public_key: p.public_key(),
                }
            })
            .collect(),
    )?)
}

fn run_config(clients: usize, rounds: u64) -> CoordinatorConfig {
    let mut config = CoordinatorConfig {
        // The protocol alone: no evaluation round, no held-out data.
        evaluation: mpcl_coordinator::evaluation::EvaluationConfig::disabled(),
        start_at_label_prior: false,
        name: "load-test".into(),
        seed: SEED,
        rounds,
        clients_per_round: Some(clients),
        min_clients_to_aggregate: clients,
        min_available_clients: Some(clients),
        round_deadline_secs: 600,
        ..CoordinatorConfig::default()
    };
    config.training.local_epochs = 1;
    config.training.batch_size = 16;
    config.training.learning_rate = 0.01;
    config
}

/// Peak resident memory of this process in KiB (`VmHWM`), if the platform reports it.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The child: one coordinator, logs to stderr, `listening on ADDR` then a result line on stdout.
fn coordinator_role(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let out = args.out.context("the coordinator needs --out")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = run_config(args.clients, args.rounds);
        let schema = synthetic_schema(FACE_WIDTH);
        let state =
            MpclModel::new(&schema, &ModelConfig::tiny(), &Device::flex(), SEED)?.global_state();
        let setup = ServerSetup {
            coordinator: Coordinator::new(config, [9; 16], state)?,
            identity: coordinator_identity(),
            enrolment: enrolment(args.clients)?,
            model_config: ModelConfig::tiny(),
            schema: schema.clone(),
            network: NetworkSettings {
                keep_alive_secs: 2.0,
                idle_timeout_secs: 60.0,
                poll_interval_ms: 500,
                request_timeout_secs: 120.0,
                finish_grace_secs: 10.0,
                ..NetworkSettings::default()
            },
            listen: "127.0.0.1:0".parse()?,
            out_dir: out,
        };
        let server = Server::bind(setup)?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {}", server.local_addr())?;
        stdout.flush()?;
        let outcome = server.run(CancellationToken::new()).await?;
        writeln!(
            stdout,
            "result finished={} completed_rounds={} vm_hwm_kib={} cpu_seconds={:.2}",
            outcome.finished,
            outcome.completed_rounds,
            peak_memory_kib().unwrap_or(0),
            cpu_seconds().unwrap_or(f64::NAN)
        )?;
        Ok(())
    })
}

/// CPU time all threads of this process have used, in seconds (`utime + stime` from
/// `/proc/self/stat`, at the usual 100 clock ticks per second), if reported.
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("coordinator") {
        args.next();
        return coordinator_role(parse_args(args)?);
    }
    let args = parse_args(args)?;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let log_path = dir.path().join("coordinator.log");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["coordinator", "--clients", &args.clients.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .context("cannot start the coordinator process")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let first = lines.next().context("the coordinator printed nothing")??;
    let addr: SocketAddr = first
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .parse()?;

    eprintln!("coordinator on {addr}; preparing {} clients", args.clients);
    let federation = Federation::synthetic(args.clients);
    let coordinator_key = coordinator_identity().public_key();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let connect_started = Instant::now();
    let results = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        for (index, data) in federation.train.iter().enumerate() {
            let mut session =
                SessionConfig::new(addr, coordinator_key, Arc::new(participant(index)));
            session.keep_alive = Duration::from_secs(2);
            session.idle_timeout = Duration::from_secs(60);
            session.connect_timeout = Duration::from_secs(30);
            session.request_timeout = Duration::from_secs(300);
            let mut config = NodeConfig::new(session);
            config.backoff_initial = Duration::from_millis(200);
            config.backoff_max = Duration::from_secs(2);
            config.give_up_after = Some(Duration::from_secs(300));
            let (events, mut receiver) = tokio::sync::mpsc::unbounded_channel();
            let node = Node::new(config, data.clone(), Device::flex())?.with_events(events);
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = node.run(token).await;
                let mut disconnects = 0usize;
                let mut training = Vec::new();
                while let Ok(event) = receiver.try_recv() {
                    match event {
                        NodeEvent::Disconnected { .. } => disconnects += 1,
                        NodeEvent::UpdateSent { update, .. } => {
                            training.push(update.metrics.seconds)
                        }
                        _ => {}
                    }
                }
                (outcome, disconnects, training)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await?);
        }
        anyhow::Ok(results)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    let clients_seconds = connect_started.elapsed().as_secs_f64();

    let result = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("result ")))
        .context("the coordinator did not report its result")?;
    let status = child.wait()?;
    let finished = results
        .iter()
        .filter(|(o, _, _)| matches!(o, Ok(NodeOutcome::Finished { .. })))
        .count();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|(o, _, _)| o.as_ref().err().map(|e| e.to_string()))
        .collect();
    let failed_attempts: usize = results.iter().map(|(_, d, _)| d).sum();
    let training: Vec<f64> = results
        .iter()
        .flat_map(|(_, _, t)| t.iter().copied())
        .collect();
    let training_total: f64 = training.iter().sum();
    let log = std::fs::read_to_string(&log_path)?;
    let refused = log
        .lines()
        .filter(|l| {
            l.contains("handshake failed") || l.contains("refused") || l.contains("not enrolled")
        })
        .count();
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    let records = read_round_log(out.join(ROUND_LOG_FILE))?;
    let mut round_seconds: Vec<f64> = records
        .iter()
        .map(|r| r.wall_seconds.unwrap_or(r.round_ms as f64 / 1000.0))
        .collect();
    round_seconds.sort_by(f64::total_cmp);
    let field = |name: &str| -> String {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or("?")
            .to_string()
    };
    let peak_mib = field("vm_hwm_kib")
        .parse::<f64>()
        .map(|k| format!("{:.1} MiB", k / 1024.0))
        .unwrap_or_else(|_| "unknown".into());

    println!(
        "load test: {} clients, {} rounds, tiny model, loopback QUIC",
        args.clients, args.rounds
    );
    println!("coordinator exit             {status}");
    println!(
        "rounds completed             {} of {} (finished: {})",
        field("completed_rounds"),
        args.rounds,
        field("finished")
    );
    println!(
        "round wall time              p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        percentile(&round_seconds, 0.5),
        percentile(&round_seconds, 0.95),
        round_seconds.last().copied().unwrap_or(f64::NAN)
    );
    println!("coordinator peak memory      {peak_mib} (VmHWM of its process)");
    println!("coordinator CPU time         {} s", field("cpu_seconds"));
    println!(
        "client training              {} updates, {:.2} s mean wall time each (all clients of a \
         round train at once on this machine's cores)",
        training.len(),
        training_total / training.len().max(1) as f64,
    );
    println!(
        "clients finished             {finished} of {}",
        args.clients
    );
    println!("rejected connections         {refused} (refused handshakes in the coordinator log)");
    println!("failed connection attempts   {failed_attempts} (clients' reconnects)");
    println!("client errors                {}", errors.len());
    println!("coordinator warnings         {warnings}");
    println!(
        "wall time                    {:.1} s (clients {:.1} s)",
        started.elapsed().as_secs_f64(),
        clients_seconds
    );
    for error in errors.iter().take(5) {
        println!("  client error: {error}");
    }
    if warnings > 0 {
        for line in log.lines().filter(|l| l.contains(" WARN ")).take(5) {
            println!("  {line}");
        }
    }

    Ok(())
}
