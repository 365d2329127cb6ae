//! Element types and the storage behind a [`Tensor`](crate::tensor::Tensor).
//!
//! NOTE [ One Tensor type, dtype at run time ]
//! torchlet has one `Tensor` type whose element type is known at run time, as in PyTorch:
//! f32 for training, f64 for gradient checks and tight comparisons with reference values,
//! i64 for class labels, indices and counters. Model code then has no type parameters, and a
//! state dict can hold f32 weights next to an i64 `num_batches_tracked`. The price is one
//! `match` per op (never per element): each op body is written once, generically over
//! `Float`, and `dispatch_float!` instantiates it for f32 and f64.

use ndarray::{ArcArray, IxDyn};
use std::fmt;

mod fastmath;

/// The element type of a tensor.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{DType, Tensor};
/// let x = Tensor::zeros(&[2]);
/// assert_eq!(x.dtype(), DType::F32);
/// assert_eq!(x.to_dtype(DType::F64).dtype().name(), "float64");
/// assert_eq!(Tensor::from_vec(vec![3i64], &[1]).dtype(), DType::I64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit floating point (`torch.float32`), the default.
    F32,
    /// 64-bit floating point (`torch.float64`), for gradient checks and tight comparisons.
    F64,
    /// 64-bit signed integer (`torch.int64`), for class labels, indices and counters.
    I64,
}

impl DType {
    /// The name PyTorch prints (`torch.float32` without the prefix).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
        }
    }

    /// Whether tensors of this type can take part in autograd.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type a tensor can be built from and read back into: `f32`, `f64` or `i64`.
///
/// Reading converts: `to_vec::<f32>()` of an i64 tensor gives its values as f32. The trait
/// is sealed: the three types above are the only ones a tensor stores.
pub trait Element: Copy + Send + Sync + fmt::Debug + 'static + ToStorage {
    /// The dtype of a tensor of this type.
    const DTYPE: DType;
    #[doc(hidden)]
    fn from_f64(v: f64) -> Self;
    #[doc(hidden)]
    fn to_f64(self) -> f64;
}

/// The data of a tensor and the conversions between it and an element type's arrays.
///
/// The items are `pub` in a private module: nameable inside the crate only (through the
/// `pub(crate) use` below), so that `Storage` and ndarray's `ArcArray` stay out of the public
/// API while [`Element`] can still require `ToStorage` (which also seals it: no type outside
/// the crate can be an `Element`).
mod storage {
    use ndarray::{ArcArray, IxDyn};

    /// The data of a tensor: an n-dimensional, reference-counted ndarray of one dtype.
    ///
    /// `ArcArray` makes views (transpose, permute, narrow) share the buffer with their base
    /// and makes in-place writes copy-on-write, so a value saved for backward never changes
    /// under it.
    #[derive(Clone, Debug)]
    pub enum Storage {
        /// `DType::F32` data.
        F32(ArcArray<f32, IxDyn>),
        /// `DType::F64` data.
        F64(ArcArray<f64, IxDyn>),
        /// `DType::I64` data.
        I64(ArcArray<i64, IxDyn>),
    }

    pub trait ToStorage: Sized {
        /// The storage over `a`, without a copy.
        fn into_storage(a: ArcArray<Self, IxDyn>) -> Storage;
        /// `s` as an array of this type: a cheap clone when it is one, else a converted copy.
        fn from_storage(s: &Storage) -> ArcArray<Self, IxDyn>;
    }
}
pub(crate) use storage::{Storage, ToStorage};

macro_rules! impl_element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
        impl ToStorage for $t {
            fn into_storage(a: ArcArray<Self, IxDyn>) -> Storage {
                Storage::$variant(a)
            }
            fn from_storage(s: &Storage) -> ArcArray<Self, IxDyn> {
                if let Storage::$variant(a) = s {
                    return a.clone();
                }
                match s {
                    Storage::F32(a) => a.mapv(|v| v as $t).into_shared(),
                    Storage::F64(a) => a.mapv(|v| v as $t).into_shared(),
                    Storage::I64(a) => a.mapv(|v| v as $t).into_shared(),
                }
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f64, F64);
impl_element!(i64, I64);

/// The floating-point element types (f32, f64): what every differentiable op is generic over.
pub(crate) trait Float:
    Element
    + num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + fmt::Display
    + Default
{
    /// The error function (PyTorch's `erf`), for the exact GELU.
    fn erf(self) -> Self;
    /// `exp` for element-wise kernels: libm's for f64; for f32 about 1 ulp, written so that
    /// loops over it vectorise (NOTE [ Fast f32 exp ] in `dtype/fastmath.rs`).
    fn exp_fast(self) -> Self {
        num_traits::Float::exp(self)
    }
    /// `v` converted to this type.
    fn lit(v: f64) -> Self {
        <Self as Element>::from_f64(v)
    }
}

impl Float for f32 {
    #[inline]
    fn erf(self) -> Self {
        erf_f32(self)
    }
    #[inline(always)]
    fn exp_fast(self) -> Self {
        fastmath::exp_f32(self)
    }
}

/// `erf(x)` in f32 as `x · P(x²) / Q(x²)` on `[-4, 4]` (±1 to f32 precision outside):
/// a rational fit made for torchlet (iteratively reweighted least squares on Chebyshev
/// nodes against the exact erf), within 4e-7 relative error of the exact value, about
/// 3 ulp. Unlike `libm::erff` it has no branches or calls, so the GELU loops that use it
/// can vectorise: on the W5 benchmark (perf, 1 thread) the exact GELU's forward and
/// backward fell from about 17% of the step with `libm::erff` to about 7% with this and
/// GELU's own loops in `ops/unary.rs`. Q has positive coefficients, so it has no poles.
#[inline]
fn erf_f32(x: f32) -> f32 {
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.203_697_93,
        0.051_057_55,
        0.003_840_058,
        0.000_143_371_16,
        -1.921_978e-6,
        1.909_936e-8,
    ];
    const Q: [f32; 5] = [
        1.0,
        0.513_854_6,
        0.116_541_34,
        0.014_656_714,
        0.000_983_623_2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let t = x * x;
    let p = P.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let q = Q.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    (x * p / q).clamp(-1.0, 1.0)
}

impl Float for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::I64(_) => DType::I64,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Storage::F32(a) => a.shape(),
            Storage::F64(a) => a.shape(),
            Storage::I64(a) => a.shape(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::F32(a) => a.len(),
            Storage::F64(a) => a.len(),
            Storage::I64(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same values as another dtype (a cheap clone when it already is).
    pub fn to_dtype(&self, dtype: DType) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(f32::from_storage(self)),
            DType::F64 => Storage::F64(f64::from_storage(self)),
            DType::I64 => Storage::I64(i64::from_storage(self)),
        }
    }

    /// A storage with its own (contiguous) buffer.
    pub(crate) fn to_owned_storage(&self) -> Storage {
        match self {
            Storage::F32(a) => Storage::F32(a.to_owned().into_shared()),
            Storage::F64(a) => Storage::F64(a.to_owned().into_shared()),
            Storage::I64(a) => Storage::I64(a.to_owned().into_shared()),
        }
    }
}

/// Runs a generic body once for the float variant of a storage, giving back a storage of the
/// same dtype; `$on_int` is evaluated (and must diverge) for an i64 storage.
///
/// See NOTE [ One Tensor type, dtype at run time ].
macro_rules! dispatch_float {
    ($storage:expr, $a:ident => $body:expr, int => $on_int:expr) => {
        match $storage {
            $crate::dtype::Storage::F32($a) => $crate::dtype::Storage::F32($body),
            $crate::dtype::Storage::F64($a) => $crate::dtype::Storage::F64($body),
            $crate::dtype::Storage::I64(_) => $on_int,
        }
    };
}

/// Runs a generic body for the float variant of a storage, giving back whatever the body
/// returns (the gradients of a multi-input op, for example) with its arrays wrapped back into
/// storages of the same dtype by the caller.
macro_rules! dispatch_float_tuple {
    ($storage:expr, $a:ident => $body:expr) => {{
        fn wrap<T: $crate::dtype::Element>(
            v: Option<::ndarray::ArcArray<T, ::ndarray::IxDyn>>,
        ) -> Option<$crate::dtype::Storage> {
            v.map(T::into_storage)
        }
        match $storage {
            $crate::dtype::Storage::F32($a) => {
                let (x, y, z) = $body;
                (wrap(x), wrap(y), wrap(z))
            }
            $crate::dtype::Storage::F64($a) => {
                let (x, y, z) = $body;
                (wrap(x), wrap(y), wrap(z))
            }
            $crate::dtype::Storage::I64(_) => unreachable!("gradients are floating point"),
        }
    }};
}

/// Like [`dispatch_float!`] for two storages of the same float dtype.
macro_rules! dispatch_float2 {
    ($s1:expr, $s2:expr, ($a:ident, $b:ident) => $body:expr, else => $mismatch:expr) => {
        match ($s1, $s2) {
            ($crate::dtype::Storage::F32($a), $crate::dtype::Storage::F32($b)) => {
                $crate::dtype::Storage::F32($body)
            }
            ($crate::dtype::Storage::F64($a), $crate::dtype::Storage::F64($b)) => {
                $crate::dtype::Storage::F64($body)
            }
            _ => $mismatch,
        }
    };
}

pub(crate) use {dispatch_float, dispatch_float_tuple, dispatch_float2};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_f32_is_within_a_few_ulp_of_the_exact_erf() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = libm::erf(x as f64);
            let got = erf_f32(x) as f64;
            let rel = (got - exact).abs() / exact.abs().max(1e-30);
            worst = worst.max(if x == 0.0 { got.abs() } else { rel });
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert_eq!(erf_f32(10.0), 1.0);
        assert_eq!(erf_f32(-10.0), -1.0);
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
    }
}
