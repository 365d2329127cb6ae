//! [`Forward`]: calling a module, and [`Layer`], a module that maps a tensor to a tensor.

use crate::nn::module::Module;
use crate::tensor::Tensor;

/// The call of a module on an input: `model.forward(&xb)`.
///
/// Layers implement `Forward<&Tensor, Output = Tensor>`; a module can take and give
/// anything (a tuple of tensors, a batch struct). In a [`sequential!`](crate::nn::sequential)
/// chain the first layer gets the input and each later one a reference to the previous
/// output, so the chain compiles only if each output fits the next layer's input.
pub trait Forward<Input> {
    /// What the call gives.
    type Output;

    /// Runs the module on `input`.
    fn forward(&self, input: Input) -> Self::Output;
}

/// A module from tensor to tensor that can be boxed into a run-time
/// [`Sequential`](crate::nn::Sequential): implemented for every such module.
pub trait Layer: Module + for<'a> Forward<&'a Tensor, Output = Tensor> + Send + Sync {
    /// [`Forward::forward`] through a `dyn Layer` that keeps the caller's location for a
    /// panic: `#[track_caller]` on a trait's declaration is what carries the location
    /// through a vtable, and `Forward` does not declare it (a panic inside a user's own
    /// `forward` should point into that `forward`).
    #[track_caller]
    fn forward_layer(&self, input: &Tensor) -> Tensor;
}

impl<T> Layer for T
where
    T: Module + for<'a> Forward<&'a Tensor, Output = Tensor> + Send + Sync,
{
    #[track_caller]
    fn forward_layer(&self, input: &Tensor) -> Tensor {
        self.forward(input)
    }
}

impl<In, M: Forward<In>> Forward<In> for Box<M> {
    type Output = M::Output;

    #[track_caller]
    fn forward(&self, input: In) -> M::Output {
        (**self).forward(input)
    }
}

/// A boxed layer (the main job's model) calls through [`Layer::forward_layer`], so that a
/// panic inside points at the caller's line.
impl<'a> Forward<&'a Tensor> for Box<dyn Layer> {
    type Output = Tensor;
    #[track_caller]
    fn forward(&self, input: &'a Tensor) -> Tensor {
        (**self).forward_layer(input)
    }
}
