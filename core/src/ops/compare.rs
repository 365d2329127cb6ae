//! Comparisons producing masks.
//!
//! torchlet has no bool dtype: a mask holds 1.0 where the comparison holds and 0.0
//! elsewhere, in the operands' float dtype (f32 for i64 operands), so it can be summed,
//! averaged or multiplied directly: `pred.argmax(1, false).eq(&y).mean()` is the accuracy.

use crate::dtype::{DType, Storage};
use crate::shape::broadcast_shapes;
use crate::tensor::Tensor;
use ndarray::{IxDyn, Zip};

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    fn name(self) -> &'static str {
        match self {
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
            Cmp::Lt => "lt",
            Cmp::Le => "le",
        }
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
        }
    }
}

#[track_caller]
fn compare(op: Cmp, a: &Tensor, b: &Tensor, mask_dtype: DType) -> Tensor {
    let (sa, sb) = (a.storage(), b.storage());
    let Some(out) = broadcast_shapes(sa.shape(), sb.shape()) else {
        panic!(
            "{}: shapes {:?} and {:?} cannot be broadcast together",
            op.name(),
            sa.shape(),
            sb.shape()
        );
    };
    // Compare in i64 when both are integers, else in f64 (exact for f32 and f64 values).
    let mask: Vec<bool> = match (&sa, &sb) {
        (Storage::I64(x), Storage::I64(y)) => zip_bool(x, y, &out, op),
        _ => {
            let x = sa.to_dtype(DType::F64);
            let y = sb.to_dtype(DType::F64);
            match (&x, &y) {
                (Storage::F64(x), Storage::F64(y)) => zip_bool(x, y, &out, op),
                _ => unreachable!("converted to f64"),
            }
        }
    };
    let values: Vec<f64> = mask
        .into_iter()
        .map(|m| if m { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(values, &out).to_dtype(mask_dtype)
}

fn zip_bool<T: PartialOrd + Copy>(
    x: &ndarray::ArcArray<T, IxDyn>,
    y: &ndarray::ArcArray<T, IxDyn>,
    out: &[usize],
    op: Cmp,
) -> Vec<bool> {
    let (Some(xv), Some(yv)) = (x.broadcast(IxDyn(out)), y.broadcast(IxDyn(out))) else {
        unreachable!("compare: shapes checked to broadcast")
    };
    let mut res = Vec::with_capacity(out.iter().product());
    Zip::from(&xv)
        .and(&yv)
        .for_each(|&a, &b| res.push(op.holds(a, b)));
    res
}

/// The left operand's float dtype, else the right one's, else f32.
fn mask_dtype(a: &Tensor, b: &Tensor) -> DType {
    match (a.dtype(), b.dtype()) {
        (DType::I64, DType::I64) => DType::F32,
        (DType::I64, d) | (d, _) => d,
    }
}

macro_rules! comparisons {
    ($($variant:ident, $method:ident, $scalar:ident, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = concat!("Mask of `self ", $doc, " other` (broadcasting): 1 where it holds, 0 elsewhere.")]
                #[track_caller]
                pub fn $method(&self, other: &Tensor) -> Tensor {
                    compare(Cmp::$variant, self, other, mask_dtype(self, other))
                }

                #[doc = concat!("Mask of `self ", $doc, " value`.")]
                #[track_caller]
                pub fn $scalar(&self, value: f64) -> Tensor {
                    compare(Cmp::$variant, self, &Tensor::full_dtype(&[], value, DType::F64), self.mask_dtype())
                }
            )*
        }
    };
}

comparisons! {
    Eq, eq, eq_scalar, "==";
    Ne, ne, ne_scalar, "!=";
    Gt, gt, gt_scalar, ">";
    Ge, ge, ge_scalar, ">=";
    Lt, lt, lt_scalar, "<";
    Le, le, le_scalar, "<=";
}
