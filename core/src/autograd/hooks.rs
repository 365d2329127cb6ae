//! Hooks that the backward pass runs on leaf tensors: PyTorch's
//! `Tensor.register_post_accumulate_grad_hook`.
//!
//! NOTE [ Post-accumulate-grad hooks ]
//! A hook registered on a leaf runs once per backward pass that reaches the leaf, right after
//! the last gradient of that pass has been accumulated into the leaf's `grad`: the gradient
//! the hook sees is final for the pass, while the rest of the pass is still to run.
//! DistributedDataParallel uses it to start reducing a bucket of gradients while backward
//! computes the others. PyTorch runs a leaf's `AccumulateGrad` node once, after summing the
//! gradients of every path into the leaf; torchlet accumulates each path's gradient as it
//! arrives, so `run_backward` counts the edges into each hooked leaf before the pass and runs
//! the hooks when the last one has delivered (NOTE [ Graph layout ] in `graph.rs`). As in
//! PyTorch, a pass in which no gradient reached the leaf runs none of its hooks. Hooks run on
//! the thread that called backward, in registration order, with grad mode off; a hook
//! registered during a pass runs from the next pass on.
//!
//! The hooks live in a registry keyed by the tensor's identity, which keeps a clone of the
//! tensor so that the identity cannot be reused by another tensor while hooks are registered:
//! a tensor with hooks lives until they are removed. A backward pass with no hook registered
//! anywhere pays one atomic load for them.

use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A hook run with the leaf once its gradient is final for the pass.
pub(crate) type Hook = Arc<dyn Fn(&Tensor) + Send + Sync>;

/// The hooks of one tensor, with the tensor kept alive.
struct Entry {
    _tensor: Tensor,
    hooks: Vec<(u64, Hook)>,
}

static REGISTRY: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());
/// How many tensors have hooks: zero lets a backward pass skip the registry.
static HOOKED: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Removes the hook it was returned for (PyTorch's `torch.utils.hooks.RemovableHandle`).
/// Dropping the handle keeps the hook, as in PyTorch.
#[derive(Debug)]
#[must_use = "a hook is removed only through its handle's remove()"]
pub struct RemovableHandle {
    tensor: usize,
    id: u64,
}

impl RemovableHandle {
    /// Unregisters the hook; a pass already running may still call it once.
    pub fn remove(self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = registry.get_mut(&self.tensor) else {
            return;
        };
        entry.hooks.retain(|(id, _)| *id != self.id);
        if entry.hooks.is_empty() {
            registry.remove(&self.tensor);
            HOOKED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Tensor {
    /// Registers `hook` to run after this leaf's gradient has been accumulated for the last
    /// time in a backward pass, with the leaf itself (its [`grad`](Tensor::grad) is then
    /// final for the pass); PyTorch's `register_post_accumulate_grad_hook`. See NOTE
    /// [ Post-accumulate-grad hooks ].
    ///
    /// ```
    /// # use torchlet_core as torchlet;
    /// use std::sync::{Arc, Mutex};
    /// use torchlet::Tensor;
    ///
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).requires_grad_(true);
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = Arc::clone(&seen);
    /// let handle = w.register_post_accumulate_grad_hook(move |p: &Tensor| {
    ///     s.lock().unwrap().push(p.grad().unwrap().to_vec::<f32>());
    /// });
    /// (&(&w * 3.0) + &w).sum().backward(); // two paths into w, one call
    /// assert_eq!(*seen.lock().unwrap(), [vec![4.0, 4.0]]);
    /// handle.remove();
    /// ```
    ///
    /// # Panics
    /// If the tensor is not a leaf or does not require grad (only leaves accumulate a
    /// gradient).
    #[track_caller]
    pub fn register_post_accumulate_grad_hook<F>(&self, hook: F) -> RemovableHandle
    where
        F: Fn(&Tensor) + Send + Sync + 'static,
    {
        if !self.requires_grad() || !self.is_leaf() {
            not_a_leaf(self.requires_grad())
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let tensor = self.identity();
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = registry.entry(tensor).or_insert_with(|| {
            HOOKED.fetch_add(1, Ordering::SeqCst);
            Entry {
                _tensor: self.clone(),
                hooks: Vec::new(),
            }
        });
        entry.hooks.push((id, Arc::new(hook)));
        RemovableHandle { tensor, id }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn not_a_leaf(requires_grad: bool) -> ! {
    if requires_grad {
        panic!(
            "register_post_accumulate_grad_hook: post accumulate grad hooks cannot be \
             registered on non-leaf tensors; register it on the leaf the result came from"
        )
    }
    panic!(
        "register_post_accumulate_grad_hook: cannot register a hook on a tensor that doesn't \
         require gradient; call requires_grad_(true) first"
    )
}

/// The hooks of every hooked tensor, by identity, for one backward pass; `None` when no
/// tensor has a hook.
pub(crate) fn snapshot() -> Option<BTreeMap<usize, Vec<Hook>>> {
    if HOOKED.load(Ordering::SeqCst) == 0 {
        return None;
    }
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let hooks = registry
        .iter()
        .map(|(&t, e)| (t, e.hooks.iter().map(|(_, h)| Arc::clone(h)).collect()))
        .collect();
    Some(hooks)
}
