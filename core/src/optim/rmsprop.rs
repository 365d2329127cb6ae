//! RMSprop (PyTorch's `torch.optim.RMSprop`), with momentum, the centered variant, weight
//! decay and maximize.

use crate::dtype::Float;
use crate::error::Result;
use crate::optim::optimizer::{
    Core, Hyper, IntoParam, Rule, delegate_optimizer, lerp, non_negative,
};

/// The hyper-parameters of [`RmsProp`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalize by an estimate of the gradient's variance instead of its second moment.
    pub centered: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for RmsPropConfig {
    fn default() -> RmsPropConfig {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

impl Rule for RmsPropConfig {
    const NAME: &'static str = "RmsProp";
    const BUFFERS: &'static [&'static str] = &["square_avg", "momentum_buffer", "grad_avg"];
    const COUNTS_STEPS: bool = true;

    fn lr_mut(&mut self) -> &mut f64 {
        &mut self.lr
    }

    fn weight_decay_mut(&mut self) -> &mut f64 {
        &mut self.weight_decay
    }

    fn momentum_mut(&mut self) -> Option<&mut f64> {
        Some(&mut self.momentum)
    }

    fn hyper(&mut self) -> Vec<(&'static str, Hyper<'_>)> {
        vec![
            ("lr", Hyper::Float(&mut self.lr)),
            ("alpha", Hyper::Float(&mut self.alpha)),
            ("eps", Hyper::Float(&mut self.eps)),
            ("weight_decay", Hyper::Float(&mut self.weight_decay)),
            ("momentum", Hyper::Float(&mut self.momentum)),
            ("centered", Hyper::Bool(&mut self.centered)),
            ("maximize", Hyper::Bool(&mut self.maximize)),
        ]
    }

    fn validate(&self) -> Result<()> {
        non_negative("RmsProp", "lr", self.lr)?;
        non_negative("RmsProp", "eps", self.eps)?;
        non_negative("RmsProp", "momentum", self.momentum)?;
        non_negative("RmsProp", "weight_decay", self.weight_decay)?;
        non_negative("RmsProp", "alpha", self.alpha)
    }

    /// PyTorch's `_single_tensor_rmsprop`: `d = g + wd·p`; `s = α·s + (1 - α)·d²`;
    /// centered: `a = lerp(a, d, 1 - α)`, `avg = √(s - a²) + eps`, else `avg = √s + eps`;
    /// with momentum `buf = μ·buf + d / avg`, `p -= lr·buf`, else `p -= lr·d / avg`.
    fn update<T: Float>(&self, _step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]) {
        let n = p.len();
        let wanted = [true, self.momentum > 0.0, self.centered];
        for (b, _) in bufs
            .iter_mut()
            .zip(wanted)
            .filter(|(b, w)| *w && b.is_empty())
        {
            b.resize(n, T::zero());
        }
        let [sq, buf, avg] = bufs else {
            unreachable!("RmsProp has three state buffers")
        };
        let (alpha, keep) = (T::lit(self.alpha), T::lit(1.0 - self.alpha));
        let (lr, eps, wd, mu) = (
            T::lit(self.lr),
            T::lit(self.eps),
            T::lit(self.weight_decay),
            T::lit(self.momentum),
        );
        for i in 0..n {
            let mut d = if self.maximize { -g[i] } else { g[i] };
            if self.weight_decay != 0.0 {
                d += wd * p[i];
            }
            sq[i] = sq[i] * alpha + keep * d * d;
            let denom = if self.centered {
                avg[i] = lerp(avg[i], d, keep);
                (sq[i] + -(avg[i] * avg[i])).sqrt() + eps
            } else {
                sq[i].sqrt() + eps
            };
            if self.momentum > 0.0 {
                buf[i] = buf[i] * mu + d / denom;
                p[i] += -lr * buf[i];
            } else {
                p[i] += -lr * (d / denom);
            }
        }
    }
}

/// RMSprop (PyTorch's `torch.optim.RMSprop`): see [`RmsPropConfig`] for the options.
#[doc(alias = "RMSprop")]
pub struct RmsProp {
    core: Core<RmsPropConfig>,
}

impl RmsProp {
    /// An optimizer over `params` (named pairs, or tensors named by position).
    ///
    /// # Errors
    /// If `params` is empty or holds a duplicate name or a tensor that cannot be optimized,
    /// or a hyper-parameter is negative.
    pub fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: RmsPropConfig,
    ) -> Result<RmsProp> {
        Ok(RmsProp {
            core: Core::new(params, config)?,
        })
    }
}

delegate_optimizer!(RmsProp);
