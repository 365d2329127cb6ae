//! 2-D max and average pooling with their backward: max pooling routes each gradient to the
//! input position that won its window, average pooling spreads it over the window.

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage};
use crate::ops::conv::Geometry;
use crate::ops::kernel::from_vec;
use crate::parallel::PARALLEL_ELEMS;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};
use std::mem::MaybeUninit;
use std::sync::Arc;

#[cold]
#[inline(never)]
#[track_caller]
fn pool_shape_error(
    op: &str,
    x: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> ! {
    if x.len() != 4 {
        panic!("{op}: input must be [N, C, H, W], got {x:?}");
    }
    if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
        panic!("{op}: padding {padding:?} should be at most half of kernel_size {kernel:?}");
    }
    panic!(
        "{op}: kernel_size {kernel:?} with stride {stride:?} and padding {padding:?} does not fit input {x:?}"
    )
}

#[track_caller]
fn geometry(
    op: &str,
    x: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Geometry {
    let fits = padding[0] * 2 <= kernel[0] && padding[1] * 2 <= kernel[1];
    match Geometry::new(x, kernel, stride, padding).filter(|_| fits) {
        Some(g) => g,
        None => pool_shape_error(op, x, kernel, stride, padding),
    }
}

/// Calls `f(plane, out_index, window)` for each output position of each `[H, W]` plane,
/// where `window` lists the in-range input offsets within the plane.
fn windows(g: &Geometry, mut f: impl FnMut(usize, usize, &mut dyn Iterator<Item = usize>)) {
    let mut out = 0;
    for plane in 0..g.n * g.c {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut window = (0..g.kh).flat_map(|i| {
                    let iy = Geometry::source(oy, i, g.stride[0], g.padding[0], g.h);
                    (0..g.kw).filter_map(move |j| {
                        let ix = Geometry::source(ox, j, g.stride[1], g.padding[1], g.w)?;
                        Some(iy? * g.w + ix)
                    })
                });
                f(plane, out, &mut window);
                out += 1;
            }
        }
    }
}

/// Runs `f(plane_range, out, idx)` over the `[H, W]` planes, in two halves on two threads
/// when the input is large; `out` and `idx` hold `per` entries per plane.
fn over_planes<T: Float>(
    planes: usize,
    per: usize,
    input_len: usize,
    out: &mut [MaybeUninit<T>],
    idx: &mut [MaybeUninit<u32>],
    f: impl Fn(std::ops::Range<usize>, &mut [MaybeUninit<T>], &mut [MaybeUninit<u32>]) + Sync,
) {
    if input_len >= PARALLEL_ELEMS && planes >= 2 && rayon::current_num_threads() >= 2 {
        let mid = planes / 2;
        let (o1, o2) = out.split_at_mut(mid * per);
        let (i1, i2) = idx.split_at_mut(mid * per);
        rayon::join(|| f(0..mid, o1, i1), || f(mid..planes, o2, i2));
    } else {
        f(0..planes, out, idx);
    }
}

/// The maximum of each window of one `[H, W]` plane and its offset in the plane, written
/// into every slot of `out` and `idx`; NaN wins, as in PyTorch.
fn max_plane<T: Float>(
    x: &[T],
    g: &Geometry,
    out: &mut [MaybeUninit<T>],
    idx: &mut [MaybeUninit<u32>],
) {
    if g.kh == 2 && g.kw == 2 && g.stride == [2, 2] && g.padding == [0, 0] {
        // The common 2×2 window: two input rows per output row, no padding.
        for oy in 0..g.oh {
            let base = (2 * oy * g.w) as u32;
            // The AVX2 kernel gets the rest of the plane, to read and write whole groups of
            // eight past a short row (rows are done in order, so what it writes past this
            // row is rewritten by the next).
            let w = g.w as u32;
            let (r0, r1) = (&x[2 * oy * g.w..], &x[(2 * oy + 1) * g.w..]);
            if simd::max_2x2_row(
                r0,
                r1,
                base,
                w,
                g.ow,
                &mut out[oy * g.ow..],
                &mut idx[oy * g.ow..],
            ) {
                continue;
            }
            let (r0, r1) = (&r0[..2 * g.ow], &r1[..2 * g.ow]);
            let (o, ix) = (&mut out[oy * g.ow..][..g.ow], &mut idx[oy * g.ow..][..g.ow]);
            // A tree of selects without branches (which mispredicted on every other
            // window): each pair keeps its left value unless the right one is larger or
            // NaN, which picks the same winner as a scan in reading order.
            #[inline(always)]
            fn pick<T: Float>(l: (T, u32), r: (T, u32)) -> (T, u32) {
                let right = r.0 > l.0 || r.0.is_nan();
                (if right { r.0 } else { l.0 }, if right { r.1 } else { l.1 })
            }
            for ox in 0..g.ow {
                let c = 2 * ox;
                let at = base + c as u32;
                let top = pick((r0[c], at), (r0[c + 1], at + 1));
                let bottom = pick((r1[c], at + w), (r1[c + 1], at + w + 1));
                let (best, at) = pick(top, bottom);
                o[ox].write(best);
                ix[ox].write(at);
            }
        }
        return;
    }
    let mut k = 0;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let (mut best, mut at) = (T::neg_infinity(), u32::MAX);
            for i in 0..g.kh {
                let Some(iy) = Geometry::source(oy, i, g.stride[0], g.padding[0], g.h) else {
                    continue;
                };
                for j in 0..g.kw {
                    let Some(ix) = Geometry::source(ox, j, g.stride[1], g.padding[1], g.w) else {
                        continue;
                    };
                    let v = x[iy * g.w + ix];
                    if at == u32::MAX || v > best || v.is_nan() {
                        best = v;
                        at = (iy * g.w + ix) as u32;
                    }
                }
            }
            out[k].write(best);
            idx[k].write(at);
            k += 1;
        }
    }
}

/// AVX2 kernels for the common 2×2 max-pool window with stride 2 in f32, chosen at run
/// time (the crate is built for baseline x86-64). Eight outputs at a time; a last partial
/// group (all of a row of 7, as in W4's second pool) uses masked loads and stores.
mod simd {
    use crate::dtype::Float;
    use std::any::TypeId;

    /// Whether `T` is f32 and the CPU has AVX2.
    fn usable<T: Float>() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `v` as f32 (the caller checked that `T` is f32).
    fn f32s<T: Float>(v: &[T]) -> &[f32] {
        assert_eq!(TypeId::of::<T>(), TypeId::of::<f32>());
        // SAFETY: `T` is `f32` (same `TypeId`, asserted): the same memory, length and type.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    }

    /// One row of `n` 2×2 windows over input rows `r0` and `r1` (each at least `2·n`
    /// long; more of the plane may follow), their maxima into `out[..n]` and the winners'
    /// plane offsets into `idx[..n]`, exactly as `max_plane` picks them (NaN included);
    /// `base` is `r0`'s offset in the plane and `w` the row length. Slots of `out` and `idx`
    /// past `n` may be overwritten. Returns `false`, writing nothing, for f64 or without
    /// AVX2.
    pub(super) fn max_2x2_row<T: Float>(
        r0: &[T],
        r1: &[T],
        base: u32,
        w: u32,
        n: usize,
        out: &mut [std::mem::MaybeUninit<T>],
        idx: &mut [std::mem::MaybeUninit<u32>],
    ) -> bool {
        if !usable::<T>() {
            return false;
        }
        assert!(r0.len() >= 2 * n && r1.len() >= 2 * n && out.len() >= n && idx.len() >= n);
        let room = out.len().min(idx.len());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 was detected by `usable`; `T` is `f32`, so `out` and `idx` are slots
        // for `room >= n` f32s and u32s (lengths asserted above).
        unsafe {
            max_2x2_row_avx2(
                f32s(r0),
                f32s(r1),
                base,
                w,
                n,
                out.as_mut_ptr().cast::<f32>(),
                idx.as_mut_ptr().cast::<u32>(),
                room,
            )
        };
        true
    }

    /// Rows `2·oy` and `2·oy + 1` of the input gradient for one row of `n` 2×2 windows:
    /// each window's gradient `gr[ox]` at its winner `ar[ox]` (a plane offset; `base` is
    /// row `2·oy`'s), 0 at the other three, into the first `2·n` slots of `dst` (row `2·oy`)
    /// and of `dst[w..]` (row `2·oy + 1`). `gr` and `ar` may run on past `n`, and slots of
    /// `dst` past those may be overwritten (the caller writes them afterwards). Returns
    /// `false`, writing nothing, for f64 or without AVX2.
    pub(super) fn scatter_2x2_row<T: Float>(
        gr: &[T],
        ar: &[u32],
        n: usize,
        base: u32,
        w: usize,
        dst: &mut [std::mem::MaybeUninit<T>],
    ) -> bool {
        if !usable::<T>() {
            return false;
        }
        assert!(gr.len() >= n && ar.len() >= n && 2 * n <= w && dst.len() >= 2 * w);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 was detected by `usable`; `T` is `f32`, so `dst` is slots for
        // `dst.len() >= 2·w` f32s (asserted above).
        unsafe {
            scatter_2x2_row_avx2(
                f32s(gr),
                ar,
                n,
                base,
                w,
                dst.as_mut_ptr().cast::<f32>(),
                dst.len(),
            )
        };
        true
    }

    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2; `r0` and `r1` hold at least `2·n` values, and `out` and
    /// `idx` are valid for writes of `room >= n` values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn max_2x2_row_avx2(
        r0: &[f32],
        r1: &[f32],
        base: u32,
        w: u32,
        n: usize,
        out: *mut f32,
        idx: *mut u32,
        room: usize,
    ) {
        // The right value wins where it is larger or NaN, as in `max_plane`'s `pick`.
        macro_rules! pick {
            ($l:expr, $r:expr) => {{
                let (l, r): ((__m256, __m256i), (__m256, __m256i)) = ($l, $r);
                let m = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(r.0, l.0),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(r.0, r.0),
                );
                (
                    _mm256_blendv_ps(l.0, r.0, m),
                    _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(l.1),
                        _mm256_castsi256_ps(r.1),
                        m,
                    )),
                )
            }};
        }
        // Lanes hold outputs 0 1 4 5 | 2 3 6 7 after the even/odd shuffles below.
        let lane_offsets = _mm256_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14);
        let (one, down) = (_mm256_set1_epi32(1), _mm256_set1_epi32(w as i32));
        for first in (0..n).step_by(8) {
            let count = (n - first).min(8);
            let c = 2 * first;
            // Inputs `c .. c + 2·count` of each row, in two groups of eight; a last partial
            // group is copied out first (masked loads and stores are slow on AMD cores).
            let (mut p0, mut p1) = ([0f32; 16], [0f32; 16]);
            let (s0, s1) = if c + 16 <= r0.len().min(r1.len()) {
                (r0[c..c + 16].as_ptr(), r1[c..c + 16].as_ptr())
            } else {
                p0[..2 * count].copy_from_slice(&r0[c..c + 2 * count]);
                p1[..2 * count].copy_from_slice(&r1[c..c + 2 * count]);
                (p0.as_ptr(), p1.as_ptr())
            };
            // SAFETY: `s0` and `s1` point at 16 readable f32s (row slices or the copies).
            let (a0, b0, a1, b1) = unsafe {
                (
                    _mm256_loadu_ps(s0),
                    _mm256_loadu_ps(s0.add(8)),
                    _mm256_loadu_ps(s1),
                    _mm256_loadu_ps(s1.add(8)),
                )
            };
            let even0 = _mm256_shuffle_ps::<0b10_00_10_00>(a0, b0);
            let odd0 = _mm256_shuffle_ps::<0b11_01_11_01>(a0, b0);
            let even1 = _mm256_shuffle_ps::<0b10_00_10_00>(a1, b1);
            let odd1 = _mm256_shuffle_ps::<0b11_01_11_01>(a1, b1);
            let i00 = _mm256_add_epi32(_mm256_set1_epi32((base as usize + c) as i32), lane_offsets);
            let i10 = _mm256_add_epi32(i00, down);
            let top = pick!((even0, i00), (odd0, _mm256_add_epi32(i00, one)));
            let bottom = pick!((even1, i10), (odd1, _mm256_add_epi32(i10, one)));
            let (v, i) = pick!(top, bottom);
            // Back to outputs 0..8: 64-bit pairs (0 1)(4 5)(2 3)(6 7) → (0 1)(2 3)(4 5)(6 7).
            let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            let i = _mm256_permute4x64_epi64::<0b11_01_10_00>(i);
            if first + 8 <= room {
                // SAFETY: slots `first .. first + 8 <= room` are writable (# Safety).
                unsafe {
                    _mm256_storeu_ps(out.add(first), v);
                    _mm256_storeu_si256(idx.add(first).cast::<__m256i>(), i);
                }
                continue;
            }
            let (mut vs, mut is) = ([0f32; 8], [0u32; 8]);
            // SAFETY: `vs` and `is` hold eight values each; outputs `first .. first + count
            // <= n` are writable (# Safety).
            unsafe {
                _mm256_storeu_ps(vs.as_mut_ptr(), v);
                _mm256_storeu_si256(is.as_mut_ptr().cast::<__m256i>(), i);
                std::ptr::copy_nonoverlapping(vs.as_ptr(), out.add(first), count);
                std::ptr::copy_nonoverlapping(is.as_ptr(), idx.add(first), count);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2; `gr` and `ar` hold at least `n` values, `2·n <= w`, and
    /// `dst` is valid for writes of `room >= 2·w` f32s.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scatter_2x2_row_avx2(
        gr: &[f32],
        ar: &[u32],
        n: usize,
        base: u32,
        w: usize,
        dst: *mut f32,
        room: usize,
    ) {
        let two = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let (one, down) = (_mm256_set1_epi32(1), _mm256_set1_epi32(w as i32));
        // Row `2·oy` first, whole: what its last group writes past the row lands in row
        // `2·oy + 1`, which is written after it.
        for (row, shift) in [(0, _mm256_setzero_si256()), (w, down)] {
            for first in (0..n).step_by(8) {
                let count = (n - first).min(8);
                // A last partial group is copied out first and its results copied back
                // (masked loads and stores are slow on AMD cores).
                let (mut gp, mut ap) = ([0f32; 8], [0u32; 8]);
                let (gs, as_) = if first + 8 <= gr.len().min(ar.len()) {
                    (gr[first..first + 8].as_ptr(), ar[first..first + 8].as_ptr())
                } else {
                    gp[..count].copy_from_slice(&gr[first..first + count]);
                    ap[..count].copy_from_slice(&ar[first..first + count]);
                    (gp.as_ptr(), ap.as_ptr())
                };
                // SAFETY: `gs` and `as_` point at eight readable values (the rows or copies).
                let (g, a) = unsafe {
                    (
                        _mm256_loadu_ps(gs),
                        _mm256_loadu_si256(as_.cast::<__m256i>()),
                    )
                };
                let left = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_set1_epi32((base as usize + 2 * first) as i32), two),
                    shift,
                );
                // The gradient where the winner is at `pos`, 0 elsewhere.
                macro_rules! at {
                    ($pos:expr) => {
                        _mm256_and_ps(g, _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, $pos)))
                    };
                }
                {
                    let (x, y) = (at!(left), at!(_mm256_add_epi32(left, one)));
                    // Interleaved: x0 y0 x1 y1 … x7 y7.
                    let (lo, hi) = (_mm256_unpacklo_ps(x, y), _mm256_unpackhi_ps(x, y));
                    let first8 = _mm256_permute2f128_ps::<0x20>(lo, hi);
                    let last8 = _mm256_permute2f128_ps::<0x31>(lo, hi);
                    let at = row + 2 * first;
                    let d = dst.wrapping_add(at);
                    if at + 16 <= room {
                        // SAFETY: slots `at .. at + 16 <= room` are writable (# Safety).
                        unsafe {
                            _mm256_storeu_ps(d, first8);
                            _mm256_storeu_ps(d.add(8), last8);
                        }
                    } else {
                        let mut tmp = [0f32; 16];
                        // SAFETY: `tmp` holds 16 f32s; slots `at .. at + 2·count <= row + 2·n
                        // <= 2·w <= room` are writable (# Safety).
                        unsafe {
                            _mm256_storeu_ps(tmp.as_mut_ptr(), first8);
                            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), last8);
                            std::ptr::copy_nonoverlapping(tmp.as_ptr(), d, 2 * count);
                        }
                    }
                }
            }
        }
    }
}

/// The window maxima and, per output, the winner's offset within its plane.
fn max_forward<T: Float>(x: &ArcArray<T, IxDyn>, g: &Geometry) -> (ArcArray<T, IxDyn>, Vec<u32>) {
    let x = x.as_standard_layout();
    let data = x.as_slice().unwrap_or_default();
    let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
    let planes = g.n * g.c;
    let len = planes * per;
    let (mut out, mut argmax) = (Vec::<T>::with_capacity(len), Vec::<u32>::with_capacity(len));
    over_planes(
        planes,
        per,
        data.len(),
        &mut out.spare_capacity_mut()[..len],
        &mut argmax.spare_capacity_mut()[..len],
        |range, out, idx| {
            for (k, p) in range.enumerate() {
                let plane = &data[p * plane_len..(p + 1) * plane_len];
                max_plane(
                    plane,
                    g,
                    &mut out[k * per..(k + 1) * per],
                    &mut idx[k * per..(k + 1) * per],
                );
            }
        },
    );
    // SAFETY: `max_plane` wrote every slot of every plane's outputs, `len` in all.
    unsafe {
        out.set_len(len);
        argmax.set_len(len);
    }
    (from_vec(&[g.n, g.c, g.oh, g.ow], out), argmax)
}

/// Routes each output gradient to the input position that won its window.
fn scatter<T: Float>(gy: &ArcArray<T, IxDyn>, argmax: &[u32], g: &Geometry) -> ArcArray<T, IxDyn> {
    let gy = gy.as_standard_layout();
    let gys = gy.as_slice().unwrap_or_default();
    if g.kh == 2 && g.kw == 2 && g.stride == [2, 2] && g.padding == [0, 0] {
        return from_vec(&[g.n, g.c, g.h, g.w], scatter_2x2(gys, argmax, g));
    }
    from_vec(&[g.n, g.c, g.h, g.w], scatter_any(gys, argmax, g))
}

/// [`scatter`] for any window: adds each output gradient onto its winner.
fn scatter_any<T: Float>(gys: &[T], argmax: &[u32], g: &Geometry) -> Vec<T> {
    let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
    let mut gx = crate::memory::filled(g.n * g.c * plane_len, T::zero());
    if per > 0 {
        for ((gxp, gyp), ip) in gx
            .chunks_exact_mut(plane_len)
            .zip(gys.chunks_exact(per))
            .zip(argmax.chunks_exact(per))
        {
            for (&v, &i) in gyp.iter().zip(ip) {
                gxp[i as usize] += v;
            }
        }
    }
    gx
}

/// [`scatter`] for the common 2×2 window with stride 2: the windows do not overlap, so each
/// input position is written once, with its window's gradient or 0, and the result is
/// never zeroed first nor added to.
fn scatter_2x2<T: Float>(gys: &[T], argmax: &[u32], g: &Geometry) -> Vec<T> {
    let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
    let planes = g.n * g.c;
    let len = planes * plane_len;
    let mut gx: Vec<T> = crate::memory::vec(len);
    let zero = |v: &mut [std::mem::MaybeUninit<T>]| {
        v.iter_mut().for_each(|v| {
            v.write(T::zero());
        });
    };
    let fill = |first: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        for (k, plane) in out.chunks_exact_mut(plane_len).enumerate() {
            let p = first + k;
            let (gp, ap) = (&gys[p * per..][..per], &argmax[p * per..][..per]);
            // Rows in pairs, one pair per row of windows; a last odd row is in no window.
            let (pairs, rest) = plane.split_at_mut(2 * g.oh * g.w);
            for oy in 0..g.oh {
                let (gr, ar) = (&gp[oy * g.ow..], &ap[oy * g.ow..]);
                let base = 2 * oy * g.w;
                // The AVX2 kernel gets the rest of the rows, to write whole groups past a
                // short row (the pairs are done in order, so the next pair rewrites them).
                let dst = &mut pairs[base..];
                if simd::scatter_2x2_row(gr, ar, g.ow, base as u32, g.w, dst) {
                    continue;
                }
                for y in 0..2 {
                    let row = &mut dst[y * g.w..(y + 1) * g.w];
                    let left0 = base + y * g.w;
                    for (ox, two) in row.chunks_exact_mut(2).take(g.ow).enumerate() {
                        let (at, v) = (ar[ox] as usize, gr[ox]);
                        let left = left0 + 2 * ox;
                        two[0].write(if at == left { v } else { T::zero() });
                        two[1].write(if at == left + 1 { v } else { T::zero() });
                    }
                }
            }
            // Columns past the last window (an odd width) and rows below it are in no
            // window; zeroed last, after the kernel's writes past short rows.
            for row in pairs.chunks_exact_mut(g.w) {
                zero(&mut row[2 * g.ow..]);
            }
            zero(rest);
        }
    };
    let out = &mut gx.spare_capacity_mut()[..len];
    if len >= PARALLEL_ELEMS && planes >= 2 && rayon::current_num_threads() >= 2 {
        let (lo, hi) = out.split_at_mut(planes / 2 * plane_len);
        rayon::join(|| fill(0, lo), || fill(planes / 2, hi));
    } else {
        fill(0, out);
    }
    // SAFETY: `fill` wrote every position of every plane (window pairs, then the rows and
    // columns no window covers), `len` in all.
    unsafe { gx.set_len(len) };
    gx
}

fn avg_forward<T: Float>(x: &ArcArray<T, IxDyn>, g: &Geometry) -> ArcArray<T, IxDyn> {
    let x = x.as_standard_layout();
    let data = x.as_slice().unwrap_or_default();
    let scale = T::one() / T::lit((g.kh * g.kw) as f64);
    let mut out = crate::memory::vec(g.n * g.c * g.oh * g.ow);
    windows(g, |plane, _, window| {
        let base = plane * g.h * g.w;
        out.push(window.map(|i| data[base + i]).sum::<T>() * scale);
    });
    from_vec(&[g.n, g.c, g.oh, g.ow], out)
}

fn avg_backward<T: Float>(gy: &ArcArray<T, IxDyn>, g: &Geometry) -> ArcArray<T, IxDyn> {
    let gy = gy.as_standard_layout();
    let gys = gy.as_slice().unwrap_or_default();
    let scale = T::one() / T::lit((g.kh * g.kw) as f64);
    let mut gx = crate::memory::filled(g.n * g.c * g.h * g.w, T::zero());
    windows(g, |plane, out, window| {
        let base = plane * g.h * g.w;
        let v = gys[out] * scale;
        for i in window {
            gx[base + i] += v;
        }
    });
    from_vec(&[g.n, g.c, g.h, g.w], gx)
}

impl Tensor {
    /// The maximum of each `kernel_size` window of this `[N, C, H, W]` input
    /// (`torch.nn.functional.max_pool2d`; padding counts as −∞, windows that do not fit
    /// are dropped).
    ///
    /// # Panics
    /// If the input is not 4-D or an integer tensor, or the window does not fit.
    #[track_caller]
    pub fn max_pool2d(
        &self,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor {
        let g = geometry("max_pool2d", &self.shape(), kernel_size, stride, padding);
        if u32::try_from(g.h * g.w).is_err() {
            panic!(
                "max_pool2d: a plane of {}x{} positions is too large for its saved indices",
                g.h, g.w
            );
        }
        let (out, argmax) = match self.storage() {
            Storage::F32(x) => {
                let (o, a) = max_forward(&x, &g);
                (Storage::F32(o), a)
            }
            Storage::F64(x) => {
                let (o, a) = max_forward(&x, &g);
                (Storage::F64(o), a)
            }
            Storage::I64(_) => panic!("max_pool2d: expected a floating-point input, got int64"),
        };
        record("max_pool2d", out, &[self], || {
            let argmax = Arc::new(argmax);
            move |gy: &Tensor, _: &[bool]| {
                let gx = crate::dispatch_float!(gy.storage(), a => scatter(&a, &argmax, &g),
                    int => unreachable!("max_pool2d backward: float gradient"));
                vec![Some(Tensor::from_storage(gx))]
            }
        })
    }

    /// The mean of each `kernel_size` window of this `[N, C, H, W]` input
    /// (`torch.nn.functional.avg_pool2d` with `count_include_pad=True`: padding counts as
    /// zeros and every window divides by `kh·kw`).
    ///
    /// # Panics
    /// If the input is not 4-D or an integer tensor, or the window does not fit.
    #[track_caller]
    pub fn avg_pool2d(
        &self,
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Tensor {
        let g = geometry("avg_pool2d", &self.shape(), kernel_size, stride, padding);
        let out = crate::dispatch_float!(self.storage(), x => avg_forward(&x, &g),
            int => panic!("avg_pool2d: expected a floating-point input, got int64"));
        record("avg_pool2d", out, &[self], || {
            move |gy: &Tensor, _: &[bool]| {
                let gx = crate::dispatch_float!(gy.storage(), a => avg_backward(&a, &g),
                    int => unreachable!("avg_pool2d backward: float gradient"));
                vec![Some(Tensor::from_storage(gx))]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn pooling_backward_matches_finite_differences() {
        crate::random::manual_seed(5);
        for (k, s, p) in [
            ([2, 2], [2, 2], [0, 0]),
            ([3, 2], [1, 2], [1, 1]),
            ([3, 3], [2, 2], [1, 0]),
        ] {
            // Distinct values keep every window's maximum away from a tie.
            let x = Tensor::randn(&[2, 2, 5, 6]).double().requires_grad_(true);
            gradcheck(|v| v[0].max_pool2d(k, s, p), std::slice::from_ref(&x))
                .unwrap_or_else(|e| panic!("max {k:?} {s:?} {p:?}: {e}"));
            gradcheck(
                |v| &v[0].avg_pool2d(k, s, p) * &v[0].avg_pool2d(k, s, p),
                &[x],
            )
            .unwrap_or_else(|e| panic!("avg {k:?} {s:?} {p:?}: {e}"));
        }
    }

    #[test]
    fn max_pool_2x2_backward_writes_what_the_general_scatter_adds() {
        // Odd sizes leave a row and a column outside every window; 2·16·91·93 elements
        // split the planes over two threads.
        crate::random::manual_seed(6);
        for shape in [
            [1usize, 1, 5, 7],
            [2, 16, 91, 93],
            [3, 4, 14, 14],
            [2, 3, 28, 28],
        ] {
            let x = Tensor::randn(&shape);
            let g = geometry("max_pool2d", &shape, [2, 2], [2, 2], [0, 0]);
            let Storage::F32(xa) = x.storage() else {
                unreachable!()
            };
            let (y, argmax) = max_forward(&xa, &g);
            // The forward against a plain scan of each window.
            let xs = xa.as_slice().unwrap();
            let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
            for (k, (&v, &at)) in y.iter().zip(&argmax).enumerate() {
                let (p, oy, ox) = (k / per, k % per / g.ow, k % g.ow);
                let offs = [0, 1, g.w, g.w + 1].map(|d| 2 * oy * g.w + 2 * ox + d);
                let best = offs
                    .into_iter()
                    .reduce(|b, o| {
                        if xs[p * plane_len + o] > xs[p * plane_len + b] {
                            o
                        } else {
                            b
                        }
                    })
                    .unwrap();
                assert_eq!(
                    (v, at as usize),
                    (xs[p * plane_len + best], best),
                    "{shape:?} at {k}"
                );
            }
            let gy: Vec<f32> = (0..y.len()).map(|i| (i % 13) as f32 - 6.0).collect();
            let (got, want) = (scatter_2x2(&gy, &argmax, &g), scatter_any(&gy, &argmax, &g));
            if let Some(k) = (0..got.len()).find(|&k| got[k] != want[k]) {
                panic!(
                    "{shape:?} at {k} (plane {}, row {}, column {}): {} vs {}",
                    k / plane_len,
                    k % plane_len / g.w,
                    k % g.w,
                    got[k],
                    want[k]
                );
            }
        }
    }

    #[test]
    fn max_pool_2x2_ties_and_nans_pick_as_a_scan_in_reading_order() {
        // 2×2 windows over {1, 2, NaN}: ties go to the first, NaN to the last NaN. Rows of
        // 81 windows (all patterns), 7 (W4's second pool: one partial group of eight) and 3;
        // f32 (the AVX2 kernel) and f64.
        fn check<T: Float>(windows: usize) {
            let vals = [T::one(), T::lit(2.0), T::nan()];
            let x: Vec<Vec<T>> = (0..windows)
                .map(|k| {
                    let k = (k * 11 + windows) % 81;
                    (0..4).map(|d| vals[k / 3usize.pow(d) % 3]).collect()
                })
                .collect();
            // One row of windows: a 2 × 2·windows plane.
            let mut plane = vec![T::zero(); 2 * 2 * windows];
            for (k, v) in x.iter().enumerate() {
                plane[2 * k] = v[0];
                plane[2 * k + 1] = v[1];
                plane[2 * windows + 2 * k] = v[2];
                plane[2 * windows + 2 * k + 1] = v[3];
            }
            let shape = [1, 1, 2, 2 * windows];
            let g = geometry("max_pool2d", &shape, [2, 2], [2, 2], [0, 0]);
            let (out, idx) = max_forward(&from_vec(&shape, plane), &g);
            let out = out.as_slice().unwrap();
            for (k, v) in x.iter().enumerate() {
                let offs = [
                    2 * k,
                    2 * k + 1,
                    2 * windows + 2 * k,
                    2 * windows + 2 * k + 1,
                ];
                let (mut best, mut at) = (v[0], offs[0]);
                for (&vd, &od) in v.iter().zip(&offs).skip(1) {
                    if vd > best || vd.is_nan() {
                        best = vd;
                        at = od;
                    }
                }
                assert_eq!(idx[k] as usize, at, "window {v:?} of {windows}");
                assert!(
                    out[k] == best || (out[k].is_nan() && best.is_nan()),
                    "window {v:?} of {windows}"
                );
            }
        }
        for windows in [81, 7, 3] {
            check::<f32>(windows);
            check::<f64>(windows);
        }
    }

    #[test]
    fn max_pool_picks_the_window_maximum() {
        let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]);
        assert_eq!(
            x.max_pool2d([2, 2], [2, 2], [0, 0]).to_vec::<f32>(),
            [5.0, 7.0, 13.0, 15.0]
        );
        assert_eq!(
            x.avg_pool2d([2, 2], [2, 2], [0, 0]).to_vec::<f32>(),
            [2.5, 4.5, 10.5, 12.5]
        );
    }
}
