//! Convolutions with dilation and groups, 1-D convolution and the transposed 2-D convolution,
//! forward and backward, by im2col and one matrix product per (sample, group).
//!
//! NOTE [ One geometry, three kernels ]
//! A convolution maps an "input side" `[N, C, H, W]` to an "output side" `[N, O, OH, OW]`
//! through a weight `[O, C / groups, kh, kw]`. Three kernels cover every op here:
//! - `Forward` (input side, weight → output side): `outₙ,g = W_g · im2col(xₙ,g)`;
//! - `InputGrad` (output side, weight → input side): `col2im(W_gᵀ · gₙ,g)`, the adjoint of
//!   `Forward` in its input;
//! - `WeightGrad` (input side, output side → weight): `Σₙ gₙ,g · im2col(xₙ,g)ᵀ`.
//!
//! `conv2d_grouped` is `Forward`, with `InputGrad` and `WeightGrad` as its backward.
//! `conv_transpose2d` is the adjoint: its input lives on the output side of the convolution
//! whose weight it takes (PyTorch's `[C_in, C_out / groups, kh, kw]` layout is exactly that
//! convolution's `[O, C / groups, kh, kw]`), so its forward is `InputGrad`, and its backward
//! is `Forward` for the input and `WeightGrad` with the roles swapped for the weight.
//!
//! The dilation-1, one-group `conv2d` keeps its own tuned path in `ops/conv.rs`.

use crate::autograd::graph::{Saved, record};
use crate::dtype::{Float, Storage};
use crate::ops::gemm::{Epilogue, gemm};
use crate::ops::kernel::from_vec;
use crate::tensor::Tensor;
use ndarray::{ArcArray, ArrayView2, ArrayViewMut2, IxDyn};
use std::borrow::Cow;

/// The sizes of one convolution, from its input side to its output side (see NOTE [ One
/// geometry, three kernels ]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ConvShape {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

/// The hyper-parameters of a convolution, as PyTorch names them.
#[derive(Clone, Copy, Debug)]
struct Options {
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
}

impl Options {
    fn valid(&self) -> bool {
        !self.stride.contains(&0) && !self.dilation.contains(&0) && self.groups > 0
    }
}

impl ConvShape {
    /// A convolution of `x` `[N, C, H, W]` with `weight` `[O, C / groups, kh, kw]`; `None`
    /// when the shapes or options do not fit.
    fn of_conv(x: &[usize], wt: &[usize], opt: Options) -> Option<ConvShape> {
        let (&[n, c, h, w], &[o, cg, kh, kw]) = (x, wt) else {
            return None;
        };
        let fits =
            opt.valid() && kh * kw > 0 && c == cg * opt.groups && o.is_multiple_of(opt.groups);
        let span = |k: usize, d: usize| d * (k - 1) + 1;
        let (hp, wp) = (h + 2 * opt.padding[0], w + 2 * opt.padding[1]);
        if !fits || hp < span(kh, opt.dilation[0]) || wp < span(kw, opt.dilation[1]) {
            return None;
        }
        Some(ConvShape {
            n,
            c,
            h,
            w,
            o,
            oh: (hp - span(kh, opt.dilation[0])) / opt.stride[0] + 1,
            ow: (wp - span(kw, opt.dilation[1])) / opt.stride[1] + 1,
            kh,
            kw,
            stride: opt.stride,
            padding: opt.padding,
            dilation: opt.dilation,
            groups: opt.groups,
        })
    }

    /// The convolution whose output side is `x` `[N, C_in, H, W]` and whose weight is
    /// `weight` `[C_in, C_out / groups, kh, kw]`: the geometry of a transposed convolution.
    fn of_transposed(
        x: &[usize],
        wt: &[usize],
        opt: Options,
        output_padding: [usize; 2],
    ) -> Option<ConvShape> {
        let (&[n, o, oh, ow], &[wo, cg, kh, kw]) = (x, wt) else {
            return None;
        };
        let side = |i: usize| {
            let op = output_padding[i];
            if op >= opt.stride[i] && op >= opt.dilation[i] {
                return None;
            }
            let k = [kh, kw][i];
            let full = ([oh, ow][i].checked_sub(1)?) * opt.stride[i]
                + opt.dilation[i] * k.checked_sub(1)?
                + op
                + 1;
            full.checked_sub(2 * opt.padding[i]).filter(|&s| s > 0)
        };
        if !opt.valid() || wo != o || !o.is_multiple_of(opt.groups) || oh * ow == 0 {
            return None;
        }
        Some(ConvShape {
            n,
            c: cg * opt.groups,
            h: side(0)?,
            w: side(1)?,
            o,
            oh,
            ow,
            kh,
            kw,
            stride: opt.stride,
            padding: opt.padding,
            dilation: opt.dilation,
            groups: opt.groups,
        })
    }

    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of one group's columns: `C/groups · kh · kw`.
    fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output positions per channel.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Input row (or column) read by output position `o` at kernel offset `k` along axis
    /// `axis`, if not padding.
    #[inline]
    fn source(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        let size = [self.h, self.w][axis];
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.padding[axis])
            .filter(|&i| i < size)
    }
}

/// One group of one sample, `[C/groups, H, W]`, unfolded into `[C/groups·kh·kw, OH·OW]`.
fn im2col<T: Float>(x: &[T], s: &ConvShape, cols: &mut [T]) {
    let l = s.l();
    for (c, plane) in x.chunks_exact(s.h * s.w).enumerate() {
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &mut cols[((c * s.kh + i) * s.kw + j) * l..][..l];
                for (oy, out) in row.chunks_exact_mut(s.ow).enumerate() {
                    let Some(iy) = s.source(0, oy, i) else {
                        out.fill(T::zero());
                        continue;
                    };
                    let src = &plane[iy * s.w..(iy + 1) * s.w];
                    for (ox, v) in out.iter_mut().enumerate() {
                        *v = s.source(1, ox, j).map_or(T::zero(), |ix| src[ix]);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry onto the input position it came from.
fn col2im<T: Float>(cols: &[T], s: &ConvShape, dx: &mut [T]) {
    let l = s.l();
    for (c, plane) in dx.chunks_exact_mut(s.h * s.w).enumerate() {
        for i in 0..s.kh {
            for j in 0..s.kw {
                let row = &cols[((c * s.kh + i) * s.kw + j) * l..][..l];
                for (oy, vals) in row.chunks_exact(s.ow).enumerate() {
                    let Some(iy) = s.source(0, oy, i) else {
                        continue;
                    };
                    let dst = &mut plane[iy * s.w..(iy + 1) * s.w];
                    for (ox, v) in vals.iter().enumerate() {
                        if let Some(ix) = s.source(1, ox, j) {
                            dst[ix] += *v;
                        }
                    }
                }
            }
        }
    }
}

fn view2<T>(data: &[T], rows: usize, cols: usize) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("conv: {rows}x{cols} block: {e}"))
}

fn view2_mut<T>(data: &mut [T], rows: usize, cols: usize) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((rows, cols), data)
        .unwrap_or_else(|e| unreachable!("conv: {rows}x{cols} block: {e}"))
}

fn contiguous<T: Float>(a: &ArcArray<T, IxDyn>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// The three kernels of NOTE [ One geometry, three kernels ].
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// (input side, weight) → output side.
    Forward,
    /// (output side, weight) → input side.
    InputGrad,
    /// (input side, output side) → weight.
    WeightGrad,
}

/// Runs `kernel` on `a` and `b` (see [`Kernel`] for what they are).
fn apply<T: Float>(
    kernel: Kernel,
    a: &ArcArray<T, IxDyn>,
    b: &ArcArray<T, IxDyn>,
    s: &ConvShape,
) -> ArcArray<T, IxDyn> {
    let (a, b) = (contiguous(a), contiguous(b));
    let (og, k, l) = (s.og(), s.k(), s.l());
    let (in_block, out_block) = (s.cg() * s.h * s.w, og * l);
    let mut cols = vec![T::zero(); k * l];
    match kernel {
        Kernel::Forward => {
            let mut out = vec![T::zero(); s.n * s.o * l];
            let blocks = a
                .chunks_exact(in_block)
                .zip(out.chunks_exact_mut(out_block));
            for (i, (xg, yg)) in blocks.enumerate() {
                let wg = &b[(i % s.groups) * og * k..][..og * k];
                im2col(xg, s, &mut cols);
                gemm(
                    &view2(wg, og, k),
                    &view2(&cols, k, l),
                    &mut view2_mut(yg, og, l),
                    Epilogue::write(),
                );
            }
            from_vec(&[s.n, s.o, s.oh, s.ow], out)
        }
        Kernel::InputGrad => {
            let mut out = vec![T::zero(); s.n * s.c * s.h * s.w];
            let blocks = out
                .chunks_exact_mut(in_block)
                .zip(a.chunks_exact(out_block));
            for (i, (dxg, gg)) in blocks.enumerate() {
                let wg = &b[(i % s.groups) * og * k..][..og * k];
                let wt = view2(wg, og, k).reversed_axes();
                gemm(
                    &wt,
                    &view2(gg, og, l),
                    &mut view2_mut(&mut cols, k, l),
                    Epilogue::write(),
                );
                col2im(&cols, s, dxg);
            }
            from_vec(&[s.n, s.c, s.h, s.w], out)
        }
        Kernel::WeightGrad => {
            let mut out = vec![T::zero(); s.o * k];
            let blocks = a.chunks_exact(in_block).zip(b.chunks_exact(out_block));
            for (i, (xg, gg)) in blocks.enumerate() {
                im2col(xg, s, &mut cols);
                let cols_t = view2(&cols, k, l).reversed_axes();
                let acc = &mut out[(i % s.groups) * og * k..][..og * k];
                gemm(
                    &view2(gg, og, l),
                    &cols_t,
                    &mut view2_mut(acc, og, k),
                    Epilogue::accumulate(),
                );
            }
            from_vec(&[s.o, s.cg(), s.kh, s.kw], out)
        }
    }
}

/// [`apply`] on storages of one float dtype (checked by the op before recording).
fn apply_storage(kernel: Kernel, a: &Storage, b: &Storage, s: &ConvShape) -> Storage {
    crate::dispatch_float2!(a, b, (x, y) => apply(kernel, x, y, s),
        else => crate::ops::binary::dtype_error("conv", a, b))
}

#[cold]
#[inline(never)]
#[track_caller]
fn conv_shape_error(op: &str, x: &[usize], w: &[usize], detail: String) -> ! {
    panic!("{op}: input {x:?} and weight {w:?} do not fit: {detail}")
}

/// Why `x` and `w` make no convolution (for the panic message).
fn explain(x: &[usize], w: &[usize], opt: Options, in_channels: Option<usize>) -> String {
    if x.len() != 4 || w.len() != 4 {
        return "expected [N, C, H, W] and a 4-D weight".into();
    }
    if !opt.valid() {
        return format!(
            "stride {:?}, dilation {:?} and groups {} must be positive",
            opt.stride, opt.dilation, opt.groups
        );
    }
    match in_channels {
        Some(c) if x[1] != c => format!(
            "input channels {} must equal the weight's {} per group times groups {}",
            x[1], w[1], opt.groups
        ),
        _ if !w[0].is_multiple_of(opt.groups) => {
            format!(
                "{} channels are not divisible by groups {}",
                w[0], opt.groups
            )
        }
        _ => format!(
            "kernel {:?} with stride {:?}, padding {:?} and dilation {:?} does not fit",
            &w[2..],
            opt.stride,
            opt.padding,
            opt.dilation
        ),
    }
}

impl Tensor {
    /// 2-D convolution with dilation and groups, as `torch.nn.functional.conv2d(x, weight,
    /// None, stride, padding, dilation, groups)`: `weight` is `[out, C / groups, kh, kw]`, and
    /// output channel block `g` sees input channel block `g`.
    ///
    /// # Shapes
    /// `[N, C, H, W] → [N, out, (H + 2·ph − dh·(kh − 1) − 1) / sh + 1, …]` (likewise for W).
    ///
    /// # Panics
    /// If the shapes are not 4-D, the channels do not match `groups`, the dilated kernel does
    /// not fit the padded input, a stride, dilation or `groups` is zero, or the dtypes differ.
    #[track_caller]
    pub fn conv2d_grouped(
        &self,
        weight: &Tensor,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Tensor {
        let opt = Options {
            stride,
            padding,
            dilation,
            groups,
        };
        let (xs, ws) = (self.shape(), weight.shape());
        let Some(s) = ConvShape::of_conv(&xs, &ws, opt) else {
            let c = ws.get(1).map(|cg| cg * groups);
            conv_shape_error("conv2d", &xs, &ws, explain(&xs, &ws, opt, c))
        };
        let out = apply_storage(Kernel::Forward, &self.storage(), &weight.storage(), &s);
        record("conv2d", out, &[self, weight], || {
            let x = Saved::new(self, "conv2d");
            let w = Saved::new(weight, "conv2d");
            move |gy: &Tensor, needs: &[bool]| {
                let (x, w, gy) = (x.get().storage(), w.get().storage(), gy.storage());
                vec![
                    needs[0].then(|| apply_storage(Kernel::InputGrad, &gy, &w, &s)),
                    needs[1].then(|| apply_storage(Kernel::WeightGrad, &x, &gy, &s)),
                ]
                .into_iter()
                .map(|g| g.map(Tensor::from_storage))
                .collect()
            }
        })
    }

    /// 1-D convolution, as `torch.nn.functional.conv1d(x, weight, None, stride, padding,
    /// dilation, groups)`: `weight` is `[out, C / groups, k]`.
    ///
    /// # Shapes
    /// `[N, C, L] → [N, out, (L + 2·padding − dilation·(k − 1) − 1) / stride + 1]`.
    ///
    /// # Panics
    /// As [`conv2d_grouped`](Tensor::conv2d_grouped), for 3-D shapes.
    #[track_caller]
    pub fn conv1d(
        &self,
        weight: &Tensor,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Tensor {
        let (xs, ws) = (self.shape(), weight.shape());
        if xs.len() != 3 || ws.len() != 3 {
            conv_shape_error(
                "conv1d",
                &xs,
                &ws,
                "expected [N, C, L] and [out, C / groups, k]".into(),
            )
        }
        let x = self.unsqueeze(2);
        let w = weight.unsqueeze(2);
        x.conv2d_grouped(&w, [1, stride], [0, padding], [1, dilation], groups)
            .squeeze_dim(2)
    }

    /// Transposed 2-D convolution, as `torch.nn.functional.conv_transpose2d(x, weight, None,
    /// stride, padding, output_padding, groups, dilation)`: the adjoint of
    /// [`conv2d_grouped`](Tensor::conv2d_grouped) with the same weight. `weight` is
    /// `[C_in, C_out / groups, kh, kw]` (in-channels first).
    ///
    /// # Shapes
    /// `[N, C_in, H, W] → [N, C_out, (H − 1)·sh − 2·ph + dh·(kh − 1) + output_padding_h + 1, …]`.
    ///
    /// # Panics
    /// If the shapes are not 4-D, `C_in` differs from the weight's first dimension or is not
    /// divisible by `groups`, an `output_padding` is not smaller than its stride or dilation,
    /// the output would be empty, or the dtypes differ.
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        stride: [usize; 2],
        padding: [usize; 2],
        output_padding: [usize; 2],
        groups: usize,
        dilation: [usize; 2],
    ) -> Tensor {
        let opt = Options {
            stride,
            padding,
            dilation,
            groups,
        };
        let (xs, ws) = (self.shape(), weight.shape());
        let Some(s) = ConvShape::of_transposed(&xs, &ws, opt, output_padding) else {
            let detail = if xs.len() == 4 && ws.len() == 4 && xs[1] != ws[0] {
                format!(
                    "input has {} channels but the weight expects {}",
                    xs[1], ws[0]
                )
            } else if output_padding
                .iter()
                .zip(stride.iter().zip(&dilation))
                .any(|(p, (s, d))| p >= s && p >= d)
            {
                format!(
                    "output_padding {output_padding:?} must be smaller than stride {stride:?} or dilation {dilation:?}"
                )
            } else {
                explain(&xs, &ws, opt, None)
            };
            conv_shape_error("conv_transpose2d", &xs, &ws, detail)
        };
        let out = apply_storage(Kernel::InputGrad, &self.storage(), &weight.storage(), &s);
        record("conv_transpose2d", out, &[self, weight], || {
            let x = Saved::new(self, "conv_transpose2d");
            let w = Saved::new(weight, "conv_transpose2d");
            move |gy: &Tensor, needs: &[bool]| {
                let (x, w, gy) = (x.get().storage(), w.get().storage(), gy.storage());
                vec![
                    needs[0].then(|| apply_storage(Kernel::Forward, &gy, &w, &s)),
                    needs[1].then(|| apply_storage(Kernel::WeightGrad, &gy, &x, &s)),
                ]
                .into_iter()
                .map(|g| g.map(Tensor::from_storage))
                .collect()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::gradcheck;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(shape).double().requires_grad_(true)
    }

    #[test]
    fn conv2d_grouped_backward_matches_finite_differences() {
        crate::random::manual_seed(5);
        // (input, weight, stride, padding, dilation, groups)
        let cases = [
            ([2, 2, 6, 5], [3, 2, 3, 2], [1, 1], [1, 0], [2, 1], 1),
            ([1, 4, 5, 5], [2, 2, 3, 3], [2, 1], [1, 1], [1, 1], 2),
            ([2, 3, 7, 6], [3, 1, 3, 2], [2, 1], [1, 1], [2, 2], 3),
            ([1, 4, 4, 4], [6, 2, 2, 2], [1, 2], [0, 1], [1, 2], 2),
        ];
        for (xs, ws, stride, padding, dilation, groups) in cases {
            gradcheck(
                |v| v[0].conv2d_grouped(&v[1], stride, padding, dilation, groups),
                &[randn(&xs), randn(&ws)],
            )
            .unwrap_or_else(|e| panic!("{xs:?} {ws:?} groups {groups}: {e}"));
        }
    }

    #[test]
    fn conv2d_grouped_agrees_with_the_fast_path_without_dilation_or_groups() {
        crate::random::manual_seed(6);
        let (x, w) = (randn(&[2, 3, 6, 5]), randn(&[4, 3, 3, 2]));
        let fast = x.conv2d(&w, [2, 1], [1, 1]).to_vec::<f64>();
        let general = x
            .conv2d_grouped(&w, [2, 1], [1, 1], [1, 1], 1)
            .to_vec::<f64>();
        for (a, b) in fast.iter().zip(&general) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn conv1d_backward_matches_finite_differences() {
        crate::random::manual_seed(7);
        for (stride, padding, dilation, groups) in [(1, 0, 1, 1), (2, 1, 2, 1), (1, 1, 1, 2)] {
            gradcheck(
                |v| v[0].conv1d(&v[1], stride, padding, dilation, groups),
                &[randn(&[2, 4, 9]), randn(&[6, 4 / groups, 3])],
            )
            .unwrap_or_else(|e| panic!("stride {stride} dilation {dilation}: {e}"));
        }
    }

    #[test]
    fn conv_transpose2d_backward_matches_finite_differences() {
        crate::random::manual_seed(8);
        // (input, weight, stride, padding, output_padding, groups, dilation)
        let cases = [
            (
                [2, 2, 3, 3],
                [2, 3, 3, 3],
                [2, 2],
                [1, 1],
                [1, 1],
                1,
                [1, 1],
            ),
            (
                [1, 3, 3, 4],
                [3, 2, 2, 2],
                [1, 1],
                [0, 0],
                [0, 0],
                1,
                [1, 1],
            ),
            (
                [2, 2, 3, 2],
                [2, 3, 2, 3],
                [2, 1],
                [0, 1],
                [1, 0],
                1,
                [1, 1],
            ),
            (
                [1, 4, 3, 3],
                [4, 1, 2, 3],
                [2, 1],
                [1, 0],
                [0, 0],
                2,
                [2, 1],
            ),
        ];
        for (xs, ws, stride, padding, output_padding, groups, dilation) in cases {
            gradcheck(
                |v| v[0].conv_transpose2d(&v[1], stride, padding, output_padding, groups, dilation),
                &[randn(&xs), randn(&ws)],
            )
            .unwrap_or_else(|e| panic!("{xs:?} {ws:?}: {e}"));
        }
    }

    #[test]
    fn conv_transpose2d_is_the_adjoint_of_conv2d() {
        // <conv2d(a, w), b> = <a, conv_transpose2d(b, w)> for every a, b.
        crate::random::manual_seed(9);
        let w = randn(&[4, 1, 3, 2]);
        let a = randn(&[2, 2, 7, 6]);
        let y = a.conv2d_grouped(&w, [2, 2], [1, 0], [1, 2], 2);
        let b = randn(&y.shape());
        let at = b.conv_transpose2d(&w, [2, 2], [1, 0], [0, 1], 2, [1, 2]);
        assert_eq!(at.shape(), a.shape());
        let lhs = (&y * &b).sum().item();
        let rhs = (&a * &at).sum().item();
        assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
    }

    #[test]
    fn reused_input_accumulates() {
        let x = randn(&[1, 2, 4, 4]);
        let w = randn(&[2, 1, 3, 3]);
        gradcheck(
            |v| &v[0].conv2d_grouped(&v[1], [1, 1], [1, 1], [1, 1], 2) * &v[0],
            &[x, w],
        )
        .unwrap();
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input [1, 3, 4, 4] and weight [2, 2, 3, 3] do not fit: \
                               input channels 3 must equal the weight's 2 per group times groups 2"
    )]
    fn conv2d_grouped_names_the_channel_mismatch() {
        Tensor::zeros(&[1, 3, 4, 4]).conv2d_grouped(
            &Tensor::zeros(&[2, 2, 3, 3]),
            [1, 1],
            [0, 0],
            [1, 1],
            2,
        );
    }

    #[test]
    #[should_panic(expected = "output_padding [2, 2] must be smaller than stride [2, 2]")]
    fn conv_transpose2d_refuses_a_large_output_padding() {
        Tensor::zeros(&[1, 1, 3, 3]).conv_transpose2d(
            &Tensor::zeros(&[1, 1, 3, 3]),
            [2, 2],
            [0, 0],
            [2, 2],
            1,
            [1, 1],
        );
    }
}
