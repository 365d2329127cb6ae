//! [`BatchNorm1d`] and [`BatchNorm2d`]: normalisation over the batch (and spatial)
//! dimensions per channel, with running statistics for evaluation.
//!
//! Built from existing ops (mean, subtraction, sqrt, …), so autograd differentiates it; the
//! running statistics are updated in place outside the graph, as PyTorch does.

use crate::autograd::no_grad;
use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::{py_bool, py_float};
use crate::nn::parameter::{Buffer, Parameter};
use crate::tensor::Tensor;

/// The state both batch norms share.
struct Stats<'a> {
    name: &'static str,
    num_features: usize,
    eps: f64,
    momentum: Option<f64>,
    weight: Option<&'a Parameter>,
    bias: Option<&'a Parameter>,
    running_mean: Option<&'a Buffer>,
    running_var: Option<&'a Buffer>,
    num_batches_tracked: Option<&'a Buffer>,
    training: bool,
}

impl Stats<'_> {
    #[track_caller]
    fn forward(&self, x: &Tensor, dims: &[usize]) -> Tensor {
        let shape = x.shape();
        if !dims.contains(&shape.len()) || shape[1] != self.num_features {
            panic!(
                "{}({}): expected a {}-D input with {} channels in dimension 1, got {shape:?}",
                self.name,
                self.num_features,
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.num_features
            );
        }
        let axes: Vec<isize> = (0..shape.len() as isize).filter(|&d| d != 1).collect();
        let mut channel = vec![1isize; shape.len()];
        channel[1] = -1;
        let running = self.running_mean.zip(self.running_var);
        let y = match running {
            Some((mean, var)) if !self.training => {
                let mean = mean.reshape(&channel);
                let var = var.reshape(&channel);
                &(x - &mean) / &(&var + self.eps).sqrt()
            }
            _ => {
                let mean = x.mean_dims(&axes, true);
                let centred = x - &mean;
                let var = (&centred * &centred).mean_dims(&axes, true);
                if self.training {
                    let n = x.numel() / self.num_features;
                    self.update(&mean, &var, n);
                }
                &centred / &(&var + self.eps).sqrt()
            }
        };
        let y = match self.weight {
            Some(w) => &y * &w.reshape(&channel),
            None => y,
        };
        match self.bias {
            Some(b) => &y + &b.reshape(&channel),
            None => y,
        }
    }

    /// `running = (1 − momentum)·running + momentum·batch`, with the unbiased variance;
    /// `momentum = None` gives the cumulative average `1 / num_batches_tracked`.
    fn update(&self, mean: &Tensor, var: &Tensor, n: usize) {
        let (Some(rm), Some(rv)) = (self.running_mean, self.running_var) else {
            return;
        };
        no_grad(|| {
            let mut count = 1.0;
            if let Some(nbt) = self.num_batches_tracked {
                nbt.add_(&Tensor::from_vec(vec![1i64], &[]));
                count = nbt.item();
            }
            let m = self.momentum.unwrap_or(1.0 / count);
            let unbiased = n as f64 / (n.max(2) - 1) as f64;
            let mean = mean.detach().reshape(&[-1]).to_dtype(rm.dtype());
            let var = var.detach().reshape(&[-1]).to_dtype(rv.dtype());
            rm.mul_scalar_(1.0 - m).add_scaled_(&mean, m);
            rv.mul_scalar_(1.0 - m).add_scaled_(&var, m * unbiased);
        });
    }

    fn describe(&self) -> String {
        let momentum = self.momentum.map_or_else(|| "None".to_string(), py_float);
        let affine = self.weight.is_some();
        format!(
            "{}, eps={}, momentum={momentum}, affine={}, bias={}, track_running_stats={}",
            self.num_features,
            py_float(self.eps),
            py_bool(affine),
            py_bool(!affine || self.bias.is_some()),
            py_bool(self.running_mean.is_some())
        )
    }
}

macro_rules! batch_norm {
    ($(#[$doc:meta])* $name:ident, $dims:expr) => {
        $(#[$doc])*
        #[derive(Module)]
        #[module(extra_repr = "Self::describe")]
        pub struct $name {
            pub weight: Option<Parameter>,
            pub bias: Option<Parameter>,
            pub running_mean: Option<Buffer>,
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

        impl $name {
            /// Normalisation of `num_features` channels with PyTorch's defaults: `eps = 1e-5`,
            /// `momentum = 0.1`, affine (`weight` 1, `bias` 0), tracking running statistics
            /// (`running_mean` 0, `running_var` 1, `num_batches_tracked` 0).
            pub fn new(num_features: usize) -> $name {
                $name {
                    weight: Some(Parameter::new(Tensor::ones(&[num_features]))),
                    bias: Some(Parameter::new(Tensor::zeros(&[num_features]))),
                    running_mean: Some(Buffer::new(Tensor::zeros(&[num_features]))),
                    running_var: Some(Buffer::new(Tensor::ones(&[num_features]))),
                    num_batches_tracked: Some(Buffer::new(Tensor::from_vec(vec![0i64], &[]))),
                    num_features,
                    eps: 1e-5,
                    momentum: Some(0.1),
                    training: true,
                }
            }

            /// The value added to the variance for stability.
            pub fn with_eps(mut self, eps: f64) -> $name {
                self.eps = eps;
                self
            }

            /// The weight of each new batch in the running statistics; `None` gives the
            /// cumulative average.
            pub fn with_momentum(mut self, momentum: Option<f64>) -> $name {
                self.momentum = momentum;
                self
            }

            /// Whether to learn a per-channel scale and shift (PyTorch's `affine`).
            pub fn with_affine(mut self, affine: bool) -> $name {
                if !affine {
                    self.weight = None;
                    self.bias = None;
                }
                self
            }

            /// Whether to keep running statistics; without them, evaluation also uses
            /// batch statistics.
            pub fn with_track_running_stats(mut self, track: bool) -> $name {
                if !track {
                    self.running_mean = None;
                    self.running_var = None;
                    self.num_batches_tracked = None;
                }
                self
            }

            fn stats(&self) -> Stats<'_> {
                Stats {
                    name: stringify!($name),
                    num_features: self.num_features,
                    eps: self.eps,
                    momentum: self.momentum,
                    weight: self.weight.as_ref(),
                    bias: self.bias.as_ref(),
                    running_mean: self.running_mean.as_ref(),
                    running_var: self.running_var.as_ref(),
                    num_batches_tracked: self.num_batches_tracked.as_ref(),
                    training: self.training,
                }
            }

            fn describe(&self) -> String {
                self.stats().describe()
            }
        }

        impl<'a> Forward<&'a Tensor> for $name {
            type Output = Tensor;

            /// In training mode, normalises with the batch statistics and updates the
            /// running ones; in evaluation mode, uses the running statistics.
            #[track_caller]
            fn forward(&self, x: &'a Tensor) -> Tensor {
                let _scope = crate::nn::ModuleScope::enter(self);
                let y = self.stats().forward(x, &$dims);
                crate::nn::summary::record(self, &y);
                y
            }
        }
    };
}

batch_norm!(
    /// Batch normalisation of `[N, C]` or `[N, C, L]` inputs over all dimensions but `C`
    /// (PyTorch's `nn.BatchNorm1d`).
    BatchNorm1d,
    [2, 3]
);

batch_norm!(
    /// Batch normalisation of `[N, C, H, W]` images over `N, H, W` (PyTorch's
    /// `nn.BatchNorm2d`).
    BatchNorm2d,
    [4]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_order_and_repr_match_pytorch() {
        let bn = BatchNorm2d::new(4);
        let keys: Vec<_> = bn.state_dict().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked"
            ]
        );
        assert_eq!(
            bn.to_string(),
            "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
        );
    }

    #[test]
    fn training_updates_running_stats_and_eval_uses_them() {
        let mut bn = BatchNorm1d::new(1);
        let x = Tensor::from_vec(vec![1.0f32, 3.0], &[2, 1]);
        let y = bn.forward(&x);
        assert_eq!(
            y.to_vec::<f32>()
                .iter()
                .map(|v| v.round())
                .collect::<Vec<_>>(),
            [-1.0, 1.0]
        );
        // mean 2, unbiased variance 2: 0.9·0 + 0.1·2 and 0.9·1 + 0.1·2.
        let rm = bn.running_mean.as_ref().unwrap().to_vec::<f32>()[0];
        let rv = bn.running_var.as_ref().unwrap().to_vec::<f32>()[0];
        assert!(
            (rm - 0.2).abs() < 1e-6 && (rv - 1.1).abs() < 1e-6,
            "{rm} {rv}"
        );
        assert_eq!(
            bn.num_batches_tracked.as_ref().unwrap().to_vec::<i64>(),
            [1]
        );
        bn.eval();
        let y = bn.forward(&x).to_vec::<f32>();
        assert!((y[0] - (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt()).abs() < 1e-6);
    }
}
