//! OneCycleLR (PyTorch's `torch.optim.lr_scheduler.OneCycleLR`): the 1cycle policy, which
//! warms the learning rate up to `max_lr` and anneals it far below its start, cycling the
//! momentum the other way. Stepped once per batch.

use crate::error::{Error, Result};
use crate::optim::lr_scheduler::{Base, LrScheduler};
use crate::optim::{GroupRates, Optimizer};
use crate::state_dict::StateDict;

/// How OneCycleLR moves between two values within a phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnnealStrategy {
    /// Cosine annealing (PyTorch's `"cos"`, the default).
    #[default]
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

impl AnnealStrategy {
    fn anneal(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => {
                end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }
}

/// The options of [`OneCycleLr`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycleLrConfig {
    /// The peak learning rate.
    pub max_lr: f64,
    /// The number of `step` calls in the cycle (PyTorch's `epochs * steps_per_epoch`).
    pub total_steps: usize,
    /// The fraction of the cycle spent increasing the learning rate (default 0.3).
    pub pct_start: f64,
    /// Cosine or linear annealing (default cosine).
    pub anneal_strategy: AnnealStrategy,
    /// Cycle the momentum (or Adam's beta1) inversely to the learning rate (default true).
    pub cycle_momentum: bool,
    /// The momentum at the peak learning rate (default 0.85).
    pub base_momentum: f64,
    /// The momentum at the start and end (default 0.95).
    pub max_momentum: f64,
    /// The initial learning rate is `max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// The final learning rate is the initial one divided by this (default 1e4).
    pub final_div_factor: f64,
    /// A third phase that anneals from the initial to the final learning rate, after a
    /// symmetric rise and fall (default false).
    pub three_phase: bool,
}

impl Default for OneCycleLrConfig {
    fn default() -> OneCycleLrConfig {
        OneCycleLrConfig {
            max_lr: 0.1,
            total_steps: 100,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// One segment of the cycle: from `start` to `end` (learning-rate multiples of
/// `[initial, max, min]` by index) until step `end_step`.
#[derive(Clone, Copy, Debug)]
struct Phase {
    end_step: f64,
    lr: (usize, usize),
    momentum: (f64, f64),
}

/// The 1cycle learning-rate policy (PyTorch's `OneCycleLR`); see [`OneCycleLrConfig`].
/// Construction replaces each group's learning rate with `max_lr / div_factor` (and its
/// momentum with `max_momentum` when cycling).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{LrScheduler, OneCycleLr, OneCycleLrConfig, Optimizer, Sgd, SgdConfig}};
/// let w = Tensor::zeros(&[1]).requires_grad_(true);
/// let mut opt = Sgd::new([&w], SgdConfig { lr: 0.1, momentum: 0.9, ..Default::default() })?;
/// let config = OneCycleLrConfig { max_lr: 1.0, total_steps: 10, ..Default::default() };
/// let mut sched = OneCycleLr::new(&opt, config)?;
/// assert!((opt.lr() - 1.0 / 25.0).abs() < 1e-12); // max_lr / div_factor
/// for _ in 0..3 {
///     opt.step();
///     sched.step();
/// }
/// assert!(opt.lr() > 0.9); // at the peak after pct_start · total_steps steps
/// # Ok::<(), torchlet::Error>(())
/// ```
#[doc(alias = "OneCycleLR")]
#[derive(Clone, Debug)]
pub struct OneCycleLr {
    base: Base,
    config: OneCycleLrConfig,
    phases: Vec<Phase>,
}

impl OneCycleLr {
    /// A 1cycle schedule over `opt`'s param groups.
    ///
    /// # Errors
    /// If `total_steps` is 0, `pct_start` is outside `[0, 1]`, a factor is not positive, or
    /// `cycle_momentum` is set for an optimizer without momentum (Adagrad).
    pub fn new(opt: &dyn Optimizer, config: OneCycleLrConfig) -> Result<OneCycleLr> {
        let c = config;
        let bad = |m: String| Err(Error::Config(format!("OneCycleLr: {m}")));
        if c.total_steps == 0 {
            return bad("total_steps must be at least 1, got 0".into());
        }
        if !(0.0..=1.0).contains(&c.pct_start) {
            return bad(format!("pct_start must be in [0, 1], got {}", c.pct_start));
        }
        if [c.div_factor, c.final_div_factor]
            .iter()
            .any(|f| f.is_nan() || *f <= 0.0)
        {
            return bad(format!(
                "div_factor and final_div_factor must be positive, got {} and {}",
                c.div_factor, c.final_div_factor
            ));
        }
        let groups = opt.group_rates();
        if c.cycle_momentum && groups.iter().any(|g| g.momentum().is_none()) {
            return bad(
                "cycle_momentum needs an optimizer with momentum or betas; set cycle_momentum \
                 to false"
                    .into(),
            );
        }
        let initial = c.max_lr / c.div_factor;
        for g in &groups {
            g.store_lr(initial);
            if c.cycle_momentum {
                g.set_momentum(c.max_momentum);
            }
        }
        let mut s = OneCycleLr {
            base: Base::new("OneCycleLr", opt),
            config,
            phases: phases(&config),
        };
        s.step();
        Ok(s)
    }

    /// The learning rate and momentum multiples at step `t`.
    fn at(&self, t: i64) -> (f64, f64) {
        let c = &self.config;
        let initial = c.max_lr / c.div_factor;
        let value = |k: usize| match k {
            0 => initial,
            1 => c.max_lr,
            _ => initial / c.final_div_factor,
        };
        let mut start_step = 0.0;
        let last = self.phases.len() - 1;
        for (i, p) in self.phases.iter().enumerate() {
            if t as f64 <= p.end_step || i == last {
                let pct = (t as f64 - start_step) / (p.end_step - start_step);
                let s = c.anneal_strategy;
                return (
                    s.anneal(value(p.lr.0), value(p.lr.1), pct),
                    s.anneal(p.momentum.0, p.momentum.1, pct),
                );
            }
            start_step = p.end_step;
        }
        unreachable!("the last phase always applies")
    }
}

/// The phases PyTorch builds in `OneCycleLR.__init__`; learning rates as indices
/// (0 initial, 1 max, 2 min).
fn phases(c: &OneCycleLrConfig) -> Vec<Phase> {
    let (lo, hi) = (c.base_momentum, c.max_momentum);
    let up = c.pct_start * c.total_steps as f64 - 1.0;
    let end = c.total_steps as f64 - 1.0;
    if c.three_phase {
        vec![
            Phase {
                end_step: up,
                lr: (0, 1),
                momentum: (hi, lo),
            },
            Phase {
                end_step: 2.0 * c.pct_start * c.total_steps as f64 - 2.0,
                lr: (1, 0),
                momentum: (lo, hi),
            },
            Phase {
                end_step: end,
                lr: (0, 2),
                momentum: (hi, hi),
            },
        ]
    } else {
        vec![
            Phase {
                end_step: up,
                lr: (0, 1),
                momentum: (hi, lo),
            },
            Phase {
                end_step: end,
                lr: (1, 2),
                momentum: (lo, hi),
            },
        ]
    }
}

impl LrScheduler for OneCycleLr {
    /// # Panics
    /// When stepped more than `total_steps` times, as PyTorch does.
    #[track_caller]
    fn step(&mut self) {
        let t = self.base.last_epoch + 1;
        if t > self.config.total_steps as i64 {
            panic!(
                "OneCycleLr: tried to step {} times; the specified number of total steps is {}",
                t, self.config.total_steps
            );
        }
        let (lr, momentum) = self.at(t);
        self.base.advance(|_, _, _| lr);
        if self.config.cycle_momentum {
            self.base
                .groups
                .iter()
                .for_each(|g| g.set_momentum(momentum));
        }
    }

    fn get_last_lr(&self) -> Vec<f64> {
        self.base.last_lr.clone()
    }

    fn last_epoch(&self) -> i64 {
        self.base.last_epoch
    }

    fn state_dict(&self) -> StateDict {
        self.base.state_dict(&[])
    }

    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        self.base.load_state_dict(state, &[]).map(drop)
    }
}

impl OneCycleLr {
    /// The momentum (or beta1) of each group set by the last step.
    pub fn last_momentum(&self) -> Vec<Option<f64>> {
        self.base.groups.iter().map(GroupRates::momentum).collect()
    }
}
