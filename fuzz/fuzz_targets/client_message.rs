//! What the coordinator decodes from a client: any `ClientMessage` payload, then, for an
//! update, the verifier (enrolment, signature, run, the payload inside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_fuzz::alice;
use mpcl_protocol::codec::decode_message;
use mpcl_protocol::identity::Participant;
use mpcl_protocol::messages::ClientMessage;
use mpcl_protocol::{Enrolment, MessageLimits, UpdateVerifier};

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits::for_model(1_000, 100, 4);
    if let Ok(ClientMessage::Update(signed)) = decode_message::<ClientMessage>(data, &limits) {
        let alice = alice();
        let enrolment = Enrolment::from_participants(vec![Participant {
            id: "alice".into(),
            public_key: alice.public_key(),
        }])
        .expect("valid enrolment");
        let verifier = UpdateVerifier::new(enrolment, limits);
        let _ = verifier.verify(&signed, Some(&alice.public_key()));
    }
});
