//! Metrics for evaluation loops, with torcheval's names: [`accuracy`] for one batch,
//! [`Accuracy`], [`Mean`] and [`ConfusionMatrix`] accumulated over many with `update`, read
//! with `compute`, and cleared with `reset`.
//!
//! ```
//! # extern crate torchlet_core as torchlet;
//! use torchlet::Tensor;
//! use torchlet::metrics::{Accuracy, Mean, accuracy};
//!
//! // Two samples, three classes: the first is predicted right, the second wrong.
//! let logits = Tensor::from_vec(vec![2.0f32, 0.1, 0.3, 0.2, 0.1, 0.9], &[2, 3]);
//! let labels = Tensor::from_vec(vec![0i64, 1], &[2]);
//! assert_eq!(accuracy(&logits, &labels), 0.5);
//!
//! let (mut acc, mut loss) = (Accuracy::new(), Mean::new());
//! for _ in 0..2 {
//!     acc.update(&logits, &labels);
//!     loss.update_weighted(0.25, 2.0);
//! }
//! assert_eq!((acc.compute(), loss.compute()), (0.5, 0.25));
//! ```

mod accuracy;
mod confusion;
mod mean;

pub use accuracy::{Accuracy, accuracy};
pub use confusion::ConfusionMatrix;
pub use mean::Mean;

use crate::tensor::Tensor;

/// The predicted and the true class of each sample: `input` is `[N, C]` scores (logits or
/// probabilities; the prediction is the arg-max) or `[N]` predicted classes, `target` is `[N]`
/// class indices, as in torcheval's `multiclass_accuracy`.
#[track_caller]
fn classes(metric: &str, input: &Tensor, target: &Tensor) -> (Vec<i64>, Vec<i64>) {
    let (shape, target_shape) = (input.shape(), target.shape());
    let fits = match shape.len() {
        1 => shape == target_shape,
        2 => target_shape == [shape[0]],
        _ => false,
    };
    if !fits || target.dtype().is_float() {
        shape_error(metric, &shape, target);
    }
    let predicted = match shape.len() {
        1 => input.to_vec::<i64>(),
        _ => input.argmax(1, false).to_vec::<i64>(),
    };
    (predicted, target.to_vec::<i64>())
}

#[cold]
#[inline(never)]
#[track_caller]
fn shape_error(metric: &str, input: &[usize], target: &Tensor) -> ! {
    panic!(
        "{metric}: input {input:?} and target {:?} ({:?}) do not fit; expected input [N, C] \
         scores or [N] classes and target [N] integer class indices",
        target.shape(),
        target.dtype()
    )
}
