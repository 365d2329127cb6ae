//! [`AdaptiveAvgPool2d`]: average pooling to a fixed output size (PyTorch's
//! `nn.AdaptiveAvgPool2d`).

use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::size::Size2;
use crate::tensor::Tensor;

/// Average pooling whose windows are chosen so that the output is `output_size` whatever
/// the input size (see [`Tensor::adaptive_avg_pool2d`]). `AdaptiveAvgPool2d::new(1)` is the
/// global average pooling of classification heads.
///
/// # Shapes
/// `[N, C, H, W] → [N, C, oh, ow]` (or `[C, H, W] → [C, oh, ow]`).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{AdaptiveAvgPool2d, Forward};
/// use torchlet::Tensor;
/// let pool = AdaptiveAvgPool2d::new((3, 2));
/// assert_eq!(pool.forward(&Tensor::zeros(&[2, 4, 7, 5])).shape(), [2, 4, 3, 2]);
/// assert_eq!(pool.to_string(), "AdaptiveAvgPool2d(output_size=(3, 2))");
/// assert_eq!(AdaptiveAvgPool2d::new(1).to_string(), "AdaptiveAvgPool2d(output_size=1)");
/// ```
#[derive(Module)]
#[module(extra_repr = "AdaptiveAvgPool2d::describe")]
pub struct AdaptiveAvgPool2d {
    #[module(skip)]
    output_size: [usize; 2],
    /// `output_size` as the user wrote it (PyTorch prints `1` and `(1, 1)` differently).
    #[module(skip)]
    written: String,
}

impl AdaptiveAvgPool2d {
    /// Pooling to `output_size` (`1` or `(3, 2)`).
    pub fn new(output_size: impl Size2 + Copy) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d {
            output_size: output_size.pair(),
            written: output_size.py_repr(),
        }
    }

    /// The `[oh, ow]` every input is pooled to.
    pub fn output_size(&self) -> [usize; 2] {
        self.output_size
    }

    fn describe(&self) -> String {
        format!("output_size={}", self.written)
    }
}

impl<'a> Forward<&'a Tensor> for AdaptiveAvgPool2d {
    type Output = Tensor;

    /// # Panics
    /// If the input is not 3-D or 4-D or has an empty plane.
    #[track_caller]
    fn forward(&self, x: &'a Tensor) -> Tensor {
        x.adaptive_avg_pool2d(self.output_size)
    }
}
