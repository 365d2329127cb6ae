//! [`GroupNorm`]: normalisation over groups of channels of each sample (PyTorch's
//! `nn.GroupNorm`), built from existing ops so that autograd differentiates it.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::{py_bool, py_float};
use crate::nn::parameter::Parameter;
use crate::tensor::Tensor;

/// `x` `[N, C, *]` normalised over each (sample, group of `C / groups` consecutive channels,
/// all positions) with the biased variance: `(x − mean) / sqrt(var + eps)`.
/// [`InstanceNorm2d`](crate::nn::InstanceNorm2d) is the case `groups = C`.
pub(crate) fn normalize_groups(x: &Tensor, groups: usize, eps: f64) -> Tensor {
    let shape = x.shape();
    let grouped = x.reshape(&[shape[0] as isize, groups as isize, -1]);
    let mean = grouped.mean_dim(-1, true);
    let centred = &grouped - &mean;
    let var = (&centred * &centred).mean_dim(-1, true);
    (&centred / &(&var + eps).sqrt()).reshape_usize(&shape)
}

/// `y · weight + bias` with `[C]` parameters broadcast over dimension 1 of `y` `[N, C, *]`.
pub(crate) fn affine(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Tensor {
    let mut channel = vec![1isize; y.dim()];
    channel[1] = -1;
    let y = match weight {
        Some(w) => &y * &w.reshape(&channel),
        None => y,
    };
    match bias {
        Some(b) => &y + &b.reshape(&channel),
        None => y,
    }
}

/// Group normalisation: the channels of each sample split into `num_groups` groups of
/// consecutive channels, each normalised by its own mean and biased variance, then scaled and
/// shifted per channel by `weight` (1) and `bias` (0). Unlike batch norm, it uses no batch
/// statistics, so it behaves the same in training and evaluation.
///
/// # Shapes
/// `[N, num_channels, *] → the same`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, GroupNorm};
/// use torchlet::Tensor;
/// let gn = GroupNorm::new(2, 6);
/// assert_eq!(gn.forward(&Tensor::randn(&[3, 6, 4, 4])).shape(), [3, 6, 4, 4]);
/// assert_eq!(gn.to_string(), "GroupNorm(2, 6, eps=1e-05, affine=True, bias=True)");
/// ```
#[derive(Module)]
#[module(extra_repr = "GroupNorm::describe")]
pub struct GroupNorm {
    /// The learned per-channel scale `[num_channels]`, or `None` when `affine` is false.
    pub weight: Option<Parameter>,
    /// The learned per-channel shift `[num_channels]`, or `None` when `affine` is false or
    /// made without bias.
    pub bias: Option<Parameter>,
    #[module(skip)]
    num_groups: usize,
    #[module(skip)]
    num_channels: usize,
    #[module(skip)]
    eps: f64,
    #[module(training)]
    training: bool,
}

impl GroupNorm {
    /// `num_channels` channels in `num_groups` groups, `eps = 1e-5`, affine.
    ///
    /// # Panics
    /// If `num_groups` is zero or does not divide `num_channels`.
    #[track_caller]
    pub fn new(num_groups: usize, num_channels: usize) -> GroupNorm {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            panic!(
                "GroupNorm: num_channels must be divisible by num_groups, got {num_channels} and {num_groups}"
            );
        }
        GroupNorm {
            weight: Some(Parameter::new(Tensor::ones(&[num_channels]))),
            bias: Some(Parameter::new(Tensor::zeros(&[num_channels]))),
            num_groups,
            num_channels,
            eps: 1e-5,
            training: true,
        }
    }

    /// The value added to the variance for stability.
    pub fn with_eps(mut self, eps: f64) -> GroupNorm {
        self.eps = eps;
        self
    }

    /// Whether to learn the per-channel `weight` and `bias` (PyTorch's `affine`).
    pub fn with_affine(mut self, affine: bool) -> GroupNorm {
        if !affine {
            (self.weight, self.bias) = (None, None);
        } else if self.weight.is_none() {
            let c = self.num_channels;
            self.weight = Some(Parameter::new(Tensor::ones(&[c])));
            self.bias = Some(Parameter::new(Tensor::zeros(&[c])));
        }
        self
    }

    /// Whether an affine module learns `bias` too (PyTorch's `bias`).
    pub fn with_bias(mut self, bias: bool) -> GroupNorm {
        if !bias {
            self.bias = None;
        } else if self.weight.is_some() && self.bias.is_none() {
            self.bias = Some(Parameter::new(Tensor::zeros(&[self.num_channels])));
        }
        self
    }

    fn describe(&self) -> String {
        format!(
            "{}, {}, eps={}, affine={}, bias={}",
            self.num_groups,
            self.num_channels,
            py_float(self.eps),
            py_bool(self.weight.is_some()),
            py_bool(self.bias.is_some())
        )
    }
}

impl<'a> Forward<&'a Tensor> for GroupNorm {
    type Output = Tensor;

    /// # Panics
    /// If the input is not `[N, num_channels, *]`.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let shape = x.shape();
        if shape.len() < 2 || shape[1] != self.num_channels {
            panic!(
                "GroupNorm({}, {}): expected [N, {}, *], got {shape:?}",
                self.num_groups, self.num_channels, self.num_channels
            );
        }
        let y = normalize_groups(x, self.num_groups, self.eps);
        let y = affine(y, self.weight.as_deref(), self.bias.as_deref());
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn group_norm_backward_matches_finite_differences() {
        crate::random::manual_seed(11);
        let x = Tensor::randn(&[2, 6, 3]).double().requires_grad_(true);
        let w = Tensor::randn(&[6]).double().requires_grad_(true);
        let b = Tensor::randn(&[6]).double().requires_grad_(true);
        gradcheck(
            |v| affine(normalize_groups(&v[0], 3, 1e-5), Some(&v[1]), Some(&v[2])),
            &[x, w, b],
        )
        .unwrap();
    }

    #[test]
    fn each_group_has_zero_mean_and_unit_variance() {
        let x = Tensor::from_vec((0..8).map(|v| (v * v) as f32).collect(), &[1, 4, 2]);
        let y = GroupNorm::new(2, 4)
            .with_eps(0.0)
            .forward(&x)
            .to_vec::<f64>();
        for g in y.chunks(4) {
            let mean = g.iter().sum::<f64>() / 4.0;
            let var = g.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{g:?}");
        }
    }

    #[test]
    fn repr_and_keys_without_affine() {
        let gn = GroupNorm::new(3, 6).with_eps(1e-3).with_affine(false);
        assert_eq!(
            gn.to_string(),
            "GroupNorm(3, 6, eps=0.001, affine=False, bias=False)"
        );
        assert!(gn.state_dict().is_empty());
    }
}
