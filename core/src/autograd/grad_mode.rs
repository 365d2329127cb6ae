//! Whether ops record a graph: on by default, off inside [`no_grad`] (per thread, as in PyTorch).

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record the graph for backward.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Turns graph recording on or off for this thread; returns the previous setting.
pub fn set_grad_enabled(enabled: bool) -> bool {
    GRAD_ENABLED.with(|g| g.replace(enabled))
}

/// Runs `f` without recording a graph: results of ops inside do not require grad, and
/// leaf tensors that require grad may be updated in place (what optimizers do).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// # use torchlet::tensor::Tensor;
/// # use torchlet::autograd::no_grad;
/// let w = Tensor::ones(&[2]).requires_grad_(true);
/// let y = no_grad(|| &w * 2.0);
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Turns graph recording off until dropped (PyTorch's `with torch.no_grad():`).
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// # use torchlet::tensor::Tensor;
/// # use torchlet::autograd::NoGradGuard;
/// let w = Tensor::ones(&[2]).requires_grad_(true);
/// {
///     let _guard = NoGradGuard::new();
///     w.sub_(&Tensor::full(&[2], 0.5));
/// }
/// assert_eq!(w.to_vec::<f32>(), [0.5, 0.5]);
/// ```
#[must_use = "graph recording is back on as soon as the guard is dropped"]
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Turns recording off now; the state before is restored when the guard is dropped.
    pub fn new() -> Self {
        NoGradGuard {
            previous: set_grad_enabled(false),
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        set_grad_enabled(self.previous);
    }
}
