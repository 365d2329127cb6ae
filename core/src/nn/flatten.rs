//! [`Flatten`] and [`Identity`]: layers that only reshape or pass through.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::tensor::Tensor;

/// Merges dimensions `start_dim..=end_dim` into one (PyTorch's `nn.Flatten`, by default
/// everything after the batch dimension).
///
/// # Shapes
/// `[N, C, H, W] → [N, C·H·W]` with the defaults.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Flatten, Forward}};
/// let x = Tensor::zeros(&[2, 3, 4, 5]);
/// assert_eq!(Flatten::new().forward(&x).shape(), [2, 60]);
/// assert_eq!(Flatten::with_dims(1, 2).forward(&x).shape(), [2, 12, 5]);
/// ```
#[derive(Module)]
#[module(extra_repr = "Flatten::describe")]
pub struct Flatten {
    #[module(skip)]
    start_dim: isize,
    #[module(skip)]
    end_dim: isize,
    #[module(training)]
    training: bool,
}

impl Flatten {
    /// `start_dim = 1`, `end_dim = -1`.
    pub fn new() -> Flatten {
        Flatten::with_dims(1, -1)
    }

    /// Flattens `start_dim..=end_dim` (negative dims count from the end).
    pub fn with_dims(start_dim: isize, end_dim: isize) -> Flatten {
        Flatten {
            start_dim,
            end_dim,
            training: true,
        }
    }

    fn describe(&self) -> String {
        format!("start_dim={}, end_dim={}", self.start_dim, self.end_dim)
    }
}

impl Default for Flatten {
    fn default() -> Flatten {
        Flatten::new()
    }
}

impl<'a> Forward<&'a Tensor> for Flatten {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.flatten(self.start_dim, self.end_dim);
        crate::nn::summary::record(self, &y);
        y
    }
}

/// Returns its input (PyTorch's `nn.Identity`): a placeholder, e.g. for a removed head.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Forward, Identity, Linear, Module, sequential}};
/// // A backbone whose head is replaced: the keys of the other layers stay as they were.
/// let model = sequential![Linear::new(4, 8), Identity];
/// assert_eq!(model.forward(&Tensor::zeros(&[3, 4])).shape(), [3, 8]);
/// assert_eq!(model.state_dict().len(), 2);
/// ```
#[derive(Module, Clone, Copy, Debug, Default)]
pub struct Identity;

impl<'a> Forward<&'a Tensor> for Identity {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        crate::nn::summary::record(self, x);
        x.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_all_but_the_batch_dimension() {
        let y = Flatten::new().forward(&Tensor::zeros(&[2, 3, 2, 2]));
        assert_eq!(y.shape(), [2, 12]);
        assert_eq!(
            Flatten::new().to_string(),
            "Flatten(start_dim=1, end_dim=-1)"
        );
        assert_eq!(Identity.to_string(), "Identity()");
    }
}
