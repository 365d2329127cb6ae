//! Learning-rate schedulers (PyTorch's `torch.optim.lr_scheduler`): the [`LrScheduler`]
//! trait and the epoch-based schedules StepLR, MultiStepLR, ExponentialLR,
//! CosineAnnealingLR and LinearLR. OneCycleLR and ReduceLROnPlateau have files of their own.
//!
//! NOTE [ Schedulers share the learning rate ]
//! A scheduler holds the optimizer's [`GroupRates`] (shared cells), not the optimizer, so
//! the loop reads as in PyTorch, with both used side by side:
//! `opt.step(); sched.step();`. Each `step()` computes the next learning rate from the
//! current one the way PyTorch's `get_lr()` does (the "chainable" form), so a manual
//! `set_lr` or a second scheduler composes as it does in PyTorch, and values match
//! PyTorch's to rounding.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::optim::{GroupRates, Optimizer};
use crate::state_dict::StateDict;
use crate::tensor::Tensor;

/// A schedule for the learning rate of an optimizer's param groups, stepped once per epoch
/// (or per batch, for OneCycleLR) after `opt.step()`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{LrScheduler, Optimizer, Sgd, SgdConfig, StepLr}};
/// let w = Tensor::zeros(&[1]).requires_grad_(true);
/// let mut opt = Sgd::new([&w], SgdConfig { lr: 0.1, ..Default::default() })?;
/// let mut sched = StepLr::new(&opt, 2, 0.5)?;
/// let mut lrs = vec![];
/// for _epoch in 0..5 {
///     lrs.push(opt.lr());
///     opt.step();
///     sched.step();
/// }
/// assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
/// # Ok::<(), torchlet::Error>(())
/// ```
pub trait LrScheduler {
    /// Advances one epoch and sets the param groups' learning rates for it.
    fn step(&mut self);

    /// The learning rate of each param group set by the last `step` (or construction).
    fn get_last_lr(&self) -> Vec<f64>;

    /// The number of `step` calls since construction (PyTorch's `last_epoch`).
    fn last_epoch(&self) -> i64;

    /// The epoch counter and learning rates as named f64 tensors (`last_epoch`,
    /// `base_lrs`, `last_lr`, plus what the schedule keeps), for a checkpoint. The
    /// optimizer's own state dict restores the group learning rates.
    fn state_dict(&self) -> StateDict;

    /// Restores a [`state_dict`](LrScheduler::state_dict).
    ///
    /// # Errors
    /// [`Error::Config`] when a key is missing or unexpected, or an entry has the wrong
    /// shape or an impossible value (a vector where a scalar belongs, a fractional epoch, a
    /// negative or NaN learning rate), each named by its key; nothing is changed then. See
    /// NOTE [ Restoring untrusted state ].
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;
}

/// What every scheduler keeps: the groups' shared learning rates, their initial values,
/// the epoch counter and the last learning rates.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    name: &'static str,
    pub(crate) groups: Vec<GroupRates>,
    pub(crate) base_lrs: Vec<f64>,
    pub(crate) last_epoch: i64,
    pub(crate) last_lr: Vec<f64>,
}

impl Base {
    pub(crate) fn new(name: &'static str, opt: &dyn Optimizer) -> Base {
        let groups = opt.group_rates();
        let lrs: Vec<f64> = groups.iter().map(GroupRates::lr).collect();
        Base {
            name,
            groups,
            base_lrs: lrs.clone(),
            last_epoch: -1,
            last_lr: lrs,
        }
    }

    /// Moves to the next epoch, setting each group's lr to `next(epoch, lr, base_lr)`.
    pub(crate) fn advance(&mut self, next: impl Fn(i64, f64, f64) -> f64) {
        self.last_epoch += 1;
        for (i, g) in self.groups.iter().enumerate() {
            g.store_lr(next(self.last_epoch, g.lr(), self.base_lrs[i]));
        }
        self.last_lr = self.groups.iter().map(GroupRates::lr).collect();
    }

    pub(crate) fn state_dict(&self, extra: &[(&str, f64)]) -> StateDict {
        let n = self.groups.len();
        let mut out = StateDict::new();
        out.insert(
            "last_epoch",
            Tensor::from_vec(vec![self.last_epoch as f64], &[]),
        );
        out.insert("base_lrs", Tensor::from_vec(self.base_lrs.clone(), &[n]));
        out.insert("last_lr", Tensor::from_vec(self.last_lr.clone(), &[n]));
        for (k, v) in extra {
            out.insert(*k, Tensor::from_vec(vec![*v], &[]));
        }
        out
    }

    /// Restores the common state; `extra` receives the schedule's own scalars, named in
    /// `extra_names`, in that order (any value but NaN: a best metric may be infinite).
    pub(crate) fn load_state_dict(
        &mut self,
        state: &StateDict,
        extra_names: &[&str],
    ) -> Result<Vec<f64>> {
        let mut known = vec!["last_epoch", "base_lrs", "last_lr"];
        known.extend_from_slice(extra_names);
        let missing: Vec<&str> = known
            .iter()
            .copied()
            .filter(|k| !state.contains_key(k))
            .collect();
        let unexpected: Vec<&str> = state
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() || !unexpected.is_empty() {
            problems.push(format!(
                "missing keys {missing:?}, unexpected keys {unexpected:?}"
            ));
        }
        let n = self.groups.len();
        let mut lrs = |key: &str| match state.tensor_like(key, &[n], DType::F64) {
            Ok(Some(t)) => {
                let v = t.to_vec::<f64>();
                if v.iter().all(|lr| lr.is_finite() && *lr >= 0.0) {
                    v
                } else {
                    problems.push(format!(
                        "`{key}` holds {v:?}; learning rates are finite and non-negative"
                    ));
                    Vec::new()
                }
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                problems.push(format!("{e} (one learning rate per param group)"));
                Vec::new()
            }
        };
        let base_lrs = lrs("base_lrs");
        let last_lr = lrs("last_lr");
        let last_epoch = match state.scalar_f64("last_epoch") {
            Ok(Some(v)) if v >= -1.0 && v.fract() == 0.0 && v < 9e15 => v as i64,
            Ok(Some(v)) => {
                problems.push(format!(
                    "`last_epoch` is {v}; expected a whole number from -1 on"
                ));
                0
            }
            Ok(None) => 0,
            Err(e) => {
                problems.push(e.to_string());
                0
            }
        };
        let extra: Vec<f64> = extra_names
            .iter()
            .map(|k| match state.tensor_like(k, &[], DType::F64) {
                Ok(Some(t)) if !t.to_vec::<f64>()[0].is_nan() => t.to_vec::<f64>()[0],
                Ok(Some(_)) => {
                    problems.push(format!("`{k}` is NaN"));
                    0.0
                }
                Ok(None) => 0.0,
                Err(e) => {
                    problems.push(e.to_string());
                    0.0
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "{}.load_state_dict: {}",
                self.name,
                problems.join("; ")
            )));
        }
        self.last_epoch = last_epoch;
        self.base_lrs = base_lrs;
        self.last_lr = last_lr;
        Ok(extra)
    }
}

/// Implements the [`LrScheduler`] methods other than `step` through a `base: Base` field
/// and the schedule's extra state (`$extra` names the fields, kept as f64).
macro_rules! scheduler_common {
    () => {
        fn get_last_lr(&self) -> Vec<f64> {
            self.base.last_lr.clone()
        }
        fn last_epoch(&self) -> i64 {
            self.base.last_epoch
        }
        fn state_dict(&self) -> $crate::state_dict::StateDict {
            self.base.state_dict(&[])
        }
        fn load_state_dict(
            &mut self,
            state: &$crate::state_dict::StateDict,
        ) -> $crate::error::Result<()> {
            self.base.load_state_dict(state, &[]).map(drop)
        }
    };
}

/// Multiplies the learning rate by `gamma` every `step_size` epochs (PyTorch's `StepLR`).
#[doc(alias = "StepLR")]
#[derive(Clone, Debug)]
pub struct StepLr {
    base: Base,
    step_size: usize,
    gamma: f64,
}

impl StepLr {
    /// A schedule over `opt`'s param groups, starting from their current learning rates.
    ///
    /// # Errors
    /// If `step_size` is 0.
    pub fn new(opt: &dyn Optimizer, step_size: usize, gamma: f64) -> Result<StepLr> {
        if step_size == 0 {
            return Err(Error::Config(
                "StepLr: step_size must be at least 1, got 0".into(),
            ));
        }
        let mut s = StepLr {
            base: Base::new("StepLr", opt),
            step_size,
            gamma,
        };
        s.step();
        Ok(s)
    }
}

impl LrScheduler for StepLr {
    fn step(&mut self) {
        let (size, gamma) = (self.step_size as i64, self.gamma);
        self.base.advance(|e, lr, _| {
            if e == 0 || e % size != 0 {
                lr
            } else {
                lr * gamma
            }
        });
    }
    scheduler_common!();
}

/// Multiplies the learning rate by `gamma` at each milestone epoch (PyTorch's
/// `MultiStepLR`; a milestone listed twice multiplies twice).
#[doc(alias = "MultiStepLR")]
#[derive(Clone, Debug)]
pub struct MultiStepLr {
    base: Base,
    milestones: Vec<usize>,
    gamma: f64,
}

impl MultiStepLr {
    /// A schedule over `opt`'s param groups.
    ///
    /// # Errors
    /// Never for now; returns `Result` like every scheduler constructor.
    pub fn new(opt: &dyn Optimizer, milestones: &[usize], gamma: f64) -> Result<MultiStepLr> {
        let mut s = MultiStepLr {
            base: Base::new("MultiStepLr", opt),
            milestones: milestones.to_vec(),
            gamma,
        };
        s.step();
        Ok(s)
    }
}

impl LrScheduler for MultiStepLr {
    fn step(&mut self) {
        let (milestones, gamma) = (&self.milestones, self.gamma);
        self.base.advance(|e, lr, _| {
            let hits = milestones.iter().filter(|&&m| m as i64 == e).count();
            if hits == 0 {
                lr
            } else {
                lr * gamma.powi(hits as i32)
            }
        });
    }
    scheduler_common!();
}

/// Multiplies the learning rate by `gamma` every epoch (PyTorch's `ExponentialLR`).
#[doc(alias = "ExponentialLR")]
#[derive(Clone, Debug)]
pub struct ExponentialLr {
    base: Base,
    gamma: f64,
}

impl ExponentialLr {
    /// A schedule over `opt`'s param groups.
    ///
    /// # Errors
    /// Never for now; returns `Result` like every scheduler constructor.
    pub fn new(opt: &dyn Optimizer, gamma: f64) -> Result<ExponentialLr> {
        let mut s = ExponentialLr {
            base: Base::new("ExponentialLr", opt),
            gamma,
        };
        s.step();
        Ok(s)
    }
}

impl LrScheduler for ExponentialLr {
    fn step(&mut self) {
        let gamma = self.gamma;
        self.base
            .advance(|e, lr, _| if e == 0 { lr } else { lr * gamma });
    }
    scheduler_common!();
}

/// Cosine annealing from the initial learning rate down to `eta_min` over `t_max` epochs,
/// then back up, periodically (PyTorch's `CosineAnnealingLR`, without restarts).
#[doc(alias = "CosineAnnealingLR")]
#[derive(Clone, Debug)]
pub struct CosineAnnealingLr {
    base: Base,
    t_max: usize,
    eta_min: f64,
}

impl CosineAnnealingLr {
    /// A schedule over `opt`'s param groups (PyTorch's `T_max` is `t_max`).
    ///
    /// # Errors
    /// If `t_max` is 0.
    pub fn new(opt: &dyn Optimizer, t_max: usize, eta_min: f64) -> Result<CosineAnnealingLr> {
        if t_max == 0 {
            return Err(Error::Config(
                "CosineAnnealingLr: t_max must be at least 1, got 0".into(),
            ));
        }
        let mut s = CosineAnnealingLr {
            base: Base::new("CosineAnnealingLr", opt),
            t_max,
            eta_min,
        };
        s.step();
        Ok(s)
    }
}

impl LrScheduler for CosineAnnealingLr {
    fn step(&mut self) {
        use std::f64::consts::PI;
        let (t_max, eta_min) = (self.t_max as f64, self.eta_min);
        let period = 2 * self.t_max as i64;
        self.base.advance(|e, lr, base_lr| {
            if e == 0 {
                lr
            } else if (e - 1 - t_max as i64).rem_euclid(period) == 0 {
                lr + (base_lr - eta_min) * (1.0 - (PI / t_max).cos()) / 2.0
            } else {
                let e = e as f64;
                (1.0 + (PI * e / t_max).cos()) / (1.0 + (PI * (e - 1.0) / t_max).cos())
                    * (lr - eta_min)
                    + eta_min
            }
        });
    }
    scheduler_common!();
}

/// Scales the learning rate linearly from `start_factor` to `end_factor` times its initial
/// value over `total_iters` epochs (PyTorch's `LinearLR`, a warm-up).
#[doc(alias = "LinearLR")]
#[derive(Clone, Debug)]
pub struct LinearLr {
    base: Base,
    start_factor: f64,
    end_factor: f64,
    total_iters: usize,
}

impl LinearLr {
    /// A schedule over `opt`'s param groups (PyTorch's defaults: `start_factor` 1/3,
    /// `end_factor` 1, `total_iters` 5).
    ///
    /// # Errors
    /// If `start_factor` is not in `(0, 1]` or `end_factor` not in `[0, 1]`.
    pub fn new(
        opt: &dyn Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
    ) -> Result<LinearLr> {
        if start_factor.is_nan() || start_factor <= 0.0 || start_factor > 1.0 {
            return Err(Error::Config(format!(
                "LinearLr: start_factor must be in (0, 1], got {start_factor}"
            )));
        }
        if !(0.0..=1.0).contains(&end_factor) {
            return Err(Error::Config(format!(
                "LinearLr: end_factor must be in [0, 1], got {end_factor}"
            )));
        }
        let mut s = LinearLr {
            base: Base::new("LinearLr", opt),
            start_factor,
            end_factor,
            total_iters,
        };
        s.step();
        Ok(s)
    }
}

impl LrScheduler for LinearLr {
    fn step(&mut self) {
        let (start, end, total) = (self.start_factor, self.end_factor, self.total_iters as i64);
        self.base.advance(|e, lr, _| {
            if e == 0 {
                lr * start
            } else if e > total {
                lr
            } else {
                lr * (1.0 + (end - start) / (total as f64 * start + (e - 1) as f64 * (end - start)))
            }
        });
    }
    scheduler_common!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Sgd, SgdConfig};

    fn sgd(lr: f64) -> Sgd {
        let w = Tensor::zeros(&[1]).requires_grad_(true);
        Sgd::new(
            [w],
            SgdConfig {
                lr,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn scheduler_state_dict_resumes_the_schedule() {
        let opt = sgd(1.0);
        let mut a = ExponentialLr::new(&opt, 0.5).unwrap();
        a.step();
        let saved = a.state_dict();
        a.step();
        let mut b = ExponentialLr::new(&sgd(1.0), 0.5).unwrap();
        b.load_state_dict(&saved).unwrap();
        assert_eq!(b.last_epoch(), 1);
        assert_eq!(b.get_last_lr(), [0.5]);
        let first: StateDict = saved.clone().into_iter().take(1).collect();
        let err = b.load_state_dict(&first).unwrap_err().to_string();
        assert_eq!(
            err,
            "ExponentialLr.load_state_dict: missing keys [\"base_lrs\", \"last_lr\"], unexpected keys []"
        );
        // A vector where the epoch belongs, a fractional epoch and a NaN rate are named.
        let mut bad = saved.clone();
        bad.insert("last_epoch", Tensor::from_vec(vec![1.0f64, 2.0], &[2]));
        bad.insert("last_lr", Tensor::from_vec(vec![f64::NAN], &[1]));
        let err = b.load_state_dict(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "ExponentialLr.load_state_dict: `last_lr` holds [NaN]; learning rates are finite and \
             non-negative; `last_epoch` must be a scalar (shape []), got float64 of shape [2]"
        );
        assert_eq!(b.last_epoch(), 1, "nothing changes on error");
    }

    #[test]
    fn schedulers_reject_degenerate_periods() {
        let opt = sgd(0.1);
        assert!(StepLr::new(&opt, 0, 0.1).is_err());
        assert!(CosineAnnealingLr::new(&opt, 0, 0.0).is_err());
        assert_eq!(
            LinearLr::new(&opt, 0.0, 1.0, 4).unwrap_err().to_string(),
            "LinearLr: start_factor must be in (0, 1], got 0"
        );
    }
}
