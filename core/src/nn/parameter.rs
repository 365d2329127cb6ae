//! [`Parameter`] and [`Buffer`]: the tensors a module owns.
//!
//! Both are handles (clones share data), so an optimizer holding a model's parameters
//! updates the very tensors the model computes with.

use crate::tensor::Tensor;
use std::fmt;
use std::ops::Deref;

/// A trainable tensor: it requires grad, is returned by `parameters()`, and is saved in the
/// state dict (PyTorch's `nn.Parameter`).
///
/// It dereferences to its [`Tensor`], so tensor methods apply to it directly.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::nn::{Module, Parameter};
///
/// /// A learned temperature that divides the logits.
/// #[derive(Module)]
/// struct Scaled {
///     temperature: Parameter,
/// }
///
/// let m = Scaled { temperature: Parameter::new(Tensor::ones(&[1])) };
/// assert!(m.temperature.requires_grad());
/// let loss = (&Tensor::from_vec(vec![2.0f32, 4.0], &[2]) / &*m.temperature).sum();
/// loss.backward();
/// assert_eq!(m.temperature.grad().unwrap().to_vec::<f32>(), [-6.0]);
/// assert_eq!(m.parameters().len(), 1);
/// ```
#[derive(Clone)]
pub struct Parameter(Tensor);

impl Parameter {
    /// Wraps `tensor` as a leaf that requires grad (detached from any graph it came from).
    ///
    /// # Panics
    /// If `tensor` is not floating point.
    #[track_caller]
    pub fn new(tensor: Tensor) -> Parameter {
        Parameter(tensor.detach().requires_grad_(true))
    }

    /// The tensor (a cheap handle clone shares it).
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
}

impl Deref for Parameter {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

impl AsRef<Tensor> for Parameter {
    fn as_ref(&self) -> &Tensor {
        &self.0
    }
}

impl From<Parameter> for Tensor {
    fn from(p: Parameter) -> Tensor {
        p.0
    }
}

impl From<Tensor> for Parameter {
    #[track_caller]
    fn from(t: Tensor) -> Parameter {
        Parameter::new(t)
    }
}

impl fmt::Debug for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Parameter containing:\n{}", self.0)
    }
}

/// A tensor that belongs to a module's state but is not trained, such as BatchNorm's
/// `running_mean` (PyTorch's `register_buffer`). It is saved in the state dict and never
/// requires grad.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::nn::{Buffer, Module};
///
/// /// Counts the batches it has seen, in its state dict.
/// #[derive(Module)]
/// struct Counter {
///     seen: Buffer,
/// }
///
/// let c = Counter { seen: Buffer::new(Tensor::from_vec(vec![0i64], &[])) };
/// c.seen.add_(&Tensor::from_vec(vec![1i64], &[]));
/// assert_eq!(c.state_dict().get("seen").unwrap().to_vec::<i64>(), [1]);
/// assert!(c.parameters().is_empty() && !c.seen.requires_grad());
/// ```
#[derive(Clone)]
pub struct Buffer(Tensor);

impl Buffer {
    /// Wraps `tensor` (detached; any dtype, e.g. i64 for `num_batches_tracked`).
    pub fn new(tensor: Tensor) -> Buffer {
        Buffer(tensor.detach())
    }

    /// The tensor (a cheap handle clone shares it).
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
}

impl Deref for Buffer {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

impl AsRef<Tensor> for Buffer {
    fn as_ref(&self) -> &Tensor {
        &self.0
    }
}

impl From<Buffer> for Tensor {
    fn from(b: Buffer) -> Tensor {
        b.0
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_requires_grad_and_shares_data() {
        let p = Parameter::new(Tensor::zeros(&[2]));
        assert!(p.requires_grad() && p.is_leaf());
        let handle: Tensor = p.clone().into();
        crate::autograd::no_grad(|| handle.add_(&Tensor::ones(&[2])));
        assert_eq!(p.to_vec::<f32>(), [1.0, 1.0]);
        let b = Buffer::new(Tensor::zeros(&[1]));
        assert!(!b.requires_grad());
    }
}
