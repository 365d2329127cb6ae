//! [`BatchNorm1d`] and [`BatchNorm2d`]: normalisation over the batch (and spatial)
//! dimensions per channel, with running statistics for evaluation.
//!
//! One op forward and one backward (NOTE [ Batch norm kernel ]); the running statistics are
//! updated in place outside the graph, as PyTorch does.

use crate::autograd::graph::{Saved, record};
use crate::autograd::no_grad;
use crate::dtype::{Element, Float, Storage};
use crate::nn::Module;
use crate::nn::forward::Forward;
use crate::nn::module::{py_bool, py_float};
use crate::nn::parameter::{Buffer, Parameter};
use crate::ops::kernel::from_vec;
use crate::parallel::{PARALLEL_ELEMS, collect_vec};
use crate::tensor::Tensor;

/// The state both batch norms share.
struct Stats<'a> {
    name: &'static str,
    num_features: usize,
    eps: f64,
    momentum: Option<f64>,
    weight: Option<&'a Parameter>,
    bias: Option<&'a Parameter>,
    running_mean: Option<&'a Buffer>,
    running_var: Option<&'a Buffer>,
    num_batches_tracked: Option<&'a Buffer>,
    training: bool,
}

impl Stats<'_> {
    #[track_caller]
    fn forward(&self, x: &Tensor, dims: &[usize]) -> Tensor {
        let shape = x.shape();
        if !dims.contains(&shape.len()) || shape[1] != self.num_features {
            panic!(
                "{}({}): expected a {}-D input with {} channels in dimension 1, got {shape:?}",
                self.name,
                self.num_features,
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.num_features
            );
        }
        let running = self.running_mean.zip(self.running_var);
        let use_running = running.is_some() && !self.training;
        let (y, stats) = batch_norm(
            x,
            self.weight.map(|w| &**w),
            self.bias.map(|b| &**b),
            running.filter(|_| use_running).map(|(m, v)| (&**m, &**v)),
            self.eps,
        );
        if self.training
            && let Some((mean, var)) = stats
        {
            let n = x.numel() / self.num_features;
            self.update(&mean, &var, n);
        }
        y
    }

    /// `running = (1 − momentum)·running + momentum·batch`, with the unbiased variance;
    /// `momentum = None` gives the cumulative average `1 / num_batches_tracked`.
    fn update(&self, mean: &Tensor, var: &Tensor, n: usize) {
        let (Some(rm), Some(rv)) = (self.running_mean, self.running_var) else {
            return;
        };
        no_grad(|| {
            let mut count = 1.0;
            if let Some(nbt) = self.num_batches_tracked {
                nbt.add_(&Tensor::from_vec(vec![1i64], &[]));
                count = nbt.item();
            }
            let m = self.momentum.unwrap_or(1.0 / count);
            let unbiased = n as f64 / (n.max(2) - 1) as f64;
            let mean = mean.to_dtype(rm.dtype());
            let var = var.to_dtype(rv.dtype());
            rm.mul_scalar_(1.0 - m).add_scaled_(&mean, m);
            rv.mul_scalar_(1.0 - m).add_scaled_(&var, m * unbiased);
        });
    }

    fn describe(&self) -> String {
        let momentum = self.momentum.map_or_else(|| "None".to_string(), py_float);
        let affine = self.weight.is_some();
        format!(
            "{}, eps={}, momentum={momentum}, affine={}, bias={}, track_running_stats={}",
            self.num_features,
            py_float(self.eps),
            py_bool(affine),
            py_bool(self.bias.is_some()),
            py_bool(self.running_mean.is_some())
        )
    }
}

// NOTE [ Batch norm kernel ]
// `y = (x − mean_c) · invstd_c · w_c + b_c` over a contiguous `[N, C, S]` view of the input
// (S = H·W for images, L for sequences, 1 for `[N, C]`), as one pass for the per-channel
// statistics and one for the output, instead of the six broadcasting ops it takes when
// composed. The statistics are shifted sums (by the channel's first value) accumulated in
// eight lanes of T per row and in f64 across rows: one pass, and no cancellation when the
// mean is large against the spread. The backward is the closed form
//   dx = w·invstd · (g − Σg / M − x̂ · Σ(g·x̂) / M),  dw = Σ(g·x̂),  db = Σg
// with `M = N·S` and `x̂ = (x − mean)·invstd` recomputed from the saved input; with running
// statistics (evaluation) the batch terms drop out: `dx = w·invstd·g`. Large inputs split
// the statistics over channel halves and the element-wise passes over output halves on two
// threads.

#[inline(always)]
fn f64_of<T: Float>(v: T) -> f64 {
    <T as Element>::to_f64(v)
}

/// Per-channel `(Σ(a − k), Σ(a − k)·(b − k'))`-style sums: `f(c)` for each channel, on two
/// threads when the tensor is large.
fn per_channel<R: Send>(c: usize, numel: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if numel >= PARALLEL_ELEMS && c >= 2 && rayon::current_num_threads() >= 2 {
        let (lo, mut hi) = rayon::join(
            || (0..c / 2).map(&f).collect::<Vec<_>>(),
            || (c / 2..c).map(&f).collect::<Vec<_>>(),
        );
        let mut lo = lo;
        lo.append(&mut hi);
        lo
    } else {
        (0..c).map(f).collect()
    }
}

/// `(Σ(x − k), Σ(x − k)²)` over one row, in eight lanes so that it vectorises (with AVX2
/// kernels for f32, see [`simd`]).
#[inline]
fn shifted_sums<T: Float>(row: &[T], k: T) -> (f64, f64) {
    if let (Some(r), true) = (simd::as_f32(row), simd::available()) {
        // SAFETY: AVX2 and FMA were detected just above.
        return unsafe { simd::shifted_sums(r, f64_of(k) as f32) };
    }
    let (mut s, mut q) = ([T::zero(); 8], [T::zero(); 8]);
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for ch in chunks {
        for l in 0..8 {
            let d = ch[l] - k;
            s[l] += d;
            q[l] += d * d;
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        let d = v - k;
        s[l] += d;
        q[l] += d * d;
    }
    let total = |a: [T; 8]| a.iter().map(|&v| f64_of(v)).sum::<f64>();
    (total(s), total(q))
}

/// `(Σg, Σg·(x − m))` over one row, in eight lanes.
#[inline]
fn grad_sums<T: Float>(g: &[T], x: &[T], m: T) -> (f64, f64) {
    if let (Some(g), Some(x), true) = (simd::as_f32(g), simd::as_f32(x), simd::available()) {
        // SAFETY: AVX2 and FMA were detected just above.
        return unsafe { simd::grad_sums(g, x, f64_of(m) as f32) };
    }
    let (mut s, mut q) = ([T::zero(); 8], [T::zero(); 8]);
    let (gc, xc) = (g.chunks_exact(8), x.chunks_exact(8));
    let (gt, xt) = (gc.remainder(), xc.remainder());
    for (gs, xs) in gc.zip(xc) {
        for l in 0..8 {
            s[l] += gs[l];
            q[l] += gs[l] * (xs[l] - m);
        }
    }
    for (l, (&gv, &xv)) in gt.iter().zip(xt).enumerate() {
        s[l] += gv;
        q[l] += gv * (xv - m);
    }
    let total = |a: [T; 8]| a.iter().map(|&v| f64_of(v)).sum::<f64>();
    (total(s), total(q))
}

/// A new `[N, C, S]` array whose element `(n, c, s)` is `f(c, i)` for flat index `i`, written
/// row by row (one channel's `S` values at a time), in two halves when large.
///
/// # Safety
/// `f(c, i, out)` must initialise every element of `out` (the elements from flat index `i`
/// on, within one row), as for [`collect_vec`].
unsafe fn per_row<T: Float>(
    n: usize,
    c: usize,
    s: usize,
    f: impl Fn(usize, usize, &mut [std::mem::MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    // SAFETY: the loop hands each element of the chunk to `f` exactly once (the pieces
    // `out[j..j + take]` tile `0..out.len()`), and `f` initialises what it is handed.
    unsafe {
        collect_vec(n * c * s, |off, out| {
            let (mut i, mut j) = (off, 0);
            while j < out.len() {
                let row = i / s;
                let take = ((row + 1) * s - i).min(out.len() - j);
                f(row % c, i, &mut out[j..j + take]);
                i += take;
                j += take;
            }
        })
    }
}

/// The geometry `[N, C, S]` of a batch-norm input.
#[derive(Clone, Copy)]
struct Ncs {
    n: usize,
    c: usize,
    s: usize,
}

impl Ncs {
    fn row<'a, T>(&self, data: &'a [T], n: usize, c: usize) -> &'a [T] {
        &data[(n * self.c + c) * self.s..][..self.s]
    }
}

/// The forward kernel: the output, and with batch statistics their per-channel mean and
/// biased variance (f64) and `invstd`.
struct Normalized<T> {
    y: Vec<T>,
    mean: Vec<T>,
    invstd: Vec<T>,
    batch_var: Option<Vec<f64>>,
}

fn bn_forward<T: Float>(
    x: &[T],
    g: Ncs,
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    running: Option<(&[T], &[T])>,
    eps: f64,
) -> Normalized<T> {
    let (mean, invstd, batch_var): (Vec<T>, Vec<T>, _) = match running {
        Some((rm, rv)) => (
            rm.to_vec(),
            rv.iter()
                .map(|&v| T::lit(1.0 / (f64_of(v) + eps).sqrt()))
                .collect(),
            None,
        ),
        None => {
            let m = (g.n * g.s) as f64;
            let stats = per_channel(g.c, x.len(), |c| {
                if m == 0.0 {
                    return (f64::NAN, f64::NAN);
                }
                let k = g.row(x, 0, c)[0];
                let (mut s, mut q) = (0.0, 0.0);
                for n in 0..g.n {
                    let (a, b) = shifted_sums(g.row(x, n, c), k);
                    s += a;
                    q += b;
                }
                let d = s / m;
                (f64_of(k) + d, (q / m - d * d).max(0.0))
            });
            (
                stats.iter().map(|&(mean, _)| T::lit(mean)).collect(),
                stats
                    .iter()
                    .map(|&(_, var)| T::lit(1.0 / (var + eps).sqrt()))
                    .collect(),
                Some(stats.iter().map(|&(_, var)| var).collect()),
            )
        }
    };
    // y = x · scale + shift per channel.
    let scale: Vec<T> = (0..g.c)
        .map(|c| invstd[c] * weight.map_or(T::one(), |w| w[c]))
        .collect();
    let shift: Vec<T> = (0..g.c)
        .map(|c| bias.map_or(T::zero(), |b| b[c]) - mean[c] * scale[c])
        .collect();
    assert_eq!(
        x.len(),
        g.n * g.c * g.s,
        "batch_norm: input of the geometry"
    );
    let fast = simd::available();
    let row = |c: usize, i: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        let (a, b) = (scale[c], shift[c]);
        let x = &x[i..i + out.len()];
        if let (Some(x32), Some(out32), true) = (simd::as_f32(x), simd::as_f32_out(out), fast) {
            // SAFETY: AVX2 and FMA were detected above; `out32` is as long as `x32`.
            unsafe { simd::scale_shift(x32, f64_of(a) as f32, f64_of(b) as f32, out32) };
            return;
        }
        out.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write(v * a + b);
        });
    };
    // SAFETY: `x` holds all `N·C·S` elements (asserted), so both branches write every
    // element of `out`: the AVX2 kernel all `out32.len()` of them, the zip the rest.
    let y = unsafe { per_row(g.n, g.c, g.s, row) };
    Normalized {
        y,
        mean,
        invstd,
        batch_var,
    }
}

/// `(dx, dw, db)`, each present when asked for.
type BnGrads<T> = (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>);

/// The backward kernel: `(dx, dw, db)` for the gradients asked for.
#[allow(clippy::too_many_arguments)]
fn bn_backward<T: Float>(
    x: &[T],
    gy: &[T],
    g: Ncs,
    weight: Option<&[T]>,
    mean: &[T],
    invstd: &[T],
    batch_stats: bool,
    needs: [bool; 3],
) -> BnGrads<T> {
    let sums = per_channel(g.c, x.len(), |c| {
        let (mut s, mut q) = (0.0, 0.0);
        for n in 0..g.n {
            let (a, b) = grad_sums(g.row(gy, n, c), g.row(x, n, c), mean[c]);
            s += a;
            q += b;
        }
        (s, q)
    });
    // Σ g·x̂ = invstd · Σ g·(x − mean).
    let dw = needs[1].then(|| {
        sums.iter()
            .zip(invstd)
            .map(|(&(_, q), &is)| T::lit(q * f64_of(is)))
            .collect()
    });
    let db = needs[2].then(|| sums.iter().map(|&(s, _)| T::lit(s)).collect());
    let dx = needs[0].then(|| {
        let m = (g.n * g.s) as f64;
        // dx = a·g + b·(x − mean) + d per channel.
        let coef: Vec<(T, T, T)> = (0..g.c)
            .map(|c| {
                let is = f64_of(invstd[c]);
                let a = is * weight.map_or(1.0, |w| f64_of(w[c]));
                if !batch_stats {
                    return (T::lit(a), T::zero(), T::zero());
                }
                let (s, q) = sums[c];
                let b = -a * is * is * q / m;
                (
                    T::lit(a),
                    T::lit(b),
                    T::lit(-a * s / m - b * f64_of(mean[c])),
                )
            })
            .collect();
        let len = g.n * g.c * g.s;
        assert!(
            x.len() == len && gy.len() == len,
            "batch_norm: gradient of the geometry"
        );
        let fast = simd::available();
        let row = |c: usize, i: usize, out: &mut [std::mem::MaybeUninit<T>]| {
            let (a, b, d) = coef[c];
            let (gs, xs) = (&gy[i..i + out.len()], &x[i..i + out.len()]);
            if let (Some(g32), Some(x32), Some(o32), true) = (
                simd::as_f32(gs),
                simd::as_f32(xs),
                simd::as_f32_out(out),
                fast,
            ) {
                let [a, b, d] = [a, b, d].map(|v| f64_of(v) as f32);
                // SAFETY: AVX2 and FMA were detected above; the three slices have one
                // length.
                unsafe { simd::grad_input(g32, x32, a, b, d, o32) };
                return;
            }
            out.iter_mut()
                .zip(gs.iter().zip(xs))
                .for_each(|(o, (&gv, &xv))| {
                    o.write(a * gv + b * xv + d);
                });
        };
        // SAFETY: `gy` and `x` hold all `N·C·S` elements (asserted), so both branches write
        // every element of `out`: the AVX2 kernel all of them, the zip likewise.
        unsafe { per_row(g.n, g.c, g.s, row) }
    });
    (dx, dw, db)
}

fn contiguous<T: Float>(a: &ndarray::ArcArray<T, ndarray::IxDyn>) -> std::borrow::Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().copied().collect()),
    }
}

/// The values of a per-channel tensor as `T` (converted if its dtype differs).
fn channel_values<T: Float>(t: &Tensor) -> Vec<T> {
    t.to_vec::<T>()
}

#[cold]
#[inline(never)]
#[track_caller]
fn batch_norm_dtype_error(x: &Tensor, param: &Tensor) -> ! {
    panic!(
        "batch_norm: input is {} but a weight or bias is {}; convert one with .to_dtype()",
        x.dtype(),
        param.dtype()
    )
}

/// `batch_norm` over `x` `[N, C, …]` (contiguous or not) with optional affine parameters;
/// with `running` (mean, var) the statistics are those, otherwise the batch's, which are
/// then returned (mean and biased variance, as `[C]` tensors) for the running update.
#[track_caller]
fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    eps: f64,
) -> (Tensor, Option<(Tensor, Tensor)>) {
    for p in weight.iter().chain(bias.iter()) {
        if p.dtype() != x.dtype() {
            batch_norm_dtype_error(x, p);
        }
    }
    let shape = x.shape();
    let geom = Ncs {
        n: shape[0],
        c: shape[1],
        s: shape[2..].iter().product(),
    };
    match x.storage() {
        Storage::F32(a) => typed::<f32>(x, &a, geom, weight, bias, running, eps),
        Storage::F64(a) => typed::<f64>(x, &a, geom, weight, bias, running, eps),
        Storage::I64(_) => panic!("batch_norm: expected a floating-point input, got int64"),
    }
}

#[track_caller]
fn typed<T: Float>(
    x: &Tensor,
    a: &ndarray::ArcArray<T, ndarray::IxDyn>,
    geom: Ncs,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    eps: f64,
) -> (Tensor, Option<(Tensor, Tensor)>) {
    let shape = a.shape().to_vec();
    let data = contiguous(a);
    let w: Option<Vec<T>> = weight.map(channel_values);
    let b: Option<Vec<T>> = bias.map(channel_values);
    let run: Option<(Vec<T>, Vec<T>)> =
        running.map(|(m, v)| (channel_values(m), channel_values(v)));
    let out = bn_forward(
        &data,
        geom,
        w.as_deref(),
        b.as_deref(),
        run.as_ref().map(|(m, v)| (&m[..], &v[..])),
        eps,
    );
    let stats = out.batch_var.as_ref().map(|var| {
        (
            Tensor::from_vec(out.mean.clone(), &[geom.c]),
            Tensor::from_vec(var.clone(), &[geom.c]),
        )
    });
    let batch_stats = out.batch_var.is_some();
    let (mean, invstd) = (out.mean, out.invstd);
    let y = T::into_storage(from_vec(&shape, out.y));
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    let y = record("batch_norm", y, &inputs, || {
        let xs = Saved::new(x, "batch_norm");
        move |gy: &Tensor, needs: &[bool]| {
            let want = [
                needs[0],
                has_w && needs[1],
                has_b && needs[1 + usize::from(has_w)],
            ];
            let xa = T::from_storage(&xs.get().storage());
            let ga = T::from_storage(&gy.storage());
            let (xd, gd) = (contiguous(&xa), contiguous(&ga));
            let (dx, dw, db) = bn_backward(
                &xd,
                &gd,
                geom,
                w.as_deref(),
                &mean,
                &invstd,
                batch_stats,
                want,
            );
            let mut grads = vec![dx.map(|v| Tensor::from_vec(v, &xs.get().shape()))];
            if has_w {
                grads.push(dw.map(|v| Tensor::from_vec(v, &[geom.c])));
            }
            if has_b {
                grads.push(db.map(|v| Tensor::from_vec(v, &[geom.c])));
            }
            grads
        }
    });
    (y, stats)
}

macro_rules! batch_norm {
    ($(#[$doc:meta])* $name:ident, $dims:expr) => {
        $(#[$doc])*
        #[derive(Module)]
        #[module(extra_repr = "Self::describe")]
        pub struct $name {
            /// The learned scale `γ` `[num_features]`, or `None` when `affine` is false.
            pub weight: Option<Parameter>,
            /// The learned shift `β` `[num_features]`, or `None` when `affine` is false.
            pub bias: Option<Parameter>,
            /// The running mean used in eval mode, or `None` when `track_running_stats` is false.
            pub running_mean: Option<Buffer>,
            /// The running (unbiased) variance used in eval mode, or `None` when
            /// `track_running_stats` is false.
            pub running_var: Option<Buffer>,
            /// An i64 counter, as in PyTorch.
            pub num_batches_tracked: Option<Buffer>,
            #[module(skip)]
            num_features: usize,
            #[module(skip)]
            eps: f64,
            #[module(skip)]
            momentum: Option<f64>,
            #[module(training)]
            training: bool,
        }

        impl $name {
            /// Normalisation of `num_features` channels with PyTorch's defaults: `eps = 1e-5`,
            /// `momentum = 0.1`, affine (`weight` 1, `bias` 0), tracking running statistics
            /// (`running_mean` 0, `running_var` 1, `num_batches_tracked` 0).
            pub fn new(num_features: usize) -> $name {
                $name {
                    weight: Some(Parameter::new(Tensor::ones(&[num_features]))),
                    bias: Some(Parameter::new(Tensor::zeros(&[num_features]))),
                    running_mean: Some(Buffer::new(Tensor::zeros(&[num_features]))),
                    running_var: Some(Buffer::new(Tensor::ones(&[num_features]))),
                    num_batches_tracked: Some(Buffer::new(Tensor::from_vec(vec![0i64], &[]))),
                    num_features,
                    eps: 1e-5,
                    momentum: Some(0.1),
                    training: true,
                }
            }

            /// The value added to the variance for stability.
            pub fn with_eps(mut self, eps: f64) -> $name {
                self.eps = eps;
                self
            }

            /// The weight of each new batch in the running statistics; `None` gives the
            /// cumulative average.
            pub fn with_momentum(mut self, momentum: Option<f64>) -> $name {
                self.momentum = momentum;
                self
            }

            /// Whether to learn a per-channel scale and shift (PyTorch's `affine`).
            pub fn with_affine(mut self, affine: bool) -> $name {
                if !affine {
                    self.weight = None;
                    self.bias = None;
                }
                self
            }

            /// Whether to keep running statistics; without them, evaluation also uses
            /// batch statistics.
            pub fn with_track_running_stats(mut self, track: bool) -> $name {
                if !track {
                    self.running_mean = None;
                    self.running_var = None;
                    self.num_batches_tracked = None;
                }
                self
            }

            fn stats(&self) -> Stats<'_> {
                Stats {
                    name: stringify!($name),
                    num_features: self.num_features,
                    eps: self.eps,
                    momentum: self.momentum,
                    weight: self.weight.as_ref(),
                    bias: self.bias.as_ref(),
                    running_mean: self.running_mean.as_ref(),
                    running_var: self.running_var.as_ref(),
                    num_batches_tracked: self.num_batches_tracked.as_ref(),
                    training: self.training,
                }
            }

            fn describe(&self) -> String {
                self.stats().describe()
            }
        }

        impl<'a> Forward<&'a Tensor> for $name {
            type Output = Tensor;

            /// In training mode, normalises with the batch statistics and updates the
            /// running ones; in evaluation mode, uses the running statistics.
            #[track_caller]
            fn forward(&self, x: &'a Tensor) -> Tensor {
                let _scope = crate::nn::ModuleScope::enter(self);
                let y = self.stats().forward(x, &$dims);
                crate::nn::summary::record(self, &y);
                y
            }
        }
    };
}

batch_norm!(
    /// Batch normalisation of `[N, C]` or `[N, C, L]` inputs over all dimensions but `C`
    /// (PyTorch's `nn.BatchNorm1d`).
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{BatchNorm1d, Forward, Module}};
    /// let mut bn = BatchNorm1d::new(3);
    /// let x = Tensor::randn(&[8, 3]);
    /// let y = bn.forward(&x); // training: the batch's statistics, running ones updated
    /// assert!(y.mean_dim(0, false).to_vec::<f32>().iter().all(|m| m.abs() < 1e-5));
    /// assert_eq!(bn.num_batches_tracked.as_ref().unwrap().to_vec::<i64>(), [1]);
    /// bn.eval(); // evaluation: the running statistics
    /// assert_eq!(bn.forward(&x).shape(), [8, 3]);
    /// ```
    BatchNorm1d,
    [2, 3]
);

batch_norm!(
    /// Batch normalisation of `[N, C, H, W]` images over `N, H, W` (PyTorch's
    /// `nn.BatchNorm2d`).
    ///
    /// ```
    /// # extern crate torchlet_core as torchlet;
    /// use torchlet::{Tensor, nn::{BatchNorm2d, Conv2d, Forward, Module, ReLU, sequential}};
    /// let mut block = sequential![Conv2d::new(1, 4, 3), BatchNorm2d::new(4), ReLU];
    /// assert_eq!(block.forward(&Tensor::randn(&[2, 1, 8, 8])).shape(), [2, 4, 6, 6]);
    /// let keys: Vec<String> = block.state_dict().keys().cloned().collect();
    /// assert_eq!(
    ///     keys[2..],
    ///     ["1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    /// );
    /// block.eval();
    /// assert!(!block.is_training());
    /// ```
    BatchNorm2d,
    [4]
);

/// f32 kernels of the batch-norm passes with AVX2 and FMA, chosen at run time: the crate
/// is built for baseline x86-64, where the eight-lane loops above compiled to scalar code
/// (`perf` on W4: the statistics alone were about 10% of a training step).
mod simd {
    use crate::dtype::Float;
    use std::any::TypeId;
    use std::mem::MaybeUninit;

    /// Whether this CPU has the kernels' instructions.
    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `data` as f32 when `T` is f32.
    pub(super) fn as_f32<T: Float>(data: &[T]) -> Option<&[f32]> {
        (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| {
            // SAFETY: `T` is `f32` (same `TypeId`), so this is the same memory, length and type.
            unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), data.len()) }
        })
    }

    /// `out` as f32 slots when `T` is f32.
    pub(super) fn as_f32_out<T: Float>(
        out: &mut [MaybeUninit<T>],
    ) -> Option<&mut [MaybeUninit<f32>]> {
        (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| {
            // SAFETY: `T` is `f32` (same `TypeId`), so this is the same memory, length and type.
            unsafe {
                std::slice::from_raw_parts_mut(
                    out.as_mut_ptr().cast::<MaybeUninit<f32>>(),
                    out.len(),
                )
            }
        })
    }

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// The sum of the eight lanes of `v`, in f64.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn total(v: __m256) -> f64 {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight f32s.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().map(|&l| f64::from(l)).sum()
    }

    /// `(Σ(x − k), Σ(x − k)²)`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn shifted_sums(x: &[f32], k: f32) -> (f64, f64) {
        let kv = _mm256_set1_ps(k);
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 f32s.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(c.as_ptr()),
                    _mm256_loadu_ps(c.as_ptr().add(8)),
                )
            };
            let (a, b) = (_mm256_sub_ps(a, kv), _mm256_sub_ps(b, kv));
            s0 = _mm256_add_ps(s0, a);
            s1 = _mm256_add_ps(s1, b);
            q0 = _mm256_fmadd_ps(a, a, q0);
            q1 = _mm256_fmadd_ps(b, b, q1);
        }
        let (mut s, mut q) = (total(_mm256_add_ps(s0, s1)), total(_mm256_add_ps(q0, q1)));
        for &v in chunks.remainder() {
            let d = f64::from(v - k);
            s += d;
            q += d * d;
        }
        (s, q)
    }

    /// `(Σg, Σg·(x − m))`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]); `g` and `x` have one length.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_sums(g: &[f32], x: &[f32], m: f32) -> (f64, f64) {
        let x = &x[..g.len()];
        let mv = _mm256_set1_ps(m);
        let (mut s0, mut s1, mut q0, mut q1) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let (mut gc, mut xc) = (g.chunks_exact(16), x.chunks_exact(16));
        for (gs, xs) in (&mut gc).zip(&mut xc) {
            // SAFETY: `gs` and `xs` hold 16 f32s each.
            let (g0, g1, x0, x1) = unsafe {
                (
                    _mm256_loadu_ps(gs.as_ptr()),
                    _mm256_loadu_ps(gs.as_ptr().add(8)),
                    _mm256_loadu_ps(xs.as_ptr()),
                    _mm256_loadu_ps(xs.as_ptr().add(8)),
                )
            };
            s0 = _mm256_add_ps(s0, g0);
            s1 = _mm256_add_ps(s1, g1);
            q0 = _mm256_fmadd_ps(g0, _mm256_sub_ps(x0, mv), q0);
            q1 = _mm256_fmadd_ps(g1, _mm256_sub_ps(x1, mv), q1);
        }
        let (mut s, mut q) = (total(_mm256_add_ps(s0, s1)), total(_mm256_add_ps(q0, q1)));
        for (&gv, &xv) in gc.remainder().iter().zip(xc.remainder()) {
            s += f64::from(gv);
            q += f64::from(gv * (xv - m));
        }
        (s, q)
    }

    /// `out = x·a + b`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]); `out` is as long as `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scale_shift(x: &[f32], a: f32, b: f32, out: &mut [MaybeUninit<f32>]) {
        let out = &mut out[..x.len()];
        let (av, bv) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let mut xc = x.chunks_exact(8);
        let mut oc = out.chunks_exact_mut(8);
        for (xs, os) in (&mut xc).zip(&mut oc) {
            // SAFETY: `xs` and `os` hold eight f32s each.
            unsafe {
                let v = _mm256_fmadd_ps(_mm256_loadu_ps(xs.as_ptr()), av, bv);
                _mm256_storeu_ps(os.as_mut_ptr().cast::<f32>(), v);
            }
        }
        for (o, &v) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
            o.write(v.mul_add(a, b));
        }
    }

    /// `out = a·g + b·x + d`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA ([`available`]); the slices have one length.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_input(
        g: &[f32],
        x: &[f32],
        a: f32,
        b: f32,
        d: f32,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (x, out) = (&x[..g.len()], &mut out[..g.len()]);
        let (av, bv, dv) = (_mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_set1_ps(d));
        let (mut gc, mut xc) = (g.chunks_exact(8), x.chunks_exact(8));
        let mut oc = out.chunks_exact_mut(8);
        for ((gs, xs), os) in (&mut gc).zip(&mut xc).zip(&mut oc) {
            // SAFETY: `gs`, `xs` and `os` hold eight f32s each.
            unsafe {
                let v = _mm256_fmadd_ps(_mm256_loadu_ps(xs.as_ptr()), bv, dv);
                let v = _mm256_fmadd_ps(_mm256_loadu_ps(gs.as_ptr()), av, v);
                _mm256_storeu_ps(os.as_mut_ptr().cast::<f32>(), v);
            }
        }
        for ((o, &gv), &xv) in oc
            .into_remainder()
            .iter_mut()
            .zip(gc.remainder())
            .zip(xc.remainder())
        {
            o.write(a * gv + (b * xv + d));
        }
    }

    /// # Safety
    /// Never called: `available()` is false off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn shifted_sums(_: &[f32], _: f32) -> (f64, f64) {
        unreachable!("batch_norm: AVX2 kernels are only called on x86-64")
    }

    /// # Safety
    /// Never called: `available()` is false off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn grad_sums(_: &[f32], _: &[f32], _: f32) -> (f64, f64) {
        unreachable!("batch_norm: AVX2 kernels are only called on x86-64")
    }

    /// # Safety
    /// Never called: `available()` is false off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn scale_shift(_: &[f32], _: f32, _: f32, _: &mut [MaybeUninit<f32>]) {
        unreachable!("batch_norm: AVX2 kernels are only called on x86-64")
    }

    /// # Safety
    /// Never called: `available()` is false off x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn grad_input(
        _: &[f32],
        _: &[f32],
        _: f32,
        _: f32,
        _: f32,
        _: &mut [MaybeUninit<f32>],
    ) {
        unreachable!("batch_norm: AVX2 kernels are only called on x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn batch_norm_backward_matches_finite_differences() {
        crate::random::manual_seed(11);
        for shape in [[3usize, 2, 3, 4].as_slice(), &[5, 3], &[4, 2, 5]] {
            let c = shape[1];
            // An offset mean checks the shifted statistics.
            let x = (&Tensor::randn(shape).double() + 3.0).requires_grad_(true);
            let w = Tensor::randn(&[c]).double().requires_grad_(true);
            let b = Tensor::randn(&[c]).double().requires_grad_(true);
            let rm = Tensor::randn(&[c]).double();
            let rv = (&Tensor::rand(&[c]).double() + 0.5).detach();
            // A weighted sum keeps Σ(output) from being constant in x.
            let probe = Tensor::randn(shape).double();
            gradcheck(
                |v| &batch_norm(&v[0], Some(&v[1]), Some(&v[2]), None, 1e-5).0 * &probe,
                &[x.clone(), w.clone(), b.clone()],
            )
            .unwrap_or_else(|e| panic!("batch statistics {shape:?}: {e}"));
            gradcheck(
                |v| &batch_norm(&v[0], None, None, None, 1e-5).0 * &probe,
                std::slice::from_ref(&x),
            )
            .unwrap_or_else(|e| panic!("no affine {shape:?}: {e}"));
            gradcheck(
                |v| &batch_norm(&v[0], Some(&v[1]), Some(&v[2]), Some((&rm, &rv)), 1e-5).0 * &probe,
                &[x, w, b],
            )
            .unwrap_or_else(|e| panic!("running statistics {shape:?}: {e}"));
        }
    }

    #[test]
    fn f32_kernels_match_f64() {
        // Rows of 35 and 64·… values: the AVX2 kernels' 16- and 8-wide bodies and their
        // tails, with batch and with running statistics.
        crate::random::manual_seed(13);
        for shape in [[4usize, 3, 5, 7].as_slice(), &[2, 5, 16, 16], &[6, 4]] {
            let c = shape[1];
            let x64 = (&Tensor::randn(shape).double() * 2.0 + 1.5).detach();
            let w64 = Tensor::randn(&[c]).double();
            let b64 = Tensor::randn(&[c]).double();
            let probe64 = Tensor::randn(shape).double();
            let rm = Tensor::randn(&[c]).double();
            let rv = (&Tensor::rand(&[c]).double() + 0.5).detach();
            for running in [false, true] {
                let run = |dtype: crate::dtype::DType| {
                    let x = x64.to_dtype(dtype).detach().requires_grad_(true);
                    let w = w64.to_dtype(dtype).detach().requires_grad_(true);
                    let b = b64.to_dtype(dtype).detach().requires_grad_(true);
                    let (rm, rv) = (rm.to_dtype(dtype), rv.to_dtype(dtype));
                    let stats = running.then_some((&rm, &rv));
                    let y = batch_norm(&x, Some(&w), Some(&b), stats, 1e-5).0;
                    (&y * &probe64.to_dtype(dtype)).sum().backward();
                    [y, x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()]
                        .map(|t| t.to_vec::<f64>())
                };
                let (got, want) = (run(crate::dtype::DType::F32), run(crate::dtype::DType::F64));
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    for (a, b) in g.iter().zip(w) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{shape:?} running {running} output {k}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn batch_norm_statistics_match_a_two_pass_reference() {
        crate::random::manual_seed(12);
        let x = &Tensor::randn(&[4, 3, 5, 5]).double() * 2.0 + 100.0;
        let (y, stats) = batch_norm(&x, None, None, None, 0.0);
        let (mean, var) = stats.unwrap();
        let m = x.mean_dims(&[0, 2, 3], true);
        let centred = &x - &m;
        let v = (&centred * &centred).mean_dims(&[0, 2, 3], true);
        let expected = &centred / &v.sqrt();
        let err = (&y - &expected).abs().max().item();
        assert!(err < 1e-9, "{err}");
        let dm = (&mean - &m.reshape(&[-1])).abs().max().item();
        let dv = (&var - &v.reshape(&[-1])).abs().max().item();
        assert!(dm < 1e-12 && dv < 1e-9, "{dm} {dv}");
    }

    #[test]
    fn registry_order_and_repr_match_pytorch() {
        let bn = BatchNorm2d::new(4);
        let keys: Vec<_> = bn.state_dict().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked"
            ]
        );
        assert_eq!(
            bn.to_string(),
            "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"
        );
        // PyTorch 2.15: `print(nn.BatchNorm2d(4, affine=False))`.
        assert_eq!(
            BatchNorm2d::new(4).with_affine(false).to_string(),
            "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=True)"
        );
    }

    #[test]
    fn training_updates_running_stats_and_eval_uses_them() {
        let mut bn = BatchNorm1d::new(1);
        let x = Tensor::from_vec(vec![1.0f32, 3.0], &[2, 1]);
        let y = bn.forward(&x);
        assert_eq!(
            y.to_vec::<f32>()
                .iter()
                .map(|v| v.round())
                .collect::<Vec<_>>(),
            [-1.0, 1.0]
        );
        // mean 2, unbiased variance 2: 0.9·0 + 0.1·2 and 0.9·1 + 0.1·2.
        let rm = bn.running_mean.as_ref().unwrap().to_vec::<f32>()[0];
        let rv = bn.running_var.as_ref().unwrap().to_vec::<f32>()[0];
        assert!(
            (rm - 0.2).abs() < 1e-6 && (rv - 1.1).abs() < 1e-6,
            "{rm} {rv}"
        );
        assert_eq!(
            bn.num_batches_tracked.as_ref().unwrap().to_vec::<i64>(),
            [1]
        );
        bn.eval();
        let y = bn.forward(&x).to_vec::<f32>();
        assert!((y[0] - (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt()).abs() < 1e-6);
    }
}
