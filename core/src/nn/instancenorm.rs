//! [`InstanceNorm2d`]: normalisation of each channel of each image over its own positions
//! (PyTorch's `nn.InstanceNorm2d`), built from existing ops.

use crate::autograd::no_grad;
use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::groupnorm::{affine, normalize_groups};
use crate::nn::module::{py_bool, py_float};
use crate::nn::parameter::{Buffer, Parameter};
use crate::tensor::Tensor;

/// Instance normalisation: each (sample, channel) plane of `[N, C, H, W]` normalised by its
/// own mean and biased variance, then optionally scaled and shifted per channel.
///
/// With PyTorch's defaults (`affine` and `track_running_stats` false) it has no state and
/// behaves the same in training and evaluation. With `track_running_stats`, training updates
/// `running_mean` and `running_var` (the batch average of the per-instance statistics, the
/// variance unbiased, with `momentum`) and evaluation normalises with them.
///
/// # Shapes
/// `[N, num_features, H, W] → the same`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, InstanceNorm2d};
/// use torchlet::Tensor;
/// let norm = InstanceNorm2d::new(3);
/// assert_eq!(norm.forward(&Tensor::randn(&[2, 3, 4, 4])).shape(), [2, 3, 4, 4]);
/// assert_eq!(
///     norm.to_string(),
///     "InstanceNorm2d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=False)"
/// );
/// ```
#[derive(Module)]
#[module(extra_repr = "InstanceNorm2d::describe")]
pub struct InstanceNorm2d {
    /// The learned scale `γ` `[num_features]`, or `None` when `affine` is false (the default).
    pub weight: Option<Parameter>,
    /// The learned shift `β` `[num_features]`, or `None` when `affine` is false (the default).
    pub bias: Option<Parameter>,
    /// The running mean used in eval mode, or `None` when `track_running_stats` is false
    /// (the default).
    pub running_mean: Option<Buffer>,
    /// The running variance used in eval mode, or `None` when `track_running_stats` is
    /// false (the default).
    pub running_var: Option<Buffer>,
    /// An i64 counter, as in PyTorch.
    pub num_batches_tracked: Option<Buffer>,
    #[module(skip)]
    num_features: usize,
    #[module(skip)]
    eps: f64,
    #[module(skip)]
    momentum: Option<f64>,
    #[module(training)]
    training: bool,
}

impl InstanceNorm2d {
    /// `num_features` channels with PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`, no
    /// affine parameters, no running statistics.
    pub fn new(num_features: usize) -> InstanceNorm2d {
        InstanceNorm2d {
            weight: None,
            bias: None,
            running_mean: None,
            running_var: None,
            num_batches_tracked: None,
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            training: true,
        }
    }

    /// The value added to the variance for stability.
    pub fn with_eps(mut self, eps: f64) -> InstanceNorm2d {
        self.eps = eps;
        self
    }

    /// The weight of the newest batch in the running statistics; `None` gives the
    /// cumulative average.
    pub fn with_momentum(mut self, momentum: Option<f64>) -> InstanceNorm2d {
        self.momentum = momentum;
        self
    }

    /// Whether to learn a per-channel `weight` (1) and `bias` (0).
    pub fn with_affine(mut self, affine: bool) -> InstanceNorm2d {
        let c = self.num_features;
        self.weight = affine.then(|| Parameter::new(Tensor::ones(&[c])));
        self.bias = affine.then(|| Parameter::new(Tensor::zeros(&[c])));
        self
    }

    /// Whether an affine module learns `bias` too (PyTorch's `bias`).
    pub fn with_bias(mut self, bias: bool) -> InstanceNorm2d {
        if !bias {
            self.bias = None;
        } else if self.weight.is_some() && self.bias.is_none() {
            self.bias = Some(Parameter::new(Tensor::zeros(&[self.num_features])));
        }
        self
    }

    /// Whether to keep `running_mean` (0), `running_var` (1) and `num_batches_tracked` (0)
    /// and normalise with them in evaluation.
    pub fn with_track_running_stats(mut self, track: bool) -> InstanceNorm2d {
        let c = self.num_features;
        self.running_mean = track.then(|| Buffer::new(Tensor::zeros(&[c])));
        self.running_var = track.then(|| Buffer::new(Tensor::ones(&[c])));
        self.num_batches_tracked = track.then(|| Buffer::new(Tensor::from_vec(vec![0i64], &[])));
        self
    }

    /// Folds the per-instance statistics of `x` into the running ones (PyTorch averages the
    /// instances of the batch, with the unbiased variance).
    fn update(&self, x: &Tensor) {
        let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var) else {
            return;
        };
        no_grad(|| {
            let mut count = 1.0;
            if let Some(nbt) = &self.num_batches_tracked {
                nbt.add_(&Tensor::from_vec(vec![1i64], &[]));
                count = nbt.item();
            }
            let m = self.momentum.unwrap_or(1.0 / count);
            let x = x.detach().to_dtype(rm.dtype());
            let mean = x.mean_dims(&[2, 3], true);
            let centred = &x - &mean;
            let n = x.size(2) * x.size(3);
            let var = (&centred * &centred).sum_dims(&[2, 3], false) / (n.max(2) - 1) as f64;
            rm.mul_scalar_(1.0 - m).add_scaled_(
                &mean.reshape(&[x.size(0) as isize, -1]).mean_dim(0, false),
                m,
            );
            rv.mul_scalar_(1.0 - m)
                .add_scaled_(&var.mean_dim(0, false), m);
        });
    }

    fn describe(&self) -> String {
        let momentum = self.momentum.map_or_else(|| "None".to_string(), py_float);
        format!(
            "{}, eps={}, momentum={momentum}, affine={}, bias={}, track_running_stats={}",
            self.num_features,
            py_float(self.eps),
            py_bool(self.weight.is_some()),
            py_bool(self.bias.is_some()),
            py_bool(self.running_mean.is_some())
        )
    }
}

impl<'a> Forward<&'a Tensor> for InstanceNorm2d {
    type Output = Tensor;

    /// # Panics
    /// If the input is not `[N, num_features, H, W]`.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let shape = x.shape();
        if shape.len() != 4 || shape[1] != self.num_features {
            panic!(
                "InstanceNorm2d({}): expected [N, {}, H, W], got {shape:?}",
                self.num_features, self.num_features
            );
        }
        let y = match (&self.running_mean, &self.running_var) {
            (Some(mean), Some(var)) if !self.training => {
                let channel = [1, -1, 1, 1];
                &(x - &mean.reshape(&channel)) / &(&var.reshape(&channel) + self.eps).sqrt()
            }
            _ => {
                if self.training {
                    self.update(x);
                }
                normalize_groups(x, self.num_features, self.eps)
            }
        };
        let y = affine(y, self.weight.as_deref(), self.bias.as_deref());
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_statistics_are_the_batch_average_of_instance_statistics() {
        // Instance 1 of channel 0: [0, 2, 4, 6]: mean 3, unbiased var 20/3; instance 2:
        // [1, 1, 1, 1]: mean 1, var 0. Running mean 0.9·0 + 0.1·2, var 0.9·1 + 0.1·10/3.
        let norm = InstanceNorm2d::new(1).with_track_running_stats(true);
        let x = Tensor::from_vec(
            vec![0.0f64, 2.0, 4.0, 6.0, 1.0, 1.0, 1.0, 1.0],
            &[2, 1, 2, 2],
        );
        let _ = norm.forward(&x.float());
        let rm = norm.running_mean.as_ref().unwrap().to_vec::<f32>();
        let rv = norm.running_var.as_ref().unwrap().to_vec::<f32>();
        assert!((rm[0] - 0.2).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - (0.9 + 1.0 / 3.0)).abs() < 1e-6, "{rv:?}");
        let names: Vec<String> = norm.state_dict().keys().cloned().collect();
        assert_eq!(
            names,
            ["running_mean", "running_var", "num_batches_tracked"]
        );
    }

    #[test]
    fn evaluation_uses_the_running_statistics_when_tracked() {
        let mut norm = InstanceNorm2d::new(1).with_track_running_stats(true);
        norm.eval();
        let x = Tensor::from_vec(vec![3.0f32, 5.0], &[1, 1, 1, 2]);
        let y = norm.forward(&x).to_vec::<f32>();
        assert!(
            (y[0] - 3.0).abs() < 1e-4 && (y[1] - 5.0).abs() < 1e-4,
            "{y:?}"
        );
    }
}
