//! Length-prefixed frames as read from a QUIC stream: the header's length against the limits,
//! truncated payloads, then the message inside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_fuzz::ready;
use mpcl_protocol::MessageLimits;
use mpcl_protocol::framing::{read_frame, read_message};
use mpcl_protocol::messages::{ClientMessage, CoordinatorMessage};

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits::for_model(1_000, 100, 4);
    let mut reader = data;
    let _ = ready(read_frame(&mut reader, &MessageLimits::CONTROL));
    let mut reader = data;
    let _ = ready(read_message::<_, ClientMessage>(&mut reader, &limits));
    let mut reader = data;
    let _ = ready(read_message::<_, CoordinatorMessage>(&mut reader, &limits));
});
