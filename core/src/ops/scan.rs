//! Running sums along a dimension (`cumsum`).

use crate::autograd::graph::record;
use crate::dtype::Storage;
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn};
use std::ops::AddAssign;

/// Running sums along `d`, from the end when `reverse` (the backward of a forward scan).
fn scan<T: Copy + AddAssign>(
    a: &ArcArray<T, IxDyn>,
    d: usize,
    reverse: bool,
) -> ArcArray<T, IxDyn> {
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(Axis(d)) {
        let n = lane.len();
        for k in 1..n {
            let (prev, cur) = if reverse {
                (n - k, n - 1 - k)
            } else {
                (k - 1, k)
            };
            let p = lane[prev];
            lane[cur] += p;
        }
    }
    out.into_shared()
}

fn scan_storage(s: Storage, d: usize, reverse: bool) -> Storage {
    match s {
        Storage::F32(a) => Storage::F32(scan(&a, d, reverse)),
        Storage::F64(a) => Storage::F64(scan(&a, d, reverse)),
        Storage::I64(a) => Storage::I64(scan(&a, d, reverse)),
    }
}

impl Tensor {
    /// Running sums along `dim`: `out[i] = x[0] + … + x[i]` (`torch.cumsum`). Works on i64
    /// tensors too (positions from a padding mask, for example). The gradient is the running
    /// sum of the upstream gradient taken from the end.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let x = Tensor::from_vec(vec![1i64, 0, 1, 1], &[4]);
    /// assert_eq!(x.cumsum(0).to_vec::<i64>(), [1, 1, 2, 3]);
    /// ```
    #[track_caller]
    pub fn cumsum(&self, dim: isize) -> Tensor {
        let d = normalize_dim("cumsum", dim, self.dim());
        if self.dim() == 0 {
            return self.contiguous_copy();
        }
        let out = scan_storage(self.storage(), d, false);
        record("cumsum", out, &[self], || {
            move |g: &Tensor, _: &[bool]| {
                vec![Some(Tensor::from_storage(scan_storage(
                    g.storage(),
                    d,
                    true,
                )))]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    #[test]
    fn cumsum_backward_matches_finite_differences() {
        let x =
            Tensor::from_vec(vec![0.3f64, -1.2, 2.0, 0.7, 1.1, -0.4], &[2, 3]).requires_grad_(true);
        gradcheck(|v| &v[0].cumsum(1) * &v[0], std::slice::from_ref(&x)).unwrap();
        gradcheck(|v| v[0].cumsum(0), &[x]).unwrap();
    }
}
