//! `layer_norm` in functional form (`torch.nn.functional.layer_norm`).

use crate::tensor::Tensor;

/// Normalises over the trailing `normalized_shape` dimensions (mean 0, biased variance 1,
/// with `eps` added to the variance), then scales by `weight` and shifts by `bias` when
/// given (`F.layer_norm`; PyTorch's default `eps` is 1e-5). One op forward and backward,
/// not a chain of element-wise ones (see `ops/layer_norm.rs`).
///
/// # Shapes
/// `input [..., *normalized_shape]`, `weight` and `bias` `normalized_shape` → `input`'s.
///
/// # Panics
/// If the input does not end with `normalized_shape`, `weight` or `bias` has another shape,
/// or the dtypes differ.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, nn::functional::layer_norm};
/// let x = Tensor::from_vec(vec![1.0f64, 3.0, 10.0, 20.0], &[2, 2]);
/// let y = layer_norm(&x, &[2], None, None, 0.0);
/// assert_eq!(y.to_vec::<f64>(), [-1.0, 1.0, -1.0, 1.0]);
/// ```
#[track_caller]
pub fn layer_norm(
    input: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Tensor {
    crate::ops::layer_norm::layer_norm(input, normalized_shape, weight, bias, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape).requires_grad_(true)
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let x = t(
            &[
                0.3, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 1.3, -2.1, 0.05, 0.6, -0.8,
            ],
            &[2, 3, 2],
        );
        let w = t(&[0.5, -1.5, 2.0, 0.8, 1.2, -0.3], &[3, 2]);
        let b = t(&[0.1, 0.2, -0.3, 0.4, 0.0, 0.6], &[3, 2]);
        // x is used twice, so its gradient accumulates.
        gradcheck(
            |v| &layer_norm(&v[0], &[3, 2], Some(&v[1]), Some(&v[2]), 1e-5) * &v[0],
            &[x.clone(), w.clone(), b],
        )
        .unwrap();
        gradcheck(
            |v| {
                layer_norm(
                    &v[0],
                    &[2],
                    Some(&v[1].narrow(0, 0, 1).reshape(&[2])),
                    None,
                    0.1,
                )
            },
            &[x.clone(), w],
        )
        .unwrap();
        gradcheck(|v| layer_norm(&v[0], &[2], None, None, 1e-5), &[x]).unwrap();
        // Rows of 37: the row sums run in 16 lanes plus a tail.
        crate::manual_seed(8);
        let leaf = |shape: &[usize]| Tensor::randn(shape).double().requires_grad_(true);
        let (x, w, b) = (leaf(&[3, 37]), leaf(&[37]), leaf(&[37]));
        gradcheck(
            |v| &layer_norm(&v[0], &[37], Some(&v[1]), Some(&v[2]), 1e-5) * &v[0],
            &[x, w, b],
        )
        .unwrap();
    }

    #[test]
    fn layer_norm_splits_large_inputs_over_threads_with_the_same_result() {
        // 4096 rows of 128: past the two-thread threshold; compared with the composite.
        let x = Tensor::randn(&[4096, 128]).double().requires_grad_(true);
        let w = Tensor::randn(&[128]).double().requires_grad_(true);
        let b = Tensor::randn(&[128]).double().requires_grad_(true);
        let g = Tensor::randn(&[4096, 128]).double();
        let fused = layer_norm(&x, &[128], Some(&w), Some(&b), 1e-5);
        fused.backward_with(&g);
        let grads: Vec<Vec<f64>> = [&x, &w, &b]
            .iter()
            .map(|t| t.grad().unwrap().to_vec())
            .collect();
        [&x, &w, &b].iter().for_each(|t| t.zero_grad());
        let mean = x.mean_dim(-1, true);
        let c = &x - &mean;
        let var = (&c * &c).mean_dim(-1, true);
        let composite = &(&(&c / &var.add_scalar(1e-5).sqrt()) * &w) + &b;
        composite.backward_with(&g);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-9);
        assert!(close(&fused.to_vec::<f64>(), &composite.to_vec::<f64>()));
        for (t, want) in [&x, &w, &b].iter().zip(&grads) {
            assert!(close(&t.grad().unwrap().to_vec::<f64>(), want));
        }
    }
}
