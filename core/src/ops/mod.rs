//! Tensor ops, forward and backward side by side. Each file adds methods to
//! [`Tensor`](crate::tensor::Tensor).

mod adaptive_pool;
pub(crate) mod attention;
pub(crate) mod binary;
mod compare;
pub(crate) mod conv;
mod conv_general;
mod gather;
pub(crate) mod gemm;
mod inplace;
pub(crate) mod kernel;
pub(crate) mod layer_norm;
mod linear;
mod matmul;
mod norm;
mod pool;
pub(crate) mod recurrent;
pub(crate) mod recurrent_gru;
mod reduce;
mod scan;
mod select;
mod softmax;
mod sort;
mod split;
mod unary;
mod view;

use crate::dtype::{Float, Storage};
use ndarray::{ArcArray, IxDyn};

/// `s` as an array of the same element type as `like` (a cheap clone when it already is).
pub(crate) fn same_dtype<T: Float>(s: &Storage, _like: &ArcArray<T, IxDyn>) -> ArcArray<T, IxDyn> {
    T::from_storage(s)
}
