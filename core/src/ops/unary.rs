//! Element-wise functions, each written as its value `f(x)` next to its derivative
//! `df(x, y)` (with `y = f(x)`), so that backward is one fused pass `g * df(x, y)`.

use crate::autograd::graph::{Saved, needs_graph, record};
use crate::dtype::{Float, Storage};
use crate::ops::kernel;
use crate::ops::kernel::Arr;
use crate::tensor::Tensor;
use std::mem::MaybeUninit;

/// An element-wise function and its derivative.
#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    GeluTanh,
    Pow(f64),
    Clamp(Option<f64>, Option<f64>),
    Sin,
    Cos,
    Rsqrt,
    Silu,
    Mish,
    /// `beta`, `threshold`.
    Softplus(f64, f64),
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

impl Unary {
    fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Abs => "abs",
            Unary::Relu => "relu",
            Unary::LeakyRelu(_) => "leaky_relu",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::GeluTanh => "gelu",
            Unary::Pow(_) => "pow",
            Unary::Clamp(..) => "clamp",
            Unary::Sin => "sin",
            Unary::Cos => "cos",
            Unary::Rsqrt => "rsqrt",
            Unary::Silu => "silu",
            Unary::Mish => "mish",
            Unary::Softplus(..) => "softplus",
        }
    }

    #[inline(always)]
    fn f<T: Float>(self, x: T) -> T {
        let zero = T::zero();
        let one = T::one();
        let half = T::lit(0.5);
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Abs => x.abs(),
            // `x <= 0`, not `x > 0`, so that a NaN passes through as in PyTorch (a NaN that a
            // ReLU turned into 0 would hide from anomaly detection).
            Unary::Relu => {
                if x <= zero {
                    zero
                } else {
                    x
                }
            }
            Unary::LeakyRelu(slope) => {
                if x > zero {
                    x
                } else {
                    x * T::lit(slope)
                }
            }
            // Written so that it does not overflow for large |x|.
            Unary::Sigmoid => sigmoid(x),
            Unary::Tanh => x.tanh(),
            Unary::GeluTanh => {
                let inner = T::lit(SQRT_2_OVER_PI) * (x + T::lit(0.044715) * x * x * x);
                half * x * (one + inner.tanh())
            }
            Unary::Pow(e) => pow(x, e),
            Unary::Clamp(lo, hi) => {
                let mut v = x;
                if let Some(lo) = lo {
                    v = v.max(T::lit(lo));
                }
                if let Some(hi) = hi {
                    v = v.min(T::lit(hi));
                }
                v
            }
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Rsqrt => one / x.sqrt(),
            Unary::Silu => x * sigmoid(x),
            Unary::Mish => x * softplus(x, one, T::lit(20.0)).tanh(),
            Unary::Softplus(beta, threshold) => softplus(x, T::lit(beta), T::lit(threshold)),
        }
    }

    #[inline(always)]
    fn df<T: Float>(self, x: T, y: T) -> T {
        let zero = T::zero();
        let one = T::one();
        let half = T::lit(0.5);
        match self {
            Unary::Neg => -one,
            Unary::Exp => y,
            Unary::Log => one / x,
            Unary::Sqrt => half / y,
            Unary::Abs => {
                if x > zero {
                    one
                } else if x < zero {
                    -one
                } else {
                    zero
                }
            }
            Unary::Relu => {
                if x > zero {
                    one
                } else {
                    zero
                }
            }
            Unary::LeakyRelu(slope) => {
                if x > zero {
                    one
                } else {
                    T::lit(slope)
                }
            }
            Unary::Sigmoid => y * (one - y),
            Unary::Tanh => one - y * y,
            Unary::GeluTanh => {
                let k = T::lit(SQRT_2_OVER_PI);
                let c = T::lit(0.044715);
                let t = (k * (x + c * x * x * x)).tanh();
                half * (one + t) + half * x * (one - t * t) * k * (one + T::lit(3.0) * c * x * x)
            }
            Unary::Pow(e) => T::lit(e) * pow(x, e - 1.0),
            Unary::Clamp(lo, hi) => {
                let below = lo.is_some_and(|lo| x < T::lit(lo));
                let above = hi.is_some_and(|hi| x > T::lit(hi));
                if below || above { zero } else { one }
            }
            Unary::Sin => x.cos(),
            Unary::Cos => -x.sin(),
            // d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y³
            Unary::Rsqrt => -half * y * y * y,
            // d/dx x σ(x) = σ(x) + x σ(x) (1 - σ(x))
            Unary::Silu => {
                let s = sigmoid(x);
                s * (one + x * (one - s))
            }
            // d/dx x tanh(sp(x)) = tanh(sp(x)) + x (1 - tanh²(sp(x))) σ(x), as sp' = σ
            Unary::Mish => {
                let t = softplus(x, one, T::lit(20.0)).tanh();
                t + x * (one - t * t) * sigmoid(x)
            }
            // d/dx log(1 + e^(βx)) / β = σ(βx); 1 on the linear branch
            Unary::Softplus(beta, threshold) => {
                let bx = x * T::lit(beta);
                if bx > T::lit(threshold) {
                    one
                } else {
                    sigmoid(bx)
                }
            }
        }
    }

    /// Whether backward needs the output (as well as the input).
    fn uses_output(self) -> bool {
        matches!(
            self,
            Unary::Exp | Unary::Sqrt | Unary::Sigmoid | Unary::Tanh | Unary::Rsqrt
        )
    }
}

/// `1 / (1 + e^-x)`, written so that it does not overflow for large |x|.
#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// `log(1 + e^(βx)) / β`, or `x` itself where `βx > threshold` (PyTorch's switch to the
/// linear branch, which also keeps `e^(βx)` from overflowing).
#[inline(always)]
fn softplus<T: Float>(x: T, beta: T, threshold: T) -> T {
    let bx = x * beta;
    if bx > threshold {
        x
    } else {
        bx.exp().ln_1p() / beta
    }
}

/// `x^e`, exact for small integer exponents (PyTorch's pow is exact there too).
fn pow<T: Float>(x: T, e: f64) -> T {
    if e == 2.0 {
        x * x
    } else if e.fract() == 0.0 && e.abs() <= 64.0 {
        x.powi(e as i32)
    } else {
        x.powf(T::lit(e))
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn int_error(op: &str, t: &Tensor) -> ! {
    panic!(
        "{op}: needs a floating-point tensor, got int64 {:?}; convert with .float()",
        t.shape()
    )
}

// The kernels below name the variant inside each closure, for the cheap functions, so that
// the `match` in `f`/`df` folds away and the loop vectorises: a variant captured as a value
// is data to the loop, and matching it per element made ReLU cost 3.5 ns an element. The
// other transcendental ones, whose cost is the libm call itself, share one loop. The exact
// GELU has its own op below (NOTE [ GELU saves its derivative ]).

fn forward_kernel<T: Float>(a: &kernel::Arr<T>, op: Unary) -> kernel::Arr<T> {
    match op {
        Unary::Relu => kernel::map(a, |v| Unary::Relu.f(v)),
        Unary::Neg => kernel::map(a, |v| Unary::Neg.f(v)),
        Unary::Abs => kernel::map(a, |v| Unary::Abs.f(v)),
        Unary::LeakyRelu(s) => kernel::map(a, move |v| Unary::LeakyRelu(s).f(v)),
        Unary::Clamp(lo, hi) => kernel::map(a, move |v| Unary::Clamp(lo, hi).f(v)),
        op => kernel::map(a, move |v| op.f(v)),
    }
}

fn backward_kernel<T: Float>(
    g: &kernel::Arr<T>,
    x: &kernel::Arr<T>,
    y: &kernel::Arr<T>,
    op: Unary,
) -> kernel::Arr<T> {
    match op {
        Unary::Relu => kernel::zip3(g, x, y, |g, x, y| g * Unary::Relu.df(x, y)),
        Unary::Neg => kernel::zip3(g, x, y, |g, x, y| g * Unary::Neg.df(x, y)),
        Unary::Abs => kernel::zip3(g, x, y, |g, x, y| g * Unary::Abs.df(x, y)),
        Unary::LeakyRelu(s) => {
            kernel::zip3(g, x, y, move |g, x, y| g * Unary::LeakyRelu(s).df(x, y))
        }
        Unary::Clamp(lo, hi) => {
            kernel::zip3(g, x, y, move |g, x, y| g * Unary::Clamp(lo, hi).df(x, y))
        }
        op => kernel::zip3(g, x, y, move |g, x, y| g * op.df(x, y)),
    }
}

// NOTE [ GELU saves its derivative ]
// The exact GELU `x Φ(x)` has the derivative `Φ(x) + x φ(x)`: the same `erf` as the value,
// and one `exp`. Forward computes both in one pass and saves the derivative instead of the
// input, so backward is `g · d`, a multiply, instead of a second pass through `erf` and
// `exp` (on W5, GELU's backward cost twice its forward before: 5% of the step). The
// memory saved is the same (one tensor of the input's size). The input's version is still
// checked, so changing it in place before backward is still an error, as in PyTorch. The
// loop is compiled a second time for AVX2 (8 lanes instead of SSE2's 4; the arithmetic and
// its order are the same, so the results are bit for bit those of the SSE2 loop): in f32
// `erf` (`erf_f32` in dtype.rs) and `exp` (NOTE [ Fast f32 exp ]) are branch-free and
// vectorise.

/// GELU's value `x Φ(x)` and derivative `Φ(x) + x φ(x)` at `x`.
#[inline(always)]
fn gelu_and_derivative<T: Float>(x: T) -> (T, T) {
    let half = T::lit(0.5);
    let cdf = half * (T::one() + (x * T::lit(std::f64::consts::FRAC_1_SQRT_2)).erf());
    let pdf = T::lit(FRAC_1_SQRT_2PI) * (-half * x * x).exp_fast();
    (x * cdf, cdf + x * pdf)
}

#[inline(always)]
fn gelu_loop<T: Float>(x: &[T], y: &mut [MaybeUninit<T>], d: &mut [MaybeUninit<T>]) {
    for ((&x, y), d) in x.iter().zip(y.iter_mut()).zip(d.iter_mut()) {
        let (v, dv) = gelu_and_derivative(x);
        y.write(v);
        d.write(dv);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gelu_loop_avx2<T: Float>(x: &[T], y: &mut [MaybeUninit<T>], d: &mut [MaybeUninit<T>]) {
    gelu_loop(x, y, d);
}

/// GELU's output and, when `with_derivative`, its derivative (NOTE [ GELU saves its
/// derivative ]).
fn gelu_kernel<T: Float>(a: &kernel::Arr<T>, with_derivative: bool) -> (Arr<T>, Option<Arr<T>>) {
    if !with_derivative {
        return (kernel::map(a, |v| gelu_and_derivative(v).0), None);
    }
    let a = if a.is_standard_layout() {
        a.clone()
    } else {
        a.as_standard_layout().into_owned().into_shared()
    };
    let x = a
        .as_slice()
        .unwrap_or_else(|| unreachable!("standard layout"));
    let fill = |x: &[T], y: &mut [MaybeUninit<T>], d: &mut [MaybeUninit<T>]| {
        let (y, d) = (&mut y[..x.len()], &mut d[..x.len()]);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked on the line above).
            unsafe { gelu_loop_avx2(x, y, d) };
            return;
        }
        gelu_loop(x, y, d);
    };
    // SAFETY: `fill` writes every element of both chunks (each is `x`'s length, the
    // reslicing above only asserts it).
    let (y, d) = unsafe { kernel::map2(x, &fill) };
    let shape = a.shape();
    (kernel::from_vec(shape, y), Some(kernel::from_vec(shape, d)))
}

/// The exact GELU as an op (NOTE [ GELU saves its derivative ]).
#[track_caller]
fn gelu(x: &Tensor) -> Tensor {
    let grad = needs_graph(&[x]);
    let (out, deriv) = match x.storage() {
        Storage::F32(a) => {
            let (y, d) = gelu_kernel(&a, grad);
            (Storage::F32(y), d.map(Storage::F32))
        }
        Storage::F64(a) => {
            let (y, d) = gelu_kernel(&a, grad);
            (Storage::F64(y), d.map(Storage::F64))
        }
        Storage::I64(_) => int_error("gelu", x),
    };
    record("gelu", out, &[x], || {
        let input = Saved::new(x, "gelu");
        // Its buffer returns to the cache with the graph (NOTE [ Buffer cache ] in memory.rs).
        let deriv = deriv.map_or_else(
            || unreachable!("a recorded gelu saved its derivative"),
            crate::memory::Hold::new,
        );
        move |g: &Tensor, _: &[bool]| {
            // Checks that the input was not changed in place since forward.
            input.get();
            let gs = g.storage();
            let grad = crate::dispatch_float!(gs, g => {
                let d = crate::ops::same_dtype(&deriv, &g);
                kernel::zip2(&g, &d, d.shape(), |g, d| g * d)
            }, int => unreachable!("gradients are floating point"));
            vec![Some(Tensor::from_storage(grad))]
        }
    })
}

#[track_caller]
fn unary(op: Unary, x: &Tensor) -> Tensor {
    let out = crate::dispatch_float!(x.storage(), a => forward_kernel(&a, op),
        int => int_error(op.name(), x));
    let out_tensor_storage = crate::memory::Hold::new(out.clone());
    record(op.name(), out, &[x], || {
        let input = Saved::new(x, op.name());
        // The output's storage is saved directly: saving the output tensor would make it
        // own its own grad_fn (a reference cycle).
        let output = op.uses_output().then_some(out_tensor_storage);
        move |g: &Tensor, _: &[bool]| {
            let x = input.get();
            let (gs, xs) = (g.storage(), x.storage());
            let ys = output
                .as_ref()
                .map_or_else(|| xs.clone(), |y| Storage::clone(y));
            let grad = crate::dispatch_float!(gs, g => {
                let x = crate::ops::same_dtype(&xs, &g);
                let y = crate::ops::same_dtype(&ys, &g);
                backward_kernel(&g, &x, &y, op)
            }, int => unreachable!("gradients are floating point"));
            vec![Some(Tensor::from_storage(grad))]
        }
    })
}

impl Tensor {
    /// `-self`.
    #[track_caller]
    pub fn neg(&self) -> Tensor {
        unary(Unary::Neg, self)
    }

    /// `e^self`, element-wise.
    #[track_caller]
    pub fn exp(&self) -> Tensor {
        unary(Unary::Exp, self)
    }

    /// The natural logarithm, element-wise.
    #[track_caller]
    pub fn log(&self) -> Tensor {
        unary(Unary::Log, self)
    }

    /// The square root, element-wise.
    #[track_caller]
    pub fn sqrt(&self) -> Tensor {
        unary(Unary::Sqrt, self)
    }

    /// The absolute value, element-wise (gradient 0 at 0, as in PyTorch).
    #[track_caller]
    pub fn abs(&self) -> Tensor {
        unary(Unary::Abs, self)
    }

    /// `self^exponent`, element-wise, for a scalar exponent.
    #[track_caller]
    pub fn pow(&self, exponent: f64) -> Tensor {
        unary(Unary::Pow(exponent), self)
    }

    /// `max(self, 0)`, element-wise.
    #[track_caller]
    pub fn relu(&self) -> Tensor {
        unary(Unary::Relu, self)
    }

    /// `self` where positive, `negative_slope * self` elsewhere.
    #[track_caller]
    pub fn leaky_relu(&self, negative_slope: f64) -> Tensor {
        unary(Unary::LeakyRelu(negative_slope), self)
    }

    /// `1 / (1 + e^-self)`, element-wise, stable for large |x|.
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor {
        unary(Unary::Sigmoid, self)
    }

    /// The hyperbolic tangent, element-wise.
    #[track_caller]
    pub fn tanh(&self) -> Tensor {
        unary(Unary::Tanh, self)
    }

    /// GELU, exact form: `x · Φ(x)` with the normal CDF Φ (PyTorch's `approximate='none'`).
    #[track_caller]
    pub fn gelu(&self) -> Tensor {
        gelu(self)
    }

    /// GELU, tanh approximation (PyTorch's `approximate='tanh'`).
    #[track_caller]
    pub fn gelu_tanh(&self) -> Tensor {
        unary(Unary::GeluTanh, self)
    }

    /// Limits every element to `[min, max]`; either bound may be `None`. The gradient is 1
    /// inside the bounds and 0 outside.
    #[track_caller]
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Tensor {
        unary(Unary::Clamp(min, max), self)
    }

    /// The sine, element-wise.
    #[track_caller]
    pub fn sin(&self) -> Tensor {
        unary(Unary::Sin, self)
    }

    /// The cosine, element-wise.
    #[track_caller]
    pub fn cos(&self) -> Tensor {
        unary(Unary::Cos, self)
    }

    /// `1 / sqrt(self)`, element-wise.
    #[track_caller]
    pub fn rsqrt(&self) -> Tensor {
        unary(Unary::Rsqrt, self)
    }

    /// SiLU (swish), `x · sigmoid(x)`, element-wise.
    #[track_caller]
    pub fn silu(&self) -> Tensor {
        unary(Unary::Silu, self)
    }

    /// Mish, `x · tanh(softplus(x))`, element-wise (softplus with PyTorch's `beta = 1`,
    /// `threshold = 20`).
    #[track_caller]
    pub fn mish(&self) -> Tensor {
        unary(Unary::Mish, self)
    }

    /// `log(1 + e^(beta·x)) / beta`, element-wise, and `x` itself where
    /// `beta·x > threshold` (PyTorch's `softplus(x, beta, threshold)`; its defaults are
    /// `beta = 1`, `threshold = 20`).
    ///
    /// # Panics
    /// If `beta` is zero.
    #[track_caller]
    pub fn softplus(&self, beta: f64, threshold: f64) -> Tensor {
        if beta == 0.0 {
            panic!("softplus: beta must be non-zero, got {beta}");
        }
        unary(Unary::Softplus(beta, threshold), self)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck;
    use crate::tensor::Tensor;

    #[test]
    fn new_unary_backwards_match_finite_differences() {
        let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0, 0.7, -0.4, 1.6], &[2, 3]);
        let pos = Tensor::from_vec(vec![0.3f64, 1.2, 2.0, 0.7, 0.4, 1.6], &[2, 3]);
        type Op = fn(&Tensor) -> Tensor;
        let ops: [(&str, Op); 7] = [
            ("sin", |t| t.sin()),
            ("cos", |t| t.cos()),
            ("silu", |t| t.silu()),
            ("mish", |t| t.mish()),
            ("softplus", |t| t.softplus(1.0, 20.0)),
            // beta 2, threshold 1: 2.0 and 1.6 take the linear branch.
            ("softplus_linear", |t| t.softplus(2.0, 1.0)),
            ("rsqrt", |t| t.rsqrt()),
        ];
        for (name, op) in ops {
            let input = if name == "rsqrt" { &pos } else { &x };
            let input = input.detach().requires_grad_(true);
            // x is used twice so that accumulation is exercised.
            gradcheck(|v| &op(&v[0]) * &v[0], &[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn softplus_switches_to_identity_above_threshold() {
        let x = Tensor::from_vec(vec![30.0f64, 0.0], &[2]);
        let y = x.softplus(1.0, 20.0).to_vec::<f64>();
        // 30 > 20: x itself; softplus(0) = ln 2
        assert_eq!(y[0], 30.0);
        assert!((y[1] - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn relu_passes_nan_through_as_pytorch_does() {
        let x = Tensor::from_vec(vec![f32::NAN, -1.0, 2.0], &[3]);
        let y = x.relu().to_vec::<f32>();
        assert!(y[0].is_nan(), "relu(NaN) = {}", y[0]);
        assert_eq!(&y[1..], [0.0, 2.0]);
    }
}
