//! The coordinator side of a session: collects each step's messages, closes the step when the
//! driver decides (everyone answered, or a deadline passed), and finally outputs the sum.
//!
//! Masked inputs are added to a running sum as they arrive, so memory does not grow with the
//! cohort. A step closed with fewer than `t` participants fails the session
//! ([`SecAggError::BelowThreshold`]); so does a reconstruction that does not match what its owner
//! advertised. A failed or finished server refuses every further message.
//!
//! Protects the correctness of the sum: it checks signatures, senders, duplicates, lengths and
//! share coordinates, and verifies every reconstruction, so it outputs the exact sum of the
//! contributors or an error. It sees only masked vectors and the sum. It does not protect against
//! a contributor's valid but poisoned input (it cannot see inputs), and a client that disrupts a
//! step (wrong shares, no answer) can make the round fail.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};

use super::client::{survivors_bytes, verify_advertisement, verify_signature};
use super::masking;
use super::messages::{
    EncryptedShare, KeyAdvertisement, MaskedInput, RevealedShare, ShareBundle, SurvivorList,
    SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
use super::quantize::wrapping_add_into;
use super::shamir::{self, CombineError};
use super::{PeerId, SecAggError, SecAggParams};

/// Which messages the server is collecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerStage {
    /// Step 0: [`KeyAdvertisement`]s.
    Advertisements,
    /// Step 1: [`ShareBundle`]s.
    Shares,
    /// Step 2: [`MaskedInput`]s.
    MaskedInputs,
    /// Step 3: [`SurvivorSignature`]s.
    Signatures,
    /// Step 4: [`UnmaskResponse`]s.
    UnmaskResponses,
    /// The sum was output.
    Finished,
    /// A step failed; the session is over without a sum.
    Failed,
}

impl ServerStage {
    /// The stage in words.
    pub fn name(self) -> &'static str {
        match self {
            ServerStage::Advertisements => "collecting key advertisements",
            ServerStage::Shares => "collecting encrypted shares",
            ServerStage::MaskedInputs => "collecting masked inputs",
            ServerStage::Signatures => "collecting survivor-list signatures",
            ServerStage::UnmaskResponses => "collecting unmask responses",
            ServerStage::Finished => "finished",
            ServerStage::Failed => "failed",
        }
    }
}

/// The result of a session: the sum of the contributors' (unmasked, quantised) inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureSum {
    /// `sum_{u in contributors} x_u` modulo 2^32.
    pub values: Vec<u32>,
    /// Whose inputs are in the sum (sorted).
    pub contributors: Vec<PeerId>,
    /// Who shared keys but sent no masked input in time (their masks were removed; sorted).
    pub dropped: Vec<PeerId>,
}

/// The coordinator's state in one secure-aggregation session.
#[derive(Debug)]
pub struct SecAggServer {
    params: SecAggParams,
    session: [u8; 32],
    stage: ServerStage,
    advertisements: BTreeMap<PeerId, KeyAdvertisement>,
    bundles: BTreeMap<PeerId, Vec<EncryptedShare>>,
    masked_sum: Vec<u32>,
    contributors: BTreeSet<PeerId>,
    survivors: Vec<PeerId>,
    signatures: BTreeMap<PeerId, Vec<u8>>,
    responses: BTreeMap<PeerId, UnmaskResponse>,
}

impl SecAggServer {
    /// A server for a session with `params` (validated).
    pub fn new(params: SecAggParams) -> Result<Self, SecAggError> {
        params.validate()?;
        Ok(Self {
            session: params.session_digest(),
            masked_sum: vec![0; params.vector_len],
            params,
            stage: ServerStage::Advertisements,
            advertisements: BTreeMap::new(),
            bundles: BTreeMap::new(),
            contributors: BTreeSet::new(),
            survivors: Vec::new(),
            signatures: BTreeMap::new(),
            responses: BTreeMap::new(),
        })
    }

    /// The session parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    /// What the server is doing.
    pub fn stage(&self) -> ServerStage {
        self.stage
    }

    /// The peers the current step still waits for (empty when the step can be closed without
    /// waiting for anyone, or when finished or failed).
    pub fn pending(&self) -> Vec<PeerId> {
        let expected: Vec<PeerId> = match self.stage {
            ServerStage::Advertisements => self.params.roster.clone(),
            ServerStage::Shares => self.advertisements.keys().copied().collect(),
            ServerStage::MaskedInputs => self.bundles.keys().copied().collect(),
            ServerStage::Signatures => self.survivors.clone(),
            ServerStage::UnmaskResponses => self.signatures.keys().copied().collect(),
            ServerStage::Finished | ServerStage::Failed => Vec::new(),
        };
        expected
            .into_iter()
            .filter(|p| !self.has_answered(p))
            .collect()
    }

    fn has_answered(&self, peer: &PeerId) -> bool {
        match self.stage {
            ServerStage::Advertisements => self.advertisements.contains_key(peer),
            ServerStage::Shares => self.bundles.contains_key(peer),
            ServerStage::MaskedInputs => self.contributors.contains(peer),
            ServerStage::Signatures => self.signatures.contains_key(peer),
            ServerStage::UnmaskResponses => self.responses.contains_key(peer),
            ServerStage::Finished | ServerStage::Failed => true,
        }
    }

    fn expect(&self, step: &'static str, stage: ServerStage) -> Result<(), SecAggError> {
        if self.stage != stage {
            return Err(SecAggError::OutOfOrder {
                step,
                stage: self.stage.name(),
            });
        }
        Ok(())
    }

    fn check_sender(
        from: &PeerId,
        claimed: &PeerId,
        what: &'static str,
    ) -> Result<(), SecAggError> {
        if from != claimed {
            return Err(SecAggError::SenderMismatch {
                claimed: *claimed,
                authenticated: *from,
                what,
            });
        }
        Ok(())
    }

    fn close(
        &mut self,
        stage: &'static str,
        have: usize,
        next: ServerStage,
    ) -> Result<(), SecAggError> {
        if have < self.params.threshold {
            self.stage = ServerStage::Failed;
            return Err(SecAggError::BelowThreshold {
                stage,
                have,
                threshold: self.params.threshold,
            });
        }
        self.stage = next;
        Ok(())
    }

    /// Step 0: an advertisement from `from` (the peer the transport authenticated). Checked:
    /// roster membership, sender, first one, signature.
    pub fn receive_advertisement(
        &mut self,
        from: PeerId,
        advertisement: KeyAdvertisement,
    ) -> Result<(), SecAggError> {
        self.expect("a key advertisement", ServerStage::Advertisements)?;
        Self::check_sender(&from, &advertisement.peer, "key advertisement")?;
        verify_advertisement(&self.params, &self.session, &advertisement)?;
        if self.advertisements.contains_key(&from) {
            return Err(SecAggError::Duplicate {
                peer: from,
                what: "key advertisement",
            });
        }
        self.advertisements.insert(from, advertisement);
        Ok(())
    }

    /// Closes step 0. With at least `t` advertisements, returns them (`U1`, sorted by peer): send
    /// the whole list to each of those peers.
    pub fn close_advertisements(&mut self) -> Result<Vec<KeyAdvertisement>, SecAggError> {
        self.expect("closing key advertisement", ServerStage::Advertisements)?;
        self.close(
            "key advertisement",
            self.advertisements.len(),
            ServerStage::Shares,
        )?;
        Ok(self.advertisements.values().cloned().collect())
    }

    /// Step 1: a bundle of encrypted shares, which must hold exactly one share from `from` to
    /// each other member of `U1`.
    pub fn receive_shares(&mut self, from: PeerId, bundle: ShareBundle) -> Result<(), SecAggError> {
        self.expect("encrypted shares", ServerStage::Shares)?;
        Self::check_sender(&from, &bundle.from, "share bundle")?;
        if !self.advertisements.contains_key(&from) {
            return Err(SecAggError::Refused(format!(
                "peer {from} sent shares but did not advertise keys in time"
            )));
        }
        if self.bundles.contains_key(&from) {
            return Err(SecAggError::Duplicate {
                peer: from,
                what: "share bundle",
            });
        }
        let mut recipients = BTreeSet::new();
        for share in &bundle.shares {
            let ok = share.from == from
                && share.to != from
                && self.advertisements.contains_key(&share.to)
                && recipients.insert(share.to);
            if !ok {
                return Err(SecAggError::Malformed {
                    peer: from,
                    what: "share bundle",
                    reason: format!(
                        "a share from {} to {} is misaddressed or repeated",
                        share.from, share.to
                    ),
                });
            }
        }
        if recipients.len() + 1 != self.advertisements.len() {
            return Err(SecAggError::Malformed {
                peer: from,
                what: "share bundle",
                reason: format!(
                    "{} shares for {} other participants",
                    recipients.len(),
                    self.advertisements.len() - 1
                ),
            });
        }
        self.bundles.insert(from, bundle.shares);
        Ok(())
    }

    /// Closes step 1. With at least `t` bundles (`U2`), returns for each member of `U2` the
    /// shares addressed to it by the other members of `U2`.
    pub fn close_shares(&mut self) -> Result<BTreeMap<PeerId, Vec<EncryptedShare>>, SecAggError> {
        self.expect("closing share collection", ServerStage::Shares)?;
        self.close(
            "share distribution",
            self.bundles.len(),
            ServerStage::MaskedInputs,
        )?;
        let mut routed: BTreeMap<PeerId, Vec<EncryptedShare>> =
            self.bundles.keys().map(|p| (*p, Vec::new())).collect();
        for shares in self.bundles.values() {
            for share in shares {
                if let Some(inbox) = routed.get_mut(&share.to) {
                    inbox.push(share.clone());
                }
            }
        }
        Ok(routed)
    }

    /// Step 2: a masked input from a member of `U2`, added to the running sum.
    pub fn receive_masked_input(
        &mut self,
        from: PeerId,
        input: MaskedInput,
    ) -> Result<(), SecAggError> {
        self.expect("a masked input", ServerStage::MaskedInputs)?;
        Self::check_sender(&from, &input.from, "masked input")?;
        if !self.bundles.contains_key(&from) {
            return Err(SecAggError::Refused(format!(
                "peer {from} sent a masked input but did not share its keys in time"
            )));
        }
        if self.contributors.contains(&from) {
            return Err(SecAggError::Duplicate {
                peer: from,
                what: "masked input",
            });
        }
        if input.values.0.len() != self.params.vector_len {
            return Err(SecAggError::WrongLength {
                what: "masked input",
                expected: self.params.vector_len,
                found: input.values.0.len(),
            });
        }
        wrapping_add_into(&mut self.masked_sum, &input.values.0);
        self.contributors.insert(from);
        Ok(())
    }

    /// Closes step 2. With at least `t` contributors (`U3`), returns the survivor list to send
    /// to each of them. A masked input arriving later is refused ([`SecAggError::OutOfOrder`]).
    pub fn close_masked_inputs(&mut self) -> Result<SurvivorList, SecAggError> {
        self.expect("closing masked-input collection", ServerStage::MaskedInputs)?;
        self.close(
            "masked input collection",
            self.contributors.len(),
            ServerStage::Signatures,
        )?;
        self.survivors = self.contributors.iter().copied().collect();
        Ok(SurvivorList {
            survivors: self.survivors.clone(),
        })
    }

    /// Step 3: a contributor's signature over the survivor list.
    pub fn receive_survivor_signature(
        &mut self,
        from: PeerId,
        signature: SurvivorSignature,
    ) -> Result<(), SecAggError> {
        self.expect("a survivor-list signature", ServerStage::Signatures)?;
        Self::check_sender(&from, &signature.from, "survivor-list signature")?;
        if !self.contributors.contains(&from) {
            return Err(SecAggError::Refused(format!(
                "peer {from} signed the survivor list but is not on it"
            )));
        }
        if self.signatures.contains_key(&from) {
            return Err(SecAggError::Duplicate {
                peer: from,
                what: "survivor-list signature",
            });
        }
        let message = survivors_bytes(&self.session, &self.survivors);
        if !verify_signature(&from, &message, &signature.signature) {
            return Err(SecAggError::BadSignature {
                peer: from,
                what: "survivor-list signature",
            });
        }
        self.signatures.insert(from, signature.signature);
        Ok(())
    }

    /// Closes step 3. With at least `t` signatures (`U4`), returns the unmask request to send to
    /// each signer.
    pub fn close_signatures(&mut self) -> Result<UnmaskRequest, SecAggError> {
        self.expect("closing signature collection", ServerStage::Signatures)?;
        self.close(
            "consistency check",
            self.signatures.len(),
            ServerStage::UnmaskResponses,
        )?;
        Ok(UnmaskRequest {
            survivors: self.survivors.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|(from, signature)| SurvivorSignature {
                    from: *from,
                    signature: signature.clone(),
                })
                .collect(),
        })
    }

    /// Step 4: a signer's shares: one self-seed share per contributor, one mask-key share per
    /// dropped member of `U2`, each at the signer's x-coordinate.
    pub fn receive_unmask_response(
        &mut self,
        from: PeerId,
        response: UnmaskResponse,
    ) -> Result<(), SecAggError> {
        self.expect("an unmask response", ServerStage::UnmaskResponses)?;
        Self::check_sender(&from, &response.from, "unmask response")?;
        if !self.signatures.contains_key(&from) {
            return Err(SecAggError::Refused(format!(
                "peer {from} sent an unmask response but did not sign the survivor list"
            )));
        }
        if self.responses.contains_key(&from) {
            return Err(SecAggError::Duplicate {
                peer: from,
                what: "unmask response",
            });
        }
        let x = self.params.x_of(&from).expect("roster member");
        let dropped = self.dropped();
        let malformed = |reason: String| SecAggError::Malformed {
            peer: from,
            what: "unmask response",
            reason,
        };
        let check = |shares: &[RevealedShare], owners: &[PeerId], what: &str| {
            let revealed: Vec<PeerId> = shares.iter().map(|s| s.of).collect();
            let mut sorted = revealed.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != revealed.len() || sorted != owners {
                return Err(malformed(format!(
                    "its {what} shares are not exactly one for each of the {} expected peers",
                    owners.len()
                )));
            }
            for share in shares {
                shamir::check_share(&share.share, x).map_err(|reason| {
                    malformed(format!("{what} share of {}: {reason}", share.of))
                })?;
            }
            Ok(())
        };
        check(&response.self_seed_shares, &self.survivors, "self-seed")?;
        check(&response.mask_key_shares, &dropped, "mask-key")?;
        self.responses.insert(from, response);
        Ok(())
    }

    /// Members of `U2` that are not contributors (sorted).
    fn dropped(&self) -> Vec<PeerId> {
        self.bundles
            .keys()
            .filter(|p| !self.contributors.contains(p))
            .copied()
            .collect()
    }

    /// Closes step 4 and outputs the sum. Needs at least `t` responses; reconstructs every
    /// contributor's self-mask seed (checked against its commitment) and every dropped peer's
    /// mask key (checked against its advertised public key), then removes all masks.
    pub fn finish(&mut self) -> Result<SecureSum, SecAggError> {
        self.expect("finishing", ServerStage::UnmaskResponses)?;
        self.close(
            "unmasking",
            self.responses.len(),
            ServerStage::UnmaskResponses,
        )?;
        match self.unmask() {
            Ok(sum) => {
                self.stage = ServerStage::Finished;
                Ok(sum)
            }
            Err(error) => {
                self.stage = ServerStage::Failed;
                Err(error)
            }
        }
    }

    fn unmask(&self) -> Result<SecureSum, SecAggError> {
        let threshold = self.params.threshold;
        let collect = |owner: &PeerId, seeds: bool| -> Vec<&[u8]> {
            self.responses
                .values()
                .filter_map(|r| {
                    let list = if seeds {
                        &r.self_seed_shares
                    } else {
                        &r.mask_key_shares
                    };
                    list.iter()
                        .find(|s| s.of == *owner)
                        .map(|s| s.share.as_slice())
                })
                .collect()
        };
        let combine = |owner: &PeerId, shares: Vec<&[u8]>, what: &'static str| {
            shamir::combine(&shares, threshold).map_err(|error| match error {
                CombineError::TooFew { have, threshold } => SecAggError::BelowThreshold {
                    stage: "unmasking",
                    have,
                    threshold,
                },
                CombineError::Malformed(reason) => SecAggError::Malformed {
                    peer: *owner,
                    what,
                    reason,
                },
            })
        };

        let mut values = self.masked_sum.clone();
        for owner in &self.survivors {
            let seed = combine(owner, collect(owner, true), "self-seed shares")?;
            let advertisement = &self.advertisements[owner];
            if masking::seed_commitment(&self.session, owner, &seed)
                != advertisement.seed_commitment
            {
                return Err(SecAggError::Reconstruction {
                    peer: *owner,
                    what: "self-mask seed",
                });
            }
            masking::apply_mask(
                &mut values,
                &masking::self_mask_key(&self.session, &seed),
                false,
            );
        }
        let dropped = self.dropped();
        for owner in &dropped {
            let key = combine(owner, collect(owner, false), "mask-key shares")?;
            let secret = StaticSecret::from(*key);
            if PublicKey::from(&secret).to_bytes() != self.advertisements[owner].mask_public {
                return Err(SecAggError::Reconstruction {
                    peer: *owner,
                    what: "mask private key",
                });
            }
            for survivor in &self.survivors {
                let public = PublicKey::from(self.advertisements[survivor].mask_public);
                let shared = secret.diffie_hellman(&public);
                if !shared.was_contributory() {
                    return Err(SecAggError::InvalidKey { peer: *survivor });
                }
                let key =
                    masking::pairwise_mask_key(&self.session, shared.as_bytes(), survivor, owner);
                // The survivor added the mask if it has the lower id, subtracted it otherwise.
                masking::apply_mask(&mut values, &key, owner < survivor);
            }
        }
        Ok(SecureSum {
            values,
            contributors: self.survivors.clone(),
            dropped,
        })
    }
}
