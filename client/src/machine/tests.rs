//! The protocol machine driven message by message, without a coordinator or a model.

use mpcl_protocol::messages::{LocalMetrics, WaitReason};
use mpcl_protocol::secure_aggregation::{SecAggParams, SecAggUpload};
use mpcl_protocol::{
    ClientUpdate, CooccurrenceStatistics, F32Vec, NamedTensor, ParameterSet, SigningKey,
};

use super::*;

const RUN: RunId = [3; 16];

fn machine() -> ClientMachine {
    let identity =
        NodeIdentity::from_signing_key(Some("alice"), SigningKey::from_bytes(&[1; 32])).unwrap();
    ClientMachine::new(Arc::new(identity), NoiseSource::SeededForTests(1))
}

fn state(value: f32) -> GlobalState {
    GlobalState {
        parameters: ParameterSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![2],
                values: F32Vec(vec![value, 0.0]),
            }],
        },
        prototypes: Vec::new(),
        cooccurrence: CooccurrenceStatistics::zeros(2),
    }
}

fn start_round(round: u64, state: GlobalState) -> CoordinatorMessage {
    CoordinatorMessage::StartRound {
        run_id: RUN,
        round,
        state,
        config: TrainingConfig {
            local_epochs: 1,
            batch_size: 8,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            proximal_mu: 0.0,
            seed: round,
            share_memories: true,
            compression: Default::default(),
            evaluate: false,
            kind: Default::default(),
        },
        deadline_ms: 60_000,
        secure_aggregation: None,
    }
}

fn trained(round: u64) -> Arc<TrainedUpdate> {
    Arc::new(TrainedUpdate {
        update: Arc::new(ClientUpdate {
            run_id: RUN,
            round,
            delta: state(0.5).parameters,
            prototypes: Vec::new(),
            cooccurrence: CooccurrenceStatistics::zeros(2),
            sample_count: 4,
            metrics: LocalMetrics::default(),
            evaluation: None,
        }),
        compressed: None,
    })
}

/// The request messages among `outputs`, and whether a training, an upload or the end is asked.
fn kinds(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Request { message, .. } => format!("request {}", message.kind()),
            Output::Upload { round, .. } => format!("upload {round}"),
            Output::Train(handed) => format!("train {}", handed.round),
            Output::Wait(delay) => format!("wait {}", delay.as_millis()),
            Output::Event(event) => format!("event {}", event_name(event)),
            Output::Finished { rounds } => format!("finished {rounds}"),
        })
        .collect()
}

fn event_name(event: &NodeEvent) -> &'static str {
    match event {
        NodeEvent::RoundStarted { .. } => "RoundStarted",
        NodeEvent::UpdateSent { .. } => "UpdateSent",
        NodeEvent::SecureRoundAbandoned { .. } => "SecureRoundAbandoned",
        NodeEvent::Finished { .. } => "Finished",
        _ => "other",
    }
}

fn last_completed_in(outputs: &[Output]) -> Option<Option<u64>> {
    outputs.iter().find_map(|o| match o {
        Output::Request {
            message:
                ClientMessage::RequestWork {
                    last_completed_round,
                },
            ..
        } => Some(*last_completed_round),
        _ => None,
    })
}

#[test]
fn a_plain_round_trains_uploads_and_asks_again() {
    let mut m = machine();
    assert_eq!(kinds(&m.start_session(RUN)), ["request RequestWork"]);
    let wait = m
        .handle_reply(CoordinatorMessage::Wait {
            retry_after_ms: 250,
            reason: WaitReason::NotSelected { round: 1 },
        })
        .unwrap();
    assert_eq!(kinds(&wait), ["wait 250"]);
    assert_eq!(kinds(&m.wait_over().unwrap()), ["request RequestWork"]);

    let outputs = m.handle_reply(start_round(1, state(1.0))).unwrap();
    assert_eq!(kinds(&outputs), ["event RoundStarted", "train 1"]);
    assert_eq!(m.last_round().unwrap().round, 1);
    assert_eq!(kinds(&m.trained(trained(1)).unwrap()), ["upload 1"]);
    let outputs = m
        .handle_reply(CoordinatorMessage::UpdateAccepted { round: 1 })
        .unwrap();
    assert_eq!(kinds(&outputs), ["event UpdateSent", "request RequestWork"]);
    assert_eq!(last_completed_in(&outputs), Some(Some(1)));
    assert_eq!(m.last_completed_round(), Some(1));

    let outputs = m
        .handle_reply(CoordinatorMessage::Finished { rounds: 1 })
        .unwrap();
    assert_eq!(kinds(&outputs), ["event Finished", "finished 1"]);
}

#[test]
fn an_unacknowledged_update_is_sent_again_for_the_same_round_only() {
    let mut m = machine();
    m.start_session(RUN);
    m.handle_reply(start_round(2, state(1.0))).unwrap();
    let update = trained(2);
    m.trained(Arc::clone(&update)).unwrap();
    // The connection drops before the answer.
    m.session_lost();
    m.start_session(RUN);
    let outputs = m.handle_reply(start_round(2, state(1.0))).unwrap();
    assert_eq!(kinds(&outputs), ["event RoundStarted", "upload 2"]);
    let Some(Output::Upload { update: again, .. }) = outputs.last() else {
        unreachable!()
    };
    assert!(Arc::ptr_eq(again, &update), "not retrained");

    // Round not open: kept. Another state for the same round: trained afresh.
    let outputs = m
        .handle_reply(CoordinatorMessage::UpdateRejected {
            round: 2,
            reason: RejectReason::RoundNotOpen { round: 2 },
        })
        .unwrap();
    assert_eq!(kinds(&outputs), ["event UpdateSent", "request RequestWork"]);
    let outputs = m.handle_reply(start_round(2, state(9.0))).unwrap();
    assert_eq!(kinds(&outputs), ["event RoundStarted", "train 2"]);
    m.trained(trained(2)).unwrap();
    // Any other rejection drops it.
    m.handle_reply(CoordinatorMessage::UpdateRejected {
        round: 2,
        reason: RejectReason::Duplicate { round: 2 },
    })
    .unwrap();
    let outputs = m.handle_reply(start_round(2, state(9.0))).unwrap();
    assert_eq!(kinds(&outputs), ["event RoundStarted", "train 2"]);
}

#[test]
fn protocol_violations_are_errors_that_end_the_session() {
    let mut m = machine();
    m.start_session(RUN);
    let mut other = start_round(1, state(1.0));
    if let CoordinatorMessage::StartRound { run_id, .. } = &mut other {
        *run_id = [4; 16];
    }
    assert!(matches!(
        m.handle_reply(other),
        Err(ProtocolError::OtherRun)
    ));

    m.start_session(RUN);
    let error = m
        .handle_reply(CoordinatorMessage::Error {
            reason: "disk full".into(),
        })
        .unwrap_err();
    assert!(error.to_string().contains("disk full"), "{error}");

    m.start_session(RUN);
    assert!(matches!(
        m.handle_reply(CoordinatorMessage::UpdateAccepted { round: 1 }),
        Err(ProtocolError::Unexpected {
            request: "RequestWork",
            reply: "UpdateAccepted"
        })
    ));
    // A driver feeding what was not asked for is told so.
    assert!(matches!(
        m.trained(trained(1)),
        Err(ProtocolError::OutOfOrder { .. })
    ));
    assert!(matches!(
        m.wait_over(),
        Err(ProtocolError::OutOfOrder { .. })
    ));
}

#[test]
fn a_secure_round_that_cannot_go_on_costs_only_the_round() {
    let mut m = machine();
    m.start_session(RUN);
    // A setup for another round is refused before anything is sent.
    let roster = vec![
        mpcl_protocol::secure_aggregation::PeerId(m.identity.public_key().to_bytes()),
        mpcl_protocol::secure_aggregation::PeerId(
            SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
        ),
    ];
    let global = state(1.0);
    let layout = mpcl_protocol::secure_aggregation::UpdateLayout::of_global(&global);
    let params = SecAggParams::new(RUN, 9, roster, 2, layout.len()).unwrap();
    let setup = SecureRoundSetup {
        params,
        quantisation_scale: 1024.0,
        clip_norm: None,
        uniform_weights: false,
        noise_multiplier: 0.0,
        step_timeout_ms: 1000,
        evaluation: false,
    };
    let mut message = start_round(1, global.clone());
    if let CoordinatorMessage::StartRound {
        secure_aggregation, ..
    } = &mut message
    {
        *secure_aggregation = Some(Box::new(setup.clone()));
    }
    let outputs = m.handle_reply(message).unwrap();
    assert_eq!(
        kinds(&outputs),
        [
            "event RoundStarted",
            "event SecureRoundAbandoned",
            "request RequestWork"
        ]
    );

    // A fitting setup advertises keys; an aborted session sends the node back for work.
    let mut setup = setup;
    setup.params = SecAggParams::new(RUN, 1, setup.params.roster.clone(), 2, layout.len()).unwrap();
    let mut message = start_round(1, global);
    if let CoordinatorMessage::StartRound {
        secure_aggregation, ..
    } = &mut message
    {
        *secure_aggregation = Some(Box::new(setup));
    }
    let outputs = m.handle_reply(message).unwrap();
    assert_eq!(
        kinds(&outputs),
        ["event RoundStarted", "request SecureAggregation"]
    );
    assert!(matches!(
        &outputs[1],
        Output::Request {
            message: ClientMessage::SecureAggregation {
                upload: SecAggUpload::Advertise(_),
                ..
            },
            round_deadline: Some(deadline),
        } if deadline.as_millis() == 60_000
    ));
    let outputs = m
        .handle_reply(CoordinatorMessage::SecureAggregationAborted {
            round: 1,
            reason: "too few advertisements".into(),
        })
        .unwrap();
    assert_eq!(
        kinds(&outputs),
        ["event SecureRoundAbandoned", "request RequestWork"]
    );
    assert_eq!(m.last_completed_round(), None);
}
