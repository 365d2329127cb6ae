//! Loss modules (PyTorch's `nn.MSELoss`, `nn.CrossEntropyLoss`, …): the options of a loss
//! kept in a value, with `forward(&input, &target)` calling the function of the same name in
//! [`functional`](crate::nn::functional).

use crate::nn::functional::{self as F, Reduction};
use crate::tensor::Tensor;

/// Mean squared error (PyTorch's `nn.MSELoss`); see [`F::mse_loss`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{MseLoss, Reduction}};
/// let loss = MseLoss::new().reduction(Reduction::Sum);
/// let value = loss.forward(&Tensor::from_vec(vec![1.0f32, 2.0], &[2]), &Tensor::zeros(&[2]));
/// assert_eq!(value.item(), 5.0);
/// ```
#[doc(alias = "MSELoss")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MseLoss {
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl MseLoss {
    /// With `reduction = Mean`.
    pub fn new() -> MseLoss {
        MseLoss::default()
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> MseLoss {
        MseLoss { reduction }
    }

    /// The loss of `input` against `target` (same shape).
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::mse_loss_with(input, target, self.reduction)
    }
}

/// Mean absolute error (PyTorch's `nn.L1Loss`); see [`F::l1_loss`].
#[derive(Clone, Copy, Debug, Default)]
pub struct L1Loss {
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl L1Loss {
    /// With `reduction = Mean`.
    pub fn new() -> L1Loss {
        L1Loss::default()
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> L1Loss {
        L1Loss { reduction }
    }

    /// The loss of `input` against `target` (same shape).
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::l1_loss_with(input, target, self.reduction)
    }
}

/// Quadratic near zero, linear beyond `beta` (PyTorch's `nn.SmoothL1Loss`); see
/// [`F::smooth_l1_loss`].
#[derive(Clone, Copy, Debug)]
pub struct SmoothL1Loss {
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
    /// Where the loss turns from quadratic to linear (PyTorch's `beta=`, default 1).
    pub beta: f64,
}

impl Default for SmoothL1Loss {
    fn default() -> SmoothL1Loss {
        SmoothL1Loss {
            reduction: Reduction::Mean,
            beta: 1.0,
        }
    }
}

impl SmoothL1Loss {
    /// With `reduction = Mean` and `beta = 1`.
    pub fn new() -> SmoothL1Loss {
        SmoothL1Loss::default()
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> SmoothL1Loss {
        SmoothL1Loss { reduction, ..self }
    }

    /// Sets where the loss turns from quadratic to linear.
    pub fn beta(self, beta: f64) -> SmoothL1Loss {
        SmoothL1Loss { beta, ..self }
    }

    /// The loss of `input` against `target` (same shape).
    ///
    /// # Panics
    /// If the shapes differ or `beta` is negative.
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::smooth_l1_loss_with(input, target, self.reduction, self.beta)
    }
}

/// Cross-entropy of logits against class indices (PyTorch's `nn.CrossEntropyLoss`); see
/// [`F::cross_entropy_with`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::CrossEntropyLoss};
/// let loss = CrossEntropyLoss::new().label_smoothing(0.1);
/// let value = loss.forward(&Tensor::zeros(&[2, 4]), &Tensor::from_vec(vec![1i64, 2], &[2]));
/// assert!((value.item() - 4f64.ln()).abs() < 1e-6);
/// ```
#[derive(Clone, Debug)]
pub struct CrossEntropyLoss {
    /// A per-class weight `[C]`, or `None` for every class weighing 1.
    pub weight: Option<Tensor>,
    /// The target class whose positions are left out of the loss and its mean (default -100).
    pub ignore_index: i64,
    /// How the per-sample losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
    /// How much probability is spread uniformly over the classes, in `[0, 1]` (default 0).
    pub label_smoothing: f64,
}

impl Default for CrossEntropyLoss {
    fn default() -> CrossEntropyLoss {
        CrossEntropyLoss {
            weight: None,
            ignore_index: F::DEFAULT_IGNORE_INDEX,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }
}

impl CrossEntropyLoss {
    /// Unweighted, `ignore_index = -100`, `reduction = Mean`, no label smoothing.
    pub fn new() -> CrossEntropyLoss {
        CrossEntropyLoss::default()
    }

    /// Sets the target value whose positions are left out (class-index targets only).
    pub fn ignore_index(self, ignore_index: i64) -> CrossEntropyLoss {
        CrossEntropyLoss {
            ignore_index,
            ..self
        }
    }

    /// Sets a per-class weight `[C]`.
    pub fn weight(self, weight: Tensor) -> CrossEntropyLoss {
        CrossEntropyLoss {
            weight: Some(weight),
            ..self
        }
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> CrossEntropyLoss {
        CrossEntropyLoss { reduction, ..self }
    }

    /// Sets the label smoothing, in `[0, 1]`.
    pub fn label_smoothing(self, label_smoothing: f64) -> CrossEntropyLoss {
        CrossEntropyLoss {
            label_smoothing,
            ..self
        }
    }

    /// The loss of logits `input [N, C]` against class indices `target [N]` (int64) or
    /// class probabilities of the input's shape.
    ///
    /// # Panics
    /// See [`F::cross_entropy_with`].
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::cross_entropy_with(
            input,
            target,
            self.weight.as_ref(),
            self.ignore_index,
            self.reduction,
            self.label_smoothing,
        )
    }
}

/// Negative log-likelihood of class indices given log-probabilities (PyTorch's
/// `nn.NLLLoss`); see [`F::nll_loss_with`].
#[doc(alias = "NLLLoss")]
#[derive(Clone, Debug)]
pub struct NllLoss {
    /// A per-class weight `[C]`, or `None` for every class weighing 1.
    pub weight: Option<Tensor>,
    /// The target class whose positions are left out of the loss and its mean (default -100).
    pub ignore_index: i64,
    /// How the per-sample losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl Default for NllLoss {
    fn default() -> NllLoss {
        NllLoss {
            weight: None,
            ignore_index: F::DEFAULT_IGNORE_INDEX,
            reduction: Reduction::Mean,
        }
    }
}

impl NllLoss {
    /// Unweighted, `ignore_index = -100`, `reduction = Mean`.
    pub fn new() -> NllLoss {
        NllLoss::default()
    }

    /// Sets the target value whose positions are left out.
    pub fn ignore_index(self, ignore_index: i64) -> NllLoss {
        NllLoss {
            ignore_index,
            ..self
        }
    }

    /// Sets a per-class weight `[C]`.
    pub fn weight(self, weight: Tensor) -> NllLoss {
        NllLoss {
            weight: Some(weight),
            ..self
        }
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> NllLoss {
        NllLoss { reduction, ..self }
    }

    /// The loss of log-probabilities `input [N, C]` against class indices `target [N]`.
    ///
    /// # Panics
    /// See [`F::nll_loss_with`].
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::nll_loss_with(
            input,
            target,
            self.weight.as_ref(),
            self.ignore_index,
            self.reduction,
        )
    }
}

/// Binary cross-entropy on logits (PyTorch's `nn.BCEWithLogitsLoss`); see
/// [`F::binary_cross_entropy_with_logits_with`].
#[doc(alias = "BCEWithLogitsLoss")]
#[derive(Clone, Debug, Default)]
pub struct BceWithLogitsLoss {
    /// A weight broadcast to every element, or `None`.
    pub weight: Option<Tensor>,
    /// The weight of positive examples, one per class (last dimension), or `None`.
    pub pos_weight: Option<Tensor>,
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl BceWithLogitsLoss {
    /// Unweighted, `reduction = Mean`.
    pub fn new() -> BceWithLogitsLoss {
        BceWithLogitsLoss::default()
    }

    /// Sets a weight for every element (broadcast to the input).
    pub fn weight(self, weight: Tensor) -> BceWithLogitsLoss {
        BceWithLogitsLoss {
            weight: Some(weight),
            ..self
        }
    }

    /// Sets the weight of positive examples, one per class (last dimension).
    pub fn pos_weight(self, pos_weight: Tensor) -> BceWithLogitsLoss {
        BceWithLogitsLoss {
            pos_weight: Some(pos_weight),
            ..self
        }
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> BceWithLogitsLoss {
        BceWithLogitsLoss { reduction, ..self }
    }

    /// The loss of logits `input` against probabilities `target` (same shape).
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::binary_cross_entropy_with_logits_with(
            input,
            target,
            self.weight.as_ref(),
            self.pos_weight.as_ref(),
            self.reduction,
        )
    }
}

/// Quadratic near zero, linear beyond `delta` (PyTorch's `nn.HuberLoss`); see
/// [`F::huber_loss_with`].
#[derive(Clone, Copy, Debug)]
pub struct HuberLoss {
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
    /// Where the loss turns from quadratic to linear (PyTorch's `delta=`, default 1).
    pub delta: f64,
}

impl Default for HuberLoss {
    fn default() -> HuberLoss {
        HuberLoss {
            reduction: Reduction::Mean,
            delta: 1.0,
        }
    }
}

impl HuberLoss {
    /// With `reduction = Mean` and `delta = 1`.
    pub fn new() -> HuberLoss {
        HuberLoss::default()
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> HuberLoss {
        HuberLoss { reduction, ..self }
    }

    /// Sets where the loss turns from quadratic to linear.
    pub fn delta(self, delta: f64) -> HuberLoss {
        HuberLoss { delta, ..self }
    }

    /// The loss of `input` against `target` (same shape).
    ///
    /// # Panics
    /// If the shapes differ or `delta` is not positive.
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::huber_loss_with(input, target, self.reduction, self.delta)
    }
}

/// Kullback-Leibler divergence loss (PyTorch's `nn.KLDivLoss`); see [`F::kl_div_with`].
#[doc(alias = "KLDivLoss")]
#[derive(Clone, Copy, Debug, Default)]
pub struct KlDivLoss {
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
    /// Whether the target holds log-probabilities rather than probabilities (default false).
    pub log_target: bool,
}

impl KlDivLoss {
    /// With `reduction = Mean` (PyTorch's default; `BatchMean` gives the true KL
    /// divergence per sample) and probabilities as the target.
    pub fn new() -> KlDivLoss {
        KlDivLoss::default()
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> KlDivLoss {
        KlDivLoss { reduction, ..self }
    }

    /// Whether the target holds log-probabilities.
    pub fn log_target(self, log_target: bool) -> KlDivLoss {
        KlDivLoss { log_target, ..self }
    }

    /// The loss of log-probabilities `input` against `target` (same shape).
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::kl_div_with(input, target, self.reduction, self.log_target)
    }
}

/// Binary cross-entropy on probabilities (PyTorch's `nn.BCELoss`); see
/// [`F::binary_cross_entropy_with`].
#[doc(alias = "BCELoss")]
#[derive(Clone, Debug, Default)]
pub struct BceLoss {
    /// A weight broadcast to every element, or `None`.
    pub weight: Option<Tensor>,
    /// How the per-element losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl BceLoss {
    /// Unweighted, `reduction = Mean`.
    pub fn new() -> BceLoss {
        BceLoss::default()
    }

    /// Sets a weight for every element (broadcast to the input).
    pub fn weight(self, weight: Tensor) -> BceLoss {
        BceLoss {
            weight: Some(weight),
            ..self
        }
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> BceLoss {
        BceLoss { reduction, ..self }
    }

    /// The loss of probabilities `input` against `target` (same shape).
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::binary_cross_entropy_with(input, target, self.weight.as_ref(), self.reduction)
    }
}

/// Cosine embedding loss (PyTorch's `nn.CosineEmbeddingLoss`); see
/// [`F::cosine_embedding_loss`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CosineEmbeddingLoss {
    /// The margin for dissimilar pairs (`target = -1`), in `[-1, 1]` (default 0).
    pub margin: f64,
    /// How the per-pair losses are combined (PyTorch's `reduction=`).
    pub reduction: Reduction,
}

impl CosineEmbeddingLoss {
    /// With `margin = 0` and `reduction = Mean`.
    pub fn new() -> CosineEmbeddingLoss {
        CosineEmbeddingLoss::default()
    }

    /// Sets the margin for dissimilar pairs.
    pub fn margin(self, margin: f64) -> CosineEmbeddingLoss {
        CosineEmbeddingLoss { margin, ..self }
    }

    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> CosineEmbeddingLoss {
        CosineEmbeddingLoss { reduction, ..self }
    }

    /// The loss of the pairs `input1`, `input2 [N, D]` labelled by `target [N]` (±1).
    #[track_caller]
    pub fn forward(&self, input1: &Tensor, input2: &Tensor, target: &Tensor) -> Tensor {
        F::cosine_embedding_loss(input1, input2, target, self.margin, self.reduction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_modules_forward_to_the_functions() {
        let x = Tensor::from_vec(vec![0.2f64, -1.0, 0.7, 1.5], &[2, 2]);
        let target = Tensor::from_vec(vec![1i64, 0], &[2]);
        let module = CrossEntropyLoss::new().reduction(Reduction::Sum);
        let direct = F::cross_entropy_with(&x, &target, None, -100, Reduction::Sum, 0.0);
        assert_eq!(module.forward(&x, &target).item(), direct.item());
        let logp = x.log_softmax(1);
        assert_eq!(
            NllLoss::new().forward(&logp, &target).item(),
            F::cross_entropy(&x, &target).item()
        );
        let y = Tensor::from_vec(vec![0.0f64, 1.0, 1.0, 0.0], &[2, 2]);
        let half = SmoothL1Loss::new().beta(0.5).forward(&x, &y);
        assert_eq!(
            half.item(),
            F::smooth_l1_loss_with(&x, &y, Reduction::Mean, 0.5).item()
        );
    }
}
