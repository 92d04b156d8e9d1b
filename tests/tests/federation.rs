//! A coordinator and three participant nodes (one per synthetic subject) run a whole federated
//! run over QUIC on loopback. The global model must get better on held-out trials, and each
//! round's global memories and encoder must be exactly what the clients' updates combine to.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mpcl_client::NodeOutcome;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::ROUND_LOG_FILE;
use mpcl_data::ModelConfig;
use mpcl_model::{Device, MpclModel};
use mpcl_protocol::messages::{ClientUpdate, GlobalState, RoundKind};
use mpcl_tests::{
    Federation, Keys, accepted_updates, expected_state, join, rounds_started, run_config,
    run_federation, secure_run_config, start_nodes, start_run,
};
use tokio_util::sync::CancellationToken;

const ROUNDS: u64 = 4;

fn close(what: &str, found: &[f32], expected: &[f32]) -> anyhow::Result<()> {
    ensure!(found.len() == expected.len(), "{what}: lengths differ");
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        let tolerance = 1e-5 + 1e-4 * e.abs();
        ensure!(
            (f - e).abs() <= tolerance,
            "{what}[{i}]: coordinator has {f}, the clients' updates give {e}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_improve_the_global_model_and_aggregate_exactly() -> anyhow::Result<()> {
    let started = Instant::now();
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let out = tempfile::tempdir()?;
    let config = run_config(ROUNDS, 3);
    let blend = config.aggregation.prototype_blend;
    let initial = federation.initial_state(config.seed);
    let coordinator = Coordinator::new(config, [3; 16], initial.clone())?;
    let (events, outcome) =
        run_federation(coordinator, &keys, &federation, out.path(), ROUNDS).await?;
    assert!(outcome.finished);
    assert_eq!(outcome.completed_rounds, ROUNDS);
    let run_seconds = started.elapsed().as_secs_f64();

    // Every round: the global state after it is the combination of the accepted updates.
    let started_by_node: Vec<_> = events.iter().map(|e| rounds_started(e)).collect();
    let updates_by_node: Vec<_> = events.iter().map(|e| accepted_updates(e)).collect();
    for round in 1..=ROUNDS {
        let previous = &started_by_node[0]
            .get(&round)
            .with_context(|| format!("alice never started round {round}"))?
            .0;
        for started in &started_by_node[1..] {
            assert_eq!(
                &started[&round].0, previous,
                "every client starts round {round} from the same state"
            );
        }
        let updates: Vec<&ClientUpdate> = updates_by_node
            .iter()
            .map(|u| u.get(&round).map(|u| u.as_ref()))
            .collect::<Option<_>>()
            .with_context(|| format!("an update of round {round} was not accepted"))?;
        let after: &GlobalState = if round < ROUNDS {
            &started_by_node[0][&(round + 1)].0
        } else {
            &outcome.global
        };
        let expected = expected_state(previous, &updates, blend);
        close(
            &format!("round {round} encoder"),
            &after.parameters.to_flat(),
            &expected.parameters.to_flat(),
        )?;
        for (bank, want) in after.prototypes.iter().zip(&expected.prototypes) {
            close(
                &format!("round {round} prototype bank `{}`", bank.group),
                &bank.values.0,
                &want.values.0,
            )?;
        }
        close(
            &format!("round {round} co-occurrence sum"),
            &after.cooccurrence.sum.0,
            &expected.cooccurrence.sum.0,
        )?;
        assert!((after.cooccurrence.count - expected.cooccurrence.count).abs() < 1e-6);
        assert_eq!(
            expected.cooccurrence.count as usize,
            federation
                .train
                .iter()
                .map(|d| d.samples.len())
                .sum::<usize>(),
            "co-occurrence counts every training sample once"
        );
    }

    // The round log has one line per round with all three contributors.
    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    assert_eq!(log.len() as u64, ROUNDS);
    for record in &log {
        assert_eq!(record.participants.len(), 3);
        assert_eq!(record.rejected, 0);
        assert!(record.bytes_in.unwrap_or(0) > 0 && record.bytes_out.unwrap_or(0) > 0);
    }

    // The global model learned something on held-out trials.
    let (before, prior) = federation.evaluate(&initial);
    let (after, _) = federation.evaluate(&outcome.global);
    eprintln!(
        "held-out KL: round 0 {:.4}, round {ROUNDS} {:.4}, label prior {:.4} \
         (cosine {:.4} vs prior {:.4}); run took {run_seconds:.1} s",
        before.kl, after.kl, prior.kl, after.cosine, prior.cosine
    );
    assert!(
        after.kl < before.kl,
        "KL did not decrease: {} -> {}",
        before.kl,
        after.kl
    );
    assert!(
        after.kl < prior.kl,
        "the global model ({}) does not beat the label prior ({})",
        after.kl,
        prior.kl
    );
    Ok(())
}

/// A sampled client that takes the round and then goes silent (a stalled or hung node) does not
/// hold the run up: the deadline passes and the round is aggregated from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_round_is_outwaited_by_the_deadline() -> anyhow::Result<()> {
    let federation = Federation::synthetic(2);
    let keys = Keys::new(&["alice", "bob", "sleepy"]);
    let out = tempfile::tempdir()?;
    let mut config = run_config(2, 2);
    config.clients_per_round = None;
    config.min_available_clients = Some(3);
    config.round_deadline_secs = 2;
    let server = start_run(&federation, &keys, config, [6; 16], out.path())?;
    let sleepy = mpcl_client::Session::connect(&mpcl_tests::session_config(
        server.addr,
        &keys,
        keys.participants[2].clone(),
    ))
    .await?;
    let shutdown = CancellationToken::new();
    let nodes = start_nodes(
        server.addr,
        &keys,
        &keys.participants[..2],
        &federation.train,
        &shutdown,
    );
    // Sleepy asks for work (so it is sampled in both rounds) and never answers.
    let mut handed_out = 0;
    while handed_out < 2 {
        match sleepy
            .request(&mpcl_protocol::ClientMessage::RequestWork {
                last_completed_round: None,
            })
            .await?
        {
            mpcl_protocol::CoordinatorMessage::StartRound { round, .. } => {
                handed_out = round;
            }
            mpcl_protocol::CoordinatorMessage::Wait { .. } => {}
            other => anyhow::bail!("sleepy got {}", other.kind()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes {
        let outcome = join(node.task, Duration::from_secs(60), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: 2 });
    }
    sleepy.abort();
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);
    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    assert_eq!(log.len(), 2);
    for record in &log {
        assert_eq!(record.sampled, 3, "sleepy was sampled");
        assert_eq!(record.participants.len(), 2, "aggregated without sleepy");
        assert!(
            record.round_ms >= 1500,
            "round {} waited for the deadline",
            record.round
        );
    }
    Ok(())
}

/// Round 0 over QUIC, plain and under secure aggregation: every participant sends its label
/// sums, and round 1 starts from a model that predicts the pooled training label prior of all
/// participants (to 1e-5) whatever the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_zero_starts_the_model_at_the_participants_label_prior() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let prior = federation.training_label_prior();
    for secure in [false, true] {
        let keys = Keys::new(&["alice", "bob", "carol"]);
        let out = tempfile::tempdir()?;
        let mut config = if secure {
            secure_run_config(1, 3)
        } else {
            run_config(1, 3)
        };
        config.start_at_label_prior = true;
        let mut model =
            MpclModel::new(&federation.schema, &ModelConfig::tiny(), &Device::flex(), 3)?;
        let emotions = federation.schema.emotion_count();
        model.start_at_prior(&vec![1.0 / emotions as f32; emotions]);
        let coordinator = Coordinator::new(config, [4; 16], model.global_state())?;
        let (events, outcome) =
            run_federation(coordinator, &keys, &federation, out.path(), 1).await?;
        let started: Vec<_> = events.iter().map(|e| rounds_started(e)).collect();
        assert_eq!(
            outcome.completed_rounds, 1,
            "round 0 is not a training round"
        );

        for rounds in &started {
            assert_eq!(rounds[&0].1.kind, RoundKind::LabelPrior);
            assert_eq!(rounds[&1].1.kind, RoundKind::Training);
        }
        let after_round_zero = &started[0][&1].0;
        let predictions = federation.predict(after_round_zero);
        assert!(!predictions.is_empty());
        for prediction in &predictions {
            for (p, q) in prediction.iter().zip(&prior) {
                ensure!(
                    (p - q).abs() < 1e-5,
                    "secure {secure}: predicted {prediction:?}, pooled training prior {prior:?}"
                );
            }
        }
    }
    Ok(())
}
