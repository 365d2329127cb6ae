//! Fused attention: `softmax(q @ kᵀ · scale + mask) @ v` for many small heads as one op,
//! forward and backward, without per-head copies or `[B, H, L, S]` temporaries beyond the
//! attention weights themselves.
//!
//! NOTE [ Fused attention ]
//! Written as a composite (scale, matmul, mask add, softmax, matmul, permute, reshape) one
//! attention layer of W5 (batch 32, 4 heads, 64 positions, head size 32) made five
//! `[32, 4, 64, 64]` temporaries forward (zero-filled before the products overwrote them),
//! copied the heads out of the projections and back, and did as much again backward. Here
//! each head `p` is a problem over strided matrices read in place: `Q_p`, `K_p`, `V_p` are
//! `L × E` / `S × E` / `S × Ev` views (for `MultiheadAttention`, column blocks of the packed
//! `[N, L, 3E]` projection, so the heads and `Kᵀ` are strides, not copies), and
//!
//! - forward: `P = Q Kᵀ` into the saved weights, then one pass per row applies the scale
//!   and the mask (the causal one by skipping the masked columns) and the softmax in place;
//!   `O = P V` is written straight into its column block of the `[N, L, Ev·H]` output;
//! - backward, with `dO` read in the output's layout: `dV = Pᵀ dO`, `dP = dO Vᵀ` (one
//!   `L × S` scratch per thread), `dS = P ⊙ (dP - rowsum(dP ⊙ P)) · scale` in place,
//!   `dQ = dS K`, `dK = dSᵀ Q`, each written into its block of the gradient.
//!
//! The heads are split over two threads when the products are large enough; each product is
//! `ops::gemm::gemm` on strided views (the blocked kernel packs them).

use crate::autograd::graph::record;
use crate::dtype::{Float, Storage, ToStorage};
use crate::ops::gemm::{Epilogue, gemm};
use crate::tensor::Tensor;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, s};

/// From this many multiply-adds (per pass) on, the heads are split over two threads.
const PARALLEL_MACS: usize = 2 * 1024 * 1024;

/// Where the matrix of head `p` starts in its buffer and how its rows are spaced: problem
/// `p` is batch `p / heads`, head `p % heads`, at `base + batch·sn + head·sh`, rows `rs`
/// apart, columns contiguous.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub base: usize,
    pub sn: usize,
    pub sh: usize,
    pub rs: usize,
}

impl Layout {
    fn at(self, p: usize, heads: usize) -> usize {
        self.base + (p / heads) * self.sn + (p % heads) * self.sh
    }
}

/// The mask added to the scores before the softmax.
#[derive(Clone, Debug)]
pub(crate) enum Mask<T> {
    None,
    /// Query `i` attends to keys `j <= i` (PyTorch's `is_causal`, top-left aligned).
    Causal,
    /// An additive `[L, S]` bias, the same for every head (`-inf` = masked out).
    Bias(Vec<T>),
}

/// The sizes of one fused attention: `count` problems (`heads` per batch element) of `l`
/// queries and `s` keys, query/key width `e`, value width `ev`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub count: usize,
    pub heads: usize,
    pub l: usize,
    pub s: usize,
    pub e: usize,
    pub ev: usize,
}

/// A read-only operand: its buffer and layout.
#[derive(Clone, Copy)]
struct In<'a, T> {
    data: &'a [T],
    at: Layout,
}

/// A written operand: a raw pointer into a buffer several problems (and, for the packed
/// projection's gradient, several operands) write disjoint parts of.
#[derive(Clone, Copy)]
struct Out<T> {
    ptr: *mut T,
    len: usize,
    at: Layout,
}

// SAFETY: an `Out` is only written through in `view_mut`, for one problem's matrix; the
// problems split between threads are disjoint, and within a problem the operands written
// (dQ, dK, dV; or O) occupy disjoint elements (checked by the callers' layouts: different
// column blocks or different buffers).
unsafe impl<T: Send> Send for Out<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Sync> Sync for Out<T> {}

impl<'a, T: Float> In<'a, T> {
    /// Problem `p`'s `rows × cols` matrix.
    fn view(&self, p: usize, heads: usize, rows: usize, cols: usize) -> ArrayView2<'a, T> {
        let start = self.at.at(p, heads);
        ArrayView2::from_shape((rows, cols).strides((self.at.rs, 1)), &self.data[start..])
            .unwrap_or_else(|e| unreachable!("attention operand {rows}×{cols} at {start}: {e}"))
    }
}

impl<T: Float> Out<T> {
    /// Problem `p`'s `rows × cols` matrix, writable.
    ///
    /// # Safety
    /// No other live view may overlap this problem's matrix (see the `Send` impl above).
    unsafe fn view_mut<'b>(
        &self,
        p: usize,
        heads: usize,
        rows: usize,
        cols: usize,
    ) -> ArrayViewMut2<'b, T> {
        let start = self.at.at(p, heads);
        let last = start + (rows - 1) * self.at.rs + cols;
        assert!(
            rows > 0 && cols > 0 && last <= self.len,
            "attention output out of bounds"
        );
        // SAFETY: the matrix lies inside the buffer (asserted above), `self.ptr` is valid
        // for `len` elements while the op runs, and the caller guarantees no overlap.
        unsafe {
            ArrayViewMut2::from_shape_ptr(
                (rows, cols).strides((self.at.rs, 1)),
                self.ptr.add(start),
            )
        }
    }
}

/// Runs `f(p, scratch)` for every problem, the problems split in two halves over two
/// threads when `macs` (the multiply-adds of all problems) is large; `scratch` is a
/// per-thread buffer of `scratch_len` elements.
fn for_problems<T: Float>(
    count: usize,
    macs: usize,
    scratch_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let run = |lo: usize, hi: usize| {
        let mut scratch = vec![T::zero(); scratch_len];
        for p in lo..hi {
            f(p, &mut scratch);
        }
    };
    if count >= 2 && macs >= PARALLEL_MACS && rayon::current_num_threads() >= 2 {
        let half = count / 2;
        rayon::join(|| run(0, half), || run(half, count));
    } else {
        run(0, count);
    }
}

/// Scale, mask and softmax of row `i` of the scores, in place.
#[inline]
fn softmax_row<T: Float>(row: &mut [T], i: usize, scale: T, mask: &Mask<T>) {
    let s = row.len();
    let live = match mask {
        Mask::Causal => (i + 1).min(s),
        _ => s,
    };
    let (row, dead) = row.split_at_mut(live);
    match mask {
        Mask::Bias(b) => {
            for (v, &b) in row.iter_mut().zip(&b[i * s..(i + 1) * s]) {
                *v = *v * scale + b;
            }
        }
        _ => row.iter_mut().for_each(|v| *v *= scale),
    }
    let max = max_of(row);
    // A row masked out entirely gives NaN (0 · ∞), as the composite and PyTorch do.
    let max = if max.is_finite() { max } else { T::zero() };
    let sum = exp_sum(row, max);
    let inv = T::one() / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    dead.iter_mut().for_each(|v| *v = T::zero());
}

// The row loops below keep LANES independent accumulators so that they vectorise (a
// single floating-point accumulator is a serial chain the compiler may not reorder).
const LANES: usize = 8;

/// The largest value of `x` (NaN ignored, `-inf` for none).
#[inline]
fn max_of<T: Float>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    rest.iter()
        .chain(&acc)
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
}

/// `x = exp(x - max)` in place; returns the sum.
#[inline]
fn exp_sum<T: Float>(x: &mut [T], max: T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *v = (*v - max).exp_fast();
            *a += *v;
        }
    }
    let mut sum = T::zero();
    for v in chunks.into_remainder() {
        *v = (*v - max).exp_fast();
        sum += *v;
    }
    acc.iter().fold(sum, |s, &a| s + a)
}

/// `Σ x·y`.
#[inline]
fn dot<T: Float>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let (cx, cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let rest: T = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(&a, &b)| a * b)
        .sum();
    for (a, b) in cx.zip(cy) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }
    acc.iter().fold(rest, |s, &a| s + a)
}

/// Queries per block of the causal products: the scores of queries `r0..r0 + CAUSAL_BLOCK`
/// need the keys up to the block's last query only, so the products skip the masked-out
/// upper triangle block by block (3/4 of the work instead of all of it for W5's 64
/// positions), at the cost of a few more, smaller products. Not smaller: blocks of 16 made
/// products of 16×16×32 multiply-adds, below the size from which `gemm` packs (its direct
/// loop is scalar), and were slower than no blocks at all (perf: `gemm::product` 9%).
const CAUSAL_BLOCK: usize = 32;

/// The blocks of queries `(r0, r1, live)`: queries `r0..r1` attend to keys `0..live`
/// (all `s` of them, in one block, without the causal mask).
fn query_blocks(l: usize, s: usize, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> {
    let step = if causal { CAUSAL_BLOCK } else { l.max(1) };
    (0..l)
        .step_by(step)
        .map(move |r0| {
            let r1 = (r0 + step).min(l);
            (r0, r1, if causal { r1.min(s) } else { s })
        })
        .filter(|&(_, _, live)| live > 0)
}

/// The blocks of keys `(k0, k1, first)`: keys `k0..k1` are attended to by queries
/// `first..l` only (all of them without the causal mask; none when `first == l`).
fn key_blocks(l: usize, s: usize, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> {
    let step = if causal { CAUSAL_BLOCK } else { s.max(1) };
    (0..s)
        .step_by(step)
        .map(move |k0| (k0, (k0 + step).min(s), if causal { k0.min(l) } else { 0 }))
}

/// The forward pass: fills `probs` (`count · l · s`, the attention weights, saved for
/// backward) and writes every problem's output through `out`.
fn forward<T: Float>(
    d: Dims,
    scale: T,
    mask: &Mask<T>,
    (q, k, v): (In<'_, T>, In<'_, T>, In<'_, T>),
    probs: &mut [T],
    out: Out<T>,
) {
    let (l, s) = (d.l, d.s);
    let probs_ptr = Out {
        ptr: probs.as_mut_ptr(),
        len: probs.len(),
        at: Layout {
            base: 0,
            sn: l * s,
            sh: 0,
            rs: s,
        },
    };
    let macs = d.count * l * s * (d.e + d.ev);
    for_problems::<T>(d.count, macs, 0, &|p, _| {
        let qp = q.view(p, d.heads, l, d.e);
        let kp = k.view(p, d.heads, s, d.e);
        let vp = v.view(p, d.heads, s, d.ev);
        // SAFETY: problem p's block of `probs` (heads = 1: one block per problem) and its
        // block of the output are touched by this call only.
        let (mut pm, mut om) = unsafe {
            (
                probs_ptr.view_mut(p, 1, l, s),
                out.view_mut(p, d.heads, l, d.ev),
            )
        };
        let causal = matches!(mask, Mask::Causal);
        for (r0, r1, live) in query_blocks(l, s, causal) {
            let mut scores = pm.slice_mut(s![r0..r1, ..live]);
            gemm(
                &qp.slice(s![r0..r1, ..]),
                &kp.slice(s![..live, ..]).t(),
                &mut scores,
                Epilogue::write(),
            );
        }
        for (i, mut row) in pm.rows_mut().into_iter().enumerate() {
            let row = row
                .as_slice_mut()
                .unwrap_or_else(|| unreachable!("score rows are contiguous"));
            softmax_row(row, i, scale, mask);
        }
        for (r0, r1, live) in query_blocks(l, s, causal) {
            let weights = pm.slice(s![r0..r1, ..live]);
            let mut rows = om.slice_mut(s![r0..r1, ..]);
            gemm(
                &weights,
                &vp.slice(s![..live, ..]),
                &mut rows,
                Epilogue::write(),
            );
        }
    });
}

/// The backward pass: writes `dQ`, `dK`, `dV` of every problem through `dq`, `dk`, `dv`.
#[allow(clippy::too_many_arguments)]
fn backward<T: Float>(
    d: Dims,
    scale: T,
    causal: bool,
    (q, k, v): (In<'_, T>, In<'_, T>, In<'_, T>),
    probs: &[T],
    g: In<'_, T>,
    (dq, dk, dv): (Out<T>, Out<T>, Out<T>),
) {
    let (l, s) = (d.l, d.s);
    let probs = In {
        data: probs,
        at: Layout {
            base: 0,
            sn: l * s,
            sh: 0,
            rs: s,
        },
    };
    let macs = d.count * l * s * (2 * d.e + 2 * d.ev);
    for_problems::<T>(d.count, macs, l * s, &|p, scratch| {
        let qp = q.view(p, d.heads, l, d.e);
        let kp = k.view(p, d.heads, s, d.e);
        let vp = v.view(p, d.heads, s, d.ev);
        let pp = probs.view(p, 1, l, s);
        let gp = g.view(p, d.heads, l, d.ev);
        // SAFETY: problem p's blocks of dQ, dK and dV are disjoint from each other (callers'
        // layouts) and from every other problem's.
        let (mut dqm, mut dkm, mut dvm) = unsafe {
            (
                dq.view_mut(p, d.heads, l, d.e),
                dk.view_mut(p, d.heads, s, d.e),
                dv.view_mut(p, d.heads, s, d.ev),
            )
        };
        // dV = Pᵀ dO, by blocks of keys: with the causal mask, key j has weight only in
        // the queries i >= j.
        for (k0, k1, first) in key_blocks(l, s, causal) {
            let mut rows = dvm.slice_mut(s![k0..k1, ..]);
            if first == l {
                rows.fill(T::zero());
                continue;
            }
            let weights = pp.slice(s![first.., k0..k1]);
            gemm(
                &weights.t(),
                &gp.slice(s![first.., ..]),
                &mut rows,
                Epilogue::write(),
            );
        }
        let mut ds = ArrayViewMut2::from_shape((l, s), &mut scratch[..])
            .unwrap_or_else(|e| unreachable!("attention scratch: {e}"));
        // dP = dO Vᵀ where P is not masked out by the causal mask (elsewhere dS is 0 and
        // the scratch holds the last problem's values, overwritten below).
        for (r0, r1, live) in query_blocks(l, s, causal) {
            let mut block = ds.slice_mut(s![r0..r1, ..live]);
            gemm(
                &gp.slice(s![r0..r1, ..]),
                &vp.slice(s![..live, ..]).t(),
                &mut block,
                Epilogue::write(),
            );
        }
        for (i, (mut dsr, pr)) in ds.rows_mut().into_iter().zip(pp.rows()).enumerate() {
            let dsr = dsr
                .as_slice_mut()
                .unwrap_or_else(|| unreachable!("scratch rows are contiguous"));
            let pr = pr
                .to_slice()
                .unwrap_or_else(|| unreachable!("weight rows are contiguous"));
            let live = if causal { (i + 1).min(s) } else { s };
            let ((dsr, dead), pr) = (dsr.split_at_mut(live), &pr[..live]);
            let dot = dot(dsr, pr);
            for (x, &y) in dsr.iter_mut().zip(pr) {
                *x = y * (*x - dot) * scale;
            }
            dead.fill(T::zero());
        }
        for (r0, r1, live) in query_blocks(l, s, causal) {
            let mut rows = dqm.slice_mut(s![r0..r1, ..]);
            gemm(
                &ds.slice(s![r0..r1, ..live]),
                &kp.slice(s![..live, ..]),
                &mut rows,
                Epilogue::write(),
            );
        }
        for (k0, k1, first) in key_blocks(l, s, causal) {
            let mut rows = dkm.slice_mut(s![k0..k1, ..]);
            if first == l {
                rows.fill(T::zero());
                continue;
            }
            let block = ds.slice(s![first.., k0..k1]);
            gemm(
                &block.t(),
                &qp.slice(s![first.., ..]),
                &mut rows,
                Epilogue::write(),
            );
        }
    });
}

#[cold]
#[inline(never)]
#[track_caller]
fn dtype_error(what: &str) -> ! {
    panic!("{what}: query, key and value must share one floating-point dtype")
}

/// The mask converted to `T`.
fn mask_as<T: Float>(mask: &Mask<f64>) -> Mask<T> {
    match mask {
        Mask::None => Mask::None,
        Mask::Causal => Mask::Causal,
        Mask::Bias(b) => Mask::Bias(b.iter().map(|&v| T::lit(v)).collect()),
    }
}

/// The contiguous data of a storage of `T` (copied when it is a strided view).
fn contiguous<T: Float>(s: &Storage) -> ndarray::ArcArray<T, ndarray::IxDyn> {
    let a = <T as ToStorage>::from_storage(s);
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned().into_shared()
    }
}

/// The per-head problem sizes of a packed `[N, L, 3E]` self-attention, and the layout of the
/// Q (`base` 0), K (`E`) or V (`2E`) block of every head in it.
fn packed_geometry(n: usize, l: usize, e: usize, heads: usize) -> (Dims, impl Fn(usize) -> Layout) {
    let hd = e / heads;
    let d = Dims {
        count: n * heads,
        heads,
        l,
        s: l,
        e: hd,
        ev: hd,
    };
    let block = move |base| Layout {
        base,
        sn: l * 3 * e,
        sh: hd,
        rs: 3 * e,
    };
    (d, block)
}

/// The typed core of [`packed_self_attention`]: `[N, L, 3E]` → (`[N, L, E]`, weights).
fn packed_forward<T: Float>(
    x: &[T],
    (n, l, e, heads): (usize, usize, usize, usize),
    scale: T,
    mask: &Mask<T>,
) -> (Vec<T>, Vec<T>) {
    let (d, block) = packed_geometry(n, l, e, heads);
    let hd = d.e;
    let mut out = crate::memory::filled(n * l * e, T::zero());
    let mut probs = crate::memory::filled(n * heads * l * l, T::zero());
    let o = Out {
        ptr: out.as_mut_ptr(),
        len: out.len(),
        at: Layout {
            base: 0,
            sn: l * e,
            sh: hd,
            rs: e,
        },
    };
    let op = |base| In {
        data: x,
        at: block(base),
    };
    forward(d, scale, mask, (op(0), op(e), op(2 * e)), &mut probs, o);
    (out, probs)
}

/// The typed backward of [`packed_self_attention`]: the `[N, L, 3E]` gradient.
fn packed_backward<T: Float>(
    x: &[T],
    probs: &[T],
    g: &[T],
    (n, l, e, heads): (usize, usize, usize, usize),
    scale: T,
    causal: bool,
) -> Vec<T> {
    let (d, block) = packed_geometry(n, l, e, heads);
    let hd = d.e;
    // Every element is written: the dQ, dK, dV blocks of all heads tile each row.
    let mut dx = crate::memory::filled(x.len(), T::zero());
    let op = |base| In {
        data: x,
        at: block(base),
    };
    let gin = In {
        data: g,
        at: Layout {
            base: 0,
            sn: l * e,
            sh: hd,
            rs: e,
        },
    };
    let (ptr, len) = (dx.as_mut_ptr(), dx.len());
    let out = |base| Out {
        ptr,
        len,
        at: block(base),
    };
    let outs = (out(0), out(e), out(2 * e));
    backward(
        d,
        scale,
        causal,
        (op(0), op(e), op(2 * e)),
        probs,
        gin,
        outs,
    );
    dx
}

/// Self-attention over the packed projection `qkv` (`[N, L, 3E]`: columns `0..E` the
/// queries, `E..2E` the keys, `2E..3E` the values, each split into `heads` heads of
/// `E / heads` columns), scale `1/sqrt(E / heads)`: the heads' outputs concatenated,
/// `[N, L, E]`, as `MultiheadAttention` computes before `out_proj`. See NOTE [ Fused
/// attention ].
///
/// `mask` is `Mask::Bias` of `L · L` values or causal or none (in f64; converted to the
/// dtype of `qkv`).
#[track_caller]
pub(crate) fn packed_self_attention(qkv: &Tensor, heads: usize, mask: &Mask<f64>) -> Tensor {
    let shape = qkv.shape();
    let (n, l, e3) = (shape[0], shape[1], shape[2]);
    let e = e3 / 3;
    debug_assert!(shape.len() == 3 && e3 == 3 * e && e % heads == 0);
    let dims = (n, l, e, heads);
    let scale = 1.0 / ((e / heads) as f64).sqrt();
    let causal = matches!(mask, Mask::Causal);
    let storage = qkv.storage();
    let (out, probs) = match &storage {
        Storage::F32(_) => {
            let x = contiguous::<f32>(&storage);
            let x_slice = x.as_slice().unwrap_or_else(|| unreachable!("contiguous"));
            let (out, probs) = packed_forward(x_slice, dims, scale as f32, &mask_as(mask));
            (
                f32::into_storage(crate::ops::kernel::from_vec(&[n, l, e], out)),
                f32::into_storage(crate::ops::kernel::from_vec(&[probs.len()], probs)),
            )
        }
        Storage::F64(_) => {
            let x = contiguous::<f64>(&storage);
            let x_slice = x.as_slice().unwrap_or_else(|| unreachable!("contiguous"));
            let (out, probs) = packed_forward(x_slice, dims, scale, &mask_as(mask));
            (
                f64::into_storage(crate::ops::kernel::from_vec(&[n, l, e], out)),
                f64::into_storage(crate::ops::kernel::from_vec(&[probs.len()], probs)),
            )
        }
        Storage::I64(_) => dtype_error("MultiheadAttention"),
    };
    // Its buffer returns to the cache with the graph (NOTE [ Buffer cache ] in memory.rs).
    let probs = crate::memory::Hold::new(probs);
    record("multi_head_attention", out, &[qkv], || {
        let input = crate::autograd::graph::Saved::new(qkv, "multi_head_attention");
        move |g: &Tensor, _: &[bool]| {
            let xs = input.get().storage();
            let gs = g.storage();
            let dx = match (&xs, &*probs) {
                (Storage::F32(_), Storage::F32(p)) => {
                    let x = contiguous::<f32>(&xs);
                    let g = contiguous::<f32>(&gs);
                    let dx = packed_backward(
                        x.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        p.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        g.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        dims,
                        scale as f32,
                        causal,
                    );
                    f32::into_storage(crate::ops::kernel::from_vec(&shape, dx))
                }
                (Storage::F64(_), Storage::F64(p)) => {
                    let x = contiguous::<f64>(&xs);
                    let g = contiguous::<f64>(&gs);
                    let dx = packed_backward(
                        x.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        p.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        g.as_slice().unwrap_or_else(|| unreachable!("contiguous")),
                        dims,
                        scale,
                        causal,
                    );
                    f64::into_storage(crate::ops::kernel::from_vec(&shape, dx))
                }
                _ => unreachable!("gradients have the input's dtype"),
            };
            vec![Some(Tensor::from_storage(dx))]
        }
    })
}
