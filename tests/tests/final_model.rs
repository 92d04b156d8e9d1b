//! A node that personalizes starts from the run's final model: after `Finished` it asks for it
//! (`RequestFinalModel`), since without a final evaluation round no `StartRound` hands it out
//! (the state handed with round r is the model after round r - 1).

use std::sync::Arc;
use std::time::Duration;

use mpcl_client::evaluation::LocalSplit;
use mpcl_client::node::PersonalizationRequest;
use mpcl_client::personalize::{options_from_training, personalize_locally};
use mpcl_client::{Node, NodeConfig, NodeEvent, NodeOutcome, Session, SessionError};
use mpcl_data::{ModelConfig, Standardizer};
use mpcl_model::Device;
use mpcl_model::personalize::PersonalizeScope;
use mpcl_protocol::ModelFile;
use mpcl_protocol::RunId;
use mpcl_tests::{
    Federation, Keys, RunningServer, drain, join, run_config, session_config, start_run,
};
use tempfile::TempDir;
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

const ROUNDS: u64 = 2;

/// A run of [`ROUNDS`] rounds without federated evaluation that needs both of its two
/// participants, served on loopback.
fn two_participants(run_id: RunId) -> anyhow::Result<(Federation, Keys, TempDir, RunningServer)> {
    let federation = Federation::synthetic(2);
    let keys = Keys::new(&["alice", "bob"]);
    let out = tempfile::tempdir()?;
    let server = start_run(
        &federation,
        &keys,
        run_config(ROUNDS, 2),
        run_id,
        out.path(),
    )?;
    Ok((federation, keys, out, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personalizing_node_starts_from_the_runs_final_model() -> anyhow::Result<()> {
    // No federated evaluation, so no final evaluation round: the last `StartRound` hands out
    // the model after round 1, and only `RequestFinalModel` gets the one after round 2.
    let (federation, keys, out, server) = two_participants([6; 16])?;
    let shutdown = CancellationToken::new();
    let mut nodes = Vec::new();
    for (i, identity) in keys.participants.iter().enumerate() {
        let mut node_config = NodeConfig::new(session_config(server.addr, &keys, identity.clone()));
        node_config.give_up_after = Some(Duration::from_secs(30));
        node_config.personalization = Some(PersonalizationRequest {
            epochs: 1,
            scope: PersonalizeScope::HeadAndPrototypes,
            model_file: Some(out.path().join(format!("personal-{i}.mpcl"))),
        });
        let test = federation.test[i].clone();
        let (events, received) = unbounded_channel();
        let node = Node::new(node_config, federation.train[i].clone(), Device::flex())?
            .with_evaluation_data(test.clone(), test)?
            .with_events(events);
        nodes.push((tokio::spawn(node.run(shutdown.clone())), received));
    }
    let mut reports = Vec::new();
    for (task, mut received) in nodes {
        let outcome = join(task, Duration::from_secs(120), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: ROUNDS });
        reports.push(drain(&mut received));
    }
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);

    for (i, events) in reports.iter().enumerate() {
        let Some(NodeEvent::Personalized {
            global_round,
            global_test,
            ..
        }) = events
            .iter()
            .find(|e| matches!(e, NodeEvent::Personalized { .. }))
        else {
            anyhow::bail!("node {i} did not personalize: {events:?}");
        };
        assert_eq!(
            *global_round, ROUNDS,
            "node {i} started from an older model"
        );
        // The global model it scored is the coordinator's final state: the same metrics on the
        // same split, computed here from that state.
        let test = federation.test[i].clone();
        let split = LocalSplit {
            train: federation.train[i].clone(),
            validation: test.clone(),
            test,
        };
        let Some((last_handed, training)) = events.iter().rev().find_map(|e| match e {
            NodeEvent::RoundStarted { state, config, .. } => Some((state, config)),
            _ => None,
        }) else {
            anyhow::bail!("node {i} was handed no round");
        };
        let global_test_kl = |state| -> anyhow::Result<f64> {
            Ok(personalize_locally(
                &split,
                &Standardizer::fit(&split.train),
                &ModelConfig::tiny(),
                &Device::flex(),
                state,
                &options_from_training(1, PersonalizeScope::HeadAndPrototypes, training),
            )?
            .global_test
            .kl)
        };
        let final_kl = global_test_kl(&outcome.global)?;
        assert!(
            (global_test.kl - final_kl).abs() < 1e-6,
            "node {i} scored a global model with test KL {} but the final model's is {final_kl}",
            global_test.kl,
        );
        // And the last state a round handed it is another model (else this test proves nothing).
        let handed_kl = global_test_kl(last_handed)?;
        assert!(
            (handed_kl - final_kl).abs() > 1e-6,
            "{handed_kl} vs {final_kl}"
        );
        let file = ModelFile::read(out.path().join(format!("personal-{i}.mpcl")))?;
        assert_eq!(file.provenance.round, ROUNDS);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_model_is_refused_while_rounds_remain() -> anyhow::Result<()> {
    // Two clients needed: with one connected the run never starts.
    let (_federation, keys, _out, server) = two_participants([7; 16])?;
    let session = Session::connect(&session_config(
        server.addr,
        &keys,
        Arc::clone(&keys.participants[0]),
    ))
    .await?;
    match session.final_model().await {
        Err(SessionError::Coordinator { reason }) => {
            assert!(reason.contains("not over"), "{reason}")
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
    session.close().await;
    server.shutdown.cancel();
    join(server.task, Duration::from_secs(30), "coordinator").await??;
    Ok(())
}
