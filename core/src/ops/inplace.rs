//! In-place ops (`add_`, `mul_`, `fill_`, `copy_`, …): PyTorch's trailing-underscore methods.
//!
//! Each one writes through [`Tensor::modify`], which refuses a tensor that requires grad
//! while the graph is recorded and bumps the version that saved values check (NOTE [ Storage
//! access ] in `tensor.rs`). None is recorded in the graph.

use crate::dtype::{Float, Storage};
use crate::random;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};

impl Tensor {
    /// `self += other` (broadcast to this tensor's shape), in place.
    ///
    /// # Panics
    /// If `other` does not broadcast to this shape or has another dtype, or if this tensor
    /// requires grad while grad mode is on.
    #[track_caller]
    pub fn add_(&self, other: &Tensor) -> &Tensor {
        self.zip_inplace("add_", other, |x, y| *x += y);
        self
    }

    /// `self -= other`, in place.
    #[track_caller]
    pub fn sub_(&self, other: &Tensor) -> &Tensor {
        self.zip_inplace("sub_", other, |x, y| *x -= y);
        self
    }

    /// `self *= other`, in place.
    #[track_caller]
    pub fn mul_(&self, other: &Tensor) -> &Tensor {
        self.zip_inplace("mul_", other, |x, y| *x *= y);
        self
    }

    /// `self += alpha * other`, in place (PyTorch's `add_(other, alpha=…)`).
    #[track_caller]
    pub fn add_scaled_(&self, other: &Tensor, alpha: f64) -> &Tensor {
        let rhs = self.inplace_operand("add_scaled_", other);
        self.modify("add_scaled_", |s| match (s, &rhs) {
            (Storage::F32(a), Storage::F32(b)) => {
                let alpha = alpha as f32;
                a.zip_mut_with(b, |x, y| *x += alpha * *y)
            }
            (Storage::F64(a), Storage::F64(b)) => a.zip_mut_with(b, |x, y| *x += alpha * *y),
            (Storage::I64(a), Storage::I64(b)) => {
                a.zip_mut_with(b, |x, y| *x += (alpha * *y as f64) as i64)
            }
            _ => unreachable!("in-place operand converted to the destination dtype"),
        });
        self
    }

    /// `self *= value`, in place.
    #[track_caller]
    pub fn mul_scalar_(&self, value: f64) -> &Tensor {
        self.modify("mul_scalar_", |s| match s {
            Storage::F32(a) => a.map_inplace(|x| *x *= value as f32),
            Storage::F64(a) => a.map_inplace(|x| *x *= value),
            Storage::I64(a) => a.map_inplace(|x| *x = (*x as f64 * value) as i64),
        });
        self
    }

    /// Sets every element to zero, in place.
    #[track_caller]
    pub fn zero_(&self) -> &Tensor {
        self.fill_(0.0)
    }

    /// Sets every element to `value`, in place.
    #[track_caller]
    pub fn fill_(&self, value: f64) -> &Tensor {
        self.modify("fill_", |s| match s {
            Storage::F32(a) => a.fill(value as f32),
            Storage::F64(a) => a.fill(value),
            Storage::I64(a) => a.fill(value as i64),
        });
        self
    }

    /// Copies `src`'s values (same shape; converted to this dtype), in place.
    #[track_caller]
    pub fn copy_(&self, src: &Tensor) -> &Tensor {
        let shape = self.shape();
        if src.shape() != shape {
            panic!(
                "copy_: source shape {:?} differs from destination shape {shape:?}",
                src.shape()
            );
        }
        let src = src.storage().to_dtype(self.dtype());
        self.modify("copy_", |s| match (s, &src) {
            (Storage::F32(a), Storage::F32(b)) => a.assign(b),
            (Storage::F64(a), Storage::F64(b)) => a.assign(b),
            (Storage::I64(a), Storage::I64(b)) => a.assign(b),
            _ => unreachable!("copy_: source converted to the destination dtype"),
        });
        self
    }

    /// Fills with values drawn uniformly from `[low, high)` (global generator), in place.
    #[track_caller]
    pub fn uniform_(&self, low: f64, high: f64) -> &Tensor {
        let n = self.numel();
        let values = random::with_rng(|r| random::uniform_vec::<f64>(r, n));
        self.fill_from(
            "uniform_",
            values.into_iter().map(|u| low + (high - low) * u),
        );
        self
    }

    /// Fills with values drawn from `N(mean, std²)` (global generator), in place.
    #[track_caller]
    pub fn normal_(&self, mean: f64, std: f64) -> &Tensor {
        let n = self.numel();
        let values = random::with_rng(|r| random::normal_vec::<f64>(r, n));
        self.fill_from("normal_", values.into_iter().map(|z| mean + std * z));
        self
    }

    #[track_caller]
    fn fill_from(&self, op: &str, values: impl Iterator<Item = f64>) {
        self.modify(op, |s| match s {
            Storage::F32(a) => a.iter_mut().zip(values).for_each(|(x, v)| *x = v as f32),
            Storage::F64(a) => a.iter_mut().zip(values).for_each(|(x, v)| *x = v),
            Storage::I64(a) => a.iter_mut().zip(values).for_each(|(x, v)| *x = v as i64),
        });
    }

    #[track_caller]
    fn zip_inplace(&self, op: &str, other: &Tensor, f: impl Fn(&mut f64, f64) + Copy) {
        let rhs = self.inplace_operand(op, other);
        self.modify(op, |s| match (s, &rhs) {
            (Storage::F32(a), Storage::F32(b)) => a.zip_mut_with(b, |x, y| {
                let mut t = *x as f64;
                f(&mut t, *y as f64);
                *x = t as f32;
            }),
            (Storage::F64(a), Storage::F64(b)) => a.zip_mut_with(b, |x, y| f(x, *y)),
            (Storage::I64(a), Storage::I64(b)) => a.zip_mut_with(b, |x, y| {
                let mut t = *x as f64;
                f(&mut t, *y as f64);
                *x = t as i64;
            }),
            _ => unreachable!("in-place operand converted to the destination dtype"),
        });
    }

    /// `other`'s storage checked to broadcast to this shape, in this dtype.
    #[track_caller]
    fn inplace_operand(&self, op: &str, other: &Tensor) -> Storage {
        let shape = self.shape();
        let other_shape = other.shape();
        if crate::shape::broadcast_shapes(&shape, &other_shape).as_deref() != Some(&shape[..]) {
            panic!("{op}: {other_shape:?} cannot be broadcast to the destination shape {shape:?}");
        }
        if other.dtype() != self.dtype() {
            panic!(
                "{op}: operand is {} but the destination is {}",
                other.dtype(),
                self.dtype()
            );
        }
        other.storage()
    }

    /// Gradient accumulation, `self += g`: in place, without the grad-mode check (gradients
    /// never require grad themselves).
    ///
    /// # Panics
    /// If `g` is not a float tensor of this tensor's dtype.
    pub(crate) fn add_assign_grad(&self, g: &Tensor) {
        let rhs = g.storage();
        if rhs.dtype() != self.dtype() || !rhs.dtype().is_float() {
            panic!(
                "backward: gradient of dtype {} cannot accumulate into {}",
                rhs.dtype(),
                self.dtype()
            );
        }
        self.update_in_place(|s| match (s, &rhs) {
            (Storage::F32(a), Storage::F32(b)) => add_assign(a, b),
            (Storage::F64(a), Storage::F64(b)) => add_assign(a, b),
            _ => unreachable!("dtypes checked above"),
        });
    }
}

fn add_assign<T: Float>(a: &mut ArcArray<T, IxDyn>, b: &ArcArray<T, IxDyn>) {
    if let (Some(x), Some(y)) = (a.as_slice_mut(), b.as_slice())
        && x.len() == y.len()
    {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += *y);
        return;
    }
    a.zip_mut_with(b, |x, y| *x += *y);
}
