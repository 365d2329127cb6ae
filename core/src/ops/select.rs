//! Element-wise selection between two sources: `where`, `masked_fill`, the triangle masks
//! `triu`/`tril`, and `minimum`/`maximum`.
//!
//! torchlet has no bool dtype (see `compare.rs`): a condition or mask is any tensor, and an
//! element counts as true where it is non-zero, so the 0/1 masks of the comparisons and
//! i64 0/1 masks both work.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{DType, Element, Float, Storage};
use crate::ops::kernel;
use crate::shape::broadcast_shapes;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn, Zip};

#[cold]
#[inline(never)]
#[track_caller]
fn broadcast_error(op: &str, shapes: &[&[usize]]) -> ! {
    panic!("{op}: shapes {shapes:?} cannot be broadcast together")
}

/// The condition as booleans broadcast to `out` (row-major).
fn truth(cond: &Storage, out: &[usize]) -> ArcArray<bool, IxDyn> {
    fn nonzero<T: Element + PartialEq + Default>(
        a: &ArcArray<T, IxDyn>,
        out: &[usize],
    ) -> ArcArray<bool, IxDyn> {
        let Some(v) = a.broadcast(IxDyn(out)) else {
            unreachable!("where: condition checked to broadcast to {out:?}")
        };
        v.map(|&c| c != T::default()).into_shared()
    }
    match cond {
        Storage::F32(a) => nonzero(a, out),
        Storage::F64(a) => nonzero(a, out),
        Storage::I64(a) => nonzero(a, out),
    }
}

/// `cond ? a : b` element-wise over the broadcast shape `out`.
fn select<T: Float>(
    cond: &ArcArray<bool, IxDyn>,
    a: &ArcArray<T, IxDyn>,
    b: &ArcArray<T, IxDyn>,
    out: &[usize],
) -> ArcArray<T, IxDyn> {
    let (Some(av), Some(bv)) = (a.broadcast(IxDyn(out)), b.broadcast(IxDyn(out))) else {
        unreachable!("where: operands checked to broadcast to {out:?}")
    };
    Zip::from(cond)
        .and(&av)
        .and(&bv)
        .map_collect(|&c, &x, &y| if c { x } else { y })
        .into_shared()
}

/// `g` where `cond` is `keep`, zero elsewhere (the gradient of one side of `where`).
fn pass_where(g: &Tensor, cond: &ArcArray<bool, IxDyn>, keep: bool) -> Tensor {
    let out = crate::dispatch_float!(g.storage(), g => Zip::from(&g).and(cond)
            .map_collect(|&v, &c| if c == keep { v } else { num_traits::Zero::zero() })
            .into_shared(),
        int => unreachable!("gradients are floating point"));
    Tensor::from_storage(out)
}

impl Tensor {
    /// `input` where this condition is non-zero, `other` elsewhere, broadcasting all three
    /// (PyTorch's `torch.where(condition, input, other)`; `where` is a Rust keyword, so
    /// call it as `Tensor::where_cond(&condition, &input, &other)` or
    /// `condition.where_cond(&input, &other)`). Gradients flow to `input` where the
    /// condition holds and to `other` elsewhere.
    ///
    /// # Panics
    /// If the shapes do not broadcast or `input` and `other` differ in dtype.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let cond = Tensor::from_vec(vec![1i64, 0, 1], &[3]);
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]);
    /// let y = cond.where_cond(&a, &Tensor::scalar(0.0));
    /// assert_eq!(y.to_vec::<f32>(), [1.0, 0.0, 3.0]);
    /// ```
    #[doc(alias = "where")]
    #[track_caller]
    pub fn where_cond(&self, input: &Tensor, other: &Tensor) -> Tensor {
        let (sc, sa, sb) = (self.shape(), input.shape(), other.shape());
        let out = broadcast_shapes(&sc, &sa)
            .and_then(|s| broadcast_shapes(&s, &sb))
            .unwrap_or_else(|| broadcast_error("where", &[&sc, &sa, &sb]));
        let cond = truth(&self.storage(), &out);
        let (a, b) = (input.storage(), other.storage());
        let values = crate::dispatch_float2!(&a, &b, (x, y) => select(&cond, x, y, &out),
            else => crate::ops::binary::dtype_error("where", &a, &b));
        record("where", values, &[input, other], || {
            move |g: &Tensor, needs: &[bool]| {
                vec![
                    needs[0].then(|| pass_where(g, &cond, true).sum_to(&sa)),
                    needs[1].then(|| pass_where(g, &cond, false).sum_to(&sb)),
                ]
            }
        })
    }

    /// `value` where `mask` is non-zero, this tensor elsewhere (PyTorch's
    /// `masked_fill(mask, value)`); `mask` broadcasts with this tensor. Filled positions get
    /// no gradient.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let scores = Tensor::zeros(&[2, 2]);
    /// let causal = Tensor::ones(&[2, 2]).triu(1);
    /// let masked = scores.masked_fill(&causal, f64::NEG_INFINITY);
    /// assert_eq!(masked.to_vec::<f32>(), [0.0, f32::NEG_INFINITY, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Tensor {
        let dtype = self.dtype();
        if dtype == DType::I64 {
            panic!(
                "masked_fill: needs a floating-point tensor, got int64 {:?}; convert with .float()",
                self.shape()
            );
        }
        let fill = Tensor::full_dtype(&[], value, dtype);
        mask.where_cond(&fill, self)
    }

    /// The upper triangle of the last two dimensions: elements on and above diagonal
    /// `diagonal` (0 = the main diagonal, > 0 above it, < 0 below), zeros elsewhere.
    /// Leading dimensions are batch dimensions.
    ///
    /// # Panics
    /// If the tensor has fewer than 2 dimensions.
    #[track_caller]
    pub fn triu(&self, diagonal: i64) -> Tensor {
        triangle(self, Triangle::Upper, diagonal)
    }

    /// The lower triangle of the last two dimensions: elements on and below diagonal
    /// `diagonal`, zeros elsewhere (see [`triu`](Tensor::triu)).
    #[track_caller]
    pub fn tril(&self, diagonal: i64) -> Tensor {
        triangle(self, Triangle::Lower, diagonal)
    }

    /// The element-wise maximum of two tensors, broadcasting (PyTorch's `torch.maximum`).
    /// Where they are equal each gets half the gradient, as in PyTorch.
    #[track_caller]
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        extremum(Extremum::Max, self, other)
    }

    /// The element-wise minimum of two tensors (see [`maximum`](Tensor::maximum)).
    #[track_caller]
    pub fn minimum(&self, other: &Tensor) -> Tensor {
        extremum(Extremum::Min, self, other)
    }
}

#[derive(Clone, Copy)]
enum Triangle {
    Upper,
    Lower,
}

/// Whether `(row, col)` is kept by the triangle with offset `diagonal`.
fn keeps(t: Triangle, row: usize, col: usize, diagonal: i64) -> bool {
    let offset = col as i64 - row as i64;
    match t {
        Triangle::Upper => offset >= diagonal,
        Triangle::Lower => offset <= diagonal,
    }
}

fn triangle_kernel<T: Copy + Default>(
    a: &ArcArray<T, IxDyn>,
    t: Triangle,
    diagonal: i64,
) -> ArcArray<T, IxDyn> {
    let shape = a.shape();
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let mut out = a.as_standard_layout().into_owned();
    if let Some(v) = out.as_slice_mut() {
        for (k, x) in v.iter_mut().enumerate() {
            let (row, col) = ((k / cols.max(1)) % rows.max(1), k % cols.max(1));
            if !keeps(t, row, col, diagonal) {
                *x = T::default();
            }
        }
    }
    out.into_shared()
}

#[track_caller]
fn triangle(x: &Tensor, t: Triangle, diagonal: i64) -> Tensor {
    let name = match t {
        Triangle::Upper => "triu",
        Triangle::Lower => "tril",
    };
    if x.dim() < 2 {
        panic!(
            "{name}: input must have at least 2 dimensions, got shape {:?}",
            x.shape()
        );
    }
    let out = match x.storage() {
        Storage::F32(a) => Storage::F32(triangle_kernel(&a, t, diagonal)),
        Storage::F64(a) => Storage::F64(triangle_kernel(&a, t, diagonal)),
        Storage::I64(a) => Storage::I64(triangle_kernel(&a, t, diagonal)),
    };
    record(name, out, &[x], || {
        move |g: &Tensor, _: &[bool]| vec![Some(triangle(g, t, diagonal))]
    })
}

#[derive(Clone, Copy)]
enum Extremum {
    Max,
    Min,
}

/// The share of the gradient that goes to the left operand: 1 where it wins, ½ on ties.
fn left_share<T: Float>(e: Extremum, p: T, q: T) -> T {
    let wins = match e {
        Extremum::Max => p > q,
        Extremum::Min => p < q,
    };
    if wins {
        T::one()
    } else if p == q {
        T::lit(0.5)
    } else {
        T::zero()
    }
}

#[track_caller]
fn extremum(e: Extremum, a: &Tensor, b: &Tensor) -> Tensor {
    let name = match e {
        Extremum::Max => "maximum",
        Extremum::Min => "minimum",
    };
    let (sa, sb) = (a.storage(), b.storage());
    let out = broadcast_shapes(sa.shape(), sb.shape())
        .unwrap_or_else(|| broadcast_error(name, &[sa.shape(), sb.shape()]));
    // NaN propagates from either side, as in PyTorch.
    let values = crate::dispatch_float2!(&sa, &sb, (x, y) => match e {
        Extremum::Max => kernel::zip2(x, y, &out, |p, q| if p > q || p.is_nan() { p } else { q }),
        Extremum::Min => kernel::zip2(x, y, &out, |p, q| if p < q || p.is_nan() { p } else { q }),
    }, else => crate::ops::binary::dtype_error(name, &sa, &sb));
    let (shape_a, shape_b) = (a.shape(), b.shape());
    record(name, values, &[a, b], || {
        let (left, right) = (Saved::new(a, name), Saved::new(b, name));
        move |g: &Tensor, needs: &[bool]| {
            let (l, r) = (left.get().storage(), right.get().storage());
            let share = crate::dispatch_float2!(&l, &r,
                (x, y) => kernel::zip2(x, y, &out, |p, q| left_share(e, p, q)),
                else => unreachable!("checked in forward"));
            let ga = g * &Tensor::from_storage(share);
            vec![
                needs[0].then(|| ga.sum_to(&shape_a)),
                needs[1].then(|| (g - &ga).sum_to(&shape_b)),
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape).requires_grad_(true)
    }

    #[test]
    fn where_backward_matches_finite_differences_with_broadcasting() {
        let cond = Tensor::from_vec(vec![1i64, 0, 0, 1, 1, 0], &[2, 3]);
        let a = t(&[0.3, -1.2, 2.0, 0.7, 1.1, -0.4], &[2, 3]);
        let b = t(&[0.5, -0.25, 1.5], &[3]);
        // b is used twice, once through where and once directly.
        gradcheck(
            |v| &(&cond.where_cond(&v[0], &v[1]) * &v[1]) * &v[0],
            &[a, b],
        )
        .unwrap();
    }

    #[test]
    fn masked_fill_leaves_no_gradient_at_filled_positions() {
        let x = t(&[0.3, -1.2, 2.0, 0.7], &[2, 2]);
        let mask = Tensor::from_vec(vec![0i64, 1], &[1, 2]);
        let y = x.masked_fill(&mask, -1e9);
        assert_eq!(y.to_vec::<f64>(), [0.3, -1e9, 2.0, -1e9]);
        gradcheck(|v| &v[0].masked_fill(&mask, 0.0) * &v[0], &[x]).unwrap();
    }

    #[test]
    fn triangles_follow_the_diagonal_offset() {
        let x = Tensor::from_vec((1..=6).map(f64::from).collect(), &[2, 3]);
        assert_eq!(x.triu(0).to_vec::<f64>(), [1.0, 2.0, 3.0, 0.0, 5.0, 6.0]);
        assert_eq!(x.triu(1).to_vec::<f64>(), [0.0, 2.0, 3.0, 0.0, 0.0, 6.0]);
        assert_eq!(x.tril(-1).to_vec::<f64>(), [0.0, 0.0, 0.0, 4.0, 0.0, 0.0]);
        let ones = Tensor::from_vec(vec![1i64; 4], &[2, 2]);
        assert_eq!(ones.tril(0).to_vec::<i64>(), [1, 0, 1, 1]);
        let batched = t(&[0.3, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 1.3], &[2, 2, 2]);
        gradcheck(|v| &v[0].tril(0) * &v[0], &[batched]).unwrap();
    }

    #[test]
    fn maximum_and_minimum_backward_match_finite_differences() {
        let a = t(&[0.3, -1.2, 2.0, 0.7, 1.1, -0.4], &[2, 3]);
        let b = t(&[0.5, -0.25, 1.5], &[3]);
        gradcheck(|v| &v[0].maximum(&v[1]) * &v[0], &[a.clone(), b.clone()]).unwrap();
        gradcheck(|v| &v[0].minimum(&v[1]) * &v[1], &[a, b]).unwrap();
    }

    #[test]
    fn maximum_splits_the_gradient_of_ties() {
        let a = t(&[1.0], &[1]);
        let b = t(&[1.0], &[1]);
        a.maximum(&b).sum().backward();
        assert_eq!(a.grad().unwrap().to_vec::<f64>(), [0.5]);
        assert_eq!(b.grad().unwrap().to_vec::<f64>(), [0.5]);
    }
}
