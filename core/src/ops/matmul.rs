//! Matrix products: 2-D, batched, broadcast, and the vector cases of `torch.matmul`.
//!
//! Every product goes through `ops::gemm` (NOTE [ GEMM ]), which takes strided operands:
//! the transposed views that backward builds (`g @ bᵀ`, `aᵀ @ g`) are multiplied without
//! being copied.

use crate::autograd::graph::{Saved, record};
use crate::dtype::Float;
use crate::ops::gemm::{Epilogue, gemm_batched, gemm_new};
use crate::tensor::Tensor;
use ndarray::{ArcArray, ArrayView2, ArrayViewD, Ix2, IxDyn};

#[cold]
#[inline(never)]
#[track_caller]
fn matmul_shape_error(a: &[usize], b: &[usize]) -> ! {
    if a.is_empty() || b.is_empty() {
        panic!("matmul: {a:?} @ {b:?}: both arguments need at least 1 dimension");
    }
    let k_a = a[a.len() - 1];
    let k_b = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
    if k_a != k_b {
        panic!("matmul: {a:?} @ {b:?}: inner dimensions {k_a} and {k_b} differ");
    }
    panic!("matmul: {a:?} @ {b:?}: batch dimensions cannot be broadcast together")
}

impl Tensor {
    /// The matrix product, with `torch.matmul`'s rules: 1-D operands are treated as a row
    /// (left) or column (right) vector and that dimension is removed from the result;
    /// leading (batch) dimensions broadcast.
    ///
    /// # Shapes
    /// `[..., m, k] @ [..., k, n] → [..., m, n]`; `[k] @ [k] → []`.
    ///
    /// # Panics
    /// If the inner dimensions differ or the batch dimensions do not broadcast.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        let (sa, sb) = (self.shape(), other.shape());
        if sa.is_empty() || sb.is_empty() {
            matmul_shape_error(&sa, &sb);
        }
        let k_b = if sb.len() == 1 {
            sb[0]
        } else {
            sb[sb.len() - 2]
        };
        if sa[sa.len() - 1] != k_b {
            matmul_shape_error(&sa, &sb);
        }
        if sa.len() > 2 && sb.len() > 2 {
            let batch = crate::shape::broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
            if batch.is_none() {
                matmul_shape_error(&sa, &sb);
            }
        }
        match (sa.len(), sb.len()) {
            (1, 1) => self
                .unsqueeze(0)
                .mm_nd(&other.unsqueeze(1))
                .reshape_usize(&[]),
            (1, _) => self.unsqueeze(0).mm_nd(other).squeeze_dim(-2),
            (_, 1) => self.mm_nd(&other.unsqueeze(1)).squeeze_dim(-1),
            // [..., m, k] @ [k, n]: one GEMM over the flattened leading dimensions.
            (n, 2) if n > 2 => {
                let mut out_shape = sa[..n - 1].to_vec();
                out_shape.push(sb[1]);
                let k = sa[n - 1] as isize;
                self.reshape(&[-1, k])
                    .mm_nd(other)
                    .reshape_usize(&out_shape)
            }
            _ => self.mm_nd(other),
        }
    }

    /// Matrix product of operands with at least 2 dimensions each.
    #[track_caller]
    fn mm_nd(&self, other: &Tensor) -> Tensor {
        let (sa, sb) = (self.storage(), other.storage());
        let out = crate::dispatch_float2!(&sa, &sb, (a, b) => batched_matmul(a.view(), b.view())
            .unwrap_or_else(|| unreachable!("matmul: shapes checked before")),
            else => crate::ops::binary::dtype_error("matmul", &sa, &sb));
        let (shape_a, shape_b) = (self.shape(), other.shape());
        record("matmul", out, &[self, other], || {
            let a = Saved::new(self, "matmul");
            let b = Saved::new(other, "matmul");
            move |g: &Tensor, needs: &[bool]| {
                let ga = needs[0].then(|| g.mm_nd(&b.get().transpose(-1, -2)).sum_to(&shape_a));
                let gb = needs[1].then(|| a.get().transpose(-1, -2).mm_nd(g).sum_to(&shape_b));
                vec![ga, gb]
            }
        })
    }
}

/// `a @ b` for operands with at least 2 dimensions, broadcasting the batch dimensions;
/// `None` when the shapes do not fit.
fn batched_matmul<T: Float>(
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
) -> Option<ArcArray<T, IxDyn>> {
    let (ra, rb) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return None;
    }
    if ra == 2 && rb == 2 {
        let c = gemm_new(&as2(a), &as2(b), Epilogue::write());
        return Some(c.into_dyn().into_shared());
    }
    let batch = crate::shape::broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
    let mut full_a = batch.clone();
    full_a.extend([m, k]);
    let mut full_b = batch.clone();
    full_b.extend([k, n]);
    let a = a.broadcast(IxDyn(&full_a))?;
    let b = b.broadcast(IxDyn(&full_b))?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let numel = out_shape.iter().product();
    let mut out = super::kernel::from_vec(&out_shape, crate::memory::filled(numel, T::zero()));
    // Attention multiplies many small matrices ([B, H, L, E] @ [B, H, E, S]): the GEMM
    // spreads the batch itself over the threads (NOTE [ GEMM ] in ops/gemm.rs).
    gemm_batched(a.view(), b.view(), out.view_mut(), Epilogue::write());
    Some(out)
}

fn as2<T: Float>(a: ArrayViewD<'_, T>) -> ArrayView2<'_, T> {
    a.into_dimensionality::<Ix2>()
        .unwrap_or_else(|e| unreachable!("matmul operand is 2-D here: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::tensor::Tensor;

    #[test]
    fn batched_products_split_over_threads_match_each_product() {
        // [B, H, L, E] @ [B, H, E, S] as attention builds it, the right operand a transposed
        // view: 16.8 M multiply-adds, past the two-thread threshold.
        let q = Tensor::randn(&[16, 8, 64, 32]);
        let k_t = Tensor::randn(&[16, 8, 64, 32]).transpose(-1, -2);
        let scores = q.matmul(&k_t);
        assert_eq!(scores.shape(), [16, 8, 64, 64]);
        for (b, h) in [(0, 0), (7, 3), (8, 0), (15, 7)] {
            let want = q
                .select(0, b)
                .select(0, h)
                .matmul(&k_t.select(0, b).select(0, h));
            let got = scores.select(0, b).select(0, h).to_vec::<f32>();
            let close = got
                .iter()
                .zip(want.to_vec::<f32>())
                .all(|(a, b)| (a - b).abs() < 1e-4);
            assert!(close, "block ({b}, {h})");
        }
    }
}
