//! [`Dropout`]: zeroes elements at random during training.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::py_float;
use crate::tensor::Tensor;

/// In training mode, zeroes each element with probability `p` and scales the rest by
/// `1 / (1 − p)`; in evaluation mode, the identity (PyTorch's `nn.Dropout`).
///
/// The mask is drawn from the global generator, so [`manual_seed`](crate::manual_seed)
/// makes it repeatable.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, manual_seed, nn::{Dropout, Forward, Module}};
/// manual_seed(0);
/// let mut drop = Dropout::new(0.5);
/// let y = drop.forward(&Tensor::ones(&[1000])).to_vec::<f32>();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0)); // kept values scaled by 1 / (1 - p)
/// drop.eval();
/// assert_eq!(drop.forward(&Tensor::ones(&[3])).to_vec::<f32>(), [1.0; 3]);
/// ```
#[derive(Module)]
#[module(extra_repr = "Dropout::describe")]
pub struct Dropout {
    #[module(skip)]
    p: f64,
    #[module(training)]
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p`.
    ///
    /// # Panics
    /// If `p` is outside `[0, 1]`.
    #[track_caller]
    pub fn new(p: f64) -> Dropout {
        if !(0.0..=1.0).contains(&p) {
            panic!("Dropout: dropout probability has to be between 0 and 1, but got {p}");
        }
        Dropout { p, training: true }
    }

    /// The probability of zeroing an element.
    pub fn p(&self) -> f64 {
        self.p
    }

    fn describe(&self) -> String {
        format!("p={}, inplace=False", py_float(self.p))
    }
}

impl Default for Dropout {
    /// `p = 0.5`, PyTorch's default.
    fn default() -> Dropout {
        Dropout::new(0.5)
    }
}

impl<'a> Forward<&'a Tensor> for Dropout {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        // The output has the input's shape, whichever way it is made.
        crate::nn::summary::record(self, x);
        if !self.training || self.p == 0.0 {
            return x.clone();
        }
        if self.p == 1.0 {
            return x * &x.zeros_like();
        }
        let keep = crate::random::dropout_mask(&x.shape(), self.p, x.dtype());
        &(x * &keep) * (1.0 / (1.0 - self.p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_p_and_keeps_the_mean_in_training_only() {
        crate::random::manual_seed(0);
        let mut d = Dropout::new(0.25);
        let y = d.forward(&Tensor::ones(&[10_000])).to_vec::<f32>();
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        assert!((2300..2700).contains(&zeros), "{zeros}");
        assert!(y.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        d.eval();
        assert_eq!(d.forward(&Tensor::ones(&[3])).to_vec::<f32>(), [1.0; 3]);
        assert_eq!(d.to_string(), "Dropout(p=0.25, inplace=False)");
    }

    #[test]
    fn the_same_seed_gives_the_same_mask() {
        let d = Dropout::new(0.5);
        crate::random::manual_seed(9);
        let a = d.forward(&Tensor::ones(&[64])).to_vec::<f32>();
        crate::random::manual_seed(9);
        let b = d.forward(&Tensor::ones(&[64])).to_vec::<f32>();
        assert_eq!(a, b);
    }
}
