//! Adagrad (PyTorch's `torch.optim.Adagrad`), with learning-rate decay, weight decay and
//! maximize.

use crate::dtype::Float;
use crate::error::Result;
use crate::optim::optimizer::{Core, Hyper, IntoParam, Rule, delegate_optimizer, non_negative};

/// The hyper-parameters of [`Adagrad`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// The learning rate at step t is `lr / (1 + (t - 1)·lr_decay)` (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// The starting value of the sum of squared gradients (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator for stability (default 1e-10).
    pub eps: f64,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> AdagradConfig {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

impl Rule for AdagradConfig {
    const NAME: &'static str = "Adagrad";
    const BUFFERS: &'static [&'static str] = &["sum"];
    const COUNTS_STEPS: bool = true;

    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }

    fn weight_decay_mut(&mut self) -> &mut f64 {
        &mut self.weight_decay
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        None
    }

    fn hyper(&mut self) -> Vec<(&'static str, Hyper<'_>)> {
        vec![
            ("lr", Hyper::Float(&mut self.lr)),
            ("lr_decay", Hyper::Float(&mut self.lr_decay)),
            ("weight_decay", Hyper::Float(&mut self.weight_decay)),
            (
                "initial_accumulator_value",
                Hyper::Float(&mut self.initial_accumulator_value),
            ),
            ("eps", Hyper::Float(&mut self.eps)),
            ("maximize", Hyper::Bool(&mut self.maximize)),
        ]
    }

    fn validate(&self) -> Result<()> {
        non_negative("Adagrad", "lr", self.lr)?;
        non_negative("Adagrad", "lr_decay", self.lr_decay)?;
        non_negative("Adagrad", "weight_decay", self.weight_decay)?;
        non_negative(
            "Adagrad",
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        non_negative("Adagrad", "eps", self.eps)
    }

    /// PyTorch's `_single_tensor_adagrad`: `d = g + wd·p`; `clr = lr / (1 + (t - 1)·lr_decay)`;
    /// `sum += d²`; `p -= clr · d / (√sum + eps)`.
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]) {
        let sum = &mut bufs[0];
        if sum.is_empty() {
            sum.resize(p.len(), T::lit(self.initial_accumulator_value));
        }
        let clr = T::lit(self.lr / (1.0 + (step - 1) as f64 * self.lr_decay));
        let (eps, wd) = (T::lit(self.eps), T::lit(self.weight_decay));
        for (i, (p, s)) in p.iter_mut().zip(sum.iter_mut()).enumerate() {
            let mut d = if self.maximize { -g[i] } else { g[i] };
            if self.weight_decay != 0.0 {
                d += wd * *p;
            }
            *s += d * d;
            let std = s.sqrt() + eps;
            *p += -clr * (d / std);
        }
    }
}

/// Adagrad (PyTorch's `torch.optim.Adagrad`): see [`AdagradConfig`] for the options.
pub struct Adagrad {
    core: Core<AdagradConfig>,
}

impl Adagrad {
    /// An optimizer over `params` (named pairs, or tensors named by position).
    ///
    /// # Errors
    /// If `params` is empty or holds a duplicate name or a tensor that cannot be optimized,
    /// or a hyper-parameter is negative.
    pub fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: AdagradConfig,
    ) -> Result<Adagrad> {
        Ok(Adagrad {
            core: Core::new(params, config)?,
        })
    }
}

delegate_optimizer!(Adagrad);
