//! Layer normalisation as one op: statistics, normalisation and the affine transform in one
//! pass over each row forward, and the closed-form gradients of input, weight and bias in
//! one pass backward.
//!
//! Written as a composite (mean, subtract, square, mean, add, sqrt, divide, multiply, add)
//! it made nine full-size temporaries forward and as many backward; in W5 (a tiny GPT, five
//! LayerNorms of `[32·64, 128]` per step) that was the largest cost after the matrix
//! products. Backward, with `x̂ = (x - μ)·r` (`r = 1/σ`) and `ĝ = g·w`:
//! `dx = r·(ĝ - mean(ĝ) - x̂·mean(ĝ·x̂))`, `dw = Σ_rows g·x̂`, `db = Σ_rows g`.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
use crate::ops::kernel::{Arr, from_vec, lane_dot, lane_sum};
use crate::parallel::PARALLEL_ELEMS;
use crate::tensor::Tensor;

#[cold]
#[inline(never)]
#[track_caller]
fn shape_error(what: &str, shape: &[usize], normalized_shape: &[usize]) -> ! {
    panic!(
        "layer_norm: {what} {shape:?} does not fit normalized_shape {normalized_shape:?}; the \
         input must end with it and weight and bias must equal it"
    )
}

/// Row statistics and output, for `rows` rows of `d` elements.
struct Forward<T> {
    y: Vec<T>,
    mean: Vec<T>,
    rstd: Vec<T>,
}

/// The rows' statistics and outputs, on the CPU's widest vectors (AVX2 where it has it:
/// the same arithmetic in the same order, so the same results).
fn forward_rows<T: Float>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: T,
    out: (&mut [T], &mut [T], &mut [T]),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above).
        unsafe { forward_rows_avx2(x, d, w, b, eps, out) };
        return;
    }
    forward_rows_body(x, d, w, b, eps, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_rows_avx2<T: Float>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: T,
    out: (&mut [T], &mut [T], &mut [T]),
) {
    forward_rows_body(x, d, w, b, eps, out);
}

#[inline(always)]
fn forward_rows_body<T: Float>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: T,
    (y, mean, rstd): (&mut [T], &mut [T], &mut [T]),
) {
    let inv_d = T::one() / T::lit(d as f64);
    for (((row, out), m), r) in x
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        // Two passes over a row that sits in L1: exact enough in f32, unlike Σx² - (Σx)².
        let mu = lane_sum(row, |v| v) * inv_d;
        let var = lane_sum(row, |v| (v - mu) * (v - mu)) * inv_d;
        let s = T::one() / (var + eps).sqrt();
        *m = mu;
        *r = s;
        match (w, b) {
            (Some(w), Some(b)) => {
                for (((o, &v), &w), &b) in out.iter_mut().zip(row).zip(w).zip(b) {
                    *o = (v - mu) * s * w + b;
                }
            }
            (Some(w), None) => {
                for ((o, &v), &w) in out.iter_mut().zip(row).zip(w) {
                    *o = (v - mu) * s * w;
                }
            }
            (None, Some(b)) => {
                for ((o, &v), &b) in out.iter_mut().zip(row).zip(b) {
                    *o = (v - mu) * s + b;
                }
            }
            (None, None) => {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = (v - mu) * s;
                }
            }
        }
    }
}

fn forward<T: Float>(x: &[T], d: usize, w: Option<&[T]>, b: Option<&[T]>, eps: f64) -> Forward<T> {
    let rows = x.len() / d;
    let mut out = Forward {
        y: crate::memory::filled(x.len(), T::zero()),
        mean: vec![T::zero(); rows],
        rstd: vec![T::zero(); rows],
    };
    let eps = T::lit(eps);
    if x.len() >= PARALLEL_ELEMS && rows >= 2 && rayon::current_num_threads() >= 2 {
        let half = rows / 2;
        let (x0, x1) = x.split_at(half * d);
        let (y0, y1) = out.y.split_at_mut(half * d);
        let (m0, m1) = out.mean.split_at_mut(half);
        let (r0, r1) = out.rstd.split_at_mut(half);
        rayon::join(
            || forward_rows(x0, d, w, b, eps, (y0, m0, r0)),
            || forward_rows(x1, d, w, b, eps, (y1, m1, r1)),
        );
    } else {
        forward_rows(x, d, w, b, eps, (&mut out.y, &mut out.mean, &mut out.rstd));
    }
    out
}

/// The input gradient of `rows` rows into `dx`, and the weight and bias gradients added
/// into `dw`, `db` (length `d`), on the CPU's widest vectors (as [`forward_rows`]).
#[allow(clippy::too_many_arguments)]
fn backward_rows<T: Float>(
    g: &[T],
    x: &[T],
    d: usize,
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    dx: &mut [T],
    dwb: (&mut [T], &mut [T]),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above).
        unsafe { backward_rows_avx2(g, x, d, mean, rstd, w, dx, dwb) };
        return;
    }
    backward_rows_body(g, x, d, mean, rstd, w, dx, dwb);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn backward_rows_avx2<T: Float>(
    g: &[T],
    x: &[T],
    d: usize,
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    dx: &mut [T],
    dwb: (&mut [T], &mut [T]),
) {
    backward_rows_body(g, x, d, mean, rstd, w, dx, dwb);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows_body<T: Float>(
    g: &[T],
    x: &[T],
    d: usize,
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    dx: &mut [T],
    (dw, db): (&mut [T], &mut [T]),
) {
    let inv_d = T::one() / T::lit(d as f64);
    let mut gw = vec![T::zero(); d];
    let mut xhat = vec![T::zero(); d];
    for ((((g, x), dx), &mu), &r) in g
        .chunks_exact(d)
        .zip(x.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(mean)
        .zip(rstd)
    {
        for (xh, &x) in xhat.iter_mut().zip(x) {
            *xh = (x - mu) * r;
        }
        match w {
            Some(w) => gw
                .iter_mut()
                .zip(g)
                .zip(w)
                .for_each(|((o, &g), &w)| *o = g * w),
            None => gw.copy_from_slice(g),
        }
        let a = lane_sum(&gw, |v| v) * inv_d;
        let c = lane_dot(&gw, &xhat) * inv_d;
        for ((dx, &gw), &xh) in dx.iter_mut().zip(&gw).zip(&xhat) {
            *dx = r * (gw - a - xh * c);
        }
        if !dw.is_empty() {
            for ((dw, &g), &xh) in dw.iter_mut().zip(g).zip(&xhat) {
                *dw += g * xh;
            }
        }
        if !db.is_empty() {
            for (db, &g) in db.iter_mut().zip(g) {
                *db += g;
            }
        }
    }
}

/// Gradients of input, weight and bias (`dw`/`db` empty when not wanted).
struct Backward<T> {
    dx: Vec<T>,
    dw: Vec<T>,
    db: Vec<T>,
}

#[allow(clippy::too_many_arguments)]
fn backward<T: Float>(
    g: &[T],
    x: &[T],
    d: usize,
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    want_w: bool,
    want_b: bool,
) -> Backward<T> {
    let rows = x.len() / d;
    let stat = |want: bool| if want { vec![T::zero(); d] } else { vec![] };
    let mut out = Backward {
        dx: crate::memory::filled(x.len(), T::zero()),
        dw: stat(want_w),
        db: stat(want_b),
    };
    if x.len() >= PARALLEL_ELEMS && rows >= 2 && rayon::current_num_threads() >= 2 {
        let half = rows / 2;
        let (dw1, db1) = (&mut stat(want_w), &mut stat(want_b));
        let (dx0, dx1) = out.dx.split_at_mut(half * d);
        let (g0, g1) = g.split_at(half * d);
        let (x0, x1) = x.split_at(half * d);
        let (m0, m1) = mean.split_at(half);
        let (r0, r1) = rstd.split_at(half);
        let (dw0, db0) = (&mut out.dw, &mut out.db);
        rayon::join(
            || backward_rows(g0, x0, d, m0, r0, w, dx0, (dw0, db0)),
            || backward_rows(g1, x1, d, m1, r1, w, dx1, (dw1, db1)),
        );
        out.dw
            .iter_mut()
            .zip(dw1.iter())
            .for_each(|(a, &b)| *a += b);
        out.db
            .iter_mut()
            .zip(db1.iter())
            .for_each(|(a, &b)| *a += b);
    } else {
        backward_rows(
            g,
            x,
            d,
            mean,
            rstd,
            w,
            &mut out.dx,
            (&mut out.dw, &mut out.db),
        );
    }
    out
}

/// A contiguous copy of `a`'s values (free when it already is contiguous).
fn contiguous<T: Float>(a: &Arr<T>) -> Arr<T> {
    if a.is_standard_layout() {
        a.clone()
    } else {
        a.as_standard_layout().into_owned().into_shared()
    }
}

/// `F.layer_norm(input, normalized_shape, weight, bias, eps)` as one op; see the module docs.
#[track_caller]
pub(crate) fn layer_norm(
    input: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Tensor {
    let shape = input.shape();
    let k = normalized_shape.len();
    if shape.len() < k || shape[shape.len() - k..] != *normalized_shape {
        shape_error("input", &shape, normalized_shape);
    }
    for t in [weight, bias].into_iter().flatten() {
        if t.shape() != normalized_shape {
            shape_error("weight or bias", &t.shape(), normalized_shape);
        }
    }
    let d: usize = normalized_shape.iter().product();
    if d == 0 || input.numel() == 0 {
        return input.mul_scalar(0.0);
    }
    let xs = input.storage();
    let (ws, bs) = (weight.map(Tensor::storage), bias.map(Tensor::storage));
    for s in [&ws, &bs].into_iter().flatten() {
        if s.dtype() != xs.dtype() {
            crate::ops::binary::dtype_error("layer_norm", &xs, s);
        }
    }
    macro_rules! run {
        ($variant:ident, $x:expr) => {{
            let x = contiguous($x);
            let slice = |s: &Option<Storage>| match s {
                Some(Storage::$variant(a)) => Some(contiguous(a)),
                _ => None,
            };
            let (w, b) = (slice(&ws), slice(&bs));
            let f = forward(
                x.as_slice().unwrap_or_default(),
                d,
                w.as_ref().and_then(|w| w.as_slice()),
                b.as_ref().and_then(|b| b.as_slice()),
                eps,
            );
            let rows = f.mean.len();
            let stats = (
                Storage::$variant(from_vec(&[rows], f.mean)),
                Storage::$variant(from_vec(&[rows], f.rstd)),
            );
            (Storage::$variant(from_vec(&shape, f.y)), stats)
        }};
    }
    let (out, (mean, rstd)) = match &xs {
        Storage::F32(x) => run!(F32, x),
        Storage::F64(x) => run!(F64, x),
        Storage::I64(_) => panic!(
            "layer_norm: needs a floating-point tensor, got int64 {shape:?}; convert with .float()"
        ),
    };
    let mut inputs = vec![input];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    let stat_shape = normalized_shape.to_vec();
    record("layer_norm", out, &inputs, || {
        let x = Saved::new(input, "layer_norm");
        let w = weight.map(|w| Saved::new(w, "layer_norm"));
        move |g: &Tensor, needs: &[bool]| {
            let want_w = has_w && needs[1];
            let want_b = has_b && needs[1 + usize::from(has_w)];
            let (xs, ws) = (x.get().storage(), w.as_ref().map(|w| w.get().storage()));
            let (dx, dw, db) = crate::dispatch_float_tuple!(g.storage(), g => {
                let g = contiguous(&g);
                let x = contiguous(&crate::ops::same_dtype(&xs, &g));
                let w = ws.as_ref().map(|w| contiguous(&crate::ops::same_dtype(w, &g)));
                let mean = crate::ops::same_dtype(&mean, &g);
                let rstd = crate::ops::same_dtype(&rstd, &g);
                let r = backward(
                    g.as_slice().unwrap_or_default(),
                    x.as_slice().unwrap_or_default(),
                    d,
                    mean.as_slice().unwrap_or_default(),
                    rstd.as_slice().unwrap_or_default(),
                    w.as_ref().and_then(|w| w.as_slice()),
                    want_w,
                    want_b,
                );
                (
                    Some(from_vec(g.shape(), r.dx)),
                    want_w.then(|| from_vec(&stat_shape, r.dw)),
                    want_b.then(|| from_vec(&stat_shape, r.db)),
                )
            });
            let mut grads = vec![dx.map(Tensor::from_storage)];
            if has_w {
                grads.push(dw.map(Tensor::from_storage));
            }
            if has_b {
                grads.push(db.map(Tensor::from_storage));
            }
            grads
        }
    })
}
