//! [`ConvTranspose2d`]: the transposed 2-D convolution (PyTorch's `nn.ConvTranspose2d`),
//! and the printed form all convolutions share.

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::init;
use crate::nn::parameter::Parameter;
use crate::nn::size::{Size2, py_tuple};
use crate::random::InitDraws;
use crate::tensor::Tensor;

/// PyTorch's `_ConvNd.extra_repr`: channels, `kernel_size` and `stride` always, then
/// `padding`, `dilation`, `output_padding`, `groups` and `bias=False` only when they differ
/// from their defaults. `options` is `[stride, padding, dilation, output_padding]`.
pub(crate) fn conv_repr(
    [in_channels, out_channels]: [usize; 2],
    kernel_size: &[usize],
    [stride, padding, dilation, output_padding]: [&[usize]; 4],
    groups: usize,
    bias: bool,
) -> String {
    let mut out = format!(
        "{in_channels}, {out_channels}, kernel_size={}, stride={}",
        py_tuple(kernel_size),
        py_tuple(stride)
    );
    let optional = [
        ("padding", padding, 0),
        ("dilation", dilation, 1),
        ("output_padding", output_padding, 0),
    ];
    for (name, value, default) in optional {
        if value.iter().any(|&v| v != default) {
            out += &format!(", {name}={}", py_tuple(value));
        }
    }
    if groups != 1 {
        out += &format!(", groups={groups}");
    }
    if !bias {
        out += ", bias=False";
    }
    out
}

/// A transposed 2-D convolution (the adjoint of [`Conv2d`](crate::nn::Conv2d) in its input,
/// sometimes called a deconvolution): each input pixel adds `x · weight` to an output window
/// starting at `(i·stride − padding, j·stride − padding)`.
///
/// `weight` is `[in_channels, out_channels / groups, kh, kw]` (in-channels first, as in
/// PyTorch) and `bias` `[out_channels]`, both drawn from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
/// with PyTorch's `fan_in = out_channels / groups·kh·kw` (the weight's dimension 1).
///
/// # Shapes
/// `[N, in_channels, H, W] → [N, out_channels, (H − 1)·sh − 2·ph + dh·(kh − 1) + oph + 1, …]`
/// (likewise for W; `oph` is the `output_padding`, rows added at the bottom).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{ConvTranspose2d, Forward};
/// use torchlet::Tensor;
/// let up = ConvTranspose2d::new(3, 5, 3).with_stride(2).with_padding(1).with_output_padding(1);
/// assert_eq!(up.forward(&Tensor::zeros(&[1, 3, 4, 4])).shape(), [1, 5, 8, 8]);
/// assert_eq!(
///     up.to_string(),
///     "ConvTranspose2d(3, 5, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1))"
/// );
/// ```
#[derive(Module)]
#[module(extra_repr = "ConvTranspose2d::describe")]
pub struct ConvTranspose2d {
    /// The kernels `[in_channels, out_channels / groups, kh, kw]` (in-channels first).
    pub weight: Parameter,
    /// The bias `[out_channels]`, or `None` when made without one.
    pub bias: Option<Parameter>,
    #[module(skip)]
    out_channels: usize,
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(skip)]
    output_padding: [usize; 2],
    #[module(skip)]
    dilation: [usize; 2],
    #[module(skip)]
    groups: usize,
    #[module(training)]
    training: bool,
    #[module(skip)]
    draws: InitDraws,
}

impl ConvTranspose2d {
    /// A transposed convolution from `in_channels` to `out_channels` with a `kernel_size`
    /// window (`3` or `(3, 2)`), stride 1, no padding, no output padding, with a bias.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Size2,
    ) -> ConvTranspose2d {
        let [kh, kw] = kernel_size.pair();
        // The weight is `[in, out / groups, kh, kw]`; the bias bound comes from its fan-in.
        let shape = [in_channels, out_channels, kh, kw];
        let ((weight, bias), draws) =
            InitDraws::record(|| init::weight_and_bias(&shape, Some(out_channels)));
        ConvTranspose2d {
            weight: Parameter::new(weight),
            bias: bias.map(Parameter::new),
            draws,
            out_channels,
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            training: true,
        }
    }

    /// The step between the windows of neighbouring input pixels (`2` or `(2, 1)`).
    pub fn with_stride(mut self, stride: impl Size2) -> ConvTranspose2d {
        self.stride = stride.pair();
        self
    }

    /// Rows and columns cut from each side of the full output (`dilation·(k − 1) − padding`
    /// zeros on the equivalent direct convolution's input).
    pub fn with_padding(mut self, padding: impl Size2) -> ConvTranspose2d {
        self.padding = padding.pair();
        self
    }

    /// Rows and columns added at the bottom and right of the output, to reach sizes that
    /// a strided convolution maps to the same input size. Must be smaller than the stride
    /// or the dilation (checked in `forward`).
    pub fn with_output_padding(mut self, output_padding: impl Size2) -> ConvTranspose2d {
        self.output_padding = output_padding.pair();
        self
    }

    /// The spacing between kernel elements.
    pub fn with_dilation(mut self, dilation: impl Size2) -> ConvTranspose2d {
        self.dilation = dilation.pair();
        self
    }

    /// Splits the channels into `groups` blocks; the weight becomes
    /// `[in_channels, out_channels / groups, kh, kw]`, drawn afresh.
    ///
    /// # Panics
    /// If `groups` is zero or does not divide both channel counts.
    #[track_caller]
    pub fn with_groups(mut self, groups: usize) -> ConvTranspose2d {
        let [cin, _, kh, kw] = self.weight.shape()[..] else {
            unreachable!("ConvTranspose2d weight is 4-D")
        };
        let out = self.out_channels;
        if groups == 0 || !cin.is_multiple_of(groups) || !out.is_multiple_of(groups) {
            panic!(
                "ConvTranspose2d: groups must divide in_channels {cin} and out_channels {out}, got {groups}"
            );
        }
        let shape = [cin, out / groups, kh, kw];
        if self.weight.shape() != shape {
            let bias = self.bias.is_some().then_some(out);
            (self.weight, self.bias) = init::redraw(&mut self.draws, &shape, bias);
        }
        self.groups = groups;
        self
    }

    /// Keeps the bias or drops it (PyTorch's `bias=False`). Right after construction the
    /// weight is drawn again, so that the draws are PyTorch's for `bias=False`.
    pub fn with_bias(mut self, bias: bool) -> ConvTranspose2d {
        let out = self.out_channels;
        (self.weight, self.bias) = init::rebias(&mut self.draws, self.weight, self.bias, bias, out);
        self
    }

    fn describe(&self) -> String {
        let s = self.weight.shape();
        conv_repr(
            [s[0], self.out_channels],
            &s[2..],
            [
                &self.stride,
                &self.padding,
                &self.dilation,
                &self.output_padding,
            ],
            self.groups,
            self.bias.is_some(),
        )
    }
}

impl<'a> Forward<&'a Tensor> for ConvTranspose2d {
    type Output = Tensor;

    /// # Panics
    /// If the input is not `[N, in_channels, H, W]`, or `output_padding` is not smaller than
    /// the stride or the dilation.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        let _scope = crate::nn::ModuleScope::enter(self);
        let y = x.conv_transpose2d(
            &self.weight,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        );
        let y = match &self.bias {
            Some(b) => &y + &b.reshape(&[1, -1, 1, 1]),
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
    fn keys_and_shapes_follow_pytorch() {
        let c = ConvTranspose2d::new(4, 6, (2, 3)).with_groups(2);
        let shapes: Vec<(String, Vec<usize>)> = c
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.shape()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("weight".to_string(), vec![4, 3, 2, 3]),
                ("bias".to_string(), vec![6])
            ]
        );
        assert_eq!(
            c.to_string(),
            "ConvTranspose2d(4, 6, kernel_size=(2, 3), stride=(1, 1), groups=2)"
        );
    }

    #[test]
    fn a_one_by_one_kernel_with_stride_two_spreads_pixels() {
        // Each input pixel lands at (2i, 2j); the rest of the output is the bias (0 here).
        let mut up = ConvTranspose2d::new(1, 1, 1)
            .with_stride(2)
            .with_bias(false);
        up.weight = Parameter::new(Tensor::ones(&[1, 1, 1, 1]));
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        assert_eq!(
            up.forward(&x).to_vec::<f32>(),
            [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]
        );
    }
}
