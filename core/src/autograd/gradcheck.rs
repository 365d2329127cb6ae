//! Finite-difference gradient checking, with the defaults of PyTorch's
//! `torch.autograd.gradcheck` (eps 1e-6, atol 1e-5, rtol 1e-3).

use crate::autograd::no_grad;
use crate::dtype::DType;
use crate::tensor::Tensor;
use std::fmt;

/// Tolerances and step for [`gradcheck_with`].
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// The finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of the numerical value).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The first Jacobian entry where backward and finite differences disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckError {
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// Flat index of the input element.
    pub input_element: usize,
    /// Flat index of the output element.
    pub output_element: usize,
    /// d output / d input from backward.
    pub analytical: f64,
    /// d output / d input from central differences.
    pub numerical: f64,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck: Jacobian mismatch for input {} element {} and output element {}: \
             backward gives {}, finite differences give {}",
            self.input, self.input_element, self.output_element, self.analytical, self.numerical
        )
    }
}

impl std::error::Error for GradcheckError {}

/// Checks the gradients backward computes for `f` at `inputs` against central finite
/// differences, for every input that requires grad, with PyTorch's default tolerances.
///
/// `f` must be deterministic. Inputs should be f64: in f32 the finite differences are too
/// coarse to mean anything.
///
/// # Panics
/// If an input that requires grad is not f64.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::autograd::gradcheck;
/// use torchlet::tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], &[3]).requires_grad_(true);
/// // x is used twice, so its gradient accumulates from both uses.
/// gradcheck(|v| &(&v[0] * &v[0]) + &v[0].exp(), &[x]).unwrap();
/// ```
#[track_caller]
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) -> Result<(), GradcheckError> {
    gradcheck_with(f, inputs, GradcheckOptions::default())
}

/// [`gradcheck`] with chosen tolerances.
#[track_caller]
pub fn gradcheck_with(
    f: impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    options: GradcheckOptions,
) -> Result<(), GradcheckError> {
    for (i, x) in inputs.iter().enumerate() {
        if x.requires_grad() && x.dtype() != DType::F64 {
            panic!(
                "gradcheck: input {i} requires grad but is {}; use f64 inputs",
                x.dtype()
            );
        }
    }
    let values: Vec<Vec<f64>> = inputs.iter().map(|x| x.to_vec::<f64>()).collect();
    let out_len = no_grad(|| f(&leaves(inputs, &values, None))).numel();
    let analytical = analytical_jacobian(&f, inputs, &values, out_len);
    for (i, x) in inputs.iter().enumerate() {
        if !x.requires_grad() {
            continue;
        }
        for j in 0..values[i].len() {
            let column = numerical_column(&f, inputs, &values, i, j, options.eps);
            for (o, (&numerical, row)) in column.iter().zip(&analytical[i]).enumerate() {
                let a = row[j];
                if (a - numerical).abs() > options.atol + options.rtol * numerical.abs() {
                    return Err(GradcheckError {
                        input: i,
                        input_element: j,
                        output_element: o,
                        analytical: a,
                        numerical,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Fresh leaf copies of the inputs (keeping `requires_grad`), with one element of one input
/// replaced when `perturb` is `(input, element, value)`.
fn leaves(
    inputs: &[Tensor],
    values: &[Vec<f64>],
    perturb: Option<(usize, usize, f64)>,
) -> Vec<Tensor> {
    inputs
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (x, v))| {
            let mut v = v.clone();
            if let Some((pi, pj, value)) = perturb
                && pi == i
            {
                v[pj] = value;
            }
            let t = Tensor::from_vec(v, &x.shape()).to_dtype(x.dtype());
            if x.requires_grad() {
                t.requires_grad_(true)
            } else {
                t
            }
        })
        .collect()
}

/// `jac[input][output][element]` from one backward per output element.
fn analytical_jacobian(
    f: &impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    values: &[Vec<f64>],
    out_len: usize,
) -> Vec<Vec<Vec<f64>>> {
    let mut jac: Vec<Vec<Vec<f64>>> = values
        .iter()
        .map(|v| vec![vec![0.0; v.len()]; out_len])
        .collect();
    for o in 0..out_len {
        let xs = leaves(inputs, values, None);
        let y = f(&xs);
        if !y.requires_grad() {
            break;
        }
        let mut seed = vec![0.0; out_len];
        seed[o] = 1.0;
        let seed = Tensor::from_vec(seed, &y.shape()).to_dtype(y.dtype());
        y.backward_with(&seed);
        for (i, x) in xs.iter().enumerate() {
            if let Some(g) = x.grad() {
                jac[i][o] = g.to_vec::<f64>();
            }
        }
    }
    jac
}

/// d f / d input[i][j] for every output element, by central differences.
fn numerical_column(
    f: &impl Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    values: &[Vec<f64>],
    i: usize,
    j: usize,
    eps: f64,
) -> Vec<f64> {
    let x0 = values[i][j];
    let plus = no_grad(|| f(&leaves(inputs, values, Some((i, j, x0 + eps))))).to_vec::<f64>();
    let minus = no_grad(|| f(&leaves(inputs, values, Some((i, j, x0 - eps))))).to_vec::<f64>();
    plus.iter()
        .zip(&minus)
        .map(|(p, m)| (p - m) / (2.0 * eps))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_backward_is_caught() {
        // `detach` hides half of the dependency from backward, so the check must fail.
        let x = Tensor::from_vec(vec![0.5f64, 1.5], &[2]).requires_grad_(true);
        let err = gradcheck(|v| &v[0] * &v[0].detach(), &[x]).unwrap_err();
        assert_eq!(err.input, 0);
        assert!((err.numerical - 2.0 * 0.5).abs() < 1e-6 && (err.analytical - 0.5).abs() < 1e-12);
    }
}
