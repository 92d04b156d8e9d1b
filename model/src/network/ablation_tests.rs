//! Each ablation switch of [`ModelConfig`] bypasses exactly one component: with the switch off,
//! the network computes the reduced network, recomputed here by hand from the same modules.

use burn::tensor::{Distribution, Tensor};

use super::fusion::token_mean;
use super::*;
use crate::loss::mpcl_loss;
use crate::network::prototypes::tensor_to_vec;
use mpcl_data::ModelConfig;
use mpcl_data::{Modality, ModalityGroup, Schema};

/// Two physiological modalities (so the cross-modal keys matter) and one behavioral one.
fn schema() -> Schema {
    Schema {
        emotions: vec!["a".into(), "b".into(), "c".into()],
        modalities: vec![
            Modality::new("eda", ModalityGroup::Physiological, 3, 2),
            Modality::new("ppg", ModalityGroup::Physiological, 2, 4),
            Modality::new("face", ModalityGroup::Behavioral, 4, 3),
        ],
    }
}

fn config() -> ModelConfig {
    ModelConfig {
        width: 8,
        prototypes_per_emotion: 2,
        memory_slots: 3,
        ..ModelConfig::default()
    }
}

struct Built {
    network: MpclNetwork,
    memories: Memories,
    inputs: Vec<Tensor<3>>,
}

fn build(config: &ModelConfig) -> Built {
    let schema = schema();
    let device = Device::flex();
    // Other tests draw from the same process-wide generator: hold the initialisation lock.
    let (network, memories, inputs) = crate::model::seeded_initialisation(|| {
        let network = MpclNetwork::new(&schema, config, &device, 11);
        device.seed(12);
        let memories = Memories::new(network.layout(), config, &device);
        let inputs = schema
            .modalities
            .iter()
            .map(|m| {
                Tensor::random(
                    [5, m.token_count, m.token_width],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            })
            .collect::<Vec<_>>();
        // Draw every lazy value now, inside the lock.
        let _ = crate::parameters::flatten_parameters(&network);
        (network, memories, inputs)
    });
    Built {
        network,
        memories,
        inputs,
    }
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    tensor_to_vec(t.clone())
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{what}: differs by {worst}");
}

fn differs(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-4)
}

fn encoded(built: &Built) -> Vec<Tensor<3>> {
    built
        .network
        .encoders
        .iter()
        .zip(&built.inputs)
        .map(|(e, t)| e.forward(t.clone()))
        .collect()
}

#[test]
fn memory_fusion_off_is_the_mean_of_the_groups_tokens() {
    let full = config();
    let off = ModelConfig {
        use_memory_fusion: false,
        ..config()
    };
    let built = build(&off);
    let output = built.network.forward(&built.inputs, &built.memories, &off);
    let tokens = encoded(&built);
    let physiological = token_mean(&tokens[..2]);
    let behavioral = token_mean(&tokens[2..]);
    assert_close(
        &values(&output.groups[0].representation),
        &values(&physiological),
        "physiological",
    );
    assert_close(
        &values(&output.groups[1].representation),
        &values(&behavioral),
        "behavioral",
    );
    let with_fusion = built.network.forward(&built.inputs, &built.memories, &full);
    assert!(differs(
        &values(&with_fusion.groups[0].representation),
        &values(&physiological)
    ));
}

#[test]
fn one_scale_is_that_scales_memory_alone() {
    let one = ModelConfig {
        scales: vec![1],
        ..config()
    };
    let built = build(&one);
    let output = built.network.forward(&built.inputs, &built.memories, &one);
    let tokens = encoded(&built);
    let alone = built.network.fusions[0].scales[0].forward(&tokens[..2], true);
    assert_close(
        &values(&output.groups[0].representation),
        &values(&alone),
        "one scale",
    );
}

#[test]
fn cross_modal_off_retrieves_each_modality_from_the_slots_alone() {
    let off = ModelConfig {
        use_cross_modal: false,
        scales: vec![1],
        ..config()
    };
    let built = build(&off);
    let output = built.network.forward(&built.inputs, &built.memories, &off);
    let tokens = encoded(&built);
    let scale = &built.network.fusions[0].scales[0];
    // Each modality alone (its memory then holds only the slots), weighted by its token count.
    let (eda, ppg) = (
        scale.forward(&tokens[..1], true),
        scale.forward(&tokens[1..2], true),
    );
    let reduced = (eda * 3.0 + ppg * 2.0) / 5.0;
    assert_close(
        &values(&output.groups[0].representation),
        &values(&reduced),
        "slots only",
    );
    let cross = built
        .network
        .forward(&built.inputs, &built.memories, &config());
    assert!(differs(
        &values(&cross.groups[0].representation),
        &values(&reduced)
    ));
}

#[test]
fn prototypes_off_ignore_the_banks() {
    let off = ModelConfig {
        use_prototypes: false,
        ..config()
    };
    let mut built = build(&off);
    let before = built.network.forward(&built.inputs, &built.memories, &off);
    assert!(before.groups.iter().all(|g| g.assignment.is_none()));
    for bank in &mut built.memories.banks {
        *bank = PrototypeBank::from_vec(
            bank.group,
            bank.dims(),
            vec![0.5; bank.dims().iter().product()],
            &Device::flex(),
        );
    }
    let after = built.network.forward(&built.inputs, &built.memories, &off);
    assert_eq!(values(&before.log_probs), values(&after.log_probs));
}

#[test]
fn distillation_off_drops_exactly_its_term() {
    let off = ModelConfig {
        distillation_loss_weight: 0.0,
        ..config()
    };
    let built = build(&off);
    let output = built.network.forward(&built.inputs, &built.memories, &off);
    let labels = Tensor::<2>::from_floats([[0.2, 0.3, 0.5]; 5], &Device::flex());
    let terms = mpcl_loss(&output, labels.clone(), &built.memories, &off);
    assert!(terms.distillation.is_none());
    let expected = terms.kl.clone()
        + terms.prototype.clone().expect("prototype term") * off.prototype_loss_weight
        + terms.cooccurrence.clone().expect("co-occurrence term") * off.cooccurrence_loss_weight;
    assert_close(&values(&terms.total), &values(&expected), "total");
    let full = mpcl_loss(&output, labels, &built.memories, &config());
    assert!(full.distillation.is_some());
}

#[test]
fn emotion_retrieval_off_feeds_the_embeddings_to_the_head() {
    let off = ModelConfig {
        use_emotion_retrieval: false,
        ..config()
    };
    let built = build(&off);
    let output = built.network.forward(&built.inputs, &built.memories, &off);
    // O = V: the mean of the groups' prototype read-outs.
    let readouts: Vec<Tensor<3>> = output
        .groups
        .iter()
        .map(|g| {
            let bank = built.memories.bank(g.group).expect("bank");
            read_out(
                g.assignment.clone().expect("assignment"),
                bank.values.clone(),
            )
        })
        .collect();
    let z = mean_of(
        output
            .groups
            .iter()
            .map(|g| g.representation.clone())
            .collect(),
    );
    let reduced = built.network.head.forward(mean_of(readouts), Some(z));
    assert_close(&values(&output.log_probs), &values(&reduced), "O = V");
    let full = built
        .network
        .forward(&built.inputs, &built.memories, &config());
    assert!(differs(&values(&full.log_probs), &values(&reduced)));
}

#[test]
fn z_path_off_scores_from_the_emotion_states_alone() {
    let off = ModelConfig {
        use_z_path: false,
        ..config()
    };
    let built = build(&off);
    let output = built.network.forward(&built.inputs, &built.memories, &off);
    // Zero the z half of the head's weights: with the path off nothing may change.
    let mut cut = built.network.clone();
    let [emotions, features] = cut.head.emotion_weights.dims();
    let mask: Vec<f32> = (0..emotions * features)
        .map(|i| {
            if i % features < features / 2 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mask =
        Tensor::<1>::from_floats(mask.as_slice(), &Device::flex()).reshape([emotions, features]);
    cut.head.emotion_weights =
        burn::module::Param::from_tensor(cut.head.emotion_weights.val() * mask);
    let with_cut = cut.forward(&built.inputs, &built.memories, &off);
    assert_close(
        &values(&output.log_probs),
        &values(&with_cut.log_probs),
        "z-free head",
    );
    let full = cut.forward(&built.inputs, &built.memories, &config());
    let full_uncut = built
        .network
        .forward(&built.inputs, &built.memories, &config());
    assert!(differs(
        &values(&full.log_probs),
        &values(&full_uncut.log_probs)
    ));
}

#[test]
fn an_ablated_network_shares_every_other_modules_initial_weights() {
    let full = crate::parameters::flatten_parameters(&build(&config()).network);
    let one = crate::parameters::flatten_parameters(
        &build(&ModelConfig {
            scales: vec![1],
            ..config()
        })
        .network,
    );
    let mut shared = 0;
    for tensor in &one.tensors {
        let twin = full
            .tensors
            .iter()
            .find(|t| t.name == tensor.name)
            .expect("every one-scale parameter exists in the full network");
        if !tensor.name.contains("scale_logits") {
            assert_eq!(tensor.values, twin.values, "{}", tensor.name);
            shared += 1;
        }
    }
    assert!(shared > 10 && one.tensors.len() < full.tensors.len());
}

#[test]
fn a_head_at_the_prior_predicts_the_prior() {
    let mut built = build(&config());
    let prior = [0.5f32, 0.3, 0.2];
    built.network.set_head_prior(&prior);
    let output = built
        .network
        .forward(&built.inputs, &built.memories, &config());
    let probabilities = values(&output.log_probs.exp());
    for row in probabilities.chunks(3) {
        assert_close(row, &prior, "untrained prediction");
    }
}

#[test]
fn the_coordinators_label_prior_logits_are_the_head_bias() {
    // The coordinator's opening round writes ln(prior) into the tensor the protocol names; on
    // a network whose head starts at a prior, that alone makes it predict the new prior.
    let mut built = build(&config());
    built.network.set_head_prior(&[1.0 / 3.0; 3]);
    let prior = [0.5f32, 0.3, 0.2];
    let mut parameters = crate::parameters::flatten_parameters(&built.network);
    let logits = parameters
        .tensors
        .iter_mut()
        .find(|t| t.name == mpcl_protocol::messages::LABEL_PRIOR_LOGITS)
        .expect("the head bias has the name the protocol gives it");
    assert_eq!(logits.values.len(), 3);
    logits.values = mpcl_protocol::F32Vec(prior.iter().map(|p| p.ln()).collect());
    let network = crate::parameters::load_parameters(built.network.clone(), &parameters).unwrap();
    let output = network.forward(&built.inputs, &built.memories, &config());
    for row in values(&output.log_probs.exp()).chunks(3) {
        assert_close(row, &prior, "prediction after the label-prior round");
    }
}
