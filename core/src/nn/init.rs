//! Weight initialisation with PyTorch's formulas (`torch.nn.init`), evaluated in the same
//! order so that the bounds are the same doubles, drawn from the global generator, which
//! reproduces PyTorch's (see `random.rs`): after the same `manual_seed`, the same calls give
//! the same values as PyTorch.

use crate::autograd::no_grad;
use crate::nn::parameter::Parameter;
use crate::random::InitDraws;
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

/// The recommended gain of `torch.nn.init.calculate_gain` for `"linear"`, `"conv*"`,
/// `"sigmoid"` (1), `"tanh"` (5/3), `"relu"` (√2), `"leaky_relu"` (√(2 / (1 + a²)), `a`
/// the negative slope, 0.01 when `None`) and `"selu"` (3/4).
///
/// # Panics
/// For another nonlinearity.
#[track_caller]
pub fn calculate_gain(nonlinearity: &str, param: Option<f64>) -> f64 {
    match nonlinearity {
        "linear" | "conv1d" | "conv2d" | "conv3d" | "conv_transpose1d" | "conv_transpose2d"
        | "conv_transpose3d" | "sigmoid" => 1.0,
        "tanh" => 5.0 / 3.0,
        "relu" => 2f64.sqrt(),
        "leaky_relu" => {
            let a = param.unwrap_or(0.01);
            (2.0 / (1.0 + a * a)).sqrt()
        }
        "selu" => 3.0 / 4.0,
        other => panic!(
            "calculate_gain: unsupported nonlinearity {other:?}; expected linear, conv1d, conv2d, \
             conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu, \
             leaky_relu or selu"
        ),
    }
}

/// Kaiming (He) uniform initialisation for a leaky ReLU of slope `a`, fan-in mode:
/// `U(-bound, bound)` with `bound = √3 · gain / √fan_in`, `gain = √(2 / (1 + a²))`.
///
/// Linear and Conv2d weights use `a = √5`, which gives `bound = 1 / √fan_in`.
#[track_caller]
pub fn kaiming_uniform_(t: &Tensor, a: f64) {
    let (fan_in, _) = calculate_fan_in_and_fan_out(&t.shape());
    let std = calculate_gain("leaky_relu", Some(a)) / (fan_in as f64).sqrt();
    let bound = 3f64.sqrt() * std;
    uniform_(t, -bound, bound);
}

/// Kaiming (He) normal initialisation for a leaky ReLU of slope `a`, fan-in mode:
/// `N(0, std²)` with `std = gain / √fan_in`, `gain = √(2 / (1 + a²))`.
#[track_caller]
pub fn kaiming_normal_(t: &Tensor, a: f64) {
    let (fan_in, _) = calculate_fan_in_and_fan_out(&t.shape());
    let std = calculate_gain("leaky_relu", Some(a)) / (fan_in as f64).sqrt();
    normal_(t, 0.0, std);
}

/// Xavier (Glorot) uniform initialisation:
/// `U(-b, b)` with `b = √3 · gain · √(2 / (fan_in + fan_out))`.
#[track_caller]
pub fn xavier_uniform_(t: &Tensor, gain: f64) {
    let (fan_in, fan_out) = calculate_fan_in_and_fan_out(&t.shape());
    let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    let bound = 3f64.sqrt() * std;
    uniform_(t, -bound, bound);
}

/// Xavier (Glorot) normal initialisation: `N(0, std²)` with
/// `std = gain · √(2 / (fan_in + fan_out))`.
#[track_caller]
pub fn xavier_normal_(t: &Tensor, gain: f64) {
    let (fan_in, fan_out) = calculate_fan_in_and_fan_out(&t.shape());
    let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    normal_(t, 0.0, std);
}

/// `1 / √fan_in` of a weight, or 0 when its fan-in is 0: the bias bound of Linear and the
/// convolutions.
pub(crate) fn bias_bound(weight_shape: &[usize]) -> f64 {
    let (fan_in, _) = calculate_fan_in_and_fan_out(weight_shape);
    if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    }
}

/// The weight and bias of Linear and the convolutions as PyTorch's `reset_parameters`
/// draws them: Kaiming uniform with `a = √5` for the weight, then
/// `U(-1/√fan_in, 1/√fan_in)` for the bias (`weight_shape[0]` values, or `bias_len`).
pub(crate) fn default_weight_and_bias(shape: &[usize], bias: bool) -> (Tensor, Option<Tensor>) {
    weight_and_bias(shape, bias.then_some(shape[0]))
}

/// As [`default_weight_and_bias`] with a bias of `bias_len` values (ConvTranspose's weight
/// is `[in, out / groups, …]`).
pub(crate) fn weight_and_bias(
    shape: &[usize],
    bias_len: Option<usize>,
) -> (Tensor, Option<Tensor>) {
    let weight = Tensor::zeros(shape);
    kaiming_uniform_(&weight, 5f64.sqrt());
    let bias = bias_len.map(|n| {
        let bound = bias_bound(shape);
        let b = Tensor::zeros(&[n]);
        uniform_(&b, -bound, bound);
        b
    });
    (weight, bias)
}

/// The weight `shape` and a bias of `bias_len` values of a Linear or convolution drawn
/// again in place of the draws `draws` recorded (see [`InitDraws::redo`]).
pub(crate) fn redraw(
    draws: &mut InitDraws,
    shape: &[usize],
    bias_len: Option<usize>,
) -> (Parameter, Option<Parameter>) {
    let (w, b) = draws.redo(|| weight_and_bias(shape, bias_len));
    (Parameter::new(w), b.map(Parameter::new))
}

/// `with_bias(want)` of a Linear or convolution whose bias has `bias_len` values: right
/// after construction everything is drawn again as PyTorch's constructor draws it with that
/// `bias`; later, the weight stays and only a new bias is drawn (or the bias dropped).
pub(crate) fn rebias(
    draws: &mut InitDraws,
    weight: Parameter,
    bias: Option<Parameter>,
    want: bool,
    bias_len: usize,
) -> (Parameter, Option<Parameter>) {
    if want == bias.is_some() {
        return (weight, bias);
    }
    let shape = weight.shape();
    let len = want.then_some(bias_len);
    if let Some((w, b)) = draws.redo_if_last(|| weight_and_bias(&shape, len)) {
        return (Parameter::new(w), b.map(Parameter::new));
    }
    let bias = len.map(|n| {
        let bound = bias_bound(&shape);
        let b = Tensor::zeros(&[n]);
        uniform_(&b, -bound, bound);
        Parameter::new(b)
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
