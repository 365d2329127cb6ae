//! Training checkpoints: the model, optimizer and scheduler state and the epoch in one
//! safetensors file, so that a run can stop after any epoch and resume to the result of an
//! uninterrupted run.
//!
//! # NOTE [ Training checkpoint layout ]
//! PyTorch users save `{'model': model.state_dict(), 'optimizer': opt.state_dict(), …}` with
//! `torch.save`. safetensors holds one flat map of tensors, so the parts are told apart by
//! the first key segment:
//! - `model.{key}`: the model's state dict under PyTorch's names (`model.0.weight`), so
//!   `{k[6:]: v for k, v in load_file(path).items() if k.startswith('model.')}` loads into
//!   the same model written with PyTorch;
//! - `optimizer.{key}`: [`Optimizer::state_dict`];
//! - `scheduler.{key}`: [`LrScheduler::state_dict`], absent without a scheduler;
//! - `meta.epoch` (i64: the number of finished epochs), `meta.seed` (i64, the run's seed's
//!   bits) and `meta.{name}` for whatever else the program keeps (metrics so far, …).
//!
//! # NOTE [ Resuming draws the same numbers ]
//! A resumed run must draw what the uninterrupted run drew. The loader's order depends only
//! on `(seed, epoch)` (`DataLoader::set_epoch`); dropout and every other draw from the
//! global generator are made to depend on `(seed, epoch)` too by reseeding it at the start
//! of each epoch with [`seed_epoch`]. Checkpoints are taken between epochs, so nothing else
//! needs to be stored.

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::{LrScheduler, Optimizer};
use crate::serialize;
use crate::state_dict::StateDict;
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Everything a training run needs to continue after an epoch, as PyTorch's usual
/// `{'model': …, 'optimizer': …, 'scheduler': …, 'epoch': …}` dict. See NOTE [ Training
/// checkpoint layout ]; the guide (`torchlet::guide`) has a run stopped and resumed to the
/// same bits as one that never stopped.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::checkpoint::{TrainingCheckpoint, seed_epoch};
/// use torchlet::nn::{Linear, Module};
/// use torchlet::optim::{Adam, AdamConfig, Optimizer};
///
/// let seed = 0;
/// let mut model = Linear::new(4, 2);
/// let mut opt = Adam::new(model.named_parameters(), AdamConfig::default())?;
/// let path = std::env::temp_dir().join(format!("doc-checkpoint-{}.safetensors", std::process::id()));
/// // After 3 finished epochs:
/// TrainingCheckpoint::capture(&model, &opt, None, 3, seed).save(&path)?;
///
/// // Resuming, in a later process: build the model and optimizer as before, then restore.
/// let ckpt = TrainingCheckpoint::load(&path)?;
/// ckpt.restore(&mut model, &mut opt, None)?;
/// assert_eq!((ckpt.epoch, ckpt.seed), (3, seed));
/// for epoch in ckpt.epoch..5 {
///     seed_epoch(ckpt.seed, epoch); // and `loader.set_epoch(epoch)`
///     // … one epoch of training, then a new checkpoint with `epoch + 1` …
/// }
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TrainingCheckpoint {
    /// The model's state dict (parameters and buffers).
    pub model: StateDict,
    /// The optimizer's [`state_dict`](Optimizer::state_dict).
    pub optimizer: StateDict,
    /// The scheduler's [`state_dict`](LrScheduler::state_dict); empty without one.
    pub scheduler: StateDict,
    /// The number of finished epochs: the epoch a resumed run starts with.
    pub epoch: u64,
    /// The run's seed (see NOTE [ Resuming draws the same numbers ]).
    pub seed: u64,
    /// Anything else the program keeps, saved under `meta.{name}`.
    pub meta: StateDict,
    /// The file it was read from ([`load`](Self::load)), named by the errors of
    /// [`restore`](Self::restore); `None` for a checkpoint captured in memory.
    pub source: Option<PathBuf>,
}

impl TrainingCheckpoint {
    /// Copies the current state of a run after `epoch` finished epochs.
    pub fn capture(
        model: &dyn Module,
        optimizer: &dyn Optimizer,
        scheduler: Option<&dyn LrScheduler>,
        epoch: u64,
        seed: u64,
    ) -> TrainingCheckpoint {
        // state_dict() hands out the module's own tensors; copy them so that later steps do
        // not change the checkpoint.
        TrainingCheckpoint {
            model: copy_of(&model.state_dict()),
            optimizer: optimizer.state_dict(),
            scheduler: scheduler.map(LrScheduler::state_dict).unwrap_or_default(),
            epoch,
            seed,
            meta: StateDict::new(),
            source: None,
        }
    }

    /// Adds `meta.{name}` (e.g. the metrics of the finished epochs).
    pub fn with_meta(mut self, name: impl Into<String>, tensor: Tensor) -> TrainingCheckpoint {
        self.meta.insert(name, tensor);
        self
    }

    /// The tensor saved as `meta.{name}`, if any.
    pub fn meta(&self, name: &str) -> Option<&Tensor> {
        self.meta.get(name)
    }

    /// Writes the checkpoint to `path` atomically (NOTE [ Checkpoint writes ] in
    /// [`serialize`]): a crash leaves the previous file whole.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut out = StateDict::new();
        out.insert_prefixed("model", &self.model);
        out.insert_prefixed("optimizer", &self.optimizer);
        out.insert_prefixed("scheduler", &self.scheduler);
        out.insert_prefixed("meta", &self.meta);
        let epoch = i64::try_from(self.epoch).map_err(|_| {
            Error::Config(format!(
                "TrainingCheckpoint::save: epoch {} does not fit the file's i64",
                self.epoch
            ))
        })?;
        out.insert("meta.epoch", Tensor::from_vec(vec![epoch], &[]));
        // The seed's 64 bits, as i64 (safetensors has no u64 that PyTorch reads).
        out.insert("meta.seed", Tensor::from_vec(vec![self.seed as i64], &[]));
        serialize::save_file(&out, path)
    }

    /// Reads a checkpoint written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file when it
    /// is truncated or corrupt, or is not a training checkpoint (a key outside the four
    /// parts, or no `meta.epoch`), e.g. a bare model state dict.
    pub fn load(path: impl AsRef<Path>) -> Result<TrainingCheckpoint> {
        let path = path.as_ref();
        let format_error = |message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut ckpt = TrainingCheckpoint {
            source: Some(path.to_path_buf()),
            ..TrainingCheckpoint::default()
        };
        let (mut epoch, mut seed) = (None, None);
        for (key, tensor) in serialize::load_file(path)? {
            let Some((prefix, rest)) = key.split_once('.') else {
                return Err(format_error(format!(
                    "key `{key}` has no `model.`, `optimizer.`, `scheduler.` or `meta.` prefix; \
                     is this a model state dict rather than a training checkpoint?"
                )));
            };
            let rest = rest.to_string();
            match (prefix, rest.as_str()) {
                ("model", _) => ckpt.model.insert(rest, tensor),
                ("optimizer", _) => ckpt.optimizer.insert(rest, tensor),
                ("scheduler", _) => ckpt.scheduler.insert(rest, tensor),
                ("meta", "epoch") => epoch = Some(epoch_of(&tensor, &key, path)?),
                ("meta", "seed") => seed = Some(seed_of(&tensor, &key, path)?),
                ("meta", _) => ckpt.meta.insert(rest, tensor),
                _ => {
                    return Err(format_error(format!(
                        "key `{key}`: unknown part `{prefix}`; a training checkpoint holds \
                         `model.`, `optimizer.`, `scheduler.` and `meta.` keys"
                    )));
                }
            }
        }
        ckpt.epoch = epoch.ok_or_else(|| {
            format_error(
                "no `meta.epoch`: not a training checkpoint (a model state dict loads with \
                 `torchlet::serialize::load_into`)"
                    .to_string(),
            )
        })?;
        ckpt.seed = seed.unwrap_or_default();
        Ok(ckpt)
    }

    /// Puts the saved state into a freshly built run: the model's parameters and buffers,
    /// the optimizer's state and learning rates, and the scheduler's counters.
    ///
    /// Every entry is checked before it is used (see NOTE [ Restoring untrusted state ] in
    /// `state_dict.rs`), and the run is left as it was when any part fails: the model and
    /// the optimizer are put back from copies taken before.
    ///
    /// # Errors
    /// The errors of [`Module::load_state_dict`] (strict: every missing, unexpected and
    /// mis-shaped key, and integer tensors for float ones), [`Optimizer::load_state_dict`]
    /// and [`LrScheduler::load_state_dict`], which name each key at fault; for a checkpoint
    /// read by [`load`](Self::load) they come as [`Error::Format`] naming the file and the
    /// part (`model`, `optimizer.`, `scheduler.`). [`Error::Config`] when the checkpoint has
    /// scheduler state but no scheduler is given, or the other way round.
    pub fn restore(
        &self,
        model: &mut dyn Module,
        optimizer: &mut dyn Optimizer,
        scheduler: Option<&mut dyn LrScheduler>,
    ) -> Result<()> {
        let in_file = |part: &str, e: Error| match &self.source {
            Some(path) => Error::Format {
                path: path.clone(),
                message: format!("{part}: {e}"),
            },
            None => e,
        };
        let model_before = copy_of(&model.state_dict());
        model
            .load_state_dict(&self.model, true)
            .map_err(|e| in_file("model (keys `model.*`)", e))?;
        let optimizer_before = optimizer.state_dict();
        let rest = optimizer
            .load_state_dict(&self.optimizer)
            .map_err(|e| in_file("optimizer (keys `optimizer.*`)", e))
            .and_then(|()| self.restore_scheduler(scheduler, &in_file));
        if rest.is_err() {
            // Both were taken from these very objects a moment ago: they load.
            let _ = model.load_state_dict(&model_before, true);
            let _ = optimizer.load_state_dict(&optimizer_before);
        }
        rest
    }

    fn restore_scheduler(
        &self,
        scheduler: Option<&mut dyn LrScheduler>,
        in_file: &dyn Fn(&str, Error) -> Error,
    ) -> Result<()> {
        match (scheduler, self.scheduler.is_empty()) {
            (Some(s), false) => s
                .load_state_dict(&self.scheduler)
                .map_err(|e| in_file("scheduler (keys `scheduler.*`)", e)),
            (None, true) => Ok(()),
            (Some(_), true) => Err(Error::Config(
                "the checkpoint has no scheduler state but the run has a scheduler; resume with \
                 the scheduler it was saved with"
                    .to_string(),
            )),
            (None, false) => Err(Error::Config(
                "the checkpoint has scheduler state but the run has no scheduler; resume with \
                 the scheduler it was saved with"
                    .to_string(),
            )),
        }
    }
}

/// A copy of `sd` that later changes of its tensors do not reach.
fn copy_of(sd: &StateDict) -> StateDict {
    sd.iter()
        .map(|(k, t)| (k.clone(), t.detach().contiguous_copy()))
        .collect()
}

fn format_error(path: &Path, key: &str, what: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: format!("`{key}` {what}"),
    }
}

/// `meta.epoch`: a non-negative i64 scalar.
fn epoch_of(t: &Tensor, key: &str, path: &Path) -> Result<u64> {
    let value = int_scalar(t, key, path)?;
    u64::try_from(value).map_err(|_| {
        format_error(
            path,
            key,
            format!("is {value}; an epoch count is never negative"),
        )
    })
}

/// `meta.seed`: an i64 scalar holding the seed's 64 bits.
fn seed_of(t: &Tensor, key: &str, path: &Path) -> Result<u64> {
    int_scalar(t, key, path).map(|v| v as u64)
}

fn int_scalar(t: &Tensor, key: &str, path: &Path) -> Result<i64> {
    if !t.shape().is_empty() || t.dtype().is_float() {
        return Err(format_error(
            path,
            key,
            format!(
                "must be one i64 value of shape [], got {} of shape {:?}",
                t.dtype(),
                t.shape()
            ),
        ));
    }
    Ok(t.to_vec::<i64>()[0])
}

/// Seeds the global generator for epoch `epoch` of a run seeded with `seed`, so that dropout
/// and every other draw of that epoch depend on `(seed, epoch)` only. Call it at the start
/// of each epoch. See NOTE [ Resuming draws the same numbers ].
pub fn seed_epoch(seed: u64, epoch: u64) {
    // SplitMix64's increment spreads consecutive epochs over the seed space.
    crate::manual_seed(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use crate::optim::{Sgd, SgdConfig, StepLr};

    #[test]
    fn round_trip_keeps_every_part_and_the_prefixes() {
        let model = Linear::new(3, 2);
        let opt = Sgd::new(model.named_parameters(), SgdConfig::default()).expect("sgd");
        let sched = StepLr::new(&opt, 2, 0.5).expect("step lr");
        let path = serialize::temp_path("ckpt-round-trip.safetensors");
        let ckpt = TrainingCheckpoint::capture(&model, &opt, Some(&sched), 7, 42)
            .with_meta("history", Tensor::from_vec(vec![1.0f64, 2.0], &[2]));
        ckpt.save(&path).expect("save");
        let keys: Vec<String> = serialize::load_file(&path)
            .expect("load_file")
            .keys()
            .cloned()
            .collect();
        assert!(keys.iter().any(|k| k == "model.weight"), "{keys:?}");
        assert!(keys.iter().any(|k| k.starts_with("scheduler.")), "{keys:?}");
        let back = TrainingCheckpoint::load(&path).expect("load");
        std::fs::remove_file(&path).ok();
        assert_eq!((back.epoch, back.seed), (7, 42));
        assert_eq!(back.model.len(), 2);
        assert_eq!(back.optimizer.len(), ckpt.optimizer.len());
        assert_eq!(back.scheduler.len(), ckpt.scheduler.len());
        assert_eq!(
            back.meta("history").map(|t| t.to_vec::<f64>()),
            Some(vec![1.0, 2.0])
        );
    }

    #[test]
    fn a_model_state_dict_is_not_a_training_checkpoint() {
        let path = serialize::temp_path("ckpt-bare-model.safetensors");
        serialize::save(&Linear::new(2, 2), &path).expect("save");
        let err = TrainingCheckpoint::load(&path).expect_err("bare state dict");
        std::fs::remove_file(&path).ok();
        let msg = err.to_string();
        assert!(msg.contains("ckpt-bare-model.safetensors"), "{msg}");
        assert!(msg.contains("model state dict"), "{msg}");
    }
}
