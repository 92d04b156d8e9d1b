//! Scripted-event tests of the privacy layers in the state machine: clipping and uniform
//! weights, central Gaussian noise, the privacy ledger and its budget, resuming with the ledger,
//! and secure sums.

use mpcl_protocol::secure_aggregation::quantize::wrapping_add_into;
use mpcl_protocol::{F32Vec, NamedTensor, ParameterSet};

use super::*;
use crate::privacy::PrivacyConfig;

fn dp_config(
    rounds: u64,
    per_round: usize,
    available: usize,
    clip: f64,
    sigma: f64,
) -> CoordinatorConfig {
    let mut cfg = config(rounds, per_round, per_round, available);
    cfg.privacy = PrivacyConfig {
        clip_norm: Some(clip),
        noise_multiplier: sigma,
        ..PrivacyConfig::default()
    };
    cfg
}

fn epsilons(actions: &[Action]) -> Vec<f64> {
    summaries(actions)
        .iter()
        .map(|s| s.epsilon().expect("epsilon with DP"))
        .collect()
}

#[test]
fn dp_clips_every_delta_and_weights_clients_uniformly() {
    // A vanishing noise multiplier leaves clipping and weighting visible in the result.
    let clip = 0.3;
    let mut coordinator = Coordinator::new(dp_config(1, 3, 3, clip, 1e-9), RUN, global()).unwrap();
    coordinator.use_deterministic_noise_for_tests(1);
    let g = global();
    let updates: Vec<ClientUpdate> = (0..3).map(|i| client_update(&g, 1, id(i))).collect();
    let norms: Vec<f64> = updates.iter().map(|u| u.delta.l2_norm()).collect();
    let started = connect_all(&mut coordinator, 0, 3);
    let (log, _) = answer_everything(&mut coordinator, 0, started);
    assert!(matches!(log.last(), Some(Action::Finished { rounds: 1 })));

    // Expected: the unweighted mean of the clipped deltas (sample counts 10, 11, 12 ignored).
    let mut expected: Vec<f64> = g.parameters.iter_values().map(f64::from).collect();
    for (u, norm) in updates.iter().zip(&norms) {
        let factor = if *norm > clip { clip / norm } else { 1.0 };
        for (e, d) in expected.iter_mut().zip(u.delta.iter_values()) {
            *e += factor * f64::from(d) / 3.0;
        }
    }
    let result = coordinator.global_state().parameters.to_flat();
    for (r, e) in result.iter().zip(&expected) {
        assert!(
            (f64::from(*r) - e).abs() < 1e-5,
            "{result:?} vs {expected:?}"
        );
    }
    let summary = &coordinator.history()[0];
    let privacy = summary.privacy.as_ref().unwrap();
    let over = norms.iter().filter(|n| **n > clip).count();
    assert!(over >= 2, "the fixture must exercise clipping: {norms:?}");
    assert_eq!(privacy.clipped, Some(over));
    assert_eq!(privacy.clip_norm, Some(clip));
    assert!(!privacy.secure_aggregation);
    assert_eq!(privacy.sampling_rate, Some(1.0));
    assert_eq!(privacy.noise_std, Some(1e-9 * clip));
    // The reported update norms are what the clients sent, before clipping.
    assert_eq!(summary.contributors[0].update_norm, norms[0]);
    assert!(privacy.epsilon.unwrap() > 0.0);
    assert_eq!(privacy.delta, Some(1e-5));
}

#[test]
fn a_clip_norm_without_noise_clips_but_keeps_sample_weights() {
    let clip = 0.5;
    let mut cfg = dp_config(1, 2, 2, clip, 0.0);
    cfg.min_clients_to_aggregate = 2;
    let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
    assert!(coordinator.privacy_ledger().is_none());
    let g = global();
    let (a, b) = (client_update(&g, 1, id(0)), client_update(&g, 1, id(1)));
    let started = connect_all(&mut coordinator, 0, 2);
    answer_everything(&mut coordinator, 0, started);
    let clipped = |u: &ClientUpdate| {
        let mut d = u.delta.clone();
        crate::privacy::clip_update(&mut d, clip);
        d.to_flat()
    };
    let (da, db) = (clipped(&a), clipped(&b));
    let result = coordinator.global_state().parameters.to_flat();
    for (i, x) in g.parameters.iter_values().enumerate() {
        let expected = f64::from(x) + (10.0 * f64::from(da[i]) + 11.0 * f64::from(db[i])) / 21.0;
        assert!((f64::from(result[i]) - expected).abs() < 1e-6);
    }
    let privacy = coordinator.history()[0].privacy.clone().unwrap();
    assert_eq!(privacy.epsilon, None);
    assert_eq!(privacy.noise_std, None);
}

/// A global state with one large tensor, for statistics on the noise.
fn wide_global(len: usize) -> GlobalState {
    let mut g = global();
    g.parameters = ParameterSet {
        tensors: vec![NamedTensor {
            name: "enc.w".into(),
            shape: vec![len],
            values: F32Vec(vec![0.0; len]),
        }],
    };
    g
}

fn zero_update(g: &GlobalState, round: u64, samples: u64) -> ClientUpdate {
    let mut u = client_update(&global(), round, id(0));
    u.delta = g.parameters.zeros_like();
    u.sample_count = samples;
    u
}

/// Runs one DP round of `clients` zero updates on a wide model; returns the new parameters.
fn noised_round(sigma: f64, clip: f64, clients: u64, seed: Option<u64>) -> Vec<f32> {
    let g = wide_global(20_000);
    let mut coordinator = Coordinator::new(
        dp_config(1, clients as usize, clients as usize, clip, sigma),
        RUN,
        g.clone(),
    )
    .unwrap();
    if let Some(seed) = seed {
        coordinator.use_deterministic_noise_for_tests(seed);
    }
    connect_all(&mut coordinator, 0, clients);
    for i in 0..clients {
        coordinator.handle(1 + i, received(id(i), zero_update(&g, 1, 5 + i)));
    }
    assert_eq!(coordinator.completed_rounds(), 1);
    coordinator.global_state().parameters.to_flat()
}

#[test]
fn central_noise_on_the_mean_has_std_sigma_c_over_n() {
    let (sigma, clip, n) = (0.5, 2.0, 4u64);
    let values = noised_round(sigma, clip, n, Some(7));
    let count = values.len() as f64;
    let mean = values.iter().map(|v| f64::from(*v)).sum::<f64>() / count;
    let std = (values
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / (count - 1.0))
        .sqrt();
    let expected = sigma * clip / n as f64;
    // 2e4 draws: the sample std is within 3% with overwhelming probability (its standard error
    // is 0.5%); the mean within 5 standard errors of 0.
    assert!((std / expected - 1.0).abs() < 0.03, "{std} vs {expected}");
    assert!(mean.abs() < 5.0 * expected / count.sqrt(), "{mean}");
    // Reproducible with the test hook, fresh from the operating system without it.
    assert_eq!(values, noised_round(sigma, clip, n, Some(7)));
    assert_ne!(values, noised_round(sigma, clip, n, Some(8)));
    assert_ne!(
        noised_round(sigma, clip, n, None),
        noised_round(sigma, clip, n, None)
    );
}

#[test]
fn the_budget_stops_the_run_with_a_reason() {
    let (sigma, rate, fit) = (1.0, 0.5, 5u64);
    // A budget that fits exactly `fit` rounds at q = 2/4, by the ledger itself.
    let mut reference = PrivacyLedger::new(sigma, 1e-5, None).unwrap();
    let spent: Vec<f64> = (0..=fit)
        .map(|_| reference.record_round(rate).unwrap().epsilon)
        .collect();
    let budget = (spent[fit as usize - 1] + spent[fit as usize]) / 2.0;
    let spent = spent[..fit as usize].to_vec();

    let mut cfg = dp_config(fit + 10, 2, 4, 1.0, sigma);
    cfg.privacy.epsilon_budget = Some(budget);
    let mut coordinator = Coordinator::new(cfg, RUN, global()).unwrap();
    coordinator.use_deterministic_noise_for_tests(3);
    let started = connect_all(&mut coordinator, 0, 4);
    let (log, _) = answer_everything(&mut coordinator, 0, started);

    assert_eq!(epsilons(&log), spent);
    let n = log.len();
    let Action::Stopped { rounds, reason } = &log[n - 2] else {
        panic!("expected Stopped before Finished: {:?}", &log[n - 2..]);
    };
    assert_eq!(*rounds, fit);
    assert_eq!(log[n - 1], Action::Finished { rounds: fit });
    let text = reason.to_string();
    assert!(
        text.starts_with(&format!(
            "privacy budget exhausted after {fit} rounds, epsilon = {:.4}",
            spent[spent.len() - 1]
        )),
        "{text}"
    );
    assert!(text.contains("above the budget of"), "{text}");
    // No round was started (no client trained) for the refused round.
    assert_eq!(
        log.iter()
            .filter(|a| matches!(a, Action::SetDeadline { .. }))
            .count() as u64,
        fit
    );
    assert!(coordinator.is_finished());
    assert_eq!(coordinator.stop_reason(), Some(reason));
    assert_eq!(coordinator.completed_rounds(), fit);
    assert_eq!(
        coordinator.handle(1, Event::WorkRequested { participant: id(0) }),
        vec![Action::SendWait {
            participant: id(0),
            round: fit + 1,
            reason: WaitReason::RunFinished
        }]
    );
    // A resumed run stops again at once, with the same reason.
    let mut resumed = Coordinator::resume(coordinator.checkpoint()).unwrap();
    let actions = connect_all(&mut resumed, 0, 4);
    assert!(matches!(&actions[0], Action::Stopped { rounds, .. } if *rounds == fit));
    assert!(resumed.is_finished());
}

#[test]
fn a_resumed_dp_run_keeps_its_ledger_and_continues_exactly() {
    let mut cfg = dp_config(4, 2, 4, 0.5, 0.8);
    cfg.privacy.epsilon_budget = Some(50.0);
    let mut whole = Coordinator::new(cfg, RUN, global()).unwrap();
    whole.use_deterministic_noise_for_tests(11);
    let started = connect_all(&mut whole, 0, 4);
    let (log, _) = answer_everything(&mut whole, 0, started);
    assert_eq!(whole.completed_rounds(), 4);
    let all = epsilons(&log);
    assert!(all.windows(2).all(|w| w[1] > w[0]), "{all:?}");

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
    let ledger = checkpoint.privacy_ledger.clone().unwrap();
    assert_eq!(ledger.rounds(), 2);
    assert_eq!(ledger.spent().epsilon, all[1]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.bin");
    crate::checkpoint::write_checkpoint(&path, &checkpoint).unwrap();
    let loaded = crate::checkpoint::read_latest_checkpoint(&path).unwrap();
    let mut resumed = Coordinator::resume(loaded.checkpoint).unwrap();
    assert_eq!(resumed.privacy_spent().unwrap().epsilon, all[1]);
    resumed.use_deterministic_noise_for_tests(11);
    let started = connect_all(&mut resumed, resumed_at, 4);
    let (rest, _) = answer_everything(&mut resumed, resumed_at, started);
    assert_eq!(rest, log[cut + 1..].to_vec());
    assert_eq!(resumed.global_state(), whole.global_state());
    assert_eq!(resumed.privacy_ledger(), whole.privacy_ledger());
    assert_eq!(epsilons(&rest), all[2..].to_vec());

    // A DP checkpoint that lost its ledger, or whose ledger does not match, is refused.
    let mut broken = checkpoint.clone();
    broken.privacy_ledger = None;
    let error = Coordinator::resume(broken).unwrap_err().to_string();
    assert!(error.contains("privacy ledger is missing"), "{error}");
    let mut broken = checkpoint;
    broken.privacy_ledger = Some(PrivacyLedger::new(0.8, 1e-5, Some(50.0)).unwrap());
    assert!(matches!(
        Coordinator::resume(broken),
        Err(CoordinatorError::InvalidCheckpoint(_))
    ));
}

fn secure_config(rounds: u64, per_round: usize, dp: bool) -> CoordinatorConfig {
    let mut cfg = config(rounds, per_round, 2, per_round);
    cfg.privacy.secure_aggregation = true;
    if dp {
        cfg.privacy.clip_norm = Some(0.5);
        cfg.privacy.noise_multiplier = 1e-9;
    }
    cfg
}

/// What the masking protocol computes, without the masks: the wrapping sum of the prepared
/// inputs of `who`, decoded.
fn secure_sum(coordinator: &Coordinator, who: &[ParticipantId]) -> (u64, Box<SummedUpdate>) {
    let plan = coordinator.secure_round_plan().unwrap().unwrap();
    let mut words = vec![0u32; plan.layout.len()];
    for participant in who {
        let update = client_update(coordinator.global_state(), plan.round, *participant);
        let input = plan
            .prepare_input(&update, &mut crate::privacy::seeded_noise_rng(0))
            .unwrap();
        wrapping_add_into(&mut words, &input.words);
    }
    (
        plan.round,
        Box::new(plan.decode(&words, who.len()).unwrap()),
    )
}

#[test]
fn a_secure_sum_is_aggregated_like_fedavg() {
    // Plain FedAvg of three clients, for reference.
    let mut plain = Coordinator::new(config(1, 3, 2, 3), RUN, global()).unwrap();
    let started = connect_all(&mut plain, 0, 3);
    answer_everything(&mut plain, 0, started);

    let mut secure = Coordinator::new(secure_config(1, 3, false), RUN, global()).unwrap();
    let started = connect_all(&mut secure, 0, 3);
    let cohort = sent_to(&started);
    assert_eq!(cohort.len(), 3);
    // Plain updates are refused and do not count as an answer.
    let update = client_update(&global(), 1, cohort[0]);
    assert_eq!(
        rejections(&secure.handle(1, received(cohort[0], update))),
        vec![(cohort[0], RejectReason::SecureAggregationRequired)]
    );
    assert_eq!(secure.round_status().unwrap().responded, 0);
    assert!(plain.secure_round_plan().unwrap().is_none());

    let (round, sum) = secure_sum(&secure, &cohort);
    let bound = secure
        .secure_round_plan()
        .unwrap()
        .unwrap()
        .sum_error_bound();
    let actions = secure.handle(
        2,
        Event::SecureSumReceived {
            round,
            contributors: cohort.clone(),
            sum,
        },
    );
    assert!(matches!(
        actions.last(),
        Some(Action::Finished { rounds: 1 })
    ));
    let (a, b) = (secure.global_state(), plain.global_state());
    // Sample-weighted mean: the error on the summed numerator over the total weight (33), plus
    // f32 rounding.
    for (x, y) in a.parameters.iter_values().zip(b.parameters.iter_values()) {
        assert!(
            f64::from((x - y).abs()) <= bound / 33.0 + 1e-6,
            "{x} vs {y}"
        );
    }
    for (x, y) in a.prototypes[0]
        .values
        .0
        .iter()
        .zip(&b.prototypes[0].values.0)
    {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
    assert_eq!(a.cooccurrence.count, b.cooccurrence.count);
    let summary = &secure.history()[0];
    assert_eq!(summary.total_samples, 33);
    assert_eq!(summary.contributors.len(), 3);
    assert_eq!(summary.mean_train_loss, None);
    assert!(summary.privacy.as_ref().unwrap().secure_aggregation);
}

#[test]
fn secure_rounds_restart_on_bad_sums_failures_and_deadlines() {
    let mut coordinator = Coordinator::new(secure_config(1, 3, true), RUN, global()).unwrap();
    let started = connect_all(&mut coordinator, 0, 4);
    let cohort = sent_to(&started);
    let outsider = (0..4).map(id).find(|p| !cohort.contains(p)).unwrap();

    // A sum naming someone outside the cohort.
    let (round, sum) = secure_sum(&coordinator, &cohort);
    let mut wrong = cohort.clone();
    wrong[0] = outsider;
    let actions = coordinator.handle(
        1,
        Event::SecureSumReceived {
            round,
            contributors: wrong,
            sum: sum.clone(),
        },
    );
    assert!(
        matches!(&actions[0], Action::RoundFailed { round: 1, error } if error.contains("not sampled")),
        "{actions:?}"
    );
    assert_eq!(sent_to(&actions).len(), 3, "a new cohort is sampled");
    // A failed session and a missed deadline restart the round too.
    let actions = coordinator.handle(
        2,
        Event::SecureAggregationFailed {
            round: 1,
            error: "only 1 participant(s) left".into(),
        },
    );
    assert!(matches!(&actions[0], Action::RoundFailed { error, .. } if error.contains("only 1")));
    let deadline = coordinator.next_deadline().unwrap();
    let actions = coordinator.handle(deadline, Event::Tick);
    assert!(matches!(&actions[0], Action::RoundFailed { error, .. } if error.contains("deadline")));

    // With DP every client must weigh 1: a sum whose weight is a sample count is refused.
    let cohort = coordinator.round_status().unwrap().sampled;
    let (round, mut sum) = secure_sum(&coordinator, &cohort);
    assert_eq!(sum.total_weight, 3.0);
    sum.total_weight = 33.0;
    let actions = coordinator.handle(
        deadline + 1,
        Event::SecureSumReceived {
            round,
            contributors: cohort.clone(),
            sum,
        },
    );
    assert!(matches!(&actions[0], Action::RoundFailed { error, .. } if error.contains("weigh 1")));

    // Two of three (dropped out before masking) is enough with min_clients_to_aggregate = 2.
    let cohort = coordinator.round_status().unwrap().sampled;
    let (round, sum) = secure_sum(&coordinator, &cohort[..2]);
    let actions = coordinator.handle(
        deadline + 2,
        Event::SecureSumReceived {
            round,
            contributors: cohort[..2].to_vec(),
            sum,
        },
    );
    assert!(matches!(
        actions.last(),
        Some(Action::Finished { rounds: 1 })
    ));
    let summary = &coordinator.history()[0];
    assert_eq!(summary.contributors.len(), 2);
    let privacy = summary.privacy.as_ref().unwrap();
    assert_eq!(privacy.clipped, None);
    assert!(privacy.epsilon.unwrap() > 0.0);
    // Noise of two shares of sigma * C / sqrt(t) (t = 2 of 3).
    let share = 1e-9 * 0.5 / 2f64.sqrt();
    assert!((privacy.noise_std.unwrap() - share * 2f64.sqrt()).abs() < 1e-18);
}
