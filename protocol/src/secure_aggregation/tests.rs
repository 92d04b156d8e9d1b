//! Whole-session tests: clients and server driven in-process through every step, with drop-outs
//! at each point, forged messages and the statistical checks on masked vectors.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;

use super::layout::UpdateLayout;
use super::quantize::{Quantizer, ValueKind, wrapping_add_into};
use super::*;
use crate::messages::{ClientUpdate, GlobalState, LocalMetrics, PrototypeBank};
use crate::params::{NamedTensor, ParameterSet};
use crate::stats::{CooccurrenceStatistics, PrototypeStatistics};
use crate::vector::F32Vec;

/// Chi-square critical value at p = 0.001 with 15 degrees of freedom (16 buckets), from
/// `scipy.stats.chi2.ppf(0.999, 15)`.
const CHI2_15_P001: f64 = 37.697;
/// Chi-square critical value at p = 0.001 with 255 degrees of freedom (256 buckets), from
/// `scipy.stats.chi2.ppf(0.999, 255)`.
const CHI2_255_P001: f64 = 330.52;

fn signing_key(i: usize) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[0] = i as u8 + 1;
    seed[31] = 0x5a;
    SigningKey::from_bytes(&seed)
}

fn randomness(i: usize, round: u64) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[0] = i as u8;
    seed[1..9].copy_from_slice(&round.to_le_bytes());
    seed[31] = 0xc3;
    seed
}

/// Where a client stops taking part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DropAt {
    /// Never advertises.
    BeforeAdvertising,
    /// Advertises, never sends shares.
    BeforeSharing,
    /// Shares keys, never sends a masked input.
    BeforeMasking,
    /// Sends its masked input, then vanishes (no signature, no unmask response).
    AfterMasking,
    /// Signs the survivor list, never sends its unmask response.
    BeforeUnmasking,
}

struct Session {
    keys: Vec<SigningKey>,
    params: SecAggParams,
    /// Client index by peer id.
    index: BTreeMap<PeerId, usize>,
}

impl Session {
    fn new(n: usize, threshold: usize, vector_len: usize, round: u64) -> Self {
        let keys: Vec<SigningKey> = (0..n).map(signing_key).collect();
        let roster: Vec<PeerId> = keys
            .iter()
            .map(|k| PeerId::from_key(&k.verifying_key()))
            .collect();
        let params = SecAggParams::new([9; 16], round, roster, threshold, vector_len).unwrap();
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (PeerId::from_key(&k.verifying_key()), i))
            .collect();
        Self {
            keys,
            params,
            index,
        }
    }

    fn peer(&self, i: usize) -> PeerId {
        PeerId::from_key(&self.keys[i].verifying_key())
    }

    fn client(&self, i: usize) -> (SecAggClient, KeyAdvertisement) {
        SecAggClient::new(
            self.params.clone(),
            &self.keys[i],
            &ClientOptions::default(),
            randomness(i, self.params.round),
        )
        .unwrap()
    }

    /// Runs every step; `inputs[i]` is client i's quantised vector. Returns the server's result
    /// and the masked inputs the server received, by client index.
    fn run(
        &self,
        inputs: &[Vec<u32>],
        drops: &BTreeMap<usize, DropAt>,
    ) -> (Result<SecureSum, SecAggError>, BTreeMap<usize, Vec<u32>>) {
        let n = self.keys.len();
        let alive = |i: usize, stage: DropAt| drops.get(&i).is_none_or(|d| *d > stage);
        let mut server = SecAggServer::new(self.params.clone()).unwrap();
        let mut clients: BTreeMap<usize, SecAggClient> = BTreeMap::new();
        let mut masked = BTreeMap::new();

        for i in 0..n {
            if alive(i, DropAt::BeforeAdvertising) {
                let (client, advertisement) = self.client(i);
                server
                    .receive_advertisement(self.peer(i), advertisement)
                    .unwrap();
                clients.insert(i, client);
            }
        }
        let advertisements = match server.close_advertisements() {
            Ok(a) => a,
            Err(e) => return (Err(e), masked),
        };

        for (i, client) in clients.iter_mut() {
            if alive(*i, DropAt::BeforeSharing) {
                let bundle = client.share_keys(&advertisements).unwrap();
                server.receive_shares(self.peer(*i), bundle).unwrap();
            }
        }
        let routed = match server.close_shares() {
            Ok(r) => r,
            Err(e) => return (Err(e), masked),
        };

        for (peer, shares) in &routed {
            let i = self.index[peer];
            if alive(i, DropAt::BeforeMasking) {
                let input = clients
                    .get_mut(&i)
                    .unwrap()
                    .mask_input(shares, &inputs[i])
                    .unwrap();
                masked.insert(i, input.values.0.clone());
                server.receive_masked_input(*peer, input).unwrap();
            }
        }
        let survivors = match server.close_masked_inputs() {
            Ok(s) => s,
            Err(e) => return (Err(e), masked),
        };

        for peer in &survivors.survivors {
            let i = self.index[peer];
            if alive(i, DropAt::AfterMasking) {
                let signature = clients
                    .get_mut(&i)
                    .unwrap()
                    .sign_survivors(&survivors)
                    .unwrap();
                server.receive_survivor_signature(*peer, signature).unwrap();
            }
        }
        let request = match server.close_signatures() {
            Ok(r) => r,
            Err(e) => return (Err(e), masked),
        };

        for signed in &request.signatures {
            let i = self.index[&signed.from];
            if alive(i, DropAt::BeforeUnmasking) {
                let response = clients.get_mut(&i).unwrap().unmask(&request).unwrap();
                // A client never reveals both secrets of one peer.
                let seeds: BTreeSet<_> = response.self_seed_shares.iter().map(|s| s.of).collect();
                let keys: BTreeSet<_> = response.mask_key_shares.iter().map(|s| s.of).collect();
                assert!(seeds.is_disjoint(&keys));
                server
                    .receive_unmask_response(signed.from, response)
                    .unwrap();
            }
        }
        (server.finish(), masked)
    }
}

fn plain_sum(inputs: &[Vec<u32>], who: &[usize]) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for i in who {
        wrapping_add_into(&mut sum, &inputs[*i]);
    }
    sum
}

/// Structured, far-from-uniform quantised inputs: a scaled sine per client.
fn structured_inputs(n: usize, len: usize) -> Vec<Vec<u32>> {
    let q = Quantizer::new(65536.0, n).unwrap();
    (0..n)
        .map(|i| {
            (0..len)
                .map(|k| {
                    let v = ((k as f64) / 50.0 + i as f64).sin() * 100.0;
                    q.quantize(v, ValueKind::Real, "x", k).unwrap()
                })
                .collect()
        })
        .collect()
}

fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|c| (*c as f64 - expected).powi(2) / expected)
        .sum()
}

fn nibble_chi_square(words: &[u32]) -> f64 {
    let mut counts = [0u64; 16];
    for w in words {
        counts[(w >> 28) as usize] += 1;
    }
    chi_square(&counts)
}

fn byte_chi_square(words: &[u32]) -> f64 {
    let mut counts = [0u64; 256];
    for w in words {
        for b in w.to_le_bytes() {
            counts[b as usize] += 1;
        }
    }
    chi_square(&counts)
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

fn assert_looks_uniform(masked: &[u32], plain: &[u32], what: &str) {
    let nibbles = nibble_chi_square(masked);
    let bytes = byte_chi_square(masked);
    assert!(
        nibbles < CHI2_15_P001,
        "{what}: top-nibble chi-square {nibbles} >= {CHI2_15_P001}"
    );
    assert!(
        bytes < CHI2_255_P001,
        "{what}: byte chi-square {bytes} >= {CHI2_255_P001}"
    );
    let plain_f: Vec<f64> = plain.iter().map(|w| f64::from(*w as i32)).collect();
    let masked_f: Vec<f64> = masked.iter().map(|w| f64::from(*w)).collect();
    let r = correlation(&plain_f, &masked_f);
    let limit = 4.0 / (masked.len() as f64).sqrt();
    assert!(
        r.abs() < limit,
        "{what}: correlation with the plain values {r} (limit {limit})"
    );
}

/// (a) A single client's masked vector is indistinguishable from uniform: the chi-square
/// statistics of its top-nibble (16 buckets) and byte (256 buckets) histograms stay below the
/// p = 0.001 critical values, and its Pearson correlation with the plain values is below
/// 4/sqrt(N) (four standard errors under independence). The plain vectors themselves fail the
/// same test by orders of magnitude, so the test has the power to notice.
#[test]
fn a_single_masked_vector_is_indistinguishable_from_uniform() {
    let (n, len) = (3, 16384);
    let session = Session::new(n, 2, len, 1);
    let inputs = structured_inputs(n, len);
    for plain in &inputs {
        assert!(nibble_chi_square(plain) > 100.0 * CHI2_15_P001);
        assert!(byte_chi_square(plain) > 10.0 * CHI2_255_P001);
    }
    let (sum, masked) = session.run(&inputs, &BTreeMap::new());
    assert_eq!(sum.unwrap().values, plain_sum(&inputs, &[0, 1, 2]));
    for (i, words) in &masked {
        assert_looks_uniform(words, &inputs[*i], &format!("client {i}"));
    }
}

/// The self mask at work: a client treated as dropped (its mask key reconstructed and its
/// pairwise masks removed) whose masked input arrives anyway still cannot be read.
#[test]
fn a_late_update_of_a_dropped_client_stays_masked_by_its_self_mask() {
    let (n, len) = (4, 8192);
    let session = Session::new(n, 3, len, 2);
    let inputs = structured_inputs(n, len);
    // Client 3 shares keys and masks its input, but the input "arrives late": the server closes
    // the masked-input step without it, so its mask key is reconstructed.
    let (mut clients, advertisements): (Vec<_>, Vec<_>) = (0..n).map(|i| session.client(i)).unzip();
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    for (i, advertisement) in advertisements.into_iter().enumerate() {
        server
            .receive_advertisement(session.peer(i), advertisement)
            .unwrap();
    }
    let advertised = server.close_advertisements().unwrap();
    for (i, client) in clients.iter_mut().enumerate() {
        let bundle = client.share_keys(&advertised).unwrap();
        server.receive_shares(session.peer(i), bundle).unwrap();
    }
    let routed = server.close_shares().unwrap();
    let mut late = None;
    for (i, client) in clients.iter_mut().enumerate() {
        let input = client
            .mask_input(&routed[&session.peer(i)], &inputs[i])
            .unwrap();
        if i == 3 {
            late = Some(input);
        } else {
            server.receive_masked_input(session.peer(i), input).unwrap();
        }
    }
    let survivors = server.close_masked_inputs().unwrap();
    let late = late.unwrap();
    assert!(matches!(
        server.receive_masked_input(session.peer(3), late.clone()),
        Err(SecAggError::OutOfOrder { .. })
    ));
    for (i, client) in clients.iter_mut().enumerate().take(3) {
        let signature = client.sign_survivors(&survivors).unwrap();
        server
            .receive_survivor_signature(session.peer(i), signature)
            .unwrap();
    }
    let request = server.close_signatures().unwrap();
    let mut key_shares = Vec::new();
    for (i, client) in clients.iter_mut().enumerate().take(3) {
        let response = client.unmask(&request).unwrap();
        key_shares.push(
            response
                .mask_key_shares
                .iter()
                .find(|s| s.of == session.peer(3))
                .unwrap()
                .share
                .clone(),
        );
        server
            .receive_unmask_response(session.peer(i), response)
            .unwrap();
    }
    let sum = server.finish().unwrap();
    assert_eq!(sum.values, plain_sum(&inputs, &[0, 1, 2]));
    assert_eq!(sum.dropped, vec![session.peer(3)]);

    // What a curious coordinator can do with the late input: remove client 3's pairwise masks
    // with its reconstructed key. The self mask remains.
    let shares: Vec<&[u8]> = key_shares.iter().map(|s| s.as_slice()).collect();
    let key = shamir::combine(&shares, 3).unwrap();
    let secret = x25519_dalek::StaticSecret::from(*key);
    let session_digest = session.params.session_digest();
    let me = session.peer(3);
    let mut stripped = late.values.0.clone();
    for other in 0..3 {
        let peer = session.peer(other);
        let public = x25519_dalek::PublicKey::from(
            advertised
                .iter()
                .find(|a| a.peer == peer)
                .unwrap()
                .mask_public,
        );
        let shared = secret.diffie_hellman(&public);
        let pair = masking::pairwise_mask_key(&session_digest, shared.as_bytes(), &me, &peer);
        // Client 3 added the mask when the peer's id is higher: undo that.
        masking::apply_mask(&mut stripped, &pair, peer < me);
    }
    assert_ne!(stripped, inputs[3]);
    assert_looks_uniform(&stripped, &inputs[3], "late input without pairwise masks");
}

fn test_global(delta_len: usize) -> GlobalState {
    GlobalState {
        parameters: ParameterSet {
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![delta_len],
                values: F32Vec(vec![0.0; delta_len]),
            }],
        },
        prototypes: vec![PrototypeBank {
            group: "physiological".into(),
            emotions: 3,
            prototypes: 2,
            width: 4,
            values: F32Vec(vec![0.0; 24]),
        }],
        cooccurrence: CooccurrenceStatistics::zeros(3),
    }
}

/// A deterministic pseudo-random update (xorshift), values of both signs.
fn test_update(global: &GlobalState, seed: u64) -> ClientUpdate {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let delta: Vec<f32> = (0..global.parameters.value_count())
        .map(|_| ((next() - 0.5) * 0.2) as f32)
        .collect();
    let mut prototypes = PrototypeStatistics::zeros("physiological", 3, 2, 4);
    for v in &mut prototypes.sum.0 {
        *v = ((next() - 0.5) * 40.0) as f32;
    }
    for v in &mut prototypes.weight.0 {
        *v = (next() * 10.0) as f32;
    }
    let mut cooccurrence = CooccurrenceStatistics::zeros(3);
    for _ in 0..(5 + (seed % 7)) {
        let a = next() as f32;
        cooccurrence.add_label(&[a, 1.0 - a, 0.0]);
    }
    ClientUpdate {
        run_id: [9; 16],
        round: 1,
        delta: global.parameters.with_flat(&delta).unwrap(),
        prototypes: vec![prototypes],
        cooccurrence,
        sample_count: 20 + seed * 3,
        metrics: LocalMetrics::default(),
        evaluation: None,
    }
}

/// (b) The unmasked sum equals the plain sum of the real-valued updates within the quantisation
/// bound `n * 0.5 / scale` per coordinate (counts exactly).
#[test]
fn unmasked_sum_matches_the_plain_sum_within_the_quantisation_bound() {
    let n = 5;
    let global = test_global(300);
    let layout = UpdateLayout::of_global(&global);
    let quantizer = Quantizer::new(65536.0, n).unwrap();
    let updates: Vec<ClientUpdate> = (0..n).map(|i| test_update(&global, i as u64)).collect();
    let inputs: Vec<Vec<u32>> = updates
        .iter()
        .map(|u| layout.encode(u, u.sample_count, &quantizer).unwrap())
        .collect();
    let session = Session::new(n, 3, layout.len(), 4);
    let (sum, _) = session.run(&inputs, &BTreeMap::new());
    let sum = sum.unwrap();
    assert_eq!(sum.contributors.len(), n);
    let summed = layout.decode_sum(&sum.values, n, &quantizer).unwrap();
    let bound = quantizer.sum_error_bound(ValueKind::Real);
    assert_eq!(bound, 5.0 * 0.5 / 65536.0);

    let mut worst: f64 = 0.0;
    for (k, value) in summed.weighted_delta_sum.iter().enumerate() {
        let exact: f64 = updates
            .iter()
            .map(|u| u.sample_count as f64 * f64::from(u.delta.to_flat()[k]))
            .sum();
        worst = worst.max((value - exact).abs());
    }
    assert!(worst <= bound, "delta error {worst} > {bound}");
    let total: u64 = updates.iter().map(|u| u.sample_count).sum();
    assert_eq!(summed.total_weight, total as f64);
    // The mean delta's error is the sum's divided by the total weight.
    let mean = summed.mean_delta().unwrap();
    for (k, m) in mean.iter().enumerate() {
        let exact: f64 = updates
            .iter()
            .map(|u| u.sample_count as f64 * f64::from(u.delta.to_flat()[k]))
            .sum::<f64>()
            / total as f64;
        assert!((m - exact).abs() <= bound / total as f64 + 1e-15);
    }
    // Statistics, compared in f64 against the f32 decode (f32 rounding of the result adds a
    // relative 6e-8).
    for k in 0..24 {
        let exact: f64 = updates
            .iter()
            .map(|u| f64::from(u.prototypes[0].sum.0[k]))
            .sum();
        let got = f64::from(summed.prototypes[0].sum.0[k]);
        assert!((got - exact).abs() <= bound + exact.abs() * 1.2e-7);
    }
    let count: f64 = updates.iter().map(|u| u.cooccurrence.count).sum();
    assert_eq!(summed.cooccurrence.count, count);
}

/// (c) One client drops out after sending its masked update and another before masking (and a
/// third before sharing keys): the survivors' sum is still exact, and it includes the client
/// whose masked input arrived. Threshold 4 of 7: four clients answer the unmask request.
#[test]
fn drop_outs_before_and_after_masking_still_give_the_survivors_sum() {
    let (n, len) = (7, 500);
    let session = Session::new(n, 4, len, 5);
    let inputs = structured_inputs(n, len);
    let drops = BTreeMap::from([
        (1, DropAt::AfterMasking),
        (4, DropAt::BeforeMasking),
        (6, DropAt::BeforeSharing),
    ]);
    let (sum, masked) = session.run(&inputs, &drops);
    let sum = sum.unwrap();
    let contributors = [0, 1, 2, 3, 5];
    assert_eq!(sum.values, plain_sum(&inputs, &contributors));
    let mut expected: Vec<PeerId> = contributors.iter().map(|i| session.peer(*i)).collect();
    expected.sort();
    assert_eq!(sum.contributors, expected);
    assert_eq!(sum.dropped, vec![session.peer(4)]);
    assert!(masked.contains_key(&1) && !masked.contains_key(&4));

    // Different drop-outs and a client that never advertised (five survivors, four sign).
    let drops = BTreeMap::from([
        (0, DropAt::BeforeAdvertising),
        (3, DropAt::BeforeMasking),
        (5, DropAt::AfterMasking),
    ]);
    let (sum, _) = session.run(&inputs, &drops);
    assert_eq!(sum.unwrap().values, plain_sum(&inputs, &[1, 2, 4, 5, 6]));

    // A client that signs the survivor list but never sends its unmask response (threshold 5 of
    // 8: seven contributors, seven signers, six responses).
    let session = Session::new(8, 5, len, 12);
    let inputs = structured_inputs(8, len);
    let drops = BTreeMap::from([(0, DropAt::BeforeMasking), (4, DropAt::BeforeUnmasking)]);
    let (sum, _) = session.run(&inputs, &drops);
    assert_eq!(
        sum.unwrap().values,
        plain_sum(&inputs, &[1, 2, 3, 4, 5, 6, 7])
    );
}

/// (d) Below the threshold at any step: a clear error, never a sum; the server stays failed.
#[test]
fn below_threshold_survivors_give_an_error_never_a_wrong_sum() {
    let (n, len) = (5, 64);
    let session = Session::new(n, 3, len, 6);
    let inputs = structured_inputs(n, len);
    for (drops, stage) in [
        (
            vec![
                (0, DropAt::BeforeAdvertising),
                (1, DropAt::BeforeAdvertising),
                (2, DropAt::BeforeAdvertising),
            ],
            "key advertisement",
        ),
        (
            vec![
                (0, DropAt::BeforeSharing),
                (1, DropAt::BeforeSharing),
                (4, DropAt::BeforeSharing),
            ],
            "share distribution",
        ),
        (
            vec![
                (0, DropAt::BeforeMasking),
                (2, DropAt::BeforeMasking),
                (3, DropAt::BeforeMasking),
            ],
            "masked input collection",
        ),
        (
            vec![
                (1, DropAt::AfterMasking),
                (2, DropAt::AfterMasking),
                (3, DropAt::AfterMasking),
            ],
            "consistency check",
        ),
        (
            vec![
                (0, DropAt::BeforeUnmasking),
                (3, DropAt::BeforeUnmasking),
                (4, DropAt::BeforeUnmasking),
            ],
            "unmasking",
        ),
    ] {
        let (sum, _) = session.run(&inputs, &drops.into_iter().collect());
        match sum {
            Err(SecAggError::BelowThreshold {
                stage: s,
                have: 2,
                threshold: 3,
            }) => assert_eq!(s, stage),
            other => panic!("{stage}: expected below-threshold, got {other:?}"),
        }
    }

    // A failed server refuses everything afterwards.
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    let (_, advertisement) = session.client(0);
    server
        .receive_advertisement(session.peer(0), advertisement.clone())
        .unwrap();
    let error = server.close_advertisements().unwrap_err();
    assert_eq!(
        error.to_string(),
        "key advertisement: only 1 participant(s) left, the threshold is 3"
    );
    assert_eq!(server.stage(), ServerStage::Failed);
    assert!(matches!(
        server.receive_advertisement(session.peer(0), advertisement),
        Err(SecAggError::OutOfOrder { .. })
    ));
}

/// (e) A forged, unsigned, replayed or substituted key advertisement is rejected by the server
/// and by every client (so a coordinator cannot swap in its own keys).
#[test]
fn forged_or_unsigned_key_advertisements_are_rejected() {
    let session = Session::new(3, 2, 16, 7);
    let (mut victim, own) = session.client(0);
    let (_, genuine) = session.client(1);
    let (_, third) = session.client(2);

    // The coordinator substitutes client 1's mask key with one it controls.
    let mut substituted = genuine.clone();
    substituted.mask_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([42u8; 32])).to_bytes();
    // Unsigned.
    let mut unsigned = genuine.clone();
    unsigned.signature.clear();
    // Replayed from another round of the same run.
    let other_round = Session::new(3, 2, 16, 8);
    let (_, replayed) = other_round.client(1);
    // Signed by someone outside the roster, for a roster member's name.
    let outsider = signing_key(99);
    let mut impostor = genuine.clone();
    impostor.signature = {
        use ed25519_dalek::Signer;
        let message = super::client::advertisement_bytes(
            &session.params.session_digest(),
            &genuine.peer,
            &genuine.cipher_public,
            &genuine.mask_public,
            &genuine.seed_commitment,
        );
        outsider.sign(&message).to_bytes().to_vec()
    };

    for (forged, name) in [
        (&substituted, "substituted"),
        (&unsigned, "unsigned"),
        (&replayed, "replayed"),
        (&impostor, "impostor"),
    ] {
        let mut server = SecAggServer::new(session.params.clone()).unwrap();
        match server.receive_advertisement(session.peer(1), forged.clone()) {
            Err(SecAggError::BadSignature { peer, .. }) => assert_eq!(peer, session.peer(1)),
            other => panic!("{name}: server accepted or misreported: {other:?}"),
        }
        // The client checks for itself: the coordinator cannot get a forged key past it.
        let (mut client, _) = session.client(0);
        let list = vec![own.clone(), forged.clone(), third.clone()];
        assert!(
            matches!(
                client.share_keys(&list),
                Err(SecAggError::BadSignature { .. })
            ),
            "{name}"
        );
        assert!(matches!(
            client.share_keys(&list),
            Err(SecAggError::OutOfOrder { .. })
        ));
    }

    // A sender that is not the advertised peer, a stranger and a tampered own key.
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    assert!(matches!(
        server.receive_advertisement(session.peer(2), genuine.clone()),
        Err(SecAggError::SenderMismatch { .. })
    ));
    let stranger_session = Session::new(4, 3, 16, 7);
    let (_, stranger) = stranger_session.client(3);
    assert!(matches!(
        server.receive_advertisement(stranger.peer, stranger),
        Err(SecAggError::NotInRoster { .. })
    ));
    let mut own_changed = own.clone();
    own_changed.cipher_public[0] ^= 1;
    assert!(matches!(
        victim.share_keys(&[own_changed, genuine.clone(), third.clone()]),
        Err(SecAggError::BadSignature { .. })
    ));
    let (mut victim, _) = session.client(0);
    assert!(matches!(
        victim.share_keys(&[genuine, third]),
        Err(SecAggError::Refused(_))
    ));
}

/// The consistency check: a client reveals nothing for a survivor list other than the one it
/// signed, nor with fewer than `t` valid signatures.
#[test]
fn clients_refuse_inconsistent_unmask_requests() {
    let (n, len) = (3, 32);
    let session = Session::new(n, 2, len, 9);
    let inputs = structured_inputs(n, len);
    let (mut clients, advertisements): (Vec<_>, Vec<_>) = (0..n).map(|i| session.client(i)).unzip();
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    for (i, a) in advertisements.into_iter().enumerate() {
        server.receive_advertisement(session.peer(i), a).unwrap();
    }
    let advertised = server.close_advertisements().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let bundle = c.share_keys(&advertised).unwrap();
        server.receive_shares(session.peer(i), bundle).unwrap();
    }
    let routed = server.close_shares().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let input = c.mask_input(&routed[&session.peer(i)], &inputs[i]).unwrap();
        server.receive_masked_input(session.peer(i), input).unwrap();
    }
    let survivors = server.close_masked_inputs().unwrap();
    let signatures: Vec<_> = clients
        .iter_mut()
        .map(|c| c.sign_survivors(&survivors).unwrap())
        .collect();
    // Signing twice is refused.
    assert!(matches!(
        clients[0].sign_survivors(&survivors),
        Err(SecAggError::OutOfOrder { .. })
    ));

    // A request claiming client 2 dropped (to get its mask key) while it was listed as a
    // survivor when client 0 signed.
    let mut shorter = survivors.survivors.clone();
    shorter.retain(|p| *p != session.peer(2));
    let lying = UnmaskRequest {
        survivors: shorter,
        signatures: signatures.clone(),
    };
    assert!(matches!(
        clients[0].unmask(&lying),
        Err(SecAggError::Refused(_))
    ));

    // Too few signatures (t = 2).
    let thin = UnmaskRequest {
        survivors: survivors.survivors.clone(),
        signatures: signatures[..1].to_vec(),
    };
    assert!(matches!(
        clients[1].unmask(&thin),
        Err(SecAggError::BelowThreshold { have: 1, .. })
    ));
    // A forged signature.
    let mut forged = signatures.clone();
    forged[0].signature[3] ^= 1;
    let bad = UnmaskRequest {
        survivors: survivors.survivors.clone(),
        signatures: forged,
    };
    assert!(matches!(
        clients[2].unmask(&bad),
        Err(SecAggError::BadSignature { .. })
    ));
}

/// A client that reveals a wrong share makes the round fail with a reconstruction error, never
/// produce a wrong sum.
#[test]
fn a_wrong_share_is_detected_not_summed() {
    let (n, len) = (4, 40);
    let session = Session::new(n, 3, len, 10);
    let inputs = structured_inputs(n, len);
    let (mut clients, advertisements): (Vec<_>, Vec<_>) = (0..n).map(|i| session.client(i)).unzip();
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    for (i, a) in advertisements.into_iter().enumerate() {
        server.receive_advertisement(session.peer(i), a).unwrap();
    }
    let advertised = server.close_advertisements().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let bundle = c.share_keys(&advertised).unwrap();
        server.receive_shares(session.peer(i), bundle).unwrap();
    }
    let routed = server.close_shares().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let input = c.mask_input(&routed[&session.peer(i)], &inputs[i]).unwrap();
        server.receive_masked_input(session.peer(i), input).unwrap();
    }
    let survivors = server.close_masked_inputs().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let s = c.sign_survivors(&survivors).unwrap();
        server
            .receive_survivor_signature(session.peer(i), s)
            .unwrap();
    }
    let request = server.close_signatures().unwrap();
    // The responder with the lowest x-coordinate (first roster entry) lies about one seed share.
    let liar = session.params.roster[0];
    for (i, c) in clients.iter_mut().enumerate() {
        let mut response = c.unmask(&request).unwrap();
        if session.peer(i) == liar {
            response.self_seed_shares[1].share[7] ^= 0x80;
        }
        server
            .receive_unmask_response(session.peer(i), response)
            .unwrap();
    }
    match server.finish() {
        Err(SecAggError::Reconstruction { what, .. }) => assert_eq!(what, "self-mask seed"),
        other => panic!("expected a reconstruction error, got {other:?}"),
    }
}

#[test]
fn tampered_or_misrouted_shares_are_rejected() {
    let session = Session::new(3, 2, 8, 11);
    let (mut clients, advertisements): (Vec<_>, Vec<_>) = (0..3).map(|i| session.client(i)).unzip();
    let bundles: Vec<ShareBundle> = clients
        .iter_mut()
        .map(|c| c.share_keys(&advertisements).unwrap())
        .collect();
    let me = session.peer(0);
    let mut to_me: Vec<EncryptedShare> = bundles[1..]
        .iter()
        .flat_map(|b| b.shares.iter().filter(|s| s.to == me).cloned())
        .collect();
    to_me[0].ciphertext[0] ^= 1;
    assert!(matches!(
        clients[0].mask_input(&to_me, &[0; 8]),
        Err(SecAggError::ShareDecryption { .. })
    ));
    // The server refuses a bundle that misses a recipient.
    let mut server = SecAggServer::new(session.params.clone()).unwrap();
    for (i, a) in advertisements.iter().enumerate() {
        server
            .receive_advertisement(session.peer(i), a.clone())
            .unwrap();
    }
    server.close_advertisements().unwrap();
    let mut short = bundles[1].clone();
    short.shares.pop();
    assert!(matches!(
        server.receive_shares(session.peer(1), short),
        Err(SecAggError::Malformed { .. })
    ));
    server
        .receive_shares(session.peer(1), bundles[1].clone())
        .unwrap();
    assert!(matches!(
        server.receive_shares(session.peer(1), bundles[1].clone()),
        Err(SecAggError::Duplicate { .. })
    ));
    // Wrong input length.
    let (mut c, _) = session.client(2);
    let _ = c.share_keys(&advertisements).unwrap();
    assert!(matches!(
        c.mask_input(&[], &[0; 7]),
        Err(SecAggError::WrongLength { .. })
    ));
}

#[test]
fn parameters_are_checked() {
    let keys: Vec<PeerId> = (0..4)
        .map(|i| PeerId::from_key(&signing_key(i).verifying_key()))
        .collect();
    assert!(SecAggParams::new([0; 16], 1, keys.clone(), 3, 10).is_ok());
    for (threshold, len) in [(2, 10), (1, 10), (5, 10), (3, 0)] {
        assert!(
            SecAggParams::new([0; 16], 1, keys.clone(), threshold, len).is_err(),
            "{threshold} {len}"
        );
    }
    assert!(SecAggParams::new([0; 16], 1, keys[..1].to_vec(), 1, 10).is_err());
    assert_eq!(SecAggParams::threshold_for(10, 2.0 / 3.0), 7);
    assert_eq!(SecAggParams::threshold_for(4, 0.5), 3);
    assert_eq!(SecAggParams::threshold_for(2, 0.1), 2);
    // A client refuses a roster with strangers when it has a trusted list.
    let params = SecAggParams::new([0; 16], 1, keys.clone(), 3, 10).unwrap();
    let options = ClientOptions {
        trusted_peers: Some(keys[..3].iter().copied().collect()),
        min_threshold_fraction: 0.0,
    };
    assert!(matches!(
        SecAggClient::new(params.clone(), &signing_key(0), &options, [1; 32]),
        Err(SecAggError::Refused(_))
    ));
    let demanding = ClientOptions {
        trusted_peers: None,
        min_threshold_fraction: 1.0,
    };
    assert!(matches!(
        SecAggClient::new(params.clone(), &signing_key(0), &demanding, [1; 32]),
        Err(SecAggError::Refused(_))
    ));
    assert!(matches!(
        SecAggClient::new(params, &signing_key(7), &ClientOptions::default(), [1; 32]),
        Err(SecAggError::NotInRoster { .. })
    ));
}
