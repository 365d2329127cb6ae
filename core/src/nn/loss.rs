//! Loss modules (PyTorch's `nn.MSELoss`, `nn.CrossEntropyLoss`, …): the options of a loss
//! kept in a value, with `forward(&input, &target)` calling the function of the same name in
//! [`functional`](crate::nn::functional).

use crate::nn::functional::{self as F, Reduction};
use crate::tensor::Tensor;

/// Mean squared error (PyTorch's `nn.MSELoss`); see [`F::mse_loss`].
///
/// ```
/// use torchlet_core::{Tensor, nn::{MseLoss, Reduction}};
/// let loss = MseLoss::new().reduction(Reduction::Sum);
/// let value = loss.forward(&Tensor::from_vec(vec![1.0f32, 2.0], &[2]), &Tensor::zeros(&[2]));
/// assert_eq!(value.item(), 5.0);
/// ```
#[doc(alias = "MSELoss")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MseLoss {
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
    pub reduction: Reduction,
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
/// use torchlet_core::{Tensor, nn::CrossEntropyLoss};
/// let loss = CrossEntropyLoss::new().label_smoothing(0.1);
/// let value = loss.forward(&Tensor::zeros(&[2, 4]), &Tensor::from_vec(vec![1i64, 2], &[2]));
/// assert!((value.item() - 4f64.ln()).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, Default)]
pub struct CrossEntropyLoss {
    pub weight: Option<Tensor>,
    pub reduction: Reduction,
    pub label_smoothing: f64,
}

impl CrossEntropyLoss {
    /// Unweighted, `reduction = Mean`, no label smoothing.
    pub fn new() -> CrossEntropyLoss {
        CrossEntropyLoss::default()
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

    /// The loss of logits `input [N, C]` against class indices `target [N]` (int64).
    ///
    /// # Panics
    /// See [`F::cross_entropy_with`].
    #[track_caller]
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Tensor {
        F::cross_entropy_with(
            input,
            target,
            self.weight.as_ref(),
            self.reduction,
            self.label_smoothing,
        )
    }
}

/// Negative log-likelihood of class indices given log-probabilities (PyTorch's
/// `nn.NLLLoss`); see [`F::nll_loss_with`].
#[doc(alias = "NLLLoss")]
#[derive(Clone, Debug, Default)]
pub struct NllLoss {
    pub weight: Option<Tensor>,
    pub reduction: Reduction,
}

impl NllLoss {
    /// Unweighted, `reduction = Mean`.
    pub fn new() -> NllLoss {
        NllLoss::default()
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
        F::nll_loss_with(input, target, self.weight.as_ref(), self.reduction)
    }
}

/// Binary cross-entropy on logits (PyTorch's `nn.BCEWithLogitsLoss`); see
/// [`F::binary_cross_entropy_with_logits_with`].
#[doc(alias = "BCEWithLogitsLoss")]
#[derive(Clone, Debug, Default)]
pub struct BceWithLogitsLoss {
    pub weight: Option<Tensor>,
    pub pos_weight: Option<Tensor>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_modules_forward_to_the_functions() {
        let x = Tensor::from_vec(vec![0.2f64, -1.0, 0.7, 1.5], &[2, 2]);
        let target = Tensor::from_vec(vec![1i64, 0], &[2]);
        let module = CrossEntropyLoss::new().reduction(Reduction::Sum);
        let direct = F::cross_entropy_with(&x, &target, None, Reduction::Sum, 0.0);
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
