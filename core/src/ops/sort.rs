//! Ordering along a dimension: `sort` and `topk`, each giving values and their positions.
//! The values' gradient goes back to the positions they came from.

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage};
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn, Zip};
use std::cmp::Ordering;

/// A total order that puts NaN above every number, as PyTorch's sort does.
fn total<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    // Only NaN is unordered, even with itself.
    let is_nan = |v: &T| v.partial_cmp(v).is_none();
    a.partial_cmp(b)
        .unwrap_or_else(|| is_nan(a).cmp(&is_nan(b)))
}

/// The first `k` values of every lane along `d` in sorted order, and their positions
/// (a stable sort: equal values keep their order).
fn sorted_lanes<T: Copy + PartialOrd>(
    a: &ArcArray<T, IxDyn>,
    d: usize,
    k: usize,
    descending: bool,
) -> (ArcArray<T, IxDyn>, ArcArray<i64, IxDyn>) {
    let mut shape = a.shape().to_vec();
    shape[d] = k;
    let Some(&fill) = a.iter().next() else {
        unreachable!("empty tensors are handled before sorting")
    };
    let mut values = ndarray::ArrayD::from_elem(IxDyn(&shape), fill);
    let mut indices = ndarray::ArrayD::<i64>::zeros(IxDyn(&shape));
    let mut order: Vec<usize> = Vec::new();
    Zip::from(a.lanes(Axis(d)))
        .and(values.lanes_mut(Axis(d)))
        .and(indices.lanes_mut(Axis(d)))
        .for_each(|lane, mut vals, mut idx| {
            order.clear();
            order.extend(0..lane.len());
            order.sort_by(|&i, &j| {
                let o = total(&lane[i], &lane[j]);
                if descending { o.reverse() } else { o }
            });
            for (slot, &i) in order.iter().take(k).enumerate() {
                vals[slot] = lane[i];
                idx[slot] = i as i64;
            }
        });
    (values.into_shared(), indices.into_shared())
}

/// The backward: zeros of `shape` with `g` added at `indices` along `d`.
fn scatter<T: Float>(
    g: &ArcArray<T, IxDyn>,
    indices: &ArcArray<i64, IxDyn>,
    d: usize,
    shape: &[usize],
) -> ArcArray<T, IxDyn> {
    let mut out = ArcArray::<T, IxDyn>::zeros(IxDyn(shape));
    Zip::from(out.lanes_mut(Axis(d)))
        .and(g.lanes(Axis(d)))
        .and(indices.lanes(Axis(d)))
        .for_each(|mut o, g, idx| {
            for (&v, &i) in g.iter().zip(idx.iter()) {
                o[i as usize] += v;
            }
        });
    out
}

#[track_caller]
fn select_sorted(
    x: &Tensor,
    op: &'static str,
    k: usize,
    dim: isize,
    descending: bool,
) -> (Tensor, Tensor) {
    let shape = x.shape();
    if shape.is_empty() {
        return (x.clone(), Tensor::from_vec(vec![0i64], &[]));
    }
    let d = normalize_dim(op, dim, shape.len());
    if k > shape[d] {
        panic!(
            "{op}: k = {k} is larger than dimension {dim} of size {} (shape {shape:?})",
            shape[d]
        );
    }
    if k == 0 || shape.contains(&0) {
        let mut out = shape.clone();
        out[d] = k;
        return (
            Tensor::full_dtype(&out, 0.0, x.dtype()),
            Tensor::full_dtype(&out, 0.0, crate::dtype::DType::I64),
        );
    }
    let (values, indices) = match x.storage() {
        Storage::F32(a) => {
            let (v, i) = sorted_lanes(&a, d, k, descending);
            (Storage::F32(v), i)
        }
        Storage::F64(a) => {
            let (v, i) = sorted_lanes(&a, d, k, descending);
            (Storage::F64(v), i)
        }
        Storage::I64(a) => {
            let (v, i) = sorted_lanes(&a, d, k, descending);
            (Storage::I64(v), i)
        }
    };
    let saved = indices.clone();
    let values = record(op, values, &[x], || {
        move |g: &Tensor, _: &[bool]| {
            let grad = crate::dispatch_float!(g.storage(), g => scatter(&g, &saved, d, &shape),
                int => unreachable!("gradients are floating point"));
            vec![Some(Tensor::from_storage(grad))]
        }
    });
    (values, Tensor::from_storage(Storage::I64(indices)))
}

impl Tensor {
    /// The values along `dim` in ascending order (descending when `descending`), and the
    /// positions they came from as i64 (`torch.sort`). The sort is stable; NaN sorts above
    /// every number, as in PyTorch.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let (values, indices) = Tensor::from_vec(vec![3.0f32, 1.0, 2.0], &[3]).sort(0, false);
    /// assert_eq!(values.to_vec::<f32>(), [1.0, 2.0, 3.0]);
    /// assert_eq!(indices.to_vec::<i64>(), [1, 2, 0]);
    /// ```
    #[track_caller]
    pub fn sort(&self, dim: isize, descending: bool) -> (Tensor, Tensor) {
        let n = if self.dim() == 0 { 1 } else { self.size(dim) };
        select_sorted(self, "sort", n, dim, descending)
    }

    /// The `k` largest values along `dim` (the `k` smallest when `largest` is false) and
    /// their positions as i64 (`torch.topk`). Values come in order, largest (or smallest)
    /// first; unlike PyTorch, whose `sorted = False` leaves the order unspecified, they are
    /// always sorted, so there is no `sorted` argument.
    ///
    /// # Panics
    /// If `k` is larger than the dimension.
    #[track_caller]
    pub fn topk(&self, k: usize, dim: isize, largest: bool) -> (Tensor, Tensor) {
        select_sorted(self, "topk", k, dim, largest)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    fn x() -> Tensor {
        let v = [
            0.3, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 1.3, -2.1, 0.05, 0.6, -0.8,
        ];
        Tensor::from_vec(v.to_vec(), &[3, 4]).requires_grad_(true)
    }

    #[test]
    fn sort_and_topk_backward_match_finite_differences() {
        gradcheck(|v| &v[0].sort(1, true).0 * &v[0], &[x()]).unwrap();
        gradcheck(|v| v[0].topk(2, 0, false).0, &[x()]).unwrap();
    }

    #[test]
    fn topk_gives_the_largest_first_and_nan_sorts_last() {
        let t = Tensor::from_vec(vec![0.5f64, f64::NAN, 2.0, -1.0], &[4]);
        let (v, i) = t.topk(2, 0, false);
        assert_eq!(v.to_vec::<f64>(), [-1.0, 0.5]);
        assert_eq!(i.to_vec::<i64>(), [3, 0]);
        assert_eq!(t.sort(0, false).1.to_vec::<i64>(), [3, 0, 2, 1]);
    }
}
