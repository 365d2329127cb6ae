//! Adam (PyTorch's `torch.optim.Adam`), with AMSGrad, L2 weight decay and maximize. The
//! update rule is shared with [`AdamW`](crate::optim::AdamW), which decouples the decay.

use crate::dtype::Float;
use crate::error::Result;
use crate::optim::optimizer::{
    Core, Hyper, IntoParam, Rule, delegate_optimizer, lerp, non_negative, require,
};

/// The hyper-parameters of [`Adam`], with PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moment averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Use the maximum of past second moments (AMSGrad).
    pub amsgrad: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
}

impl Default for AdamConfig {
    fn default() -> AdamConfig {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
        }
    }
}

/// The checks Adam and AdamW share.
pub(crate) fn validate_adam(opt: &str, c: &AdamConfig) -> Result<()> {
    non_negative(opt, "lr", c.lr)?;
    non_negative(opt, "eps", c.eps)?;
    let (b1, b2) = c.betas;
    require(opt, "betas.0", b1, (0.0..1.0).contains(&b1), "in [0, 1)")?;
    require(opt, "betas.1", b2, (0.0..1.0).contains(&b2), "in [0, 1)")?;
    non_negative(opt, "weight_decay", c.weight_decay)
}

pub(crate) const ADAM_BUFFERS: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

/// PyTorch's `_single_tensor_adam`. With `decoupled` (AdamW) `p *= 1 - lr·wd` first;
/// otherwise `d = g + wd·p`. Then `m = lerp(m, d, 1 - β1)`, `v = β2·v + (1 - β2)·d²`,
/// `denom = √v̂ / √(1 - β2^t) + eps` (v̂ the running max of v with AMSGrad), and
/// `p -= lr / (1 - β1^t) · m / denom`.
pub(crate) fn adam_update<T: Float>(
    c: &AdamConfig,
    decoupled: bool,
    step: u64,
    p: &mut [T],
    g: &[T],
    bufs: &mut [Vec<T>],
) {
    let (beta1, beta2) = c.betas;
    let n = p.len();
    let used = if c.amsgrad { 3 } else { 2 };
    for b in bufs[..used].iter_mut().filter(|b| b.is_empty()) {
        b.resize(n, T::zero());
    }
    let [m, v, vmax] = bufs else {
        unreachable!("Adam has three state buffers")
    };
    let t = step as i32;
    let step_size = T::lit(c.lr / (1.0 - beta1.powi(t)));
    let bc2_sqrt = T::lit((1.0 - beta2.powi(t)).sqrt());
    let (w1, b2, w2) = (T::lit(1.0 - beta1), T::lit(beta2), T::lit(1.0 - beta2));
    let (eps, wd) = (T::lit(c.eps), T::lit(c.weight_decay));
    let decay = T::lit(1.0 - c.lr * c.weight_decay);
    for i in 0..n {
        let mut d = if c.maximize { -g[i] } else { g[i] };
        if decoupled {
            p[i] *= decay;
        } else if c.weight_decay != 0.0 {
            d += wd * p[i];
        }
        m[i] = lerp(m[i], d, w1);
        v[i] = v[i] * b2 + w2 * d * d;
        let second = if c.amsgrad {
            vmax[i] = vmax[i].max(v[i]);
            vmax[i]
        } else {
            v[i]
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        p[i] += -step_size * (m[i] / denom);
    }
}

impl Rule for AdamConfig {
    const NAME: &'static str = "Adam";
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
        validate_adam("Adam", self)
    }

    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [Vec<T>]) {
        adam_update(self, false, step, p, g, bufs);
    }
}

/// Adam (PyTorch's `torch.optim.Adam`): see [`AdamConfig`] for the options. Weight decay
/// here is an L2 penalty added to the gradient; [`AdamW`](crate::optim::AdamW) decouples it.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::{Adam, AdamConfig, Optimizer}};
/// let w = Tensor::from_vec(vec![1.0f64], &[1]).requires_grad_(true);
/// let mut opt = Adam::new([&w], AdamConfig { lr: 0.1, ..Default::default() })?;
/// w.set_grad(Some(Tensor::from_vec(vec![3.0f64], &[1])));
/// opt.step();
/// // The first Adam step moves each weight by about lr, whatever the gradient's size.
/// assert!((w.item() - 0.9).abs() < 1e-6);
/// # Ok::<(), torchlet::Error>(())
/// ```
pub struct Adam {
    core: Core<AdamConfig>,
}

impl Adam {
    /// An optimizer over `params` (named pairs, or tensors named by position).
    ///
    /// # Errors
    /// If `params` is empty or holds a duplicate name or a tensor that cannot be optimized,
    /// or a hyper-parameter is invalid (negative `lr`, `eps` or `weight_decay`; a beta
    /// outside `[0, 1)`).
    pub fn new<P: IntoParam>(
        params: impl IntoIterator<Item = P>,
        config: AdamConfig,
    ) -> Result<Adam> {
        Ok(Adam {
            core: Core::new(params, config)?,
        })
    }
}

delegate_optimizer!(Adam);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Optimizer;
    use crate::tensor::Tensor;

    #[test]
    fn adam_rejects_beta_of_one() {
        let w = Tensor::zeros(&[1]).requires_grad_(true);
        let config = AdamConfig {
            betas: (1.0, 0.999),
            ..Default::default()
        };
        let err = Adam::new([&w], config).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Adam: betas.0 must be in [0, 1), got 1")
        );
    }

    #[test]
    fn adam_state_dict_names_moments_by_parameter() {
        let w = Tensor::zeros(&[2]).requires_grad_(true);
        let mut opt = Adam::new([("fc.weight", &w)], AdamConfig::default()).unwrap();
        w.set_grad(Some(Tensor::ones(&[2])));
        opt.step();
        let keys: Vec<String> = opt.state_dict().into_iter().map(|(k, _)| k).collect();
        for key in [
            "state.fc.weight.step",
            "state.fc.weight.exp_avg",
            "param_groups.0.betas.1",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.ends_with("max_exp_avg_sq")));
    }
}
