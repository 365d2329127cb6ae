//! Gradient clipping (PyTorch's `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`),
//! applied between `backward()` and `opt.step()`.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The `norm_type`-norm of one gradient, accumulated in f64.
fn norm(g: &Tensor, norm_type: f64) -> f64 {
    let values = g.to_array::<f64>();
    if norm_type == f64::INFINITY {
        values.iter().fold(0.0, |m, v| m.max(v.abs()))
    } else if norm_type == 2.0 {
        values.iter().map(|v| v * v).sum::<f64>().sqrt()
    } else {
        let s: f64 = values.iter().map(|v| v.abs().powf(norm_type)).sum();
        s.powf(1.0 / norm_type)
    }
}

/// Rescales the gradients of `params` so that their norm, taken over all of them together
/// as if concatenated into one vector, is at most `max_norm`, and returns that norm before
/// clipping. Parameters without a gradient are skipped.
///
/// The scale is `min(1, max_norm / (total_norm + 1e-6))`, as in PyTorch; `norm_type` is `2.0`
/// for the Euclidean norm, `f64::INFINITY` for the largest absolute value, or any other
/// positive `p`.
///
/// # Panics
/// If `norm_type` is not positive.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::clip_grad_norm_};
/// let w = Tensor::zeros(&[2]).requires_grad_(true);
/// w.set_grad(Some(Tensor::from_vec(vec![3.0f32, 4.0], &[2])));
/// let total = clip_grad_norm_([&w], 1.0, 2.0);
/// assert_eq!(total, 5.0);
/// let g = w.grad().unwrap().to_vec::<f32>();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
#[doc(alias = "clip_grad_norm")]
#[track_caller]
pub fn clip_grad_norm_<P: AsRef<Tensor>>(
    params: impl IntoIterator<Item = P>,
    max_norm: f64,
    norm_type: f64,
) -> f64 {
    let grads = gradients(params, norm_type);
    let total = total_norm(&grads, norm_type);
    scale(&grads, max_norm, total);
    total
}

/// [`clip_grad_norm_`] with PyTorch's `error_if_nonfinite`: when it is true and the total
/// norm is NaN or infinite, no gradient is touched and an error is returned instead of
/// scaling every gradient by a non-finite factor.
///
/// # Errors
/// [`Error::NonFinite`] naming the norm, when `error_if_nonfinite` is set and the norm is not
/// finite.
///
/// # Panics
/// If `norm_type` is not positive.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, optim::clip_grad_norm_with};
/// let w = Tensor::zeros(&[2]).requires_grad_(true);
/// w.set_grad(Some(Tensor::from_vec(vec![f32::NAN, 4.0], &[2])));
/// let err = clip_grad_norm_with([&w], 1.0, 2.0, true).unwrap_err();
/// assert!(err.to_string().starts_with("clip_grad_norm_: the total norm of order 2 of the gradients of 1 parameters is NaN"));
/// assert_eq!(w.grad().unwrap().to_vec::<f32>()[1], 4.0);
/// ```
#[track_caller]
pub fn clip_grad_norm_with<P: AsRef<Tensor>>(
    params: impl IntoIterator<Item = P>,
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<f64> {
    let grads = gradients(params, norm_type);
    let total = total_norm(&grads, norm_type);
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::NonFinite(format!(
            "clip_grad_norm_: the total norm of order {norm_type} of the gradients of {} \
             parameters is {total}, so they cannot be clipped; look for the NaN with \
             torchlet::autograd::detect_anomaly, or pass error_if_nonfinite = false to scale \
             them by the non-finite norm anyway",
            grads.len()
        )));
    }
    scale(&grads, max_norm, total);
    Ok(total)
}

/// The gradients of `params` (those that have one), after checking `norm_type`.
#[track_caller]
fn gradients<P: AsRef<Tensor>>(params: impl IntoIterator<Item = P>, norm_type: f64) -> Vec<Tensor> {
    if norm_type.is_nan() || norm_type <= 0.0 {
        panic!(
            "clip_grad_norm_: norm_type must be positive (2.0, f64::INFINITY, ...), got {norm_type}"
        );
    }
    params
        .into_iter()
        .filter_map(|p| p.as_ref().grad())
        .collect()
}

/// The norm of all `grads` together, as if concatenated.
fn total_norm(grads: &[Tensor], norm_type: f64) -> f64 {
    let norms = grads.iter().map(|g| norm(g, norm_type));
    if norm_type == f64::INFINITY {
        norms.fold(0.0, |m, n| if n.is_nan() { n } else { m.max(n) })
    } else {
        norms
            .map(|n| n.powf(norm_type))
            .sum::<f64>()
            .powf(1.0 / norm_type)
    }
}

/// Multiplies `grads` by `min(1, max_norm / (total + 1e-6))`, PyTorch's clip coefficient.
fn scale(grads: &[Tensor], max_norm: f64, total: f64) {
    let scale = (max_norm / (total + 1e-6)).min(1.0);
    no_grad(|| {
        for g in grads {
            g.mul_scalar_(scale);
        }
    });
}

/// Clamps every gradient of `params` to `[-clip_value, clip_value]`, in place.
///
/// # Panics
/// If `clip_value` is negative.
#[doc(alias = "clip_grad_value")]
#[track_caller]
pub fn clip_grad_value_<P: AsRef<Tensor>>(params: impl IntoIterator<Item = P>, clip_value: f64) {
    if clip_value.is_nan() || clip_value < 0.0 {
        panic!("clip_grad_value_: clip_value must be non-negative, got {clip_value}");
    }
    no_grad(|| {
        for g in params.into_iter().filter_map(|p| p.as_ref().grad()) {
            g.copy_(&g.clamp(Some(-clip_value), Some(clip_value)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_grad(v: &[f64]) -> Tensor {
        let t = Tensor::zeros(&[v.len()]).double().requires_grad_(true);
        t.set_grad(Some(Tensor::from_vec(v.to_vec(), &[v.len()])));
        t
    }

    #[test]
    fn clip_grad_norm_takes_the_norm_over_all_gradients() {
        let (a, b) = (with_grad(&[3.0]), with_grad(&[-4.0, 0.0]));
        let none = Tensor::zeros(&[1]).requires_grad_(true);
        assert_eq!(clip_grad_norm_([&a, &b, &none], 10.0, 2.0), 5.0);
        assert_eq!(a.grad().map(|g| g.item()), Some(3.0));
        assert_eq!(clip_grad_norm_([&a, &b], 1.0, f64::INFINITY), 4.0);
        let scaled = b.grad().map(|g| g.to_vec::<f64>()[0]).unwrap_or_default();
        assert!((scaled + 4.0 / (4.0 + 1e-6)).abs() < 1e-15);
    }

    #[test]
    fn clip_grad_value_clamps_in_place() {
        let a = with_grad(&[3.0, -0.5, -2.0]);
        let g = a.grad().unwrap_or_else(|| a.zeros_like());
        clip_grad_value_([&a], 1.0);
        assert_eq!(g.to_vec::<f64>(), [1.0, -0.5, -1.0]);
    }
}
