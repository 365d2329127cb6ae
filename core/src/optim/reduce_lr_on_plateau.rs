//! ReduceLROnPlateau (PyTorch's `torch.optim.lr_scheduler.ReduceLROnPlateau`): lowers the
//! learning rate when a watched metric stops improving.

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::optim::lr_scheduler::Base;
use crate::state_dict::StateDict;

/// Whether the watched metric should go down (a loss) or up (an accuracy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlateauMode {
    #[default]
    /// Lower the rate when the metric stops going down (PyTorch's `mode="min"`).
    Min,
    /// Lower the rate when the metric stops going up (PyTorch's `mode="max"`).
    Max,
}

/// How `threshold` defines a significant improvement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThresholdMode {
    /// Better than `best · (1 ∓ threshold)` (PyTorch's `"rel"`, the default).
    #[default]
    Rel,
    /// Better than `best ∓ threshold` (`"abs"`).
    Abs,
}

/// The options of [`ReduceLrOnPlateau`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceLrOnPlateauConfig {
    /// Minimize or maximize the metric (default `Min`).
    pub mode: PlateauMode,
    /// The learning rate is multiplied by this on a plateau (default 0.1; must be < 1).
    pub factor: f64,
    /// Epochs without improvement tolerated before reducing (default 10).
    pub patience: usize,
    /// The smallest change that counts as an improvement (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default relative).
    pub threshold_mode: ThresholdMode,
    /// Epochs to wait after a reduction before counting bad epochs again (default 0).
    pub cooldown: usize,
    /// The learning rate never goes below this (default 0).
    pub min_lr: f64,
    /// Reductions smaller than this are skipped (default 1e-8).
    pub eps: f64,
}

impl Default for ReduceLrOnPlateauConfig {
    fn default() -> ReduceLrOnPlateauConfig {
        ReduceLrOnPlateauConfig {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Lowers the learning rate by `factor` when the metric passed to
/// [`step`](ReduceLrOnPlateau::step) has not improved for `patience` epochs (PyTorch's
/// `ReduceLROnPlateau`). Unlike the other schedulers its `step` takes the metric, so it does
/// not implement [`LrScheduler`](crate::optim::LrScheduler).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{Optimizer, ReduceLrOnPlateau, ReduceLrOnPlateauConfig, Sgd, SgdConfig}};
/// let w = Tensor::zeros(&[1]).requires_grad_(true);
/// let mut opt = Sgd::new([&w], SgdConfig { lr: 1.0, ..Default::default() })?;
/// let config = ReduceLrOnPlateauConfig { patience: 1, factor: 0.5, ..Default::default() };
/// let mut sched = ReduceLrOnPlateau::new(&opt, config)?;
/// for val_loss in [1.0, 1.0, 1.0] {
///     opt.step();
///     sched.step(val_loss);
/// }
/// assert_eq!(opt.lr(), 0.5);
/// # Ok::<(), torchlet::Error>(())
/// ```
#[doc(alias = "ReduceLROnPlateau")]
#[derive(Clone, Debug)]
pub struct ReduceLrOnPlateau {
    base: Base,
    config: ReduceLrOnPlateauConfig,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// A plateau detector over `opt`'s param groups.
    ///
    /// # Errors
    /// If `factor` is not below 1.0 or `min_lr` is negative.
    pub fn new(opt: &dyn Optimizer, config: ReduceLrOnPlateauConfig) -> Result<ReduceLrOnPlateau> {
        if config.factor.is_nan() || config.factor >= 1.0 {
            return Err(Error::Config(format!(
                "ReduceLrOnPlateau: factor must be < 1.0 to reduce the learning rate, got {}",
                config.factor
            )));
        }
        if config.min_lr.is_nan() || config.min_lr < 0.0 {
            return Err(Error::Config(format!(
                "ReduceLrOnPlateau: min_lr must be non-negative, got {}",
                config.min_lr
            )));
        }
        let mut base = Base::new("ReduceLrOnPlateau", opt);
        base.last_epoch = 0;
        Ok(ReduceLrOnPlateau {
            base,
            config,
            best: worst(config.mode),
            num_bad_epochs: 0,
            cooldown_counter: 0,
        })
    }

    fn is_better(&self, a: f64) -> bool {
        let (t, best) = (self.config.threshold, self.best);
        match (self.config.mode, self.config.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    /// Records the epoch's `metric` and reduces the learning rate after `patience` epochs
    /// without improvement.
    pub fn step(&mut self, metric: f64) {
        self.base.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience {
            for g in &self.base.groups {
                let old = g.lr();
                let new = (old * self.config.factor).max(self.config.min_lr);
                if old - new > self.config.eps {
                    g.store_lr(new);
                }
            }
            self.cooldown_counter = self.config.cooldown;
            self.num_bad_epochs = 0;
        }
        self.base.last_lr = self.base.groups.iter().map(|g| g.lr()).collect();
    }

    /// The learning rate of each param group after the last step.
    pub fn get_last_lr(&self) -> Vec<f64> {
        self.base.last_lr.clone()
    }

    /// The number of `step` calls.
    pub fn last_epoch(&self) -> i64 {
        self.base.last_epoch
    }

    /// The best metric so far, the bad-epoch and cooldown counters and the epoch counter,
    /// as named f64 tensors.
    pub fn state_dict(&self) -> StateDict {
        self.base.state_dict(&[
            ("best", self.best),
            ("num_bad_epochs", self.num_bad_epochs as f64),
            ("cooldown_counter", self.cooldown_counter as f64),
        ])
    }

    /// Restores a [`state_dict`](ReduceLrOnPlateau::state_dict).
    ///
    /// # Errors
    /// As [`LrScheduler::load_state_dict`](crate::optim::LrScheduler::load_state_dict);
    /// the counters must be non-negative whole numbers.
    pub fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let counter = |key: &str| {
            state
                .count(key)
                .map_err(|e| Error::Config(format!("ReduceLrOnPlateau.load_state_dict: {e}")))
                .map(|c| usize::try_from(c.unwrap_or(0)).unwrap_or(usize::MAX))
        };
        let (num_bad_epochs, cooldown_counter) =
            (counter("num_bad_epochs")?, counter("cooldown_counter")?);
        let extra = self
            .base
            .load_state_dict(state, &["best", "num_bad_epochs", "cooldown_counter"])?;
        self.best = extra[0];
        self.num_bad_epochs = num_bad_epochs;
        self.cooldown_counter = cooldown_counter;
        Ok(())
    }
}

fn worst(mode: PlateauMode) -> f64 {
    match mode {
        PlateauMode::Min => f64::INFINITY,
        PlateauMode::Max => f64::NEG_INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Sgd, SgdConfig};
    use crate::tensor::Tensor;

    #[test]
    fn plateau_in_max_mode_waits_out_the_cooldown() {
        let w = Tensor::zeros(&[1]).requires_grad_(true);
        let opt = Sgd::new(
            [w],
            SgdConfig {
                lr: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        let config = ReduceLrOnPlateauConfig {
            mode: PlateauMode::Max,
            patience: 0,
            cooldown: 1,
            factor: 0.5,
            ..Default::default()
        };
        let mut s = ReduceLrOnPlateau::new(&opt, config).unwrap();
        let lrs: Vec<f64> = [0.5, 0.4, 0.4, 0.4]
            .iter()
            .map(|&m| {
                s.step(m);
                opt.lr()
            })
            .collect();
        // better; bad → reduce (cooldown 1); cooldown swallows the bad epoch; bad → reduce
        assert_eq!(lrs, [1.0, 0.5, 0.5, 0.25]);
    }
}
