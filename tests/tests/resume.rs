//! A coordinator killed after a round and restarted with resume finishes the run where an
//! uninterrupted run with the same seed ends: the clients reconnect by themselves, the round
//! that was in flight is redone from the checkpoint with the same training seeds, and the final
//! global state is the same.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mpcl_client::{NodeEvent, NodeOutcome};
use mpcl_coordinator::read_latest_checkpoint;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::{ROUND_LOG_FILE, checkpoint_path, resume_coordinator};
use mpcl_protocol::messages::GlobalState;
use mpcl_tests::{
    Federation, Keys, RunningNode, drain, join, max_state_difference, restart_server, run_config,
    start_nodes, start_run,
};
use tokio_util::sync::CancellationToken;

const ROUNDS: u64 = 3;

fn start_federation_nodes(
    addr: std::net::SocketAddr,
    keys: &Keys,
    federation: &Federation,
) -> Vec<RunningNode> {
    let shutdown = CancellationToken::new();
    start_nodes(addr, keys, &keys.participants, &federation.train, &shutdown)
}

async fn finish_nodes(nodes: Vec<RunningNode>) -> anyhow::Result<Vec<Vec<NodeEvent>>> {
    let mut events = Vec::new();
    for mut node in nodes {
        let outcome = join(node.task, Duration::from_secs(120), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: ROUNDS });
        events.push(drain(&mut node.events));
    }
    Ok(events)
}

async fn uninterrupted(
    federation: &Federation,
    keys: &Keys,
    out: &Path,
) -> anyhow::Result<GlobalState> {
    let server = start_run(federation, keys, run_config(ROUNDS, 3), [4; 16], out)?;
    finish_nodes(start_federation_nodes(server.addr, keys, federation)).await?;
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);
    Ok((*outcome.global).clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_resumes_and_ends_like_an_uninterrupted_run() -> anyhow::Result<()> {
    let started = Instant::now();
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let reference_dir = tempfile::tempdir()?;
    let reference = uninterrupted(&federation, &keys, reference_dir.path()).await?;
    let reference_seconds = started.elapsed().as_secs_f64();

    // The same run, killed once round 1 is aggregated.
    let out = tempfile::tempdir()?;
    let run_id = [5; 16];
    let first = start_run(
        &federation,
        &keys,
        run_config(ROUNDS, 3),
        run_id,
        out.path(),
    )?;
    let addr = first.addr;
    let mut nodes = start_federation_nodes(addr, &keys, &federation);
    // A client handed round 2 means round 1's checkpoint is on disk (the coordinator persists
    // before it answers anyone).
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), nodes[0].events.recv())
            .await
            .context("round 2 never started")?
            .context("alice stopped early")?;
        if matches!(event, NodeEvent::RoundStarted { round: 2, .. }) {
            break;
        }
    }
    first.task.abort();
    let _ = first.task.await;
    let saved = read_latest_checkpoint(checkpoint_path(out.path()))?;
    assert_eq!(saved.checkpoint.completed_rounds, 1);
    assert_eq!(saved.checkpoint.run_id, run_id);

    // Restart on the same address; the nodes find it again by themselves.
    let second = restart_server(
        || Ok(resume_coordinator(out.path())?),
        &keys,
        &federation.schema,
        out.path(),
        addr,
    )
    .await?;
    let events = finish_nodes(nodes).await?;
    let outcome = join(second.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);
    assert_eq!(outcome.completed_rounds, ROUNDS);
    assert_eq!(outcome.run_id, run_id);
    assert_eq!(outcome.history.len() as u64, ROUNDS);
    assert!(
        events
            .iter()
            .flatten()
            .any(|e| matches!(e, NodeEvent::Disconnected { .. })),
        "the clients noticed the coordinator going away"
    );
    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    assert_eq!(
        log.iter().map(|r| r.round).collect::<Vec<_>>(),
        (1..=ROUNDS).collect::<Vec<_>>()
    );

    // Same seeds and the same state at every round boundary: the same final model, bit for bit
    // (updates arrive in any order, but aggregation sums exactly).
    let difference = max_state_difference(&reference, &outcome.global)
        .context("the resumed run's state has another layout")?;
    eprintln!(
        "largest difference to the uninterrupted run: {difference:e}; uninterrupted run {reference_seconds:.1} s, whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        difference == 0.0 && outcome.global.as_ref() == &reference,
        "the resumed run ends {difference} away from the uninterrupted one"
    );
    Ok(())
}
