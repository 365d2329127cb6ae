//! [`MaxPool2d`] and [`AvgPool2d`] over `[N, C, H, W]` images.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::size::Size2;
use crate::tensor::Tensor;

/// `3` for a square size, `(3, 2)` otherwise, as PyTorch prints its arguments.
fn py_size(p: [usize; 2]) -> String {
    if p[0] == p[1] {
        p[0].to_string()
    } else {
        crate::nn::size::py_pair(p)
    }
}

/// The maximum over each window (PyTorch's `nn.MaxPool2d`; dilation 1, floor mode).
///
/// # Shapes
/// `[N, C, H, W] → [N, C, (H + 2·ph − kh) / sh + 1, (W + 2·pw − kw) / sw + 1]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Forward, MaxPool2d}};
/// let x = Tensor::arange(16).reshape(&[1, 1, 4, 4]).to_dtype(torchlet::DType::F32);
/// assert_eq!(MaxPool2d::new(2).forward(&x).to_vec::<f32>(), [5.0, 7.0, 13.0, 15.0]);
/// assert_eq!(MaxPool2d::new(3).with_stride(1).with_padding(1).forward(&x).shape(), [1, 1, 4, 4]);
/// ```
#[derive(Module)]
#[module(extra_repr = "MaxPool2d::describe")]
pub struct MaxPool2d {
    #[module(skip)]
    kernel_size: [usize; 2],
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(training)]
    training: bool,
}

impl MaxPool2d {
    /// Windows of `kernel_size`, moved by `kernel_size` (PyTorch's default stride).
    pub fn new(kernel_size: impl Size2) -> MaxPool2d {
        let k = kernel_size.pair();
        MaxPool2d {
            kernel_size: k,
            stride: k,
            padding: [0, 0],
            training: true,
        }
    }

    /// The step of the window.
    pub fn with_stride(mut self, stride: impl Size2) -> MaxPool2d {
        self.stride = stride.pair();
        self
    }

    /// Implicit −∞ added on each side (at most half the kernel).
    pub fn with_padding(mut self, padding: impl Size2) -> MaxPool2d {
        self.padding = padding.pair();
        self
    }

    fn describe(&self) -> String {
        format!(
            "kernel_size={}, stride={}, padding={}, dilation=1, ceil_mode=False",
            py_size(self.kernel_size),
            py_size(self.stride),
            py_size(self.padding)
        )
    }
}

impl<'a> Forward<&'a Tensor> for MaxPool2d {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.max_pool2d(self.kernel_size, self.stride, self.padding);
        crate::nn::summary::record(self, &y);
        y
    }
}

/// The mean over each window (PyTorch's `nn.AvgPool2d`; padding counts as zeros).
///
/// # Shapes
/// As [`MaxPool2d`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{AvgPool2d, Forward}};
/// let x = Tensor::arange(16).reshape(&[1, 1, 4, 4]).to_dtype(torchlet::DType::F32);
/// assert_eq!(AvgPool2d::new(2).forward(&x).to_vec::<f32>(), [2.5, 4.5, 10.5, 12.5]);
/// ```
#[derive(Module)]
#[module(extra_repr = "AvgPool2d::describe")]
pub struct AvgPool2d {
    #[module(skip)]
    kernel_size: [usize; 2],
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(training)]
    training: bool,
}

impl AvgPool2d {
    /// Windows of `kernel_size`, moved by `kernel_size`.
    pub fn new(kernel_size: impl Size2) -> AvgPool2d {
        let k = kernel_size.pair();
        AvgPool2d {
            kernel_size: k,
            stride: k,
            padding: [0, 0],
            training: true,
        }
    }

    /// The step of the window.
    pub fn with_stride(mut self, stride: impl Size2) -> AvgPool2d {
        self.stride = stride.pair();
        self
    }

    /// Zeros added on each side (at most half the kernel).
    pub fn with_padding(mut self, padding: impl Size2) -> AvgPool2d {
        self.padding = padding.pair();
        self
    }

    fn describe(&self) -> String {
        format!(
            "kernel_size={}, stride={}, padding={}",
            py_size(self.kernel_size),
            py_size(self.stride),
            py_size(self.padding)
        )
    }
}

impl<'a> Forward<&'a Tensor> for AvgPool2d {
    type Output = Tensor;

    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.avg_pool2d(self.kernel_size, self.stride, self.padding);
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_pytorch() {
        assert_eq!(
            MaxPool2d::new(2).to_string(),
            "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
        );
        assert_eq!(
            AvgPool2d::new(2).to_string(),
            "AvgPool2d(kernel_size=2, stride=2, padding=0)"
        );
    }
}
