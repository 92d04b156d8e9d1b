//! What secure aggregation needs in-process beyond the code both modes share: the virtual
//! participants' keys and the fault injection. The sessions themselves run as over the network:
//! each participant's protocol machine ([`mpcl_client::ClientMachine`]) talks to the server's
//! relay ([`mpcl_coordinator::SecureSessions`]), signatures and share encryption included; only
//! the transport is missing ([`crate::federation`]). [`DropStage`] lets a participant vanish at a
//! chosen step, to show that a round survives dropouts down to the threshold.
//!
//! The signing keys of virtual participants are derived from the simulation seed: fine for a
//! simulation, never for a study (a real participant's key comes from `mpcl keygen`).

use mpcl_protocol::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

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

/// The signing key of virtual participant `index` in a simulation with `seed` (simulation
/// only: anyone who knows the seed has the key).
pub fn simulation_signing_key(seed: u64, index: u64) -> SigningKey {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(index.wrapping_add(1));
    SigningKey::from_bytes(&rng.random::<[u8; 32]>())
}
