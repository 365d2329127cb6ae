//! [`LayerNorm`]: normalisation over the last dimensions of each sample, built from
//! existing ops.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::{py_bool, py_float};
use crate::nn::parameter::Parameter;
use crate::tensor::Tensor;

/// Normalises over the trailing `normalized_shape` dimensions with the biased variance,
/// then scales by `weight` and shifts by `bias` (PyTorch's `nn.LayerNorm`;
/// `with_bias(false)` is PyTorch 2.1's `bias=False`, and the printed form names `bias=`
/// as PyTorch 2.1+ does).
///
/// # Shapes
/// `[…, *normalized_shape] → the same`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Forward, LayerNorm}};
/// let ln = LayerNorm::new(&[4]);
/// let y = ln.forward(&Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 4]));
/// let v = y.to_vec::<f32>();
/// assert!(v.iter().sum::<f32>().abs() < 1e-5); // each row has mean 0 ...
/// assert!((v.iter().map(|x| x * x).sum::<f32>() / 4.0 - 1.0).abs() < 1e-4); // ... and variance 1
/// ```
#[derive(Module)]
#[module(extra_repr = "LayerNorm::describe")]
pub struct LayerNorm {
    /// The learned scale of `normalized_shape`, or `None` when `elementwise_affine` is false.
    pub weight: Option<Parameter>,
    /// The learned shift of `normalized_shape`, or `None` without affine or bias.
    pub bias: Option<Parameter>,
    #[module(skip)]
    normalized_shape: Vec<usize>,
    #[module(skip)]
    eps: f64,
    #[module(training)]
    training: bool,
}

impl LayerNorm {
    /// Normalisation over the trailing dimensions `normalized_shape` (`&[6]`), with
    /// `eps = 1e-5` and an elementwise affine (`weight` 1, `bias` 0).
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm {
            weight: Some(Parameter::new(Tensor::ones(normalized_shape))),
            bias: Some(Parameter::new(Tensor::zeros(normalized_shape))),
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            training: true,
        }
    }

    /// The value added to the variance for stability.
    pub fn with_eps(mut self, eps: f64) -> LayerNorm {
        self.eps = eps;
        self
    }

    /// Whether to learn a `bias` (PyTorch's `bias`, default true); `false` keeps `weight`.
    pub fn with_bias(mut self, bias: bool) -> LayerNorm {
        if !bias {
            self.bias = None;
        }
        self
    }

    /// The value added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The trailing dimensions normalised over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// Whether to learn `weight` and `bias` (PyTorch's `elementwise_affine`).
    pub fn with_elementwise_affine(mut self, affine: bool) -> LayerNorm {
        if !affine {
            self.weight = None;
            self.bias = None;
        }
        self
    }

    fn describe(&self) -> String {
        let dims: Vec<String> = self
            .normalized_shape
            .iter()
            .map(|d| d.to_string())
            .collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        format!(
            "{shape}, eps={}, elementwise_affine={}, bias={}",
            py_float(self.eps),
            py_bool(self.weight.is_some()),
            py_bool(self.bias.is_some())
        )
    }
}

impl<'a> Forward<&'a Tensor> for LayerNorm {
    type Output = Tensor;

    /// # Panics
    /// If the input's trailing dimensions are not `normalized_shape`.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let shape = x.shape();
        let k = self.normalized_shape.len();
        if shape.len() < k || shape[shape.len() - k..] != self.normalized_shape[..] {
            panic!(
                "LayerNorm({}): input {shape:?} does not end with normalized_shape {:?}",
                self.describe(),
                self.normalized_shape
            );
        }
        let y = crate::nn::functional::layer_norm(
            x,
            &self.normalized_shape,
            self.weight.as_deref(),
            self.bias.as_deref(),
            self.eps,
        );
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_row() {
        let ln = LayerNorm::new(&[2]);
        let y = ln.forward(&Tensor::from_vec(vec![1.0f32, 3.0, 10.0, 20.0], &[2, 2]));
        for v in y.to_vec::<f32>().chunks(2) {
            assert!(
                (v[0] + 1.0).abs() < 1e-3 && (v[1] - 1.0).abs() < 1e-3,
                "{v:?}"
            );
        }
        assert_eq!(
            ln.to_string(),
            "LayerNorm((2,), eps=1e-05, elementwise_affine=True, bias=True)"
        );
    }
}
