//! Update compression over the wire: a run configured with `compression = "int8"` reaches the
//! nodes through the training config, the nodes upload 8-bit deltas, and the coordinator
//! decompresses them on receipt and aggregates exactly what the nodes meant to send (their
//! decompressed deltas, which they report in their events). Uploads shrink accordingly.

use anyhow::Context;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::ROUND_LOG_FILE;
use mpcl_protocol::Compression;
use mpcl_tests::{Federation, Keys, accepted_updates, rounds_started, run_config, run_federation};

const ROUNDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_updates_are_decompressed_and_aggregated_over_quic() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let out = tempfile::tempdir()?;
    let mut config = run_config(ROUNDS, 3);
    config.training.compression = Compression::Int8;
    let initial = federation.initial_state(config.seed);
    let parameters = initial.parameters.value_count();
    let coordinator = Coordinator::new(config, [4; 16], initial)?;
    let (events, outcome) =
        run_federation(coordinator, &keys, &federation, out.path(), ROUNDS).await?;
    assert!(outcome.finished);

    let started: Vec<_> = events.iter().map(|e| rounds_started(e)).collect();
    let updates: Vec<_> = events.iter().map(|e| accepted_updates(e)).collect();
    for round in 1..=ROUNDS {
        let (previous, training) = &started[0]
            .get(&round)
            .with_context(|| format!("round {round} never started"))?;
        assert_eq!(training.compression, Compression::Int8);
        let after = if round < ROUNDS {
            &started[0][&(round + 1)].0.parameters
        } else {
            &outcome.global.parameters
        };
        // FedAvg of the deltas the nodes sent (their decompressed form).
        let round_updates: Vec<_> = updates.iter().map(|u| &u[&round]).collect();
        let total: f64 = round_updates.iter().map(|u| u.sample_count as f64).sum();
        let mut expected: Vec<f64> = previous.parameters.iter_values().map(f64::from).collect();
        for update in &round_updates {
            let weight = update.sample_count as f64 / total;
            for (e, d) in expected.iter_mut().zip(update.delta.iter_values()) {
                *e += weight * f64::from(d);
            }
        }
        for (i, (found, want)) in after.iter_values().zip(&expected).enumerate() {
            assert!(
                (f64::from(found) - want).abs() <= 1e-5 + 1e-4 * want.abs(),
                "round {round} parameter {i}: {found} vs {want}"
            );
        }
    }
    // Each upload is well under a third of the dense encoder delta alone.
    let dense_delta = 4 * parameters as u64;
    for record in read_round_log(out.path().join(ROUND_LOG_FILE))? {
        let per_client = record.bytes_in.unwrap_or(0) / 3;
        assert!(
            per_client > 0 && per_client < dense_delta / 3,
            "round {}: {per_client} bytes per client, dense delta {dense_delta}",
            record.round
        );
    }
    Ok(())
}
