//! Loss functions (PyTorch's `torch.nn.functional`): `mse_loss`, `l1_loss`, `smooth_l1_loss`,
//! `cross_entropy`, `nll_loss`, `binary_cross_entropy_with_logits`.
//!
//! Each loss comes as a short form with PyTorch's defaults (`reduction = mean`) and a `_with`
//! form taking every option. They are composites of differentiable ops, so their gradients
//! come from autograd; only the class pick of `nll_loss` is a primitive
//! ([`Tensor::gather`]).
//!
//! Tensor-math misuse (mismatched shapes, non-integer class targets, a class index out of
//! range) panics naming the loss and the shapes, as every tensor op does.

use crate::dtype::DType;
use crate::tensor::Tensor;

/// How a loss combines the per-element losses (PyTorch's `reduction` argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// No reduction: one loss per element (per sample for classification losses).
    None,
    /// The mean (for weighted `nll_loss` / `cross_entropy`: divided by the summed weights of
    /// the targets, as in PyTorch).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

impl Reduction {
    #[track_caller]
    fn apply(self, loss: Tensor) -> Tensor {
        match self {
            Reduction::None => loss,
            Reduction::Mean => loss.mean(),
            Reduction::Sum => loss.sum(),
        }
    }
}

#[track_caller]
fn check_same_shape(loss: &str, input: &Tensor, target: &Tensor) {
    if input.shape() != target.shape() {
        panic!(
            "{loss}: target shape {:?} differs from input shape {:?}; PyTorch would broadcast \
             them (with a warning), torchlet asks for the same shape",
            target.shape(),
            input.shape()
        );
    }
}

/// `target` in `input`'s float dtype (targets and weights are constants of the loss).
#[track_caller]
fn like(t: &Tensor, input: &Tensor) -> Tensor {
    t.detach().to_dtype(input.dtype())
}

/// Mean squared error `(input - target)²` (`torch.nn.functional.mse_loss`).
///
/// # Panics
/// If the shapes differ.
///
/// ```
/// use torchlet_core::{Tensor, nn::functional::mse_loss};
/// let loss = mse_loss(&Tensor::from_vec(vec![1.0f32, 3.0], &[2]), &Tensor::zeros(&[2]));
/// assert_eq!(loss.item(), 5.0);
/// ```
#[track_caller]
pub fn mse_loss(input: &Tensor, target: &Tensor) -> Tensor {
    mse_loss_with(input, target, Reduction::Mean)
}

/// [`mse_loss`] with a chosen reduction.
#[track_caller]
pub fn mse_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same_shape("mse_loss", input, target);
    let diff = input - &like(target, input);
    reduction.apply(&diff * &diff)
}

/// Mean absolute error `|input - target|` (`torch.nn.functional.l1_loss`).
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn l1_loss(input: &Tensor, target: &Tensor) -> Tensor {
    l1_loss_with(input, target, Reduction::Mean)
}

/// [`l1_loss`] with a chosen reduction.
#[track_caller]
pub fn l1_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same_shape("l1_loss", input, target);
    reduction.apply((input - &like(target, input)).abs())
}

/// Huber-like loss: `0.5 d² / beta` where `|d| < beta`, else `|d| - 0.5 beta`, with
/// `d = input - target` and `beta = 1` (`torch.nn.functional.smooth_l1_loss`).
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor) -> Tensor {
    smooth_l1_loss_with(input, target, Reduction::Mean, 1.0)
}

/// [`smooth_l1_loss`] with a chosen reduction and `beta` (`beta = 0` gives [`l1_loss`]).
///
/// # Panics
/// If the shapes differ or `beta` is negative.
#[track_caller]
pub fn smooth_l1_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Tensor {
    check_same_shape("smooth_l1_loss", input, target);
    if beta.is_nan() || beta < 0.0 {
        panic!("smooth_l1_loss: beta must be non-negative, got {beta}");
    }
    let abs = (input - &like(target, input)).abs();
    if beta == 0.0 {
        return reduction.apply(abs);
    }
    // The mask is a constant, so the gradient is that of whichever branch applies.
    let quadratic = abs.detach().lt_scalar(beta);
    let inside = &(&abs * &abs) * (0.5 / beta);
    let outside = abs.sub_scalar(0.5 * beta);
    let loss = &(&quadratic * &inside) + &(&(1.0 - &quadratic) * &outside);
    reduction.apply(loss)
}

/// A classification input as `[M, C]` rows with a `[M]` target, plus the shape of the
/// unreduced loss: `[C]`/`[]`, `[N, C]`/`[N]` and `[N, C, d1, …]`/`[N, d1, …]` are accepted,
/// as in PyTorch.
#[track_caller]
fn class_rows(loss: &str, input: &Tensor, target: &Tensor) -> (Tensor, Tensor, Vec<usize>) {
    let (shape, tshape) = (input.shape(), target.shape());
    if target.dtype() != DType::I64 {
        panic!(
            "{loss}: target must hold int64 class indices, got {} {tshape:?}; convert with \
             .long()",
            target.dtype()
        );
    }
    let expected: Vec<usize> = match shape.len() {
        1 => vec![],
        0 => class_shape_error(loss, &shape, &tshape),
        _ => [&shape[..1], &shape[2..]].concat(),
    };
    if tshape != expected {
        class_shape_error(loss, &shape, &tshape);
    }
    let rows = match shape.len() {
        1 => input.unsqueeze(0),
        2 => input.clone(),
        n => {
            let mut perm: Vec<isize> = vec![0];
            perm.extend(2..n as isize);
            perm.push(1);
            input.permute(&perm).reshape(&[-1, shape[1] as isize])
        }
    };
    (rows, target.reshape(&[-1]), expected)
}

#[cold]
#[inline(never)]
#[track_caller]
fn class_shape_error(loss: &str, input: &[usize], target: &[usize]) -> ! {
    panic!(
        "{loss}: input {input:?} and target {target:?} do not match; expected input [N, C] with \
         target [N] (or [C] with [], or [N, C, d1, ...] with [N, d1, ...])"
    )
}

/// The per-class weights picked for each target, checked to be `[C]`.
#[track_caller]
fn target_weights(loss: &str, weight: &Tensor, target: &Tensor, rows: &Tensor) -> Tensor {
    let classes = rows.size(1);
    if weight.shape() != [classes] {
        panic!(
            "{loss}: weight must have one value per class, shape [{classes}], got {:?}",
            weight.shape()
        );
    }
    like(weight, rows).index_select(0, target)
}

#[track_caller]
fn check_targets(loss: &str, target: &Tensor, classes: usize) {
    if let Some(&t) = target
        .to_vec::<i64>()
        .iter()
        .find(|&&t| t < 0 || t as usize >= classes)
    {
        panic!("{loss}: target {t} is out of bounds for {classes} classes (valid: 0..{classes})");
    }
}

/// `-w[t] · log_probs[t]` per row, reduced; `picked_weights` are `w[t]` (None: all ones).
#[track_caller]
fn nll_rows(
    log_probs: &Tensor,
    target: &Tensor,
    picked_weights: Option<&Tensor>,
    reduction: Reduction,
    shape: &[usize],
) -> Tensor {
    let picked = log_probs.gather(1, &target.unsqueeze(1)).squeeze_dim(1);
    let loss = match picked_weights {
        Some(w) => -(&picked * w),
        None => -picked,
    };
    match (reduction, picked_weights) {
        (Reduction::None, _) => loss.reshape_usize(shape),
        (Reduction::Mean, Some(w)) => loss.sum().div(&w.sum()),
        (r, _) => r.apply(loss),
    }
}

/// Negative log-likelihood of the target classes, given log-probabilities
/// (`torch.nn.functional.nll_loss`).
///
/// # Shapes
/// `input [N, C]` log-probabilities and `target [N]` int64 class indices (also `[C]` with
/// `[]`, and `[N, C, d1, …]` with `[N, d1, …]`).
///
/// # Panics
/// If the shapes do not match, `target` is not int64, or a target is not a class index.
#[track_caller]
pub fn nll_loss(input: &Tensor, target: &Tensor) -> Tensor {
    nll_loss_with(input, target, None, Reduction::Mean)
}

/// [`nll_loss`] with per-class `weight [C]` and a chosen reduction. With weights, `Mean`
/// divides by the summed weights of the targets, as PyTorch does.
#[track_caller]
pub fn nll_loss_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Tensor {
    let (rows, target, shape) = class_rows("nll_loss", input, target);
    check_targets("nll_loss", &target, rows.size(1));
    let picked = weight.map(|w| target_weights("nll_loss", w, &target, &rows));
    nll_rows(&rows, &target, picked.as_ref(), reduction, &shape)
}

/// Cross-entropy between logits and target classes: `log_softmax` over the class dimension
/// followed by [`nll_loss`] (`torch.nn.functional.cross_entropy` with class indices).
///
/// # Shapes
/// `input [N, C]` logits and `target [N]` int64 class indices (also `[C]` with `[]`, and
/// `[N, C, d1, …]` with `[N, d1, …]`).
///
/// # Panics
/// If the shapes do not match, `target` is not int64, or a target is not a class index.
///
/// ```
/// use torchlet_core::{Tensor, nn::functional::cross_entropy};
/// let logits = Tensor::zeros(&[2, 4]);
/// let loss = cross_entropy(&logits, &Tensor::from_vec(vec![0i64, 3], &[2]));
/// assert!((loss.item() - 4f64.ln()).abs() < 1e-6);
/// ```
#[track_caller]
pub fn cross_entropy(input: &Tensor, target: &Tensor) -> Tensor {
    cross_entropy_with(input, target, None, Reduction::Mean, 0.0)
}

/// [`cross_entropy`] with per-class `weight [C]`, a chosen reduction and `label_smoothing`
/// in `[0, 1]`: the target distribution becomes `(1 - ε)` on the target class plus `ε / C`
/// on every class, computed as PyTorch does (the smoothing term is weighted and normalised
/// like the main term).
///
/// # Panics
/// As [`cross_entropy`], and if `label_smoothing` is outside `[0, 1]`.
#[track_caller]
pub fn cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
    label_smoothing: f64,
) -> Tensor {
    if !(0.0..=1.0).contains(&label_smoothing) {
        panic!("cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}");
    }
    let (rows, target, shape) = class_rows("cross_entropy", input, target);
    let classes = rows.size(1);
    check_targets("cross_entropy", &target, classes);
    let log_probs = rows.log_softmax(1);
    let picked = weight.map(|w| target_weights("cross_entropy", w, &target, &rows));
    let nll = nll_rows(&log_probs, &target, picked.as_ref(), reduction, &shape);
    if label_smoothing == 0.0 {
        return nll;
    }
    let smooth = match weight {
        Some(w) => -(&log_probs * &like(w, &rows)).sum_dim(1, false),
        None => -log_probs.sum_dim(1, false),
    };
    let smooth = match (reduction, &picked) {
        (Reduction::None, _) => smooth.reshape_usize(&shape),
        (Reduction::Mean, Some(w)) => smooth.sum().div(&w.sum()),
        (r, _) => r.apply(smooth),
    };
    &(&nll * (1.0 - label_smoothing)) + &(&smooth * (label_smoothing / classes as f64))
}

/// Binary cross-entropy on logits, `-[y log σ(x) + (1 - y) log(1 - σ(x))]`, computed
/// without overflow (`torch.nn.functional.binary_cross_entropy_with_logits`).
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn binary_cross_entropy_with_logits(input: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_with_logits_with(input, target, None, None, Reduction::Mean)
}

/// [`binary_cross_entropy_with_logits`] with an element `weight` (broadcast to the input),
/// a `pos_weight` on the positive term (one value per class, broadcast along the last
/// dimension) and a chosen reduction.
///
/// # Panics
/// If the shapes differ or a weight does not broadcast to the input.
#[track_caller]
pub fn binary_cross_entropy_with_logits_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Tensor {
    check_same_shape("binary_cross_entropy_with_logits", input, target);
    let target = like(target, input);
    // log σ(x) = min(x, 0) - log(1 + e^{-|x|}), finite for any x.
    let log_sigmoid = &(-(-input).relu()) - &(input.abs().neg().exp().add_scalar(1.0)).log();
    let log_sigmoid = match pos_weight {
        Some(pw) => {
            let log_weight = (&(&like(pw, input) - 1.0) * &target).add_scalar(1.0);
            &log_sigmoid * &log_weight
        }
        None => log_sigmoid,
    };
    let loss = &(&(1.0 - &target) * input) - &log_sigmoid;
    let loss = match weight {
        Some(w) => &loss * &like(w, input),
        None => loss,
    };
    reduction.apply(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape)
    }

    #[test]
    fn mse_and_l1_match_hand_computed_values() {
        let x = t(&[1.0, -2.0, 0.5], &[3]);
        let y = t(&[0.0, 0.0, 1.0], &[3]);
        // (1 + 4 + 0.25) / 3 and (1 + 2 + 0.5) / 3
        assert!((mse_loss(&x, &y).item() - 5.25 / 3.0).abs() < 1e-12);
        assert!((l1_loss_with(&x, &y, Reduction::Sum).item() - 3.5).abs() < 1e-12);
        assert_eq!(mse_loss_with(&x, &y, Reduction::None).shape(), [3]);
    }

    #[test]
    fn smooth_l1_is_quadratic_inside_beta_and_linear_outside() {
        let x = t(&[0.5, 3.0], &[2]);
        let loss = smooth_l1_loss_with(&x, &x.zeros_like(), Reduction::None, 1.0);
        // 0.5 * 0.25 / 1 and 3 - 0.5
        assert_eq!(loss.to_vec::<f64>(), [0.125, 2.5]);
    }

    #[test]
    fn cross_entropy_backward_matches_finite_differences() {
        let x = t(&[0.2, -1.0, 0.7, 1.5, 0.1, -0.3], &[2, 3]).requires_grad_(true);
        let target = Tensor::from_vec(vec![2i64, 0], &[2]);
        let w = t(&[0.5, 2.0, 1.0], &[3]);
        gradcheck(
            |v| cross_entropy_with(&v[0], &target, Some(&w), Reduction::Mean, 0.1),
            &[x],
        )
        .unwrap();
    }

    #[test]
    fn cross_entropy_accepts_spatial_inputs() {
        // [N=1, C=2, d=2]: position 0 has logits (0, ln 3), position 1 has (0, 0).
        let x = t(&[0.0, 0.0, 3f64.ln(), 0.0], &[1, 2, 2]);
        let target = Tensor::from_vec(vec![1i64, 0], &[1, 2]);
        let loss = cross_entropy_with(&x, &target, None, Reduction::None, 0.0);
        assert_eq!(loss.shape(), [1, 2]);
        let v = loss.to_vec::<f64>();
        assert!((v[0] - (4.0f64 / 3.0).ln()).abs() < 1e-12 && (v[1] - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn bce_with_logits_backward_matches_finite_differences() {
        let x = t(&[0.3, -2.0, 4.0, -0.7], &[2, 2]).requires_grad_(true);
        let y = t(&[1.0, 0.0, 0.5, 1.0], &[2, 2]);
        let pw = t(&[2.0, 0.5], &[2]);
        gradcheck(
            |v| binary_cross_entropy_with_logits_with(&v[0], &y, None, Some(&pw), Reduction::Sum),
            &[x],
        )
        .unwrap();
    }

    #[test]
    #[should_panic(expected = "cross_entropy: target 3 is out of bounds for 3 classes")]
    fn cross_entropy_rejects_target_out_of_range() {
        cross_entropy(&Tensor::zeros(&[1, 3]), &Tensor::from_vec(vec![3i64], &[1]));
    }

    #[test]
    #[should_panic(expected = "target must hold int64 class indices, got float32")]
    fn nll_loss_rejects_float_targets() {
        nll_loss(&Tensor::zeros(&[2, 3]), &Tensor::zeros(&[2]));
    }
}
