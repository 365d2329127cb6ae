//! [`Forward`]: calling a module, and [`Layer`], a module that maps a tensor to a tensor.

use crate::nn::module::Module;
use crate::tensor::Tensor;

/// The call of a module on an input: `model.forward(&xb)`.
///
/// Layers implement `Forward<&Tensor, Output = Tensor>`; a module can take and give
/// anything (a tuple of tensors, a batch struct). In a [`sequential!`](crate::nn::sequential)
/// chain the first layer gets the input and each later one a reference to the previous
/// output, so the chain compiles only if each output fits the next layer's input.
///
/// # Example
///
/// A layer of your own (`Forward<&Tensor, Output = Tensor>`, so it goes into `sequential!`)
/// and a module that takes two inputs and gives two outputs:
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::nn::{Forward, Linear, Module, ReLU, sequential};
///
/// /// `x + fc(x)`: a residual block.
/// #[derive(Module)]
/// struct Residual {
///     fc: Linear,
/// }
///
/// impl Forward<&Tensor> for Residual {
///     type Output = Tensor;
///
///     fn forward(&self, x: &Tensor) -> Tensor {
///         x + &self.fc.forward(x)
///     }
/// }
///
/// /// Encodes a pair of inputs with one shared layer; gives both codes.
/// #[derive(Module)]
/// struct Siamese {
///     encoder: Linear,
/// }
///
/// impl Forward<(&Tensor, &Tensor)> for Siamese {
///     type Output = (Tensor, Tensor);
///
///     fn forward(&self, (a, b): (&Tensor, &Tensor)) -> (Tensor, Tensor) {
///         (self.encoder.forward(a), self.encoder.forward(b))
///     }
/// }
///
/// let model = sequential![Linear::new(4, 8), ReLU, Residual { fc: Linear::new(8, 8) }];
/// assert_eq!(model.forward(&Tensor::randn(&[2, 4])).shape(), [2, 8]);
/// assert!(model.state_dict().contains_key("2.fc.weight"));
///
/// let siamese = Siamese { encoder: Linear::new(4, 3) };
/// let (za, zb) = siamese.forward((&Tensor::randn(&[5, 4]), &Tensor::randn(&[5, 4])));
/// assert_eq!((za.shape(), zb.shape()), (vec![5, 3], vec![5, 3]));
/// ```
pub trait Forward<Input> {
    /// What the call gives.
    type Output;

    /// Runs the module on `input`.
    fn forward(&self, input: Input) -> Self::Output;
}

/// A module from tensor to tensor that can be boxed into a run-time
/// [`Sequential`](crate::nn::Sequential): implemented for every such module.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::Tensor;
/// use torchlet::nn::{Forward, Layer, Linear, ReLU};
///
/// // Layers chosen at run time, e.g. from a configuration.
/// let widths = [4, 8, 8, 2];
/// let mut layers: Vec<Box<dyn Layer>> = Vec::new();
/// for w in widths.windows(2) {
///     layers.push(Box::new(Linear::new(w[0], w[1])));
///     layers.push(Box::new(ReLU));
/// }
/// let mut x = Tensor::zeros(&[3, 4]);
/// for layer in &layers {
///     x = layer.forward(&x);
/// }
/// assert_eq!(x.shape(), [3, 2]);
/// ```
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
