//! Element-wise arithmetic with broadcasting: `+ - * /` between tensors and with scalars.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
use crate::ops::kernel;
use crate::shape::broadcast_shapes;
use crate::tensor::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn broadcast_error(op: &str, a: &[usize], b: &[usize]) -> ! {
    panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together")
}

#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn dtype_error(op: &str, a: &Storage, b: &Storage) -> ! {
    panic!(
        "{op}: operands must have the same floating-point dtype, got {} {:?} and {} {:?}; \
         convert one with .to_dtype()",
        a.dtype(),
        a.shape(),
        b.dtype(),
        b.shape()
    )
}

/// The broadcast result of `op` on two storages (no graph).
#[track_caller]
fn binary_storage(op: BinOp, a: &Storage, b: &Storage) -> Storage {
    let Some(out) = broadcast_shapes(a.shape(), b.shape()) else {
        broadcast_error(op.name(), a.shape(), b.shape())
    };
    crate::dispatch_float2!(a, b, (x, y) => zip_op(op, x, y, &out),
        else => dtype_error(op.name(), a, b))
}

/// `kernel::zip2` with the operation fixed per loop, so that it vectorises (matching `op`
/// per element costs a jump table per element).
fn zip_op<T: Float>(
    op: BinOp,
    x: &kernel::Arr<T>,
    y: &kernel::Arr<T>,
    out: &[usize],
) -> kernel::Arr<T> {
    match op {
        BinOp::Add => kernel::zip2(x, y, out, |p, q| p + q),
        BinOp::Sub => kernel::zip2(x, y, out, |p, q| p - q),
        BinOp::Mul => kernel::zip2(x, y, out, |p, q| p * q),
        BinOp::Div => kernel::zip2(x, y, out, |p, q| p / q),
    }
}

#[track_caller]
fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> Tensor {
    let out = binary_storage(op, &a.storage(), &b.storage());
    let (shape_a, shape_b) = (a.shape(), b.shape());
    record(op.name(), out, &[a, b], || {
        let saved = match op {
            BinOp::Mul | BinOp::Div => Some((Saved::new(a, op.name()), Saved::new(b, op.name()))),
            BinOp::Add | BinOp::Sub => None,
        };
        move |g: &Tensor, needs: &[bool]| {
            let (ga, gb) = match (op, &saved) {
                (BinOp::Add, _) => (g.clone(), g.clone()),
                (BinOp::Sub, _) => (g.clone(), if needs[1] { -g } else { g.clone() }),
                (BinOp::Mul, Some((sa, sb))) => {
                    let ga = if needs[0] { g * &sb.get() } else { g.clone() };
                    let gb = if needs[1] { g * &sa.get() } else { g.clone() };
                    (ga, gb)
                }
                (BinOp::Div, Some((sa, sb))) => {
                    let b = sb.get();
                    let ga = if needs[0] { g / &b } else { g.clone() };
                    let gb = if needs[1] {
                        -&(&(g * &sa.get()) / &(&b * &b))
                    } else {
                        g.clone()
                    };
                    (ga, gb)
                }
                _ => unreachable!("mul and div save their operands"),
            };
            vec![
                needs[0].then(|| ga.sum_to(&shape_a)),
                needs[1].then(|| gb.sum_to(&shape_b)),
            ]
        }
    })
}

/// `x (op) s` for a scalar `s`.
#[track_caller]
fn scalar_op(op: BinOp, x: &Tensor, s: f64) -> Tensor {
    let out = crate::dispatch_float!(x.storage(), a => scalar_kernel(op, &a, s),
        int => scalar_int_error(op.name(), x));
    record(op.name(), out, &[x], || {
        move |g: &Tensor, _: &[bool]| {
            vec![Some(match op {
                BinOp::Add | BinOp::Sub => g.clone(),
                BinOp::Mul => g.mul_scalar(s),
                BinOp::Div => g.mul_scalar(1.0 / s),
            })]
        }
    })
}

/// `a (op) s` element-wise, the operation fixed per loop (see `zip_op`).
fn scalar_kernel<T: Float>(op: BinOp, a: &kernel::Arr<T>, s: f64) -> kernel::Arr<T> {
    let s = T::lit(s);
    match op {
        BinOp::Add => kernel::map(a, |v| v + s),
        BinOp::Sub => kernel::map(a, |v| v - s),
        BinOp::Mul => kernel::map(a, |v| v * s),
        BinOp::Div => kernel::map(a, |v| v / s),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn scalar_int_error(op: &str, x: &Tensor) -> ! {
    panic!(
        "{op}: arithmetic needs a floating-point tensor, got int64 {:?}; convert with .float()",
        x.shape()
    )
}

impl Tensor {
    /// `self + other` with broadcasting.
    ///
    /// # Panics
    /// If the shapes do not broadcast or the dtypes differ.
    #[track_caller]
    pub fn add(&self, other: &Tensor) -> Tensor {
        binary(BinOp::Add, self, other)
    }

    /// `self - other` with broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Tensor) -> Tensor {
        binary(BinOp::Sub, self, other)
    }

    /// `self * other` (element-wise) with broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Tensor) -> Tensor {
        binary(BinOp::Mul, self, other)
    }

    /// `self / other` with broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Tensor) -> Tensor {
        binary(BinOp::Div, self, other)
    }

    /// `self + s`.
    #[track_caller]
    pub fn add_scalar(&self, s: f64) -> Tensor {
        scalar_op(BinOp::Add, self, s)
    }

    /// `self - s`.
    #[track_caller]
    pub fn sub_scalar(&self, s: f64) -> Tensor {
        scalar_op(BinOp::Sub, self, s)
    }

    /// `self * s`.
    #[track_caller]
    pub fn mul_scalar(&self, s: f64) -> Tensor {
        scalar_op(BinOp::Mul, self, s)
    }

    /// `self / s`.
    #[track_caller]
    pub fn div_scalar(&self, s: f64) -> Tensor {
        scalar_op(BinOp::Div, self, s)
    }

    /// Sums a broadcast gradient back to `shape` (the inverse of broadcasting).
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Tensor {
        let own = self.shape();
        if own == shape {
            return self.clone();
        }
        let dims = crate::shape::broadcast_reduction_dims(shape, &own);
        let dims: Vec<isize> = dims.into_iter().map(|d| d as isize).collect();
        let shape: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
        self.sum_dims(&dims, true).reshape(&shape)
    }
}

macro_rules! impl_operator {
    ($trait:ident, $method:ident, $tensor_fn:ident, $scalar_fn:ident) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.$tensor_fn(rhs)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                (&self).$tensor_fn(&rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                (&self).$tensor_fn(rhs)
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                self.$tensor_fn(&rhs)
            }
        }
        impl $trait<f64> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                self.$scalar_fn(rhs)
            }
        }
        impl $trait<f64> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: f64) -> Tensor {
                (&self).$scalar_fn(rhs)
            }
        }
    };
}

impl_operator!(Add, add, add, add_scalar);
impl_operator!(Sub, sub, sub, sub_scalar);
impl_operator!(Mul, mul, mul, mul_scalar);
impl_operator!(Div, div, div, div_scalar);

impl Add<&Tensor> for f64 {
    type Output = Tensor;
    #[track_caller]
    fn add(self, rhs: &Tensor) -> Tensor {
        rhs.add_scalar(self)
    }
}

impl Sub<&Tensor> for f64 {
    type Output = Tensor;
    #[track_caller]
    fn sub(self, rhs: &Tensor) -> Tensor {
        rhs.neg().add_scalar(self)
    }
}

impl Mul<&Tensor> for f64 {
    type Output = Tensor;
    #[track_caller]
    fn mul(self, rhs: &Tensor) -> Tensor {
        rhs.mul_scalar(self)
    }
}

impl Div<&Tensor> for f64 {
    type Output = Tensor;
    #[track_caller]
    fn div(self, rhs: &Tensor) -> Tensor {
        rhs.pow(-1.0).mul_scalar(self)
    }
}

impl Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
