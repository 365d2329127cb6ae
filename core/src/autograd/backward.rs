//! The one way into the backward pass: [`backward`]. `Tensor::backward()` and
//! `Tensor::backward_with(&grad)` are its shorthands.

use crate::autograd::graph;
use crate::tensor::Tensor;

/// Computes the gradient of `tensor` with respect to every leaf that requires grad and adds
/// it to their [`grad`](Tensor::grad) (PyTorch's `torch.autograd.backward(tensor,
/// grad_tensors, retain_graph)`).
///
/// `grad_tensor` is the upstream gradient, of `tensor`'s shape and dtype; `None` means a one
/// for a one-element `tensor`. Unless `retain_graph`, the graph's saved values are freed on
/// the way, so a second backward through it panics. Unlike PyTorch, it takes one tensor: for
/// several outputs, backward from their sum.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, autograd};
/// let x = Tensor::from_vec(vec![3.0f32], &[1]).requires_grad_(true);
/// let y = (&x * &x).sum();
/// autograd::backward(&y, None, true); // keeps the graph for a second pass
/// y.backward(); // dy/dx = 2x = 6, accumulated twice
/// assert_eq!(x.grad().unwrap().to_vec::<f32>(), [12.0]);
/// ```
///
/// # Panics
/// If `grad_tensor` is `None` and `tensor` has more than one element, if `grad_tensor`'s
/// shape or dtype differs from `tensor`'s, if `tensor` does not require grad, or if its graph
/// was freed by an earlier backward.
#[track_caller]
pub fn backward(tensor: &Tensor, grad_tensor: Option<&Tensor>, retain_graph: bool) {
    let grad = match grad_tensor {
        Some(grad) => {
            check_grad_arg(tensor, grad);
            grad.detach()
        }
        None => implicit_grad(tensor),
    };
    graph::run_backward(tensor, grad, retain_graph);
}

#[track_caller]
fn implicit_grad(tensor: &Tensor) -> Tensor {
    if tensor.numel() != 1 {
        implicit_grad_error(&tensor.shape());
    }
    tensor.ones_like()
}

#[track_caller]
fn check_grad_arg(tensor: &Tensor, grad: &Tensor) {
    if grad.shape() != tensor.shape() || grad.dtype() != tensor.dtype() {
        grad_arg_error(tensor, grad);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn implicit_grad_error(shape: &[usize]) -> ! {
    panic!(
        "backward: grad can be implicitly created only for one-element outputs, got shape \
         {shape:?}; use backward_with(&grad)"
    )
}

#[cold]
#[inline(never)]
#[track_caller]
fn grad_arg_error(tensor: &Tensor, grad: &Tensor) -> ! {
    panic!(
        "backward_with: grad is {} {:?} but the output is {} {:?}",
        grad.dtype(),
        grad.shape(),
        tensor.dtype(),
        tensor.shape()
    )
}
