//! The client side of a session: one [`SecAggClient`] per round, driven through its steps in
//! order. Any failed step leaves the client in a failed state (it never retries a step with
//! different input, which could leak more than one answer).
//!
//! Protects the client's input against the coordinator and other clients as described in the
//! module doc of [`super`]: it verifies every peer's signed keys itself, encrypts shares end to
//! end, signs one survivor list per session and reveals at most one secret of each peer. It does
//! not protect against a roster padded with coordinator-controlled identities unless
//! [`ClientOptions::trusted_peers`] is set, nor against its own randomness being predictable
//! (seed it from the operating system: [`SecAggClient::with_os_randomness`]).

use std::collections::{BTreeMap, BTreeSet};

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use ed25519_dalek::{Signature, Signer, SigningKey};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::masking::{self, ADVERTISEMENT, SURVIVORS};
use super::messages::{
    EncryptedShare, KeyAdvertisement, MaskedInput, RevealedShare, ShareBundle, SurvivorList,
    SurvivorSignature, U32Vec, UnmaskRequest, UnmaskResponse,
};
use super::shamir::{self, SHARE_LEN};
use super::{PeerId, SecAggError, SecAggParams};

/// Bytes of a share plaintext: sender, recipient, seed share, key share.
const SHARE_PLAINTEXT_LEN: usize = 32 + 32 + SHARE_LEN + SHARE_LEN;

/// What a client insists on before taking part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientOptions {
    /// The peers this client accepts in a roster, normally every enrolled participant's key. With
    /// `None` the client trusts the coordinator to put only real participants in the roster (a
    /// coordinator that invents participants could then collect shares from them).
    pub trusted_peers: Option<BTreeSet<PeerId>>,
    /// The smallest threshold this client accepts, as a fraction of the roster (the threshold is
    /// always at least a strict majority; this can only raise it).
    pub min_threshold_fraction: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Advertised,
    SharedKeys,
    Masked,
    SignedSurvivors,
    Done,
    Failed,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Advertised => "keys advertised",
            Stage::SharedKeys => "shares sent",
            Stage::Masked => "masked input sent",
            Stage::SignedSurvivors => "survivor list signed",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// The shares this client holds of one peer's two secrets.
struct HeldShares {
    seed: Zeroizing<Vec<u8>>,
    key: Zeroizing<Vec<u8>>,
}

/// One client's state in one secure-aggregation session. Secrets are zeroised when it is dropped.
pub struct SecAggClient {
    params: SecAggParams,
    session: [u8; 32],
    me: PeerId,
    my_x: u8,
    signing_key: SigningKey,
    rng: ChaCha20Rng,
    cipher_secret: StaticSecret,
    mask_secret: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
    own_advertisement: KeyAdvertisement,
    stage: Stage,
    /// `U1` as this client verified it (itself included).
    peers: BTreeMap<PeerId, KeyAdvertisement>,
    /// Shares held, by owner: `U2` as this client saw it (itself included).
    held: BTreeMap<PeerId, HeldShares>,
    survivors: Vec<PeerId>,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient")
            .field("peer", &self.me)
            .field("round", &self.params.round)
            .field("stage", &self.stage.name())
            .finish_non_exhaustive()
    }
}

impl SecAggClient {
    /// Step 0: checks the parameters, makes this session's keys and self-mask seed from
    /// `randomness` (32 bytes from a cryptographic source, never reused), and returns the
    /// signed advertisement to send to the coordinator.
    pub fn new(
        params: SecAggParams,
        signing_key: &SigningKey,
        options: &ClientOptions,
        randomness: [u8; 32],
    ) -> Result<(Self, KeyAdvertisement), SecAggError> {
        params.validate()?;
        let me = PeerId::from_key(&signing_key.verifying_key());
        let Some(my_x) = params.x_of(&me) else {
            return Err(SecAggError::NotInRoster {
                peer: me,
                what: "this client",
            });
        };
        if let Some(trusted) = &options.trusted_peers
            && let Some(stranger) = params.roster.iter().find(|p| !trusted.contains(p))
        {
            return Err(SecAggError::Refused(format!(
                "the roster names peer {stranger}, which is not among the trusted participants"
            )));
        }
        let n = params.roster.len();
        let wanted = (options.min_threshold_fraction * n as f64 - 1e-9).ceil();
        if (params.threshold as f64) < wanted {
            return Err(SecAggError::Refused(format!(
                "threshold {} of {n} is below this client's minimum of {wanted}",
                params.threshold
            )));
        }
        let session = params.session_digest();
        let mut rng = ChaCha20Rng::from_seed(randomness);
        let cipher_secret = StaticSecret::random_from_rng(&mut rng);
        let mask_secret = StaticSecret::random_from_rng(&mut rng);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(self_seed.as_mut());
        let cipher_public = PublicKey::from(&cipher_secret).to_bytes();
        let mask_public = PublicKey::from(&mask_secret).to_bytes();
        let seed_commitment = masking::seed_commitment(&session, &me, &self_seed);
        let signature = signing_key.sign(&advertisement_bytes(
            &session,
            &me,
            &cipher_public,
            &mask_public,
            &seed_commitment,
        ));
        let advertisement = KeyAdvertisement {
            peer: me,
            cipher_public,
            mask_public,
            seed_commitment,
            signature: signature.to_bytes().to_vec(),
        };
        let client = Self {
            params,
            session,
            me,
            my_x,
            signing_key: signing_key.clone(),
            rng,
            cipher_secret,
            mask_secret,
            self_seed,
            own_advertisement: advertisement.clone(),
            stage: Stage::Advertised,
            peers: BTreeMap::new(),
            held: BTreeMap::new(),
            survivors: Vec::new(),
        };
        Ok((client, advertisement))
    }

    /// [`SecAggClient::new`] with randomness from the operating system.
    pub fn with_os_randomness(
        params: SecAggParams,
        signing_key: &SigningKey,
        options: &ClientOptions,
    ) -> Result<(Self, KeyAdvertisement), SecAggError> {
        let mut randomness = Zeroizing::new([0u8; 32]);
        getrandom::fill(randomness.as_mut())
            .map_err(|error| SecAggError::Randomness(error.to_string()))?;
        Self::new(params, signing_key, options, *randomness)
    }

    /// This client's id.
    pub fn peer(&self) -> PeerId {
        self.me
    }

    /// The session parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    /// Where the client is, in words (for logs).
    pub fn stage(&self) -> &'static str {
        self.stage.name()
    }

    fn enter(&self, step: &'static str, expected: Stage) -> Result<(), SecAggError> {
        if self.stage != expected {
            return Err(SecAggError::OutOfOrder {
                step,
                stage: self.stage.name(),
            });
        }
        Ok(())
    }

    fn finish_step<T>(
        &mut self,
        result: Result<T, SecAggError>,
        next: Stage,
    ) -> Result<T, SecAggError> {
        self.stage = if result.is_ok() { next } else { Stage::Failed };
        result
    }

    /// Step 1: verifies every advertisement of `U1` (signature, roster, no duplicates, this
    /// client's own unchanged, at least `t`), then deals t-of-n shares of the self-mask seed and
    /// the mask private key and encrypts each peer's pair to it.
    pub fn share_keys(
        &mut self,
        advertisements: &[KeyAdvertisement],
    ) -> Result<ShareBundle, SecAggError> {
        self.enter("sharing keys", Stage::Advertised)?;
        let result = self.share_keys_inner(advertisements);
        self.finish_step(result, Stage::SharedKeys)
    }

    fn share_keys_inner(
        &mut self,
        advertisements: &[KeyAdvertisement],
    ) -> Result<ShareBundle, SecAggError> {
        let mut peers = BTreeMap::new();
        for advertisement in advertisements {
            verify_advertisement(&self.params, &self.session, advertisement)?;
            if peers
                .insert(advertisement.peer, advertisement.clone())
                .is_some()
            {
                return Err(SecAggError::Duplicate {
                    peer: advertisement.peer,
                    what: "key advertisement",
                });
            }
        }
        if peers.get(&self.me) != Some(&self.own_advertisement) {
            return Err(SecAggError::Refused(
                "the advertised keys do not include this client's own, unchanged".into(),
            ));
        }
        if peers.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                stage: "key advertisement",
                have: peers.len(),
                threshold: self.params.threshold,
            });
        }
        let n = self.params.roster.len();
        let t = self.params.threshold;
        let seed_shares = shamir::split(&self.self_seed, t, n, &mut self.rng);
        let key_shares = shamir::split(&self.mask_secret.to_bytes(), t, n, &mut self.rng);
        let mut shares = Vec::with_capacity(peers.len() - 1);
        for (peer, advertisement) in &peers {
            let index = self.params.index_of(peer).expect("verified roster member");
            if *peer == self.me {
                self.held.insert(
                    self.me,
                    HeldShares {
                        seed: seed_shares[index].clone(),
                        key: key_shares[index].clone(),
                    },
                );
                continue;
            }
            let cipher = self.share_cipher(peer, &advertisement.cipher_public, &self.me, peer)?;
            let mut plaintext = Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
            plaintext.extend_from_slice(&self.me.0);
            plaintext.extend_from_slice(&peer.0);
            plaintext.extend_from_slice(&seed_shares[index]);
            plaintext.extend_from_slice(&key_shares[index]);
            let aad = share_aad(&self.session, &self.me, peer);
            let ciphertext = cipher
                .encrypt(
                    (&[0u8; 12]).into(),
                    Payload {
                        msg: &plaintext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SecAggError::ShareDecryption {
                    from: self.me,
                    to: *peer,
                })?;
            shares.push(EncryptedShare {
                from: self.me,
                to: *peer,
                ciphertext,
            });
        }
        self.peers = peers;
        Ok(ShareBundle {
            from: self.me,
            shares,
        })
    }

    /// The AEAD for shares between this client and `peer` (direction `from` -> `to`).
    fn share_cipher(
        &self,
        peer: &PeerId,
        peer_cipher_public: &[u8; 32],
        from: &PeerId,
        to: &PeerId,
    ) -> Result<ChaCha20Poly1305, SecAggError> {
        let shared = self
            .cipher_secret
            .diffie_hellman(&PublicKey::from(*peer_cipher_public));
        if !shared.was_contributory() {
            return Err(SecAggError::InvalidKey { peer: *peer });
        }
        let key = masking::share_key(&self.session, shared.as_bytes(), from, to);
        Ok(ChaCha20Poly1305::new((&*key).into()))
    }

    /// Step 2: decrypts the shares addressed to this client (its view of `U2` is their senders
    /// plus itself, at least `t`), then masks `input` (the quantised update, `vector_len` words)
    /// with its self mask and the pairwise masks of `U2`.
    pub fn mask_input(
        &mut self,
        shares: &[EncryptedShare],
        input: &[u32],
    ) -> Result<MaskedInput, SecAggError> {
        self.enter("masking the input", Stage::SharedKeys)?;
        let result = self.mask_input_inner(shares, input);
        self.finish_step(result, Stage::Masked)
    }

    fn mask_input_inner(
        &mut self,
        shares: &[EncryptedShare],
        input: &[u32],
    ) -> Result<MaskedInput, SecAggError> {
        if input.len() != self.params.vector_len {
            return Err(SecAggError::WrongLength {
                what: "input vector",
                expected: self.params.vector_len,
                found: input.len(),
            });
        }
        for share in shares {
            let from = share.from;
            if share.to != self.me {
                return Err(SecAggError::Malformed {
                    peer: from,
                    what: "encrypted share",
                    reason: format!("addressed to {}, not to this client", share.to),
                });
            }
            let Some(advertisement) = self.peers.get(&from).filter(|_| from != self.me) else {
                return Err(SecAggError::NotInRoster {
                    peer: from,
                    what: "encrypted share (sender did not advertise keys)",
                });
            };
            if self.held.contains_key(&from) {
                return Err(SecAggError::Duplicate {
                    peer: from,
                    what: "encrypted share",
                });
            }
            let cipher = self.share_cipher(&from, &advertisement.cipher_public, &from, &self.me)?;
            let aad = share_aad(&self.session, &from, &self.me);
            let plaintext = Zeroizing::new(
                cipher
                    .decrypt(
                        (&[0u8; 12]).into(),
                        Payload {
                            msg: &share.ciphertext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| SecAggError::ShareDecryption { from, to: self.me })?,
            );
            let malformed = |reason: String| SecAggError::Malformed {
                peer: from,
                what: "encrypted share",
                reason,
            };
            if plaintext.len() != SHARE_PLAINTEXT_LEN
                || plaintext[..32] != from.0
                || plaintext[32..64] != self.me.0
            {
                return Err(malformed("the decrypted share is not for this pair".into()));
            }
            let seed = Zeroizing::new(plaintext[64..64 + SHARE_LEN].to_vec());
            let key = Zeroizing::new(plaintext[64 + SHARE_LEN..].to_vec());
            shamir::check_share(&seed, self.my_x).map_err(malformed)?;
            shamir::check_share(&key, self.my_x).map_err(malformed)?;
            self.held.insert(from, HeldShares { seed, key });
        }
        if self.held.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                stage: "share distribution",
                have: self.held.len(),
                threshold: self.params.threshold,
            });
        }
        let mut values = input.to_vec();
        masking::apply_mask(
            &mut values,
            &masking::self_mask_key(&self.session, &self.self_seed),
            true,
        );
        for peer in self.held.keys().filter(|p| **p != self.me) {
            let public = PublicKey::from(self.peers[peer].mask_public);
            let shared = self.mask_secret.diffie_hellman(&public);
            if !shared.was_contributory() {
                return Err(SecAggError::InvalidKey { peer: *peer });
            }
            let key = masking::pairwise_mask_key(&self.session, shared.as_bytes(), &self.me, peer);
            // The lower id adds, the higher subtracts: the pair cancels in the sum.
            masking::apply_mask(&mut values, &key, *peer > self.me);
        }
        Ok(MaskedInput {
            from: self.me,
            values: U32Vec(values),
        })
    }

    /// Step 3: signs the coordinator's list of contributors (once per session). The list must be
    /// sorted, hold at least `t` peers, include this client and only peers it holds shares of.
    pub fn sign_survivors(
        &mut self,
        list: &SurvivorList,
    ) -> Result<SurvivorSignature, SecAggError> {
        self.enter("signing the survivor list", Stage::Masked)?;
        let result = self.sign_survivors_inner(list);
        self.finish_step(result, Stage::SignedSurvivors)
    }

    fn sign_survivors_inner(
        &mut self,
        list: &SurvivorList,
    ) -> Result<SurvivorSignature, SecAggError> {
        let survivors = &list.survivors;
        if survivors.windows(2).any(|w| w[0] >= w[1]) {
            return Err(SecAggError::Refused(
                "the survivor list is not sorted and free of duplicates".into(),
            ));
        }
        if survivors.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                stage: "masked input collection",
                have: survivors.len(),
                threshold: self.params.threshold,
            });
        }
        if !survivors.contains(&self.me) {
            return Err(SecAggError::Refused(
                "the survivor list leaves out this client, which sent its masked input".into(),
            ));
        }
        if let Some(stranger) = survivors.iter().find(|p| !self.held.contains_key(p)) {
            return Err(SecAggError::Refused(format!(
                "the survivor list names {stranger}, which did not share its keys with this client"
            )));
        }
        let signature = self
            .signing_key
            .sign(&survivors_bytes(&self.session, survivors));
        self.survivors = survivors.clone();
        Ok(SurvivorSignature {
            from: self.me,
            signature: signature.to_bytes().to_vec(),
        })
    }

    /// Step 4: checks that at least `t` roster members signed exactly the list this client signed,
    /// then reveals its share of the self-mask seed of every survivor and of the mask key of every
    /// other peer of `U2`.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskResponse, SecAggError> {
        self.enter("unmasking", Stage::SignedSurvivors)?;
        let result = self.unmask_inner(request);
        self.finish_step(result, Stage::Done)
    }

    fn unmask_inner(&mut self, request: &UnmaskRequest) -> Result<UnmaskResponse, SecAggError> {
        if request.survivors != self.survivors {
            return Err(SecAggError::Refused(
                "the unmask request's survivor list differs from the one this client signed".into(),
            ));
        }
        let message = survivors_bytes(&self.session, &self.survivors);
        let mut signers = BTreeSet::new();
        for signed in &request.signatures {
            if !self.survivors.contains(&signed.from) {
                return Err(SecAggError::Refused(format!(
                    "peer {} signed the survivor list but is not on it",
                    signed.from
                )));
            }
            if !verify_signature(&signed.from, &message, &signed.signature) {
                return Err(SecAggError::BadSignature {
                    peer: signed.from,
                    what: "survivor-list signature",
                });
            }
            signers.insert(signed.from);
        }
        if signers.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                stage: "consistency check",
                have: signers.len(),
                threshold: self.params.threshold,
            });
        }
        let mut response = UnmaskResponse {
            from: self.me,
            self_seed_shares: Vec::new(),
            mask_key_shares: Vec::new(),
        };
        for (peer, shares) in &self.held {
            if self.survivors.contains(peer) {
                response.self_seed_shares.push(RevealedShare {
                    of: *peer,
                    share: shares.seed.to_vec(),
                });
            } else {
                response.mask_key_shares.push(RevealedShare {
                    of: *peer,
                    share: shares.key.to_vec(),
                });
            }
        }
        Ok(response)
    }
}

/// The AEAD associated data of a share from `from` to `to`.
fn share_aad(session: &[u8; 32], from: &PeerId, to: &PeerId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    aad.extend_from_slice(session);
    aad.extend_from_slice(&from.0);
    aad.extend_from_slice(&to.0);
    aad
}

/// What an advertisement's signature covers.
pub(crate) fn advertisement_bytes(
    session: &[u8; 32],
    peer: &PeerId,
    cipher_public: &[u8; 32],
    mask_public: &[u8; 32],
    seed_commitment: &[u8; 32],
) -> Vec<u8> {
    masking::signed_bytes(
        ADVERTISEMENT,
        session,
        &[&peer.0, cipher_public, mask_public, seed_commitment],
    )
}

/// What a survivor-list signature covers.
pub(crate) fn survivors_bytes(session: &[u8; 32], survivors: &[PeerId]) -> Vec<u8> {
    let joined: Vec<u8> = survivors.iter().flat_map(|p| p.0).collect();
    masking::signed_bytes(SURVIVORS, session, &[&joined])
}

/// Strict ed25519 verification of `signature` by `peer` over `message`.
pub(crate) fn verify_signature(peer: &PeerId, message: &[u8], signature: &[u8]) -> bool {
    let Some(key) = peer.verifying_key() else {
        return false;
    };
    Signature::from_slice(signature)
        .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok())
}

/// Checks that an advertisement comes from a roster member and is signed by it for this session.
pub(crate) fn verify_advertisement(
    params: &SecAggParams,
    session: &[u8; 32],
    advertisement: &KeyAdvertisement,
) -> Result<(), SecAggError> {
    if params.index_of(&advertisement.peer).is_none() {
        return Err(SecAggError::NotInRoster {
            peer: advertisement.peer,
            what: "key advertisement",
        });
    }
    let message = advertisement_bytes(
        session,
        &advertisement.peer,
        &advertisement.cipher_public,
        &advertisement.mask_public,
        &advertisement.seed_commitment,
    );
    if !verify_signature(&advertisement.peer, &message, &advertisement.signature) {
        return Err(SecAggError::BadSignature {
            peer: advertisement.peer,
            what: "key advertisement",
        });
    }
    Ok(())
}
