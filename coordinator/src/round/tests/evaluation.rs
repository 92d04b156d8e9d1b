//! Federated evaluation in the round state machine: who is asked, what the totals are, which
//! round is best, the final evaluation round, checkpoints, and secure aggregation.

use mpcl_protocol::metrics::{EvaluationReport, MetricSums};
use mpcl_protocol::secure_aggregation::quantize::wrapping_add_into;

use super::*;

fn evaluating(rounds: u64, per_round: usize, available: usize) -> CoordinatorConfig {
    let mut cfg = config(rounds, per_round, 2, available);
    cfg.evaluation = EvaluationConfig::default();
    cfg
}

/// A fake participant's report on `state`: its validation KL depends on the state's parameters
/// (so different rounds differ), its test KL on the participant (so a corrupted test part can
/// be told apart), and each part counts a few samples.
fn report(state: &GlobalState, participant: ParticipantId) -> EvaluationReport {
    let index = f64::from(participant.0[31]);
    let first = f64::from(state.parameters.iter_values().next().unwrap_or(0.0));
    let sums = |kl: f64, samples: u64| MetricSums {
        sums: [0.2, 1.5, 4.0, kl, 0.7, 0.5].map(|v| v * samples as f64),
        samples,
    };
    EvaluationReport {
        validation: sums(0.5 + (first - 0.3).abs(), 3),
        test: sums(0.4 + index / 10.0, 4),
        prior_validation: sums(0.9, 3),
        prior_test: sums(0.8, 4),
    }
}

/// Answers every `SendRound` like `answer_everything`, attaching a report when asked.
fn answer_evaluating(
    coordinator: &mut Coordinator,
    now: Millis,
    initial: Vec<Action>,
    corrupt_test: bool,
) -> Vec<Action> {
    let respond =
        |state: &GlobalState, round, participant: ParticipantId, config: &TrainingConfig| {
            let mut update = client_update(state, round, participant);
            if config.evaluate {
                let mut r = report(state, participant);
                if corrupt_test {
                    r.test.sums[3] *= 100.0 * (f64::from(participant.0[31]) + 1.0);
                }
                update.evaluation = Some(r);
            }
            update
        };
    answer_everything_with(coordinator, now, initial, respond).0
}

fn evaluated(actions: &[Action]) -> Vec<FederatedMetrics> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Evaluated { metrics, .. } => Some(**metrics),
            _ => None,
        })
        .collect()
}

#[test]
fn every_model_is_evaluated_by_the_next_round_and_the_last_by_a_final_round() {
    let mut coordinator = Coordinator::new(evaluating(3, 3, 3), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 3);
    let log = answer_evaluating(&mut coordinator, 0, started, false);

    // Rounds 1-3 train and ask everyone to evaluate what they received; round 4 only evaluates.
    let rounds: Vec<(u64, bool, bool)> = log
        .iter()
        .filter_map(|a| match a {
            Action::SendRound { round, config, .. } => Some((
                *round,
                config.evaluate,
                config.kind == mpcl_protocol::messages::RoundKind::Evaluation,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 12);
    assert!(rounds.iter().all(|(_, evaluate, _)| *evaluate));
    assert!(rounds.iter().all(|(round, _, only)| *only == (*round == 4)));
    assert_eq!(
        summaries(&log).len(),
        3,
        "the final round aggregates nothing"
    );
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 3 })));
    assert_eq!(coordinator.completed_rounds(), 3);

    // Models 0 (initial) to 3 are evaluated, each over all three participants' samples.
    let metrics = evaluated(&log);
    assert_eq!(
        metrics.iter().map(|m| m.round).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(coordinator.evaluations(), metrics.as_slice());
    for m in &metrics {
        assert_eq!(m.clients, 3);
        assert_eq!(m.test.samples, 12);
        assert_eq!(m.validation.samples, 9);
        // Test KL is the sample-weighted mean of 0.4 + index / 10 over participants 0, 1, 2.
        assert!((m.test.kl - 0.5).abs() < 1e-12, "{}", m.test.kl);
        assert!((m.prior_test.kl - 0.8).abs() < 1e-12);
    }
}

#[test]
fn the_best_round_is_chosen_on_validation_kept_and_never_moved_by_test_labels() {
    let run = |corrupt_test: bool| {
        let mut coordinator = Coordinator::new(evaluating(4, 3, 3), RUN, global()).unwrap();
        let started = connect_all(&mut coordinator, 0, 3);
        let log = answer_evaluating(&mut coordinator, 0, started, corrupt_test);
        (coordinator, log)
    };
    let (coordinator, log) = run(false);
    let history = coordinator.evaluations();
    let lowest = history
        .iter()
        .min_by(|a, b| a.validation.kl.total_cmp(&b.validation.kl))
        .unwrap();
    assert_eq!(coordinator.best_round(), Some(lowest.round));

    // Each new best is handed out with the state that was evaluated, before the checkpoint.
    let kept: Vec<u64> = log
        .iter()
        .filter_map(|a| match a {
            Action::PersistBest { round, .. } => Some(*round),
            _ => None,
        })
        .collect();
    assert_eq!(kept.last(), Some(&lowest.round));
    let flagged: Vec<u64> = log
        .iter()
        .filter_map(|a| match a {
            Action::Evaluated {
                metrics,
                best: true,
            } => Some(metrics.round),
            _ => None,
        })
        .collect();
    assert_eq!(flagged, kept);
    for (i, action) in log.iter().enumerate() {
        if let Action::PersistBest { round, state } = action {
            assert!(
                matches!(&log[i - 1], Action::Evaluated { metrics, best: true } if metrics.round == *round)
            );
            // The evaluated state is the one the evaluating round was sent.
            let sent = log[..i].iter().rev().find_map(|a| match a {
                Action::SendRound {
                    round: r, state, ..
                } if *r == round + 1 => Some(state),
                _ => None,
            });
            assert_eq!(sent.map(|s| s.as_ref()), Some(state.as_ref()));
        }
    }

    // Test labels corrupted (every test KL changes, differently per participant): same choice.
    let (corrupted, _) = run(true);
    assert_ne!(corrupted.evaluations()[0].test, history[0].test);
    assert_eq!(corrupted.best_round(), coordinator.best_round());
}

#[test]
fn a_share_of_the_cohort_evaluates_and_a_bad_report_rejects_its_update() {
    let mut cfg = evaluating(1, 4, 4);
    cfg.evaluation.evaluate_fraction = 0.5;
    let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 4);
    let asked: Vec<ParticipantId> = started
        .iter()
        .filter_map(|a| match a {
            Action::SendRound {
                participant,
                config,
                ..
            } if config.evaluate => Some(*participant),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 2);

    let g = Arc::clone(coordinator.global_state());
    let mut bad = client_update(&g, 1, asked[0]);
    let mut broken = report(&g, asked[0]);
    broken.test.sums[3] = -1.0;
    bad.evaluation = Some(broken);
    let actions = coordinator.handle(5, received(asked[0], bad));
    assert!(matches!(
        rejections(&actions).as_slice(),
        [(_, RejectReason::InvalidEvaluation(_))]
    ));
}

#[test]
fn a_resumed_run_keeps_its_evaluations_and_still_runs_the_final_evaluation() {
    let mut coordinator = Coordinator::new(evaluating(2, 2, 2), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 2);
    let log = answer_evaluating(&mut coordinator, 0, started, false);
    // The checkpoint written after round 2 (before the final evaluation round ran).
    let before_final = log
        .iter()
        .filter_map(|a| match a {
            Action::Persist { checkpoint } => Some((**checkpoint).clone()),
            _ => None,
        })
        .find(|c| c.completed_rounds == 2 && !c.final_evaluated)
        .unwrap();
    assert_eq!(before_final.evaluations.len(), 2, "models 0 and 1");

    let mut resumed = Coordinator::resume(before_final).unwrap();
    assert!(!resumed.is_finished());
    let started = connect_all(&mut resumed, 0, 2);
    assert!(started.iter().any(
        |a| matches!(a, Action::SendRound { round: 3, config, .. } if config.kind == mpcl_protocol::messages::RoundKind::Evaluation)
    ));
    let log = answer_evaluating(&mut resumed, 0, started, false);
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 2 })));
    assert_eq!(resumed.evaluations(), coordinator.evaluations());

    let mut finished = resumed.checkpoint();
    assert!(Coordinator::resume(finished.clone()).unwrap().is_finished());
    finished.evaluations[0].round = 7;
    assert!(matches!(
        Coordinator::resume(finished),
        Err(CoordinatorError::InvalidCheckpoint(_))
    ));
}

#[test]
fn under_secure_aggregation_the_reports_arrive_only_as_a_total() {
    let mut cfg = evaluating(1, 3, 3);
    cfg.privacy.secure_aggregation = true;
    let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 3);
    let cohort = sent_to(&started);
    let plan = coordinator.secure_round_plan().unwrap().unwrap();
    assert!(plan.layout.evaluation);

    // What the masking protocol delivers: the wrapping sum of the prepared inputs.
    let g = Arc::clone(coordinator.global_state());
    let mut words = vec![0u32; plan.layout.len()];
    let mut plain = EvaluationTotals::default();
    for participant in &cohort {
        let mut update = client_update(&g, 1, *participant);
        update.evaluation = Some(report(&g, *participant));
        plain
            .add(*participant, update.evaluation.as_ref().unwrap())
            .unwrap();
        let input = plan
            .prepare_input(&update, &mut crate::privacy::seeded_noise_rng(0))
            .unwrap();
        wrapping_add_into(&mut words, &input.words);
    }
    let sum = plan.decode(&words, cohort.len()).unwrap();
    let actions = coordinator.handle(
        50,
        Event::SecureSumReceived {
            round: 1,
            contributors: cohort.clone(),
            sum: Box::new(sum),
        },
    );
    let secure = evaluated(&actions)[0];
    let exact = plain.finish(0).unwrap();
    assert_eq!(secure.clients, 3);
    assert_eq!(secure.test.samples, exact.test.samples);
    for (a, b) in secure.test.values().iter().zip(exact.test.values()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert!((secure.validation.kl - exact.validation.kl).abs() < 1e-4);
    // Only totals under secure aggregation: no interval over participants can be made.
    assert!(exact.prior_comparison.is_some());
    assert_eq!(secure.prior_comparison, None);
}
