//! Reductions: sum, mean, max, var, std and logsumexp over all elements or along
//! dimensions, and argmax. var, std and logsumexp are built from the others.

use crate::autograd::graph::record;
use crate::dtype::{DType, Float, Storage};
use crate::ops::kernel;
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn};

#[cold]
#[inline(never)]
#[track_caller]
fn int_error(op: &str, t: &Tensor) -> ! {
    panic!(
        "{op}: needs a floating-point tensor, got int64 {:?}; convert with .float()",
        t.shape()
    )
}

/// Sorted, de-duplicated dimension indices.
#[track_caller]
fn normalize_dims(op: &str, dims: &[isize], ndim: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        out.push(normalize_dim(op, d, ndim));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The shape after reducing `dims` (removed, or kept as 1).
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (dims.contains(&i), keepdim) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn reshape_storage(s: Storage, shape: &[usize]) -> Storage {
    crate::dispatch_float!(s, a => a.into_shape_with_order(IxDyn(shape))
        .unwrap_or_else(|e| unreachable!("reduction result to {shape:?}: {e}")),
        int => unreachable!("reductions are over float tensors"))
}

impl Tensor {
    /// The sum of all elements, as a 0-dimensional tensor.
    #[track_caller]
    pub fn sum(&self) -> Tensor {
        let all: Vec<isize> = (0..self.dim() as isize).collect();
        self.sum_dims(&all, false)
    }

    /// The sum along `dim`; `keepdim` keeps it as a dimension of size 1.
    #[track_caller]
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Tensor {
        self.sum_dims(&[dim], keepdim)
    }

    /// The sum over several dimensions at once.
    #[track_caller]
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let shape = self.shape();
        let dims = normalize_dims("sum", dims, shape.len());
        let out_shape = reduced_shape(&shape, &dims, keepdim);
        let out = crate::dispatch_float!(self.storage(), a => kernel::sum_axes_keepdim(&a, &dims),
            int => int_error("sum", self));
        let out = reshape_storage(out, &out_shape);
        record("sum", out, &[self], || {
            let kept = reduced_shape(&shape, &dims, true);
            move |g: &Tensor, _: &[bool]| vec![Some(g.reshape_usize(&kept).expand(&shape))]
        })
    }

    /// The mean of all elements, as a 0-dimensional tensor.
    #[track_caller]
    pub fn mean(&self) -> Tensor {
        let n = self.numel().max(1);
        self.sum().div_scalar(n as f64)
    }

    /// The mean along `dim`.
    #[track_caller]
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Tensor {
        self.mean_dims(&[dim], keepdim)
    }

    /// The mean over several dimensions at once.
    #[track_caller]
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let shape = self.shape();
        let count: usize = normalize_dims("mean", dims, shape.len())
            .iter()
            .map(|&d| shape[d])
            .product();
        self.sum_dims(dims, keepdim).div_scalar(count.max(1) as f64)
    }

    /// The largest values along `dim` and their positions (i64), like `torch.max(x, dim)`.
    /// The gradient flows to the position of each maximum.
    ///
    /// # Panics
    /// If the dimension is empty.
    #[track_caller]
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extreme_dim("max_dim", dim, keepdim, |a, b| a > b)
    }

    /// The smallest values along `dim` and their positions.
    #[track_caller]
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> (Tensor, Tensor) {
        self.extreme_dim("min_dim", dim, keepdim, |a, b| a < b)
    }

    /// The positions of the largest values along `dim`, as i64.
    #[track_caller]
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Tensor {
        let t = if self.dtype().is_float() {
            self.clone()
        } else {
            self.double()
        };
        crate::autograd::no_grad(|| t.max_dim(dim, keepdim).1)
    }

    /// The largest element, as a 0-dimensional tensor.
    #[track_caller]
    pub fn max(&self) -> Tensor {
        self.reshape(&[-1]).max_dim(0, false).0
    }

    /// The smallest element, as a 0-dimensional tensor.
    #[track_caller]
    pub fn min(&self) -> Tensor {
        self.reshape(&[-1]).min_dim(0, false).0
    }

    #[track_caller]
    fn extreme_dim(
        &self,
        op: &'static str,
        dim: isize,
        keepdim: bool,
        better: fn(f64, f64) -> bool,
    ) -> (Tensor, Tensor) {
        let shape = self.shape();
        let d = normalize_dim(op, dim, shape.len());
        if shape.is_empty() {
            return (self.clone(), Tensor::from_vec(vec![0i64], &[]));
        }
        if shape[d] == 0 {
            panic!("{op}: cannot reduce the empty dimension {dim} of shape {shape:?}");
        }
        let (values, indices) = match self.storage() {
            Storage::F32(a) => extreme_along(&a, d, better),
            Storage::F64(a) => extreme_along(&a, d, better),
            Storage::I64(_) => int_error(op, self),
        };
        let out_shape = reduced_shape(&shape, &[d], keepdim);
        let values = reshape_storage(values, &out_shape);
        let idx_tensor = Tensor::from_storage(Storage::I64(
            indices
                .into_shape_with_order(IxDyn(&out_shape))
                .unwrap_or_else(|e| unreachable!("{op} indices: {e}")),
        ));
        let saved_idx = idx_tensor.clone();
        let values = record(op, values, &[self], || {
            let kept = reduced_shape(&shape, &[d], true);
            move |g: &Tensor, _: &[bool]| {
                let g = g.reshape_usize(&kept);
                let idx = saved_idx.reshape_usize(&kept);
                vec![Some(scatter_along(&g, &idx, d, &shape))]
            }
        });
        (values, idx_tensor)
    }
}

/// Best value and its index along axis `d`, keeping `d` as size 1.
fn extreme_along<T: Float>(
    a: &ArcArray<T, IxDyn>,
    d: usize,
    better: fn(f64, f64) -> bool,
) -> (Storage, ArcArray<i64, IxDyn>) {
    let mut kept = a.shape().to_vec();
    kept[d] = 1;
    let mut values = Vec::with_capacity(a.len() / a.shape()[d]);
    let mut indices = Vec::with_capacity(values.capacity());
    for lane in a.lanes(Axis(d)) {
        let mut best = 0usize;
        let mut best_v = lane[0];
        for (i, &v) in lane.iter().enumerate().skip(1) {
            // NaN propagates, as in PyTorch.
            if better(v.to_f64(), best_v.to_f64()) || (v.is_nan() && !best_v.is_nan()) {
                best = i;
                best_v = v;
            }
        }
        values.push(best_v);
        indices.push(best as i64);
    }
    // `lanes` visits the other axes in row-major order, which is the kept shape's order.
    let values = kernel::from_vec(&kept, values);
    let indices = ArcArray::from_shape_vec(IxDyn(&kept), indices)
        .unwrap_or_else(|e| unreachable!("indices of {kept:?}: {e}"));
    (T::into_storage(values), indices)
}

/// Zeros of `shape` with `g` placed at `idx` along axis `d` (`g`, `idx` have `d` of size 1).
pub(crate) fn scatter_along(g: &Tensor, idx: &Tensor, d: usize, shape: &[usize]) -> Tensor {
    let idx = idx.to_array::<i64>();
    let out = crate::dispatch_float!(g.storage(), g => {
        let mut out = ndarray::ArrayD::zeros(IxDyn(shape));
        for ((mut lane, gv), &i) in out.lanes_mut(Axis(d)).into_iter().zip(g.iter()).zip(idx.iter()) {
            lane[i as usize] = *gv;
        }
        out.into_shared()
    }, int => unreachable!("gradients are floating point"));
    Tensor::from_storage(out)
}

impl Tensor {
    /// The variance of all elements with Bessel's correction (PyTorch's `x.var()`).
    #[track_caller]
    pub fn var(&self) -> Tensor {
        self.var_dims(&self.all_dims(), 1.0, false)
    }

    /// The variance along `dim`: the summed squared deviations from the mean divided by
    /// `N - correction` (`correction = 1` is the unbiased estimate, PyTorch's default;
    /// 0 the biased one). As in PyTorch, `N <= correction` gives inf or NaN.
    #[track_caller]
    pub fn var_dim(&self, dim: isize, correction: f64, keepdim: bool) -> Tensor {
        self.var_dims(&[dim], correction, keepdim)
    }

    /// The variance over several dimensions at once (see [`var_dim`](Tensor::var_dim)).
    #[track_caller]
    pub fn var_dims(&self, dims: &[isize], correction: f64, keepdim: bool) -> Tensor {
        let shape = self.shape();
        let count: usize = normalize_dims("var", dims, shape.len())
            .iter()
            .map(|&d| shape[d])
            .product();
        let centred = self - &self.mean_dims(dims, true);
        let dof = (count as f64 - correction).max(0.0);
        (&centred * &centred)
            .sum_dims(dims, keepdim)
            .div_scalar(dof)
    }

    /// The standard deviation of all elements with Bessel's correction (PyTorch's
    /// `x.std()`).
    #[track_caller]
    pub fn std(&self) -> Tensor {
        self.var().sqrt()
    }

    /// The standard deviation along `dim`, `sqrt` of [`var_dim`](Tensor::var_dim).
    #[track_caller]
    pub fn std_dim(&self, dim: isize, correction: f64, keepdim: bool) -> Tensor {
        self.var_dim(dim, correction, keepdim).sqrt()
    }

    /// The standard deviation over several dimensions at once.
    #[track_caller]
    pub fn std_dims(&self, dims: &[isize], correction: f64, keepdim: bool) -> Tensor {
        self.var_dims(dims, correction, keepdim).sqrt()
    }

    /// `log Σ exp(x)` along `dim`, computed without overflow: the lane maximum `m` is taken
    /// out first, `m + log Σ exp(x - m)` (`torch.logsumexp`). Its gradient is the softmax.
    #[track_caller]
    pub fn logsumexp(&self, dim: isize, keepdim: bool) -> Tensor {
        self.logsumexp_dims(&[dim], keepdim)
    }

    /// [`logsumexp`](Tensor::logsumexp) over several dimensions at once.
    #[track_caller]
    pub fn logsumexp_dims(&self, dims: &[isize], keepdim: bool) -> Tensor {
        let shape = self.shape();
        let axes = normalize_dims("logsumexp", dims, shape.len());
        if !self.dtype().is_float() {
            int_error("logsumexp", self);
        }
        // The shift is a constant: the result does not depend on it, only its rounding does.
        let max = crate::autograd::no_grad(|| {
            let mut m = self.detach();
            for &d in &axes {
                m = m.max_dim(d as isize, true).0;
            }
            let finite = crate::dispatch_float!(m.storage(),
                a => kernel::map(&a, |v| if v.is_finite() { v } else { num_traits::Zero::zero() }),
                int => unreachable!("checked to be float"));
            Tensor::from_storage(finite)
        });
        let dims: Vec<isize> = axes.iter().map(|&d| d as isize).collect();
        let out = (self - &max).exp().sum_dims(&dims, true).log() + max;
        out.reshape_usize(&reduced_shape(&shape, &axes, keepdim))
    }

    /// Every dimension index, for the "all elements" forms.
    fn all_dims(&self) -> Vec<isize> {
        (0..self.dim() as isize).collect()
    }
}

impl Tensor {
    /// The dtype as a float type suitable for a mask of this tensor's comparisons.
    pub(crate) fn mask_dtype(&self) -> DType {
        match self.dtype() {
            DType::I64 => DType::F32,
            d => d,
        }
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
        Tensor::from_vec(v.to_vec(), &[2, 3, 2]).requires_grad_(true)
    }

    #[test]
    fn var_divides_by_n_minus_correction() {
        let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[4]);
        // squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
        assert!((t.var().item() - 5.0 / 3.0).abs() < 1e-15);
        assert!((t.var_dim(0, 0.0, false).item() - 5.0 / 4.0).abs() < 1e-15);
        assert!((t.std_dims(&[0], 1.0, true).item() - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn var_and_std_backward_match_finite_differences() {
        gradcheck(|v| v[0].var_dims(&[0, 2], 1.0, false), &[x()]).unwrap();
        gradcheck(|v| v[0].std_dim(-1, 0.0, true), &[x()]).unwrap();
    }

    #[test]
    fn logsumexp_is_stable_and_its_gradient_is_the_softmax() {
        let big = Tensor::from_vec(vec![1000.0f64, 1000.0], &[2]);
        assert!((big.logsumexp(0, false).item() - (1000.0 + 2f64.ln())).abs() < 1e-12);
        gradcheck(|v| v[0].logsumexp_dims(&[0, 2], true), &[x()]).unwrap();
    }
}
