//! Privacy over real QUIC on loopback: secure aggregation between participant nodes (the
//! coordinator sees only the sum, which must equal the plain FedAvg aggregate up to the stated
//! quantisation bound), a participant vanishing after its masked input, the bytes a client sends
//! searched for its own features, and differential privacy stopping a run at its budget.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use mpcl_client::{NodeEvent, NodeOutcome};
use mpcl_coordinator::evaluation::EvaluationConfig;
use mpcl_coordinator::round_log::read_round_log;
use mpcl_coordinator::server::ROUND_LOG_FILE;
use mpcl_coordinator::{Coordinator, CoordinatorConfig, PrivacyLedger};
use mpcl_data::Standardizer;
use mpcl_protocol::codec::{MessageLimits, decode_message};
use mpcl_protocol::messages::{ClientMessage, ClientUpdate, GlobalState};
use mpcl_protocol::metrics::EvaluationReport;
use mpcl_tests::{
    Federation, Keys, RunningNode, drain, expected_state, join, masked_updates, rounds_started,
    run_config, secure_run_config, start_node_with, start_server, summed_prototypes,
};
use tokio_util::sync::CancellationToken;

/// What a finished run left behind.
struct Run {
    outcome: mpcl_coordinator::server::ServerOutcome,
    events: Vec<Vec<NodeEvent>>,
    nodes: Vec<NodeOutcome>,
    log: Vec<mpcl_coordinator::RoundRecord>,
}

/// Runs `config` with one node per participant of `keys` (node `i` configured by
/// `configure(i, config)`) until every node and the coordinator have stopped.
async fn run(
    federation: &Federation,
    keys: &Keys,
    config: CoordinatorConfig,
    configure: impl Fn(usize, &mut mpcl_client::NodeConfig),
) -> anyhow::Result<Run> {
    let out = tempfile::tempdir()?;
    let initial = federation.initial_state(config.seed);
    let coordinator = Coordinator::new(config, [4; 16], initial)?;
    let server = start_server(
        coordinator,
        keys,
        &federation.schema,
        out.path(),
        "127.0.0.1:0".parse()?,
    )?;
    let shutdown = CancellationToken::new();
    let nodes: Vec<RunningNode> = keys
        .participants
        .iter()
        .zip(&federation.train)
        .enumerate()
        .map(|(i, (identity, data))| {
            start_node_with(
                server.addr,
                keys,
                identity.clone(),
                data.clone(),
                shutdown.clone(),
                |config| configure(i, config),
            )
        })
        .collect();
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    for mut node in nodes {
        outcomes.push(join(node.task, Duration::from_secs(120), "node").await??);
        events.push(drain(&mut node.events));
    }
    let outcome = join(server.task, Duration::from_secs(30), "coordinator").await??;
    let log = read_round_log(out.path().join(ROUND_LOG_FILE))?;
    Ok(Run {
        outcome,
        events,
        nodes: outcomes,
        log,
    })
}

/// [`run`] with a copy of every message the first node sends (before TLS), in order.
async fn run_tapping_the_first_node(
    federation: &Federation,
    keys: &Keys,
    config: CoordinatorConfig,
) -> anyhow::Result<(Run, Vec<Vec<u8>>)> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let tap = Arc::clone(&sent);
    let run = run(federation, keys, config, move |i, node| {
        if i == 0 {
            node.session.sent_messages = Some(Arc::clone(&tap));
        }
    })
    .await?;
    let sent = sent.lock().unwrap().clone();
    Ok((run, sent))
}

/// The global state after `round` (the state the next round started from, or the final one).
fn state_after(run: &Run, round: u64) -> anyhow::Result<&GlobalState> {
    if round == run.outcome.completed_rounds {
        return Ok(&run.outcome.global);
    }
    run.events[0]
        .iter()
        .find_map(|e| match e {
            NodeEvent::RoundStarted {
                round: r, state, ..
            } if *r == round + 1 => Some(state.as_ref()),
            _ => None,
        })
        .with_context(|| format!("round {} never started", round + 1))
}

/// Checks that `found` (the coordinator's state after a secure round) equals the plain FedAvg
/// aggregate of `updates` from `previous` within the quantisation bound: each real-valued sum
/// is off by at most `e = contributors * 0.5 / scale` per coordinate, so the encoder mean by
/// `e / total samples`, a prototype `S / W` by `(1 - blend)(e + |S/W| e) / (W - e)` and a
/// co-occurrence sum by `e`; on top of that f32 rounding (as in the plain-mode test: the
/// statistics are summed in f32). Returns the largest deviation of the encoder and of the
/// statistics.
fn check_quantised(
    what: &str,
    found: &GlobalState,
    previous: &GlobalState,
    updates: &[&ClientUpdate],
    e: f64,
    blend: f64,
) -> anyhow::Result<(f64, f64)> {
    let expected = expected_state(previous, updates, blend);
    let samples: f64 = updates.iter().map(|u| u.sample_count as f64).sum();
    let mut encoder_worst = 0.0f64;
    for (i, (f, x)) in found
        .parameters
        .to_flat()
        .iter()
        .zip(expected.parameters.to_flat())
        .enumerate()
    {
        let deviation = (f64::from(*f) - f64::from(x)).abs();
        let bound = e / samples + 1e-6 * (1.0 + f64::from(x).abs());
        ensure!(
            deviation <= bound,
            "{what}: encoder[{i}] is {f}, plain FedAvg gives {x} (bound {bound:e})"
        );
        encoder_worst = encoder_worst.max(deviation);
    }
    let mut stats_worst = 0.0f64;
    let mut worst_ratio = 0.0f64;
    for (bank, want) in found.prototypes.iter().zip(&expected.prototypes) {
        let width = bank.width.max(1);
        let (sum, weight) = summed_prototypes(updates, &bank.group, bank.values.len(), width);
        for (i, (f, x)) in bank.values.0.iter().zip(&want.values.0).enumerate() {
            let w = weight[i / width];
            let quantisation = if w > e {
                (1.0 - blend) * (e + (sum[i] / w).abs() * e) / (w - e)
            } else {
                // A cell whose weight may round to zero: no bound from quantisation.
                f64::INFINITY
            };
            let deviation = f64::from((f - x).abs());
            let bound = quantisation + 1e-5 + 1e-4 * f64::from(x.abs());
            ensure!(
                deviation <= bound,
                "{what}: prototype `{}`[{i}] is {f}, plain FedAvg gives {x} (bound {bound:e})",
                bank.group
            );
            stats_worst = stats_worst.max(deviation);
            worst_ratio = worst_ratio.max(deviation / bound);
        }
    }
    eprintln!("{what}: largest prototype deviation is {worst_ratio:.2} of its bound");
    for (i, (f, x)) in found
        .cooccurrence
        .sum
        .0
        .iter()
        .zip(&expected.cooccurrence.sum.0)
        .enumerate()
    {
        let deviation = f64::from((f - x).abs());
        let bound = e + 1e-5 + 1e-4 * f64::from(x.abs());
        ensure!(
            deviation <= bound,
            "{what}: co-occurrence[{i}] is {f}, plain gives {x}"
        );
        stats_worst = stats_worst.max(deviation);
    }
    ensure!(
        (found.cooccurrence.count - expected.cooccurrence.count).abs() < 1e-6,
        "{what}: co-occurrence count {} vs {}",
        found.cooccurrence.count,
        expected.cooccurrence.count
    );
    Ok((encoder_worst, stats_worst))
}

/// Checks every round of a secure run against the plain aggregate of the masked updates.
fn check_rounds(run: &Run, config_blend: f64, scale: f64) -> anyhow::Result<()> {
    let started: Vec<_> = run.events.iter().map(|e| rounds_started(e)).collect();
    let masked: Vec<_> = run.events.iter().map(|e| masked_updates(e)).collect();
    for round in 1..=run.outcome.completed_rounds {
        let previous = &started[0]
            .get(&round)
            .with_context(|| format!("round {round} never started"))?
            .0;
        let updates: Vec<&ClientUpdate> = masked
            .iter()
            .map(|m| m.get(&round).map(|u| u.as_ref()))
            .collect::<Option<_>>()
            .with_context(|| format!("a masked input of round {round} is missing"))?;
        let e = updates.len() as f64 * 0.5 / scale;
        let after = state_after(run, round)?;
        let (encoder, stats) = check_quantised(
            &format!("round {round}"),
            after,
            previous,
            &updates,
            e,
            config_blend,
        )?;
        eprintln!(
            "round {round}: secure vs plain FedAvg, largest deviation encoder {encoder:.3e}, \
             statistics {stats:.3e} (quantisation bound per summed value {e:.3e})"
        );
    }
    Ok(())
}

/// Three nodes mask their updates; the coordinator's state after each round is the plain
/// FedAvg aggregate of those updates within the quantisation bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_aggregation_over_quic_equals_the_plain_aggregate() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let config = secure_run_config(2, 3);
    let (blend, scale) = (
        config.aggregation.prototype_blend,
        config.privacy.quantisation_scale,
    );
    let run = run(&federation, &keys, config, |_, _| {}).await?;
    assert!(run.outcome.finished);
    assert_eq!(run.outcome.completed_rounds, 2);
    for (outcome, events) in run.nodes.iter().zip(&run.events) {
        assert_eq!(*outcome, NodeOutcome::Finished { rounds: 2 });
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, NodeEvent::UpdateSent { .. })),
            "no update is ever uploaded under secure aggregation"
        );
        let done: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::SecureRoundDone {
                    round,
                    contributors,
                } => Some((*round, *contributors)),
                _ => None,
            })
            .collect();
        assert_eq!(done, vec![(1, 3), (2, 3)]);
    }
    check_rounds(&run, blend, scale)?;
    assert_eq!(run.log.len(), 2);
    for record in &run.log {
        assert!(record.secure_aggregation);
        assert_eq!(record.participants.len(), 3);
    }
    Ok(())
}

/// Bob vanishes right after the coordinator confirmed his masked input of round 1: the others
/// unmask his input with their shares of his self-mask seed, round 1 holds all three inputs,
/// and Bob comes back for round 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_after_its_masked_input_stays_in_the_sum() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let config = secure_run_config(2, 3);
    let (blend, scale) = (
        config.aggregation.prototype_blend,
        config.privacy.quantisation_scale,
    );
    let run = run(&federation, &keys, config, |i, node| {
        if i == 1 {
            node.faults.vanish_after_masked_input = Some(1);
        }
    })
    .await?;
    assert!(run.outcome.finished);
    for outcome in &run.nodes {
        assert_eq!(*outcome, NodeOutcome::Finished { rounds: 2 });
    }
    let bob = &run.events[1];
    assert!(
        bob.iter().any(
            |e| matches!(e, NodeEvent::Disconnected { reason } if reason.contains("test fault"))
        ),
        "bob vanished"
    );
    let done = |events: &[NodeEvent], round: u64| {
        events.iter().find_map(|e| match e {
            NodeEvent::SecureRoundDone {
                round: r,
                contributors,
            } if *r == round => Some(*contributors),
            _ => None,
        })
    };
    assert_eq!(done(bob, 1), None, "bob never finished round 1");
    assert_eq!(done(bob, 2), Some(3), "bob took part in round 2");
    assert_eq!(
        done(&run.events[0], 1),
        Some(3),
        "bob's input is in round 1"
    );
    check_rounds(&run, blend, scale)?;
    assert_eq!(run.log[0].participants.len(), 3);
    Ok(())
}

/// Differential privacy under secure aggregation over QUIC: each round's epsilon is in the round
/// log, equal to the accountant's, and the run stops before the round that would exceed the
/// budget (set between the epsilon of two and of three rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_privacy_reports_epsilon_per_round_and_stops_at_the_budget()
-> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let mut config = secure_run_config(5, 3);
    config.privacy.clip_norm = Some(1.0);
    config.privacy.noise_multiplier = 1.0;
    // All three sampled from three connected: sampling rate 1.
    let mut ledger = PrivacyLedger::new(1.0, config.privacy.target_delta, None)?;
    let epsilons: Vec<f64> = (0..3)
        .map(|_| ledger.record_round(1.0).map(|s| s.epsilon))
        .collect::<Result<_, _>>()?;
    config.privacy.epsilon_budget = Some((epsilons[1] + epsilons[2]) / 2.0);
    let run = run(&federation, &keys, config, |_, _| {}).await?;
    assert!(run.outcome.finished, "a run stopped by its budget is over");
    assert_eq!(run.outcome.completed_rounds, 2);
    for outcome in &run.nodes {
        assert_eq!(*outcome, NodeOutcome::Finished { rounds: 2 });
    }
    assert_eq!(run.log.len(), 2);
    for (record, want) in run.log.iter().zip(&epsilons) {
        let epsilon = record.epsilon.context("epsilon in the round log")?;
        eprintln!("round {}: epsilon {epsilon:.4}", record.round);
        assert!((epsilon - want).abs() < 1e-9, "{epsilon} vs {want}");
        assert_eq!(record.delta, Some(1e-5));
        assert!(record.secure_aggregation);
    }
    Ok(())
}

/// The bytes patterns of one client's own data: every feature value (raw and standardised with
/// the client's own statistics, as it trains on them) except 0, 1 and -1, and every pair of
/// neighbouring features of a sample (how a leaked feature vector would look).
struct Patterns {
    single: HashSet<[u8; 4]>,
    pairs: HashSet<[u8; 8]>,
}

impl Patterns {
    fn of(data: &mpcl_data::Dataset) -> Self {
        let standardizer = Standardizer::fit(data);
        let mut single = HashSet::new();
        let mut pairs = HashSet::new();
        for sample in &data.samples {
            for (m, raw) in sample.features.iter().enumerate() {
                for values in [raw.clone(), standardizer.apply(m, raw)] {
                    for v in &values {
                        if ![0.0f32, 1.0, -1.0].contains(v) {
                            single.insert(v.to_le_bytes());
                        }
                    }
                    for w in values.windows(2) {
                        let mut pair = [0u8; 8];
                        pair[..4].copy_from_slice(&w[0].to_le_bytes());
                        pair[4..].copy_from_slice(&w[1].to_le_bytes());
                        pairs.insert(pair);
                    }
                }
            }
        }
        Self { single, pairs }
    }

    /// (single-value hits, pair hits) at any byte offset of `bytes`.
    fn hits(&self, bytes: &[u8]) -> (usize, usize) {
        let single = bytes
            .windows(4)
            .filter(|w| self.single.contains(*w))
            .count();
        let pairs = bytes.windows(8).filter(|w| self.pairs.contains(*w)).count();
        (single, pairs)
    }
}

/// Alice's node copies every message it sends (before TLS); none of them holds her features.
/// Pairs of neighbouring features must never appear. Single 4-byte values of high-entropy data
/// (masked words, keys, signatures, ciphertexts) match one of several thousand patterns by chance
/// now and then, so those are only required to stay at chance level (a leaked feature vector
/// would add one hit per value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_messages_hold_none_of_its_features() -> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    let patterns = Patterns::of(&federation.train[0]);
    ensure!(
        patterns.single.len() > 1000 && patterns.pairs.len() > 1000,
        "{} single and {} pair patterns",
        patterns.single.len(),
        patterns.pairs.len()
    );
    let limits = MessageLimits::new(mpcl_protocol::HARD_MAX_MESSAGE_BYTES)?;
    for secure in [false, true] {
        let config = if secure {
            secure_run_config(2, 3)
        } else {
            run_config(2, 3)
        };
        let (run, sent) = run_tapping_the_first_node(&federation, &keys, config).await?;
        assert_eq!(run.outcome.completed_rounds, 2);
        // The tap saw the run: the update (plain) or the masked inputs (secure) are there.
        let kinds: Vec<String> = sent
            .iter()
            .map(|payload| {
                let message: ClientMessage = decode_message(payload, &limits)?;
                Ok(match message {
                    ClientMessage::SecureAggregation { upload, .. } => upload.kind().to_string(),
                    other => other.kind().to_string(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let wanted = if secure { "masked input" } else { "Update" };
        assert_eq!(
            kinds.iter().filter(|k| *k == wanted).count(),
            2,
            "one {wanted} a round: {kinds:?}"
        );
        let bytes: usize = sent.iter().map(Vec::len).sum();
        let (mut single, mut pairs) = (0, 0);
        for payload in &sent {
            let (s, p) = patterns.hits(payload);
            single += s;
            pairs += p;
        }
        // Chance level: each 4-byte window of random data matches with probability
        // patterns / 2^32.
        let expected = bytes as f64 * patterns.single.len() as f64 / 2f64.powi(32);
        eprintln!(
            "{} mode: {} messages, {bytes} bytes; single-value hits {single} (chance {expected:.3}), pair hits {pairs}",
            if secure { "secure" } else { "plain" },
            sent.len()
        );
        assert_eq!(pairs, 0, "a pair of neighbouring features was sent");
        assert!(
            (single as f64) <= expected + 4.0 * expected.sqrt() + 3.0,
            "{single} single-value hits, chance level is {expected:.3}"
        );

        // The search works: values planted at odd offsets in a copy of the largest message are
        // found.
        let largest = sent.iter().max_by_key(|p| p.len()).unwrap();
        let mut control = largest.clone();
        let before = patterns.hits(&control);
        let sample = &federation.train[0].samples[0].features[0];
        let value = sample
            .iter()
            .find(|v| ![0.0f32, 1.0, -1.0].contains(*v))
            .unwrap();
        control[101..105].copy_from_slice(&value.to_le_bytes());
        control[203..207].copy_from_slice(&sample[0].to_le_bytes());
        control[207..211].copy_from_slice(&sample[1].to_le_bytes());
        let after = patterns.hits(&control);
        assert!(after.0 >= before.0 + 2, "planted values not found");
        assert!(after.1 > before.1, "planted pair not found");
    }
    Ok(())
}

/// Under secure aggregation a participant's evaluation report travels only inside its masked
/// input: the coordinator learns the federation's totals, and the report's own sums appear in
/// none of the participant's messages. In plain mode (the control) they travel in its updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_secure_aggregation_the_coordinator_sees_evaluation_only_as_totals()
-> anyhow::Result<()> {
    let federation = Federation::synthetic(3);
    let keys = Keys::new(&["alice", "bob", "carol"]);
    for secure in [false, true] {
        let mut config = if secure {
            secure_run_config(2, 3)
        } else {
            run_config(2, 3)
        };
        config.evaluation = EvaluationConfig::default();
        let (run, sent) = run_tapping_the_first_node(&federation, &keys, config).await?;
        assert_eq!(run.outcome.completed_rounds, 2);

        // Alice's own reports (rounds 1 and 2 and the final evaluation round), as her node
        // built them.
        let reports: Vec<EvaluationReport> = run.events[0]
            .iter()
            .filter_map(|event| match event {
                NodeEvent::UpdateSent { update, .. }
                | NodeEvent::MaskedInputSent { update, .. } => update.evaluation,
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 3, "secure: {secure}");
        let needles: Vec<[u8; 8]> = reports
            .iter()
            .flat_map(|r| [r.test.sums[3], r.validation.sums[3], r.test.sums[1]])
            .map(f64::to_le_bytes)
            .collect();
        let found = needles
            .iter()
            .filter(|needle| {
                sent.iter()
                    .any(|m| m.windows(8).any(|w| w == needle.as_slice()))
            })
            .count();
        if secure {
            assert_eq!(
                found, 0,
                "a report's own sum left the participant in the clear"
            );
        } else {
            assert_eq!(
                found,
                needles.len(),
                "the control must find the plain reports"
            );
        }

        // The coordinator's view: totals over all three participants, every model.
        let evaluations = &run.outcome.evaluations;
        assert_eq!(
            evaluations.iter().map(|m| m.round).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        for m in evaluations {
            assert_eq!(m.clients, 3);
            assert!(m.test.samples as u64 > reports[0].test.samples);
        }
    }
    Ok(())
}
