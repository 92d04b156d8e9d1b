//! Faults a coordinator must turn away while the run goes on: a key that is not enrolled, a
//! server that is not the pinned coordinator, local data of another schema, a truncated frame, an oversized frame, a bad
//! signature, an update signed by someone else, a NaN update and replayed updates. Each is
//! refused with a reason the client receives and the coordinator logs (with the participant's
//! id), and both rounds still complete with the honest clients.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use mpcl_client::{NodeError, NodeEvent, NodeOutcome, Session, SessionError, UpdateOutcome};
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::ROUND_LOG_FILE;
use mpcl_protocol::codec::MessageLimits;
use mpcl_protocol::framing::read_message;
use mpcl_protocol::messages::{
    ClientMessage, ClientUpdate, CoordinatorMessage, GlobalState, LocalMetrics, RejectReason,
    TrainingConfig,
};
use mpcl_protocol::{CooccurrenceStatistics, PrototypeStatistics, SignedUpdate};
use mpcl_simulations::synthetic::SyntheticConfig;
use mpcl_tests::{
    Federation, Keys, identity, join, run_config, session_config, start_node, start_nodes,
    start_run,
};
use tokio_util::sync::CancellationToken;

/// Everything logged by this test process, for checking that rejections are logged.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asks for work until the coordinator hands out `round`.
async fn wait_for_round(
    session: &Session,
    round: u64,
) -> anyhow::Result<(GlobalState, TrainingConfig)> {
    for _ in 0..1200 {
        match session
            .request(&ClientMessage::RequestWork {
                last_completed_round: None,
            })
            .await?
        {
            CoordinatorMessage::StartRound {
                round: r,
                state,
                config,
                ..
            } if r == round => return Ok((state, config)),
            CoordinatorMessage::StartRound { round: r, .. } => bail!("got round {r}, not {round}"),
            CoordinatorMessage::Wait { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
            other => bail!(
                "unexpected {} while waiting for round {round}",
                other.kind()
            ),
        }
    }
    bail!("round {round} never came")
}

/// A well-formed update that changes nothing (zero delta, no prototype mass).
fn zero_update(run_id: [u8; 16], round: u64, state: &GlobalState) -> ClientUpdate {
    ClientUpdate {
        run_id,
        round,
        delta: state.parameters.zeros_like(),
        prototypes: state
            .prototypes
            .iter()
            .map(|b| PrototypeStatistics::zeros(&b.group, b.emotions, b.prototypes, b.width))
            .collect(),
        cooccurrence: CooccurrenceStatistics::zeros(state.cooccurrence.emotions),
        sample_count: 1,
        metrics: LocalMetrics::default(),
        evaluation: None,
    }
}

/// Sends raw bytes as a request and reads the reply.
async fn raw_request(session: &Session, bytes: &[u8]) -> anyhow::Result<CoordinatorMessage> {
    let (mut send, mut recv) = session.connection().open_bi().await?;
    send.write_all(bytes).await?;
    send.finish()?;
    Ok(read_message::<_, CoordinatorMessage>(&mut recv, &MessageLimits::CONTROL).await?)
}

fn rejected(reply: &CoordinatorMessage) -> Option<&RejectReason> {
    match reply {
        CoordinatorMessage::UpdateRejected { reason, .. } => Some(reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_refused_with_logged_reasons_while_rounds_complete() -> anyhow::Result<()> {
    let logs = captured_logs();
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol", "mallory"]);
    let out = tempfile::tempdir()?;
    // All four must be connected to start a round; three accepted updates suffice.
    let mut config = run_config(2, 3);
    config.clients_per_round = None;
    config.min_available_clients = Some(4);
    let run_id = [9; 16];
    let server = start_run(&federation, &keys, config, run_id, out.path())?;

    // A key that is not enrolled is refused at the first request.
    let eve = Arc::new(identity("eve", 66));
    match Session::connect(&session_config(server.addr, &keys, eve)).await {
        Err(error @ SessionError::Rejected { .. }) => assert!(error.is_fatal()),
        other => bail!("an unenrolled key got {other:?}"),
    }
    // A client pinning another coordinator key refuses the server.
    let mut wrong_pin = session_config(server.addr, &keys, keys.participants[0].clone());
    wrong_pin.coordinator_key = identity("impostor", 77).public_key();
    match Session::connect(&wrong_pin).await {
        Err(error @ SessionError::WrongCoordinator { .. }) => assert!(error.is_fatal()),
        other => bail!("a wrong pinned key got {other:?}"),
    }

    // Local data with another schema (a wider face vector) cannot take part.
    let other_schema = mpcl_simulations::synthetic::generate(&SyntheticConfig {
        subjects: 1,
        face_width: 12,
        ..SyntheticConfig::default()
    });
    let misfit = start_node(
        server.addr,
        &keys,
        keys.participants[1].clone(),
        other_schema,
        CancellationToken::new(),
    );
    match join(misfit.task, Duration::from_secs(30), "misfit node").await? {
        Err(NodeError::Incompatible(reason)) => ensure!(reason.contains("face"), "{reason}"),
        other => bail!("a node with another schema got {other:?}"),
    }

    let mallory_identity = keys.participants[3].clone();
    let mallory = Session::connect(&session_config(
        server.addr,
        &keys,
        mallory_identity.clone(),
    ))
    .await
    .context("mallory is enrolled")?;
    let limits = mallory.limits();

    let shutdown = CancellationToken::new();
    let mut nodes = start_nodes(
        server.addr,
        &keys,
        &keys.participants[..3],
        &federation.train,
        &shutdown,
    );

    // Round 1: garbage in every form; mallory's NaN update is its (rejected) answer.
    let (state, _) = wait_for_round(&mallory, 1).await?;
    let mut truncated = 100u32.to_le_bytes().to_vec();
    truncated.extend_from_slice(&[0u8; 10]);
    match raw_request(&mallory, &truncated).await? {
        CoordinatorMessage::Error { reason } => ensure!(reason.contains("truncated"), "{reason}"),
        other => bail!("truncated frame answered with {}", other.kind()),
    }
    let oversized = u32::try_from(limits.max_message_bytes + 1)?.to_le_bytes();
    match raw_request(&mallory, &oversized).await? {
        CoordinatorMessage::Error { reason } => {
            ensure!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => bail!("oversized frame answered with {}", other.kind()),
    }
    let mut forged =
        SignedUpdate::sign(&zero_update(run_id, 1, &state), &mallory_identity, &limits)?;
    forged.signature[0] ^= 1;
    let reply = mallory.request(&ClientMessage::Update(forged)).await?;
    assert_eq!(
        rejected(&reply),
        Some(&RejectReason::BadSignature),
        "{reply:?}"
    );
    let other_run =
        SignedUpdate::sign(&zero_update([8; 16], 1, &state), &mallory_identity, &limits)?;
    let reply = mallory.request(&ClientMessage::Update(other_run)).await?;
    assert_eq!(
        rejected(&reply),
        Some(&RejectReason::WrongRun {
            expected: run_id,
            found: [8; 16]
        }),
        "{reply:?}"
    );
    let mut poisoned = zero_update(run_id, 1, &state);
    poisoned.delta.tensors[0].values.0[0] = f32::NAN;
    let signed = SignedUpdate::sign(&poisoned, &mallory_identity, &limits)?;
    let reply = mallory.request(&ClientMessage::Update(signed)).await?;
    match rejected(&reply) {
        Some(reason @ RejectReason::NonFinite(_)) => {
            ensure!(reason.to_string().contains("non-finite"), "{reason}")
        }
        _ => bail!("NaN update answered with {reply:?}"),
    }

    // Round 2: replays.
    let (state, _) = wait_for_round(&mallory, 2).await?;
    let alice_round_1 = loop {
        match nodes[0]
            .events
            .recv()
            .await
            .context("alice stopped early")?
        {
            NodeEvent::UpdateSent {
                round: 1,
                update,
                outcome: UpdateOutcome::Accepted,
            } => break update,
            _ => continue,
        }
    };
    let alice_signed = SignedUpdate::sign(&alice_round_1, &keys.participants[0], &limits)?;
    // Alice's update sent over mallory's connection.
    let reply = mallory
        .request(&ClientMessage::Update(alice_signed.clone()))
        .await?;
    assert_eq!(
        rejected(&reply),
        Some(&RejectReason::SenderMismatch),
        "{reply:?}"
    );
    // Alice's accepted round-1 update replayed over a second connection of hers.
    let alice = Session::connect(&session_config(
        server.addr,
        &keys,
        keys.participants[0].clone(),
    ))
    .await?;
    let reply = alice.request(&ClientMessage::Update(alice_signed)).await?;
    assert_eq!(
        rejected(&reply),
        Some(&RejectReason::StaleRound {
            round: 1,
            current: 2
        }),
        "{reply:?}"
    );
    alice.close().await;
    // Mallory's own valid update is accepted once; the replay is refused.
    let valid = SignedUpdate::sign(&zero_update(run_id, 2, &state), &mallory_identity, &limits)?;
    let reply = mallory
        .request(&ClientMessage::Update(valid.clone()))
        .await?;
    assert_eq!(reply, CoordinatorMessage::UpdateAccepted { round: 2 });
    let reply = mallory.request(&ClientMessage::Update(valid)).await?;
    match rejected(&reply) {
        // Refused as a duplicate while round 2 is open, as stale once the honest clients closed
        // it, as too late once they finished the run (the last round).
        Some(RejectReason::Duplicate { round: 2 })
        | Some(RejectReason::StaleRound { .. })
        | Some(RejectReason::RunFinished) => {}
        _ => bail!("replayed update answered with {reply:?}"),
    }

    // The run completes with the honest clients.
    loop {
        match mallory
            .request(&ClientMessage::RequestWork {
                last_completed_round: Some(2),
            })
            .await?
        {
            CoordinatorMessage::Finished { rounds } => {
                assert_eq!(rounds, 2);
                break;
            }
            CoordinatorMessage::Wait { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
            other => bail!("unexpected {} after round 2", other.kind()),
        }
    }
    mallory.close().await;
    for node in nodes.drain(..) {
        let outcome = join(node.task, Duration::from_secs(60), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: 2 });
    }
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);

    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    assert_eq!(log.len(), 2);
    let ids = |record: &mpcl_coordinator::RoundRecord| -> Vec<[u8; 32]> {
        record.participants.iter().map(|p| p.0).collect()
    };
    let key = |i: usize| keys.participants[i].public_key().to_bytes();
    let mut round_1 = ids(&log[0]);
    round_1.sort();
    let mut honest = vec![key(0), key(1), key(2)];
    honest.sort();
    assert_eq!(
        round_1, honest,
        "round 1 aggregates exactly the honest clients"
    );
    assert!(log[0].rejected >= 1, "the NaN update counts as rejected");
    assert!(
        ids(&log[1]).contains(&key(3)),
        "mallory's valid update counts in round 2"
    );

    let text =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let logged = |participant: &str, needle: &str| {
        text.lines()
            .any(|l| l.contains(&format!("participant={participant}")) && l.contains(needle))
    };
    let eve_fingerprint = identity("eve", 66).fingerprint();
    for (participant, needle) in [
        (eve_fingerprint.as_str(), "is not in the enrolment file"),
        ("mallory", "truncated"),
        ("mallory", "exceeds the limit"),
        ("mallory", "bad signature"),
        ("mallory", "non-finite"),
        ("mallory", "authenticated as key"),
        ("alice", "which is over"),
    ] {
        assert!(
            logged(participant, needle),
            "no log line for {participant} mentioning `{needle}`:\n{text}"
        );
    }
    assert!(
        logged("mallory", "duplicate update")
            || logged("mallory", "which is over")
            || logged("mallory", "the run is finished"),
        "mallory's replay is not logged:\n{text}"
    );
    Ok(())
}
