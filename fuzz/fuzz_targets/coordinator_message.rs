//! What a client decodes from the coordinator: raw bytes, and a valid `StartRound` patched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_fuzz::{RUN, global, patch};
use mpcl_protocol::MessageLimits;
use mpcl_protocol::codec::{decode_message, encode_message};
use mpcl_protocol::messages::{CoordinatorMessage, TrainingConfig};

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
            config: TrainingConfig {
                local_epochs: 1,
                batch_size: 16,
                learning_rate: 0.01,
                proximal_mu: 0.0,
                seed: 9,
            },
            deadline_ms: 60_000,
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
