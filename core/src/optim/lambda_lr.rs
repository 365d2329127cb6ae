//! LambdaLR (PyTorch's `torch.optim.lr_scheduler.LambdaLR`): the learning rate of each
//! param group is its initial value times a function of the step count. A warm-up followed
//! by cosine decay, the schedule of most transformer training, is one closure; see
//! [`LambdaLr::warmup_cosine`].

use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::optim::lr_scheduler::{Base, LrScheduler};

/// Sets each group's learning rate to `base_lr · lr_lambda(epoch)` at every `step`
/// (`epoch` counts the `step` calls, 0 at construction).
///
/// The closure is not saved in [`state_dict`](LrScheduler::state_dict) (PyTorch saves it
/// only when it is a callable object): rebuild the scheduler with the same closure, then
/// load the counters.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{LambdaLr, LrScheduler, Optimizer, Sgd, SgdConfig}};
/// let w = Tensor::zeros(&[1]).requires_grad_(true);
/// let mut opt = Sgd::new([&w], SgdConfig { lr: 1.0, ..Default::default() })?;
/// let mut sched = LambdaLr::warmup_cosine(&opt, 2, 6, 0.0)?;
/// let mut lrs = vec![];
/// for _ in 0..7 {
///     lrs.push(opt.lr());
///     opt.step();
///     sched.step();
/// }
/// let rounded: Vec<f64> = lrs.iter().map(|v| (v * 1000.0).round() / 1000.0).collect();
/// assert_eq!(rounded, [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]);
/// # Ok::<(), torchlet::Error>(())
/// ```
#[doc(alias = "LambdaLR")]
pub struct LambdaLr {
    base: Base,
    lr_lambda: Box<dyn Fn(usize) -> f64 + Send + Sync>,
}

impl LambdaLr {
    /// A schedule over `opt`'s param groups (one function for all groups).
    ///
    /// # Errors
    /// Never today; a `Result` like every scheduler constructor.
    pub fn new(
        opt: &dyn Optimizer,
        lr_lambda: impl Fn(usize) -> f64 + Send + Sync + 'static,
    ) -> Result<LambdaLr> {
        let mut s = LambdaLr {
            base: Base::new("LambdaLr", opt),
            lr_lambda: Box::new(lr_lambda),
        };
        s.step();
        Ok(s)
    }

    /// Linear warm-up over `warmup_steps` (the factor goes `1/w, 2/w, …, 1`), then cosine
    /// decay to `min_factor` at `total_steps`, constant after that: the usual
    /// transformer schedule, stepped once per batch.
    ///
    /// # Errors
    /// If `warmup_steps >= total_steps` or `min_factor` is outside `[0, 1]`.
    pub fn warmup_cosine(
        opt: &dyn Optimizer,
        warmup_steps: usize,
        total_steps: usize,
        min_factor: f64,
    ) -> Result<LambdaLr> {
        if warmup_steps >= total_steps {
            return Err(Error::Config(format!(
                "LambdaLr::warmup_cosine: warmup_steps ({warmup_steps}) must be less than \
                 total_steps ({total_steps})"
            )));
        }
        if !(0.0..=1.0).contains(&min_factor) {
            return Err(Error::Config(format!(
                "LambdaLr::warmup_cosine: min_factor must be in [0, 1], got {min_factor}"
            )));
        }
        LambdaLr::new(opt, move |step| {
            if step < warmup_steps {
                return (step + 1) as f64 / warmup_steps as f64;
            }
            let t = ((step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64).min(1.0);
            min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        })
    }
}

impl LrScheduler for LambdaLr {
    fn step(&mut self) {
        let f = &self.lr_lambda;
        self.base
            .advance(|epoch, _, base_lr| base_lr * f(epoch.max(0) as usize));
    }

    fn get_last_lr(&self) -> Vec<f64> {
        self.base.last_lr.clone()
    }

    fn last_epoch(&self) -> i64 {
        self.base.last_epoch
    }

    fn state_dict(&self) -> crate::state_dict::StateDict {
        self.base.state_dict(&[])
    }

    fn load_state_dict(&mut self, state: &crate::state_dict::StateDict) -> Result<()> {
        self.base.load_state_dict(state, &[]).map(drop)
    }
}

impl std::fmt::Debug for LambdaLr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaLr")
            .field("last_epoch", &self.base.last_epoch)
            .field("last_lr", &self.base.last_lr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;
    use crate::optim::{Sgd, SgdConfig};

    #[test]
    fn lambda_scales_the_initial_rate_and_resumes_from_its_counters() {
        let w = Tensor::zeros(&[1]).requires_grad_(true);
        let opt = Sgd::new(
            [&w],
            SgdConfig {
                lr: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
        let mut a = LambdaLr::new(&opt, |e| 0.9f64.powi(e as i32)).unwrap();
        a.step();
        a.step();
        assert!((a.get_last_lr()[0] - 0.5 * 0.81).abs() < 1e-12);
        let mut b = LambdaLr::new(&opt, |e| 0.9f64.powi(e as i32)).unwrap();
        b.load_state_dict(&a.state_dict()).unwrap();
        a.step();
        b.step();
        assert_eq!(a.get_last_lr(), b.get_last_lr());
    }
}
