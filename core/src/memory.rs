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
//! - Only buffers of [`MIN_BYTES`] to [`MAX_BYTES`] are cached. Smaller ones are what
//!   `malloc`'s own free lists serve well, and W3's 16-wide tensors must not pay a lock per
//!   op. Bigger ones are rare in a training step (a 4 MiB buffer is a [2048, 512] f32
//!   activation, W5's widest) and cost a cache the most memory: W4's evaluation in batches
//!   of 500 digits frees 6 to 25 MB buffers, which cached raised its peak RSS from 100 to
//!   170 MB; with the cap it stays at 126 MB.
//! - Size classes are four per power of two (`2^k · {1, 1.25, 1.5, 1.75}` elements): a
//!   request is rounded up to its class (so at most a quarter of a buffer is slack), and a
//!   freed buffer is shelved under the largest class it can serve. The same shapes recur
//!   exactly every step, so the classes only matter for the odd last batch of an epoch.
//! - What a program stops using is handed back. Each time 128 MiB have come back to the
//!   cache, a sweep trims every shelf to the number of buffers taken from it in that window
//!   or the one before, so buffers that come back but are not asked for again (those of an
//!   op that allocates on its own, of an odd last batch, of a finished phase) do not pile
//!   up. A request the cache cannot serve also frees as many bytes from shelves that had no
//!   demand in the last two windows. And the cache holds at most [`cache_limit`] bytes (1 GiB
//!   unless [`set_cache_limit`] says otherwise); [`empty_cache`] frees them all.
//! - One lock guards the shelves; it is taken once per big allocation and once per big free,
//!   about a hundred times a training step, never inside a kernel's loop.
//! - A buffer from the cache holds old values, like `malloc`'s: the ops that take one write
//!   every element before it is read (`collect_vec`'s contract), and the ones that need
//!   zeros fill it.

use crate::dtype::Storage;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Buffers smaller than this many bytes are not cached (NOTE [ Buffer cache ]).
pub const MIN_BYTES: usize = 64 * 1024;

/// Buffers bigger than this many bytes are not cached either (NOTE [ Buffer cache ]).
pub const MAX_BYTES: usize = 4 << 20;

const DEFAULT_LIMIT: usize = 1 << 30;

/// The cap on cached bytes; read without the lock on every free.
static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// The free buffers of one size class, and how many were taken from it since the last sweep
/// and in the window before.
struct Shelf<T> {
    free: Vec<Vec<T>>,
    taken: usize,
    taken_before: usize,
}

impl<T> Shelf<T> {
    /// How many buffers of this class the last two windows needed.
    fn demand(&self) -> usize {
        self.taken.max(self.taken_before)
    }
}

impl<T> Default for Shelf<T> {
    fn default() -> Self {
        Shelf {
            free: Vec::new(),
            taken: 0,
            taken_before: 0,
        }
    }
}

type Shelves<T> = HashMap<usize, Shelf<T>>;

/// The cache: a map from size class (in elements) to its shelf, per element type.
#[derive(Default)]
struct Cache {
    f32: Shelves<f32>,
    f64: Shelves<f64>,
    i64: Shelves<i64>,
    /// Bytes held by all shelves together.
    bytes: usize,
    /// Bytes given back since the last sweep.
    returned: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// A sweep runs each time this many bytes have come back since the last one.
const SWEEP_BYTES: usize = 128 << 20;

/// The cache, locked (a panic never happens while it is held, but a poisoned lock would
/// still hold a consistent cache: every update is a push or a pop with its byte count).
fn lock() -> MutexGuard<'static, Option<Cache>> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `T`'s shelves: f32, f64 and i64 buffers are cached, other types' are not.
fn shelves<T: 'static>(cache: &mut Cache) -> Option<&mut Shelves<T>> {
    let any: &mut dyn Any = match TypeId::of::<T>() {
        t if t == TypeId::of::<f32>() => &mut cache.f32,
        t if t == TypeId::of::<f64>() => &mut cache.f64,
        t if t == TypeId::of::<i64>() => &mut cache.i64,
        _ => return None,
    };
    any.downcast_mut()
}

/// Whether buffers of `len` elements of `T` are cached.
fn cached_len<T>(len: usize) -> bool {
    (MIN_BYTES..=MAX_BYTES).contains(&(len * size_of::<T>()))
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

/// A cached buffer for at least `len` elements: one of `len`'s size class, or one shelved
/// below it that is big enough all the same (a buffer `malloc`ed for exactly `len`).
fn take<T: 'static>(cache: &mut Cache, len: usize) -> Option<Vec<T>> {
    let all = shelves::<T>(cache)?;
    let v = match all.get_mut(&class_up(len)) {
        Some(shelf) if !shelf.free.is_empty() => {
            shelf.taken += 1;
            shelf.free.pop()
        }
        _ => {
            let shelf = all.get_mut(&class_down(len))?;
            let at = shelf.free.iter().position(|v| v.capacity() >= len)?;
            shelf.taken += 1;
            Some(shelf.free.swap_remove(at))
        }
    }?;
    cache.bytes -= v.capacity() * size_of::<T>();
    Some(v)
}

/// An empty vector with room for at least `len` elements, from the cache when it has one of
/// that size class.
pub(crate) fn vec<T: 'static>(len: usize) -> Vec<T> {
    // The class, not `len`: a buffer rounded up past the cached sizes would never come back.
    if !cached_len::<T>(class_up(len.max(1))) {
        return Vec::with_capacity(len);
    }
    let mut guard = lock();
    let (v, freed) = get(guard.get_or_insert_with(Cache::default), len);
    drop(guard);
    drop(freed);
    v
}

/// A buffer for at least `len` elements from `cache`, or on a miss a new one of `len`'s size
/// class, with the buffers freed to make room for it (to be dropped after the lock).
fn get<T: 'static>(cache: &mut Cache, len: usize) -> (Vec<T>, Freed) {
    if let Some(v) = take(cache, len) {
        return (v, Freed::default());
    }
    // A miss: the program may have moved on to other sizes (evaluation after training, a new
    // model). Hand `malloc` back as much cached memory as this buffer needs from shelves
    // nobody asked for lately, so that old sizes and new do not add up.
    let class = class_up(len);
    let freed = make_room(cache, class * size_of::<T>());
    (Vec::with_capacity(class), freed)
}

/// Takes up to `need` bytes of buffers off the shelves that had no demand in the last two
/// windows; returns them, to be dropped after the lock.
fn make_room(cache: &mut Cache, need: usize) -> Freed {
    fn evict<T>(all: &mut Shelves<T>, need: usize, freed: &mut Vec<Vec<T>>) -> usize {
        let mut bytes = 0;
        for shelf in all.values_mut() {
            if shelf.demand() > 0 {
                continue;
            }
            while bytes < need {
                let Some(v) = shelf.free.pop() else { break };
                bytes += v.capacity() * size_of::<T>();
                freed.push(v);
            }
        }
        all.retain(|_, shelf| !shelf.free.is_empty() || shelf.demand() > 0);
        bytes
    }
    let mut freed = Freed::default();
    let mut bytes = 0;
    for which in 0..3 {
        if bytes >= need {
            break;
        }
        let rest = need - bytes;
        bytes += match which {
            0 => evict(&mut cache.f32, rest, &mut freed.0),
            1 => evict(&mut cache.f64, rest, &mut freed.1),
            _ => evict(&mut cache.i64, rest, &mut freed.2),
        };
    }
    cache.bytes -= bytes;
    freed
}

/// Buffers taken off the shelves, dropped once the lock is released.
type Freed = (Vec<Vec<f32>>, Vec<Vec<f64>>, Vec<Vec<i64>>);

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
    if !cached_len::<T>(cap) || bytes > LIMIT.load(Ordering::Relaxed) {
        return;
    }
    v.clear();
    let mut guard = lock();
    let cache = guard.get_or_insert_with(Cache::default);
    let freed = put(cache, v);
    drop(guard);
    drop(freed);
}

/// Shelves `v` (cleared, of a cached size) unless that would take the cache past its limit,
/// and sweeps when a window is full; returns what is to be freed, to be dropped after the
/// lock.
fn put<T: 'static>(cache: &mut Cache, v: Vec<T>) -> (Option<Vec<T>>, Option<Freed>) {
    let bytes = v.capacity() * size_of::<T>();
    if cache.bytes + bytes > LIMIT.load(Ordering::Relaxed) {
        return (Some(v), None);
    }
    let Some(all) = shelves::<T>(cache) else {
        return (Some(v), None);
    };
    all.entry(class_down(v.capacity()))
        .or_default()
        .free
        .push(v);
    cache.bytes += bytes;
    cache.returned += bytes;
    let freed = (cache.returned >= SWEEP_BYTES).then(|| sweep(cache));
    (None, freed)
}

/// Frees what the last two windows did not use: each shelf keeps at most as many buffers as
/// were taken from it in this window or the one before (NOTE [ Buffer cache ]). Returns the
/// freed buffers, to be dropped after the lock.
fn sweep(cache: &mut Cache) -> Freed {
    fn trim<T>(all: &mut Shelves<T>, freed: &mut Vec<Vec<T>>) -> usize {
        let mut bytes = 0;
        all.retain(|_, shelf| {
            while shelf.free.len() > shelf.demand() {
                let v = shelf.free.pop().unwrap_or_default();
                bytes += v.capacity() * size_of::<T>();
                freed.push(v);
            }
            let keep = shelf.demand() > 0;
            shelf.taken_before = shelf.taken;
            shelf.taken = 0;
            keep
        });
        bytes
    }
    let mut freed = Freed::default();
    let bytes = trim(&mut cache.f32, &mut freed.0)
        + trim(&mut cache.f64, &mut freed.1)
        + trim(&mut cache.i64, &mut freed.2);
    cache.bytes -= bytes;
    cache.returned = 0;
    freed
}

/// A storage whose buffer goes back to the cache when it is dropped, if nothing else shares
/// it then: the data of every tensor (`Data` in `tensor.rs`), and what a backward keeps of the
/// forward (a saved output, a derivative) when whichever of the two goes last should give the
/// buffer back, not `free` it.
pub(crate) struct Hold(ManuallyDrop<Storage>);

impl Hold {
    pub(crate) fn new(storage: Storage) -> Hold {
        Hold(ManuallyDrop::new(storage))
    }
}

impl Deref for Hold {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.0
    }
}

impl DerefMut for Hold {
    fn deref_mut(&mut self) -> &mut Storage {
        &mut self.0
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // SAFETY: the storage is never used again: this is the holder's drop, and
        // `ManuallyDrop` keeps the field's own drop from running a second time.
        let storage = unsafe { ManuallyDrop::take(&mut self.0) };
        recycle_storage(storage);
    }
}

/// Keeps the buffer of `storage` when no other array shares it (see [`recycle`]).
fn recycle_storage(storage: Storage) {
    fn take<T: 'static>(a: ndarray::ArcArray<T, ndarray::IxDyn>) {
        // Not `a.len()`: a view's last handle holds the whole buffer.
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

    /// What `vec` does, on a cache of the test's own.
    fn get(cache: &mut Cache, len: usize) -> Vec<f32> {
        super::get(cache, len).0
    }

    #[test]
    fn a_steady_state_is_served_from_the_cache_and_foreign_buffers_do_not_pile_up() {
        let mut cache = Cache::default();
        let sizes = [128 * 1024, 96 * 1024 + 5, 300_000];
        let mut most = 0;
        for step in 0..2000 {
            let held: Vec<Vec<f32>> = sizes
                .iter()
                .map(|&n| match take(&mut cache, n) {
                    Some(v) => v,
                    None => {
                        assert_eq!(step, 0, "step {step} missed a buffer of {n}");
                        get(&mut cache, n)
                    }
                })
                .collect();
            for v in held {
                drop(put(&mut cache, v));
            }
            // One buffer a step that the program allocates on its own, never asked for.
            drop(put(&mut cache, Vec::<f32>::with_capacity(200_000)));
            most = most.max(cache.bytes);
        }
        // Two sweep windows of foreign buffers at most, plus the steady state's own.
        let bound = 2 * SWEEP_BYTES + sizes.iter().map(|&n| class_up(n) * 4).sum::<usize>();
        assert!(
            most <= bound,
            "the cache grew to {most} bytes (bound {bound})"
        );
        assert!(
            cache.bytes < SWEEP_BYTES,
            "{} bytes left after 2000 steps",
            cache.bytes
        );
    }

    #[test]
    fn a_miss_frees_only_what_had_no_demand() {
        let mut cache = Cache::default();
        // A buffer of a size taken before (demand) and one never taken.
        let used = get(&mut cache, 100_000);
        drop(put(&mut cache, used));
        let used = get(&mut cache, 100_000);
        drop(put(&mut cache, used));
        drop(put(&mut cache, Vec::<f32>::with_capacity(50_000)));
        let before = cache.bytes;
        let fresh = get(&mut cache, 1_000_000);
        assert!(fresh.capacity() >= 1_000_000);
        assert_eq!(
            cache.bytes,
            before - 50_000 * 4,
            "the idle 50,000-float buffer went, the one in use stayed"
        );
        assert!(take::<f32>(&mut cache, 100_000).is_some());
    }

    #[test]
    fn a_freed_buffer_is_reused_for_its_class() {
        let n = 3 * MIN_BYTES / 8 + 7;
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
