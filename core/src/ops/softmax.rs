//! softmax and log_softmax along a dimension, stable for large logits (the maximum of each
//! lane is subtracted before exponentiating).
//!
//! Along the last dimension of a contiguous tensor (attention's `[B, H, L, S]` scores, the
//! logits of a classifier) forward and backward run over rows as slices, split over two
//! threads for large tensors; other dimensions walk ndarray lanes.

use crate::autograd::graph::record;
use crate::dtype::Float;
use crate::ops::kernel;
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn, Zip};

#[derive(Clone, Copy)]
enum Kind {
    Softmax,
    LogSoftmax,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Softmax => "softmax",
            Kind::LogSoftmax => "log_softmax",
        }
    }
}

/// One row of the forward pass: `out = softmax(x)` or `log_softmax(x)`.
#[inline]
fn forward_row<T: Float>(x: &[T], out: &mut [T], kind: Kind) {
    let max = row_max(x);
    let max = if max.is_finite() { max } else { T::zero() };
    match kind {
        Kind::Softmax => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - max).exp_fast();
            }
            let inv = T::one() / kernel::lane_sum(out, |e| e);
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Kind::LogSoftmax => {
            let sum = kernel::lane_sum(x, |v| (v - max).exp_fast());
            let shift = sum.ln() + max;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v - shift;
            }
        }
    }
}

/// One row of the backward pass: softmax `y (g - Σ g y)`, log_softmax `g - e^y Σ g`.
#[inline]
fn backward_row<T: Float>(g: &[T], y: &[T], out: &mut [T], kind: Kind) {
    match kind {
        Kind::Softmax => {
            let dot = kernel::lane_dot(g, y);
            for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                *o = y * (g - dot);
            }
        }
        Kind::LogSoftmax => {
            let sum = kernel::lane_sum(g, |v| v);
            for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                *o = g - y.exp_fast() * sum;
            }
        }
    }
}

/// The largest value of a row (NaN ignored, `-inf` for none), in 8 independent lanes (one
/// running max is a serial chain).
#[inline]
fn row_max<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    rest.iter()
        .chain(&acc)
        .fold(T::neg_infinity(), |m, &v| m.max(v))
}

/// From this many elements on, the rows are split over two threads: a row costs an `exp`
/// per element, several times an element-wise add, so the split pays earlier than
/// `parallel::PARALLEL_ELEMS` (W5's `[2048, 64]` logits, the cross-entropy's log_softmax, were on one
/// thread).
const PARALLEL_ROW_ELEMS: usize = 1 << 15;

/// `row(input rows…, output row)` over rows of `n` elements, in two halves on two threads
/// when the tensor is large.
fn map_rows<T: Float>(inputs: &[&[T]], n: usize, row: impl Fn(&[&[T]], &mut [T]) + Sync) -> Vec<T> {
    let len = inputs[0].len();
    let mut out = crate::memory::filled(len, T::zero());
    let run = |start: usize, out: &mut [T]| {
        let mut parts: Vec<&[T]> = vec![&[]; inputs.len()];
        for (r, o) in out.chunks_exact_mut(n).enumerate() {
            let at = start + r * n;
            for (p, x) in parts.iter_mut().zip(inputs) {
                *p = &x[at..at + n];
            }
            row(&parts, o);
        }
    };
    let rows = len / n;
    if len >= PARALLEL_ROW_ELEMS && rows >= 2 && rayon::current_num_threads() >= 2 {
        let mid = rows / 2 * n;
        let (lo, hi) = out.split_at_mut(mid);
        rayon::join(|| run(0, lo), || run(mid, hi));
    } else {
        run(0, &mut out);
    }
    out
}

/// The forward pass over every lane along `d`.
fn forward<T: Float>(a: &ArcArray<T, IxDyn>, d: usize, kind: Kind) -> ArcArray<T, IxDyn> {
    let n = a.shape()[d];
    if d + 1 == a.ndim()
        && n > 0
        && let Some(x) = a.as_slice()
    {
        let out = map_rows(&[x], n, |x, o| forward_row(x[0], o, kind));
        return kernel::from_vec(a.shape(), out);
    }
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(Axis(d)) {
        let max = lane.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        let max = if max.is_finite() { max } else { T::zero() };
        let sum: T = lane.iter().map(|&v| (v - max).exp()).sum();
        match kind {
            Kind::Softmax => lane.mapv_inplace(|v| (v - max).exp() / sum),
            Kind::LogSoftmax => {
                let log_sum = sum.ln() + max;
                lane.mapv_inplace(|v| v - log_sum)
            }
        }
    }
    out.into_shared()
}

/// The backward pass: softmax `y (g - Σ g y)`, log_softmax `g - e^y Σ g`.
fn backward<T: Float>(
    g: &ArcArray<T, IxDyn>,
    y: &ArcArray<T, IxDyn>,
    d: usize,
    kind: Kind,
) -> ArcArray<T, IxDyn> {
    let n = g.shape()[d];
    if d + 1 == g.ndim()
        && n > 0
        && let (Some(gs), Some(ys)) = (g.as_slice(), y.as_slice())
    {
        let out = map_rows(&[gs, ys], n, |v, o| backward_row(v[0], v[1], o, kind));
        return kernel::from_vec(g.shape(), out);
    }
    let mut out = g.to_owned();
    Zip::from(out.lanes_mut(Axis(d)))
        .and(y.lanes(Axis(d)))
        .for_each(|mut gl, yl| match kind {
            Kind::Softmax => {
                let dot: T = gl.iter().zip(yl.iter()).map(|(&g, &y)| g * y).sum();
                gl.zip_mut_with(&yl, |g, &y| *g = y * (*g - dot));
            }
            Kind::LogSoftmax => {
                let sum: T = gl.iter().copied().sum();
                gl.zip_mut_with(&yl, |g, &y| *g -= y.exp() * sum);
            }
        });
    out.into_shared()
}

#[track_caller]
fn softmax_op(x: &Tensor, dim: isize, kind: Kind) -> Tensor {
    let d = normalize_dim(kind.name(), dim, x.dim());
    if x.dim() == 0 {
        return match kind {
            Kind::Softmax => x.ones_like().mul(&x.ones_like()),
            Kind::LogSoftmax => x.zeros_like(),
        };
    }
    let out = crate::dispatch_float!(x.storage(), a => forward(&a, d, kind), int => panic!(
        "{}: needs a floating-point tensor, got int64 {:?}; convert with .float()", kind.name(), x.shape()));
    let y = crate::memory::Hold::new(out.clone());
    record(kind.name(), out, &[x], || {
        move |g: &Tensor, _: &[bool]| {
            let grad = crate::dispatch_float!(g.storage(), g => {
                let y = crate::ops::same_dtype(&y, &g);
                backward(&g, &y, d, kind)
            }, int => unreachable!("gradients are floating point"));
            vec![Some(Tensor::from_storage(grad))]
        }
    })
}

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim`.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        softmax_op(self, dim, Kind::Softmax)
    }

    /// `x - log Σ exp(x)` along `dim`, computed without overflow for large logits.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        softmax_op(self, dim, Kind::LogSoftmax)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    #[test]
    fn softmax_backward_matches_finite_differences_along_any_dim() {
        let x = Tensor::from_vec(
            vec![
                0.3f64, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 1.3, -2.1, 0.05, 0.6, -0.8,
            ],
            &[2, 3, 2],
        )
        .requires_grad_(true);
        for dim in [-1, 1, 0] {
            gradcheck(|v| &v[0].softmax(dim) * &v[0], std::slice::from_ref(&x)).unwrap();
            gradcheck(|v| &v[0].log_softmax(dim) * &v[0], std::slice::from_ref(&x)).unwrap();
        }
    }

    #[test]
    fn row_kernels_split_over_threads_agree_with_the_lane_walk() {
        // 600 rows of 512: past the two-thread threshold. The transposed input takes the
        // lane walk; the contiguous one the row kernels.
        let x = Tensor::randn(&[600, 512]).double();
        let g = Tensor::randn(&[600, 512]).double();
        for log in [false, true] {
            let run = |t: &Tensor, dim: isize| {
                let t = t.detach().requires_grad_(true);
                let y = if log {
                    t.log_softmax(dim)
                } else {
                    t.softmax(dim)
                };
                y.backward_with(&if dim == 1 {
                    g.clone()
                } else {
                    g.t().contiguous_copy()
                });
                (y, t.grad().unwrap())
            };
            let (y_rows, g_rows) = run(&x, 1);
            let (y_lanes, g_lanes) = run(&x.t().contiguous_copy(), 0);
            let close = |a: &Tensor, b: &Tensor| {
                let (a, b) = (a.to_vec::<f64>(), b.t().contiguous_copy().to_vec::<f64>());
                a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12)
            };
            assert!(
                close(&y_rows, &y_lanes) && close(&g_rows, &g_lanes),
                "log = {log}"
            );
        }
    }
}
