//! What a client decodes from the coordinator: raw bytes, and a valid `StartRound` patched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_coordinator::CoordinatorConfig;
use mpcl_coordinator::round::{ParticipantId, training_config};
use mpcl_fuzz::{RUN, global, patch};
use mpcl_protocol::MessageLimits;
use mpcl_protocol::codec::{decode_message, encode_message};
use mpcl_protocol::messages::CoordinatorMessage;

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits::for_model(1_000, 100, 4);
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let start = CoordinatorMessage::StartRound {
            run_id: RUN,
            round: 2,
            state: global(),
            // The default run's training settings, whatever fields they grow.
            config: training_config(
                &CoordinatorConfig::default(),
                2,
                &ParticipantId::from_index(1),
            ),
            deadline_ms: 60_000,
            secure_aggregation: None,
        };
        patch(
            encode_message(&start, &limits).expect("fixture encodes"),
            rest,
        )
    };
    if let Ok(CoordinatorMessage::StartRound { state, .. }) =
        decode_message::<CoordinatorMessage>(&bytes, &limits)
    {
        // What a client does first with a received state.
        let _ = state.parameters.validate();
        let _ = state.parameters.value_count();
    }
});
