//! How many threads torchlet's kernels use (PyTorch's `torch.get_num_threads` /
//! `torch.set_num_threads`).
//!
//! Large matrix products split their blocks across a pool of worker threads, and so do
//! element-wise kernels and optimizer updates over large contiguous tensors (from 2^18
//! elements on); everything else runs on the calling thread. The pool has one thread per core
//! unless `RAYON_NUM_THREADS` or [`set_num_threads`] says otherwise.

use crate::error::{Error, Result};
use std::mem::MaybeUninit;

/// From this many elements on, an element-wise kernel splits its output in two halves run
/// on two threads. Below it the loop is memory-bound and short enough that waking a worker
/// costs more than it saves (a 2 MB ReLU of W2 takes about 0.3 ms on one thread).
pub(crate) const PARALLEL_ELEMS: usize = 1 << 18;

/// A new vector of `len` elements whose chunks are written by `fill(offset, chunk)`, in two
/// halves on two threads when `len` is large (see [`PARALLEL_ELEMS`]).
///
/// It hands out uninitialised memory rather than a zeroed vector because zeroing first costs
/// the element-wise kernels 30–130% at the sizes W1–W3 use (a ReLU-like loop over 128 to 1M
/// f32, measured: an uninitialised buffer against `vec![0.0; n]`, rustc -O).
///
/// # Safety
/// `fill(offset, chunk)` must initialise every element of `chunk` (which holds the elements
/// `offset..offset + chunk.len()`) before it returns; the vector is returned as if it had.
/// A `fill` that panics is fine: the vector is then dropped without reading its elements.
#[inline]
pub(crate) unsafe fn collect_vec<T: Send + 'static>(
    len: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    // SAFETY: the caller's contract is `collect_vec_dyn`'s.
    unsafe { collect_vec_dyn(len, &fill) }
}

/// [`collect_vec`] with `fill` behind a pointer (called once per half, so the loop inside
/// stays monomorphic), so that the thread-pool plumbing is compiled once per element type
/// rather than once per kernel: it was 40 copies of `rayon::join`, 8% of the crate's code.
///
/// # Safety
/// As for [`collect_vec`].
unsafe fn collect_vec_dyn<T: Send + 'static>(
    len: usize,
    fill: &(dyn Fn(usize, &mut [MaybeUninit<T>]) + Sync),
) -> Vec<T> {
    let mut v = crate::memory::vec(len);
    let out = &mut v.spare_capacity_mut()[..len];
    if len >= PARALLEL_ELEMS && rayon::current_num_threads() >= 2 {
        let (lo, hi) = out.split_at_mut(len / 2);
        rayon::join(|| fill(0, lo), || fill(len / 2, hi));
    } else {
        fill(0, out);
    }
    // SAFETY: the capacity is at least `len`, and the two chunks (or the one) cover `0..len`;
    // the caller's contract is that `fill` initialised every element of each.
    unsafe { v.set_len(len) };
    v
}

/// An element-wise update over (parameter, state buffer, gradient) slices.
pub(crate) type UpdateFn<'a, T> = dyn Fn(&mut [T], &mut [T], &[T]) + Sync + 'a;

/// Runs `f(p, state, g)` over three parallel slices (a parameter, an optimizer state buffer
/// of the same length or empty, and a gradient), on their two halves on two threads when
/// they are large (see [`PARALLEL_ELEMS`]): an optimizer's update is element-wise.
pub(crate) fn update_in_halves<T: Send + Sync>(
    p: &mut [T],
    state: &mut [T],
    g: &[T],
    f: &UpdateFn<'_, T>,
) {
    let len = p.len();
    let fits = g.len() == len && (state.is_empty() || state.len() == len);
    if !fits || len < PARALLEL_ELEMS || rayon::current_num_threads() < 2 {
        f(p, state, g);
        return;
    }
    let mid = len / 2;
    let (p0, p1) = p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid);
    let (s0, s1) = if state.is_empty() {
        (&mut [][..], &mut [][..])
    } else {
        state.split_at_mut(mid)
    };
    rayon::join(|| f(p0, s0, g0), || f(p1, s1, g1));
}

/// The number of threads large kernels may use.
pub fn get_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Sets the number of threads large kernels may use. Call it before the first tensor op.
///
/// # Errors
/// If `n` is 0, or the pool was already started (by an earlier op or call) with another
/// size.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config(
            "set_num_threads: the thread count must be at least 1, got 0".into(),
        ));
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if get_num_threads() == n => Ok(()),
        Err(_) => Err(Error::Config(format!(
            "set_num_threads({n}): the thread pool already runs {} threads; call \
             set_num_threads before the first tensor op, or set RAYON_NUM_THREADS={n}",
            get_num_threads()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_cover_every_element_once() {
        let n = PARALLEL_ELEMS + 3;
        let g: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut p = vec![1.0f32; n];
        let mut state = vec![0.0f32; n];
        update_in_halves(&mut p, &mut state, &g, &|p, s, g| {
            for ((p, s), &g) in p.iter_mut().zip(s.iter_mut()).zip(g) {
                *s += 1.0;
                *p += g;
            }
        });
        assert!(state.iter().all(|&s| s == 1.0));
        assert!(p.iter().zip(&g).all(|(&p, &g)| p == 1.0 + g));
        // Without a state buffer.
        update_in_halves(&mut p, &mut [], &g, &|p, s, g| {
            assert!(s.is_empty());
            p.iter_mut().zip(g).for_each(|(p, &g)| *p -= g);
        });
        assert!(p.iter().all(|&p| p == 1.0));
        // SAFETY: the closure writes every element of its chunk.
        let v = unsafe {
            collect_vec(n, |off, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(off + i);
                }
            })
        };
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }
}
