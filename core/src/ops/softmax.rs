//! softmax and log_softmax along a dimension, stable for large logits (the maximum of each
//! lane is subtracted before exponentiating).

use crate::autograd::graph::record;
use crate::dtype::Float;
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn, Zip};

#[derive(Clone, Copy)]
enum Kind {
    Softmax,
    LogSoftmax,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Softmax => "softmax",
            Kind::LogSoftmax => "log_softmax",
        }
    }
}

/// The forward pass over every lane along `d`.
fn forward<T: Float>(a: &ArcArray<T, IxDyn>, d: usize, kind: Kind) -> ArcArray<T, IxDyn> {
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(Axis(d)) {
        let max = lane.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
        let max = if max.is_finite() { max } else { T::zero() };
        let sum: T = lane.iter().map(|&v| (v - max).exp()).sum();
        match kind {
            Kind::Softmax => lane.mapv_inplace(|v| (v - max).exp() / sum),
            Kind::LogSoftmax => {
                let log_sum = sum.ln() + max;
                lane.mapv_inplace(|v| v - log_sum)
            }
        }
    }
    out.into_shared()
}

/// The backward pass: softmax `y (g - Σ g y)`, log_softmax `g - e^y Σ g`.
fn backward<T: Float>(
    g: &ArcArray<T, IxDyn>,
    y: &ArcArray<T, IxDyn>,
    d: usize,
    kind: Kind,
) -> ArcArray<T, IxDyn> {
    let mut out = g.to_owned();
    Zip::from(out.lanes_mut(Axis(d)))
        .and(y.lanes(Axis(d)))
        .for_each(|mut gl, yl| match kind {
            Kind::Softmax => {
                let dot: T = gl.iter().zip(yl.iter()).map(|(&g, &y)| g * y).sum();
                gl.zip_mut_with(&yl, |g, &y| *g = y * (*g - dot));
            }
            Kind::LogSoftmax => {
                let sum: T = gl.iter().copied().sum();
                gl.zip_mut_with(&yl, |g, &y| *g -= y.exp() * sum);
            }
        });
    out.into_shared()
}

#[track_caller]
fn softmax_op(x: &Tensor, dim: isize, kind: Kind) -> Tensor {
    let d = normalize_dim(kind.name(), dim, x.dim());
    if x.dim() == 0 {
        return match kind {
            Kind::Softmax => x.ones_like().mul(&x.ones_like()),
            Kind::LogSoftmax => x.zeros_like(),
        };
    }
    let out = crate::dispatch_float!(x.storage(), a => forward(&a, d, kind), int => panic!(
        "{}: needs a floating-point tensor, got int64 {:?}; convert with .float()", kind.name(), x.shape()));
    let y = out.clone();
    record(kind.name(), out, &[x], || {
        move |g: &Tensor, _: &[bool]| {
            let grad = crate::dispatch_float!(g.storage(), g => {
                let y = crate::ops::same_dtype(&y, &g);
                backward(&g, &y, d, kind)
            }, int => unreachable!("gradients are floating point"));
            vec![Some(Tensor::from_storage(grad))]
        }
    })
}

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim`.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        softmax_op(self, dim, Kind::Softmax)
    }

    /// `x - log Σ exp(x)` along `dim`, computed without overflow for large logits.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        softmax_op(self, dim, Kind::LogSoftmax)
    }
}
