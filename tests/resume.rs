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
        let parts = [
            ("model", self.model.state_dict()),
            ("optimizer", self.opt.state_dict()),
            ("scheduler", self.sched.state_dict()),
        ];
        parts
            .into_iter()
            .flat_map(|(part, entries): (&str, StateDict)| {
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

/// A small run with every kind of state (BatchNorm's i64 counter, Adam's step and moments,
/// a scheduler), after one step. Draws weights: call it with the generator locked.
fn small_run() -> (Sequential<(Linear, BatchNorm1d)>, Adam, StepLr) {
    let model = sequential![Linear::new(3, 2), BatchNorm1d::new(2)];
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::default()).expect("adam");
    let sched = StepLr::new(&opt, 2, 0.5).expect("step lr");
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0], &[2, 3]);
    model.forward(&x).sum().backward();
    opt.step();
    (model, opt, sched)
}

fn small_checkpoint(name: &str) -> (std::path::PathBuf, StateDict) {
    let (model, opt, sched) = small_run();
    let path = torchlet::serialize::temp_path(name);
    TrainingCheckpoint::capture(&model, &opt, Some(&sched), 1, SEED)
        .save(&path)
        .expect("save");
    let entries = torchlet::serialize::load_file(&path).expect("load_file");
    (path, entries)
}

/// Writes `entries` to `path` and restores them into a fresh small run.
fn restore_entries(path: &std::path::Path, entries: &StateDict) -> torchlet::Result<()> {
    torchlet::serialize::save_file(entries, path)?;
    let ckpt = TrainingCheckpoint::load(path)?;
    let (mut model, mut opt, mut sched) = small_run();
    ckpt.restore(&mut model, &mut opt, Some(&mut sched))
}

#[test]
fn mis_shaped_and_mistyped_entries_are_errors_naming_the_file_and_key() {
    let _rng = lock_rng();
    let (path, good) = small_checkpoint("resume-entries.safetensors");
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let vector = Tensor::from_vec(vec![3.0f64, 4.0], &[2]);
    let cases: Vec<(&str, Tensor, &str)> = vec![
        (
            "optimizer.state.0.weight.step",
            vector.clone(),
            "`state.0.weight.step` must be a scalar (shape []), got float64 of shape [2]",
        ),
        (
            "optimizer.param_groups.0.lr",
            vector.clone(),
            "`param_groups.0.lr` must be a scalar (shape []), got float64 of shape [2]",
        ),
        (
            "optimizer.state.0.weight.group",
            Tensor::from_vec(vec![-1i64], &[]),
            "`state.0.weight.group` is -1; expected a non-negative whole number",
        ),
        (
            "optimizer.state.0.weight.exp_avg",
            Tensor::from_vec(vec![1i64; 6], &[2, 3]),
            "`state.0.weight.exp_avg` holds int64 where float32 belongs",
        ),
        (
            "optimizer.param_groups.0.betas.0",
            Tensor::from_vec(vec![f64::NAN], &[]),
            "`param_groups.0.betas.0` is NaN; expected a finite number",
        ),
        (
            "scheduler.last_epoch",
            vector.clone(),
            "`last_epoch` must be a scalar (shape []), got float64 of shape [2]",
        ),
        (
            "scheduler.base_lrs",
            Tensor::from_vec(vec![0.1f64, 0.1], &[2]),
            "`base_lrs` has shape [2]; expected [1]",
        ),
        (
            "model.0.weight",
            Tensor::from_vec(vec![1i64; 6], &[2, 3]),
            "dtype mismatch for 0.weight: copying a param of dtype int64 from checkpoint, the \
             dtype in current model is float32",
        ),
        (
            "meta.epoch",
            Tensor::from_vec(vec![-3i64], &[]),
            "`meta.epoch` is -3; an epoch count is never negative",
        ),
        (
            "meta.epoch",
            Tensor::from_vec(vec![1i64, 2], &[2]),
            "`meta.epoch` must be one i64 value of shape [], got int64 of shape [2]",
        ),
    ];
    for (key, value, want) in cases {
        let mut entries = good.clone();
        entries.insert(key, value);
        let err = restore_entries(&path, &entries).expect_err(key).to_string();
        assert!(err.contains(&file), "{key}: the error names no file: {err}");
        assert!(err.contains(want), "{key}: expected {want:?} in {err:?}");
    }
    restore_entries(&path, &good).expect("the unchanged checkpoint restores");
    std::fs::remove_file(&path).ok();
}

/// A small xorshift generator: the fuzz loop is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A tensor of random dtype, shape and values, sometimes shaped like `like`.
fn random_tensor(rng: &mut Rng, like: &Tensor) -> Tensor {
    const VALUES: [f64; 10] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        0.5,
        1.0,
        3.0,
        1e300,
        -9.3e18,
    ];
    let shape: Vec<usize> = match rng.below(4) {
        0 => like.shape(),
        1 => vec![],
        2 => vec![rng.below(4)],
        _ => {
            let mut s = like.shape();
            s.insert(0, 1);
            s
        }
    };
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| VALUES[rng.below(VALUES.len())]).collect();
    match rng.below(3) {
        0 => Tensor::from_vec(values, &shape),
        1 => Tensor::from_vec(values.iter().map(|&v| v as f32).collect(), &shape),
        _ => Tensor::from_vec(values.iter().map(|&v| v as i64).collect(), &shape),
    }
}

#[test]
fn checkpoints_with_mutated_values_and_shapes_restore_or_fail_but_never_panic() {
    let _rng = lock_rng();
    let (path, good) = small_checkpoint("resume-fuzz.safetensors");
    let keys: Vec<String> = good.keys().cloned().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut errors, mut restored) = (0, 0);
    for round in 0..300 {
        let mut entries = good.clone();
        for _ in 0..1 + rng.below(3) {
            let key = &keys[rng.below(keys.len())];
            match rng.below(5) {
                0 => {
                    entries = entries.into_iter().filter(|(k, _)| k != key).collect();
                }
                1 => {
                    let extra = format!("{key}.extra");
                    entries.insert(extra, Tensor::zeros(&[1]));
                }
                2 => {
                    let like = good.get(key).expect("key").clone();
                    let t = like.to_vec::<f64>();
                    let n = t.len();
                    entries.insert(key.clone(), Tensor::from_vec(t, &[n]));
                }
                _ => {
                    let like = good.get(key).expect("key").clone();
                    entries.insert(key.clone(), random_tensor(&mut rng, &like));
                }
            }
        }
        let outcome = std::panic::catch_unwind(|| restore_entries(&path, &entries));
        match outcome {
            Ok(Ok(())) => restored += 1,
            Ok(Err(e)) => {
                errors += 1;
                assert!(
                    e.to_string().contains("resume-fuzz.safetensors"),
                    "round {round}: the error names no file: {e}"
                );
            }
            Err(_) => panic!("round {round}: restoring panicked; entries {entries:?}"),
        }
    }
    std::fs::remove_file(&path).ok();
    assert!(
        errors > 100 && restored > 0,
        "{errors} errors, {restored} restored"
    );
}

#[test]
fn a_failed_restore_leaves_the_run_as_it_was() {
    let _rng = lock_rng();
    let (path, mut entries) = small_checkpoint("resume-atomic.safetensors");
    // The model and optimizer parts are sound; the scheduler's epoch is not.
    entries.insert("scheduler.last_epoch", Tensor::from_vec(vec![0.5f64], &[]));
    torchlet::serialize::save_file(&entries, &path).expect("save");
    let ckpt = TrainingCheckpoint::load(&path).expect("load");
    std::fs::remove_file(&path).ok();
    let (mut model, mut opt, mut sched) = small_run();
    let values = |sd: StateDict| -> Vec<(String, Vec<f64>)> {
        sd.iter()
            .map(|(k, t)| (k.clone(), t.to_vec::<f64>()))
            .collect()
    };
    let before = (values(model.state_dict()), values(opt.state_dict()));
    let err = ckpt
        .restore(&mut model, &mut opt, Some(&mut sched))
        .expect_err("bad scheduler part")
        .to_string();
    assert!(
        err.contains("`last_epoch` is 0.5; expected a whole number from -1 on"),
        "{err}"
    );
    let after = (values(model.state_dict()), values(opt.state_dict()));
    assert!(before == after, "the model or the optimizer changed");
}
