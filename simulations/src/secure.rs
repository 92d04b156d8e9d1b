//! Secure aggregation in-process: one round's masking protocol run between the virtual
//! participants and a [`SecAggServer`], with no sockets, so that a simulation measures exactly
//! what the coordinator would compute from masked updates.
//!
//! Every message goes through the same client and server steps the network would relay
//! ([`mpcl_protocol::secure_aggregation`]), signatures and share encryption included; only the
//! transport is missing. Fault injection ([`DropStage`]) lets a participant vanish at a chosen
//! step, to show that a round survives dropouts down to the threshold.
//!
//! The signing keys of virtual participants are derived from the simulation seed: fine for a
//! simulation, never for a study (a real participant's key comes from `mpcl keygen`).

use std::collections::{BTreeMap, BTreeSet};

use mpcl_coordinator::{ParticipantId, SecureRoundPlan};
use mpcl_protocol::SigningKey;
use mpcl_protocol::secure_aggregation::{
    ClientOptions, LayoutError, PeerId, SecAggClient, SecAggError, SecAggServer, SummedUpdate,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use thiserror::Error;

/// When a participant disappears from a secure-aggregation session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropStage {
    /// After sharing its keys, before sending its masked input: its input is not in the sum and
    /// the others' pairwise masks with it are removed through its reconstructed mask key.
    BeforeMasking,
    /// After sending its masked input, before signing the survivor list: its input is in the
    /// sum and its self mask is removed through its reconstructed seed.
    AfterMasking,
}

/// A failed in-process session.
#[derive(Debug, Error)]
pub enum SecureRoundError {
    /// A protocol step failed (for example too few survivors).
    #[error("secure aggregation: {0}")]
    Protocol(#[from] SecAggError),
    /// The unmasked sum does not fit the round's layout.
    #[error("secure aggregation: {0}")]
    Layout(#[from] LayoutError),
    /// A cohort member has no key or no input.
    #[error("secure aggregation: {0}")]
    Missing(String),
}

/// What one session produced.
#[derive(Clone, Debug)]
pub struct SecureRoundOutcome {
    /// Whose inputs are in the sum (sorted).
    pub contributors: Vec<ParticipantId>,
    /// The unmasked, decoded sum.
    pub sum: SummedUpdate,
    /// Who dropped out before their input was in (sorted).
    pub dropped: Vec<ParticipantId>,
}

/// The signing key of virtual participant `index` in a simulation with `seed` (simulation
/// only: anyone who knows the seed has the key).
pub fn simulation_signing_key(seed: u64, index: u64) -> SigningKey {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(index.wrapping_add(1));
    SigningKey::from_bytes(&rng.random::<[u8; 32]>())
}

/// Runs the masking protocol of `plan`'s round: every cohort member masks its prepared input
/// (`inputs`, the words of [`SecureRoundPlan::prepare_input`]) with its key from `keys`, members
/// named in `drops` vanish at their stage, and the server's sum is decoded.
pub fn run_secure_round(
    plan: &SecureRoundPlan,
    keys: &BTreeMap<ParticipantId, SigningKey>,
    inputs: &BTreeMap<ParticipantId, Vec<u32>>,
    drops: &BTreeMap<ParticipantId, DropStage>,
) -> Result<SecureRoundOutcome, SecureRoundError> {
    let mut peer_of = BTreeMap::new();
    for participant in &plan.cohort {
        let key = keys
            .get(participant)
            .ok_or_else(|| SecureRoundError::Missing(format!("no key for {participant}")))?;
        peer_of.insert(*participant, PeerId::from_key(&key.verifying_key()));
    }
    let participant_of: BTreeMap<PeerId, ParticipantId> =
        peer_of.iter().map(|(p, peer)| (*peer, *p)).collect();
    let params = plan.session_params(|p| peer_of[p])?;
    // Every client checks the roster against the enrolment it trusts (here: the cohort).
    let options = ClientOptions {
        trusted_peers: Some(peer_of.values().copied().collect::<BTreeSet<_>>()),
        min_threshold_fraction: 0.5,
    };

    let mut server = SecAggServer::new(params.clone())?;
    let mut clients = BTreeMap::new();
    for participant in &plan.cohort {
        let (client, advertisement) =
            SecAggClient::with_os_randomness(params.clone(), &keys[participant], &options)?;
        server.receive_advertisement(client.peer(), advertisement)?;
        clients.insert(*participant, client);
    }
    let advertised = server.close_advertisements()?;
    for client in clients.values_mut() {
        let bundle = client.share_keys(&advertised)?;
        server.receive_shares(client.peer(), bundle)?;
    }
    let routed = server.close_shares()?;
    for (participant, client) in clients.iter_mut() {
        if drops.get(participant) == Some(&DropStage::BeforeMasking) {
            continue;
        }
        let shares = routed.get(&client.peer()).ok_or_else(|| {
            SecureRoundError::Missing(format!("no shares were routed to {participant}"))
        })?;
        let input = inputs
            .get(participant)
            .ok_or_else(|| SecureRoundError::Missing(format!("no input from {participant}")))?;
        let masked = client.mask_input(shares, input)?;
        server.receive_masked_input(client.peer(), masked)?;
    }
    let survivors = server.close_masked_inputs()?;
    let still_here = |participant: &ParticipantId| !drops.contains_key(participant);
    for (participant, client) in clients.iter_mut() {
        if still_here(participant) {
            let signature = client.sign_survivors(&survivors)?;
            server.receive_survivor_signature(client.peer(), signature)?;
        }
    }
    let request = server.close_signatures()?;
    for (participant, client) in clients.iter_mut() {
        if still_here(participant) {
            let response = client.unmask(&request)?;
            server.receive_unmask_response(client.peer(), response)?;
        }
    }
    let secure_sum = server.finish()?;
    let contributors: Vec<ParticipantId> = secure_sum
        .contributors
        .iter()
        .map(|peer| participant_of[peer])
        .collect();
    let dropped = secure_sum
        .dropped
        .iter()
        .map(|peer| participant_of[peer])
        .collect();
    let sum = plan.decode(&secure_sum.values, contributors.len())?;
    Ok(SecureRoundOutcome {
        contributors,
        sum,
        dropped,
    })
}
