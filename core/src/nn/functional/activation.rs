//! Activation functions in functional form (`torch.nn.functional.relu`, `gelu`, `silu`, …):
//! each calls the [`Tensor`] method of the same name.

use crate::tensor::Tensor;

/// `max(0, x)` element-wise (`F.relu`).
#[track_caller]
pub fn relu(input: &Tensor) -> Tensor {
    input.relu()
}

/// `x` where positive, `negative_slope · x` elsewhere (`F.leaky_relu`).
#[track_caller]
pub fn leaky_relu(input: &Tensor, negative_slope: f64) -> Tensor {
    input.leaky_relu(negative_slope)
}

/// GELU (`F.gelu`): `approximate = "none"` is the exact `x · Φ(x)`, `"tanh"` the tanh
/// approximation.
///
/// # Panics
/// If `approximate` is neither `"none"` nor `"tanh"`.
#[track_caller]
pub fn gelu(input: &Tensor, approximate: &str) -> Tensor {
    match approximate {
        "none" => input.gelu(),
        "tanh" => input.gelu_tanh(),
        other => panic!("gelu: approximate must be \"none\" or \"tanh\", got {other:?}"),
    }
}

/// `x · sigmoid(x)` element-wise (`F.silu`).
#[track_caller]
pub fn silu(input: &Tensor) -> Tensor {
    input.silu()
}

/// `x · tanh(softplus(x))` element-wise (`F.mish`).
#[track_caller]
pub fn mish(input: &Tensor) -> Tensor {
    input.mish()
}

/// `log(1 + e^(beta·x)) / beta`, and `x` where `beta·x > threshold` (`F.softplus`;
/// PyTorch's defaults are `beta = 1`, `threshold = 20`).
#[track_caller]
pub fn softplus(input: &Tensor, beta: f64, threshold: f64) -> Tensor {
    input.softplus(beta, threshold)
}

/// `1 / (1 + e^-x)` element-wise (`F.sigmoid`).
#[track_caller]
pub fn sigmoid(input: &Tensor) -> Tensor {
    input.sigmoid()
}

/// `tanh(x)` element-wise (`F.tanh`).
#[track_caller]
pub fn tanh(input: &Tensor) -> Tensor {
    input.tanh()
}

/// `exp(x) / Σ exp(x)` along `dim` (`F.softmax`).
#[track_caller]
pub fn softmax(input: &Tensor, dim: isize) -> Tensor {
    input.softmax(dim)
}

/// `x - log Σ exp(x)` along `dim` (`F.log_softmax`).
#[track_caller]
pub fn log_softmax(input: &Tensor, dim: isize) -> Tensor {
    input.log_softmax(dim)
}
