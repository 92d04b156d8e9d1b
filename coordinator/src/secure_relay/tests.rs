//! The relay driven by real protocol clients in memory: whole sessions, a dropout after
//! masking, refused messages and deadlines, all without sockets.

use std::collections::BTreeMap;

use mpcl_protocol::SigningKey;
use mpcl_protocol::secure_aggregation::{ClientOptions, SecAggClient, SummedUpdate};

use super::*;
use crate::privacy::{PrivacyConfig, seeded_noise_rng};
use crate::test_support::{RUN, global, update};

const STEP: u64 = 1000;
const ROUND_DEADLINE: Millis = 60_000;
const NONCE: [u8; 16] = [5; 16];

struct Cohort {
    keys: BTreeMap<ParticipantId, SigningKey>,
    plan: SecureRoundPlan,
}

/// `n` participants whose ids are their ed25519 keys, and the round-1 plan for all of them.
fn cohort(n: u8) -> Cohort {
    let keys: BTreeMap<ParticipantId, SigningKey> = (1..=n)
        .map(|i| {
            let key = SigningKey::from_bytes(&[i; 32]);
            (ParticipantId(key.verifying_key().to_bytes()), key)
        })
        .collect();
    let privacy = PrivacyConfig {
        secure_aggregation: true,
        ..PrivacyConfig::default()
    };
    let plan = privacy
        .secure_round_plan(RUN, 1, keys.keys().copied().collect(), &global(), false)
        .unwrap();
    Cohort { keys, plan }
}

/// The one reply to `participant` among `outputs`.
fn reply_to(outputs: &[RelayOutput], participant: ParticipantId) -> CoordinatorMessage {
    let replies: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            RelayOutput::Reply {
                participant: p,
                message,
            } if *p == participant => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply to {participant}: {outputs:?}");
    replies.into_iter().next().unwrap()
}

fn step_of(message: CoordinatorMessage) -> SecAggStep {
    match message {
        CoordinatorMessage::SecureAggregation { round: 1, step } => step,
        other => panic!("expected a step, got {other:?}"),
    }
}

fn event(outputs: &[RelayOutput]) -> Option<Event> {
    outputs.iter().find_map(|o| match o {
        RelayOutput::Event(event) => Some(event.clone()),
        _ => None,
    })
}

/// Runs a whole session in which `vanish_after_masking` (if any) leaves right after its masked
/// input is in; returns the relay's sum and the plain sum of every masked input, decoded.
fn run_session(n: u8, vanish_after_masking: Option<usize>) -> (SummedUpdate, SummedUpdate) {
    let Cohort { keys, plan } = cohort(n);
    let g = global();
    let mut relay = SecureRelay::new(plan.clone(), NONCE, STEP, 0, ROUND_DEADLINE).unwrap();
    let ids: Vec<ParticipantId> = keys.keys().copied().collect();
    let vanished = vanish_after_masking.map(|i| ids[i]);
    let options = ClientOptions::default();
    let mut clients = BTreeMap::new();
    let mut last = Vec::new();
    for id in &ids {
        let setup = relay.hand_out(*id).expect("cohort member joins");
        assert!(relay.hand_out(*id).is_none(), "handed out once");
        let (client, advertisement) =
            SecAggClient::new(setup.params.clone(), &keys[id], &options, [id.0[0]; 32]).unwrap();
        clients.insert(*id, client);
        last = relay.receive(10, *id, 1, NONCE, SecAggUpload::Advertise(advertisement));
    }
    // The last advertisement closed the step and answered everyone.
    let mut next = BTreeMap::new();
    for id in &ids {
        let SecAggStep::Advertisements(list) = step_of(reply_to(&last, *id)) else {
            panic!("advertisements")
        };
        let bundle = clients.get_mut(id).unwrap().share_keys(&list).unwrap();
        next.insert(*id, SecAggUpload::Shares(bundle));
    }
    for (id, upload) in next {
        last = relay.receive(20, id, 1, NONCE, upload);
    }
    let mut plain = vec![0u32; plan.layout.len()];
    let mut uploads = BTreeMap::new();
    for (k, id) in ids.iter().enumerate() {
        let SecAggStep::Shares(shares) = step_of(reply_to(&last, *id)) else {
            panic!("shares")
        };
        let input = plan
            .prepare_input(
                &update(&g, 1, 10 + k as u64, k as f32 * 0.25 - 0.3),
                &mut seeded_noise_rng(1),
            )
            .unwrap();
        mpcl_protocol::secure_aggregation::quantize::wrapping_add_into(&mut plain, &input.words);
        let masked = clients
            .get_mut(id)
            .unwrap()
            .mask_input(&shares, &input.words)
            .unwrap();
        uploads.insert(*id, SecAggUpload::MaskedInput(masked));
    }
    for (id, upload) in uploads {
        last = relay.receive(30, id, 1, NONCE, upload);
    }
    let mut signers = Vec::new();
    for id in &ids {
        let SecAggStep::Survivors(list) = step_of(reply_to(&last, *id)) else {
            panic!("survivors")
        };
        assert_eq!(list.survivors.len(), n as usize, "every input is in");
        if Some(*id) != vanished {
            signers.push((
                *id,
                clients.get_mut(id).unwrap().sign_survivors(&list).unwrap(),
            ));
        }
    }
    if let Some(gone) = vanished {
        assert!(relay.participant_left(35, gone).is_empty());
    }
    for (id, signature) in signers {
        last = relay.receive(40, id, 1, NONCE, SecAggUpload::Signature(signature));
    }
    let mut responses = Vec::new();
    for id in ids.iter().filter(|id| Some(**id) != vanished) {
        let SecAggStep::UnmaskRequest(request) = step_of(reply_to(&last, *id)) else {
            panic!("unmask request")
        };
        responses.push((*id, clients.get_mut(id).unwrap().unmask(&request).unwrap()));
    }
    for (id, response) in responses {
        last = relay.receive(50, id, 1, NONCE, SecAggUpload::Unmask(response));
    }
    for id in ids.iter().filter(|id| Some(**id) != vanished) {
        assert_eq!(
            step_of(reply_to(&last, *id)),
            SecAggStep::Done {
                contributors: u32::from(n)
            }
        );
    }
    let Some(Event::SecureSumReceived {
        round: 1,
        contributors,
        sum,
    }) = event(&last)
    else {
        panic!("no sum: {last:?}")
    };
    assert_eq!(contributors, ids);
    assert!(relay.next_deadline().is_none(), "the session is over");
    (*sum, plan.decode(&plain, n as usize).unwrap())
}

#[test]
fn a_whole_session_yields_the_sum_of_the_inputs() {
    let (sum, plain) = run_session(3, None);
    assert_eq!(sum, plain);
    assert_eq!(sum.contributors, 3);
    assert_eq!(sum.total_weight, 10.0 + 11.0 + 12.0);
}

#[test]
fn a_client_that_leaves_after_masking_stays_in_the_sum() {
    let (sum, plain) = run_session(4, Some(1));
    assert_eq!(sum, plain);
    assert_eq!(sum.contributors, 4);
}

#[test]
fn other_sessions_late_clients_and_missed_deadlines_are_refused() {
    let Cohort { keys, plan } = cohort(3);
    let ids: Vec<ParticipantId> = keys.keys().copied().collect();
    let mut relay = SecureRelay::new(plan, NONCE, STEP, 0, ROUND_DEADLINE).unwrap();
    let stranger = ParticipantId([9; 32]);
    assert!(relay.hand_out(stranger).is_none(), "not in the cohort");
    let setup = relay.hand_out(ids[0]).unwrap();
    let (_client, advertisement) = SecAggClient::new(
        setup.params,
        &keys[&ids[0]],
        &ClientOptions::default(),
        [1; 32],
    )
    .unwrap();

    // Another nonce (a failed attempt at the same round): refused, the session untouched.
    let outputs = relay.receive(
        5,
        ids[0],
        1,
        [6; 16],
        SecAggUpload::Advertise(advertisement.clone()),
    );
    let CoordinatorMessage::SecureAggregationAborted { reason, .. } = reply_to(&outputs, ids[0])
    else {
        panic!("refused")
    };
    assert!(reason.contains("another"), "{reason}");

    // One advertisement only: nothing closes before the deadline...
    let outputs = relay.receive(5, ids[0], 1, NONCE, SecAggUpload::Advertise(advertisement));
    assert!(outputs.is_empty(), "{outputs:?}");
    assert!(relay.tick(STEP - 1).is_empty());
    assert_eq!(relay.next_deadline(), Some(STEP));
    // ...then the step closes with 1 of the threshold 2: the waiting client is told and the
    // state machine learns that the session failed.
    let outputs = relay.tick(STEP);
    assert!(matches!(
        reply_to(&outputs, ids[0]),
        CoordinatorMessage::SecureAggregationAborted { .. }
    ));
    match event(&outputs) {
        Some(Event::SecureAggregationFailed { round: 1, error }) => {
            assert!(error.contains("threshold"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert!(relay.hand_out(ids[1]).is_none(), "over");
}

#[test]
fn a_refused_message_leaves_only_its_sender_out() {
    let Cohort { keys, plan } = cohort(3);
    let ids: Vec<ParticipantId> = keys.keys().copied().collect();
    let mut relay = SecureRelay::new(plan, NONCE, STEP, 0, ROUND_DEADLINE).unwrap();
    let mut adverts = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let setup = relay.hand_out(*id).unwrap();
        let (_, advertisement) = SecAggClient::new(
            setup.params,
            &keys[id],
            &ClientOptions::default(),
            [k as u8; 32],
        )
        .unwrap();
        adverts.push(advertisement);
    }
    // The first client sends the second's advertisement: refused and left out.
    let outputs = relay.receive(
        1,
        ids[0],
        1,
        NONCE,
        SecAggUpload::Advertise(adverts[1].clone()),
    );
    assert!(matches!(
        reply_to(&outputs, ids[0]),
        CoordinatorMessage::SecureAggregationAborted { .. }
    ));
    assert!(
        relay
            .receive(
                2,
                ids[1],
                1,
                NONCE,
                SecAggUpload::Advertise(adverts[1].clone())
            )
            .is_empty()
    );
    // The last expected advertisement closes the step at once: nobody waits for the first.
    let outputs = relay.receive(
        3,
        ids[2],
        1,
        NONCE,
        SecAggUpload::Advertise(adverts[2].clone()),
    );
    for id in &ids[1..] {
        let SecAggStep::Advertisements(list) = step_of(reply_to(&outputs, *id)) else {
            panic!()
        };
        assert_eq!(list.len(), 2);
    }
    let outputs = relay.receive(
        4,
        ids[0],
        1,
        NONCE,
        SecAggUpload::Advertise(adverts[0].clone()),
    );
    assert!(matches!(
        reply_to(&outputs, ids[0]),
        CoordinatorMessage::SecureAggregationAborted { .. }
    ));
    assert_eq!(relay.stage(), ServerStage::Shares.name());
}
