//! Element-wise loops shared by the ops: broadcasting zips with fast paths for the layouts
//! training produces (same shape, a scalar, a row vector against a matrix).

use crate::dtype::Float;
use crate::memory;
use crate::parallel::{PARALLEL_ELEMS, collect_vec};
use ndarray::{ArcArray, ArrayD, Zip};
use ndarray::{Axis, IxDyn};
use std::mem::MaybeUninit;

pub(crate) type Arr<T> = ArcArray<T, IxDyn>;

/// `f(a, b)` element-wise over the broadcast shape `out`.
pub(crate) fn zip2<T: Float>(
    a: &Arr<T>,
    b: &Arr<T>,
    out: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Arr<T> {
    let (sa, sb) = (a.shape(), b.shape());
    if let (Some(x), Some(y)) = (a.as_slice(), b.as_slice()) {
        if sa == sb {
            // SAFETY: `x` and `y` have one shape, so the zip reaches every element of `o`.
            let v = unsafe {
                collect_vec(x.len(), |off, o| {
                    let xy = x[off..].iter().zip(&y[off..]);
                    o.iter_mut().zip(xy).for_each(|(o, (&x, &y))| {
                        o.write(f(x, y));
                    });
                })
            };
            return from_vec(out, v);
        }
        if y.len() == 1 && sa == out {
            let y = y[0];
            let mut v = memory::vec(x.len());
            v.extend(x.iter().map(|&x| f(x, y)));
            return from_vec(out, v);
        }
        if x.len() == 1 && sb == out {
            let x = x[0];
            let mut v = memory::vec(y.len());
            v.extend(y.iter().map(|&y| f(x, y)));
            return from_vec(out, v);
        }
        if sa == out && is_trailing(sb, sa) && !y.is_empty() {
            let mut v = memory::vec(x.len());
            for row in x.chunks_exact(y.len()) {
                v.extend(row.iter().zip(y).map(|(&x, &y)| f(x, y)));
            }
            return from_vec(out, v);
        }
        if sb == out && is_trailing(sa, sb) && !x.is_empty() {
            let mut v = memory::vec(y.len());
            for row in y.chunks_exact(x.len()) {
                v.extend(x.iter().zip(row).map(|(&x, &y)| f(x, y)));
            }
            return from_vec(out, v);
        }
    }
    zip2_strided(a, b, out, &f)
}

/// The general case of [`zip2`], compiled once per dtype: `f` is called through a pointer.
fn zip2_strided<T: Float>(a: &Arr<T>, b: &Arr<T>, out: &[usize], f: &dyn Fn(T, T) -> T) -> Arr<T> {
    let (sa, sb) = (a.shape(), b.shape());
    let dim = IxDyn(out);
    let (Some(av), Some(bv)) = (a.broadcast(dim.clone()), b.broadcast(dim)) else {
        unreachable!("zip2: shapes {sa:?} and {sb:?} were checked to broadcast to {out:?}")
    };
    // Zip over a fixed number of dimensions is several times faster than over IxDyn (the
    // per-channel statistics of BatchNorm2d broadcast [1, C, 1, 1] against [N, C, H, W]).
    macro_rules! fixed {
        ($ix:ty) => {
            if let (Ok(x), Ok(y)) = (
                av.view().into_dimensionality::<$ix>(),
                bv.view().into_dimensionality::<$ix>(),
            ) {
                // SAFETY: the zip visits every element of `o`, which has `x`'s shape.
                return unsafe {
                    collect_shaped(x.raw_dim(), |o| {
                        Zip::from(o).and(&x).and(&y).for_each(|o, &p, &q| {
                            o.write(f(p, q));
                        })
                    })
                };
            }
        };
    }
    match out.len() {
        2 => fixed!(ndarray::Ix2),
        3 => fixed!(ndarray::Ix3),
        4 => fixed!(ndarray::Ix4),
        _ => {}
    }
    // SAFETY: the zip visits every element of `o`, which has `av`'s shape.
    unsafe {
        collect_shaped(av.raw_dim(), |o| {
            Zip::from(o).and(&av).and(&bv).for_each(|o, &x, &y| {
                o.write(f(x, y));
            })
        })
    }
}

/// A new array of shape `dim` in standard (row-major) layout, its buffer from the cache
/// (NOTE [ Buffer cache ] in memory.rs), whose elements `fill` writes through a view of
/// the uninitialised buffer.
///
/// # Safety
/// `fill` must write every element of the view it is given.
unsafe fn collect_shaped<T: Float, D: ndarray::Dimension>(
    dim: D,
    fill: impl FnOnce(ndarray::ArrayViewMut<'_, MaybeUninit<T>, D>),
) -> Arr<T> {
    let len = dim.size();
    let mut v: Vec<T> = memory::vec(len);
    let view = ndarray::ArrayViewMut::from_shape(dim.clone(), &mut v.spare_capacity_mut()[..len])
        .unwrap_or_else(|e| unreachable!("{len} slots for shape {:?}: {e}", dim.slice()));
    fill(view);
    // SAFETY: the capacity is at least `len`, and the caller's contract is that `fill`
    // wrote all `len` elements.
    unsafe { v.set_len(len) };
    from_vec(dim.slice(), v)
}

/// `f(a, b, c)` over three arrays of one shape (backward kernels: gradient, input, output).
pub(crate) fn zip3<T: Float>(
    a: &Arr<T>,
    b: &Arr<T>,
    c: &Arr<T>,
    f: impl Fn(T, T, T) -> T + Sync,
) -> Arr<T> {
    if let (Some(x), Some(y), Some(z)) = (a.as_slice(), b.as_slice(), c.as_slice())
        && x.len() == y.len()
        && y.len() == z.len()
    {
        // SAFETY: equal lengths, so the zip reaches every element of `out`.
        let v = unsafe {
            collect_vec(x.len(), |off, out| {
                let xyz = x[off..].iter().zip(&y[off..]).zip(&z[off..]);
                out.iter_mut().zip(xyz).for_each(|(o, ((&x, &y), &z))| {
                    o.write(f(x, y, z));
                });
            })
        };
        return from_vec(a.shape(), v);
    }
    // SAFETY: the zip visits every element of `o`, which has `a`'s shape.
    unsafe {
        collect_shaped(a.raw_dim(), |o| {
            Zip::from(o).and(a).and(b).and(c).for_each(|o, &x, &y, &z| {
                o.write(f(x, y, z));
            })
        })
    }
}

/// `f(a)` element-wise.
pub(crate) fn map<T: Float>(a: &Arr<T>, f: impl Fn(T) -> T + Sync) -> Arr<T> {
    match a.as_slice() {
        Some(x) => {
            // SAFETY: `out` is `x[off..]`'s length or shorter, so every element is written.
            let v = unsafe {
                collect_vec(x.len(), |off, out| {
                    out.iter_mut().zip(&x[off..]).for_each(|(o, &x)| {
                        o.write(f(x));
                    });
                })
            };
            from_vec(a.shape(), v)
        }
        // SAFETY: the zip visits every element of `o`, which has `a`'s shape.
        None => unsafe {
            collect_shaped(a.raw_dim(), |o| {
                Zip::from(o).and(a).for_each(|o, &x| {
                    o.write(f(x));
                })
            })
        },
    }
}

/// The element-wise loop of [`map2`]: `fill(x, first, second)` writes every element of both
/// outputs for the inputs `x` (the three slices have one length).
pub(crate) type Fill2<'a, T> =
    dyn Fn(&[T], &mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) + Sync + 'a;

/// One pass over a contiguous `x` that writes two outputs of its length (a value and what its
/// backward needs, as GELU's output and derivative), in two halves on two threads when large
/// (see `parallel::PARALLEL_ELEMS`).
///
/// # Safety
/// `fill` must initialise every element of both output chunks it is given.
pub(crate) unsafe fn map2<T: Float>(x: &[T], fill: &Fill2<'_, T>) -> (Vec<T>, Vec<T>) {
    let len = x.len();
    let (mut a, mut b) = (memory::vec(len), memory::vec(len));
    let (oa, ob) = (
        &mut a.spare_capacity_mut()[..len],
        &mut b.spare_capacity_mut()[..len],
    );
    if len >= PARALLEL_ELEMS && rayon::current_num_threads() >= 2 {
        let mid = len / 2;
        let (x0, x1) = x.split_at(mid);
        let ((a0, a1), (b0, b1)) = (oa.split_at_mut(mid), ob.split_at_mut(mid));
        rayon::join(|| fill(x0, a0, b0), || fill(x1, a1, b1));
    } else {
        fill(x, oa, ob);
    }
    // SAFETY: both capacities are at least `len`, and the chunks cover `0..len`; the
    // caller's contract is that `fill` initialised every element of each.
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

/// Independent accumulators of [`lane_sum`] and [`lane_dot`]: a single floating-point
/// accumulator is a serial chain (one add per 4 cycles) the compiler may not reorder; 16
/// of them vectorise (two AVX2 registers of f32).
const LANES: usize = 16;

/// `Σ f(x)` over a row, in [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn lane_sum<T: Float>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + f(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// `Σ x·y` over two rows of one length, in [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn lane_dot<T: Float>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (cx, cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .fold(T::zero(), |s, (&a, &b)| s + a * b);
    for (a, b) in cx.zip(cy) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }
    acc.iter().fold(tail, |s, &a| s + a)
}

/// Whether `small` (after dropping leading ones) equals the trailing dimensions of `big`.
fn is_trailing(small: &[usize], big: &[usize]) -> bool {
    let small = &small[small.iter().take_while(|&&d| d == 1).count()..];
    small.len() <= big.len() && big[big.len() - small.len()..] == *small
}

pub(crate) fn from_vec<T: Float>(shape: &[usize], v: Vec<T>) -> Arr<T> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .unwrap_or_else(|e| unreachable!("kernel output of {shape:?}: {e}"))
        .into_shared()
}

/// Sums `a` over `axes` (sorted ascending), keeping them as size-1 dimensions.
pub(crate) fn sum_axes_keepdim<T: Float>(a: &Arr<T>, axes: &[usize]) -> Arr<T> {
    if axes.len() == a.ndim() && !axes.is_empty() {
        let total = match a.as_slice() {
            Some(s) => s.iter().copied().sum(),
            None => a.iter().copied().sum(),
        };
        let shape = vec![1; a.ndim()];
        return from_vec(&shape, vec![total]);
    }
    let Some((&last, rest)) = axes.split_last() else {
        return a.clone();
    };
    // The bias gradient: a contiguous [rows, cols] summed over its leading dimensions.
    let lead = axes.len();
    if axes.iter().enumerate().all(|(i, &ax)| i == ax)
        && let Some(x) = a.as_slice()
    {
        let cols: usize = a.shape()[lead..].iter().product();
        let mut out = vec![T::zero(); cols];
        if cols > 0 {
            for row in x.chunks_exact(cols) {
                out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
            }
        }
        let mut shape = a.shape().to_vec();
        shape[..lead].iter_mut().for_each(|d| *d = 1);
        return from_vec(&shape, out);
    }
    let mut out = a.sum_axis(Axis(last)).insert_axis(Axis(last));
    for &ax in rest.iter().rev() {
        out = out.sum_axis(Axis(ax)).insert_axis(Axis(ax));
    }
    out.into_shared()
}
