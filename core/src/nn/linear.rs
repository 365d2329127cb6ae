//! [`Linear`]: `y = x · weightᵀ + bias` (PyTorch's `nn.Linear`).

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::module::py_bool;
use crate::nn::parameter::Parameter;
use crate::tensor::Tensor;

/// A fully connected layer: `y = x · weightᵀ + bias` over the last dimension.
///
/// `weight` is `[out_features, in_features]` and `bias` `[out_features]`, PyTorch's layout,
/// both drawn from `U(-1/sqrt(in_features), 1/sqrt(in_features))` as PyTorch does.
///
/// # Shapes
/// `[…, in_features] → […, out_features]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, Linear};
/// use torchlet::Tensor;
/// let fc = Linear::new(784, 128);
/// assert_eq!(fc.weight.shape(), [128, 784]);
/// assert_eq!(fc.forward(&Tensor::zeros(&[64, 784])).shape(), [64, 128]);
/// assert_eq!(fc.to_string(), "Linear(in_features=784, out_features=128, bias=True)");
/// ```
#[derive(Module)]
#[module(extra_repr = "Linear::describe")]
pub struct Linear {
    /// The weight `[out_features, in_features]`.
    pub weight: Parameter,
    /// The bias `[out_features]`, or `None` when made with `with_bias(.., false)`.
    pub bias: Option<Parameter>,
    #[module(training)]
    training: bool,
}

impl Linear {
    /// A layer from `in_features` to `out_features` with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Linear {
        Linear::with_bias(in_features, out_features, true)
    }

    /// A layer with a bias or without (PyTorch's `bias=False`).
    pub fn with_bias(in_features: usize, out_features: usize, bias: bool) -> Linear {
        let (w, b) = init::default_weight_and_bias(&[out_features, in_features], bias);
        Linear::from_parts(w, b)
    }

    /// A layer over given tensors: `weight` `[out, in]` and optional `bias` `[out]`.
    ///
    /// # Panics
    /// If the shapes do not fit together.
    #[track_caller]
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Linear {
        let ws = weight.shape();
        if ws.len() != 2 || bias.as_ref().is_some_and(|b| b.shape() != ws[..1]) {
            panic!(
                "Linear::from_parts: weight must be [out, in] and bias [out], got {ws:?} and {:?}",
                bias.map(|b| b.shape())
            );
        }
        Linear {
            weight: Parameter::new(weight),
            bias: bias.map(Parameter::new),
            training: true,
        }
    }

    /// The size of each input sample.
    pub fn in_features(&self) -> usize {
        self.weight.size(1)
    }

    /// The size of each output sample.
    pub fn out_features(&self) -> usize {
        self.weight.size(0)
    }

    fn describe(&self) -> String {
        format!(
            "in_features={}, out_features={}, bias={}",
            self.in_features(),
            self.out_features(),
            py_bool(self.bias.is_some())
        )
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn linear_input_error(layer: &Linear, shape: &[usize]) -> ! {
    panic!(
        "Linear({}): got input {shape:?}; its last dimension must be in_features = {}",
        layer.describe(),
        layer.in_features()
    )
}

impl<'a> Forward<&'a Tensor> for Linear {
    type Output = Tensor;

    /// # Panics
    /// If the input's last dimension is not `in_features`.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let shape = x.shape();
        if shape.last() != Some(&self.in_features()) {
            linear_input_error(self, &shape);
        }
        let y = x.linear(&self.weight, self.bias.as_deref());
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_fills_weight_and_bias_grads() {
        // y = x·wᵀ + b with x = [[1, 2]], w = [[3, 4]]: dy/dw = x, dy/db = 1.
        let l = Linear::from_parts(
            Tensor::from_vec(vec![3.0f32, 4.0], &[1, 2]),
            Some(Tensor::zeros(&[1])),
        );
        let y = l.forward(&Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2]));
        assert_eq!(y.to_vec::<f32>(), [11.0]);
        y.sum().backward();
        assert_eq!(l.weight.grad().unwrap().to_vec::<f32>(), [1.0, 2.0]);
        assert_eq!(
            l.bias.as_ref().unwrap().grad().unwrap().to_vec::<f32>(),
            [1.0]
        );
    }

    #[test]
    fn registry_names_weight_then_bias() {
        let l = Linear::with_bias(3, 2, false);
        let names: Vec<_> = l.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight"]);
        assert_eq!(
            l.to_string(),
            "Linear(in_features=3, out_features=2, bias=False)"
        );
    }

    #[test]
    #[should_panic(
        expected = "Linear(in_features=64, out_features=10, bias=True): got input [32, 128]"
    )]
    fn wrong_input_names_the_layer_and_shape() {
        Linear::new(64, 10).forward(&Tensor::zeros(&[32, 128]));
    }
}
