//! The cache of freed tensor buffers, and its controls (PyTorch's `torch.cuda.empty_cache`
//! and `memory_reserved`, for torchlet's CPU memory).
//!
//! NOTE [ Buffer cache ]
//! A training step allocates the same buffers every step: activations in the forward,
//! gradients in the backward, freed again before the next step. glibc's `malloc` hands the
//! big ones (from 128 KiB up to 32 MiB, its adaptive mmap threshold) back to the kernel when
//! they are freed, so the next step gets fresh pages, and the kernel zeroes each one on first
//! touch: W5 (the tiny GPT) faulted in about 8,500 pages, 33 MB, a step, and spent a quarter
//! of its CPU time in the kernel doing it.
//!
//! So the data of a tensor is kept when the last tensor using it is dropped (`Data`'s `Drop`
//! in `tensor.rs`), on a shelf for its size class, and the kernels that write a new output
//! (`parallel::collect_vec`, the matrix products, the fused ops) take their buffer from that
//! shelf first. After the first step, a step finds every buffer it needs there.
//!
//! - Only buffers of at least [`MIN_BYTES`] are cached; smaller ones are what `malloc`'s own
//!   free lists serve well, and W3's 16-wide tensors must not pay a lock per op.
//! - Size classes are four per power of two (`2^k · {1, 1.25, 1.5, 1.75}` elements): a
//!   request is rounded up to its class (so at most a quarter of a buffer is slack), and a
//!   freed buffer is shelved under the largest class it can serve. The same shapes recur
//!   exactly every step, so the classes only matter for the odd last batch of an epoch.
//! - The cache holds at most [`cache_limit`] bytes (1 GiB unless [`set_cache_limit`] says
//!   otherwise); a buffer freed beyond it goes back to `malloc`. [`empty_cache`] frees them
//!   all.
//! - One lock guards the shelves; it is taken once per big allocation and once per big free,
//!   about a hundred times a training step, never inside a kernel's loop.
//! - A buffer from the cache holds old values, like `malloc`'s: the ops that take one write
//!   every element before it is read (`collect_vec`'s contract), and the ones that need
//!   zeros fill it.

use crate::dtype::Storage;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Buffers smaller than this many bytes are not cached (NOTE [ Buffer cache ]).
pub const MIN_BYTES: usize = 64 * 1024;

const DEFAULT_LIMIT: usize = 1 << 30;

/// The cap on cached bytes; read without the lock on every free.
static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// The shelves, one map from size class (in elements) to free buffers per element type.
struct Shelves {
    f32: HashMap<usize, Vec<Vec<f32>>>,
    f64: HashMap<usize, Vec<Vec<f64>>>,
    i64: HashMap<usize, Vec<Vec<i64>>>,
    /// Bytes held by all shelves together.
    bytes: usize,
}

static SHELVES: Mutex<Option<Shelves>> = Mutex::new(None);

/// The shelves, locked (a panic never happens while they are held, but a poisoned lock would
/// still hold consistent shelves: every update is a push or a pop with its byte count).
fn lock() -> MutexGuard<'static, Option<Shelves>> {
    SHELVES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `T`'s shelf: f32, f64 and i64 buffers are cached, other types' are not.
fn shelf<T: 'static>(shelves: &mut Shelves) -> Option<&mut HashMap<usize, Vec<Vec<T>>>> {
    let any: &mut dyn Any = match TypeId::of::<T>() {
        t if t == TypeId::of::<f32>() => &mut shelves.f32,
        t if t == TypeId::of::<f64>() => &mut shelves.f64,
        t if t == TypeId::of::<i64>() => &mut shelves.i64,
        _ => return None,
    };
    any.downcast_mut()
}

/// The number of elements of `T` from which buffers are cached.
fn min_len<T>() -> usize {
    MIN_BYTES / size_of::<T>()
}

/// The granularity of the size classes around `n`: a quarter of the power of two at or
/// below it.
fn class_step(n: usize) -> usize {
    let k = usize::BITS - 1 - n.leading_zeros();
    1usize << k.saturating_sub(2)
}

/// The smallest size class holding `n` elements (`n > 0`).
fn class_up(n: usize) -> usize {
    let step = class_step(n);
    n.div_ceil(step) * step
}

/// The largest size class at most `cap` elements (`cap > 0`).
fn class_down(cap: usize) -> usize {
    let step = class_step(cap);
    cap / step * step
}

/// An empty vector with room for at least `len` elements, from the cache when it has one of
/// that size class.
pub(crate) fn vec<T: 'static>(len: usize) -> Vec<T> {
    if len < min_len::<T>() {
        return Vec::with_capacity(len);
    }
    let class = class_up(len);
    let found = {
        let mut guard = lock();
        guard.as_mut().and_then(|shelves| {
            let v = shelf::<T>(shelves)?.get_mut(&class)?.pop()?;
            shelves.bytes -= v.capacity() * size_of::<T>();
            Some(v)
        })
    };
    found.unwrap_or_else(|| Vec::with_capacity(class))
}

/// A vector of `len` copies of `value`, its buffer from the cache when it has one.
pub(crate) fn filled<T: Clone + 'static>(len: usize, value: T) -> Vec<T> {
    let mut v = vec(len);
    v.resize(len, value);
    v
}

/// Keeps `v`'s buffer for a later [`vec`] when it is big enough and the cache has room;
/// frees it otherwise.
pub(crate) fn recycle<T: 'static>(mut v: Vec<T>) {
    let cap = v.capacity();
    let bytes = cap * size_of::<T>();
    if cap < min_len::<T>() || bytes > LIMIT.load(Ordering::Relaxed) {
        return;
    }
    v.clear();
    let class = class_down(cap);
    let mut guard = lock();
    let shelves = guard.get_or_insert_with(|| Shelves {
        f32: HashMap::new(),
        f64: HashMap::new(),
        i64: HashMap::new(),
        bytes: 0,
    });
    if shelves.bytes + bytes > LIMIT.load(Ordering::Relaxed) {
        drop(guard);
        return;
    }
    if let Some(shelf) = shelf::<T>(shelves) {
        shelf.entry(class).or_default().push(v);
        shelves.bytes += bytes;
    }
}

/// Keeps the buffer of `storage` when no other array shares it (see [`recycle`]).
pub(crate) fn recycle_storage(storage: Storage) {
    fn take<T: 'static>(a: ndarray::ArcArray<T, ndarray::IxDyn>) {
        if a.len() < min_len::<T>() {
            return;
        }
        if let Ok(owned) = a.try_into_owned_nocopy() {
            recycle(owned.into_raw_vec_and_offset().0);
        }
    }
    match storage {
        Storage::F32(a) => take(a),
        Storage::F64(a) => take(a),
        Storage::I64(a) => take(a),
    }
}

/// Frees every cached buffer (PyTorch's `torch.cuda.empty_cache`). Tensors in use are not
/// affected; the next steps allocate afresh and fill the cache again.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{memory, Tensor};
/// drop(Tensor::zeros(&[1024, 1024]));
/// assert!(memory::cached_bytes() >= 4 << 20);
/// memory::empty_cache();
/// assert_eq!(memory::cached_bytes(), 0);
/// ```
pub fn empty_cache() {
    let taken = lock().take();
    drop(taken);
}

/// The bytes the cache holds now: freed tensor data kept for reuse (NOTE [ Buffer cache ]).
pub fn cached_bytes() -> usize {
    lock().as_ref().map_or(0, |shelves| shelves.bytes)
}

/// The most bytes the cache keeps (1 GiB by default).
pub fn cache_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Caps the cache at `bytes`; `0` turns it off. When the cache holds more than the new cap,
/// it is emptied.
pub fn set_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    if cached_bytes() > bytes {
        empty_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_a_quarter() {
        for n in 1..5000usize {
            let up = class_up(n);
            assert!(up >= n && up <= n + n / 4 + 1, "{n} → {up}");
            assert_eq!(class_down(up), up, "{n}: class {up} is its own class");
            let down = class_down(n);
            assert!(down <= n && class_up(down) == down, "{n} ↓ {down}");
        }
    }

    #[test]
    fn a_freed_buffer_is_reused_for_its_class() {
        let n = 3 * min_len::<f64>() + 7;
        let v: Vec<f64> = vec(n);
        assert!(v.capacity() >= n);
        let ptr = v.as_ptr();
        recycle(v);
        // Another test may take it first; a hit is what this thread sees most of the time.
        let w: Vec<f64> = vec(n - 3);
        assert!(w.is_empty() && w.capacity() >= n - 3);
        if w.as_ptr() == ptr {
            assert_eq!(w.capacity(), class_up(n));
        }
    }
}
