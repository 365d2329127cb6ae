//! AdamW (PyTorch's `torch.optim.AdamW`): Adam with decoupled weight decay.

use crate::dtype::Float;
use crate::error::Result;
use crate::optim::adam::{ADAM_BUFFERS, AdamConfig, adam_update, validate_adam};
use crate::optim::optimizer::{Core, Hyper, IntoParam, Rule, delegate_optimizer};

/// The hyper-parameters of [`AdamW`]: those of Adam, with PyTorch's AdamW default weight
/// decay of 0.01.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// Decoupled decay: each step multiplies the weights by `1 - lr·weight_decay`
    /// (default 0.01).
    pub weight_decay: f64,
    /// Use the maximum of past second moments (AMSGrad).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl AdamWConfig {
    fn as_adam(&self) -> AdamConfig {
        let AdamWConfig {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        } = *self;
        AdamConfig {
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
        }
    }
}

impl Rule for AdamWConfig {
    const NAME: &'static str = "AdamW";
    const BUFFERS: &'static [&'static str] = ADAM_BUFFERS;
    const COUNTS_STEPS: bool = true;

    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }

    fn weight_decay_mut(&mut self) -> &mut f64 {
        &mut self.weight_decay
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.betas.0)
    }

    fn hyper(&mut self) -> Vec<(&'static str, Hyper<'_>)> {
        vec![
            ("lr", Hyper::Float(&mut self.lr)),
            ("betas.0", Hyper::Float(&mut self.betas.0)),
            ("betas.1", Hyper::Float(&mut self.betas.1)),
            ("eps", Hyper::Float(&mut self.eps)),
            ("weight_decay", Hyper::Float(&mut self.weight_decay)),
            ("amsgrad", Hyper::Bool(&mut self.amsgrad)),
            ("maximize", Hyper::Bool(&mut self.maximize)),
        ]
    }

    fn validate(&self) -> Result<()> {
        validate_adam("AdamW", &self.as_adam())
    }

    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]) {
        adam_update(&self.as_adam(), true, step, p, g, bufs);
    }
}

/// Adam with decoupled weight decay (PyTorch's `torch.optim.AdamW`): see [`AdamWConfig`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{AdamW, AdamWConfig, Optimizer}};
/// let w = Tensor::from_vec(vec![1.0f64], &[1]).requires_grad_(true);
/// let mut opt = AdamW::new([&w], AdamWConfig { lr: 0.1, weight_decay: 0.5, ..Default::default() })?;
/// w.set_grad(Some(Tensor::from_vec(vec![0.0f64], &[1])));
/// opt.step();
/// // A zero gradient leaves only the decay: w · (1 - 0.1 · 0.5).
/// assert!((w.item() - 0.95).abs() < 1e-12);
/// # Ok::<(), torchlet::Error>(())
/// ```
#[doc(alias = "Adamw")]
pub struct AdamW {
    core: Core<AdamWConfig>,
}

impl AdamW {
    /// An optimizer over `params` (named pairs, or tensors named by position).
    ///
    /// # Errors
    /// As [`Adam::new`](crate::optim::Adam::new).
    pub fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: AdamWConfig,
    ) -> Result<AdamW> {
        Ok(AdamW {
            core: Core::new(params, config)?,
        })
    }
}

delegate_optimizer!(AdamW);
