//! Training checkpoints: a run stopped after an epoch, saved, rebuilt from scratch and
//! resumed ends with the same bits as the run that never stopped; broken checkpoint files
//! give errors that name them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use torchlet::checkpoint::{TrainingCheckpoint, seed_epoch};
use torchlet::data::{DataLoader, MNIST_MEAN, MNIST_STD, Mnist, TensorDataset};
use torchlet::nn::functional::cross_entropy;
use torchlet::optim::{Adam, AdamConfig, LrScheduler, Optimizer, StepLr};
use torchlet::prelude::*;

/// The tests share the global generator (weight init, dropout): one at a time, so that no
/// test draws from it in the middle of another's epoch.
static RNG: Mutex<()> = Mutex::new(());

fn lock_rng() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(PoisonError::into_inner)
}

const SEED: u64 = 7;
const EPOCHS: u64 = 3;

/// Everything a run holds: dropout (the global generator), batch norm (buffers), Adam (state
/// per parameter), a scheduler and a shuffling loader with a worker thread.
struct Run {
    model: Box<dyn Layer>,
    opt: Adam,
    sched: StepLr,
    loader: DataLoader<TensorDataset<(Tensor, Tensor)>>,
}

fn build(init_seed: u64) -> Run {
    let mnist = Mnist::vendored(true)
        .expect("vendored MNIST")
        .normalize(MNIST_MEAN, MNIST_STD)
        .flatten(true);
    let n = 640;
    let data = TensorDataset::new((
        mnist.images().narrow(0, 0, n),
        mnist.labels().narrow(0, 0, n),
    ))
    .expect("dataset");
    let loader = DataLoader::builder(data)
        .batch_size(64)
        .shuffle(true)
        .seed(SEED)
        .num_workers(1)
        .build()
        .expect("loader");
    manual_seed(init_seed);
    let model: Box<dyn Layer> = Box::new(sequential![
        Linear::new(784, 32),
        BatchNorm1d::new(32),
        ReLU,
        Dropout::new(0.2),
        Linear::new(32, 10)
    ]);
    let config = AdamConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let opt = Adam::new(model.named_parameters(), config).expect("adam");
    let sched = StepLr::new(&opt, 1, 0.5).expect("step lr");
    Run {
        model,
        opt,
        sched,
        loader,
    }
}

impl Run {
    fn train(&mut self, epochs: std::ops::Range<u64>) {
        self.model.train();
        for epoch in epochs {
            seed_epoch(SEED, epoch);
            self.loader.set_epoch(epoch);
            for (xb, yb) in &self.loader {
                let loss = cross_entropy(&self.model.forward(&xb), &yb);
                loss.backward();
                self.opt.step();
                self.opt.zero_grad();
            }
            self.sched.step();
        }
    }

    /// Every value of the model, the optimizer and the scheduler, as bits.
    fn fingerprint(&self) -> Vec<(String, Vec<u64>)> {
        let bits = |t: &Tensor| t.to_vec::<f64>().iter().map(|v| v.to_bits()).collect();
        let model = self.model.state_dict();
        let parts = [
            (
                "model",
                model.iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
            ),
            ("optimizer", self.opt.state_dict()),
            ("scheduler", self.sched.state_dict()),
        ];
        parts
            .into_iter()
            .flat_map(|(part, entries): (&str, Vec<(String, Tensor)>)| {
                entries
                    .into_iter()
                    .map(move |(k, t)| (format!("{part}.{k}"), bits(&t)))
            })
            .collect()
    }
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let _rng = lock_rng();
    let mut straight = build(0);
    straight.train(0..EPOCHS);

    let path = torchlet::serialize::temp_path("resume.safetensors");
    {
        let mut first = build(0);
        first.train(0..1);
        TrainingCheckpoint::capture(&first.model, &first.opt, Some(&first.sched), 1, SEED)
            .save(&path)
            .expect("save checkpoint");
    }
    // Another init seed: every value must come from the checkpoint.
    let mut resumed = build(99);
    let ckpt = TrainingCheckpoint::load(&path).expect("load checkpoint");
    std::fs::remove_file(&path).ok();
    ckpt.restore(
        &mut resumed.model,
        &mut resumed.opt,
        Some(&mut resumed.sched),
    )
    .expect("restore");
    assert_eq!((ckpt.epoch, ckpt.seed), (1, SEED));
    resumed.train(ckpt.epoch..EPOCHS);

    let (a, b) = (straight.fingerprint(), resumed.fingerprint());
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(k, _)| k.ends_with("running_mean")));
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(
            va == vb,
            "{ka} differs between the straight and the resumed run"
        );
    }
}

fn saved_checkpoint(name: &str) -> std::path::PathBuf {
    let _rng = lock_rng();
    let run = build(0);
    let path = torchlet::serialize::temp_path(name);
    TrainingCheckpoint::capture(&run.model, &run.opt, Some(&run.sched), 1, SEED)
        .save(&path)
        .expect("save checkpoint");
    path
}

#[test]
fn truncated_checkpoint_is_an_error_naming_the_file() {
    let path = saved_checkpoint("resume-truncated.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = TrainingCheckpoint::load(&path).expect_err("truncated file");
    std::fs::remove_file(&path).ok();
    let msg = err.to_string();
    assert!(msg.contains("resume-truncated.safetensors"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn corrupt_checkpoint_is_an_error_naming_the_file() {
    let path = saved_checkpoint("resume-corrupt.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &bytes).expect("corrupt");
    let err = TrainingCheckpoint::load(&path).expect_err("corrupt header");
    std::fs::remove_file(&path).ok();
    let msg = err.to_string();
    assert!(msg.contains("resume-corrupt.safetensors"), "{msg}");
}

#[test]
fn missing_checkpoint_is_an_error_naming_the_file() {
    let path = torchlet::serialize::temp_path("resume-missing.safetensors");
    let err = TrainingCheckpoint::load(&path).expect_err("no such file");
    assert!(
        err.to_string().contains("resume-missing.safetensors"),
        "{err}"
    );
}

#[test]
fn checkpoint_of_another_model_lists_the_keys_that_do_not_fit() {
    let path = saved_checkpoint("resume-other-model.safetensors");
    let ckpt = TrainingCheckpoint::load(&path).expect("load");
    std::fs::remove_file(&path).ok();
    let _rng = lock_rng();
    let mut other = sequential![Linear::new(784, 10)];
    let mut opt = Adam::new(other.named_parameters(), AdamConfig::default()).expect("adam");
    let err = ckpt
        .restore(&mut other, &mut opt, None)
        .expect_err("another model");
    let msg = err.to_string();
    assert!(msg.contains("Unexpected key(s)"), "{msg}");
    assert!(msg.contains("4.weight"), "{msg}");
}
