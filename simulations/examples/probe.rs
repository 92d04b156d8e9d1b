use mpcl_model::data::{Dataset, Standardizer};
use mpcl_model::metrics::label_prior_metrics;
use mpcl_model::{Device, ModelConfig, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::CooccurrenceStatistics;
use mpcl_simulations::synthetic::{SyntheticConfig, generate};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let epochs: usize = args.get(1).map(|a| a.parse().unwrap()).unwrap_or(30);
    let lr: f64 = args.get(2).map(|a| a.parse().unwrap()).unwrap_or(3e-3);
    let variant = args.get(3).cloned().unwrap_or_default();
    let data = generate(&SyntheticConfig {
        subjects: 4,
        trials_per_subject: 12,
        windows_per_trial: 3,
        ..SyntheticConfig::default()
    });
    let (test, trn): (Vec<usize>, Vec<usize>) =
        (0..data.samples.len()).partition(|&i| data.samples[i].trial % 3 == 2);
    let (train_set, test_set): (Dataset, Dataset) = (data.subset(&trn), data.subset(&test));
    let st = Standardizer::fit(&train_set);
    let mut config = ModelConfig::tiny();
    if variant.contains("noproto") {
        config.use_prototypes = false;
    }
    if variant.contains("noco") {
        config.use_cooccurrence = false;
    }
    if variant.contains("w32") {
        config.width = 32;
    }
    let mut model = MpclModel::new(&data.schema, &config, &Device::flex(), 3).unwrap();
    let mut co = CooccurrenceStatistics::zeros(10);
    for s in &train_set.samples {
        co.add_label(&s.label);
    }
    model.memories.set_cooccurrence(co);
    let tr = TensorDataset::new(&train_set, &st, model.device());
    let te = TensorDataset::new(&test_set, &st, model.device());
    let t = std::time::Instant::now();
    let rep = train(
        &mut model,
        &tr,
        &TrainOptions {
            epochs,
            batch_size: 16,
            learning_rate: lr,
            seed: 1,
            ..Default::default()
        },
        None,
    );
    println!("{:?}", rep.epoch_kl.iter().step_by(5).collect::<Vec<_>>());
    let m = model.evaluate(&te);
    let trm = model.evaluate(&tr);
    let prior = label_prior_metrics(
        test_set.samples.iter().map(|s| s.label.as_slice()),
        &train_set.label_prior(),
    );
    println!(
        "test kl {:.4} train kl {:.4} prior {:.4} time {:?}",
        m.kl,
        trm.kl,
        prior.kl,
        t.elapsed()
    );
}
