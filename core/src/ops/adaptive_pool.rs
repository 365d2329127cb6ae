//! Adaptive average pooling: each output cell averages a window whose bounds PyTorch derives
//! from the sizes alone, forward and backward.

use crate::autograd::graph::record;
use crate::dtype::Float;
use crate::ops::kernel::from_vec;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};

/// Input rows (or columns) `start..end` averaged by output cell `i` of `out` cells over
/// `size` inputs: `floor(i·size/out) .. ceil((i+1)·size/out)`, as PyTorch's
/// `adaptive_avg_pool2d` (windows differ in size and may overlap).
fn window(i: usize, out: usize, size: usize) -> (usize, usize) {
    (i * size / out, ((i + 1) * size).div_ceil(out))
}

/// Calls `f(input_index, output_index, 1 / window_size)` for every input position of every
/// output cell of `[planes, h, w] → [planes, oh, ow]`.
fn each_window(
    [planes, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    mut f: impl FnMut(usize, usize, f64),
) {
    for p in 0..planes {
        for oy in 0..oh {
            let (y0, y1) = window(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = window(ox, ow, w);
                let scale = 1.0 / ((y1 - y0) * (x1 - x0)) as f64;
                let o = (p * oh + oy) * ow + ox;
                for y in y0..y1 {
                    for x in x0..x1 {
                        f((p * h + y) * w + x, o, scale);
                    }
                }
            }
        }
    }
}

fn forward<T: Float>(
    x: &ArcArray<T, IxDyn>,
    dims: [usize; 3],
    out: [usize; 2],
    shape: &[usize],
) -> ArcArray<T, IxDyn> {
    let x = x.as_standard_layout();
    let x = x
        .as_slice()
        .unwrap_or_else(|| unreachable!("standard layout"));
    let mut y = vec![T::zero(); dims[0] * out[0] * out[1]];
    each_window(dims, out, |i, o, scale| y[o] += x[i] * T::lit(scale));
    from_vec(shape, y)
}

fn backward<T: Float>(
    gy: &ArcArray<T, IxDyn>,
    dims: [usize; 3],
    out: [usize; 2],
    shape: &[usize],
) -> ArcArray<T, IxDyn> {
    let gy = gy.as_standard_layout();
    let gy = gy
        .as_slice()
        .unwrap_or_else(|| unreachable!("standard layout"));
    let mut gx = vec![T::zero(); dims.iter().product()];
    each_window(dims, out, |i, o, scale| gx[i] += gy[o] * T::lit(scale));
    from_vec(shape, gx)
}

#[cold]
#[inline(never)]
#[track_caller]
fn adaptive_pool_shape_error(x: &[usize], output_size: [usize; 2]) -> ! {
    panic!(
        "adaptive_avg_pool2d: input {x:?} must be [N, C, H, W] or [C, H, W] with H, W > 0, and \
         output_size {output_size:?} positive"
    )
}

impl Tensor {
    /// Adaptive average pooling to `output_size` `[oh, ow]`, as
    /// `torch.nn.functional.adaptive_avg_pool2d`: output cell `i` averages input rows
    /// `floor(i·H/oh) .. ceil((i+1)·H/oh)` (likewise columns).
    ///
    /// # Shapes
    /// `[N, C, H, W] → [N, C, oh, ow]` (or `[C, H, W] → [C, oh, ow]`).
    ///
    /// # Panics
    /// If the input is not 3-D or 4-D, has an empty plane, or an output size is zero.
    #[track_caller]
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Tensor {
        let xs = self.shape();
        let plane = xs
            .len()
            .checked_sub(2)
            .filter(|_| matches!(xs.len(), 3 | 4));
        let Some(plane) = plane.filter(|&p| xs[p] * xs[p + 1] > 0 && !output_size.contains(&0))
        else {
            adaptive_pool_shape_error(&xs, output_size)
        };
        let dims = [xs[..plane].iter().product(), xs[plane], xs[plane + 1]];
        let mut ys = xs.clone();
        ys[plane..].copy_from_slice(&output_size);
        let sx = self.storage();
        let out = crate::dispatch_float!(&sx, x => forward(x, dims, output_size, &ys),
            int => panic!("adaptive_avg_pool2d: expected a floating-point input, got {}", sx.dtype()));
        record("adaptive_avg_pool2d", out, &[self], || {
            move |gy: &Tensor, _: &[bool]| {
                let sg = gy.storage();
                let gx = crate::dispatch_float!(&sg, g => backward(g, dims, output_size, &xs),
                    int => unreachable!("gradients are floating point"));
                vec![Some(Tensor::from_storage(gx))]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn windows_follow_pytorch_bounds() {
        // H = 5, oh = 3: rows 0..2, 1..4, 3..5 (overlapping, sizes 2, 3, 2).
        assert_eq!(
            (0..3).map(|i| window(i, 3, 5)).collect::<Vec<_>>(),
            [(0, 2), (1, 4), (3, 5)]
        );
    }

    #[test]
    fn adaptive_avg_pool2d_backward_matches_finite_differences() {
        crate::random::manual_seed(4);
        for (xs, out) in [
            (vec![2, 2, 6, 4], [3, 2]),
            (vec![1, 2, 5, 7], [3, 4]),
            (vec![3, 3, 4], [1, 1]),
            (vec![1, 1, 3, 2], [5, 4]),
        ] {
            let x = Tensor::randn(&xs).double().requires_grad_(true);
            gradcheck(|v| v[0].adaptive_avg_pool2d(out), &[x])
                .unwrap_or_else(|e| panic!("{xs:?} → {out:?}: {e}"));
        }
    }

    #[test]
    fn global_pooling_is_the_mean() {
        let x = Tensor::from_vec((0..12).map(|v| v as f64).collect(), &[1, 2, 2, 3]);
        assert_eq!(x.adaptive_avg_pool2d([1, 1]).to_vec::<f64>(), [2.5, 8.5]);
    }

    #[test]
    #[should_panic(expected = "adaptive_avg_pool2d: input [4, 5] must be [N, C, H, W]")]
    fn adaptive_avg_pool2d_names_a_wrong_rank() {
        Tensor::zeros(&[4, 5]).adaptive_avg_pool2d([1, 1]);
    }
}
