//! Shape ops: reshape, transpose, permute, expand, slicing and joining.
//!
//! Transpose, permute, narrow and select return views over the same buffer (no copy);
//! reshape is free for contiguous tensors. Unlike PyTorch, writing in place into a view does
//! not write through to its base: buffers are copy-on-write (see `dtype.rs`).

use crate::autograd::graph::{record, record_view};
use crate::dtype::{DType, Storage};
use crate::shape::normalize_dim;
use crate::tensor::Tensor;
use ndarray::{ArcArray, Axis, IxDyn, Slice};

/// Applies the same shape-only transformation to any storage.
macro_rules! map_storage {
    ($s:expr, $a:ident => $body:expr) => {
        match $s {
            Storage::F32($a) => Storage::F32($body),
            Storage::F64($a) => Storage::F64($body),
            Storage::I64($a) => Storage::I64($body),
        }
    };
}

#[cold]
#[inline(never)]
#[track_caller]
fn reshape_error(from: &[usize], to: &[isize]) -> ! {
    panic!(
        "reshape: shape {to:?} is invalid for input of shape {from:?} ({} elements)",
        from.iter().product::<usize>()
    )
}

/// `to` with its single -1 resolved against `numel` elements.
#[track_caller]
fn infer_shape(from: &[usize], to: &[isize]) -> Vec<usize> {
    let numel: usize = from.iter().product();
    let mut infer = None;
    let mut known = 1usize;
    for (i, &d) in to.iter().enumerate() {
        match d {
            -1 if infer.is_none() => infer = Some(i),
            d if d >= 0 => known *= d as usize,
            _ => reshape_error(from, to),
        }
    }
    let mut out: Vec<usize> = to.iter().map(|&d| d.max(0) as usize).collect();
    match infer {
        Some(i) if known != 0 && numel.is_multiple_of(known) => out[i] = numel / known,
        None if known == numel => {}
        _ => reshape_error(from, to),
    }
    out
}

fn reshape_storage(s: Storage, shape: &[usize]) -> Storage {
    map_storage!(s, a => {
        let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned().into_shared() };
        a.into_shape_with_order(IxDyn(shape)).unwrap_or_else(|e| unreachable!("reshape to {shape:?}: {e}"))
    })
}

impl Tensor {
    /// The same elements in a new shape; one dimension may be -1 (inferred). Free for
    /// contiguous tensors.
    ///
    /// # Panics
    /// If the element counts differ.
    #[track_caller]
    pub fn reshape(&self, shape: &[isize]) -> Tensor {
        let from = self.shape();
        let to = infer_shape(&from, shape);
        self.reshape_usize(&to)
    }

    /// [`reshape`](Tensor::reshape) with a fully known shape.
    #[track_caller]
    pub fn reshape_usize(&self, shape: &[usize]) -> Tensor {
        let from = self.shape();
        if from == shape {
            return self.clone();
        }
        if from.iter().product::<usize>() != shape.iter().product::<usize>() {
            let to: Vec<isize> = shape.iter().map(|&d| d as isize).collect();
            reshape_error(&from, &to);
        }
        let out = reshape_storage(self.storage(), shape);
        record_view("reshape", out, self, || {
            move |g: &Tensor, _: &[bool]| vec![Some(g.reshape_usize(&from))]
        })
    }

    /// Flattens dimensions `start_dim..=end_dim` into one.
    #[track_caller]
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Tensor {
        let shape = self.shape();
        if shape.is_empty() {
            return self.reshape_usize(&[1]);
        }
        let s = normalize_dim("flatten", start_dim, shape.len());
        let e = normalize_dim("flatten", end_dim, shape.len());
        if s > e {
            panic!(
                "flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape:?}"
            );
        }
        let mut out: Vec<usize> = shape[..s].to_vec();
        out.push(shape[s..=e].iter().product());
        out.extend_from_slice(&shape[e + 1..]);
        self.reshape_usize(&out)
    }

    /// Inserts a dimension of size 1 at `dim`.
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Tensor {
        let mut shape = self.shape();
        let d = normalize_dim("unsqueeze", dim, shape.len() + 1);
        shape.insert(d, 1);
        self.reshape_usize(&shape)
    }

    /// Removes dimension `dim` if it has size 1 (otherwise returns the tensor unchanged).
    #[track_caller]
    pub fn squeeze_dim(&self, dim: isize) -> Tensor {
        let mut shape = self.shape();
        let d = normalize_dim("squeeze_dim", dim, shape.len());
        if shape.get(d) == Some(&1) {
            shape.remove(d);
        }
        self.reshape_usize(&shape)
    }

    /// Swaps two dimensions (a view, no copy).
    #[track_caller]
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor {
        let n = self.dim();
        let d0 = normalize_dim("transpose", dim0, n);
        let d1 = normalize_dim("transpose", dim1, n);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.swap(d0, d1);
        self.permute_usize("transpose", &perm)
    }

    /// The transpose of a matrix (PyTorch's `.t()`, or `.T` on 2-D).
    ///
    /// # Panics
    /// If the tensor has more than 2 dimensions.
    #[track_caller]
    pub fn t(&self) -> Tensor {
        match self.dim() {
            0 | 1 => self.clone(),
            2 => self.transpose(0, 1),
            _ => panic!(
                "t: expects a tensor with at most 2 dimensions, got shape {:?}; use transpose(d0, d1)",
                self.shape()
            ),
        }
    }

    /// Reorders the dimensions (a view, no copy): output dim `i` is input dim `dims[i]`.
    ///
    /// # Panics
    /// If `dims` is not a permutation of the dimensions.
    #[track_caller]
    pub fn permute(&self, dims: &[isize]) -> Tensor {
        let n = self.dim();
        let mut perm = Vec::with_capacity(n);
        for &d in dims {
            perm.push(normalize_dim("permute", d, n));
        }
        let mut seen = vec![false; n];
        for &p in &perm {
            seen[p] = true;
        }
        if perm.len() != n || seen.iter().any(|s| !s) {
            panic!(
                "permute: {dims:?} is not a permutation of the {n} dimensions of {:?}",
                self.shape()
            );
        }
        self.permute_usize("permute", &perm)
    }

    fn permute_usize(&self, name: &'static str, perm: &[usize]) -> Tensor {
        let out = map_storage!(self.storage(), a => a.permuted_axes(IxDyn(perm)));
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        record_view(name, out, self, || {
            move |g: &Tensor, _: &[bool]| vec![Some(g.permute_usize(name, &inverse))]
        })
    }

    /// Repeats size-1 dimensions (and adds leading ones) to reach `shape`.
    ///
    /// # Panics
    /// If this shape does not broadcast to `shape`.
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Tensor {
        let from = self.shape();
        if from == shape {
            return self.clone();
        }
        if crate::shape::broadcast_shapes(&from, shape).as_deref() != Some(shape) {
            panic!("expand: shape {from:?} cannot be expanded to {shape:?}");
        }
        let out = map_storage!(self.storage(), a => match a.broadcast(IxDyn(shape)) {
            Some(v) => v.to_owned().into_shared(),
            None => unreachable!("expand: checked to broadcast"),
        });
        record("expand", out, &[self], || {
            move |g: &Tensor, _: &[bool]| vec![Some(g.sum_to(&from))]
        })
    }

    /// Elements `start..start + length` along `dim` (a view, no copy).
    ///
    /// # Panics
    /// If the range does not fit in the dimension.
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, length: usize) -> Tensor {
        let shape = self.shape();
        let d = normalize_dim("narrow", dim, shape.len());
        if start + length > shape[d] {
            panic!(
                "narrow: range {start}..{} is out of bounds for dimension {dim} of size {} (shape {shape:?})",
                start + length,
                shape[d]
            );
        }
        let slice = Slice::from(start..start + length);
        let out = map_storage!(self.storage(), a => {
            let mut a = a;
            a.slice_axis_inplace(Axis(d), slice);
            a
        });
        record_view("narrow", out, self, || {
            move |g: &Tensor, _: &[bool]| {
                let mut pieces = Vec::with_capacity(3);
                let mut zeros_shape = shape.clone();
                if start > 0 {
                    zeros_shape[d] = start;
                    pieces.push(Tensor::full_dtype(&zeros_shape, 0.0, g.dtype()));
                }
                pieces.push(g.clone());
                if start + length < shape[d] {
                    zeros_shape[d] = shape[d] - start - length;
                    pieces.push(Tensor::full_dtype(&zeros_shape, 0.0, g.dtype()));
                }
                vec![Some(Tensor::cat(&pieces, d as isize))]
            }
        })
    }

    /// The slice at `index` along `dim`, which is removed (a view, no copy).
    ///
    /// # Panics
    /// If `index` is out of bounds.
    #[track_caller]
    pub fn select(&self, dim: isize, index: usize) -> Tensor {
        let shape = self.shape();
        let d = normalize_dim("select", dim, shape.len());
        if index >= shape[d] {
            panic!(
                "select: index {index} is out of bounds for dimension {dim} of size {} (shape {shape:?})",
                shape[d]
            );
        }
        self.narrow(d as isize, index, 1).squeeze_dim(d as isize)
    }

    /// The entries at `index` (an i64 tensor of any shape, flattened) along `dim`;
    /// repeated indices accumulate gradient.
    ///
    /// # Panics
    /// If `index` is not i64 or holds an index out of bounds.
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Tensor {
        let shape = self.shape();
        let d = normalize_dim("index_select", dim, shape.len().max(1));
        if index.dtype() != DType::I64 {
            panic!(
                "index_select: index must be int64, got {} {:?}",
                index.dtype(),
                index.shape()
            );
        }
        let idx = index.to_vec::<i64>();
        let size = shape.get(d).copied().unwrap_or(1);
        let mut positions = Vec::with_capacity(idx.len());
        for &i in &idx {
            if i < 0 || i as usize >= size {
                panic!(
                    "index_select: index {i} is out of bounds for dimension {dim} of size {size} (shape {shape:?})"
                );
            }
            positions.push(i as usize);
        }
        let out = map_storage!(self.storage(), a => select_rows(&a, d, &positions));
        record("index_select", out, &[self], || {
            move |g: &Tensor, _: &[bool]| vec![Some(index_add(g, d, &positions, &shape))]
        })
    }

    /// Rows of this `[num_embeddings, embedding_dim]` weight picked by `indices` (i64, any
    /// shape), as `torch.nn.functional.embedding(indices, weight)`; repeated indices
    /// accumulate gradient.
    ///
    /// # Shapes
    /// `indices.shape + [embedding_dim]`.
    #[track_caller]
    pub fn embedding(&self, indices: &Tensor) -> Tensor {
        let shape = self.shape();
        if shape.len() != 2 {
            panic!("embedding: weight must be [num_embeddings, embedding_dim], got {shape:?}");
        }
        let mut out_shape = indices.shape();
        out_shape.push(shape[1]);
        self.index_select(0, &indices.reshape(&[-1]))
            .reshape_usize(&out_shape)
    }

    /// Joins tensors of equal shape (except along `dim`) along an existing dimension.
    ///
    /// # Panics
    /// If `tensors` is empty or the shapes or dtypes disagree.
    #[track_caller]
    pub fn cat(tensors: &[Tensor], dim: isize) -> Tensor {
        let Some(first) = tensors.first() else {
            panic!("cat: expects a non-empty list of tensors");
        };
        let shape0 = first.shape();
        let d = normalize_dim("cat", dim, shape0.len());
        let storages: Vec<Storage> = tensors.iter().map(Tensor::storage).collect();
        let mut sizes = Vec::with_capacity(tensors.len());
        for (i, s) in storages.iter().enumerate() {
            let sh = s.shape();
            let fits = sh.len() == shape0.len()
                && sh
                    .iter()
                    .zip(&shape0)
                    .enumerate()
                    .all(|(j, (a, b))| j == d || a == b);
            if !fits || s.dtype() != storages[0].dtype() {
                panic!(
                    "cat: tensor {i} is {} {sh:?} but tensor 0 is {} {shape0:?}; all must match except in dimension {dim}",
                    s.dtype(),
                    storages[0].dtype()
                );
            }
            sizes.push(sh[d]);
        }
        let out = join(&storages, Axis(d), false);
        let refs: Vec<&Tensor> = tensors.iter().collect();
        record("cat", out, &refs, || {
            move |g: &Tensor, needs: &[bool]| {
                let mut start = 0;
                sizes
                    .iter()
                    .zip(needs)
                    .map(|(&len, &need)| {
                        let piece = need.then(|| g.narrow(d as isize, start, len));
                        start += len;
                        piece
                    })
                    .collect()
            }
        })
    }

    /// Joins tensors of equal shape along a new dimension `dim`.
    ///
    /// # Panics
    /// If `tensors` is empty or the shapes or dtypes disagree.
    #[track_caller]
    pub fn stack(tensors: &[Tensor], dim: isize) -> Tensor {
        let Some(first) = tensors.first() else {
            panic!("stack: expects a non-empty list of tensors");
        };
        let shape0 = first.shape();
        let d = normalize_dim("stack", dim, shape0.len() + 1);
        let storages: Vec<Storage> = tensors.iter().map(Tensor::storage).collect();
        for (i, s) in storages.iter().enumerate() {
            if s.shape() != shape0.as_slice() || s.dtype() != storages[0].dtype() {
                panic!(
                    "stack: tensor {i} is {} {:?} but tensor 0 is {} {shape0:?}; all must be equal",
                    s.dtype(),
                    s.shape(),
                    storages[0].dtype()
                );
            }
        }
        let out = join(&storages, Axis(d), true);
        let refs: Vec<&Tensor> = tensors.iter().collect();
        record("stack", out, &refs, || {
            move |g: &Tensor, needs: &[bool]| {
                needs
                    .iter()
                    .enumerate()
                    .map(|(i, &need)| need.then(|| g.select(d as isize, i)))
                    .collect()
            }
        })
    }
}

/// Concatenates (or stacks, with `new_axis`) storages already checked to fit.
fn join(storages: &[Storage], axis: Axis, new_axis: bool) -> Storage {
    macro_rules! join_variant {
        ($variant:ident) => {{
            let views: Vec<_> = storages
                .iter()
                .map(|s| match s {
                    Storage::$variant(a) => a.view(),
                    _ => unreachable!("join: dtypes checked equal"),
                })
                .collect();
            let joined = if new_axis {
                ndarray::stack(axis, &views)
            } else {
                ndarray::concatenate(axis, &views)
            };
            Storage::$variant(
                joined
                    .unwrap_or_else(|e| unreachable!("join: shapes checked: {e}"))
                    .into_shared(),
            )
        }};
    }
    match storages[0] {
        Storage::F32(_) => join_variant!(F32),
        Storage::F64(_) => join_variant!(F64),
        Storage::I64(_) => join_variant!(I64),
    }
}

/// The slices of `a` at `positions` along `d`, stacked along `d`: one copy of each row for
/// a contiguous `a` (an embedding lookup), into a buffer from the cache.
fn select_rows<T: Copy + 'static>(
    a: &ArcArray<T, IxDyn>,
    d: usize,
    positions: &[usize],
) -> ArcArray<T, IxDyn> {
    let shape = a.shape();
    let Some(x) = a.as_slice() else {
        return a.select(Axis(d), positions).into_shared();
    };
    let outer: usize = shape[..d].iter().product();
    let size = shape.get(d).copied().unwrap_or(1);
    let inner: usize = shape.get(d + 1..).map_or(1, |s| s.iter().product());
    let mut v = crate::memory::vec(outer * positions.len() * inner);
    for o in 0..outer {
        for (i, &p) in positions.iter().enumerate() {
            // The rows of a shuffled batch are scattered over the whole dataset, each a
            // fresh miss to memory: asking for the rows ahead while this one is copied
            // keeps several in flight (W1's 64 rows of 3 KiB a batch took 11% of its
            // training time in `memcpy` without).
            if let Some(&q) = positions.get(i + ROWS_AHEAD) {
                let at = (o * size + q) * inner;
                prefetch(&x[at..at + inner]);
            }
            let at = (o * size + p) * inner;
            v.extend_from_slice(&x[at..at + inner]);
        }
    }
    let mut out_shape = shape.to_vec();
    if let Some(s) = out_shape.get_mut(d) {
        *s = positions.len();
    }
    ndarray::ArrayD::from_shape_vec(IxDyn(&out_shape), v)
        .unwrap_or_else(|e| unreachable!("index_select of {shape:?} along {d}: {e}"))
        .into_shared()
}

/// How many rows ahead [`select_rows`] asks the memory for.
const ROWS_AHEAD: usize = 4;

/// Asks the CPU to bring `row` into its caches (a hint: no effect on what is read), when it
/// is long enough for its latency to matter: its first 4 KiB at most, for the hardware
/// prefetcher follows a longer row on its own once it is being read, and a whole long row
/// asked for ahead would push the rows being copied out of the cache.
#[inline]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(row);
        if bytes < 256 {
            return;
        }
        let start = row.as_ptr().cast::<i8>();
        for offset in (0..bytes.min(4096)).step_by(64) {
            // SAFETY: a prefetch only hints the cache and never faults; the address is
            // inside `row` anyway. SSE, which `_mm_prefetch` needs, is part of x86-64.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    start.add(offset),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Zeros of `shape` with the slices of `g` along `d` added at `positions` (the backward of
/// index_select and embedding: repeated positions accumulate).
fn index_add(g: &Tensor, d: usize, positions: &[usize], shape: &[usize]) -> Tensor {
    let out = crate::dispatch_float!(g.storage(), g => {
        let mut out = ArcArray::zeros(IxDyn(shape));
        for (k, &p) in positions.iter().enumerate() {
            let src = g.index_axis(Axis(d), k);
            let mut dst = out.index_axis_mut(Axis(d), p);
            dst += &src;
        }
        out
    }, int => unreachable!("gradients are floating point"));
    Tensor::from_storage(out)
}
