//! 2-D convolution (cross-correlation, as PyTorch's `conv2d`) by im2col and one GEMM per
//! sample, with its backward: `dWᵀ = Σₙ colsₙ · gₙᵀ`, `dx = col2im(Wᵀ · gₙ)`, `db = Σ g`.
//!
//! NOTE [ Convolution kernel ]
//! Chosen by profiling W4 (the main job's CNN, batch 64): per-sample GEMMs, with the batch in
//! two halves on two threads, beat one GEMM over the whole batch, which needs a
//! `C·kh·kw × N·OH·OW` column buffer (7 MB for W4's second conv) and a transpose of the
//! `[out, N·L]` result back to NCHW. Each sample's output is written straight into the NCHW
//! result with the bias added while the tile is in cache. im2col and col2im copy whole valid
//! row segments (the padding columns of a row are found once per kernel offset, not tested
//! per element). The weight gradient is computed transposed, `colsₙ · gₙᵀ`, so that the
//! columns are read in place as the GEMM's A and only the small `gₙ` is packed. Each
//! sample's columns are rebuilt in backward rather than kept from forward, so memory stays
//! at one sample's columns per thread.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
use crate::ops::gemm::{Epilogue, gemm};
use crate::ops::kernel::from_vec;
use crate::tensor::Tensor;
use ndarray::{ArcArray, ArrayView2, ArrayViewMut2, IxDyn};
use std::borrow::Cow;

/// The sizes of one convolution or pooling window walk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    /// The geometry of `kernel` sliding over an `[N, C, H, W]` input; `None` when the
    /// window does not fit or a stride is zero.
    pub(crate) fn new(
        x: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Geometry> {
        let &[n, c, h, w] = x else { return None };
        if stride.contains(&0) || kernel.contains(&0) {
            return None;
        }
        let (hp, wp) = (h + 2 * padding[0], w + 2 * padding[1]);
        if hp < kernel[0] || wp < kernel[1] {
            return None;
        }
        Some(Geometry {
            n,
            c,
            h,
            w,
            kh: kernel[0],
            kw: kernel[1],
            stride,
            padding,
            oh: (hp - kernel[0]) / stride[0] + 1,
            ow: (wp - kernel[1]) / stride[1] + 1,
        })
    }

    /// Input row (or column) for output position `o` and kernel offset `k`, if not padding.
    #[inline]
    pub(crate) fn source(
        o: usize,
        k: usize,
        stride: usize,
        pad: usize,
        size: usize,
    ) -> Option<usize> {
        (o * stride + k).checked_sub(pad).filter(|&i| i < size)
    }

    fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn l(&self) -> usize {
        self.oh * self.ow
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn conv2d_shape_error(x: &[usize], w: &[usize], stride: [usize; 2], padding: [usize; 2]) -> ! {
    if x.len() != 4 || w.len() != 4 {
        panic!(
            "conv2d: input {x:?} and weight {w:?} must both be 4-D ([N, C, H, W] and [out, in, kh, kw])"
        );
    }
    if x[1] != w[1] {
        panic!(
            "conv2d: input {x:?} has {} channels but weight {w:?} expects {}",
            x[1], w[1]
        );
    }
    panic!(
        "conv2d: kernel {:?} with stride {stride:?} and padding {padding:?} does not fit input {x:?}",
        &w[2..]
    )
}

fn contiguous<T: Float>(a: &ArcArray<T, IxDyn>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

fn view2<T>(data: &[T], rows: usize, cols: usize) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("conv2d: {rows}x{cols} block: {e}"))
}

fn view2_mut<T>(data: &mut [T], rows: usize, cols: usize) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("conv2d: {rows}x{cols} block: {e}"))
}

/// The output columns `lo..hi` whose input column `ox·stride + k − pad` lies inside
/// `0..size` (the rest read padding).
#[inline]
fn valid_range(out: usize, k: usize, stride: usize, pad: usize, size: usize) -> (usize, usize) {
    // ox·stride + k ≥ pad  and  ox·stride + k − pad ≤ size − 1.
    let lo = pad.saturating_sub(k).div_ceil(stride).min(out);
    let hi = if size + pad > k {
        ((size + pad - k - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// One sample `[C, H, W]` unfolded into columns `[C·kh·kw, OH·OW]` (zeros for padding).
fn im2col<T: Float>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (l, hw) = (g.l(), g.h * g.w);
    for (p, row) in cols.chunks_exact_mut(l).take(g.ckk()).enumerate() {
        let (c, i, j) = (p / (g.kh * g.kw), p / g.kw % g.kh, p % g.kw);
        im2col_row(&x[c * hw..(c + 1) * hw], g, i, j, row);
    }
}

/// Row `(c, i, j)` of the columns: the `[H, W]` plane of channel `c` seen through kernel
/// offset `(i, j)`, `OH·OW` values (zeros for padding). Whole valid row segments are
/// copied (the padding columns of a row are found once per offset, not tested per element).
fn im2col_row<T: Float>(plane: &[T], g: &Geometry, i: usize, j: usize, row: &mut [T]) {
    let [sh, sw] = g.stride;
    let (lo, hi) = valid_range(g.ow, j, sw, g.padding[1], g.w);
    if sh == 1 && sw == 1 && g.ow == g.w && lo < hi {
        // A "same" convolution: output rows are as long as input rows, so the valid rows
        // form one contiguous run in both; copy it at once (not a short copy per row),
        // then zero the padding columns at the ends of each row.
        let (oy0, oy1) = valid_range(g.oh, i, 1, g.padding[0], g.h);
        row[..oy0 * g.ow].fill(T::zero());
        row[oy1.max(oy0) * g.ow..].fill(T::zero());
        if oy0 < oy1 {
            let start = oy0 * g.ow + lo;
            let end = (oy1 - 1) * g.ow + hi;
            let from = (oy0 + i - g.padding[0]) * g.w + lo + j - g.padding[1];
            row[start..end].copy_from_slice(&plane[from..from + end - start]);
            for out in row[oy0 * g.ow..oy1 * g.ow].chunks_exact_mut(g.ow) {
                out[..lo].fill(T::zero());
                out[hi..].fill(T::zero());
            }
        }
        return;
    }
    for oy in 0..g.oh {
        let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
        let Some(iy) = Geometry::source(oy, i, sh, g.padding[0], g.h) else {
            out.fill(T::zero());
            continue;
        };
        let src = &plane[iy * g.w..(iy + 1) * g.w];
        out[..lo].fill(T::zero());
        out[hi..].fill(T::zero());
        if lo < hi {
            let first = lo * sw + j - g.padding[1];
            if sw == 1 {
                out[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
            } else {
                for (o, v) in out[lo..hi].iter_mut().zip(src[first..].iter().step_by(sw)) {
                    *o = *v;
                }
            }
        }
    }
}

/// [`im2col`] of one f32 sample written straight into the GEMM's packed-B layout (NOTE
/// [ Pre-packed B ] in `ops/gemm.rs`), which saves the GEMM its own packing pass over the
/// columns; `row` is scratch for one row of `OH·OW`.
fn im2col_packed(x: &[f32], g: &Geometry, pb: &mut [f32], row: &mut [f32]) {
    use crate::ops::gemm::{PACKED_KC as KC, PACKED_NR as NR};
    let (ckk, l, hw) = (g.ckk(), g.l(), g.h * g.w);
    let npad = l.div_ceil(NR) * NR;
    let row = &mut row[..l];
    for p in 0..ckk {
        let (c, i, j) = (p / (g.kh * g.kw), p / g.kw % g.kh, p % g.kw);
        im2col_row(&x[c * hw..(c + 1) * hw], g, i, j, row);
        let pc = p / KC * KC;
        let kc = KC.min(ckk - pc);
        let block = &mut pb[pc * npad..pc * npad + kc * npad];
        let mut strips = block.chunks_exact_mut(NR * kc);
        let full = row.chunks_exact(NR);
        let tail = full.remainder();
        // `full` first: `zip` asks its first iterator first, so the strip for the tail
        // is not taken when the full chunks run out.
        for (chunk, strip) in full.zip(&mut strips) {
            // Fixed-size copies compile to a few vector moves, not a `memcpy` call each.
            let chunk: &[f32; NR] = chunk.try_into().unwrap_or_else(|_| unreachable!());
            let dst: &mut [f32; NR] = (&mut strip[(p - pc) * NR..][..NR])
                .try_into()
                .unwrap_or_else(|_| unreachable!());
            *dst = *chunk;
        }
        if !tail.is_empty()
            && let Some(strip) = strips.next()
        {
            let dst = &mut strip[(p - pc) * NR..][..NR];
            dst[..tail.len()].copy_from_slice(tail);
            dst[tail.len()..].fill(0.0);
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input position it came
/// from.
fn col2im<T: Float>(cols: &[T], g: &Geometry, dx: &mut [T]) {
    let l = g.l();
    let [sh, sw] = g.stride;
    if g.stride == [1, 1] && g.kw == 3 && g.padding[1] == 1 && g.ow == g.w && g.w >= 2 {
        // A 3-wide "same" kernel: the three column offsets of a kernel row land on one
        // input row, so they are added in one pass over it, not three.
        let w = g.w;
        for c in 0..g.c {
            let plane = &mut dx[c * g.h * w..(c + 1) * g.h * w];
            for i in 0..g.kh {
                let at = |j: usize| &cols[((c * g.kh + i) * 3 + j) * l..][..l];
                let (r0, r1, r2) = (at(0), at(1), at(2));
                for oy in 0..g.oh {
                    let Some(iy) = Geometry::source(oy, i, 1, g.padding[0], g.h) else {
                        continue;
                    };
                    let d = &mut plane[iy * w..(iy + 1) * w];
                    let (a, b, e) = (&r0[oy * w..][..w], &r1[oy * w..][..w], &r2[oy * w..][..w]);
                    // d[x] += a[x + 1] + b[x] + e[x − 1], each term where it exists.
                    d[0] += a[1] + b[0];
                    d[w - 1] += b[w - 1] + e[w - 2];
                    d[1..w - 1]
                        .iter_mut()
                        .zip(&a[2..])
                        .zip(&b[1..w - 1])
                        .zip(&e[..w - 2])
                        .for_each(|(((d, &a), &b), &e)| *d += a + b + e);
                }
            }
        }
        return;
    }
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                let (lo, hi) = valid_range(g.ow, j, sw, g.padding[1], g.w);
                if lo >= hi {
                    continue;
                }
                let first = lo * sw + j - g.padding[1];
                for oy in 0..g.oh {
                    let Some(iy) = Geometry::source(oy, i, sh, g.padding[0], g.h) else {
                        continue;
                    };
                    let dst = &mut plane[iy * g.w + first..(iy + 1) * g.w];
                    let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                    if sw == 1 {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    } else {
                        dst.iter_mut()
                            .step_by(sw)
                            .zip(src)
                            .for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }
}

/// The sum of `row` in eight independent lanes: one running sum is a chain of dependent
/// additions, several times slower (it was most of the bias gradient's time on W4).
fn lane_sum<T: Float>(row: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for ch in chunks {
        for (l, &v) in lanes.iter_mut().zip(ch) {
            *l += v;
        }
    }
    lanes.iter().copied().sum::<T>() + tail.iter().copied().sum::<T>()
}

/// From this many multiply-adds on, the samples of a batch are split over two threads.
const PARALLEL_MACS: usize = 1 << 20;

/// Whether to split the `n` samples over two threads.
fn parallel(g: &Geometry, o: usize) -> bool {
    g.n >= 2 && g.n * o * g.ckk() * g.l() >= PARALLEL_MACS && rayon::current_num_threads() >= 2
}

/// Runs `f(first_sample, samples, out)` over the batch, in two halves on two threads when
/// `split`; `out` (with `per` elements per sample) is cut at the same sample.
fn halves<U: Send, R: Send>(
    n: usize,
    per: usize,
    out: &mut [U],
    split: bool,
    f: impl Fn(usize, usize, &mut [U]) -> R + Sync,
) -> (R, Option<R>) {
    if !split {
        return (f(0, n, out), None);
    }
    let mid = n / 2;
    let (lo, hi) = out.split_at_mut((mid * per).min(out.len()));
    let (a, b) = rayon::join(|| f(0, mid, lo), || f(mid, n - mid, hi));
    (a, Some(b))
}

/// `out[n] = W · im2col(x[n]) (+ bias)` for every sample, written straight into the NCHW
/// output, two halves of the batch on two threads for the larger layers.
fn forward<T: Float>(
    x: &ArcArray<T, IxDyn>,
    w: &ArcArray<T, IxDyn>,
    bias: Option<&[T]>,
    g: &Geometry,
) -> ArcArray<T, IxDyn> {
    let (x, w) = (contiguous(x), contiguous(w));
    let o = w.len() / g.ckk();
    let (ckk, l) = (g.ckk(), g.l());
    let sample = g.c * g.h * g.w;
    let mut out = crate::memory::filled(g.n * o * l, T::zero());
    let w2 = view2(&w, o, ckk);
    halves(g.n, o * l, &mut out, parallel(g, o), |first, count, out| {
        let mut cols = vec![T::zero(); ckk * l];
        for (s, outn) in out.chunks_exact_mut(o * l).enumerate().take(count) {
            let n = first + s;
            im2col(&x[n * sample..(n + 1) * sample], g, &mut cols);
            gemm(
                &w2,
                &view2(&cols, ckk, l),
                &mut view2_mut(outn, o, l),
                Epilogue::write(),
            );
            if let Some(b) = bias {
                for (row, &bv) in outn.chunks_exact_mut(l).zip(b) {
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    });
    from_vec(&[g.n, o, g.oh, g.ow], out)
}

/// [`forward`] for f32 with the columns packed as the GEMM's B directly
/// ([`im2col_packed`]) and the output written once, never zeroed first; needs
/// [`gemm::packed_b_supported`](crate::ops::gemm::packed_b_supported).
fn forward_packed(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    use crate::ops::gemm::{packed_b_len, sgemm_packed_b};
    let o = w.len() / g.ckk();
    let (ckk, l) = (g.ckk(), g.l());
    let sample = g.c * g.h * g.w;
    let len = g.n * o * l;
    let mut out: Vec<f32> = crate::memory::vec(len);
    let w2 = view2(w, o, ckk);
    let slots = &mut out.spare_capacity_mut()[..len];
    halves(g.n, o * l, slots, parallel(g, o), |first, count, out| {
        let mut pb = crate::memory::filled(packed_b_len(ckk, l), 0f32);
        let mut row = vec![0f32; l];
        for (s, outn) in out.chunks_exact_mut(o * l).enumerate().take(count) {
            let n = first + s;
            im2col_packed(&x[n * sample..(n + 1) * sample], g, &mut pb, &mut row);
            // SAFETY: the caller checked `packed_b_supported`; `outn` is `o` rows of `l`
            // writable floats, and without `accumulate` the GEMM writes each before any read.
            unsafe { sgemm_packed_b(&w2, &pb, l, outn.as_mut_ptr().cast::<f32>(), l, false) };
            let outn =
                // SAFETY: the GEMM above initialised all `o·l` values of `outn`.
                unsafe { std::slice::from_raw_parts_mut(outn.as_mut_ptr().cast::<f32>(), o * l) };
            if let Some(b) = bias {
                for (row, &bv) in outn.chunks_exact_mut(l).zip(b) {
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
        crate::memory::recycle(pb);
    });
    // SAFETY: the two halves wrote every sample's `o·l` outputs, `len` in all.
    unsafe { out.set_len(len) };
    out
}

type Grads<T> = (
    Option<ArcArray<T, IxDyn>>,
    Option<ArcArray<T, IxDyn>>,
    Option<ArcArray<T, IxDyn>>,
);

/// `(dx, dW, db)`: per sample `dWᵀ += colsₙ · gₙᵀ`, `dxₙ = col2im(Wᵀ · gₙ)`, `db += Σ gₙ`, the
/// columns rebuilt from x; two halves of the batch on two threads, their dW and db added.
fn backward<T: Float>(
    x: &ArcArray<T, IxDyn>,
    w: &ArcArray<T, IxDyn>,
    gy: &ArcArray<T, IxDyn>,
    g: &Geometry,
    needs: [bool; 3],
) -> Grads<T> {
    let (x, w, gy) = (contiguous(x), contiguous(w), contiguous(gy));
    let o = w.len() / g.ckk();
    let (ckk, l) = (g.ckk(), g.l());
    // Wᵀ `[C·kh·kw, out]` row-major, so that the GEMM reads it in place as A for every
    // sample instead of packing the transposed view each time.
    let mut wt = vec![T::zero(); if needs[0] { w.len() } else { 0 }];
    if needs[0] {
        for (oo, wrow) in w.chunks_exact(ckk).enumerate() {
            for (r, &v) in wrow.iter().enumerate() {
                wt[r * o + oo] = v;
            }
        }
    }
    let wt2 = view2(&wt, if needs[0] { ckk } else { 0 }, o);
    let sample = g.c * g.h * g.w;
    let gx_len = if needs[0] { x.len() } else { 0 };
    let mut gx: Vec<T> = crate::memory::vec(gx_len);
    let per = if needs[0] { sample } else { 0 };
    let slots = &mut gx.spare_capacity_mut()[..gx_len];
    let (first, second) = halves(g.n, per, slots, parallel(g, o), |first, count, gx| {
        let mut cols = crate::memory::filled(ckk * l, T::zero());
        let mut gw_n = vec![T::zero(); if needs[1] { o * ckk } else { 0 }];
        let mut gw = vec![T::zero(); gw_n.len()];
        let mut gb = vec![T::zero(); if needs[2] { o } else { 0 }];
        for s in 0..count {
            let n = first + s;
            let gyn = &gy[n * o * l..(n + 1) * o * l];
            let gn = view2(gyn, o, l);
            if needs[1] {
                // dWᵀ = cols · gₙᵀ: the columns are read in place as A, and only gₙ
                // (out × OH·OW) is packed, not the C·kh·kw × OH·OW columns.
                im2col(&x[n * sample..(n + 1) * sample], g, &mut cols);
                gemm(
                    &view2(&cols, ckk, l),
                    &gn.t(),
                    &mut view2_mut(&mut gw_n, ckk, o),
                    Epilogue::write(),
                );
                gw.iter_mut().zip(&gw_n).for_each(|(acc, &v)| *acc += v);
            }
            if needs[2] {
                for (acc, row) in gb.iter_mut().zip(gyn.chunks_exact(l)) {
                    *acc += lane_sum(row);
                }
            }
            if needs[0] {
                gemm(
                    &wt2,
                    &gn,
                    &mut view2_mut(&mut cols, ckk, l),
                    Epilogue::write(),
                );
                // Zeroed here, while it is about to be added to in cache, rather than
                // all at once up front.
                let dst = &mut gx[s * sample..(s + 1) * sample];
                dst.iter_mut().for_each(|v| {
                    v.write(T::zero());
                });
                let dst =
                    // SAFETY: every element of `dst` was just written.
                    unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<T>(), sample) };
                col2im(&cols, g, dst);
            }
        }
        crate::memory::recycle(cols);
        (gw, gb)
    });
    // The halves' dWᵀ `[C·kh·kw, out]` added and transposed to `[out, C·kh·kw]`.
    // SAFETY: with `needs[0]` both halves zeroed and then filled every sample's `sample`
    // values (`gx_len` in all); otherwise `gx_len` is 0.
    unsafe { gx.set_len(gx_len) };
    let (gw_t, mut gb) = first;
    let mut gw = crate::memory::filled(gw_t.len(), T::zero());
    for (r, row) in gw_t.chunks_exact(o.max(1)).enumerate() {
        for (oo, &v) in row.iter().enumerate() {
            gw[oo * ckk + r] = v;
        }
    }
    if let Some((gw2, gb2)) = second {
        for (r, row) in gw2.chunks_exact(o.max(1)).enumerate() {
            for (oo, &v) in row.iter().enumerate() {
                gw[oo * ckk + r] += v;
            }
        }
        gb.iter_mut().zip(&gb2).for_each(|(a, &b)| *a += b);
    }
    (
        needs[0].then(|| from_vec(&[g.n, g.c, g.h, g.w], gx)),
        needs[1].then(|| from_vec(&[o, g.c, g.kh, g.kw], gw)),
        needs[2].then(|| from_vec(&[o], gb)),
    )
}

impl Tensor {
    /// 2-D convolution of this `[N, C, H, W]` input with `weight` `[out, C, kh, kw]`
    /// (zero padding, dilation 1, one group), as `torch.nn.functional.conv2d` without bias.
    ///
    /// # Shapes
    /// `[N, C, H, W] → [N, out, (H + 2·ph − kh) / sh + 1, (W + 2·pw − kw) / sw + 1]`.
    ///
    /// # Panics
    /// If the shapes are not 4-D, the channels differ, the kernel does not fit the padded
    /// input, a stride is zero, or the dtypes differ.
    #[track_caller]
    pub fn conv2d(&self, weight: &Tensor, stride: [usize; 2], padding: [usize; 2]) -> Tensor {
        self.conv2d_with_bias(weight, None, stride, padding)
    }

    /// [`conv2d`](Tensor::conv2d) plus a per-channel `bias` `[out]`, added as the output is
    /// written (`torch.nn.functional.conv2d` with bias); its gradient is summed in the same
    /// backward pass.
    ///
    /// # Panics
    /// As [`conv2d`](Tensor::conv2d), and if `bias` is not `[out]` of the input's dtype.
    #[track_caller]
    pub fn conv2d_with_bias(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor {
        let (xs, ws) = (self.shape(), weight.shape());
        let geometry = (ws.len() == 4 && xs.len() == 4 && xs[1] == ws[1])
            .then(|| Geometry::new(&xs, [ws[2], ws[3]], stride, padding))
            .flatten();
        let Some(g) = geometry else {
            conv2d_shape_error(&xs, &ws, stride, padding)
        };
        if let Some(b) = bias
            && (b.shape() != ws[..1] || b.dtype() != weight.dtype())
        {
            conv2d_bias_error(&ws, &b.shape(), b.dtype(), weight.dtype());
        }
        let (sx, sw) = (self.storage(), weight.storage());
        let sb = bias.map(|b| b.storage());
        let out_shape = [g.n, ws[0], g.oh, g.ow];
        let out = match (&sx, &sw, &sb) {
            (Storage::F32(x), Storage::F32(w), None) if crate::ops::gemm::packed_b_supported() => {
                let y = forward_packed(&contiguous(x), &contiguous(w), None, &g);
                Storage::F32(from_vec(&out_shape, y))
            }
            (Storage::F32(x), Storage::F32(w), Some(Storage::F32(b)))
                if crate::ops::gemm::packed_b_supported() =>
            {
                let y = forward_packed(&contiguous(x), &contiguous(w), Some(&contiguous(b)), &g);
                Storage::F32(from_vec(&out_shape, y))
            }
            (Storage::F32(x), Storage::F32(w), None) => Storage::F32(forward(x, w, None, &g)),
            (Storage::F32(x), Storage::F32(w), Some(Storage::F32(b))) => {
                Storage::F32(forward(x, w, Some(&contiguous(b)), &g))
            }
            (Storage::F64(x), Storage::F64(w), None) => Storage::F64(forward(x, w, None, &g)),
            (Storage::F64(x), Storage::F64(w), Some(Storage::F64(b))) => {
                Storage::F64(forward(x, w, Some(&contiguous(b)), &g))
            }
            _ => crate::ops::binary::dtype_error("conv2d", &sx, &sw),
        };
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        let has_bias = bias.is_some();
        record("conv2d", out, &inputs, || {
            let x = Saved::new(self, "conv2d");
            let w = Saved::new(weight, "conv2d");
            move |gy: &Tensor, needs: &[bool]| {
                let needs = [needs[0], needs[1], has_bias && needs[2]];
                let (xs, ws, gs) = (x.get().storage(), w.get().storage(), gy.storage());
                let (gx, gw, gb) = match (&xs, &ws, &gs) {
                    (Storage::F32(x), Storage::F32(w), Storage::F32(gy)) => {
                        let (a, b, c) = backward(x, w, gy, &g, needs);
                        (
                            a.map(Storage::F32),
                            b.map(Storage::F32),
                            c.map(Storage::F32),
                        )
                    }
                    (Storage::F64(x), Storage::F64(w), Storage::F64(gy)) => {
                        let (a, b, c) = backward(x, w, gy, &g, needs);
                        (
                            a.map(Storage::F64),
                            b.map(Storage::F64),
                            c.map(Storage::F64),
                        )
                    }
                    _ => unreachable!("conv2d backward: dtypes checked in forward"),
                };
                let mut grads = vec![gx.map(Tensor::from_storage), gw.map(Tensor::from_storage)];
                if has_bias {
                    grads.push(gb.map(Tensor::from_storage));
                }
                grads
            }
        })
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn conv2d_bias_error(
    w: &[usize],
    b: &[usize],
    bt: crate::dtype::DType,
    wt: crate::dtype::DType,
) -> ! {
    panic!(
        "conv2d: bias must be [{}] of {wt} for weight {w:?}, got {b:?} of {bt}",
        w[0]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn conv2d_backward_matches_finite_differences() {
        crate::random::manual_seed(3);
        for (stride, padding) in [
            ([1, 1], [0, 0]),
            ([2, 1], [1, 0]),
            ([2, 2], [1, 1]),
            ([1, 3], [2, 3]),
        ] {
            let x = Tensor::randn(&[2, 2, 5, 4]).double().requires_grad_(true);
            let w = Tensor::randn(&[3, 2, 3, 2]).double().requires_grad_(true);
            gradcheck(
                |v| v[0].conv2d(&v[1], stride, padding),
                &[x.clone(), w.clone()],
            )
            .unwrap_or_else(|e| panic!("stride {stride:?} padding {padding:?}: {e}"));
            let b = Tensor::randn(&[3]).double().requires_grad_(true);
            gradcheck(
                |v| v[0].conv2d_with_bias(&v[1], Some(&v[2]), stride, padding),
                &[x, w, b],
            )
            .unwrap_or_else(|e| panic!("bias, stride {stride:?} padding {padding:?}: {e}"));
        }
    }

    #[test]
    fn conv2d_two_thread_batch_matches_finite_differences() {
        // Large enough (n·out·C·kh·kw·OH·OW ≥ 2²⁰ multiply-adds) for the two-thread split,
        // with an odd batch so that the halves differ.
        crate::random::manual_seed(4);
        let x = Tensor::randn(&[5, 4, 12, 12]).double().requires_grad_(true);
        let w = Tensor::randn(&[16, 4, 3, 3]).double().requires_grad_(true);
        let b = Tensor::randn(&[16]).double().requires_grad_(true);
        let probe = Tensor::randn(&[5, 16, 12, 12]).double();
        let f = |v: &[Tensor]| &v[0].conv2d_with_bias(&v[1], Some(&v[2]), [1, 1], [1, 1]) * &probe;
        let y = f(&[x.clone(), w.clone(), b.clone()]).sum();
        y.backward();
        // The directional derivative along a random direction, by central differences.
        let eps = 1e-6;
        for (i, t) in [&x, &w, &b].into_iter().enumerate() {
            let d = Tensor::randn(&t.shape()).double();
            let shifted = |sign: f64| {
                let mut v = vec![x.detach(), w.detach(), b.detach()];
                v[i] = &v[i] + &(&d * (sign * eps));
                f(&v).sum().item()
            };
            let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
            let analytic = (&t.grad().unwrap() * &d).sum().item();
            assert!(
                (numeric - analytic).abs() < 1e-6 * analytic.abs().max(1.0),
                "input {i}: {numeric} vs {analytic}"
            );
        }
    }

    #[test]
    fn packed_forward_matches_the_plain_one() {
        // Odd output sizes (a partial strip of columns), C·kh·kw above one block of k
        // (30·3·3 = 270 > 256), strides and padding, with and without bias, one and two
        // threads.
        if !crate::ops::gemm::packed_b_supported() {
            return;
        }
        crate::random::manual_seed(7);
        for (x, w, stride, padding) in [
            ([2, 1, 28, 28], [16, 1, 3, 3], [1, 1], [1, 1]),
            ([3, 30, 9, 7], [5, 30, 3, 3], [1, 1], [1, 1]),
            ([2, 3, 11, 10], [7, 3, 3, 2], [2, 1], [1, 0]),
            ([64, 16, 14, 14], [32, 16, 3, 3], [1, 1], [1, 1]),
        ] {
            let g = Geometry::new(&x, [w[2], w[3]], stride, padding).unwrap();
            let xs = Tensor::randn(&x).to_vec::<f32>();
            let ws = Tensor::randn(&w).to_vec::<f32>();
            let bs = Tensor::randn(&[w[0]]).to_vec::<f32>();
            let xa = from_vec(&x, xs.clone());
            let wa = from_vec(&w, ws.clone());
            // The definition, by direct loops in f64.
            let o = w[0];
            let mut direct = vec![0f64; g.n * o * g.oh * g.ow];
            for (k, d) in direct.iter_mut().enumerate() {
                let (n, oc, oy, ox) = (
                    k / (o * g.oh * g.ow),
                    k / (g.oh * g.ow) % o,
                    k / g.ow % g.oh,
                    k % g.ow,
                );
                for c in 0..g.c {
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let iy = (oy * g.stride[0] + i).checked_sub(g.padding[0]);
                            let ix = (ox * g.stride[1] + j).checked_sub(g.padding[1]);
                            if let (Some(iy), Some(ix)) = (iy, ix)
                                && iy < g.h
                                && ix < g.w
                            {
                                let xv = xs[((n * g.c + c) * g.h + iy) * g.w + ix];
                                let wv = ws[((oc * g.c + c) * g.kh + i) * g.kw + j];
                                *d += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                }
            }
            for bias in [None, Some(&bs[..])] {
                let want = forward(&xa, &wa, bias, &g);
                let got = forward_packed(&xs, &ws, bias, &g);
                let want = want.as_slice().unwrap();
                for (k, (&a, &d)) in want.iter().zip(&direct).enumerate() {
                    let d = d + bias.map_or(0.0, |b| f64::from(b[k / (g.oh * g.ow) % o]));
                    assert!(
                        (f64::from(a) - d).abs() <= 1e-4 * (1.0 + d.abs()),
                        "{x:?} {w:?} plain at {k}: {a} vs {d}"
                    );
                }
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{x:?} {w:?} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_3_wide_kernels_match_finite_differences() {
        // The one-pass col2im of 3-wide "same" rows, with kernel heights 3 and 1, padding
        // 0 and 1 on top, and a width of 2.
        crate::random::manual_seed(8);
        for (x, w, padding) in [
            ([2, 2, 5, 4], [3, 2, 3, 3], [1, 1]),
            ([1, 3, 4, 6], [2, 3, 3, 3], [0, 1]),
            ([2, 1, 3, 2], [2, 1, 1, 3], [0, 1]),
        ] {
            let x = Tensor::randn(&x).double().requires_grad_(true);
            let w = Tensor::randn(&w).double().requires_grad_(true);
            gradcheck(|v| v[0].conv2d(&v[1], [1, 1], padding), &[x, w])
                .unwrap_or_else(|e| panic!("padding {padding:?}: {e}"));
        }
    }

    #[test]
    fn conv2d_reused_input_accumulates() {
        let x = Tensor::randn(&[1, 2, 4, 4]).double().requires_grad_(true);
        let w = Tensor::randn(&[2, 2, 3, 3]).double().requires_grad_(true);
        gradcheck(|v| &v[0].conv2d(&v[1], [1, 1], [1, 1]) * &v[0], &[x, w]).unwrap();
    }

    #[test]
    fn conv2d_with_a_ones_kernel_sums_windows() {
        let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]);
        let w = Tensor::ones(&[1, 1, 2, 2]);
        // Top-left window: 0 + 1 + 4 + 5 = 10.
        assert_eq!(
            x.conv2d(&w, [2, 2], [0, 0]).to_vec::<f32>(),
            [10.0, 18.0, 42.0, 50.0]
        );
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input [1, 3, 4, 4] has 3 channels but weight [2, 2, 3, 3] expects 2"
    )]
    fn conv2d_names_the_channel_mismatch() {
        Tensor::zeros(&[1, 3, 4, 4]).conv2d(&Tensor::zeros(&[2, 2, 3, 3]), [1, 1], [0, 0]);
    }
}
