//! [`Conv1d`]: 1-D convolution over `[N, C, L]` sequences (PyTorch's `nn.Conv1d`).

use crate::nn::Module;
use crate::nn::conv_transpose::conv_repr;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::random::InitDraws;
use crate::tensor::Tensor;

/// A 1-D convolution with zero padding, stride, dilation and groups.
///
/// `weight` is `[out_channels, in_channels / groups, kernel_size]` and `bias`
/// `[out_channels]`, drawn as PyTorch does (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
/// `fan_in = in_channels / groups·kernel_size`).
///
/// # Shapes
/// `[N, in_channels, L] → [N, out_channels, (L + 2·padding − dilation·(k − 1) − 1) / stride + 1]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Conv1d, Forward};
/// use torchlet::Tensor;
/// let conv = Conv1d::new(4, 6, 3).with_stride(2).with_padding(1).with_groups(2);
/// assert_eq!(conv.forward(&Tensor::zeros(&[2, 4, 9])).shape(), [2, 6, 5]);
/// assert_eq!(
///     conv.to_string(),
///     "Conv1d(4, 6, kernel_size=(3,), stride=(2,), padding=(1,), groups=2)"
/// );
/// ```
#[derive(Module)]
#[module(extra_repr = "Conv1d::describe")]
pub struct Conv1d {
    /// The kernels `[out_channels, in_channels / groups, kernel_size]`.
    pub weight: Parameter,
    /// The bias `[out_channels]`, or `None` when made without one.
    pub bias: Option<Parameter>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    padding: usize,
    #[module(skip)]
    dilation: usize,
    #[module(skip)]
    groups: usize,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

impl Conv1d {
    /// A convolution from `in_channels` to `out_channels` with a window of `kernel_size`,
    /// stride 1, no padding, dilation 1, one group, with a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Conv1d {
        let shape = [out_channels, in_channels, kernel_size];
        let ((w, b), draws) = InitDraws::record(|| init::default_weight_and_bias(&shape, true));
        Conv1d {
            weight: Parameter::new(w),
            bias: b.map(Parameter::new),
            in_channels,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            training: true,
            draws,
        }
    }

    /// The step of the window.
    pub fn with_stride(mut self, stride: usize) -> Conv1d {
        self.stride = stride;
        self
    }

    /// Zeros added at each end.
    pub fn with_padding(mut self, padding: usize) -> Conv1d {
        self.padding = padding;
        self
    }

    /// The spacing between kernel elements.
    pub fn with_dilation(mut self, dilation: usize) -> Conv1d {
        self.dilation = dilation;
        self
    }

    /// Splits the channels into `groups` blocks (see [`Conv2d::with_groups`](crate::nn::Conv2d::with_groups));
    /// the weight becomes `[out_channels, in_channels / groups, k]`, drawn afresh.
    ///
    /// # Panics
    /// If `groups` is zero or does not divide both channel counts.
    #[track_caller]
    pub fn with_groups(mut self, groups: usize) -> Conv1d {
        let [out, _, k] = self.weight.shape()[..] else {
            unreachable!("Conv1d weight is 3-D")
        };
        if groups == 0 || !self.in_channels.is_multiple_of(groups) || !out.is_multiple_of(groups) {
            panic!(
                "Conv1d: groups must divide in_channels {} and out_channels {out}, got {groups}",
                self.in_channels
            );
        }
        let shape = [out, self.in_channels / groups, k];
        if self.weight.shape() != shape {
            let bias = self.bias.is_some().then_some(out);
            (self.weight, self.bias) = init::redraw(&mut self.draws, &shape, bias);
        }
        self.groups = groups;
        self
    }

    /// Keeps the bias or drops it (PyTorch's `bias=False`). Right after construction the
    /// weight is drawn again, so that the draws are PyTorch's for `bias=False`.
    pub fn with_bias(mut self, bias: bool) -> Conv1d {
        let out = self.weight.size(0);
        (self.weight, self.bias) = init::rebias(&mut self.draws, self.weight, self.bias, bias, out);
        self
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        conv_repr(
            [self.in_channels, s[0]],
            &s[2..],
            [&[self.stride], &[self.padding], &[self.dilation], &[0]],
            self.groups,
            self.bias.is_some(),
        )
    }
}

impl<'a> Forward<&'a Tensor> for Conv1d {
    type Output = Tensor;

    /// # Panics
    /// If the input is not `[N, in_channels, L]` or shorter than the dilated kernel.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.conv1d(
            &self.weight,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        );
        let y = match &self.bias {
            Some(b) => &y + &b.reshape(&[1, -1, 1]),
            None => y,
        };
        crate::nn::summary::record(self, &y);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_lists_only_options_away_from_their_defaults() {
        let c = Conv1d::new(2, 3, 4).with_dilation(2).with_bias(false);
        assert_eq!(
            c.to_string(),
            "Conv1d(2, 3, kernel_size=(4,), stride=(1,), dilation=(2,), bias=False)"
        );
        let names: Vec<String> = c.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight"]);
    }

    #[test]
    fn bias_is_added_per_channel() {
        let mut c = Conv1d::new(1, 2, 1);
        c.weight = Parameter::new(Tensor::zeros(&[2, 1, 1]));
        c.bias = Some(Parameter::new(Tensor::from_vec(vec![1.0f32, 2.0], &[2])));
        let y = c.forward(&Tensor::zeros(&[1, 1, 2]));
        assert_eq!(y.to_vec::<f32>(), [1.0, 1.0, 2.0, 2.0]);
    }
}
