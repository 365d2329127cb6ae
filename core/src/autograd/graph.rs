//! The recorded graph and the backward pass (NOTE [ Graph layout ] on [`Node`]).
//!
//! NOTE [ Callbacks at the end of backward ]
//! A node may carry a callback that runs once the whole backward pass that reached it has
//! finished, when every leaf holds its final gradient (PyTorch's
//! `Variable._execution_engine.queue_callback`, which DistributedDataParallel uses to finish
//! its gradient reduction). Callbacks run on the thread that called backward, in the order
//! their nodes ran, after all gradients have been accumulated. The same identity node can
//! also run a callback when the pass reaches it, before any gradient of what is upstream of
//! it has been computed ([`with_backward_callbacks`]).
//!
//! Hooks on leaves run during the pass, as soon as a leaf's gradient is final (NOTE
//! [ Post-accumulate-grad hooks ] in `hooks.rs`): when hooks are registered, the pass also
//! counts the edges into each hooked leaf and runs its hooks when the last has delivered.

use crate::autograd::anomaly::{self, OpContext};
use crate::autograd::grad_mode::{is_grad_enabled, set_grad_enabled};
use crate::autograd::hooks::{self, Hook};
use crate::dtype::Storage;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Gradients of an op's inputs from the gradient of its output; `needs[i]` says whether
/// input `i` wants one (others may be `None`).
pub(crate) type BackwardFn = Box<dyn Fn(&Tensor, &[bool]) -> Vec<Option<Tensor>> + Send + Sync>;

/// One recorded op.
///
/// # NOTE [ Graph layout ]
/// Every tensor produced by a differentiable op while grad mode is on carries a `grad_fn`: an
/// `Arc<Node>` holding the op's backward closure and the input tensors that require grad
/// (the edges). Leaves (tensors made by the user, parameters) have no `grad_fn`; their
/// gradient accumulates into their `grad` slot. The backward closure captures what it needs
/// (saved inputs or outputs) as `Saved` values, which remember the version of the tensor
/// they came from. `backward` counts each node's consumers, then runs the nodes in
/// dependency order (each exactly once, after all its consumers), summing gradients that
/// reach a node along several paths. Unless the graph is retained, each node drops its
/// closure and edges as soon as it has run, freeing activations early; running it again
/// panics with PyTorch's message.
pub struct Node {
    name: &'static str,
    state: Mutex<Option<NodeState>>,
    /// Where the op came from, kept only while anomaly detection is on.
    context: Option<Box<OpContext>>,
}

struct NodeState {
    /// The op's inputs in order; `None` for those that do not require grad.
    inputs: Vec<Option<Tensor>>,
    backward: BackwardFn,
    /// See NOTE [ Callbacks at the end of backward ].
    at_end: Option<EndCallback>,
}

/// A callback run when a backward pass reaches a node or after the pass (NOTE [ Callbacks at
/// the end of backward ]).
pub(crate) type EndCallback = Arc<dyn Fn() + Send + Sync>;

impl Node {
    /// The op that recorded this node, as PyTorch names its `grad_fn` (`MulBackward0` → `mul`).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A value an op keeps for its backward, with the version of the tensor it came from.
///
/// Modifying that tensor in place afterwards bumps its version; backward then reports the
/// modification instead of computing a silently wrong gradient.
pub(crate) struct Saved {
    data: Storage,
    version: Arc<AtomicU64>,
    expected: u64,
    op: &'static str,
}

impl Saved {
    pub(crate) fn new(t: &Tensor, op: &'static str) -> Saved {
        let version = t.version_counter();
        let expected = version.load(Ordering::Relaxed);
        Saved {
            data: t.storage(),
            version,
            expected,
            op,
        }
    }

    /// The saved value as a tensor that does not require grad.
    ///
    /// Inside `backward`, a modified value is reported after the node's backward returns, at
    /// the line that called `backward()` (see [`SavedError`]); the value is handed out anyway
    /// and what is computed from it is dropped.
    #[track_caller]
    pub(crate) fn get(&self) -> Tensor {
        let now = self.version.load(Ordering::Relaxed);
        if now != self.expected {
            let error = SavedError {
                op: self.op,
                shape: self.data.shape().to_vec(),
                now,
                expected: self.expected,
            };
            if !defer_saved_error(error.clone()) {
                error.raise();
            }
        }
        Tensor::from_storage(self.data.clone())
    }
}

/// A saved value that was modified in place after it was saved.
///
/// Backward closures are boxed, so `#[track_caller]` cannot reach through them to the
/// caller of `backward()`: the closure's `Saved::get` leaves the error here and
/// [`run_node`], which is `#[track_caller]` up to `Tensor::backward`, raises it.
#[derive(Clone)]
struct SavedError {
    op: &'static str,
    shape: Vec<usize>,
    now: u64,
    expected: u64,
}

impl SavedError {
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn raise(&self) -> ! {
        let SavedError {
            op,
            shape,
            now,
            expected,
        } = self;
        panic!(
            "backward: one of the tensors needed for gradient computation has been modified by \
             an in-place operation: the {shape:?} tensor saved by `{op}` is at version {now}; \
             expected version {expected}. Use an out-of-place op, or update it after backward()"
        )
    }
}

/// Where this thread's backward stands: not in a node's backward, in one, or in one that
/// met a modified saved value (kept in `SAVED_ERROR`). A `Cell<u8>` rather than a
/// `RefCell<Option<_>>`: it is read twice per node on the W3 path.
const OUTSIDE: u8 = 0;
const INSIDE: u8 = 1;
const MET: u8 = 2;

thread_local! {
    static BACKWARD_STATE: Cell<u8> = const { Cell::new(OUTSIDE) };
    static SAVED_ERROR: RefCell<Option<SavedError>> = const { RefCell::new(None) };
}

/// Keeps `error` for [`run_node`] to raise; false outside a node's backward.
fn defer_saved_error(error: SavedError) -> bool {
    match BACKWARD_STATE.with(Cell::get) {
        OUTSIDE => false,
        INSIDE => {
            BACKWARD_STATE.with(|s| s.set(MET));
            SAVED_ERROR.with(|e| *e.borrow_mut() = Some(error));
            true
        }
        _ => true,
    }
}

/// Runs a node's backward, then raises the first modified saved value it met.
#[track_caller]
fn call_backward(s: &NodeState, grad: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>> {
    let outer = BACKWARD_STATE.with(|s| s.replace(INSIDE));
    let grads = (s.backward)(grad, needs);
    if BACKWARD_STATE.with(|s| s.replace(outer)) == MET
        && let Some(error) = SAVED_ERROR.with(|e| e.borrow_mut().take())
    {
        error.raise();
    }
    grads
}

/// Wraps an op's result, recording the op when grad mode is on and an input requires grad.
///
/// `make_backward` is only called when the op is recorded, so ops pay nothing for saving
/// values when no gradient is wanted.
#[track_caller]
pub(crate) fn record<F, B>(
    name: &'static str,
    out: Storage,
    inputs: &[&Tensor],
    make_backward: F,
) -> Tensor
where
    F: FnOnce() -> B,
    B: Fn(&Tensor, &[bool]) -> Vec<Option<Tensor>> + Send + Sync + 'static,
{
    record_with_version(name, out, inputs, None, make_backward)
}

/// Whether an op on `inputs` must be recorded for backward.
pub(crate) fn needs_graph(inputs: &[&Tensor]) -> bool {
    is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
}

/// [`record`] for a view of `base`: the result shares `base`'s version counter, so an
/// in-place change through either is seen by values saved from the other.
#[track_caller]
pub(crate) fn record_view<F, B>(
    name: &'static str,
    out: Storage,
    base: &Tensor,
    make_backward: F,
) -> Tensor
where
    F: FnOnce() -> B,
    B: Fn(&Tensor, &[bool]) -> Vec<Option<Tensor>> + Send + Sync + 'static,
{
    record_with_version(
        name,
        out,
        &[base],
        Some(base.version_counter()),
        make_backward,
    )
}

#[track_caller]
fn record_with_version<F, B>(
    name: &'static str,
    out: Storage,
    inputs: &[&Tensor],
    version: Option<Arc<AtomicU64>>,
    make_backward: F,
) -> Tensor
where
    F: FnOnce() -> B,
    B: Fn(&Tensor, &[bool]) -> Vec<Option<Tensor>> + Send + Sync + 'static,
{
    // See NOTE [ Anomaly mode ] in anomaly.rs: ops that backward runs are not checked (grad
    // mode is off there); their results are, as the gradients they make.
    let context = if anomaly::is_anomaly_enabled() && is_grad_enabled() {
        Some(Box::new(anomaly::check_forward(name, inputs, &out)))
    } else {
        None
    };
    if !needs_graph(inputs) {
        return Tensor::from_parts(out, version, None);
    }
    let inputs = inputs
        .iter()
        .map(|t| t.requires_grad().then(|| (*t).clone()))
        .collect();
    let node = Node {
        name,
        state: Mutex::new(Some(NodeState {
            inputs,
            backward: Box::new(make_backward()),
            at_end: None,
        })),
        context,
    };
    Tensor::from_parts(out, version, Some(Arc::new(node)))
}

/// `t` passed through an identity op `name` whose node runs `at_end` after every backward
/// pass that reaches it (NOTE [ Callbacks at the end of backward ]). Without a graph to
/// record (grad mode off, or `t` does not require grad) no backward can reach it, and `t`
/// comes back unchanged.
#[cfg(test)]
pub(crate) fn with_end_callback(name: &'static str, t: &Tensor, at_end: EndCallback) -> Tensor {
    with_backward_callbacks(name, t, None, at_end)
}

/// [`with_end_callback`] whose node also runs `on_reached` when a gradient reaches it in a
/// backward pass, before the pass goes on to the ops that made `t`.
#[cfg(any(test, feature = "distributed"))]
pub(crate) fn with_backward_callbacks(
    name: &'static str,
    t: &Tensor,
    on_reached: Option<EndCallback>,
    at_end: EndCallback,
) -> Tensor {
    let out = record(name, t.storage(), &[t], || {
        move |g: &Tensor, _: &[bool]| {
            if let Some(f) = &on_reached {
                f();
            }
            vec![Some(g.clone())]
        }
    });
    let Some(node) = out.grad_fn() else {
        return out;
    };
    let mut state = node.state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = state.as_mut() {
        s.at_end = Some(at_end);
    }
    drop(state);
    out
}

/// A hasher for node addresses: they are unique and well spread already.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("AddrHasher only hashes addresses")
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<AddrHasher>>;

fn addr(node: &Arc<Node>) -> usize {
    Arc::as_ptr(node) as usize
}

#[cold]
#[inline(never)]
#[track_caller]
fn freed_graph(op: &str) -> ! {
    panic!(
        "backward: trying to backward through the graph a second time (the saved values of \
         `{op}` were freed by the first backward). Pass retain_graph = true the first time \
         (autograd::backward(&y, None, true)) if you need to backward through the graph again"
    )
}

/// Runs backward from `root` with upstream gradient `grad`.
#[track_caller]
pub(crate) fn run_backward(root: &Tensor, grad: Tensor, retain_graph: bool) {
    let Some(root_node) = root.grad_fn() else {
        if root.requires_grad() {
            root.accumulate_grad(grad);
            let hooks = hooks::snapshot().and_then(|mut h| h.remove(&root.identity()));
            hooks.into_iter().flatten().for_each(|hook| hook(root));
            return;
        }
        panic!(
            "backward: the tensor does not require grad and has no grad_fn; call \
             requires_grad_(true) on the leaves you want gradients for"
        );
    };
    // Restores grad mode however backward ends (a misuse panics in the middle).
    struct RestoreGradMode(bool);
    impl Drop for RestoreGradMode {
        fn drop(&mut self) {
            set_grad_enabled(self.0);
        }
    }
    let _restore = RestoreGradMode(set_grad_enabled(false));
    let consumers = count_consumers(&root_node);
    let mut leaves = hooks::snapshot()
        .map(|hooks| hooked_leaves(&consumers, hooks))
        .unwrap_or_default();
    let mut pending: AddrMap<(Arc<Node>, usize)> = consumers;
    let mut grads: AddrMap<Tensor> = AddrMap::default();
    grads.insert(addr(&root_node), grad);
    let mut ready = vec![root_node];
    let mut at_end = Vec::new();
    while let Some(node) = ready.pop() {
        // A node that no gradient reached still releases its inputs to run.
        let grad = grads.remove(&addr(&node));
        let (inputs, input_grads, callback) = run_node(&node, grad.as_ref(), retain_graph);
        at_end.extend(callback);
        for (input, g) in inputs.into_iter().zip(input_grads) {
            let Some(input) = input else {
                continue;
            };
            let Some(next) = input.grad_fn() else {
                let reached = g.is_some();
                if let Some(g) = g {
                    input.accumulate_grad(g);
                }
                if !leaves.is_empty() {
                    leaf_delivered(&mut leaves, &input, reached);
                }
                continue;
            };
            let key = addr(&next);
            if let Some(g) = g {
                let sum = match grads.remove(&key) {
                    Some(prev) => &prev + &g,
                    None => g,
                };
                grads.insert(key, sum);
            }
            if let Some(entry) = pending.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    ready.push(next);
                }
            }
        }
    }
    for callback in at_end {
        callback();
    }
}

/// The inputs of a node that has run, their gradients, and its end-of-backward callback.
type RunResult = (
    Vec<Option<Tensor>>,
    Vec<Option<Tensor>>,
    Option<EndCallback>,
);

/// Calls one node's backward (when a gradient reached it); without `retain_graph` the node's
/// closure and edges are freed.
#[track_caller]
fn run_node(node: &Node, grad: Option<&Tensor>, retain_graph: bool) -> RunResult {
    let mut state = node.state.lock().unwrap_or_else(PoisonError::into_inner);
    if retain_graph {
        let Some(s) = state.as_ref() else {
            freed_graph(node.name)
        };
        (
            s.inputs.clone(),
            node_grads(node, s, grad),
            s.at_end.clone(),
        )
    } else {
        let Some(s) = state.take() else {
            freed_graph(node.name)
        };
        drop(state);
        let grads = node_grads(node, &s, grad);
        (s.inputs, grads, s.at_end)
    }
}

/// The gradients of a node's inputs (none when no gradient reached the node), checked by
/// anomaly detection when it is on.
#[track_caller]
fn node_grads(node: &Node, s: &NodeState, grad: Option<&Tensor>) -> Vec<Option<Tensor>> {
    let Some(grad) = grad else {
        return vec![None; s.inputs.len()];
    };
    let needs: Vec<bool> = s.inputs.iter().map(Option::is_some).collect();
    let grads = call_backward(s, grad, &needs);
    debug_assert_eq!(grads.len(), s.inputs.len(), "backward of {}", node.name);
    if anomaly::is_anomaly_enabled() {
        anomaly::check_backward(node.name, node.context.as_deref(), &grads);
    }
    grads
}

/// A hooked leaf's edges still to deliver in this pass, whether a gradient came along one,
/// and its hooks.
struct LeafHooks {
    remaining: usize,
    reached: bool,
    hooks: Vec<Hook>,
}

/// The hooked leaves that the nodes in `consumers` feed, with their number of edges.
fn hooked_leaves(
    consumers: &AddrMap<(Arc<Node>, usize)>,
    mut hooks: std::collections::BTreeMap<usize, Vec<Hook>>,
) -> AddrMap<LeafHooks> {
    let mut leaves: AddrMap<LeafHooks> = AddrMap::default();
    for (node, _) in consumers.values() {
        let state = node.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = state.as_ref() else { continue };
        for leaf in s.inputs.iter().flatten().filter(|t| t.grad_fn().is_none()) {
            let id = leaf.identity();
            if let Some(entry) = leaves.get_mut(&id) {
                entry.remaining += 1;
            } else if let Some(hooks) = hooks.remove(&id) {
                let entry = LeafHooks {
                    remaining: 1,
                    reached: false,
                    hooks,
                };
                leaves.insert(id, entry);
            }
        }
    }
    leaves
}

/// Counts one delivered edge into `leaf`, and runs its hooks after the last (NOTE
/// [ Post-accumulate-grad hooks ]).
fn leaf_delivered(leaves: &mut AddrMap<LeafHooks>, leaf: &Tensor, reached: bool) {
    let Some(entry) = leaves.get_mut(&leaf.identity()) else {
        return;
    };
    entry.remaining -= 1;
    entry.reached |= reached;
    if entry.remaining == 0 && entry.reached {
        entry.hooks.iter().for_each(|hook| hook(leaf));
    }
}

/// How many recorded consumers each node reachable from `root` has.
#[track_caller]
fn count_consumers(root: &Arc<Node>) -> AddrMap<(Arc<Node>, usize)> {
    let mut counts: AddrMap<(Arc<Node>, usize)> = AddrMap::default();
    let mut stack = vec![root.clone()];
    counts.insert(addr(root), (root.clone(), 0));
    while let Some(node) = stack.pop() {
        let state = node.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = state.as_ref() else {
            freed_graph(node.name)
        };
        for next in s.inputs.iter().flatten().filter_map(Tensor::grad_fn) {
            let entry = counts.entry(addr(&next)).or_insert_with(|| {
                stack.push(next.clone());
                (next.clone(), 0)
            });
            entry.1 += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn end_callbacks_run_once_after_every_gradient_is_accumulated() {
        let w = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).requires_grad_(true);
        let calls = Arc::new(AtomicUsize::new(0));
        let (seen, c) = (Arc::new(Mutex::new(None)), calls.clone());
        let (w2, s) = (w.clone(), seen.clone());
        let y = with_end_callback(
            "probe",
            &(&w * 3.0),
            Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                *s.lock().unwrap() = w2.grad().map(|g| g.to_vec::<f64>());
            }),
        );
        // w reaches the loss along two paths; the callback sees the sum of both.
        let loss = (&y + &w).sum();
        loss.backward();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.lock().unwrap(), Some(vec![4.0, 4.0]));
        assert_eq!(y.grad_fn().unwrap().name(), "probe");
    }

    #[test]
    fn without_a_graph_there_is_no_callback_node() {
        let x = Tensor::from_vec(vec![1.0f32], &[1]);
        let y = with_end_callback("probe", &x, Arc::new(|| unreachable!()));
        assert!(y.grad_fn().is_none());
        assert_eq!(y.to_vec::<f32>(), [1.0]);
    }

    #[test]
    fn post_accumulate_grad_hooks_run_once_when_the_leaf_gradient_is_final() {
        let w1 = Tensor::from_vec(vec![2.0f64], &[1]).requires_grad_(true);
        let w2 = Tensor::from_vec(vec![3.0f64], &[1]).requires_grad_(true);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, other) = (log.clone(), w1.clone());
        let h2 = w2.register_post_accumulate_grad_hook(move |p: &Tensor| {
            let own = p.grad().unwrap().to_vec::<f64>()[0];
            l.lock().unwrap().push(("w2", own, other.grad().is_none()));
        });
        let l = log.clone();
        let h1 = w1.register_post_accumulate_grad_hook(move |p: &Tensor| {
            l.lock()
                .unwrap()
                .push(("w1", p.grad().unwrap().to_vec::<f64>()[0], false));
        });
        // w2 has three edges into the graph, w1 one further from the loss: w2's hook runs
        // once with the sum of all three, while w1 has no gradient yet.
        let loss = (&(&(&w1 * 2.0) * &w2) * &w2).sum() + w2.sum();
        loss.backward();
        assert_eq!(
            *log.lock().unwrap(),
            [("w2", 25.0, true), ("w1", 18.0, false)]
        );
        h2.remove();
        w1.zero_grad();
        (&w1 * 2.0).sum().backward();
        w1.sum().backward(); // backward from the leaf itself runs its hooks too
        assert_eq!(
            log.lock().unwrap()[2..],
            [("w1", 2.0, false), ("w1", 3.0, false)]
        );
        h1.remove();
        (&w1 * &w2).sum().backward();
        assert_eq!(log.lock().unwrap().len(), 4, "removed hooks do not run");
    }

    #[test]
    fn post_accumulate_grad_hooks_skip_leaves_no_gradient_reached() {
        let w = Tensor::from_vec(vec![1.0f32], &[1]).requires_grad_(true);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let h = w.register_post_accumulate_grad_hook(move |_: &Tensor| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let unrelated = Tensor::from_vec(vec![1.0f32], &[1]).requires_grad_(true);
        (&unrelated * 2.0).sum().backward();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        h.remove();
    }

    #[test]
    #[should_panic(expected = "cannot be registered on non-leaf tensors")]
    fn post_accumulate_grad_hooks_refuse_non_leaves() {
        let w = Tensor::from_vec(vec![1.0f32], &[1]).requires_grad_(true);
        let _ = (&w * 2.0).register_post_accumulate_grad_hook(|_: &Tensor| {});
    }
}
