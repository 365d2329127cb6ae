//! 2-D max and average pooling with their backward: max pooling routes each gradient to the
//! input position that won its window, average pooling spreads it over the window.

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage};
use crate::ops::conv::Geometry;
use crate::ops::kernel::from_vec;
use crate::parallel::PARALLEL_ELEMS;
use crate::tensor::Tensor;
use ndarray::{ArcArray, IxDyn};
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
    out: &mut [T],
    idx: &mut [u32],
    f: impl Fn(std::ops::Range<usize>, &mut [T], &mut [u32]) + Sync,
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

/// The maximum of each window of one `[H, W]` plane and its offset in the plane; NaN wins,
/// as in PyTorch.
fn max_plane<T: Float>(x: &[T], g: &Geometry, out: &mut [T], idx: &mut [u32]) {
    if g.kh == 2 && g.kw == 2 && g.stride == [2, 2] && g.padding == [0, 0] {
        // The common 2×2 window: two input rows per output row, no padding.
        for oy in 0..g.oh {
            let r0 = &x[2 * oy * g.w..][..2 * g.ow];
            let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
            let base = (2 * oy * g.w) as u32;
            let (o, ix) = (&mut out[oy * g.ow..][..g.ow], &mut idx[oy * g.ow..][..g.ow]);
            for ox in 0..g.ow {
                let c = 2 * ox;
                let (mut best, mut at) = (r0[c], base + c as u32);
                for (v, off) in [
                    (r0[c + 1], c + 1),
                    (r1[c], g.w + c),
                    (r1[c + 1], g.w + c + 1),
                ] {
                    if v > best || v.is_nan() {
                        best = v;
                        at = base + off as u32;
                    }
                }
                o[ox] = best;
                ix[ox] = at;
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
            out[k] = best;
            idx[k] = at;
            k += 1;
        }
    }
}

/// The window maxima and, per output, the winner's offset within its plane.
fn max_forward<T: Float>(x: &ArcArray<T, IxDyn>, g: &Geometry) -> (ArcArray<T, IxDyn>, Vec<u32>) {
    let x = x.as_standard_layout();
    let data = x.as_slice().unwrap_or_default();
    let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
    let planes = g.n * g.c;
    let mut out = vec![T::zero(); planes * per];
    let mut argmax = vec![0u32; planes * per];
    over_planes(
        planes,
        per,
        data.len(),
        &mut out,
        &mut argmax,
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
    (from_vec(&[g.n, g.c, g.oh, g.ow], out), argmax)
}

/// Routes each output gradient to the input position that won its window.
fn scatter<T: Float>(gy: &ArcArray<T, IxDyn>, argmax: &[u32], g: &Geometry) -> ArcArray<T, IxDyn> {
    let gy = gy.as_standard_layout();
    let gys = gy.as_slice().unwrap_or_default();
    let (plane_len, per) = (g.h * g.w, g.oh * g.ow);
    let mut gx = vec![T::zero(); g.n * g.c * plane_len];
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
    from_vec(&[g.n, g.c, g.h, g.w], gx)
}

fn avg_forward<T: Float>(x: &ArcArray<T, IxDyn>, g: &Geometry) -> ArcArray<T, IxDyn> {
    let x = x.as_standard_layout();
    let data = x.as_slice().unwrap_or_default();
    let scale = T::one() / T::lit((g.kh * g.kw) as f64);
    let mut out = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
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
    let mut gx = vec![T::zero(); g.n * g.c * g.h * g.w];
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
