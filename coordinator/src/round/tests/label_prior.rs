//! The opening label-prior round: who is asked, what the head becomes, what stays unchanged,
//! checkpoints and the privacy ledger.

use mpcl_protocol::NamedTensor;
use mpcl_protocol::messages::{LABEL_PRIOR_LOGITS, RoundKind};

use super::*;

fn opening(rounds: u64, per_round: usize, available: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        start_at_label_prior: true,
        ..config(rounds, per_round, 2, available)
    }
}

/// The tiny test state plus a head bias of two emotions at zero (a uniform prior).
fn state_with_head() -> GlobalState {
    let mut state = global();
    state.parameters.tensors.push(NamedTensor {
        name: LABEL_PRIOR_LOGITS.into(),
        shape: vec![2],
        values: F32Vec(vec![0.0, 0.0]),
    });
    state
}

/// Participant `i` holds `i + 1` samples, each labelled `[0.2, 0.8]` when `i` is even and
/// `[0.9, 0.1]` when odd.
fn label_sums(participant: ParticipantId) -> (Vec<f32>, f64) {
    let index = participant.0[31];
    let samples = f32::from(index) + 1.0;
    let label = if index.is_multiple_of(2) {
        [0.2, 0.8]
    } else {
        [0.9, 0.1]
    };
    (label.map(|v| v * samples).to_vec(), f64::from(samples))
}

/// Answers the opening round like a participant does (zero delta, label sums only) and every
/// training round like the fake client.
fn answer(coordinator: &mut Coordinator, initial: Vec<Action>) -> Vec<Action> {
    answer_everything_with(
        coordinator,
        0,
        initial,
        |state, round, participant, config| {
            if config.kind == RoundKind::LabelPrior {
                let (sums, count) = label_sums(participant);
                ClientUpdate {
                    delta: state.parameters.zeros_like(),
                    prototypes: Vec::new(),
                    cooccurrence: CooccurrenceStatistics::of_label_sums(&sums, count),
                    sample_count: count as u64,
                    ..client_update(state, round, participant)
                }
            } else {
                client_update(state, round, participant)
            }
        },
    )
    .0
}

fn logits(state: &GlobalState) -> Vec<f32> {
    state
        .parameters
        .get(LABEL_PRIOR_LOGITS)
        .unwrap()
        .values
        .0
        .clone()
}

#[test]
fn round_zero_asks_everyone_and_sets_the_head_at_the_summed_label_prior() {
    let mut coordinator = Coordinator::new(opening(2, 2, 3), RUN, state_with_head()).unwrap();
    assert_eq!(coordinator.current_round(), 0);
    let started = connect_all(&mut coordinator, 0, 3);
    let sent: Vec<(u64, RoundKind, bool)> = started
        .iter()
        .filter_map(|a| match a {
            Action::SendRound { round, config, .. } => Some((*round, config.kind, config.evaluate)),
            _ => None,
        })
        .collect();
    // Everyone connected, not the cohort of 2; nothing is evaluated in round 0.
    assert_eq!(sent, vec![(0, RoundKind::LabelPrior, false); 3]);

    let log = answer(&mut coordinator, started);
    // Participants 0, 1, 2 hold 1, 2, 3 samples: label mass (0.2 + 0.6 + 1.8, 0.8 + 0.2 + 2.4)
    // over 6 samples.
    let expected = [2.6f32 / 6.0, 3.4 / 6.0];
    let set: Vec<_> = log
        .iter()
        .filter_map(|a| match a {
            Action::LabelPriorSet {
                participants,
                samples,
                prior,
            } => Some((*participants, *samples, prior.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(set.len(), 1);
    let (participants, samples, prior) = &set[0];
    assert_eq!((*participants, *samples), (3, 6));
    for (p, e) in prior.iter().zip(expected) {
        assert!((p - e).abs() < 1e-6, "{prior:?}");
    }

    // Round 1 starts from the state round 0 made: only the logits changed.
    let first_round_state = log
        .iter()
        .find_map(|a| match a {
            Action::SendRound {
                round: 1, state, ..
            } => Some(Arc::clone(state)),
            _ => None,
        })
        .expect("round 1 starts after round 0");
    let initial = state_with_head();
    let logits = logits(&first_round_state);
    for (l, e) in logits.iter().zip(expected) {
        assert!((l - e.ln()).abs() < 1e-6, "{logits:?}");
    }
    for (tensor, before) in first_round_state
        .parameters
        .tensors
        .iter()
        .zip(&initial.parameters.tensors)
        .filter(|(t, _)| t.name != LABEL_PRIOR_LOGITS)
    {
        assert_eq!(tensor, before);
    }
    assert_eq!(first_round_state.prototypes, initial.prototypes);
    assert_eq!(first_round_state.cooccurrence, initial.cooccurrence);

    // Two training rounds follow, numbered 1 and 2; round 0 is not one of them.
    assert_eq!(
        summaries(&log).iter().map(|s| s.round).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 2 })));
}

#[test]
fn the_label_prior_is_checkpointed_once_and_a_resume_does_not_repeat_it() {
    let mut coordinator = Coordinator::new(opening(2, 2, 2), RUN, state_with_head()).unwrap();
    let before = coordinator.checkpoint();
    assert!(!before.label_prior_applied);
    let started = connect_all(&mut coordinator, 0, 2);
    let log = answer(&mut coordinator, started);
    let first_persist = log
        .iter()
        .find_map(|a| match a {
            Action::Persist { checkpoint } => Some((**checkpoint).clone()),
            _ => None,
        })
        .unwrap();
    assert!(first_persist.label_prior_applied);
    assert_eq!(first_persist.completed_rounds, 0);

    // Resumed after round 0: the next round is 1.
    let mut resumed = Coordinator::resume(first_persist).unwrap();
    assert_eq!(resumed.current_round(), 1);
    let started = connect_all(&mut resumed, 0, 2);
    assert!(started.iter().all(|a| !matches!(
        a,
        Action::SendRound { config, .. } if config.kind == RoundKind::LabelPrior
    )));
    // Resumed before round 0 finished: round 0 runs again.
    let mut early = Coordinator::resume(before).unwrap();
    assert_eq!(early.current_round(), 0);
    let started = connect_all(&mut early, 0, 2);
    assert!(started.iter().any(|a| matches!(
        a,
        Action::SendRound { round: 0, config, .. } if config.kind == RoundKind::LabelPrior
    )));
}

#[test]
fn round_zero_costs_no_privacy_budget() {
    let mut cfg = opening(1, 2, 2);
    cfg.privacy.clip_norm = Some(1.0);
    cfg.privacy.noise_multiplier = 1.0;
    let mut coordinator = Coordinator::new(cfg, RUN, state_with_head()).unwrap();
    coordinator.use_deterministic_noise_for_tests(3);
    let started = connect_all(&mut coordinator, 0, 2);
    let log = answer(&mut coordinator, started);
    let round_zero = log
        .iter()
        .position(|a| matches!(a, Action::LabelPriorSet { .. }))
        .unwrap();
    let persisted = log[round_zero..]
        .iter()
        .find_map(|a| match a {
            Action::Persist { checkpoint } => Some(checkpoint.privacy_ledger.clone()),
            _ => None,
        })
        .unwrap()
        .expect("differential privacy keeps a ledger");
    assert_eq!(
        persisted.rounds(),
        0,
        "round 0 released no trained parameter"
    );
    assert_eq!(coordinator.privacy_ledger().unwrap().rounds(), 1);
}

#[test]
fn a_state_without_the_head_logits_is_refused_with_the_setting_named() {
    let error = Coordinator::new(opening(1, 2, 2), RUN, global()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(LABEL_PRIOR_LOGITS), "{message}");
    assert!(
        message.contains("start_at_label_prior = false"),
        "{message}"
    );
    let mut wrong = state_with_head();
    wrong.parameters.tensors.last_mut().unwrap().values = F32Vec(vec![0.0; 3]);
    wrong.parameters.tensors.last_mut().unwrap().shape = vec![3];
    let message = Coordinator::new(opening(1, 2, 2), RUN, wrong)
        .unwrap_err()
        .to_string();
    assert!(message.contains("one value per emotion (2)"), "{message}");
}
