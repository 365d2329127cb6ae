//! [`Conv2d`]: 2-D convolution over `[N, C, H, W]` images (PyTorch's `nn.Conv2d`).

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::nn::size::{Size2, py_pair};
use crate::random::InitDraws;
use crate::tensor::Tensor;

/// A 2-D convolution with zero padding, optionally dilated and grouped.
///
/// `weight` is `[out_channels, in_channels / groups, kh, kw]` and `bias` `[out_channels]`,
/// drawn as PyTorch does (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
/// `fan_in = in_channels / groups·kh·kw`). Without dilation or groups the kernel is the tuned
/// im2col of `ops/conv.rs`; otherwise [`Tensor::conv2d_grouped`].
///
/// # Shapes
/// `[N, in_channels, H, W] → [N, out_channels, (H + 2·ph − dh·(kh − 1) − 1) / sh + 1, …]`
/// (likewise for W).
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
    /// The kernels `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Parameter,
    /// The bias `[out_channels]`, or `None` when made without one.
    pub bias: Option<Parameter>,
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(skip)]
    dilation: [usize; 2],
    #[module(skip)]
    groups: usize,
    #[module(skip)]
    in_channels: usize,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a `kernel_size` window
    /// (`3` or `(3, 2)`), stride 1, no padding, with a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Size2) -> Conv2d {
        let [kh, kw] = kernel_size.pair();
        let shape = [out_channels, in_channels, kh, kw];
        let ((w, b), draws) = InitDraws::record(|| init::default_weight_and_bias(&shape, true));
        Conv2d {
            draws,
            ..Conv2d::from_parts(w, b)
        }
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
            dilation: [1, 1],
            groups: 1,
            in_channels: ws[1],
            training: true,
            draws: InitDraws::default(),
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

    /// The spacing between kernel elements (`2` or `(2, 1)`).
    pub fn with_dilation(mut self, dilation: impl Size2) -> Conv2d {
        self.dilation = dilation.pair();
        self
    }

    /// Splits the channels into `groups` blocks, output block `g` seeing only input block
    /// `g` (`groups = in_channels` is a depthwise convolution). The weight becomes
    /// `[out_channels, in_channels / groups, kh, kw]`, drawn afresh (and the bias with it).
    ///
    /// # Panics
    /// If `groups` is zero or does not divide both channel counts.
    #[track_caller]
    pub fn with_groups(mut self, groups: usize) -> Conv2d {
        let [out, kh, kw] = [
            self.weight.shape()[0],
            self.kernel_size()[0],
            self.kernel_size()[1],
        ];
        if groups == 0 || !self.in_channels.is_multiple_of(groups) || !out.is_multiple_of(groups) {
            panic!(
                "Conv2d: groups must divide in_channels {} and out_channels {out}, got {groups}",
                self.in_channels
            );
        }
        let shape = [out, self.in_channels / groups, kh, kw];
        if self.weight.shape() != shape {
            let bias = self.bias.is_some().then_some(out);
            (self.weight, self.bias) = init::redraw(&mut self.draws, &shape, bias);
        }
        self.groups = groups;
        self
    }

    /// Keeps the bias or drops it (PyTorch's `bias=False`). Right after construction the
    /// weight is drawn again, so that the draws are PyTorch's for `bias=False`.
    pub fn with_bias(mut self, bias: bool) -> Conv2d {
        let out = self.weight.size(0);
        (self.weight, self.bias) = init::rebias(&mut self.draws, self.weight, self.bias, bias, out);
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

    /// The spacing between kernel elements.
    pub fn dilation(&self) -> [usize; 2] {
        self.dilation
    }

    /// The number of channel blocks.
    pub fn groups(&self) -> usize {
        self.groups
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        let mut out = format!(
            "{}, {}, kernel_size={}, stride={}",
            self.in_channels,
            s[0],
            py_pair(self.kernel_size()),
            py_pair(self.stride)
        );
        if self.padding != [0, 0] {
            out += &format!(", padding={}", py_pair(self.padding));
        }
        if self.dilation != [1, 1] {
            out += &format!(", dilation={}", py_pair(self.dilation));
        }
        if self.groups != 1 {
            out += &format!(", groups={}", self.groups);
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
        let _scope = crate::nn::ModuleScope::enter(self);
        let bias = self.bias.as_deref();
        let y = if self.dilation == [1, 1] && self.groups == 1 {
            x.conv2d_with_bias(&self.weight, bias, self.stride, self.padding)
        } else {
            let (s, p, d) = (self.stride, self.padding, self.dilation);
            let y = x.conv2d_grouped(&self.weight, s, p, d, self.groups);
            match bias {
                Some(b) => &y + &b.reshape(&[1, -1, 1, 1]),
                None => y,
            }
        };
        crate::nn::summary::record(self, &y);
        y
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
    fn groups_split_the_weight_and_show_in_the_repr() {
        let c = Conv2d::new(4, 6, 3).with_dilation((2, 1)).with_groups(2);
        assert_eq!(c.weight.shape(), [6, 2, 3, 3]);
        assert_eq!(
            c.to_string(),
            "Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), dilation=(2, 1), groups=2)"
        );
        let y = c.forward(&Tensor::zeros(&[1, 4, 7, 5]));
        assert_eq!(y.shape(), [1, 6, 3, 3]);
    }

    #[test]
    #[should_panic(expected = "Conv2d: groups must divide in_channels 4 and out_channels 6, got 4")]
    fn groups_must_divide_the_channels() {
        let _ = Conv2d::new(4, 6, 3).with_groups(4);
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
