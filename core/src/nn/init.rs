//! Weight initialisation with PyTorch's default formulas (`torch.nn.init`).
//!
//! Unlike PyTorch, the random stream is torchlet's own (see `random.rs`): the same seed
//! gives the same weights in every torchlet run, not the weights PyTorch would draw.

use crate::autograd::no_grad;
use crate::tensor::Tensor;

/// `fan_in` and `fan_out` of a weight: `[out, in, k…]` → `(in·∏k, out·∏k)`.
///
/// # Panics
/// If the weight has fewer than 2 dimensions.
#[track_caller]
pub fn calculate_fan_in_and_fan_out(shape: &[usize]) -> (usize, usize) {
    if shape.len() < 2 {
        panic!(
            "calculate_fan_in_and_fan_out: fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions, got {shape:?}"
        );
    }
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

/// Fills `t` from `U(a, b)`, in place.
pub fn uniform_(t: &Tensor, a: f64, b: f64) {
    no_grad(|| t.uniform_(a, b));
}

/// Fills `t` from `N(mean, std²)`, in place.
pub fn normal_(t: &Tensor, mean: f64, std: f64) {
    no_grad(|| t.normal_(mean, std));
}

/// Fills `t` with `value`, in place.
pub fn constant_(t: &Tensor, value: f64) {
    no_grad(|| t.fill_(value));
}

/// Kaiming (He) uniform initialisation for a leaky ReLU of slope `a`, fan-in mode:
/// `U(-bound, bound)` with `bound = sqrt(6 / ((1 + a²) · fan_in))`.
///
/// Linear and Conv2d weights use `a = sqrt(5)`, which gives `bound = 1 / sqrt(fan_in)`.
#[track_caller]
pub fn kaiming_uniform_(t: &Tensor, a: f64) {
    let (fan_in, _) = calculate_fan_in_and_fan_out(&t.shape());
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let bound = gain * (3.0 / fan_in.max(1) as f64).sqrt();
    uniform_(t, -bound, bound);
}

/// Xavier (Glorot) uniform initialisation:
/// `U(-b, b)` with `b = gain · sqrt(6 / (fan_in + fan_out))`.
#[track_caller]
pub fn xavier_uniform_(t: &Tensor, gain: f64) {
    let (fan_in, fan_out) = calculate_fan_in_and_fan_out(&t.shape());
    let bound = gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    uniform_(t, -bound, bound);
}

/// The weight and bias of Linear and Conv2d as PyTorch's `reset_parameters` draws them:
/// Kaiming uniform with `a = sqrt(5)` for the weight, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
/// for the bias.
pub(crate) fn default_weight_and_bias(shape: &[usize], bias: bool) -> (Tensor, Option<Tensor>) {
    let weight = Tensor::zeros(shape);
    kaiming_uniform_(&weight, 5f64.sqrt());
    let bias = bias.then(|| {
        let (fan_in, _) = calculate_fan_in_and_fan_out(shape);
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let b = Tensor::zeros(&shape[..1]);
        uniform_(&b, -bound, bound);
        b
    });
    (weight, bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_default_init_stays_within_one_over_sqrt_fan_in() {
        let (w, b) = default_weight_and_bias(&[64, 100], true);
        let bound = 0.1 + 1e-6;
        assert!(w.to_vec::<f32>().iter().all(|v| (*v as f64).abs() <= bound));
        let b = b.unwrap().to_vec::<f32>();
        assert!(b.iter().all(|v| (*v as f64).abs() <= bound));
        assert!(w.to_vec::<f32>().iter().any(|v| v.abs() > 0.05));
    }

    #[test]
    fn fans_count_the_receptive_field() {
        assert_eq!(calculate_fan_in_and_fan_out(&[4, 2, 3, 3]), (18, 36));
    }
}
