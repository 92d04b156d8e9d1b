//! Scripted-event tests of the round state machine.

use std::collections::VecDeque;

use mpcl_protocol::messages::LocalMetrics;
use mpcl_protocol::{CooccurrenceStatistics, PrototypeStatistics};

use super::*;
use crate::config::AggregationRule;
use crate::test_support::{RUN, global};

mod evaluation;
mod label_prior;
mod privacy;

/// A training-only run (federated evaluation has its own tests in `evaluation`).
fn config(rounds: u64, per_round: usize, min: usize, available: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        seed: 42,
        rounds,
        clients_per_round: Some(per_round),
        min_clients_to_aggregate: min,
        min_available_clients: Some(available),
        round_deadline_secs: 60,
        evaluation: EvaluationConfig::disabled(),
        start_at_label_prior: false,
        ..CoordinatorConfig::default()
    }
}

fn id(index: u64) -> ParticipantId {
    ParticipantId::from_index(index)
}

/// What a deterministic fake client sends back for `state`: depends on the state, the round and
/// the participant, so that any divergence in what it was sent shows in the results.
fn client_update(state: &GlobalState, round: u64, participant: ParticipantId) -> ClientUpdate {
    let index = participant.0[31] as f32;
    let values: Vec<f32> = state
        .parameters
        .iter_values()
        .map(|x| 0.1 * (index + 1.0) - 0.05 * x + 0.01 * round as f32)
        .collect();
    let delta = state.parameters.with_flat(&values).unwrap();
    let mut stats = PrototypeStatistics::zeros("physiological", 2, 2, 2);
    for cell in 0..4 {
        let weight = if (cell + participant.0[31] as usize).is_multiple_of(2) {
            index + 1.0
        } else {
            0.0
        };
        stats.weight.0[cell] = weight;
        stats.sum.0[cell * 2] = weight * (index - cell as f32);
        stats.sum.0[cell * 2 + 1] = weight * round as f32;
    }
    let mut cooccurrence = CooccurrenceStatistics::zeros(2);
    cooccurrence.add_label(if participant.0[31].is_multiple_of(2) {
        &[1.0, 0.0]
    } else {
        &[0.25, 0.75]
    });
    ClientUpdate {
        run_id: RUN,
        round,
        delta,
        prototypes: vec![stats],
        cooccurrence,
        sample_count: 10 + u64::from(participant.0[31]),
        metrics: LocalMetrics {
            train_loss: 1.0 / (round as f64 + f64::from(index)),
            train_kl: 0.1,
            seconds: 1.0,
        },
        evaluation: None,
    }
}

fn received(participant: ParticipantId, update: ClientUpdate) -> Event {
    Event::UpdateReceived {
        participant,
        update: Box::new(update),
    }
}

fn connect_all(coordinator: &mut Coordinator, now: Millis, count: u64) -> Vec<Action> {
    (0..count)
        .flat_map(|i| coordinator.handle(now, Event::ClientConnected { participant: id(i) }))
        .collect()
}

/// Sampled participants in `actions`, in order.
fn sent_to(actions: &[Action]) -> Vec<ParticipantId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendRound { participant, .. } => Some(*participant),
            _ => None,
        })
        .collect()
}

/// Answers every SendRound (in order, 10 ms apart) with the fake client's update until nothing
/// is left to answer; returns every action seen, in order, and the final time.
fn answer_everything(
    coordinator: &mut Coordinator,
    now: Millis,
    initial: Vec<Action>,
) -> (Vec<Action>, Millis) {
    answer_everything_with(coordinator, now, initial, |state, round, participant, _| {
        client_update(state, round, participant)
    })
}

/// [`answer_everything`] with the updates `respond` makes from what each `SendRound` carries.
fn answer_everything_with(
    coordinator: &mut Coordinator,
    mut now: Millis,
    initial: Vec<Action>,
    mut respond: impl FnMut(&GlobalState, u64, ParticipantId, &TrainingConfig) -> ClientUpdate,
) -> (Vec<Action>, Millis) {
    let mut pending: VecDeque<Action> = initial.into();
    let mut log = Vec::new();
    while let Some(action) = pending.pop_front() {
        if let Action::SendRound {
            participant,
            round,
            state,
            config,
        } = &action
        {
            now += 10;
            let update = respond(state, *round, *participant, config);
            pending.extend(coordinator.handle(now, received(*participant, update)));
        }
        log.push(action);
    }
    (log, now)
}

fn summaries(actions: &[Action]) -> Vec<RoundSummary> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Aggregated { summary, .. } => Some((**summary).clone()),
            _ => None,
        })
        .collect()
}

fn rejections(actions: &[Action]) -> Vec<(ParticipantId, RejectReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reject {
                participant,
                reason,
                ..
            } => Some((*participant, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn happy_path_over_several_rounds() {
    let run = || {
        let mut coordinator = Coordinator::new(config(3, 2, 2, 4), RUN, global()).unwrap();
        let started = connect_all(&mut coordinator, 0, 4);
        let (log, _) = answer_everything(&mut coordinator, 0, started);
        (coordinator, log)
    };
    let (coordinator, log) = run();

    // Three rounds, each with two distinct sampled participants, then Finished.
    let summaries = summaries(&log);
    assert_eq!(
        summaries.iter().map(|s| s.round).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for summary in &summaries {
        assert_eq!(summary.contributors.len(), 2);
        assert_eq!(summary.sampled, 2);
        assert_eq!(summary.rejected, 0);
        assert_ne!(
            summary.contributors[0].participant,
            summary.contributors[1].participant
        );
    }
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 3 })));
    assert!(coordinator.is_finished());
    assert_eq!(coordinator.completed_rounds(), 3);
    assert_eq!(coordinator.history(), summaries.as_slice());

    // Each Aggregated is followed by its Persist; the checkpoint holds the state after the round.
    let persisted: Vec<u64> = log
        .iter()
        .filter_map(|a| match a {
            Action::Persist { checkpoint } => Some(checkpoint.completed_rounds),
            _ => None,
        })
        .collect();
    assert_eq!(persisted, vec![1, 2, 3]);
    for (i, action) in log.iter().enumerate() {
        if let Action::Aggregated { round, .. } = action {
            assert!(
                matches!(&log[i + 1], Action::Persist { checkpoint } if checkpoint.completed_rounds == *round)
            );
        }
    }
    match log
        .iter()
        .rev()
        .find(|a| matches!(a, Action::Persist { .. }))
    {
        Some(Action::Persist { checkpoint }) => {
            assert_eq!(checkpoint.global, **coordinator.global_state())
        }
        _ => unreachable!(),
    }

    // Deterministic: the same script gives the same actions.
    let (_, again) = run();
    assert_eq!(log, again);
}

#[test]
fn first_round_result_is_the_sample_weighted_average() {
    let mut coordinator = Coordinator::new(config(1, 2, 2, 2), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 2);
    assert_eq!(sent_to(&started), vec![id(0), id(1)]);
    let g = global();
    let a = client_update(&g, 1, id(0)); // 10 samples
    let b = client_update(&g, 1, id(1)); // 11 samples
    let (log, _) = answer_everything(&mut coordinator, 0, started);
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 1 })));

    let expected: Vec<f32> = g
        .parameters
        .iter_values()
        .zip(a.delta.iter_values().zip(b.delta.iter_values()))
        .map(|(x, (da, db))| {
            (f64::from(x) + (10.0 * f64::from(da) + 11.0 * f64::from(db)) / 21.0) as f32
        })
        .collect();
    let result = coordinator.global_state().parameters.to_flat();
    for (r, e) in result.iter().zip(&expected) {
        assert!((r - e).abs() < 1e-6, "{result:?} vs {expected:?}");
    }
    let summary = &coordinator.history()[0];
    assert_eq!(summary.total_samples, 21);
    let loss = (10.0 * a.metrics.train_loss + 11.0 * b.metrics.train_loss) / 21.0;
    assert!((summary.mean_train_loss.unwrap() - loss).abs() < 1e-12);
}

#[test]
fn rounds_wait_for_enough_participants() {
    let mut coordinator = Coordinator::new(config(2, 2, 2, 3), RUN, global()).unwrap();
    let actions = coordinator.handle(0, Event::WorkRequested { participant: id(0) });
    assert_eq!(
        actions,
        vec![Action::SendWait {
            participant: id(0),
            round: 1,
            reason: WaitReason::WaitingForParticipants {
                connected: 1,
                needed: 3
            }
        }]
    );
    assert!(
        coordinator
            .handle(1, Event::ClientConnected { participant: id(1) })
            .is_empty()
    );
    // An update before any round opened.
    let early = client_update(&global(), 1, id(1));
    assert_eq!(
        rejections(&coordinator.handle(2, received(id(1), early))),
        vec![(id(1), RejectReason::RoundNotOpen { round: 1 })]
    );
    // The third participant starts round 1 by asking for work; if it is sampled it gets the
    // round exactly once.
    let actions = coordinator.handle(3, Event::WorkRequested { participant: id(2) });
    let sent = sent_to(&actions);
    assert_eq!(sent.len(), 2);
    assert!(actions.contains(&Action::SetDeadline {
        round: 1,
        at_ms: 60_003
    }));
    if !sent.contains(&id(2)) {
        assert!(actions.contains(&Action::SendWait {
            participant: id(2),
            round: 1,
            reason: WaitReason::NotSampled
        }));
    }
    assert_eq!(coordinator.next_deadline(), Some(60_003));
    assert_eq!(coordinator.round_status().unwrap().sampled, {
        let mut s = sent.clone();
        s.sort();
        s
    });
}

#[test]
fn duplicate_stale_future_wrong_run_and_unsampled_updates_are_rejected() {
    let mut coordinator = Coordinator::new(config(3, 2, 2, 3), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 3);
    let sampled = sent_to(&started);
    let outsider = (0..3).map(id).find(|p| !sampled.contains(p)).unwrap();
    let (first, second) = (sampled[0], sampled[1]);
    let g = global();

    let actions = coordinator.handle(1, received(first, client_update(&g, 1, first)));
    assert_eq!(
        actions,
        vec![Action::Accept {
            participant: first,
            round: 1
        }]
    );
    let actions = coordinator.handle(2, received(first, client_update(&g, 1, first)));
    assert_eq!(
        rejections(&actions),
        vec![(first, RejectReason::Duplicate { round: 1 })]
    );
    let actions = coordinator.handle(3, received(outsider, client_update(&g, 1, outsider)));
    assert_eq!(
        rejections(&actions),
        vec![(outsider, RejectReason::NotSampled { round: 1 })]
    );
    let mut foreign = client_update(&g, 1, second);
    foreign.run_id = [1; 16];
    let actions = coordinator.handle(4, received(second, foreign));
    assert!(matches!(
        rejections(&actions)[0].1,
        RejectReason::WrongRun { found, .. } if found == [1; 16]
    ));
    let actions = coordinator.handle(5, received(second, client_update(&g, 2, second)));
    assert_eq!(
        rejections(&actions),
        vec![(
            second,
            RejectReason::FutureRound {
                round: 2,
                current: 1
            }
        )]
    );
    // The WorkRequested answers while the round is open.
    assert_eq!(
        coordinator.handle(6, Event::WorkRequested { participant: first }),
        vec![Action::SendWait {
            participant: first,
            round: 1,
            reason: WaitReason::AlreadySubmitted
        }]
    );
    assert_eq!(
        coordinator.handle(
            6,
            Event::WorkRequested {
                participant: outsider
            }
        ),
        vec![Action::SendWait {
            participant: outsider,
            round: 1,
            reason: WaitReason::NotSampled
        }]
    );

    // None of the rejections disturbed the round: the second answer completes it.
    let actions = coordinator.handle(7, received(second, client_update(&g, 1, second)));
    let summary = &summaries(&actions)[0];
    assert_eq!(summary.round, 1);
    assert_eq!(summary.contributors.len(), 2);
    assert_eq!(summary.rejected, 4);

    // Round 2 is open now; a late round-1 update is stale.
    let actions = coordinator.handle(8, received(outsider, client_update(&g, 1, outsider)));
    assert_eq!(
        rejections(&actions),
        vec![(
            outsider,
            RejectReason::StaleRound {
                round: 1,
                current: 2
            }
        )]
    );
}

#[test]
fn a_nan_update_is_rejected_and_the_round_completes_with_the_others() {
    let mut coordinator = Coordinator::new(config(1, 3, 2, 3), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 3);
    assert_eq!(sent_to(&started).len(), 3);
    let g = global();

    let mut poisoned = client_update(&g, 1, id(0));
    poisoned.delta.tensors[1].values.0[0] = f32::NAN;
    let actions = coordinator.handle(1, received(id(0), poisoned));
    assert!(matches!(
        rejections(&actions)[..],
        [(p, RejectReason::NonFinite(_))] if p == id(0)
    ));
    // It answered (badly) and may not try again this round.
    let actions = coordinator.handle(2, received(id(0), client_update(&g, 1, id(0))));
    assert_eq!(
        rejections(&actions),
        vec![(id(0), RejectReason::Duplicate { round: 1 })]
    );

    let mut huge = client_update(&g, 1, id(1));
    huge.delta.tensors[0].values.0[0] = 1e9;
    let oversized = coordinator.handle(3, received(id(1), huge));
    assert!(matches!(
        rejections(&oversized)[..],
        [(_, RejectReason::Oversized { .. })]
    ));
    // Two of three rejected: everyone answered but too few were accepted -> the round is
    // extended (there is nobody left to add), never aggregated short.
    let actions = coordinator.handle(4, received(id(2), client_update(&g, 1, id(2))));
    assert!(summaries(&actions).is_empty());
    assert!(actions.contains(&Action::RoundExtended {
        round: 1,
        accepted: 1,
        required: 2,
        added: vec![]
    }));

    // A newcomer joins; at the next deadline it is sampled as a replacement and completes it.
    coordinator.handle(5, Event::ClientConnected { participant: id(3) });
    let actions = coordinator.handle(60_004, Event::DeadlinePassed { round: 1 });
    assert!(actions.contains(&Action::RoundExtended {
        round: 1,
        accepted: 1,
        required: 2,
        added: vec![id(3)]
    }));
    assert_eq!(sent_to(&actions), vec![id(3)]);
    let actions = coordinator.handle(60_010, received(id(3), client_update(&g, 1, id(3))));
    let summary = &summaries(&actions)[0];
    assert_eq!(
        summary
            .contributors
            .iter()
            .map(|c| c.participant)
            .collect::<Vec<_>>(),
        vec![id(2), id(3)]
    );
    assert_eq!(summary.rejected, 3);
    assert_eq!(summary.sampled, 4);
    assert_eq!(summary.deadline_extensions, 2);
    assert!(
        coordinator
            .global_state()
            .parameters
            .iter_values()
            .all(f32::is_finite)
    );
}

#[test]
fn deadline_with_enough_updates_aggregates_what_arrived() {
    let mut coordinator = Coordinator::new(config(2, 3, 2, 3), RUN, global()).unwrap();
    connect_all(&mut coordinator, 0, 3);
    let g = global();
    coordinator.handle(10, received(id(0), client_update(&g, 1, id(0))));
    coordinator.handle(20, received(id(1), client_update(&g, 1, id(1))));

    // Early or wrong-round timers do nothing.
    assert!(
        coordinator
            .handle(59_999, Event::DeadlinePassed { round: 1 })
            .is_empty()
    );
    assert!(
        coordinator
            .handle(60_000, Event::DeadlinePassed { round: 7 })
            .is_empty()
    );
    assert!(coordinator.handle(59_999, Event::Tick).is_empty());

    let actions = coordinator.handle(60_000, Event::DeadlinePassed { round: 1 });
    let summary = &summaries(&actions)[0];
    assert_eq!(summary.contributors.len(), 2);
    assert_eq!(summary.sampled, 3);
    assert_eq!(summary.completed_at_ms, 60_000);
    // Round 2 started right away with everyone still connected.
    assert_eq!(sent_to(&actions).len(), 3);
    assert!(actions.contains(&Action::SetDeadline {
        round: 2,
        at_ms: 120_000
    }));
    // The straggler's round-1 update is now stale.
    let actions = coordinator.handle(60_001, received(id(2), client_update(&g, 1, id(2))));
    assert!(matches!(
        rejections(&actions)[0].1,
        RejectReason::StaleRound { .. }
    ));
}

#[test]
fn deadline_with_too_few_extends_and_samples_replacements() {
    // 2 of 4 sampled; one answers, the other stalls (still connected).
    let mut coordinator = Coordinator::new(config(1, 2, 2, 4), RUN, global()).unwrap();
    let sampled = sent_to(&connect_all(&mut coordinator, 0, 4));
    let (answering, stalled) = (sampled[0], sampled[1]);
    let g = global();
    coordinator.handle(10, received(answering, client_update(&g, 1, answering)));

    let actions = coordinator.handle(60_000, Event::Tick);
    assert!(
        summaries(&actions).is_empty(),
        "never fewer than the minimum"
    );
    let added = match &actions[0] {
        Action::RoundExtended {
            round: 1,
            accepted: 1,
            required: 2,
            added,
        } => added.clone(),
        other => panic!("expected an extension, got {other:?}"),
    };
    assert_eq!(added.len(), 1);
    assert!(!sampled.contains(&added[0]));
    assert_eq!(sent_to(&actions), added);
    assert_eq!(
        actions.last(),
        Some(&Action::SetDeadline {
            round: 1,
            at_ms: 120_000
        })
    );
    // The old timer firing late is ignored now that the deadline moved.
    assert!(
        coordinator
            .handle(60_001, Event::DeadlinePassed { round: 1 })
            .is_empty()
    );

    // The stalled one finally answers: enough, but the replacement is still pending, so the
    // round waits for it or the deadline.
    let actions = coordinator.handle(70_000, received(stalled, client_update(&g, 1, stalled)));
    assert_eq!(
        actions,
        vec![Action::Accept {
            participant: stalled,
            round: 1
        }]
    );
    let actions = coordinator.handle(80_000, received(added[0], client_update(&g, 1, added[0])));
    let summary = &summaries(&actions)[0];
    assert_eq!(summary.contributors.len(), 3);
    assert_eq!(summary.deadline_extensions, 1);
    assert!(matches!(
        actions.last(),
        Some(Action::Finished { rounds: 1 })
    ));
}

#[test]
fn dropout_and_reconnect_mid_round() {
    let mut coordinator = Coordinator::new(config(2, 2, 2, 2), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 2);
    let round_state = match &started[0] {
        Action::SendRound { state, .. } => Arc::clone(state),
        _ => unreachable!(),
    };
    let g = global();
    coordinator.handle(5, received(id(0), client_update(&g, 1, id(0))));
    // id(1) drops out before answering: it just stops counting.
    assert!(
        coordinator
            .handle(6, Event::ClientDisconnected { participant: id(1) })
            .is_empty()
    );
    assert_eq!(coordinator.connected().count(), 1);

    // Deadline: one accepted, nobody to add -> extended, not aggregated.
    let actions = coordinator.handle(60_000, Event::DeadlinePassed { round: 1 });
    assert!(summaries(&actions).is_empty());
    assert!(actions.contains(&Action::RoundExtended {
        round: 1,
        accepted: 1,
        required: 2,
        added: vec![]
    }));

    // It comes back and asks for work: it gets the same round and the same state again.
    assert!(
        coordinator
            .handle(61_000, Event::ClientConnected { participant: id(1) })
            .is_empty()
    );
    let actions = coordinator.handle(61_001, Event::WorkRequested { participant: id(1) });
    match &actions[..] {
        [
            Action::SendRound {
                participant,
                round: 1,
                state,
                config,
            },
        ] => {
            assert_eq!(*participant, id(1));
            assert_eq!(**state, *round_state);
            assert_eq!(config.seed, training_seed(42, 1, &id(1)));
            assert_eq!(
                config.local_epochs,
                crate::TrainingSettings::default().local_epochs
            );
        }
        other => panic!("expected the round again, got {other:?}"),
    }
    let actions = coordinator.handle(61_100, received(id(1), client_update(&g, 1, id(1))));
    let summary = &summaries(&actions)[0];
    assert_eq!(summary.contributors.len(), 2);
    assert_eq!(summary.deadline_extensions, 1);

    // A participant that answered and then dropped still counted.
    let actions = coordinator.handle(61_200, Event::ClientDisconnected { participant: id(0) });
    assert!(actions.is_empty());
}

#[test]
fn after_the_last_round_everything_is_told_the_run_is_over() {
    let mut coordinator = Coordinator::new(config(1, 2, 2, 2), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 2);
    answer_everything(&mut coordinator, 0, started);
    assert!(coordinator.is_finished());
    assert_eq!(
        coordinator.handle(1_000, Event::WorkRequested { participant: id(0) }),
        vec![Action::SendWait {
            participant: id(0),
            round: 2,
            reason: WaitReason::RunFinished
        }]
    );
    let late = client_update(&global(), 1, id(0));
    assert_eq!(
        rejections(&coordinator.handle(1_001, received(id(0), late))),
        vec![(id(0), RejectReason::RunFinished)]
    );
    assert!(
        coordinator
            .handle(1_002, Event::ClientConnected { participant: id(5) })
            .is_empty()
    );
}

#[test]
fn sampling_depends_on_seed_and_round_only() {
    let cohorts = |seed: u64| {
        let mut cfg = config(6, 3, 2, 8);
        cfg.seed = seed;
        let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
        let started = connect_all(&mut coordinator, 0, 8);
        let (log, _) = answer_everything(&mut coordinator, 0, started);
        summaries(&log)
            .iter()
            .map(|s| {
                let mut ids: Vec<_> = s.contributors.iter().map(|c| c.participant).collect();
                ids.sort();
                ids
            })
            .collect::<Vec<_>>()
    };
    let a = cohorts(1);
    assert_eq!(a, cohorts(1));
    assert_eq!(a.len(), 6);
    assert!(a.iter().any(|c| c != &a[0]), "cohorts vary across rounds");
    assert_ne!(a, cohorts(2), "cohorts depend on the seed");
}

#[test]
fn fraction_sets_the_cohort_size() {
    let mut cfg = config(1, 100, 2, 10);
    cfg.clients_per_round = None;
    cfg.fraction = Some(0.3);
    let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 10);
    assert_eq!(sent_to(&started).len(), 3);
}

#[test]
fn a_resumed_coordinator_continues_exactly_like_an_uninterrupted_one() {
    let mut cfg = config(4, 2, 2, 4);
    cfg.aggregation.rule = AggregationRule::FedAdam {
        server_lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        epsilon: 1e-3,
    };
    cfg.aggregation.prototype_blend = 0.3;

    // Uninterrupted run.
    let mut whole = Coordinator::new(cfg, RUN, global()).unwrap();
    let started = connect_all(&mut whole, 0, 4);
    let (log, _) = answer_everything(&mut whole, 0, started);
    let cut = log
        .iter()
        .position(
            |a| matches!(a, Action::Persist { checkpoint } if checkpoint.completed_rounds == 2),
        )
        .unwrap();
    let (checkpoint, resumed_at) = match (&log[cut], &log[cut - 1]) {
        (Action::Persist { checkpoint }, Action::Aggregated { summary, .. }) => {
            ((**checkpoint).clone(), summary.completed_at_ms)
        }
        _ => unreachable!(),
    };
    assert!(checkpoint.fedadam.is_some());

    // Through the file, as a restarted process would.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.bin");
    crate::checkpoint::write_checkpoint(&path, &checkpoint).unwrap();
    let loaded = crate::checkpoint::read_latest_checkpoint(&path).unwrap();
    // The checkpoint is the replay memory: an update of an aggregated round stays stale.
    let mut replayed = Coordinator::resume(loaded.checkpoint.clone()).unwrap();
    connect_all(&mut replayed, resumed_at, 4);
    let actions = replayed.handle(
        resumed_at,
        received(id(0), client_update(&global(), 2, id(0))),
    );
    assert_eq!(
        rejections(&actions),
        vec![(
            id(0),
            RejectReason::StaleRound {
                round: 2,
                current: 3
            }
        )]
    );
    let mut resumed = Coordinator::resume(loaded.checkpoint).unwrap();
    assert_eq!(resumed.completed_rounds(), 2);
    assert_eq!(resumed.current_round(), 3);
    assert_eq!(resumed.connected().count(), 0);

    // The clients reconnect at the moment the uninterrupted run started round 3.
    let started = connect_all(&mut resumed, resumed_at, 4);
    let (rest, _) = answer_everything(&mut resumed, resumed_at, started);
    assert_eq!(rest, log[cut + 1..].to_vec());
    assert_eq!(resumed.global_state(), whole.global_state());
    assert_eq!(resumed.fedadam_state(), whole.fedadam_state());
    assert_eq!(resumed.history(), whole.history());
    assert!(resumed.is_finished());

    // A finished run resumes finished.
    let done = Coordinator::resume(whole.checkpoint()).unwrap();
    assert!(done.is_finished());
}

#[test]
fn bad_initial_state_and_inconsistent_checkpoints_are_refused() {
    let mut bad = global();
    bad.prototypes[0].values.0.pop();
    assert!(matches!(
        Coordinator::new(config(1, 2, 2, 2), RUN, bad),
        Err(CoordinatorError::InvalidState(_))
    ));
    let mut nan = global();
    nan.parameters.tensors[0].values.0[0] = f32::NAN;
    assert!(Coordinator::new(config(1, 2, 2, 2), RUN, nan).is_err());
    assert!(matches!(
        Coordinator::new(config(0, 2, 2, 2), RUN, global()),
        Err(CoordinatorError::Config(_))
    ));

    let coordinator = Coordinator::new(config(2, 2, 2, 2), RUN, global()).unwrap();
    let mut checkpoint = coordinator.checkpoint();
    checkpoint.fedadam = Some(FedAdamState::new(3, 0.1));
    assert!(matches!(
        Coordinator::resume(checkpoint.clone()),
        Err(CoordinatorError::InvalidCheckpoint(_))
    ));
    checkpoint.fedadam = None;
    checkpoint.completed_rounds = 5;
    assert!(Coordinator::resume(checkpoint.clone()).is_err());
    checkpoint.completed_rounds = 0;
    checkpoint.config_toml = "rounds = \"many\"".into();
    assert!(matches!(
        Coordinator::resume(checkpoint),
        Err(CoordinatorError::Config(_))
    ));
}

#[test]
fn participant_ids_are_hex_in_json_and_bytes_in_bincode() {
    let participant = id(0xabcd);
    let json = serde_json::to_string(&participant).unwrap();
    assert_eq!(json.len(), 66);
    assert!(json.ends_with("abcd\""));
    assert_eq!(
        serde_json::from_str::<ParticipantId>(&json).unwrap(),
        participant
    );
    assert!(serde_json::from_str::<ParticipantId>("\"abc\"").is_err());
    let bytes = bincode::serde::encode_to_vec(participant, bincode::config::standard()).unwrap();
    assert_eq!(bytes.len(), 32);
    let (back, _): (ParticipantId, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, participant);
}

#[test]
fn the_coordinator_can_move_into_a_server_task() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Coordinator>();
    assert_send_sync::<Action>();
    let coordinator = Coordinator::new(config(1, 2, 2, 2), RUN, global()).unwrap();
    assert!(format!("{coordinator:?}").contains("completed_rounds: 0"));
}
