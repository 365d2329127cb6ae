//! gather: the values at given indices along one dimension (PyTorch's `torch.gather`), the
//! primitive behind `nll_loss` and `cross_entropy` picking each sample's target class.

use crate::autograd::graph::record;
use crate::dtype::{DType, Float};
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Dimension, IxDyn};

#[cold]
#[inline(never)]
#[track_caller]
fn gather_shape_error(shape: &[usize], index: &[usize], dim: isize) -> ! {
    panic!(
        "gather: index of shape {index:?} does not fit input of shape {shape:?} along dim {dim}: \
         both need the same number of dimensions, and the index may not be larger in any \
         dimension other than {dim}"
    )
}

/// For every element of the index (row-major), the multi-index of the input element it picks.
#[track_caller]
fn source_positions(shape: &[usize], index: &Tensor, d: usize, dim: isize) -> Vec<Vec<usize>> {
    let values = index.to_array::<i64>();
    values
        .indexed_iter()
        .map(|(pos, &i)| {
            if i < 0 || i as usize >= shape[d] {
                panic!(
                    "gather: index {i} is out of bounds for dimension {dim} of size {} (input \
                     shape {shape:?})",
                    shape[d]
                );
            }
            let mut src = pos.slice().to_vec();
            src[d] = i as usize;
            src
        })
        .collect()
}

fn pick<T: Float>(
    a: &ArcArray<T, IxDyn>,
    sources: &[Vec<usize>],
    out: &[usize],
) -> ArcArray<T, IxDyn> {
    let values = sources.iter().map(|s| a[s.as_slice()]).collect();
    crate::ops::kernel::from_vec(out, values)
}

/// The backward of gather: zeros of the input's shape with `g` added at the picked positions
/// (an index that appears twice accumulates).
fn scatter_add<T: Float>(
    g: &ArcArray<T, IxDyn>,
    sources: &[Vec<usize>],
    shape: &[usize],
) -> ArcArray<T, IxDyn> {
    let mut out = ArcArray::<T, IxDyn>::zeros(IxDyn(shape));
    for (s, &v) in sources.iter().zip(g.iter()) {
        out[s.as_slice()] += v;
    }
    out
}

impl Tensor {
    /// `out[i][j] = self[i][index[i][j]]` for `dim = 1`, and likewise for any dimension:
    /// the output has the index's shape, and each index value picks along `dim`.
    ///
    /// # Shapes
    /// `index` has as many dimensions as `self` and is no larger in any dimension but `dim`.
    ///
    /// # Panics
    /// If `index` is not i64, does not fit the shape, or holds a value out of bounds.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let idx = Tensor::from_vec(vec![1i64, 0], &[2, 1]);
    /// assert_eq!(x.gather(1, &idx).to_vec::<f32>(), [2.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor) -> Tensor {
        let shape = self.shape();
        let index_shape = index.shape();
        let d = normalize_dim("gather", dim, shape.len());
        if index.dtype() != DType::I64 {
            panic!(
                "gather: index must be int64, got {} {index_shape:?}",
                index.dtype()
            );
        }
        let fits = index_shape.len() == shape.len()
            && (0..shape.len()).all(|k| k == d || index_shape[k] <= shape[k]);
        if !fits {
            gather_shape_error(&shape, &index_shape, dim);
        }
        let sources = source_positions(&shape, index, d, dim);
        let out = crate::dispatch_float!(self.storage(), a => pick(&a, &sources, &index_shape),
            int => panic!("gather: needs a floating-point input, got int64 {shape:?}; convert with .float()"));
        record("gather", out, &[self], || {
            move |g: &Tensor, _: &[bool]| {
                let grad = crate::dispatch_float!(g.storage(), g => scatter_add(&g, &sources, &shape),
                    int => unreachable!("gradients are floating point"));
                vec![Some(Tensor::from_storage(grad))]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    #[test]
    fn gather_picks_along_dim_0_and_1() {
        let x = Tensor::from_vec((0..6).map(|v| v as f64).collect(), &[2, 3]);
        let rows = Tensor::from_vec(vec![2i64, 0, 1, 1], &[2, 2]);
        assert_eq!(x.gather(1, &rows).to_vec::<f64>(), [2.0, 0.0, 4.0, 4.0]);
        let cols = Tensor::from_vec(vec![1i64, 0, 1], &[1, 3]);
        assert_eq!(x.gather(0, &cols).to_vec::<f64>(), [3.0, 1.0, 5.0]);
    }

    #[test]
    fn gather_backward_matches_finite_differences_with_repeated_indices() {
        let x =
            Tensor::from_vec(vec![0.3f64, -1.2, 2.0, 0.7, 1.1, -0.4], &[2, 3]).requires_grad_(true);
        // Row 0 picks column 2 twice, so its gradient accumulates.
        let idx = Tensor::from_vec(vec![2i64, 2, 0, 1], &[2, 2]);
        gradcheck(
            |v| (&v[0].gather(1, &idx) * &v[0].gather(1, &idx)).sum(),
            &[x],
        )
        .unwrap();
    }

    #[test]
    #[should_panic(expected = "gather: index 3 is out of bounds for dimension 1 of size 3")]
    fn gather_rejects_out_of_range_index() {
        let x = Tensor::zeros(&[2, 3]);
        x.gather(1, &Tensor::from_vec(vec![3i64, 0], &[2, 1]));
    }
}
