//! What mpcl itself does per client-round on each end, stage by stage, without a network.
//!
//! The rounds on Flower's workload ([`crate::flower`]) give the coordinator's and the clients'
//! whole CPU per client-round, most of it quinn's (QUIC, TLS, UDP system calls; see the QUIC
//! floor, [`crate::transport_floor`]). This part times the rest, the work that is mpcl's own,
//! with the same functions the nodes call, in one thread, so that a change to one stage shows
//! in its own figure instead of in the noise of a two-core machine running a federation:
//!
//! - the coordinator: encoding each participant's `StartRound` (the round's state is encoded
//!   once and shared, as the server does), decoding an update's frame, checking its signature,
//!   decoding its payload, and handing it to the round state machine (validation, the exact
//!   sum, and the round's close shared out over its updates);
//! - the client: decoding its `StartRound`, encoding and signing its update, and framing it.
//!
//! The clients of one round go through in turn, one at a time as each end handles them; each
//! stage's time is summed over them and reported per client-round, the median over repetitions.

use std::sync::Arc;
use std::time::Instant;

use mpcl_coordinator::{Action, Coordinator, Event, ParticipantId};
use mpcl_data::ModelConfig;
use mpcl_protocol::codec::decode_message;
use mpcl_protocol::framing::encode_frame;
use mpcl_protocol::messages::{ClientMessage, CoordinatorMessage, GlobalState, TrainingConfig};
use mpcl_protocol::start_round::{EncodedState, SplicedPayload, encode_start_round};
use mpcl_protocol::update_payload::decode_update_payload;
use mpcl_protocol::{DeltaLayout, SignedUpdate};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::federation_setup::{BenchKeys, every_client_config, initial_state};
use crate::flower::workload_data;
use crate::stats::median;
use crate::synthetic_state::client_update;

/// One stage's time per client-round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    /// Which end does it: `coordinator` or `client`.
    pub end: String,
    pub stage: String,
    /// Median over repetitions of the stage's seconds per client-round.
    pub seconds: f64,
}

/// One model's stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnWorkRow {
    pub model: String,
    /// Encoder parameters (the delta's values).
    pub parameters: usize,
    /// Client-rounds timed per repetition (one round of this many clients).
    pub clients: usize,
    /// Bytes of one `StartRound` payload and of one update frame's payload.
    pub start_round_bytes: usize,
    pub update_bytes: usize,
    /// Every stage, the coordinator's first, in the order they happen.
    pub stages: Vec<StageTime>,
    /// CPU of quinn's server alone per client-round moving these messages' bytes, with this
    /// many clients over [`crate::flower::ROUNDS`] rounds ([`crate::transport_floor`]): with the
    /// coordinator's stages, what the coordinator needs at least at this model's size.
    #[serde(default)]
    pub floor_server_cpu_per_client_round: Option<f64>,
}

impl OwnWorkRow {
    /// The sum of one end's stages per client-round.
    pub fn total(&self, end: &str) -> f64 {
        self.stages
            .iter()
            .filter(|s| s.end == end)
            .map(|s| s.seconds)
            .sum()
    }
}

/// The two ends, as [`StageTime::end`] names them.
pub const COORDINATOR: &str = "coordinator";
pub const CLIENT: &str = "client";

/// Every stage, by end, in the order the report lists them; the timings below index it.
const STAGES: [(&str, &str); 8] = [
    (COORDINATOR, "encode StartRound"),
    (COORDINATOR, "decode the update's frame"),
    (COORDINATOR, "check the signature"),
    (COORDINATOR, "decode the payload"),
    (
        COORDINATOR,
        "round state machine (validation, exact sum, the round's close)",
    ),
    (CLIENT, "decode StartRound"),
    (CLIENT, "encode and sign the update"),
    (CLIENT, "frame the update"),
];
const ENCODE_START_ROUND: usize = 0;
const DECODE_FRAME: usize = 1;
const CHECK_SIGNATURE: usize = 2;
const DECODE_PAYLOAD: usize = 3;
const STATE_MACHINE: usize = 4;
const DECODE_START_ROUND: usize = 5;
const SIGN_UPDATE: usize = 6;
const FRAME_UPDATE: usize = 7;

fn measure_error(model: &str, message: impl std::fmt::Display) -> BenchError {
    BenchError::Measure {
        what: format!("mpcl's own work per client-round ({model} model)"),
        message: message.to_string(),
    }
}

/// Each of [`STAGES`]' seconds per client-round.
type Stages = [f64; STAGES.len()];

/// Times every stage for `clients` clients of the `model` network, `repeats` times.
pub fn measure(
    name: &str,
    model: &ModelConfig,
    clients: usize,
    repeats: usize,
) -> Result<OwnWorkRow, BenchError> {
    // The Flower workload's schema: the tiny model's row is then the state of those rounds.
    let initial = initial_state(&workload_data().schema, model)?;
    let keys = BenchKeys::new(clients, "mpcl's own work per client-round")?;
    let run_id = [9; 16];
    let mut times: Vec<Stages> = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..repeats.max(1) {
        let (stages, start_round_bytes, update_bytes) = one_round(name, &keys, &initial, run_id)?;
        sizes = (start_round_bytes, update_bytes);
        times.push(stages);
    }
    let stages = STAGES
        .iter()
        .enumerate()
        .map(|(i, (end, stage))| StageTime {
            end: (*end).into(),
            stage: (*stage).into(),
            seconds: median(&times.iter().map(|t| t[i]).collect::<Vec<_>>()),
        })
        .collect();
    Ok(OwnWorkRow {
        model: name.into(),
        parameters: initial.parameters.value_count(),
        clients,
        start_round_bytes: sizes.0,
        update_bytes: sizes.1,
        stages,
        floor_server_cpu_per_client_round: None,
    })
}

/// Bytes of one participant's `StartRound` payload and of its update's frame payload, for
/// `model` on Flower's workload schema: what each client of [`crate::flower`]'s rounds moves
/// each way per round, which the QUIC floor ([`crate::transport_floor`]) then moves too.
pub fn message_bytes(model: &ModelConfig) -> Result<(usize, usize), BenchError> {
    let initial = initial_state(&workload_data().schema, model)?;
    let keys = BenchKeys::new(1, "the bytes of a round's messages")?;
    let (_, start_round_bytes, update_bytes) = one_round("workload", &keys, &initial, [9; 16])?;
    Ok((start_round_bytes, update_bytes))
}

/// One round of every client; each stage's seconds per client-round.
fn one_round(
    name: &str,
    keys: &BenchKeys,
    initial: &GlobalState,
    run_id: [u8; 16],
) -> Result<(Stages, usize, usize), BenchError> {
    let error = |message: String| measure_error(name, message);
    let clients = keys.participants.len();
    let mut coordinator = Coordinator::new(
        every_client_config("bench-own-work", 1, clients),
        run_id,
        initial.clone(),
    )
    .map_err(|e| BenchError::setup("coordinator", e))?;
    let limits = mpcl_coordinator::server::limits_for_state(initial);
    let ids: Vec<ParticipantId> = keys
        .participants
        .iter()
        .map(|p| ParticipantId(p.public_key().to_bytes()))
        .collect();

    // Everyone connects and asks for work: the round opens with the last request.
    let mut sent: Vec<(Arc<GlobalState>, TrainingConfig)> = Vec::new();
    for &participant in &ids {
        coordinator.handle(0, Event::ClientConnected { participant });
    }
    for &participant in &ids {
        for action in coordinator.handle(0, Event::WorkRequested { participant }) {
            if let Action::SendRound { state, config, .. } = action {
                sent.push((state, config));
            }
        }
    }
    if sent.len() != clients {
        return Err(error(format!(
            "{} of {clients} participants were sent the round",
            sent.len()
        )));
    }
    let round = coordinator.current_round();

    // Coordinator: each participant's StartRound around the state encoded once (sent as its
    // pieces, never joined: the client below decodes a joined copy made outside the timing).
    let mut seconds: Stages = [0.0; STAGES.len()];
    let started = Instant::now();
    let encoded = EncodedState::encode(&sent[0].0).map_err(|e| error(e.to_string()))?;
    let start_rounds: Vec<SplicedPayload> = sent
        .iter()
        .map(|(_, config)| encode_start_round(&run_id, round, &encoded, config, 0, &None, &limits))
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.to_string()))?;
    seconds[ENCODE_START_ROUND] = started.elapsed().as_secs_f64();
    let start_round_bytes = start_rounds[0].len();

    // Then every client in turn, one at a time as each end handles them (so buffers are freed
    // and reused as in a running node): the client decodes its StartRound, encodes, signs and
    // frames its update; the coordinator decodes the frame, checks the signature, decodes the
    // payload and hands the update to the round state machine. Each stage's time is summed.
    let header = mpcl_protocol::framing::FRAME_HEADER_BYTES;
    let layout = DeltaLayout::of(&initial.parameters);
    let mut lap = |stage: usize, since: &mut Instant| {
        let now = Instant::now();
        seconds[stage] += (now - *since).as_secs_f64();
        *since = now;
    };
    let (mut accepted, mut aggregated, mut update_bytes) = (0, false, 0);
    for (i, (payload, (&participant, identity))) in start_rounds
        .iter()
        .zip(ids.iter().zip(&keys.participants))
        .enumerate()
    {
        let joined = payload.to_vec();
        let mut at = Instant::now();
        let state = match decode_message::<CoordinatorMessage>(&joined, &limits) {
            Ok(CoordinatorMessage::StartRound { state, .. }) => state,
            Ok(other) => return Err(error(format!("decoded {} instead", other.kind()))),
            Err(e) => return Err(error(e.to_string())),
        };
        lap(DECODE_START_ROUND, &mut at);
        let update = client_update(&state, run_id, round, i as u64);
        at = Instant::now();
        let signed =
            SignedUpdate::sign(&update, identity, &limits).map_err(|e| error(e.to_string()))?;
        lap(SIGN_UPDATE, &mut at);
        let frame = encode_frame(&ClientMessage::Update(signed), &limits)
            .map_err(|e| error(e.to_string()))?;
        lap(FRAME_UPDATE, &mut at);
        update_bytes = frame.len() - header;
        drop((update, state));

        at = Instant::now();
        let signed = match decode_message::<ClientMessage>(&frame[header..], &limits) {
            Ok(ClientMessage::Update(signed)) => signed,
            Ok(other) => return Err(error(format!("decoded {} instead", other.kind()))),
            Err(e) => return Err(error(e.to_string())),
        };
        lap(DECODE_FRAME, &mut at);
        signed
            .verify_signature(&identity.public_key())
            .map_err(|e| error(e.to_string()))?;
        lap(CHECK_SIGNATURE, &mut at);
        let (update, _) = decode_update_payload(&signed.payload, &limits, Some(&layout))
            .map_err(|e| error(e.to_string()))?;
        lap(DECODE_PAYLOAD, &mut at);
        let event = Event::UpdateReceived {
            participant,
            update: Box::new(update),
        };
        for action in coordinator.handle(0, event) {
            match action {
                Action::Accept { .. } => accepted += 1,
                Action::Aggregated { .. } => aggregated = true,
                Action::Reject { reason, .. } => return Err(error(reason.to_string())),
                _ => {}
            }
        }
        lap(STATE_MACHINE, &mut at);
    }
    if accepted != clients || !aggregated {
        return Err(error(format!(
            "{accepted} of {clients} updates accepted, round aggregated: {aggregated}"
        )));
    }
    let stages = seconds.map(|total| total / clients as f64);
    Ok((stages, start_round_bytes, update_bytes))
}
