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
    /// [`Forward::forward`] through a trait object, keeping the caller's line for panics.
    ///
    /// `#[track_caller]` on an impl's `forward` is lost through `dyn`; declared here on the
    /// trait, it holds for every layer, so a shape error inside a boxed layer points at the
    /// line that called the chain.
    #[track_caller]
    fn forward_layer(&self, input: &Tensor) -> Tensor {
        self.forward(input)
    }
}

impl<T> Layer for T where T: Module + for<'a> Forward<&'a Tensor, Output = Tensor> + Send + Sync {}

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
