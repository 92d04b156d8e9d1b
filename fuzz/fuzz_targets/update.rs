//! An update that passes the signature check but whose payload is damaged (a buggy or hostile
//! enrolled client): the payload decoder, the coordinator's content checks, and aggregation of
//! whatever passes them. Starts from a valid update's payload and patches it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpcl_coordinator::config::UpdateLimits;
use mpcl_coordinator::{AggregationConfig, RoundAggregator, validate_update};
use mpcl_fuzz::{RUN, alice, global, patch, update};
use mpcl_protocol::identity::Participant;
use mpcl_protocol::update_payload::encode_update_payload;
use mpcl_protocol::{Enrolment, MessageLimits, SignedUpdate, UpdateVerifier};

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits::for_model(1_000, 100, 4);
    let valid = encode_update_payload(&update(1), None, &limits).expect("fixture encodes");
    let payload = patch(valid, data);
    let alice = alice();
    let signed = SignedUpdate::sign_payload("alice", alice.signing_key(), RUN, 1, payload);
    let enrolment = Enrolment::from_participants(vec![Participant {
        id: "alice".into(),
        public_key: alice.public_key(),
    }])
    .expect("valid enrolment");
    let verifier = UpdateVerifier::new(enrolment, limits);
    let Ok(verified) = verifier.verify(&signed, Some(&alice.public_key())) else {
        return;
    };
    let global = global();
    if validate_update(&global, &verified.update, &UpdateLimits::default()).is_err() {
        return;
    }
    let config = AggregationConfig::default();
    let mut aggregator = RoundAggregator::new(&global, &config.rule);
    if aggregator.add(&verified.update).is_ok() {
        let _ = aggregator.finish(&global, &config, &mut None);
    }
});
