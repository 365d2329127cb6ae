//! Activation functions as modules (PyTorch's `nn.ReLU`, `nn.GELU`, …), for use in
//! `sequential!` chains. Each calls the tensor method of the same name.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::py_float;
use crate::tensor::Tensor;

macro_rules! unit_activation {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        #[derive(Module, Clone, Copy, Debug, Default)]
        pub struct $name;

        impl<'a> Forward<&'a Tensor> for $name {
            type Output = Tensor;

            #[track_caller]
            fn forward(&self, x: &'a Tensor) -> Tensor {
                let _scope = crate::nn::ModuleScope::enter(self);
                let y = x.$method();
                crate::nn::summary::record(self, &y);
                y
            }
        }
    };
}

unit_activation!(
    /// `max(0, x)` element-wise.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{Forward, ReLU}};
    /// let y = ReLU.forward(&Tensor::from_vec(vec![-1.0f32, 2.0], &[2]));
    /// assert_eq!(y.to_vec::<f32>(), [0.0, 2.0]);
    /// ```
    ReLU,
    relu
);
unit_activation!(
    /// `1 / (1 + e^(−x))` element-wise.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{Forward, Sigmoid}};
    /// assert_eq!(Sigmoid.forward(&Tensor::zeros(&[2])).to_vec::<f32>(), [0.5, 0.5]);
    /// ```
    Sigmoid,
    sigmoid
);
unit_activation!(
    /// `tanh(x)` element-wise.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{Forward, Tanh}};
    /// let y = Tanh.forward(&Tensor::from_vec(vec![0.0f64, 1.0], &[2]));
    /// assert_eq!(y.to_vec::<f64>(), [0.0, 1f64.tanh()]);
    /// ```
    Tanh,
    tanh
);

/// `x` for `x > 0`, `negative_slope · x` otherwise.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Forward, LeakyReLU}};
/// let y = LeakyReLU::new(0.5).forward(&Tensor::from_vec(vec![-1.0f32, 2.0], &[2]));
/// assert_eq!(y.to_vec::<f32>(), [-0.5, 2.0]);
/// assert_eq!(LeakyReLU::default().to_string(), "LeakyReLU(negative_slope=0.01)");
/// ```
#[derive(Module, Clone, Copy, Debug)]
#[module(extra_repr = "LeakyReLU::describe")]
pub struct LeakyReLU {
    #[module(skip)]
    negative_slope: f64,
    #[module(training)]
    training: bool,
}

impl LeakyReLU {
    /// A leaky ReLU with the given slope for negative inputs.
    pub fn new(negative_slope: f64) -> LeakyReLU {
        LeakyReLU {
            negative_slope,
            training: true,
        }
    }

    fn describe(&self) -> String {
        format!("negative_slope={}", py_float(self.negative_slope))
    }
}

impl Default for LeakyReLU {
    /// `negative_slope = 0.01`, PyTorch's default.
    fn default() -> LeakyReLU {
        LeakyReLU::new(0.01)
    }
}

impl<'a> Forward<&'a Tensor> for LeakyReLU {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.leaky_relu(self.negative_slope);
        crate::nn::summary::record(self, &y);
        y
    }
}

/// The Gaussian error linear unit `x · Φ(x)`, exact (`approximate = "none"`) or with the
/// tanh approximation (`"tanh"`).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Forward, GELU}};
/// let x = Tensor::from_vec(vec![-1.0f64, 0.0, 1.0], &[3]);
/// let exact = GELU::new().forward(&x).to_vec::<f64>();
/// let approx = GELU::with_approximate("tanh").forward(&x).to_vec::<f64>();
/// assert_eq!(exact[1], 0.0);
/// assert!((exact[2] - 0.8413447460685429).abs() < 1e-12); // 1 · Φ(1)
/// assert!((approx[2] - exact[2]).abs() < 1e-3);
/// ```
#[allow(
    clippy::upper_case_acronyms,
    reason = "PyTorch's name, nn.GELU, so that a search finds it"
)]
#[derive(Module, Clone, Copy, Debug)]
#[module(extra_repr = "GELU::describe")]
pub struct GELU {
    #[module(skip)]
    tanh: bool,
    #[module(training)]
    training: bool,
}

impl GELU {
    /// The exact GELU.
    pub fn new() -> GELU {
        GELU {
            tanh: false,
            training: true,
        }
    }

    /// `approximate = "none"` or `"tanh"`, as in PyTorch.
    ///
    /// # Panics
    /// On any other value.
    #[track_caller]
    pub fn with_approximate(approximate: &str) -> GELU {
        let tanh = match approximate {
            "none" => false,
            "tanh" => true,
            other => panic!("GELU: approximate must be \"none\" or \"tanh\", got {other:?}"),
        };
        GELU {
            tanh,
            training: true,
        }
    }

    fn describe(&self) -> String {
        format!("approximate='{}'", if self.tanh { "tanh" } else { "none" })
    }
}

impl Default for GELU {
    fn default() -> GELU {
        GELU::new()
    }
}

impl<'a> Forward<&'a Tensor> for GELU {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = if self.tanh { x.gelu_tanh() } else { x.gelu() };
        crate::nn::summary::record(self, &y);
        y
    }
}

macro_rules! dim_activation {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        #[derive(Module, Clone, Copy, Debug)]
        #[module(extra_repr = "Self::describe")]
        pub struct $name {
            #[module(skip)]
            dim: isize,
            #[module(training)]
            training: bool,
        }

        impl $name {
            /// Along dimension `dim` (negative counts from the end).
            pub fn new(dim: isize) -> $name {
                $name { dim, training: true }
            }

            fn describe(&self) -> String {
                format!("dim={}", self.dim)
            }
        }

        impl<'a> Forward<&'a Tensor> for $name {
            type Output = Tensor;

            #[track_caller]
            fn forward(&self, x: &'a Tensor) -> Tensor {
                let _scope = crate::nn::ModuleScope::enter(self);
                let y = x.$method(self.dim);
                crate::nn::summary::record(self, &y);
                y
            }
        }
    };
}

dim_activation!(
    /// `exp(x) / Σ exp(x)` along `dim`.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{Forward, Softmax}};
    /// let p = Softmax::new(-1).forward(&Tensor::zeros(&[2, 4]));
    /// assert_eq!(p.to_vec::<f32>(), [0.25; 8]);
    /// ```
    Softmax,
    softmax
);
dim_activation!(
    /// `log(softmax(x))` along `dim`, computed stably.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{Forward, LogSoftmax}};
    /// let logp = LogSoftmax::new(1).forward(&Tensor::from_vec(vec![1000.0f64, 1000.0], &[1, 2]));
    /// // No overflow: both are log(1/2).
    /// assert!(logp.to_vec::<f64>().iter().all(|v| (v + 2f64.ln()).abs() < 1e-12));
    /// ```
    LogSoftmax,
    log_softmax
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs_match_pytorch() {
        assert_eq!(ReLU.to_string(), "ReLU()");
        assert_eq!(
            LeakyReLU::default().to_string(),
            "LeakyReLU(negative_slope=0.01)"
        );
        assert_eq!(GELU::new().to_string(), "GELU(approximate='none')");
        assert_eq!(Softmax::new(1).to_string(), "Softmax(dim=1)");
    }

    #[test]
    fn activations_call_the_tensor_ops() {
        let x = Tensor::from_vec(vec![-1.0f32, 2.0], &[2]);
        assert_eq!(ReLU.forward(&x).to_vec::<f32>(), [0.0, 2.0]);
        assert_eq!(LeakyReLU::new(0.5).forward(&x).to_vec::<f32>(), [-0.5, 2.0]);
    }
}
