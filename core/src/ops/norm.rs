//! Vector norms over all elements or along dimensions (`torch.linalg.vector_norm`).

use crate::autograd::graph::{Saved, record};
use crate::autograd::no_grad;
use crate::tensor::Tensor;

impl Tensor {
    /// The Euclidean (2-) norm of all elements, as a 0-dimensional tensor (PyTorch's
    /// `x.norm()`).
    #[track_caller]
    pub fn norm(&self) -> Tensor {
        self.vector_norm(2.0, None, false)
    }

    /// `(Σ |x|^ord)^(1/ord)` over `dim` (`None`: all elements), as
    /// `torch.linalg.vector_norm(x, ord, dim, keepdim)`; `ord = f64::INFINITY` gives the
    /// largest absolute value. The 2-norm's gradient `x / ‖x‖` is taken as 0 where the norm
    /// is 0, as in PyTorch.
    ///
    /// # Panics
    /// If `ord` is not positive, or a dimension is out of range.
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::Tensor;
    /// let x = Tensor::from_vec(vec![3.0f32, 4.0, 6.0, 8.0], &[2, 2]);
    /// assert_eq!(x.vector_norm(2.0, Some(&[1]), false).to_vec::<f32>(), [5.0, 10.0]);
    /// ```
    #[track_caller]
    pub fn vector_norm(&self, ord: f64, dim: Option<&[isize]>, keepdim: bool) -> Tensor {
        let all: Vec<isize> = (0..self.dim() as isize).collect();
        let dims = dim.unwrap_or(&all);
        if ord.is_nan() || ord <= 0.0 {
            panic!(
                "vector_norm: ord must be positive (or infinity), got {ord} (shape {:?})",
                self.shape()
            );
        }
        if ord == 2.0 {
            return euclidean(self, dims, keepdim);
        }
        if ord.is_infinite() {
            let mut m = self.abs();
            for &d in dims {
                m = m.max_dim(d, true).0;
            }
            return if keepdim { m } else { m.sum_dims(dims, false) };
        }
        self.abs().pow(ord).sum_dims(dims, keepdim).pow(1.0 / ord)
    }
}

/// The 2-norm with its closed-form gradient `g · x / ‖x‖` (0 where `‖x‖ = 0`): the
/// composite `sqrt(Σ x²)` would give NaN there.
#[track_caller]
fn euclidean(x: &Tensor, dims: &[isize], keepdim: bool) -> Tensor {
    let kept = no_grad(|| (x * x).sum_dims(dims, true).sqrt());
    let out_shape = if keepdim {
        kept.shape()
    } else {
        no_grad(|| kept.sum_dims(dims, false)).shape()
    };
    let out = kept.reshape_usize(&out_shape).storage();
    record("vector_norm", out, &[x], || {
        let input = Saved::new(x, "vector_norm");
        let norm = kept.clone();
        move |g: &Tensor, _: &[bool]| {
            let g = g.reshape_usize(&norm.shape());
            let scale = (&g / &norm).masked_fill(&norm.eq_scalar(0.0), 0.0);
            vec![Some(&input.get() * &scale)]
        }
    })
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
    fn norms_backward_match_finite_differences() {
        gradcheck(|v| v[0].vector_norm(2.0, Some(&[1]), false), &[x()]).unwrap();
        gradcheck(|v| &v[0].norm() * &v[0], &[x()]).unwrap();
        gradcheck(|v| v[0].vector_norm(3.0, Some(&[0]), true), &[x()]).unwrap();
        gradcheck(|v| v[0].vector_norm(f64::INFINITY, None, false), &[x()]).unwrap();
    }

    #[test]
    fn the_gradient_of_a_zero_norm_is_zero() {
        let z = Tensor::zeros(&[3]).double().requires_grad_(true);
        z.norm().backward();
        assert_eq!(z.grad().unwrap().to_vec::<f64>(), [0.0, 0.0, 0.0]);
    }
}
