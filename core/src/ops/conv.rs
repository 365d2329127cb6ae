//! 2-D convolution (cross-correlation, as PyTorch's `conv2d`) by im2col and one GEMM per
//! sample, with its backward: `dW = Σₙ gₙ · colsₙᵀ`, `dx = col2im(Wᵀ · gₙ)`.
//!
//! Each sample's columns are rebuilt in backward rather than kept from forward, so memory
//! stays at one sample's columns (`C·kh·kw × OH·OW`) while the GEMMs do the work.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
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

/// One sample `[C, H, W]` unfolded into columns `[C·kh·kw, OH·OW]` (zeros for padding).
fn im2col<T: Float>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let l = g.l();
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                for oy in 0..g.oh {
                    let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let Some(iy) = Geometry::source(oy, i, g.stride[0], g.padding[0], g.h) else {
                        out.fill(T::zero());
                        continue;
                    };
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    for (ox, v) in out.iter_mut().enumerate() {
                        *v = Geometry::source(ox, j, g.stride[1], g.padding[1], g.w)
                            .map_or(T::zero(), |ix| src[ix]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input position it came
/// from.
fn col2im<T: Float>(cols: &[T], g: &Geometry, dx: &mut [T]) {
    let l = g.l();
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((c * g.kh + i) * g.kw + j) * l..][..l];
                for oy in 0..g.oh {
                    let Some(iy) = Geometry::source(oy, i, g.stride[0], g.padding[0], g.h) else {
                        continue;
                    };
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    for (ox, v) in row[oy * g.ow..(oy + 1) * g.ow].iter().enumerate() {
                        if let Some(ix) = Geometry::source(ox, j, g.stride[1], g.padding[1], g.w) {
                            dst[ix] += *v;
                        }
                    }
                }
            }
        }
    }
}

fn forward<T: Float>(
    x: &ArcArray<T, IxDyn>,
    w: &ArcArray<T, IxDyn>,
    g: &Geometry,
) -> ArcArray<T, IxDyn> {
    let (x, w) = (contiguous(x), contiguous(w));
    let o = w.len() / g.ckk();
    let (ckk, l) = (g.ckk(), g.l());
    let mut out = vec![T::zero(); g.n * o * l];
    let mut cols = vec![T::zero(); ckk * l];
    let w2 = view2(&w, o, ckk);
    for (xn, outn) in x
        .chunks_exact(g.c * g.h * g.w)
        .zip(out.chunks_exact_mut(o * l))
    {
        im2col(xn, g, &mut cols);
        T::gemm(&w2, &view2(&cols, ckk, l), &mut view2_mut(outn, o, l));
    }
    from_vec(&[g.n, o, g.oh, g.ow], out)
}

type Grads<T> = (Option<ArcArray<T, IxDyn>>, Option<ArcArray<T, IxDyn>>);

fn backward<T: Float>(
    x: &ArcArray<T, IxDyn>,
    w: &ArcArray<T, IxDyn>,
    gy: &ArcArray<T, IxDyn>,
    g: &Geometry,
    needs: &[bool],
) -> Grads<T> {
    let (x, w, gy) = (contiguous(x), contiguous(w), contiguous(gy));
    let o = w.len() / g.ckk();
    let (ckk, l) = (g.ckk(), g.l());
    let w2 = view2(&w, o, ckk);
    let mut cols = vec![T::zero(); ckk * l];
    let mut gw_n = vec![T::zero(); if needs[1] { o * ckk } else { 0 }];
    let mut gw = needs[1].then(|| vec![T::zero(); o * ckk]);
    let mut gx = needs[0].then(|| vec![T::zero(); x.len()]);
    let sample = g.c * g.h * g.w;
    for n in 0..g.n {
        let gn = view2(&gy[n * o * l..(n + 1) * o * l], o, l);
        if let Some(gw) = gw.as_mut() {
            im2col(&x[n * sample..(n + 1) * sample], g, &mut cols);
            let cols_t = view2(&cols, ckk, l).reversed_axes();
            T::gemm(&gn, &cols_t, &mut view2_mut(&mut gw_n, o, ckk));
            gw.iter_mut().zip(&gw_n).for_each(|(acc, &v)| *acc += v);
        }
        if let Some(gx) = gx.as_mut() {
            T::gemm(&w2.t(), &gn, &mut view2_mut(&mut cols, ckk, l));
            col2im(&cols, g, &mut gx[n * sample..(n + 1) * sample]);
        }
    }
    (
        gx.map(|v| from_vec(&[g.n, g.c, g.h, g.w], v)),
        gw.map(|v| from_vec(&[o, g.c, g.kh, g.kw], v)),
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
        let (xs, ws) = (self.shape(), weight.shape());
        let geometry = (ws.len() == 4 && xs.len() == 4 && xs[1] == ws[1])
            .then(|| Geometry::new(&xs, [ws[2], ws[3]], stride, padding))
            .flatten();
        let Some(g) = geometry else {
            conv2d_shape_error(&xs, &ws, stride, padding)
        };
        let (sx, sw) = (self.storage(), weight.storage());
        let out = crate::dispatch_float2!(&sx, &sw, (x, w) => forward(x, w, &g),
            else => crate::ops::binary::dtype_error("conv2d", &sx, &sw));
        record("conv2d", out, &[self, weight], || {
            let x = Saved::new(self, "conv2d");
            let w = Saved::new(weight, "conv2d");
            move |gy: &Tensor, needs: &[bool]| {
                let (xs, ws, gs) = (x.get().storage(), w.get().storage(), gy.storage());
                let (gx, gw) = match (&xs, &ws, &gs) {
                    (Storage::F32(x), Storage::F32(w), Storage::F32(gy)) => {
                        let (a, b) = backward(x, w, gy, &g, needs);
                        (a.map(Storage::F32), b.map(Storage::F32))
                    }
                    (Storage::F64(x), Storage::F64(w), Storage::F64(gy)) => {
                        let (a, b) = backward(x, w, gy, &g, needs);
                        (a.map(Storage::F64), b.map(Storage::F64))
                    }
                    _ => unreachable!("conv2d backward: dtypes checked in forward"),
                };
                vec![gx.map(Tensor::from_storage), gw.map(Tensor::from_storage)]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    #[test]
    fn conv2d_backward_matches_finite_differences() {
        crate::random::manual_seed(3);
        for (stride, padding) in [([1, 1], [0, 0]), ([2, 1], [1, 0]), ([2, 2], [1, 1])] {
            let x = Tensor::randn(&[2, 2, 5, 4]).double().requires_grad_(true);
            let w = Tensor::randn(&[3, 2, 3, 2]).double().requires_grad_(true);
            gradcheck(|v| v[0].conv2d(&v[1], stride, padding), &[x, w])
                .unwrap_or_else(|e| panic!("stride {stride:?} padding {padding:?}: {e}"));
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
