//! `RequestWork` is a long poll: a client whose update is in gets the next round the moment it
//! opens, not after the coordinator's poll interval.

use std::time::Duration;

use mpcl_client::NodeOutcome;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::ROUND_LOG_FILE;
use mpcl_coordinator::server::run_file::NetworkSettings;
use mpcl_tests::{
    Federation, Keys, join, run_config, start_nodes, start_server_with, test_network,
};
use tokio_util::sync::CancellationToken;

const ROUNDS: u64 = 3;
/// Far longer than a round of the tiny model takes here: a client told to wait this long
/// between rounds would make every round after the first last at least this long.
const POLL_INTERVAL_MS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_requests_get_the_next_round_well_before_the_poll_interval() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let out = tempfile::tempdir()?;
    let config = run_config(ROUNDS, 3);
    let coordinator = Coordinator::new(
        config.clone(),
        [5; 16],
        federation.initial_state(config.seed),
    )?;
    let network = NetworkSettings {
        poll_interval_ms: POLL_INTERVAL_MS,
        long_poll_secs: 20.0,
        ..test_network()
    };
    let server = start_server_with(
        coordinator,
        &keys,
        &federation.schema,
        out.path(),
        "127.0.0.1:0".parse()?,
        network,
    )?;
    let shutdown = CancellationToken::new();
    let nodes = start_nodes(
        server.addr,
        &keys,
        &keys.participants,
        &federation.train,
        &shutdown,
    );
    for node in nodes {
        let outcome = join(node.task, Duration::from_secs(120), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: ROUNDS });
    }
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);

    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    assert_eq!(log.len(), ROUNDS as usize);
    // Rounds after the first open while every client's request is parked (each asked right
    // after its update was accepted); with polling each would last a whole poll interval.
    for record in &log[1..] {
        assert_eq!(record.participants.len(), 3);
        assert!(
            record.round_ms < POLL_INTERVAL_MS / 2,
            "round {} took {} ms: the clients waited for the poll interval",
            record.round,
            record.round_ms
        );
    }
    Ok(())
}
