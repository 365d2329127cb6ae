//! PyTorch's `torch.nn.functional`: loss functions (`mse_loss`, `l1_loss`, `smooth_l1_loss`,
//! `cross_entropy`, `nll_loss`, `binary_cross_entropy_with_logits`) here, activations
//! (`relu`, `gelu`, `silu`, `softmax`, …), `layer_norm` and `one_hot` in the child modules,
//! re-exported.
//!
//! Each loss comes as a short form with PyTorch's defaults (`reduction = mean`) and a `_with`
//! form taking every option. They are composites of differentiable ops, so their gradients
//! come from autograd; only the class pick of `nll_loss` is a primitive
//! ([`Tensor::gather`]).
//!
//! Tensor-math misuse (mismatched shapes, non-integer class targets, a class index out of
//! range) panics naming the loss and the shapes, as every tensor op does.

mod activation;
mod encoding;
mod normalization;

pub use activation::{
    gelu, leaky_relu, log_softmax, mish, relu, sigmoid, silu, softmax, softplus, tanh,
};
pub use encoding::one_hot;
pub use normalization::layer_norm;

use crate::dtype::DType;
use crate::tensor::Tensor;

pub use crate::nn::attention::scaled_dot_product_attention;

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
    /// The sum divided by the batch size (the input's first dimension): `kl_div` only, where
    /// it gives the mathematically correct KL divergence per sample (PyTorch's
    /// `'batchmean'`). Other losses panic on it, as PyTorch rejects it there.
    BatchMean,
}

impl Reduction {
    #[track_caller]
    fn apply(self, name: &str, loss: Tensor) -> Tensor {
        match self {
            Reduction::None => loss,
            Reduction::Mean => loss.mean(),
            Reduction::Sum => loss.sum(),
            Reduction::BatchMean => batchmean_error(name),
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn batchmean_error(loss: &str) -> ! {
    panic!(
        "{loss}: Reduction::BatchMean is only valid for kl_div; use Mean, Sum or None \
         (PyTorch: \"batchmean is not a valid value for reduction\")"
    )
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
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::functional::mse_loss};
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
    reduction.apply("mse_loss", &diff * &diff)
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
    reduction.apply("l1_loss", (input - &like(target, input)).abs())
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
        return reduction.apply("smooth_l1_loss", abs);
    }
    // The mask is a constant, so the gradient is that of whichever branch applies.
    let quadratic = abs.detach().lt_scalar(beta);
    let inside = &(&abs * &abs) * (0.5 / beta);
    let outside = abs.sub_scalar(0.5 * beta);
    let loss = &(&quadratic * &inside) + &(&(1.0 - &quadratic) * &outside);
    reduction.apply("smooth_l1_loss", loss)
}

/// The class index PyTorch's `nll_loss` and `cross_entropy` ignore by default.
pub const DEFAULT_IGNORE_INDEX: i64 = -100;

/// A classification input as `[M, C]` rows (the class dimension moved last and the others
/// flattened), plus the shape of the unreduced loss: `[C]` gives `[]`, `[N, C]` gives
/// `[N]` and `[N, C, d1, …]` gives `[N, d1, …]`, as in PyTorch.
fn class_rows(input: &Tensor) -> (Tensor, Vec<usize>) {
    let shape = input.shape();
    match shape.len() {
        0 => (input.reshape(&[1, 1]), vec![]),
        1 => (input.unsqueeze(0), vec![]),
        2 => (input.clone(), vec![shape[0]]),
        n => {
            let mut perm: Vec<isize> = vec![0];
            perm.extend(2..n as isize);
            perm.push(1);
            let rows = input.permute(&perm).reshape(&[-1, shape[1] as isize]);
            (rows, [&shape[..1], &shape[2..]].concat())
        }
    }
}

/// The class-index target of `input` as `[M]`, checked against the input's shape.
#[track_caller]
fn index_target(loss: &str, input: &Tensor, target: &Tensor) -> Tensor {
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
    target.reshape(&[-1])
}

#[cold]
#[inline(never)]
#[track_caller]
fn class_shape_error(loss: &str, input: &[usize], target: &[usize]) -> ! {
    panic!(
        "{loss}: input {input:?} and target {target:?} do not match; expected input [N, C] with \
         target [N] (or [C] with [], or [N, C, d1, ...] with [N, d1, ...]), or for \
         cross_entropy a float target of the input's shape (class probabilities)"
    )
}

#[track_caller]
fn check_weight(loss: &str, weight: &Tensor, classes: usize) {
    if weight.shape() != [classes] {
        panic!(
            "{loss}: weight must have one value per class, shape [{classes}], got {:?}",
            weight.shape()
        );
    }
}

/// The targets of the positions that count, with the ignored ones replaced by class 0 so
/// that they can still be gathered, and the 0/1 mask of the positions that count.
#[track_caller]
fn checked_targets(
    loss: &str,
    target: &Tensor,
    classes: usize,
    ignore_index: i64,
) -> (Tensor, Vec<f64>) {
    let values = target.to_vec::<i64>();
    let mut safe = Vec::with_capacity(values.len());
    let mut counts = Vec::with_capacity(values.len());
    for &t in &values {
        if t == ignore_index {
            safe.push(0);
            counts.push(0.0);
            continue;
        }
        if t < 0 || t as usize >= classes {
            panic!(
                "{loss}: target {t} is out of bounds for {classes} classes (valid: \
                 0..{classes}, or ignore_index {ignore_index})"
            );
        }
        safe.push(t);
        counts.push(1.0);
    }
    (Tensor::from_vec(safe, &[values.len()]), counts)
}

/// The per-position negative log-likelihood of class-index targets, before reduction.
struct IndexedNll {
    /// `-w[t] · log_probs[t]` per position, 0 where ignored.
    loss: Tensor,
    /// `w[t]` per position (1 without weights), 0 where ignored: the `mean` denominator.
    weights: Tensor,
    /// 1 where the position counts, 0 where its target is `ignore_index`.
    counted: Tensor,
}

/// [`IndexedNll`] of `log_probs [M, C]` against `target [M]`.
#[track_caller]
fn indexed_nll(
    loss: &str,
    log_probs: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
) -> IndexedNll {
    let classes = log_probs.size(1);
    let (safe, counts) = checked_targets(loss, target, classes, ignore_index);
    let counted = Tensor::from_vec(counts, &[safe.numel()]).to_dtype(log_probs.dtype());
    let weights = match weight {
        Some(w) => {
            check_weight(loss, w, classes);
            &like(w, log_probs).index_select(0, &safe) * &counted
        }
        None => counted.clone(),
    };
    let picked = log_probs.gather(1, &safe.unsqueeze(1)).squeeze_dim(1);
    IndexedNll {
        loss: -(&picked * &weights),
        weights,
        counted,
    }
}

/// Reduces per-position losses; `Mean` divides by `denominator` (the summed weights of the
/// positions that count).
#[track_caller]
fn reduce_positions(
    loss: &str,
    per_position: Tensor,
    reduction: Reduction,
    denominator: &Tensor,
    shape: &[usize],
) -> Tensor {
    match reduction {
        Reduction::None => per_position.reshape_usize(shape),
        Reduction::Sum => per_position.sum(),
        Reduction::Mean => per_position.sum().div(&denominator.sum()),
        Reduction::BatchMean => batchmean_error(loss),
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
    nll_loss_with(input, target, None, DEFAULT_IGNORE_INDEX, Reduction::Mean)
}

/// [`nll_loss`] with per-class `weight [C]`, an `ignore_index` (positions whose target is
/// that value contribute 0 and are left out of the mean; PyTorch's default is
/// [`DEFAULT_IGNORE_INDEX`], -100) and a chosen reduction. `Mean` divides by the summed
/// weights of the targets that count (their number without weights), as PyTorch does.
#[track_caller]
pub fn nll_loss_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    reduction: Reduction,
) -> Tensor {
    let target = index_target("nll_loss", input, target);
    let (rows, shape) = class_rows(input);
    let nll = indexed_nll("nll_loss", &rows, &target, weight, ignore_index);
    reduce_positions("nll_loss", nll.loss, reduction, &nll.weights, &shape)
}

/// Cross-entropy between logits and targets: `log_softmax` over the class dimension
/// followed by the negative log-likelihood (`torch.nn.functional.cross_entropy`). As in
/// PyTorch, the target is either int64 class indices or, when it is a float tensor of the
/// input's shape, class probabilities.
///
/// # Shapes
/// `input [N, C]` logits and `target [N]` int64 class indices (also `[C]` with `[]`, and
/// `[N, C, d1, …]` with `[N, d1, …]`), or a float `target` of the input's shape.
///
/// # Panics
/// If the shapes do not match, or a class index is out of range.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::functional::cross_entropy};
/// let logits = Tensor::zeros(&[2, 4]);
/// let loss = cross_entropy(&logits, &Tensor::from_vec(vec![0i64, 3], &[2]));
/// assert!((loss.item() - 4f64.ln()).abs() < 1e-6);
/// ```
#[track_caller]
pub fn cross_entropy(input: &Tensor, target: &Tensor) -> Tensor {
    cross_entropy_with(
        input,
        target,
        None,
        DEFAULT_IGNORE_INDEX,
        Reduction::Mean,
        0.0,
    )
}

/// [`cross_entropy`] with every option of PyTorch's: per-class `weight [C]`,
/// `ignore_index` (class-index targets only: those positions contribute 0 and are left out
/// of the mean), a reduction, and `label_smoothing` in `[0, 1]`.
///
/// With class indices, the per-position loss is `(1 - ε) · nll + ε / C · Σ_c -w_c log p_c`
/// and `Mean` divides both terms by the summed weights of the targets that count. With
/// probabilities `t`, it is `-Σ_c w_c t'_c log p_c` with `t' = (1 - ε) t + ε / C`, and `Mean`
/// divides by the number of positions, not by the weights (PyTorch's rules).
///
/// # Panics
/// As [`cross_entropy`], and if `label_smoothing` is outside `[0, 1]`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Reduction, functional::cross_entropy_with}};
/// // The padding positions (target -100) are left out of the mean.
/// let logits = Tensor::zeros(&[3, 4]);
/// let target = Tensor::from_vec(vec![1i64, -100, 2], &[3]);
/// let loss = cross_entropy_with(&logits, &target, None, -100, Reduction::Mean, 0.0);
/// assert!((loss.item() - 4f64.ln()).abs() < 1e-6);
/// ```
#[track_caller]
pub fn cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    reduction: Reduction,
    label_smoothing: f64,
) -> Tensor {
    if !(0.0..=1.0).contains(&label_smoothing) {
        panic!("cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}");
    }
    if target.dtype().is_float() && target.shape() == input.shape() {
        return cross_entropy_probs(input, target, weight, reduction, label_smoothing);
    }
    let target = index_target("cross_entropy", input, target);
    let (rows, shape) = class_rows(input);
    let classes = rows.size(1);
    let log_probs = rows.log_softmax(1);
    let nll = indexed_nll("cross_entropy", &log_probs, &target, weight, ignore_index);
    let per_position = if label_smoothing == 0.0 {
        nll.loss
    } else {
        // Every class's -w_c log p_c, at the positions that count.
        let all = match weight {
            Some(w) => -(&log_probs * &like(w, &rows)).sum_dim(1, false),
            None => -log_probs.sum_dim(1, false),
        };
        let smooth = &all * &nll.counted;
        &(&nll.loss * (1.0 - label_smoothing)) + &(&smooth * (label_smoothing / classes as f64))
    };
    reduce_positions(
        "cross_entropy",
        per_position,
        reduction,
        &nll.weights,
        &shape,
    )
}

/// [`cross_entropy_with`] for a target of class probabilities.
#[track_caller]
fn cross_entropy_probs(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
    label_smoothing: f64,
) -> Tensor {
    let (rows, shape) = class_rows(input);
    let (target, _) = class_rows(&like(target, input));
    let classes = rows.size(1);
    let target = if label_smoothing > 0.0 {
        (&target * (1.0 - label_smoothing)).add_scalar(label_smoothing / classes as f64)
    } else {
        target
    };
    let target = match weight {
        Some(w) => {
            check_weight("cross_entropy", w, classes);
            &target * &like(w, &rows)
        }
        None => target,
    };
    let per_position = -(&rows.log_softmax(1) * &target).sum_dim(1, false);
    match reduction {
        Reduction::None => per_position.reshape_usize(&shape),
        Reduction::Sum => per_position.sum(),
        Reduction::Mean => per_position.mean(),
        Reduction::BatchMean => batchmean_error("cross_entropy"),
    }
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
    reduction.apply("binary_cross_entropy_with_logits", loss)
}

/// Huber loss: `0.5 d²` where `|d| < delta`, else `delta · (|d| - 0.5 delta)`, with
/// `d = input - target` and `delta = 1` (`torch.nn.functional.huber_loss`). It equals
/// `delta ·` [`smooth_l1_loss`] with `beta = delta`.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn huber_loss(input: &Tensor, target: &Tensor) -> Tensor {
    huber_loss_with(input, target, Reduction::Mean, 1.0)
}

/// [`huber_loss`] with a chosen reduction and `delta`.
///
/// # Panics
/// If the shapes differ or `delta` is not positive.
#[track_caller]
pub fn huber_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
) -> Tensor {
    check_same_shape("huber_loss", input, target);
    if delta.is_nan() || delta <= 0.0 {
        panic!("huber_loss: delta must be positive, got {delta}");
    }
    let diff = input - &like(target, input);
    let abs = diff.abs();
    // The mask is a constant, so the gradient is that of whichever branch applies.
    let quadratic = abs.detach().lt_scalar(delta);
    let inside = &(&diff * &diff) * 0.5;
    let outside = &abs.sub_scalar(0.5 * delta) * delta;
    let loss = &(&quadratic * &inside) + &(&(1.0 - &quadratic) * &outside);
    reduction.apply("huber_loss", loss)
}

/// Kullback-Leibler divergence of `target` from the distribution whose log-probabilities
/// are `input`: pointwise `target · (log target - input)`, 0 where the target is 0
/// (`torch.nn.functional.kl_div` with `reduction = 'mean'`, `log_target = False`).
///
/// PyTorch's default `mean` divides by every element, not by the batch: use
/// [`kl_div_with`] with [`Reduction::BatchMean`] for the KL divergence per sample.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn kl_div(input: &Tensor, target: &Tensor) -> Tensor {
    kl_div_with(input, target, Reduction::Mean, false)
}

/// [`kl_div`] with a chosen reduction (`BatchMean` = sum / `input.shape[0]`) and
/// `log_target`: when true, `target` holds log-probabilities too and the pointwise loss is
/// `exp(target) · (target - input)`.
///
/// # Panics
/// If the shapes differ.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Reduction, functional::kl_div_with}};
/// let p = Tensor::from_vec(vec![0.5f64, 0.5], &[1, 2]);
/// let loss = kl_div_with(&p.log(), &p, Reduction::BatchMean, false);
/// assert_eq!(loss.item(), 0.0);
/// ```
#[track_caller]
pub fn kl_div_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    log_target: bool,
) -> Tensor {
    check_same_shape("kl_div", input, target);
    let target = like(target, input);
    let loss = if log_target {
        &target.exp() * &(&target - input)
    } else {
        // xlogy: 0 · log 0 counts as 0, as in PyTorch.
        let positive = target.gt_scalar(0.0);
        let safe = target.masked_fill(&positive.eq_scalar(0.0), 1.0);
        &(&target * &safe.log()) - &(&target * input)
    };
    match reduction {
        Reduction::BatchMean => {
            let batch = input.shape().first().copied().unwrap_or(1).max(1);
            loss.sum().div_scalar(batch as f64)
        }
        r => r.apply("kl_div", loss),
    }
}

/// Binary cross-entropy between probabilities `input` (in `[0, 1]`) and `target`:
/// `-(t log x + (1 - t) log(1 - x))`, each log clamped at -100 as PyTorch does so that a
/// probability of exactly 0 or 1 gives a finite loss (`torch.nn.functional.binary_cross_entropy`).
/// On logits, [`binary_cross_entropy_with_logits`] is the stable choice.
///
/// # Panics
/// If the shapes differ.
#[track_caller]
pub fn binary_cross_entropy(input: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_with(input, target, None, Reduction::Mean)
}

/// [`binary_cross_entropy`] with an element `weight` (broadcast to the input) and a chosen
/// reduction.
///
/// # Panics
/// If the shapes differ or the weight does not broadcast to the input.
#[track_caller]
pub fn binary_cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Tensor {
    check_same_shape("binary_cross_entropy", input, target);
    let target = like(target, input);
    let log_x = input.log().clamp(Some(-100.0), None);
    let log_1mx = (1.0 - input).log().clamp(Some(-100.0), None);
    let loss = -(&(&target * &log_x) + &(&(1.0 - &target) * &log_1mx));
    let loss = match weight {
        Some(w) => &loss * &like(w, input),
        None => loss,
    };
    reduction.apply("binary_cross_entropy", loss)
}

/// Cosine embedding loss: `1 - cos(x1, x2)` where `target` is 1 and
/// `max(0, cos(x1, x2) - margin)` where it is -1, the cosine taken over dim 1
/// (`torch.nn.functional.cosine_embedding_loss`).
///
/// # Shapes
/// `input1`, `input2 [N, D]` and `target [N]` (int64 or float, ±1); or `[D]` with a
/// 0-dimensional target.
///
/// # Panics
/// If the shapes do not fit, or a target is neither 1 nor -1 (PyTorch silently gives 0
/// there).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::{Reduction, functional::cosine_embedding_loss}};
/// let a = Tensor::from_vec(vec![1.0f64, 0.0], &[1, 2]);
/// let b = Tensor::from_vec(vec![0.0f64, 2.0], &[1, 2]);
/// let similar = Tensor::from_vec(vec![1i64], &[1]);
/// // orthogonal: cos = 0, so the loss for "similar" is 1
/// assert_eq!(cosine_embedding_loss(&a, &b, &similar, 0.0, Reduction::Mean).item(), 1.0);
/// ```
#[track_caller]
pub fn cosine_embedding_loss(
    input1: &Tensor,
    input2: &Tensor,
    target: &Tensor,
    margin: f64,
    reduction: Reduction,
) -> Tensor {
    let (s1, s2, st) = (input1.shape(), input2.shape(), target.shape());
    let fits = s1 == s2
        && match s1.len() {
            1 => st.is_empty(),
            2 => st == [s1[0]],
            _ => false,
        };
    if !fits {
        panic!(
            "cosine_embedding_loss: input1 {s1:?}, input2 {s2:?} and target {st:?} do not \
             fit; expected [N, D], [N, D] and [N] (or [D], [D] and [])"
        );
    }
    let labels = target.to_vec::<f64>();
    if let Some(bad) = labels.iter().find(|&&t| t != 1.0 && t != -1.0) {
        panic!("cosine_embedding_loss: target values must be 1 or -1, got {bad}");
    }
    let d = (s1.len() - 1) as isize;
    // PyTorch's EPSILON keeps the denominator away from 0 for zero vectors.
    const EPSILON: f64 = 1e-12;
    let dot = (input1 * input2).sum_dim(d, false);
    let sq1 = (input1 * input1).sum_dim(d, false).add_scalar(EPSILON);
    let sq2 = (input2 * input2).sum_dim(d, false).add_scalar(EPSILON);
    let cos = &dot / &(&sq1 * &sq2).sqrt();
    let similar = target.eq_scalar(1.0).to_dtype(cos.dtype());
    let pos = 1.0 - &cos;
    let neg = cos.sub_scalar(margin).relu();
    let loss = &(&similar * &pos) + &(&(1.0 - &similar) * &neg);
    reduction.apply("cosine_embedding_loss", loss)
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
            |v| cross_entropy_with(&v[0], &target, Some(&w), -100, Reduction::Mean, 0.1),
            &[x],
        )
        .unwrap();
    }

    #[test]
    fn cross_entropy_accepts_spatial_inputs() {
        // [N=1, C=2, d=2]: position 0 has logits (0, ln 3), position 1 has (0, 0).
        let x = t(&[0.0, 0.0, 3f64.ln(), 0.0], &[1, 2, 2]);
        let target = Tensor::from_vec(vec![1i64, 0], &[1, 2]);
        let loss = cross_entropy_with(&x, &target, None, -100, Reduction::None, 0.0);
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

    #[test]
    fn ignored_positions_leave_the_mean_and_get_no_gradient() {
        let x = t(&[0.2, -1.0, 0.7, 1.5, 0.1, -0.3], &[3, 2]).requires_grad_(true);
        let target = Tensor::from_vec(vec![1i64, -100, 0], &[3]);
        let loss = cross_entropy_with(&x, &target, None, -100, Reduction::Mean, 0.1);
        let kept = Tensor::from_vec(vec![1i64, 0], &[2]);
        let rows = x.index_select(0, &Tensor::from_vec(vec![0i64, 2], &[2]));
        let direct = cross_entropy_with(&rows, &kept, None, -100, Reduction::Mean, 0.1);
        assert!((loss.item() - direct.item()).abs() < 1e-15);
        loss.backward();
        assert_eq!(&x.grad().unwrap().to_vec::<f64>()[2..4], [0.0, 0.0]);
    }

    #[test]
    fn probability_targets_equal_one_hot_class_targets() {
        let x = t(&[0.2, -1.0, 0.7, 1.5, 0.1, -0.3], &[2, 3]);
        let classes = Tensor::from_vec(vec![2i64, 0], &[2]);
        let probs = one_hot(&classes, Some(3)).double();
        let w = t(&[0.5, 2.0, 1.0], &[3]);
        let a = cross_entropy_with(&x, &probs, Some(&w), -100, Reduction::Sum, 0.0);
        let b = cross_entropy_with(&x, &classes, Some(&w), -100, Reduction::Sum, 0.0);
        assert!((a.item() - b.item()).abs() < 1e-15);
    }

    #[test]
    #[should_panic(expected = "mse_loss: Reduction::BatchMean is only valid for kl_div")]
    fn batchmean_is_refused_outside_kl_div() {
        mse_loss_with(
            &Tensor::zeros(&[2]),
            &Tensor::zeros(&[2]),
            Reduction::BatchMean,
        );
    }
}
