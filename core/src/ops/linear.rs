//! `linear`: `x @ wᵀ + b` as one op (PyTorch's `F.linear`), the work of every Linear layer.
//!
//! Composing it from `t`, `matmul` and a broadcast `add` records three nodes and builds
//! three intermediate tensors per layer; fused, forward is one GEMM that reads `w`
//! transposed in place plus a bias pass, and backward is two GEMMs and a column sum.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
use crate::ops::gemm::{Epilogue, gemm_new};
use crate::tensor::Tensor;
use ndarray::{ArrayView2, Axis, Ix2, IxDyn};

fn view2<T>(a: &ndarray::ArcArray<T, IxDyn>, rows: usize, cols: usize) -> ArrayView2<'_, T> {
    let v = a.view().into_dimensionality::<Ix2>();
    match v {
        Ok(v) => v,
        Err(_) => a
            .view()
            .into_shape_with_order((rows, cols))
            .unwrap_or_else(|e| unreachable!("linear: [{rows}, {cols}] view: {e}")),
    }
}

/// `a` itself when 2-D or row-major, else a row-major copy: a strided N-D array (a
/// transposed or permuted view, a gradient routed through one) cannot be seen as rows.
fn standard_unless_2d<T: Float>(a: ndarray::ArcArray<T, IxDyn>) -> ndarray::ArcArray<T, IxDyn> {
    if a.ndim() == 2 || a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned().into_shared()
    }
}

/// The bias gradient `Σᵢ g[i, ·]`: for a large row-major `g` (W2's `[512, 1024]`), the two
/// halves of the columns are summed on two threads, each adding whole rows of its half.
fn column_sums<T: Float>(g: ArrayView2<'_, T>) -> ndarray::Array1<T> {
    let (rows, cols) = g.dim();
    let Some(data) = g.as_slice() else {
        return g.sum_axis(Axis(0));
    };
    if rows * cols < crate::parallel::PARALLEL_ELEMS
        || cols < 64
        || rayon::current_num_threads() < 2
    {
        return g.sum_axis(Axis(0));
    }
    let mid = cols / 2;
    let half = |lo: usize, hi: usize| {
        let mut acc = vec![T::zero(); hi - lo];
        for row in data.chunks_exact(cols) {
            acc.iter_mut().zip(&row[lo..hi]).for_each(|(a, &v)| *a += v);
        }
        acc
    };
    let (mut left, right) = rayon::join(|| half(0, mid), || half(mid, cols));
    left.extend(right);
    ndarray::Array1::from_vec(left)
}

#[cold]
#[inline(never)]
#[track_caller]
fn linear_shape_error(x: &[usize], w: &[usize], b: Option<Vec<usize>>) -> ! {
    match b {
        Some(b) => panic!(
            "linear: input {x:?}, weight {w:?}, bias {b:?}: expected input [*, in_features], \
             weight [out_features, in_features] and bias [out_features]"
        ),
        None => panic!(
            "linear: input {x:?}, weight {w:?}: expected input [*, in_features] and weight \
             [out_features, in_features]"
        ),
    }
}

impl Tensor {
    /// `self @ weightᵀ + bias` over the last dimension (PyTorch's `F.linear`).
    ///
    /// # Shapes
    /// input `[*, in_features]`, weight `[out_features, in_features]`, bias
    /// `[out_features]` → `[*, out_features]`.
    ///
    /// # Panics
    /// If the shapes do not fit or the dtypes differ.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (xs, ws) = (self.shape(), weight.shape());
        let bs = bias.map(Tensor::shape);
        let fits = !xs.is_empty()
            && ws.len() == 2
            && xs[xs.len() - 1] == ws[1]
            && bs.as_ref().is_none_or(|b| b.len() == 1 && b[0] == ws[0]);
        if !fits {
            linear_shape_error(&xs, &ws, bs);
        }
        let (inf, outf) = (ws[1], ws[0]);
        let rows = xs[..xs.len() - 1].iter().product::<usize>();
        let mut out_shape = xs.clone();
        *out_shape.last_mut().unwrap_or(&mut 0) = outf;
        let (x, w) = (self.storage(), weight.storage());
        let b = bias.map(Tensor::storage);
        let out = match (&x, &w, &b) {
            (Storage::F32(x), Storage::F32(w), None | Some(Storage::F32(_))) => {
                Storage::F32(forward(x, w, b.as_ref(), rows, inf, outf, &out_shape))
            }
            (Storage::F64(x), Storage::F64(w), None | Some(Storage::F64(_))) => {
                Storage::F64(forward(x, w, b.as_ref(), rows, inf, outf, &out_shape))
            }
            _ => panic!(
                "linear: input, weight and bias must share a floating-point dtype, got {}, {}{}",
                x.dtype(),
                w.dtype(),
                b.as_ref()
                    .map(|b| format!(" and {}", b.dtype()))
                    .unwrap_or_default()
            ),
        };
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        record("linear", out, &inputs, || {
            let x = Saved::new(self, "linear");
            let w = Saved::new(weight, "linear");
            move |g: &Tensor, needs: &[bool]| {
                let (gx, gw, gb) = crate::dispatch_float_tuple!(g.storage(), g => {
                    let g = standard_unless_2d(g);
                    let g2 = view2(&g, rows, outf);
                    let gx = needs[0].then(|| {
                        let w = crate::ops::same_dtype(&w.get().storage(), &g);
                        let w2 = view2(&w, outf, inf);
                        let mut shape = out_shape.clone();
                        *shape.last_mut().unwrap_or(&mut 0) = inf;
                        gemm_new(&g2, &w2, Epilogue::write()).into_shape_with_order(IxDyn(&shape))
                            .unwrap_or_else(|e| unreachable!("linear grad input: {e}"))
                            .into_shared()
                    });
                    let gw = needs[1].then(|| {
                        let x = standard_unless_2d(crate::ops::same_dtype(&x.get().storage(), &g));
                        gemm_new(&g2.t(), &view2(&x, rows, inf), Epilogue::write())
                            .into_dyn()
                            .into_shared()
                    });
                    let gb = needs.get(2).copied().unwrap_or(false).then(|| {
                        column_sums(g2).into_dyn().into_shared()
                    });
                    (gx, gw, gb)
                });
                let mut grads = vec![gx.map(Tensor::from_storage), gw.map(Tensor::from_storage)];
                if needs.len() == 3 {
                    grads.push(gb.map(Tensor::from_storage));
                }
                grads
            }
        })
    }
}

fn forward<T: Float>(
    x: &ndarray::ArcArray<T, IxDyn>,
    w: &ndarray::ArcArray<T, IxDyn>,
    b: Option<&Storage>,
    rows: usize,
    inf: usize,
    outf: usize,
    out_shape: &[usize],
) -> ndarray::ArcArray<T, IxDyn> {
    let w2 = view2(w, outf, inf);
    // The bias is added as the GEMM stores its output; a strided bias (a view) is made
    // contiguous first, never skipped.
    let b = b.map(|b| crate::ops::same_dtype(b, x));
    let b = b.as_ref().map(|b| b.as_standard_layout());
    let bias = b.as_ref().map(|b| b.as_slice().unwrap_or_default());
    // A 2-D input is multiplied in whatever layout it has; others are flattened to rows.
    let out = if x.ndim() == 2 || x.is_standard_layout() {
        gemm_new(&view2(x, rows, inf), &w2.t(), Epilogue::bias(bias))
    } else {
        let x2 = x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((rows, inf))
            .unwrap_or_else(|e| unreachable!("linear input: {e}"));
        gemm_new(&x2.view(), &w2.t(), Epilogue::bias(bias))
    };
    out.into_shape_with_order(IxDyn(out_shape))
        .unwrap_or_else(|e| unreachable!("linear output: {e}"))
        .into_shared()
}
