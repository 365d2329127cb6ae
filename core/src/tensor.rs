//! [`Tensor`]: an n-dimensional array with reverse-mode autograd.
//!
//! NOTE [ Tensor layout ]
//! A `Tensor` is an `Arc` handle: cloning it is cheap and clones share data, gradient and
//! graph, like two Python names for one `torch.Tensor`. Behind the handle sit the data (a
//! `Storage` in an `RwLock`, so optimizers can update parameters in place through any
//! handle), a version counter (shared with views, bumped by every in-place op, see `Saved`
//! in [`autograd`](crate::autograd)), the `requires_grad` flag, the accumulated gradient, and
//! for op results the `grad_fn` node that produced it (NOTE [ Graph layout ] in
//! [`Node`](crate::autograd::Node#note--graph-layout-)).
//!
//! NOTE [ Storage access ]
//! Every read and write of a tensor's data goes through `Data`, the one place that takes the
//! lock, bumps the version on a write and decides what a poisoned lock means. A lock is
//! poisoned when a thread panicked while holding it: the in-place ops check shapes and dtypes
//! before they lock, so that takes user code panicking inside an optimizer's or a collective's
//! update. The data is then as the panicking write left it, as in PyTorch after an exception
//! in a kernel, so a poisoned lock is used as is (`unpoison`) instead of turning every later
//! access into a second panic. A write bumps the version before it runs, so that even a write
//! that panics half-way marks the saved values it may have touched as stale.

use crate::autograd::graph::{self, Node};
use crate::autograd::is_grad_enabled;
use crate::dtype::{DType, Element, Storage};
use crate::memory;
use crate::random;
use ndarray::{ArrayD, Dimension, IxDyn};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LockResult, Mutex, MutexGuard, PoisonError, RwLock};

/// An n-dimensional array of f32, f64 or i64 values that records the ops applied to it, so
/// that [`backward`](Tensor::backward) can compute gradients.
///
/// See NOTE [ Tensor layout ] for what a handle holds and NOTE [ One Tensor type, dtype at
/// run time ] in `dtype.rs` for why the dtype is not a type parameter.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::tensor::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).requires_grad_(true);
/// let y = (&x * &x).sum();
/// y.backward();
/// assert_eq!(x.grad().unwrap().to_vec::<f32>(), [2.0, 4.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

struct Inner {
    data: Data,
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    grad_fn: Option<Arc<Node>>,
}

/// A tensor's data and its version counter: the only code that locks the data (NOTE [ Storage
/// access ]).
struct Data {
    /// Taken out only by `drop`, to give its buffer to the cache (NOTE [ Buffer cache ] in
    /// [`memory`](crate::memory)).
    storage: RwLock<ManuallyDrop<Storage>>,
    /// Shared with the views of this data; bumped by every write.
    version: Arc<AtomicU64>,
}

impl Data {
    fn new(storage: Storage, version: Arc<AtomicU64>) -> Data {
        Data {
            storage: RwLock::new(ManuallyDrop::new(storage)),
            version,
        }
    }

    /// `f` of the storage, under the read lock.
    #[inline]
    fn read<R>(&self, f: impl FnOnce(&Storage) -> R) -> R {
        let storage = unpoison(self.storage.read());
        f(&storage)
    }

    /// `f` of the storage under the write lock, with the version bumped (before `f` runs, see
    /// NOTE [ Storage access ]).
    #[inline]
    fn write<R>(&self, f: impl FnOnce(&mut Storage) -> R) -> R {
        let mut storage = unpoison(self.storage.write());
        self.version.fetch_add(1, Ordering::Relaxed);
        f(&mut storage)
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let slot = self
            .storage
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `slot` is never used again: this is `Data`'s drop, and `ManuallyDrop`
        // keeps the field's own drop from running a second time.
        let storage = unsafe { ManuallyDrop::take(slot) };
        memory::recycle_storage(storage);
    }
}

/// The guard of a lock, poisoned or not (NOTE [ Storage access ]).
#[inline]
fn unpoison<G>(result: LockResult<G>) -> G {
    result.unwrap_or_else(PoisonError::into_inner)
}

/// The tensor's gradient slot, locked.
fn lock_grad(slot: &Mutex<Option<Tensor>>) -> MutexGuard<'_, Option<Tensor>> {
    unpoison(slot.lock())
}

impl Tensor {
    // ---- construction -------------------------------------------------------------------

    /// A leaf tensor over `storage`.
    pub(crate) fn from_storage(storage: Storage) -> Tensor {
        Tensor::from_parts(storage, None, None)
    }

    /// A tensor over `storage` made by the op `grad_fn` (if recorded), sharing `version`
    /// when it is a view of another tensor.
    pub(crate) fn from_parts(
        storage: Storage,
        version: Option<Arc<AtomicU64>>,
        grad_fn: Option<Arc<Node>>,
    ) -> Tensor {
        let version = version.unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
        Tensor::with_parts(storage, version, grad_fn)
    }

    fn with_parts(storage: Storage, version: Arc<AtomicU64>, grad_fn: Option<Arc<Node>>) -> Tensor {
        let requires_grad = grad_fn.is_some();
        Tensor {
            inner: Arc::new(Inner {
                data: Data::new(storage, version),
                requires_grad: AtomicBool::new(requires_grad),
                grad: Mutex::new(None),
                grad_fn,
            }),
        }
    }

    /// A tensor of `shape` holding `data` in row-major (C) order.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `shape`.
    #[track_caller]
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Tensor {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            panic!(
                "from_vec: {} values do not fill shape {shape:?} ({numel} elements)",
                data.len()
            );
        }
        let array = ArrayD::from_shape_vec(IxDyn(shape), data).unwrap_or_else(|e| {
            panic!("from_vec: shape {shape:?}: {e}");
        });
        Tensor::from_storage(T::into_storage(array.into_shared()))
    }

    /// A tensor with a copy of `data`.
    #[track_caller]
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Tensor {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional f32 tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(vec![value], &[])
    }

    /// A tensor over an ndarray array of any dimension (no copy for owned arrays).
    pub fn from_array<T: Element, D: Dimension>(array: ndarray::Array<T, D>) -> Tensor {
        Tensor::from_storage(T::into_storage(array.into_dyn().into_shared()))
    }

    /// The values as an ndarray array of `T` (converted when the dtype differs).
    pub fn to_array<T: Element>(&self) -> ArrayD<T> {
        T::from_storage(&self.storage()).into_owned()
    }

    /// An f32 tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: f64) -> Tensor {
        Tensor::full_dtype(shape, value, DType::F32)
    }

    /// A tensor of `shape` and `dtype` filled with `value`.
    pub fn full_dtype(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let numel = shape.iter().product();
        match dtype {
            DType::F32 => Tensor::from_vec(memory::filled(numel, value as f32), shape),
            DType::F64 => Tensor::from_vec(memory::filled(numel, value), shape),
            DType::I64 => Tensor::from_vec(memory::filled(numel, value as i64), shape),
        }
    }

    /// An f32 tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// An f32 tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Zeros with this tensor's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::full_dtype(&self.shape(), 0.0, self.dtype())
    }

    /// Ones with this tensor's shape and dtype.
    pub fn ones_like(&self) -> Tensor {
        Tensor::full_dtype(&self.shape(), 1.0, self.dtype())
    }

    /// `value` with this tensor's shape and dtype.
    pub fn full_like(&self, value: f64) -> Tensor {
        Tensor::full_dtype(&self.shape(), value, self.dtype())
    }

    /// `0, 1, …, end - 1` as an i64 tensor (PyTorch's `torch.arange(end)`).
    pub fn arange(end: usize) -> Tensor {
        Tensor::from_vec((0..end as i64).collect(), &[end])
    }

    /// `start, start + step, …` up to (not including) `end`, as f32.
    ///
    /// # Panics
    /// If `step` is zero or points away from `end`.
    #[track_caller]
    pub fn arange_step(start: f64, end: f64, step: f64) -> Tensor {
        if step == 0.0 || (end - start) * step < 0.0 || !(end - start).is_finite() {
            panic!("arange_step: cannot go from {start} to {end} in steps of {step}");
        }
        let n = ((end - start) / step).ceil() as usize;
        let data = (0..n).map(|i| (start + i as f64 * step) as f32).collect();
        Tensor::from_vec(data, &[n])
    }

    /// The `n × n` f32 identity matrix.
    pub fn eye(n: usize) -> Tensor {
        Tensor::from_array(ndarray::Array2::<f32>::eye(n))
    }

    /// f32 values drawn uniformly from `[0, 1)` with the global generator
    /// ([`manual_seed`](crate::random::manual_seed)).
    pub fn rand(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(random::uniform_f32(n, 0.0, 1.0), shape)
    }

    /// f32 values drawn from the standard normal distribution with the global generator.
    pub fn randn(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(random::normal_f32(n, 0.0, 1.0), shape)
    }

    /// i64 values drawn uniformly from `low..high` with the global generator.
    ///
    /// # Panics
    /// If `low >= high`.
    #[track_caller]
    pub fn randint(low: i64, high: i64, shape: &[usize]) -> Tensor {
        if low >= high {
            panic!("randint: empty range {low}..{high}");
        }
        let n = shape.iter().product();
        Tensor::from_vec(random::randint(low, high, n), shape)
    }

    // ---- inspection ---------------------------------------------------------------------

    /// What tells this tensor from every other one alive: clones share it, `detach()` and
    /// views do not (PyTorch's `id(t)`, which optimizers compare).
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// A cheap copy of the storage handle (the buffer is shared, not copied).
    pub(crate) fn storage(&self) -> Storage {
        self.inner.data.read(Storage::clone)
    }

    pub(crate) fn version_counter(&self) -> Arc<AtomicU64> {
        self.inner.data.version.clone()
    }

    /// How many times this tensor (or a view of its data) was modified in place.
    pub fn version(&self) -> u64 {
        self.inner.data.version()
    }

    /// The size of each dimension.
    pub fn shape(&self) -> Vec<usize> {
        self.inner.data.read(|s| s.shape().to_vec())
    }

    /// The size of dimension `dim` (negative counts from the end).
    #[track_caller]
    pub fn size(&self, dim: isize) -> usize {
        let shape = self.shape();
        shape[crate::shape::normalize_dim("size", dim, shape.len())]
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.inner.data.read(Storage::len)
    }

    /// The number of dimensions.
    pub fn dim(&self) -> usize {
        self.inner.data.read(|s| s.shape().len())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.inner.data.read(Storage::dtype)
    }

    /// The value of a one-element tensor, as f64.
    ///
    /// # Panics
    /// If the tensor has more or fewer than one element.
    #[track_caller]
    pub fn item(&self) -> f64 {
        let s = self.storage();
        if s.len() != 1 {
            panic!(
                "item: only one-element tensors can be converted to a number, got shape {:?}",
                s.shape()
            );
        }
        match &s {
            Storage::F32(a) => a.iter().next().map_or(0.0, |v| *v as f64),
            Storage::F64(a) => a.iter().next().copied().unwrap_or(0.0),
            Storage::I64(a) => a.iter().next().map_or(0.0, |v| *v as f64),
        }
    }

    /// The values in row-major order, converted to `T`.
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        let a = T::from_storage(&self.storage());
        match a.as_slice() {
            Some(s) => s.to_vec(),
            None => a.iter().copied().collect(),
        }
    }

    /// The same values as `dtype` (a differentiable cast between f32 and f64).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        let from = self.dtype();
        if from == dtype {
            return self.clone();
        }
        let out = self.storage().to_dtype(dtype);
        if !dtype.is_float() {
            return Tensor::from_storage(out);
        }
        graph::record("to_dtype", out, &[self], || {
            move |g: &Tensor, _: &[bool]| vec![Some(g.to_dtype(from))]
        })
    }

    /// Shorthand for `to_dtype(DType::F32)`.
    pub fn float(&self) -> Tensor {
        self.to_dtype(DType::F32)
    }

    /// Shorthand for `to_dtype(DType::F64)`.
    pub fn double(&self) -> Tensor {
        self.to_dtype(DType::F64)
    }

    /// Shorthand for `to_dtype(DType::I64)` (truncates toward zero).
    pub fn long(&self) -> Tensor {
        self.to_dtype(DType::I64)
    }

    /// A copy with its own buffer, recorded like an identity op.
    pub fn contiguous_copy(&self) -> Tensor {
        let out = crate::dispatch_float!(self.storage(), a => a.to_owned().into_shared(),
            int => return Tensor::from_storage(self.storage().to_dtype(DType::I64).to_owned_storage()));
        graph::record("clone", out, &[self], || {
            |g: &Tensor, _: &[bool]| vec![Some(g.clone())]
        })
    }

    // ---- autograd -----------------------------------------------------------------------

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf tensor as wanting a gradient (or not), returning it for chaining.
    ///
    /// # Panics
    /// On a tensor produced by a recorded op (only leaves can be changed, as in PyTorch;
    /// use [`detach`](Tensor::detach) first), and when asking an i64 tensor for gradients.
    #[track_caller]
    pub fn requires_grad_(self, requires_grad: bool) -> Tensor {
        self.set_requires_grad(requires_grad);
        self
    }

    /// [`requires_grad_`](Tensor::requires_grad_) through a shared reference.
    #[track_caller]
    pub fn set_requires_grad(&self, requires_grad: bool) {
        if self.inner.grad_fn.is_some() {
            panic!(
                "requires_grad_: you can only change requires_grad of leaf tensors; this one \
                 was produced by `{}`. Use detach() to get a leaf",
                self.inner.grad_fn.as_ref().map_or("", |n| n.name())
            );
        }
        if requires_grad && !self.dtype().is_float() {
            panic!(
                "requires_grad_: only floating-point tensors can require gradients, got {}",
                self.dtype()
            );
        }
        self.inner
            .requires_grad
            .store(requires_grad, Ordering::Relaxed);
    }

    /// Whether this tensor is a leaf of the graph (not produced by a recorded op).
    pub fn is_leaf(&self) -> bool {
        self.inner.grad_fn.is_none()
    }

    /// The node that produced this tensor, if it came from a recorded op.
    pub fn grad_fn(&self) -> Option<Arc<Node>> {
        self.inner.grad_fn.clone()
    }

    /// The gradient accumulated by backward calls since the last zeroing, if any.
    pub fn grad(&self) -> Option<Tensor> {
        lock_grad(&self.inner.grad).clone()
    }

    /// Replaces the gradient (`None` zeroes it the way `zero_grad(set_to_none=True)` does).
    pub fn set_grad(&self, grad: Option<Tensor>) {
        *lock_grad(&self.inner.grad) = grad;
    }

    /// Drops the accumulated gradient.
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// Adds `g` to the accumulated gradient; the first gradient gets a buffer of its own so
    /// that later in-place accumulation never writes into another tensor.
    pub(crate) fn accumulate_grad(&self, g: Tensor) {
        let mut slot = lock_grad(&self.inner.grad);
        match slot.as_ref() {
            Some(existing) => existing.add_assign_grad(&g),
            None => *slot = Some(Tensor::from_storage(g.storage())),
        }
    }

    /// A new leaf sharing this tensor's data, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.storage(), Some(self.version_counter()), None)
    }

    /// Computes the gradient of this scalar with respect to every leaf that requires grad,
    /// adding it to their [`grad`](Tensor::grad). The graph is freed afterwards; to keep it
    /// for a second backward, call [`autograd::backward`](crate::autograd::backward) with
    /// `retain_graph = true`.
    ///
    /// Shorthand for `autograd::backward(self, None, false)`, PyTorch's `loss.backward()`.
    ///
    /// # Panics
    /// If the tensor has more than one element (use [`backward_with`](Tensor::backward_with)),
    /// does not require grad, or its graph was already freed by an earlier backward.
    #[track_caller]
    pub fn backward(&self) {
        crate::autograd::backward(self, None, false);
    }

    /// Backward from a non-scalar tensor with upstream gradient `grad` (same shape and
    /// dtype): PyTorch's `y.backward(grad)`.
    ///
    /// Shorthand for `autograd::backward(self, Some(grad), false)`.
    ///
    /// # Panics
    /// If `grad`'s shape or dtype differs from this tensor's, and as
    /// [`backward`](Tensor::backward) does.
    #[track_caller]
    pub fn backward_with(&self, grad: &Tensor) {
        crate::autograd::backward(self, Some(grad), false);
    }

    // ---- writes (the in-place ops themselves are in `ops/inplace.rs`) ---------------------

    /// Applies `f` to the data in place after checking that no graph is being recorded
    /// through this tensor, and bumps the version: what every public in-place op runs.
    #[track_caller]
    pub(crate) fn modify<R>(&self, op: &str, f: impl FnOnce(&mut Storage) -> R) -> R {
        if is_grad_enabled() && self.requires_grad() {
            in_place_on_graph(op);
        }
        self.inner.data.write(f)
    }

    /// Runs an optimizer's update on the data in place and bumps the version. Unlike the
    /// public in-place ops this skips the grad-mode check: an optimizer step is an update
    /// outside the graph, as if wrapped in `no_grad` (PyTorch's `@torch.no_grad()` on
    /// `step`), and doing it on the storage directly saves the temporaries of a chain of
    /// tensor ops (see NOTE [ Optimizer updates ] in `optim/optimizer.rs`). Gradient
    /// accumulation uses it too: gradients never require grad themselves.
    pub(crate) fn update_in_place<R>(&self, f: impl FnOnce(&mut Storage) -> R) -> R {
        self.inner.data.write(f)
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn in_place_on_graph(op: &str) -> ! {
    panic!(
        "{op}: a tensor that requires grad cannot be modified in place while the graph is \
         recorded; wrap the update in no_grad(|| ...) as optimizers do"
    )
}

/// So that APIs taking `impl AsRef<Tensor>` accept tensors as well as parameters.
impl AsRef<Tensor> for Tensor {
    fn as_ref(&self) -> &Tensor {
        self
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
