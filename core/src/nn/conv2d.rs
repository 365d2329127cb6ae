//! [`Conv2d`]: 2-D convolution over `[N, C, H, W]` images (PyTorch's `nn.Conv2d`).

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::nn::size::{Size2, py_pair};
use crate::tensor::Tensor;

/// A 2-D convolution with zero padding (dilation 1, one group).
///
/// `weight` is `[out_channels, in_channels, kh, kw]` and `bias` `[out_channels]`, drawn as
/// PyTorch does (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, `fan_in = in_channels·kh·kw`). The
/// kernel is im2col and one matrix product per sample (see `ops/conv.rs`).
///
/// # Shapes
/// `[N, in_channels, H, W] → [N, out_channels, (H + 2·ph − kh) / sh + 1, (W + 2·pw − kw) / sw + 1]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Conv2d, Forward};
/// use torchlet::Tensor;
/// let conv = Conv2d::new(1, 4, 3).with_padding(1);
/// assert_eq!(conv.forward(&Tensor::zeros(&[2, 1, 28, 28])).shape(), [2, 4, 28, 28]);
/// assert_eq!(conv.to_string(), "Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
/// ```
#[derive(Module)]
#[module(extra_repr = "Conv2d::describe")]
pub struct Conv2d {
    pub weight: Parameter,
    pub bias: Option<Parameter>,
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(training)]
    training: bool,
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a `kernel_size` window
    /// (`3` or `(3, 2)`), stride 1, no padding, with a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Size2) -> Conv2d {
        let [kh, kw] = kernel_size.pair();
        let (w, b) = init::default_weight_and_bias(&[out_channels, in_channels, kh, kw], true);
        Conv2d::from_parts(w, b)
    }

    /// A convolution over given tensors: `weight` `[out, in, kh, kw]`, optional `bias` `[out]`.
    ///
    /// # Panics
    /// If the shapes do not fit together.
    #[track_caller]
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Conv2d {
        let ws = weight.shape();
        if ws.len() != 4 || bias.as_ref().is_some_and(|b| b.shape() != ws[..1]) {
            panic!(
                "Conv2d::from_parts: weight must be [out, in, kh, kw] and bias [out], got {ws:?} and {:?}",
                bias.map(|b| b.shape())
            );
        }
        Conv2d {
            weight: Parameter::new(weight),
            bias: bias.map(Parameter::new),
            stride: [1, 1],
            padding: [0, 0],
            training: true,
        }
    }

    /// The step of the window (`2` or `(2, 1)`).
    pub fn with_stride(mut self, stride: impl Size2) -> Conv2d {
        self.stride = stride.pair();
        self
    }

    /// Zeros added on each side (`1` or `(1, 0)`).
    pub fn with_padding(mut self, padding: impl Size2) -> Conv2d {
        self.padding = padding.pair();
        self
    }

    /// Keeps the bias or drops it (PyTorch's `bias=False`).
    pub fn with_bias(mut self, bias: bool) -> Conv2d {
        if !bias {
            self.bias = None;
        } else if self.bias.is_none() {
            let (_, b) = init::default_weight_and_bias(&self.weight.shape(), true);
            self.bias = b.map(Parameter::new);
        }
        self
    }

    /// The window's `[height, width]`.
    pub fn kernel_size(&self) -> [usize; 2] {
        let s = self.weight.shape();
        [s[2], s[3]]
    }

    /// The step of the window.
    pub fn stride(&self) -> [usize; 2] {
        self.stride
    }

    /// The zeros added on each side.
    pub fn padding(&self) -> [usize; 2] {
        self.padding
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        let mut out = format!(
            "{}, {}, kernel_size={}, stride={}",
            s[1],
            s[0],
            py_pair(self.kernel_size()),
            py_pair(self.stride)
        );
        if self.padding != [0, 0] {
            out += &format!(", padding={}", py_pair(self.padding));
        }
        if self.bias.is_none() {
            out += ", bias=False";
        }
        out
    }
}

impl<'a> Forward<&'a Tensor> for Conv2d {
    type Output = Tensor;

    /// # Panics
    /// If the input is not `[N, in_channels, H, W]` or smaller than the kernel.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let bias = self.bias.as_deref();
        x.conv2d_with_bias(&self.weight, bias, self.stride, self.padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_shows_padding_and_missing_bias_only_when_set() {
        let c = Conv2d::new(2, 3, (3, 2)).with_stride(2).with_bias(false);
        assert_eq!(
            c.to_string(),
            "Conv2d(2, 3, kernel_size=(3, 2), stride=(2, 2), bias=False)"
        );
        assert_eq!(c.parameters().len(), 1);
    }

    #[test]
    fn bias_is_added_per_channel() {
        let c = Conv2d::from_parts(
            Tensor::zeros(&[2, 1, 1, 1]),
            Some(Tensor::from_vec(vec![1.0f32, 2.0], &[2])),
        );
        let y = c.forward(&Tensor::zeros(&[1, 1, 1, 2]));
        assert_eq!(y.to_vec::<f32>(), [1.0, 1.0, 2.0, 2.0]);
    }
}
