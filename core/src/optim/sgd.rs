//! Stochastic gradient descent with momentum, dampening, Nesterov momentum, weight decay
//! and maximize (PyTorch's `torch.optim.SGD`).

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::optim::optimizer::{Core, Hyper, IntoParam, Rule, delegate_optimizer, non_negative};
use crate::parallel::update_in_halves;

/// The hyper-parameters of [`Sgd`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Momentum factor (default 0: plain SGD).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> SgdConfig {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl Rule for SgdConfig {
    const NAME: &'static str = "Sgd";
    const BUFFERS: &'static [&'static str] = &["momentum_buffer"];
    const COUNTS_STEPS: bool = false;

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
            ("momentum", Hyper::Float(&mut self.momentum)),
            ("dampening", Hyper::Float(&mut self.dampening)),
            ("weight_decay", Hyper::Float(&mut self.weight_decay)),
            ("nesterov", Hyper::Bool(&mut self.nesterov)),
            ("maximize", Hyper::Bool(&mut self.maximize)),
        ]
    }

    fn validate(&self) -> Result<()> {
        non_negative("Sgd", "lr", self.lr)?;
        non_negative("Sgd", "momentum", self.momentum)?;
        non_negative("Sgd", "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::Config(format!(
                "Sgd: nesterov requires momentum > 0 and dampening = 0, got momentum {} and \
                 dampening {}",
                self.momentum, self.dampening
            )));
        }
        Ok(())
    }

    /// PyTorch's `_single_tensor_sgd`: `d = g + wd·p`; `buf = d` on the first step, then
    /// `momentum·buf + (1 - dampening)·d`; `d = d + momentum·buf` (Nesterov) or `buf`;
    /// `p -= lr·d`.
    fn update<T: Float>(&self, _step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]) {
        let lr = T::lit(self.lr);
        let wd = T::lit(self.weight_decay);
        let momentum = T::lit(self.momentum);
        let keep = T::lit(1.0 - self.dampening);
        let sign = if self.maximize { -T::one() } else { T::one() };
        let decay = self.weight_decay != 0.0;
        let grad = |g: T, p: T| if decay { sign * g + wd * p } else { sign * g };
        // Large parameters are updated in two halves on two threads (the loops are
        // element-wise and memory-bound).
        if self.momentum == 0.0 {
            // Plain SGD, the common case, as a loop without branches so that it vectorises.
            let plain = self.weight_decay == 0.0 && !self.maximize;
            update_in_halves(p, &mut [], g, &|p, _, g| {
                if plain {
                    p.iter_mut().zip(g).for_each(|(p, &g)| *p += -lr * g);
                } else {
                    p.iter_mut()
                        .zip(g)
                        .for_each(|(p, &g)| *p += -lr * grad(g, *p));
                }
            });
            return;
        }
        let buf = &mut bufs[0];
        let first = buf.is_empty();
        if first {
            buf.resize(p.len(), T::zero());
        }
        let nesterov = self.nesterov;
        update_in_halves(p, buf, g, &|p, buf, g| {
            for ((p, b), &g) in p.iter_mut().zip(buf.iter_mut()).zip(g) {
                let d = grad(g, *p);
                *b = if first { d } else { momentum * *b + keep * d };
                let d = if nesterov { d + momentum * *b } else { *b };
                *p += -lr * d;
            }
        });
    }
}

/// Stochastic gradient descent (PyTorch's `torch.optim.SGD`), with PyTorch's update rule:
/// see [`SgdConfig`] for the options.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::Parameter};
/// use torchlet::optim::{Optimizer, Sgd, SgdConfig};
/// let w = Parameter::new(Tensor::zeros(&[3]));
/// let config = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
/// let mut opt = Sgd::new([("weight", &w)], config)?;
/// assert_eq!(opt.lr(), 0.1);
/// let bad = SgdConfig { lr: 0.1, nesterov: true, ..Default::default() };
/// assert!(Sgd::new([("weight", &w)], bad).is_err());
/// # Ok::<(), torchlet::Error>(())
/// ```
#[doc(alias = "SGD")]
pub struct Sgd {
    core: Core<SgdConfig>,
}

impl Sgd {
    /// An optimizer over `params`: `model.named_parameters()`, `(name, tensor)` pairs, or a
    /// list of tensors or parameters (named `"0"`, `"1"`, … by position).
    ///
    /// # Errors
    /// If `params` is empty or holds a duplicate name or a tensor that cannot be optimized,
    /// or a hyper-parameter is invalid (negative `lr`, `momentum` or `weight_decay`;
    /// `nesterov` without momentum or with dampening).
    pub fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: SgdConfig,
    ) -> Result<Sgd> {
        Ok(Sgd {
            core: Core::new(params, config)?,
        })
    }
}

delegate_optimizer!(Sgd);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Optimizer;
    use crate::tensor::Tensor;

    fn param(v: &[f64]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len()]).requires_grad_(true)
    }

    #[test]
    fn sgd_momentum_matches_hand_computed_steps() {
        let w = param(&[1.0]);
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.5,
            ..Default::default()
        };
        let mut opt = Sgd::new([&w], config).unwrap();
        for _ in 0..2 {
            w.set_grad(Some(Tensor::from_vec(vec![1.0f64], &[1])));
            opt.step();
        }
        // buf = 1 then 0.5 + 1 = 1.5; w = 1 - 0.1 - 0.15
        assert!((w.item() - 0.75).abs() < 1e-15);
    }

    #[test]
    fn sgd_rejects_nesterov_without_momentum() {
        let config = SgdConfig {
            lr: 0.1,
            nesterov: true,
            ..Default::default()
        };
        let err = Sgd::new([param(&[0.0])], config)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "Sgd: nesterov requires momentum > 0 and dampening = 0, got momentum 0 and dampening 0"
            )
        );
        let config = SgdConfig {
            lr: -1.0,
            ..Default::default()
        };
        let err = Sgd::new([param(&[0.0])], config)
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("Sgd: lr must be non-negative, got -1"));
    }

    #[test]
    fn sgd_skips_parameters_without_gradient() {
        let (a, b) = (param(&[1.0]), param(&[2.0]));
        let mut opt = Sgd::new(
            [&a, &b],
            SgdConfig {
                lr: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        a.set_grad(Some(Tensor::from_vec(vec![1.0f64], &[1])));
        opt.step();
        assert_eq!((a.item(), b.item()), (0.0, 2.0));
    }
}
