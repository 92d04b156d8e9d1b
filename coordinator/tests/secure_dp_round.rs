//! One round with every privacy layer, driven by hand the way the round state machine and the
//! network will: clients clip their deltas and add their share of the Gaussian noise, lay out
//! and quantise their update with weight 1, run secure aggregation (one client drops out before
//! masking); the coordinator decodes the sum, averages over the contributors and records the
//! round in the privacy ledger.

use std::collections::BTreeMap;

use mpcl_coordinator::CoordinatorConfig;
use mpcl_coordinator::privacy::{
    PrivacyLedger, add_distributed_noise, clip_update, seeded_noise_rng,
};
use mpcl_protocol::messages::{ClientUpdate, GlobalState, LocalMetrics, PrototypeBank};
use mpcl_protocol::secure_aggregation::{
    ClientOptions, PeerId, SecAggClient, SecAggParams, SecAggServer, UpdateLayout,
};
use mpcl_protocol::{
    CooccurrenceStatistics, F32Vec, NamedTensor, ParameterSet, PrototypeStatistics, SigningKey,
};

fn global(len: usize) -> GlobalState {
    GlobalState {
        parameters: ParameterSet {
            tensors: vec![NamedTensor {
                name: "encoder.weight".into(),
                shape: vec![len],
                values: F32Vec(vec![0.0; len]),
            }],
        },
        prototypes: vec![PrototypeBank {
            group: "physiological".into(),
            emotions: 2,
            prototypes: 1,
            width: 3,
            values: F32Vec(vec![0.0; 6]),
        }],
        cooccurrence: CooccurrenceStatistics::zeros(2),
    }
}

fn client_update(global: &GlobalState, i: usize) -> ClientUpdate {
    let len = global.parameters.value_count();
    // Client i pushes every coordinate by (i + 1) * 0.1: norms from 0.1 * sqrt(len) up.
    let delta: Vec<f32> = (0..len).map(|_| (i as f32 + 1.0) * 0.1).collect();
    let mut prototypes = PrototypeStatistics::zeros("physiological", 2, 1, 3);
    prototypes.sum.0 = vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
    prototypes.weight.0 = vec![6.0, 0.0];
    let mut cooccurrence = CooccurrenceStatistics::zeros(2);
    for _ in 0..6 {
        cooccurrence.add_label(&[1.0, 0.0]);
    }
    ClientUpdate {
        run_id: [1; 16],
        round: 1,
        delta: global.parameters.with_flat(&delta).unwrap(),
        prototypes: vec![prototypes],
        cooccurrence,
        sample_count: 6,
        metrics: LocalMetrics::default(),
        evaluation: None,
    }
}

#[test]
fn a_secure_differentially_private_round_end_to_end() {
    let config = CoordinatorConfig::from_toml_str(
        "clients_per_round = 6\n[privacy]\nsecure_aggregation = true\nthreshold = 0.6\nclip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon_budget = 5.0\n",
    )
    .unwrap();
    let privacy = &config.privacy;
    let (n, len) = (6, 400);
    let global = global(len);
    let layout = UpdateLayout::of_global(&global);
    let threshold = privacy.threshold.for_cohort(n);
    assert_eq!(threshold, 4);
    let quantizer = privacy.quantizer(n).unwrap();

    let keys: Vec<SigningKey> = (0..n)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 40; 32]))
        .collect();
    let roster: Vec<PeerId> = keys
        .iter()
        .map(|k| PeerId::from_key(&k.verifying_key()))
        .collect();
    let params = SecAggParams::new([1; 16], 1, roster, threshold, layout.len()).unwrap();

    // Client side: clip, add the noise share for at least `threshold` contributors, quantise
    // with weight 1.
    let clip = privacy.clip_norm.unwrap();
    let mut inputs = Vec::new();
    let mut clipped_deltas = Vec::new();
    for i in 0..n {
        let mut update = client_update(&global, i);
        let outcome = clip_update(&mut update.delta, clip);
        assert!(outcome.clipped());
        clipped_deltas.push(update.delta.to_flat());
        add_distributed_noise(
            &mut update.delta,
            privacy.noise_multiplier,
            clip,
            threshold,
            &mut seeded_noise_rng(1000 + i as u64),
        );
        inputs.push(layout.encode(&update, 1, &quantizer).unwrap());
    }

    // The session; client 2 drops out after sharing its keys.
    let mut server = SecAggServer::new(params.clone()).unwrap();
    let mut clients = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let (client, advertisement) = SecAggClient::new(
            params.clone(),
            key,
            &ClientOptions::default(),
            [i as u8; 32],
        )
        .unwrap();
        server
            .receive_advertisement(client.peer(), advertisement)
            .unwrap();
        clients.insert(i, client);
    }
    let advertised = server.close_advertisements().unwrap();
    for client in clients.values_mut() {
        let bundle = client.share_keys(&advertised).unwrap();
        server.receive_shares(client.peer(), bundle).unwrap();
    }
    let routed = server.close_shares().unwrap();
    for (i, client) in clients.iter_mut() {
        if *i == 2 {
            continue;
        }
        let masked = client
            .mask_input(&routed[&client.peer()], &inputs[*i])
            .unwrap();
        server.receive_masked_input(client.peer(), masked).unwrap();
    }
    let survivors = server.close_masked_inputs().unwrap();
    for (i, client) in clients.iter_mut() {
        if *i != 2 {
            let signature = client.sign_survivors(&survivors).unwrap();
            server
                .receive_survivor_signature(client.peer(), signature)
                .unwrap();
        }
    }
    let request = server.close_signatures().unwrap();
    for (i, client) in clients.iter_mut() {
        if *i != 2 {
            let response = client.unmask(&request).unwrap();
            server
                .receive_unmask_response(client.peer(), response)
                .unwrap();
        }
    }
    let sum = server.finish().unwrap();
    assert_eq!(sum.contributors.len(), 5);

    // Coordinator side: decode, average over contributors (uniform weights), account.
    let summed = layout
        .decode_sum(&sum.values, sum.contributors.len(), &quantizer)
        .unwrap();
    assert_eq!(summed.total_weight, 5.0);
    assert_eq!(summed.cooccurrence.count, 30.0);
    assert_eq!(summed.prototypes[0].weight.0, vec![30.0, 0.0]);
    let mean = summed.mean_delta().unwrap();
    let contributors = [0, 1, 3, 4, 5];
    // Every clipped delta points the same way with norm 1: the clean mean is clipped_deltas[0].
    let clean: Vec<f64> = (0..len)
        .map(|k| {
            contributors
                .iter()
                .map(|i| f64::from(clipped_deltas[*i][k]))
                .sum::<f64>()
                / 5.0
        })
        .collect();
    // Noise on the sum: std sigma*C*sqrt(5/4); on the mean, divided by 5.
    let noise_std = privacy.noise_multiplier * clip * (5.0f64 / 4.0).sqrt() / 5.0;
    let errors: Vec<f64> = mean.iter().zip(&clean).map(|(m, c)| m - c).collect();
    let observed = (errors.iter().map(|e| e * e).sum::<f64>() / len as f64).sqrt();
    assert!(
        (observed / noise_std - 1.0).abs() < 0.15,
        "noise std on the mean {observed}, expected {noise_std}"
    );

    let mut ledger = PrivacyLedger::new(
        privacy.noise_multiplier,
        privacy.target_delta,
        privacy.epsilon_budget,
    )
    .unwrap();
    let spent = ledger.record_round(6.0 / 20.0).unwrap();
    assert!(spent.epsilon > 0.0 && spent.epsilon < 5.0);
    assert_eq!(spent.delta, 1e-5);
}
