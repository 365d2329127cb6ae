//! The matrix multiply behind every op: `C = α·A·B + β·C (+ bias)` for strided operands,
//! one product or a batch of them, in f32 and f64.
//!
//! NOTE [ GEMM ]
//! Every matrix product in torchlet (matmul, Linear, convolutions, recurrent layers,
//! attention) goes through this module's three functions, which share one implementation:
//!
//! - [`gemm`]: one product into an existing `C` (any strides), with an [`Epilogue`] that
//!   says how `C` is written: overwritten, accumulated into (`β = 1`), scaled (`α`), and
//!   with a bias row added.
//! - [`gemm_batched`]: a batch of products given as N-D views whose leading dimensions are
//!   the batch (broadcast views with zero strides are fine), the last two the matrices.
//!   Small products are spread over the threads by batch item, one product per thread at a
//!   time, rather than each product being split (attention's 64 × 32 heads).
//! - [`gemm_new`]: one product into a fresh row-major matrix, written once (never zeroed).
//!
//! matrixmultiply (ndarray's `general_mat_mul`) reaches about 60% of this machine's f32
//! peak; training time is mostly matrix multiply, so for f32 torchlet carries its own kernel
//! for the common case (x86-64 with AVX2 and FMA, detected at run time), in the classic
//! Goto/BLIS layout:
//!
//! - B is packed in blocks of `KC × NC` into column strips `NR` wide, A in blocks of
//!   `MC × KC` into row strips `MR` tall, so the micro-kernel streams both from cache with
//!   unit stride whatever the operands' strides (transposed views cost nothing extra). A
//!   row-major A is read in place, without packing.
//! - The `MR × NR` = 6 × 16 micro-kernel keeps C's tile in 12 of the 16 AVX registers and
//!   issues 12 FMAs per step of k, which is what Zen 3 and recent Intel cores sustain.
//! - Products big enough to amortise it (by their multiply-adds, or, for the memory-bound
//!   ones with a tiny dimension, by the elements they touch) run on two threads in one
//!   `rayon::join`, cut (along the longer of M and N) into up to 8 pieces that the
//!   threads take in turn, so that a thread that starts late or loses its core for a
//!   while (the machine is shared; rayon's idle worker sleeps and takes a while to wake)
//!   leaves its share to the other instead of making it wait at the join. The operand all
//!   pieces read (B when the rows are cut, A when the columns are and A is not read in
//!   place) is packed once and shared (`SharedPack`), its pieces packed by whichever
//!   thread claims them: with each thread packing all of it, W5's weight gradients (64 to
//!   192 rows a thread against a 2048 × 128 B) spent up to a quarter of their
//!   multiply-adds' time again on packing. Small products stay on the calling thread, and
//!   tiny ones (the 16-wide layers of an MLP at batch 8) skip packing.
//! - A transposed B (the `wᵀ` of `x @ wᵀ`) is packed through 8 × 8 transposes in
//!   registers, a strip at a time.
//! - The epilogue (`α`, `β`, the bias) is applied as the first block of k stores C, so
//!   `x @ wᵀ + b` makes one pass over its output, not two.
//!
//! f64 (gradient checks, reference comparisons) and other CPUs use matrixmultiply.

use crate::dtype::Float;
use ndarray::{Array2, ArrayView2, ArrayViewD, ArrayViewMut2, ArrayViewMutD, Axis, Ix2};
use std::any::TypeId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

const MR: usize = 6;
const NR: usize = 16;
const KC: usize = 256;
const MC: usize = 96;
const NC: usize = 2048;

/// Below this many multiply-adds, a direct loop beats packing.
const DIRECT_MACS: usize = 16 * 1024;
/// From this many multiply-adds on, the product is split across two threads. Below it,
/// waking the second thread costs more than it saves: W1's 64×784×128 products (6.4 M
/// multiply-adds) ran 20–30% faster on one thread.
const PARALLEL_MACS: usize = 8 * 1024 * 1024;
/// From this many multiply-adds on, a product that touches at least `PARALLEL_ELEMS`
/// elements of A, B and C in all is split too: with one dimension tiny (W2's last layer,
/// 512 × 1024 × 10 each way) it is bound by memory rather than by the multiply-adds, and
/// two threads bring two cores' caches and bandwidth to it (1.6–1.75× on those products),
/// while W1's 64 × 784 × 128, as many multiply-adds over a third of the elements, stays
/// faster on one.
const PARALLEL_MEMORY_MACS: usize = 1024 * 1024;
/// From this many multiply-adds in all, a batch of products is spread over two threads.
const PARALLEL_BATCH_MACS: usize = 2 * 1024 * 1024;

/// How a product is written into C: `C = alpha · A·B + beta · C + bias`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a, T> {
    /// Scales the product.
    pub alpha: T,
    /// Scales C's old values; `0` ignores them (C may hold anything, NaN included).
    pub beta: T,
    /// Added to every row of C (`n` values, C's columns): a Linear layer's bias.
    pub bias: Option<&'a [T]>,
}

impl<'a, T: Float> Epilogue<'a, T> {
    /// `C = A·B`.
    pub(crate) fn write() -> Self {
        Epilogue {
            alpha: T::one(),
            beta: T::zero(),
            bias: None,
        }
    }

    /// `C += A·B`.
    pub(crate) fn accumulate() -> Self {
        Epilogue {
            beta: T::one(),
            ..Self::write()
        }
    }

    /// `C = A·B + bias` (bias broadcast over the rows), or `C = A·B` for `None`.
    pub(crate) fn bias(bias: Option<&'a [T]>) -> Self {
        Epilogue {
            bias,
            ..Self::write()
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn shape_error(a: &[usize], b: &[usize], c: &[usize], bias: Option<usize>) -> ! {
    panic!(
        "gemm: A {a:?}, B {b:?}, C {c:?}, bias of {bias:?}: expected [*, m, k], [*, k, n] and \
         [*, m, n] with one batch shape, and a bias of n values"
    )
}

/// `c = alpha · a @ b + beta · c (+ bias)` for one product (see NOTE [ GEMM ]).
///
/// # Panics
/// If the shapes do not fit (`[m, k] @ [k, n]` into `[m, n]`, a bias of `n` values).
#[track_caller]
pub(crate) fn gemm<T: Float>(
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    c: &mut ArrayViewMut2<'_, T>,
    epilogue: Epilogue<'_, T>,
) {
    gemm_batched(
        a.view().into_dyn(),
        b.view().into_dyn(),
        c.view_mut().into_dyn(),
        epilogue,
    );
}

/// `c[i] = alpha · a[i] @ b[i] + beta · c[i] (+ bias)` for every index `i` of the leading
/// (batch) dimensions, which the three views share (broadcast operands have zero strides);
/// the last two dimensions are the matrices, with any strides.
///
/// # Panics
/// If the shapes do not fit: `[*, m, k] @ [*, k, n]` into `[*, m, n]`, a bias of `n`
/// values.
#[track_caller]
pub(crate) fn gemm_batched<T: Float>(
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
    mut c: ArrayViewMutD<'_, T>,
    epilogue: Epilogue<'_, T>,
) {
    let (sa, sb, sc) = (a.shape(), b.shape(), c.shape());
    let r = sa.len();
    let fits = r >= 2
        && sb.len() == r
        && sc.len() == r
        && sa[..r - 2] == sb[..r - 2]
        && sa[..r - 2] == sc[..r - 2]
        && sa[r - 1] == sb[r - 2]
        && sc[r - 2] == sa[r - 2]
        && sc[r - 1] == sb[r - 1]
        && epilogue.bias.is_none_or(|v| v.len() == sb[r - 1]);
    if !fits {
        shape_error(sa, sb, sc, epilogue.bias.map(<[T]>::len));
    }
    let (m, k, n) = (sa[r - 2], sa[r - 1], sb[r - 1]);
    if c.is_empty() {
        return;
    }
    if let Some(e) = epilogue.f32() {
        let count = c.len() / (m * n);
        if m * n * k <= DIRECT_MACS || has_avx2_fma() {
            let mut items = Vec::with_capacity(count);
            collect_items(a.view(), b.view(), c.view_mut(), &mut items);
            let batch = Batch { m, n, k, items };
            // SAFETY: T is f32 (`Epilogue::f32` checked its TypeId), so the pointers that
            // `collect_items` took from the views address f32 elements; each item's
            // pointers and strides describe one [m, k], [k, n] and [m, n] matrix of those
            // views, and the items' C matrices are disjoint (distinct indices of one
            // mutable view).
            unsafe { sgemm_batch(&batch, e) };
            return;
        }
    }
    each_product(a, b, c, &mut |a, b, mut c| {
        general(&a, &b, &mut c, epilogue)
    });
}

/// `alpha · a @ b (+ bias)` as a new row-major matrix, written once (never zeroed first);
/// `epilogue.beta` must be 0 (there is no old C).
#[track_caller]
pub(crate) fn gemm_new<T: Float>(
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    epilogue: Epilogue<'_, T>,
) -> Array2<T> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    debug_assert!(
        epilogue.beta == T::zero(),
        "gemm_new: there is no C to scale"
    );
    if k != k2 || epilogue.bias.is_some_and(|v| v.len() != n) {
        shape_error(&[m, k], &[k2, n], &[m, n], epilogue.bias.map(<[T]>::len));
    }
    if let Some(e) = epilogue.f32()
        && m * n > 0
        && (m * n * k <= DIRECT_MACS || has_avx2_fma())
    {
        let mut out: Vec<T> = crate::memory::vec(m * n);
        let c = MatMut {
            ptr: out.as_mut_ptr().cast::<f32>(),
            rs: n as isize,
            cs: 1,
        };
        let item = Item {
            a: mat_ref(a),
            b: mat_ref(b),
            c,
        };
        let e = Ep { beta: 0.0, ..e };
        // SAFETY: T is f32 (checked by `Epilogue::f32`); `out` has room for the m·n
        // row-major elements C describes, and the product with β = 0 writes every element
        // of C before reading any (it reads C back only when accumulating over a later
        // block of k), so all m·n elements are initialised when the length is set.
        unsafe {
            product(m, n, k, item, e, worth_splitting(m, n, k));
            out.set_len(m * n);
        }
        return Array2::from_shape_vec((m, n), out)
            .unwrap_or_else(|e| unreachable!("gemm_new: {m}×{n} from m·n values: {e}"));
    }
    let mut c = Array2::zeros((m, n));
    gemm(a, b, &mut c.view_mut(), epilogue);
    c
}

impl<T: Float> Epilogue<'_, T> {
    /// The epilogue in f32 when `T` is f32 (the fast kernel's type), else `None`.
    fn f32(self) -> Option<Ep> {
        if TypeId::of::<T>() != TypeId::of::<f32>() {
            return None;
        }
        let f = |v: T| v.to_f64() as f32;
        Some(Ep {
            alpha: f(self.alpha),
            beta: f(self.beta),
            // The TypeId check makes `[T]` a `[f32]`.
            bias: self
                .bias
                .map_or(Bias::NONE, |v| Bias(v.as_ptr().cast::<f32>())),
        })
    }
}

/// Calls `f` on every product of a batch (the matrices of the leading dimensions).
fn each_product<'a, T: Float>(
    a: ArrayViewD<'a, T>,
    b: ArrayViewD<'a, T>,
    mut c: ArrayViewMutD<'a, T>,
    f: &mut impl FnMut(ArrayView2<'_, T>, ArrayView2<'_, T>, ArrayViewMut2<'_, T>),
) {
    if a.ndim() == 2 {
        let two = "gemm: the matrices are 2-D";
        let a = a.into_dimensionality::<Ix2>().expect(two);
        let b = b.into_dimensionality::<Ix2>().expect(two);
        let c = c.into_dimensionality::<Ix2>().expect(two);
        f(a, b, c);
        return;
    }
    for ((a, b), c) in a
        .axis_iter(Axis(0))
        .zip(b.axis_iter(Axis(0)))
        .zip(c.axis_iter_mut(Axis(0)))
    {
        each_product(a, b, c, f);
    }
}

/// One product through matrixmultiply (f64, or f32 on CPUs without AVX2 and FMA).
fn general<T: Float>(
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    c: &mut ArrayViewMut2<'_, T>,
    e: Epilogue<'_, T>,
) {
    let mut beta = e.beta;
    if let Some(bias) = e.bias {
        // C = beta·C + bias first, then the product is accumulated into it.
        let row = ndarray::aview1(bias);
        for mut r in c.rows_mut() {
            if beta == T::zero() {
                r.assign(&row);
            } else {
                r.zip_mut_with(&row, |v, &bj| *v = beta * *v + bj);
            }
        }
        beta = T::one();
    }
    if a.ncols() == 0 {
        // matrixmultiply would scale C by beta; do the same when there is nothing to add.
        if beta == T::zero() {
            c.fill(T::zero());
        } else if beta != T::one() {
            c.map_inplace(|v| *v = beta * *v);
        }
        return;
    }
    ndarray::linalg::general_mat_mul(e.alpha, a, b, beta, c);
}

/// Whether one `m × k` by `k × n` product is worth splitting over two threads (see
/// [`PARALLEL_MACS`] and [`PARALLEL_MEMORY_MACS`]).
fn worth_splitting(m: usize, n: usize, k: usize) -> bool {
    let macs = m * n * k;
    macs >= PARALLEL_MACS
        || (macs >= PARALLEL_MEMORY_MACS
            && m * k + k * n + m * n >= crate::parallel::PARALLEL_ELEMS)
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ---------------------------------------------------------------------------------------
// The f32 kernel. Everything below works on raw pointers and strides taken from ndarray
// views that the public functions above keep borrowed for the whole call.

/// A strided read-only f32 matrix: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct MatRef {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// A strided f32 matrix written by the kernel.
#[derive(Clone, Copy)]
struct MatMut {
    ptr: *mut f32,
    rs: isize,
    cs: isize,
}

/// A row vector added to every row of C (a Linear layer's bias), `len == n`; null for none.
#[derive(Clone, Copy)]
struct Bias(*const f32);

/// The epilogue in f32 (see [`Epilogue`]).
#[derive(Clone, Copy)]
struct Ep {
    alpha: f32,
    beta: f32,
    bias: Bias,
}

/// One product of a batch.
#[derive(Clone, Copy)]
struct Item {
    a: MatRef,
    b: MatRef,
    c: MatMut,
}

/// A batch of products of one shape.
struct Batch {
    m: usize,
    n: usize,
    k: usize,
    items: Vec<Item>,
}

/// A raw pointer that may cross to the other thread of a split (see each use's SAFETY).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: the pointers come from ndarray views (or torchlet's own packing buffers) that
// outlive the parallel section, the pieces of a split write disjoint parts of C and of the
// shared packed operand, and they only read it after all of it is packed.
unsafe impl Send for MatRef {}
// SAFETY: as for `Send`: shared reads of elements no one writes during the product.
unsafe impl Sync for MatRef {}
// SAFETY: as for `MatRef`; each thread writes its own disjoint part of C.
unsafe impl Send for MatMut {}
// SAFETY: as for `Send`.
unsafe impl Sync for MatMut {}
// SAFETY: the bias slice is borrowed for the whole call and only read.
unsafe impl Send for Bias {}
// SAFETY: as for `Send`.
unsafe impl Sync for Bias {}
// SAFETY: see the struct's documentation: each use writes a range the other thread does
// not touch, and reads only after the join that ends the writes.
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for SendPtr {}

impl Bias {
    const NONE: Bias = Bias(std::ptr::null());

    fn offset(self, j: usize) -> Bias {
        if self.0.is_null() {
            self
        } else {
            Bias(self.0.wrapping_add(j))
        }
    }

    /// The value added to column `j`.
    ///
    /// # Safety
    /// `j` must lie inside the row.
    #[inline(always)]
    unsafe fn at(self, j: usize) -> f32 {
        if self.0.is_null() {
            0.0
        } else {
            // SAFETY: a non-null bias has a value for every column of C (caller's promise).
            unsafe { *self.0.add(j) }
        }
    }
}

impl MatRef {
    /// The element at (i, j).
    ///
    /// # Safety
    /// (i, j) must lie inside the matrix.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> f32 {
        // SAFETY: (i, j) is inside the matrix (caller's promise), so the offset stays in
        // the view's allocation.
        unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }

    fn offset(self, i: usize, j: usize) -> MatRef {
        MatRef {
            ptr: self
                .ptr
                .wrapping_offset(i as isize * self.rs + j as isize * self.cs),
            ..self
        }
    }
}

impl MatMut {
    fn offset(self, i: usize, j: usize) -> MatMut {
        MatMut {
            ptr: self
                .ptr
                .wrapping_offset(i as isize * self.rs + j as isize * self.cs),
            ..self
        }
    }

    /// Stores `v` (the product's value at (i, j)) through the epilogue.
    ///
    /// # Safety
    /// (i, j) must lie inside the matrix, `j` inside the bias, and C must be initialised
    /// there unless `e.beta` is 0.
    #[inline(always)]
    unsafe fn store(self, i: usize, j: usize, v: f32, e: Ep) {
        // SAFETY: (i, j) is inside C and inside the bias (caller's promise); C is only
        // read when beta is non-zero, when the caller promises it is initialised.
        unsafe {
            let dst = self.ptr.offset(i as isize * self.rs + j as isize * self.cs);
            let old = if e.beta == 0.0 { 0.0 } else { e.beta * *dst };
            *dst = e.alpha * v + old + e.bias.at(j);
        }
    }
}

fn mat_ref<T>(a: &ArrayView2<'_, T>) -> MatRef {
    MatRef {
        ptr: a.as_ptr().cast::<f32>(),
        rs: a.strides()[0],
        cs: a.strides()[1],
    }
}

/// The pointers and strides of every product of a batch, in order.
fn collect_items<T>(
    a: ArrayViewD<'_, T>,
    b: ArrayViewD<'_, T>,
    mut c: ArrayViewMutD<'_, T>,
    out: &mut Vec<Item>,
) {
    if a.ndim() == 2 {
        let (sa, sb) = (a.strides(), b.strides());
        let sc = [c.strides()[0], c.strides()[1]];
        out.push(Item {
            a: MatRef {
                ptr: a.as_ptr().cast::<f32>(),
                rs: sa[0],
                cs: sa[1],
            },
            b: MatRef {
                ptr: b.as_ptr().cast::<f32>(),
                rs: sb[0],
                cs: sb[1],
            },
            c: MatMut {
                ptr: c.as_mut_ptr().cast::<f32>(),
                rs: sc[0],
                cs: sc[1],
            },
        });
        return;
    }
    for ((a, b), c) in a
        .axis_iter(Axis(0))
        .zip(b.axis_iter(Axis(0)))
        .zip(c.axis_iter_mut(Axis(0)))
    {
        collect_items(a, b, c, out);
    }
}

/// Runs every product of `batch`: spread over two threads by item when there are several
/// small ones, else one after the other, each split over two threads when large.
///
/// # Safety
/// Every item must describe valid f32 matrices of the batch's shape (C's disjoint from each
/// other and from A's and B's), the bias must have `n` values, and C must be initialised
/// unless `e.beta` is 0; the CPU must have AVX2 and FMA unless every product is at most
/// `DIRECT_MACS`.
unsafe fn sgemm_batch(batch: &Batch, e: Ep) {
    let Batch { m, n, k, ref items } = *batch;
    let macs = m * n * k;
    let count = items.len();
    let split = worth_splitting(m, n, k);
    let spread = count >= 2
        && !split
        && count * macs >= PARALLEL_BATCH_MACS
        && rayon::current_num_threads() >= 2;
    if spread {
        let (lo, hi) = items.split_at(count / 2);
        // SAFETY: the halves hold disjoint items (the caller's promise covers each).
        let run = |part: &[Item]| unsafe {
            part.iter().for_each(|&it| product(m, n, k, it, e, false));
        };
        rayon::join(|| run(lo), || run(hi));
    } else {
        for &it in items {
            // SAFETY: the caller's promise, item by item.
            unsafe { product(m, n, k, it, e, split) };
        }
    }
}

/// One product: direct for tiny ones, else blocked, on two threads when `parallel`.
///
/// # Safety
/// As [`sgemm_batch`], for the one item.
unsafe fn product(m: usize, n: usize, k: usize, it: Item, e: Ep, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside the item's C (the caller's promise).
                unsafe { it.c.store(i, j, 0.0, e) };
            }
        }
    } else if m * n * k <= DIRECT_MACS {
        // SAFETY: the caller's promise about the item and the epilogue.
        unsafe { direct(m, n, k, it, e) };
    } else if parallel && rayon::current_num_threads() >= 2 {
        // SAFETY: as above; the product is past DIRECT_MACS, so the CPU has AVX2 and FMA.
        unsafe { split(m, n, k, it, e) };
    } else {
        let (a, b) = (AOp::Matrix(it.a), BOp::Matrix(it.b));
        // SAFETY: as for `split`.
        unsafe { blocked(m, n, k, a, b, it.c, e) };
    }
}

thread_local! {
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SHARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `cell`'s buffer taken out of it and puts the buffer back afterwards, so a
/// nested use (rayon running another product on this thread while it waits) gets a fresh
/// buffer instead of a borrow error.
fn with_buffer<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    f: impl FnOnce(&mut Vec<f32>) -> R,
) -> R {
    let mut buf = cell.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let r = f(&mut buf);
    cell.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.capacity() < buf.capacity() {
            *slot = buf;
        }
    });
    r
}

/// The most pieces a split product is cut into, and the fewest multiply-adds in one.
const MAX_PIECES: usize = 8;
const PIECE_MACS: usize = 4 * 1024 * 1024;

/// How a split product's rows or columns (`len` of them, cut in multiples of `unit`) are
/// cut into pieces: the piece length and the number of pieces.
fn pieces(len: usize, unit: usize, macs: usize) -> (usize, usize) {
    let want = (macs / PIECE_MACS).clamp(2, MAX_PIECES);
    let per = len.div_ceil(unit).div_ceil(want).max(1) * unit;
    (per, len.div_ceil(per))
}

/// The next piece nobody has taken yet, if any.
fn claim(next: &AtomicUsize, count: usize) -> Option<usize> {
    let i = next.fetch_add(1, Ordering::Relaxed);
    (i < count).then_some(i)
}

/// The product on two threads (see NOTE [ GEMM ]): cut along the rows when there are more
/// rows than columns, with B packed once and shared, else along the columns, with A shared
/// (read in place when row-major, else packed once). The cut makes up to `MAX_PIECES`
/// pieces that the two threads take in turn until none are left, so that a thread that
/// loses its core for a while (the machine is shared) leaves its share to the other
/// instead of making it wait at the join.
///
/// # Safety
/// As [`product`].
unsafe fn split(m: usize, n: usize, k: usize, it: Item, e: Ep) {
    let Item { a, b, c } = it;
    let kblocks = k.div_ceil(KC);
    let next = AtomicUsize::new(0);
    if n >= m {
        let (w, count) = pieces(n, NR, m * n * k);
        // SAFETY: piece i is columns i·w.. of C (and of B and the bias), which no other
        // piece writes; the A given covers all m rows (the caller's, or packed in full).
        let piece = |a: AOp, i: usize| unsafe {
            let lo = i * w;
            let ep = Ep {
                bias: e.bias.offset(lo),
                ..e
            };
            let b = BOp::Matrix(b.offset(0, lo));
            blocked(m, w.min(n - lo), k, a, b, c.offset(0, lo), ep)
        };
        if a.cs == 1 {
            let work = || {
                while let Some(i) = claim(&next, count) {
                    piece(AOp::Matrix(a), i);
                }
            };
            rayon::join(work, work);
            return;
        }
        let mpad = m.div_ceil(MR) * MR;
        with_buffer(&SHARED, |buf| {
            let packed = aligned(buf, kblocks * KC * mpad);
            let p = SendPtr(packed.as_mut_ptr());
            let shared = SharedPack::new(m, MR);
            // SAFETY: `packed` holds KC·mpad floats per block of k; each piece of the rows
            // (starting at a multiple of MR) is packed by one thread alone.
            let pack = |lo: usize, hi: usize| unsafe { pack_a_full(lo, hi, m, k, a, p) };
            let pa = AOp::Packed(p.0.cast_const(), mpad);
            // Each thread reads the packed A only once `pack_then_wait` saw all of it in.
            let work = || {
                shared.pack_then_wait(&pack);
                while let Some(i) = claim(&next, count) {
                    piece(pa, i);
                }
            };
            rayon::join(work, work);
        });
    } else {
        let npad = n.div_ceil(NR) * NR;
        // Pieces of whole blocks of MC rows where they are that tall, so that no piece
        // ends in a short block (which reads each strip of B for fewer rows).
        let (h, _) = pieces(m, MR, m * n * k);
        let h = if h > MC { (h + MC / 2) / MC * MC } else { h };
        let count = m.div_ceil(h);
        with_buffer(&SHARED, |buf| {
            let packed = aligned(buf, kblocks * KC * npad);
            let p = SendPtr(packed.as_mut_ptr());
            let shared = SharedPack::new(n, NR);
            // SAFETY: as for A above, with pieces of the columns starting at multiples of NR.
            let pack = |lo: usize, hi: usize| unsafe { pack_b_full(lo, hi, n, k, b, p) };
            let pb = BOp::Packed(p.0.cast_const(), npad);
            // SAFETY: piece i is rows i·h.. of C and A, which no other piece touches; it
            // reads the packed B only once `pack_then_wait` saw all of it in.
            let work = || unsafe {
                shared.pack_then_wait(&pack);
                while let Some(i) = claim(&next, count) {
                    let lo = i * h;
                    let (a, c) = (AOp::Matrix(a.offset(lo, 0)), c.offset(lo, 0));
                    blocked(h.min(m - lo), n, k, a, pb, c, e);
                }
            };
            rayon::join(work, work);
        });
    }
}

/// The operand that both threads of a split read, packed in one `rayon::join` with the
/// products: cut into up to `MAX_PIECES` pieces (of `len` rows or columns, in multiples of
/// `unit`), each packed once by whichever thread claims it first; each thread starts
/// multiplying once every piece is packed. A thread waits only for pieces another thread
/// is packing (it packs every unclaimed one itself), so the scheme cannot deadlock when
/// rayon runs both closures one after the other on one thread, and a thread that loses its
/// core mid-way holds up the other for one piece at most.
struct SharedPack {
    len: usize,
    per: usize,
    count: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl SharedPack {
    fn new(len: usize, unit: usize) -> Self {
        let per = len.div_ceil(unit).div_ceil(MAX_PIECES).max(1) * unit;
        SharedPack {
            len,
            per,
            count: len.div_ceil(per),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    /// Packs unclaimed pieces with `pack(lo, hi)` until none are left, and returns once
    /// all are packed (their writes visible to this thread).
    fn pack_then_wait(&self, pack: &impl Fn(usize, usize)) {
        while let Some(i) = claim(&self.next, self.count) {
            let lo = i * self.per;
            pack(lo, (lo + self.per).min(self.len));
            // Release: the piece's writes happen before the count that announces them.
            self.done.fetch_add(1, Ordering::Release);
        }
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < self.count {
            // The other thread is packing a piece; it may have lost its core.
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Packs rows `lo..hi` (`lo` a multiple of MR) of the whole `m × k` A, block of k by block:
/// block `pc` starts at `pc · mpad`, and in it the strip of row `i` at `i · kc`.
///
/// # Safety
/// `a` must be a valid `m × k` matrix and `out` must hold `k.div_ceil(KC) · KC · mpad`
/// floats, `mpad` being `m` rounded up to MR; no one else may touch the strips written.
unsafe fn pack_a_full(lo: usize, hi: usize, m: usize, k: usize, a: MatRef, out: SendPtr) {
    let mpad = m.div_ceil(MR) * MR;
    let rows = hi - lo;
    if rows == 0 {
        return;
    }
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let len = rows.div_ceil(MR) * MR * kc;
        // SAFETY: the strips of rows lo..hi in block pc lie inside `out` (the caller sized
        // it) and belong to this call alone.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(out.0.add(pc * mpad + lo * kc), len);
            pack_a(rows, kc, a.offset(lo, pc), dst);
        }
    }
}

/// Packs columns `lo..hi` (`lo` a multiple of NR) of the whole `k × n` B, block of k by
/// block: block `pc` starts at `pc · npad`, and in it the strip of column `j` at `j · kc`.
///
/// # Safety
/// As [`pack_a_full`], for a `k × n` B and `npad` = `n` rounded up to NR.
unsafe fn pack_b_full(lo: usize, hi: usize, n: usize, k: usize, b: MatRef, out: SendPtr) {
    let npad = n.div_ceil(NR) * NR;
    let cols = hi - lo;
    if cols == 0 {
        return;
    }
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let len = cols.div_ceil(NR) * NR * kc;
        // SAFETY: as in `pack_a_full`.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(out.0.add(pc * npad + lo * kc), len);
            pack_b(kc, cols, b.offset(pc, lo), dst);
        }
    }
}

/// `c = a @ b` for small products, without packing: as row updates `c[i] += a[i,p] · b[p]`
/// when B's rows are contiguous, as dot products when A's rows and B's columns are (the
/// `x @ wᵀ` of a Linear layer), element by element otherwise.
///
/// # Safety
/// As [`product`].
unsafe fn direct(m: usize, n: usize, k: usize, it: Item, e: Ep) {
    let Item { a, b, c } = it;
    if b.rs == 1 && a.cs == 1 && b.cs != 1 {
        for i in 0..m {
            // SAFETY: row i of A and column j of B are k contiguous elements of the views;
            // (i, j) is inside C.
            unsafe {
                let arow = std::slice::from_raw_parts(a.ptr.offset(i as isize * a.rs), k);
                for j in 0..n {
                    let bcol = std::slice::from_raw_parts(b.ptr.offset(j as isize * b.cs), k);
                    c.store(i, j, dot(arow, bcol), e);
                }
            }
        }
        return;
    }
    let mut row = [0f32; 256];
    let mut heap = Vec::new();
    let acc: &mut [f32] = if n <= row.len() {
        &mut row[..n]
    } else {
        heap.resize(n, 0.0);
        &mut heap
    };
    for i in 0..m {
        acc.fill(0.0);
        for p in 0..k {
            // SAFETY: (i, p) is inside A; row p of B has n elements, contiguous when
            // `b.cs == 1`, else read one by one inside the matrix.
            unsafe {
                let aip = a.at(i, p);
                if b.cs == 1 {
                    let brow = std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs), n);
                    acc.iter_mut().zip(brow).for_each(|(s, &v)| *s += aip * v);
                } else {
                    for (j, s) in acc.iter_mut().enumerate() {
                        *s += aip * b.at(p, j);
                    }
                }
            }
        }
        for (j, &v) in acc.iter().enumerate() {
            // SAFETY: (i, j) is inside C.
            unsafe { c.store(i, j, v, e) };
        }
    }
}

/// A dot product in eight independent lanes, so that it vectorises.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (xc, xr) = x.split_at(x.len() / 8 * 8);
    let (yc, yr) = y.split_at(xc.len());
    for (xs, ys) in xc.chunks_exact(8).zip(yc.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += xs[l] * ys[l];
        }
    }
    let tail: f32 = xr.iter().zip(yr).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// Where the blocked loop takes A from.
#[derive(Clone, Copy)]
enum AOp {
    /// The matrix: read in place when row-major, else packed block by block.
    Matrix(MatRef),
    /// Packed in full by [`pack_a_full`] (the pointer, and the rows rounded up to MR).
    Packed(*const f32, usize),
}

/// Where the blocked loop takes B from.
#[derive(Clone, Copy)]
enum BOp {
    /// The matrix, packed block by block.
    Matrix(MatRef),
    /// Packed in full by [`pack_b_full`] (the pointer, and the columns rounded up to NR).
    Packed(*const f32, usize),
}

// SAFETY: as for `MatRef`: the packed operands are written before the join that shares
// them and only read during it.
unsafe impl Send for AOp {}
// SAFETY: as for `Send`.
unsafe impl Sync for AOp {}
// SAFETY: as for `AOp`.
unsafe impl Send for BOp {}
// SAFETY: as for `Send`.
unsafe impl Sync for BOp {}

/// The Goto/BLIS loop nest over packed blocks (see NOTE [ GEMM ]); `k > 0`.
///
/// # Safety
/// As [`product`], for the `m × n` part of C given; a packed operand must cover it.
unsafe fn blocked(m: usize, n: usize, k: usize, a: AOp, b: BOp, c: MatMut, e: Ep) {
    if m == 0 || n == 0 {
        return;
    }
    let nc_max = NC.min(n.div_ceil(NR) * NR);
    let mc_max = MC.min(m.div_ceil(MR) * MR);
    with_buffer(&PACK_B, |pb_buf| {
        with_buffer(&PACK_A, |pa_buf| {
            let pb_own = aligned(pb_buf, KC * nc_max);
            // A's block, then room for the zero-padded last strip of an in-place A.
            let (pa, edge) = aligned(pa_buf, KC * (mc_max + MR)).split_at_mut(KC * mc_max);
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let pb: *const f32 = match b {
                        BOp::Matrix(b) => {
                            // SAFETY: the block lies inside B; `pb_own` holds KC·nc_max.
                            unsafe { pack_b(kc, nc, b.offset(pc, jc), pb_own) };
                            pb_own.as_ptr()
                        }
                        BOp::Packed(p, npad) => p.wrapping_add(pc * npad + jc * kc),
                    };
                    // The first block of k applies the epilogue; later ones add to C.
                    let store = if pc == 0 {
                        Ep {
                            bias: e.bias.offset(jc),
                            ..e
                        }
                    } else {
                        Ep {
                            alpha: e.alpha,
                            beta: 1.0,
                            bias: Bias::NONE,
                        }
                    };
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        let source = match a {
                            // Row-major A is read in place; anything else is packed first.
                            AOp::Matrix(a) if a.cs == 1 => ASource::InPlace(a.offset(ic, pc)),
                            AOp::Matrix(a) => {
                                // SAFETY: the block lies inside A; `pa` holds KC·mc_max.
                                unsafe { pack_a(mc, kc, a.offset(ic, pc), pa) };
                                ASource::Packed(pa.as_ptr())
                            }
                            AOp::Packed(p, mpad) => {
                                ASource::Packed(p.wrapping_add(pc * mpad + ic * kc))
                            }
                        };
                        let cc = c.offset(ic, jc);
                        // SAFETY: the packed blocks hold mc × kc and kc × nc (padded to
                        // whole strips); the C block is inside C.
                        unsafe { macro_kernel(mc, nc, kc, source, pb, edge, cc, store) };
                    }
                }
            }
        })
    });
}

// NOTE [ Pre-packed B ]
// A caller that produces B itself (convolution's im2col) writes it straight into the packed
// layout and so skips `pack_b`'s pass over it. The layout of a `k × n` B (the one
// `pack_b_full` writes and `BOp::Packed` reads): for each block of `PACKED_KC` rows
// starting at `pc` (the last one `kc = min(PACKED_KC, k − pc)` tall), `n.div_ceil(PACKED_NR)`
// strips of `PACKED_NR` columns, each strip `kc × PACKED_NR` row-major; so `B[p][j]` lies at
// `pc·npad + (j / NR)·NR·kc + (p − pc)·NR + j % NR`, with `npad = n.div_ceil(NR)·NR`, and
// the columns `n..npad` hold zeros.

/// The strip width of a pre-packed B (NOTE [ Pre-packed B ]).
pub(crate) const PACKED_NR: usize = NR;
/// The row-block height of a pre-packed B (NOTE [ Pre-packed B ]).
pub(crate) const PACKED_KC: usize = KC;

/// The length of a pre-packed `k × n` B (NOTE [ Pre-packed B ]).
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(NR) * NR
}

/// Whether [`sgemm_packed_b`] can run on this CPU (AVX2 and FMA).
pub(crate) fn packed_b_supported() -> bool {
    has_avx2_fma()
}

/// `C = a @ B` (or `C += a @ B` when `accumulate`) in f32 on the calling thread, for a B of
/// `n` columns already in the packed layout of NOTE [ Pre-packed B ], into the `m × n`
/// row-major C at `c` whose rows are `rsc` floats apart.
///
/// # Safety
/// [`packed_b_supported`] must hold; `c` must be valid for writes of `m` rows of `n` floats
/// `rsc` apart, and those floats initialised when `accumulate` (otherwise each is written
/// before it is read).
///
/// # Panics
/// If `pb` is shorter than [`packed_b_len`]`(k, n)`.
pub(crate) unsafe fn sgemm_packed_b(
    a: &ArrayView2<'_, f32>,
    pb: &[f32],
    n: usize,
    c: *mut f32,
    rsc: usize,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    assert!(
        pb.len() >= packed_b_len(k, n) && rsc >= n,
        "sgemm_packed_b: a {m}x{k}, packed B of {} for {k}x{n}, C rows {rsc} apart",
        pb.len(),
    );
    debug_assert!(has_avx2_fma());
    if m == 0 || n == 0 {
        return;
    }
    let c = MatMut {
        ptr: c,
        rs: rsc as isize,
        cs: 1,
    };
    let e = Ep {
        alpha: 1.0,
        beta: if accumulate { 1.0 } else { 0.0 },
        bias: Bias::NONE,
    };
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside the caller's C (see # Safety).
                unsafe { c.store(i, j, 0.0, e) };
            }
        }
        return;
    }
    let npad = n.div_ceil(NR) * NR;
    let b = BOp::Packed(pb.as_ptr(), npad);
    // SAFETY: `a` describes the view's own `m × k` elements, C is the caller's `m × n` (see
    // # Safety), `pb` holds the whole packed B (checked above), and the CPU has AVX2 and
    // FMA (the caller's promise).
    unsafe { blocked(m, n, k, AOp::Matrix(mat_ref(a)), b, c, e) };
}

/// `len` floats of `buf` starting at a 64-byte boundary, so that packed strips never
/// straddle cache lines.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..skip + len]
}

/// Packs a `kc × nc` block of B into strips of `NR` columns, zero-padded.
///
/// # Safety
/// `b` must be a valid `kc × nc` matrix; `out` must hold `nc.div_ceil(NR) · NR · kc`.
unsafe fn pack_b(kc: usize, nc: usize, b: MatRef, out: &mut [f32]) {
    if b.cs == 1 && nc.is_multiple_of(NR) {
        // Walk B along its rows: reading down a column strip would touch `kc` lines that
        // all map to the same cache set when the row length is a power of two.
        for p in 0..kc {
            // SAFETY: row p of B has nc contiguous elements.
            let src = unsafe { std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs), nc) };
            for (t, chunk) in src.chunks_exact(NR).enumerate() {
                out[t * NR * kc + p * NR..t * NR * kc + (p + 1) * NR].copy_from_slice(chunk);
            }
        }
        return;
    }
    for (t, j0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - j0);
        let strip = &mut out[t * NR * kc..(t + 1) * NR * kc];
        if b.rs == 1 {
            // A transposed operand (Linear's `x @ wᵀ`): its columns are contiguous.
            #[cfg(target_arch = "x86_64")]
            if cols == NR {
                // SAFETY: the NR columns from j0 hold kc contiguous elements each, `strip`
                // holds NR · kc floats, and packing only runs where the CPU has AVX2 (the
                // blocked kernel's precondition).
                unsafe {
                    avx2::pack_b_transposed(kc, b.ptr.offset(j0 as isize * b.cs), b.cs, strip)
                };
                continue;
            }
            for jj in 0..NR {
                if jj < cols {
                    // SAFETY: column j0 + jj of B has kc contiguous elements.
                    let src = unsafe {
                        std::slice::from_raw_parts(b.ptr.offset((j0 + jj) as isize * b.cs), kc)
                    };
                    for (p, &v) in src.iter().enumerate() {
                        strip[p * NR + jj] = v;
                    }
                } else {
                    for p in 0..kc {
                        strip[p * NR + jj] = 0.0;
                    }
                }
            }
            continue;
        }
        for p in 0..kc {
            let dst = &mut strip[p * NR..(p + 1) * NR];
            if b.cs == 1 && cols == NR {
                // SAFETY: NR contiguous elements of row p from column j0 lie inside B.
                let src = unsafe {
                    std::slice::from_raw_parts(b.ptr.offset(p as isize * b.rs + j0 as isize), NR)
                };
                dst.copy_from_slice(src);
            } else {
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = if jj < cols {
                        // SAFETY: (p, j0 + jj) is inside B.
                        unsafe { b.at(p, j0 + jj) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs an `mc × kc` block of A into strips of `MR` rows, zero-padded.
///
/// # Safety
/// `a` must be a valid `mc × kc` matrix; `out` must hold `mc.div_ceil(MR) · MR · kc`.
unsafe fn pack_a(mc: usize, kc: usize, a: MatRef, out: &mut [f32]) {
    for (s, i0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - i0);
        let strip = &mut out[s * MR * kc..(s + 1) * MR * kc];
        if a.cs == 1 {
            for r in 0..MR {
                if r < rows {
                    // SAFETY: row i0 + r of A has kc contiguous elements.
                    let src = unsafe {
                        std::slice::from_raw_parts(a.ptr.offset((i0 + r) as isize * a.rs), kc)
                    };
                    for (p, &v) in src.iter().enumerate() {
                        strip[p * MR + r] = v;
                    }
                } else {
                    for p in 0..kc {
                        strip[p * MR + r] = 0.0;
                    }
                }
            }
        } else if a.rs == 1 && rows == MR {
            // A transposed operand (the `gᵀ @ x` of a weight gradient): each step of k is
            // six neighbouring values.
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                // SAFETY: rows i0..i0 + MR of column p are contiguous and inside A.
                let src = unsafe {
                    std::slice::from_raw_parts(a.ptr.offset(p as isize * a.cs + i0 as isize), MR)
                };
                dst.copy_from_slice(src);
            }
        } else {
            for p in 0..kc {
                for r in 0..MR {
                    strip[p * MR + r] = if r < rows {
                        // SAFETY: (i0 + r, p) is inside A.
                        unsafe { a.at(i0 + r, p) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Where the micro-kernel reads A from: a packed block, or a row-major block in place.
#[derive(Clone, Copy)]
enum ASource {
    /// Strips of MR rows, `MR · kc` floats each.
    Packed(*const f32),
    /// Rows with unit column stride: no packing needed for full strips of `MR` rows.
    InPlace(MatRef),
}

/// All micro-tiles of one `mc × nc` block of C; `edge` is scratch for the zero-padded last
/// strip of an in-place A.
///
/// # Safety
/// `a` and `pb` must hold the block's packed strips (or `a` a valid in-place `mc × kc`
/// block), `edge` at least `MR · kc` floats, `c` a valid `mc × nc` block of C (initialised
/// unless `store.beta` is 0), the bias `nc` values.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel(
    mc: usize,
    nc: usize,
    kc: usize,
    a: ASource,
    pb: *const f32,
    edge: &mut [f32],
    c: MatMut,
    store: Ep,
) {
    // A partial last strip of an in-place A is packed (zero-padded) once for the block,
    // not once per column strip: a 16- or 32-row A (a CNN's channels) has one.
    let tail = mc - mc % MR;
    if let ASource::InPlace(a) = a
        && tail < mc
    {
        // SAFETY: rows tail..mc of the block are inside A; `edge` holds MR · kc.
        unsafe { pack_a(mc - tail, kc, a.offset(tail, 0), edge) };
    }
    for (t, j0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - j0);
        let bp = pb.wrapping_add(t * NR * kc);
        for (s, i0) in (0..mc).step_by(MR).enumerate() {
            let rows = MR.min(mc - i0);
            let ap = match a {
                ASource::Packed(pa) => (pa.wrapping_add(s * MR * kc), 1, MR as isize),
                ASource::InPlace(a) if rows == MR => (a.offset(i0, 0).ptr, a.rs, 1),
                ASource::InPlace(_) => (edge.as_ptr(), 1, MR as isize),
            };
            let ct = c.offset(i0, j0);
            let st = Ep {
                bias: store.bias.offset(j0),
                ..store
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `ap` and `bp` address kc steps of a full strip (packed ones are
            // zero-padded); a tile of C with whole rows of 16 is stored directly (its first
            // `rows` rows), any other through `tile`, of which only the rows and columns
            // inside C are copied out. The CPU has AVX2 and FMA (the caller's promise:
            // products past DIRECT_MACS only run where it does).
            unsafe {
                if cols == NR && ct.cs == 1 {
                    // The last strip of rows too (attention's 64-row products end in four):
                    // the kernel stores only the rows inside C.
                    avx2::kernel_6x16(kc, ap, bp, ct.ptr, ct.rs, st, rows);
                } else {
                    let mut tile = [0f32; MR * NR];
                    let plain = Ep {
                        alpha: 1.0,
                        beta: 0.0,
                        bias: Bias::NONE,
                    };
                    avx2::kernel_6x16(kc, ap, bp, tile.as_mut_ptr(), NR as isize, plain, MR);
                    for r in 0..rows {
                        for (jj, &v) in tile[r * NR..r * NR + cols].iter().enumerate() {
                            ct.store(r, jj, v, st);
                        }
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, cols, ap, bp, ct, st);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Ep;
    use std::arch::x86_64::*;

    /// Packs one strip of 16 columns of a `kc × 16` B whose columns are contiguous (column
    /// `j` starts at `b + j·cs`) into `out` row by row (`out[p·16 + j] = B[p][j]`), eight
    /// steps of k at a time through 8 × 8 transposes in registers: the scalar scatter wrote
    /// each value to its own cache line and read the 16 columns one after the other, and
    /// took 15% of W2's `x @ wᵀ` products.
    ///
    /// # Safety
    /// The CPU must have AVX2; the 16 columns must hold `kc` readable floats each; `out`
    /// must hold `16 · kc` floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_b_transposed(kc: usize, b: *const f32, cs: isize, out: &mut [f32]) {
        assert!(out.len() >= 16 * kc, "pack_b_transposed: strip too short");
        let o = out.as_mut_ptr();
        let full = kc - kc % 8;
        // SAFETY: every read is (p + q, j) with p + q < kc and j < 16 (the caller's
        // columns), every write below 16 · kc (checked above).
        unsafe {
            for p in (0..full).step_by(8) {
                for h in 0..2 {
                    let col =
                        |r: usize| _mm256_loadu_ps(b.offset((8 * h + r) as isize * cs).add(p));
                    let (r0, r1, r2, r3) = (col(0), col(1), col(2), col(3));
                    let (r4, r5, r6, r7) = (col(4), col(5), col(6), col(7));
                    let t0 = _mm256_unpacklo_ps(r0, r1);
                    let t1 = _mm256_unpackhi_ps(r0, r1);
                    let t2 = _mm256_unpacklo_ps(r2, r3);
                    let t3 = _mm256_unpackhi_ps(r2, r3);
                    let t4 = _mm256_unpacklo_ps(r4, r5);
                    let t5 = _mm256_unpackhi_ps(r4, r5);
                    let t6 = _mm256_unpacklo_ps(r6, r7);
                    let t7 = _mm256_unpackhi_ps(r6, r7);
                    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let d = o.add(p * 16 + 8 * h);
                    _mm256_storeu_ps(d, _mm256_permute2f128_ps::<0x20>(s0, s4));
                    _mm256_storeu_ps(d.add(16), _mm256_permute2f128_ps::<0x20>(s1, s5));
                    _mm256_storeu_ps(d.add(32), _mm256_permute2f128_ps::<0x20>(s2, s6));
                    _mm256_storeu_ps(d.add(48), _mm256_permute2f128_ps::<0x20>(s3, s7));
                    _mm256_storeu_ps(d.add(64), _mm256_permute2f128_ps::<0x31>(s0, s4));
                    _mm256_storeu_ps(d.add(80), _mm256_permute2f128_ps::<0x31>(s1, s5));
                    _mm256_storeu_ps(d.add(96), _mm256_permute2f128_ps::<0x31>(s2, s6));
                    _mm256_storeu_ps(d.add(112), _mm256_permute2f128_ps::<0x31>(s3, s7));
                }
            }
            for p in full..kc {
                for j in 0..16 {
                    *o.add(p * 16 + j) = *b.offset(j as isize * cs).add(p);
                }
            }
        }
    }

    /// `C[0..6, 0..16] = α · A · Bpanel + β · C + bias` over `kc` steps. `a` is (start,
    /// row stride, step stride): `(ptr, 1, 6)` for a packed strip, `(ptr, lda, 1)` for six
    /// rows of a row-major A read in place. C rows are `rsc` apart and contiguous within a
    /// row; only the first `rows` (at most 6) are read and written.
    ///
    /// The k loop is unrolled by four, and A's layout is fixed at compile time in `tile`, so
    /// that every load is a constant offset from a pointer (measured 11% faster, single
    /// thread, on W2's products than one loop over run-time strides).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `a` must address 6 rows × `kc` steps, `b` `kc`
    /// steps of 16 floats, `c` `rows` rows of 16 floats (initialised unless `store.beta`
    /// is 0) and a non-null bias 16 floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_6x16(
        kc: usize,
        a: (*const f32, isize, isize),
        b: *const f32,
        c: *mut f32,
        rsc: isize,
        store: Ep,
        rows: usize,
    ) {
        // SAFETY: the caller's promise, passed on.
        unsafe {
            if a.2 == 6 && a.1 == 1 {
                tile::<true>(kc, a.0, 0, b, c, rsc, store, rows)
            } else {
                debug_assert_eq!(a.2, 1);
                tile::<false>(kc, a.0, a.1, b, c, rsc, store, rows)
            }
        }
    }

    /// The body of [`kernel_6x16`] for one layout of A.
    ///
    /// # Safety
    /// As [`kernel_6x16`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        lda: isize,
        mut b: *const f32,
        c: *mut f32,
        rsc: isize,
        store: Ep,
        live: usize,
    ) {
        // SAFETY: every pointer stays inside the areas the caller vouched for: A's six rows
        // over kc steps, B's kc × 16 panel, the first `live` rows of C's 6 × 16 tile and
        // 16 bias values.
        unsafe {
            for r in 0..live.min(6) {
                let row = c.offset(r as isize * rsc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.add(60));
            }
            let rows: [*const f32; 6] = std::array::from_fn(|r| {
                if PACKED {
                    a.add(r)
                } else {
                    a.offset(r as isize * lda)
                }
            });
            let mut p = 0usize;
            let mut acc = [[_mm256_setzero_ps(); 2]; 6];
            macro_rules! step {
                ($u:expr) => {{
                    let b0 = _mm256_loadu_ps(b.add(16 * $u));
                    let b1 = _mm256_loadu_ps(b.add(16 * $u + 8));
                    for r in 0..6 {
                        let at = if PACKED {
                            rows[r].add(6 * (p + $u))
                        } else {
                            rows[r].add(p + $u)
                        };
                        let ar = _mm256_broadcast_ss(&*at);
                        acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
                    }
                }};
            }
            for _ in 0..kc / 4 {
                step!(0);
                step!(1);
                step!(2);
                step!(3);
                p += 4;
                b = b.add(64);
            }
            for _ in 0..kc % 4 {
                step!(0);
                p += 1;
                b = b.add(16);
            }
            let alpha = _mm256_set1_ps(store.alpha);
            let beta = _mm256_set1_ps(store.beta);
            let scale = store.alpha != 1.0;
            let bias = store.bias.0;
            for (r, row) in acc.iter().enumerate() {
                // A comparison per row, not a loop of run-time length, so that the
                // accumulators stay in registers.
                if r >= live {
                    break;
                }
                let dst = c.offset(r as isize * rsc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if scale {
                    v0 = _mm256_mul_ps(v0, alpha);
                    v1 = _mm256_mul_ps(v1, alpha);
                }
                if store.beta == 1.0 {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(dst));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(dst.add(8)));
                } else if store.beta != 0.0 {
                    v0 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(dst), v0);
                    v1 = _mm256_fmadd_ps(beta, _mm256_loadu_ps(dst.add(8)), v1);
                }
                if !bias.is_null() {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.add(8)));
                }
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3, ShapeBuilder};

    fn reference(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
        let a64 = a.mapv(f64::from);
        let b64 = b.mapv(f64::from);
        a64.dot(&b64).mapv(|v| v as f32)
    }

    fn filled(rows: usize, cols: usize, seed: u32, fortran: bool) -> Array2<f32> {
        let shape = (rows, cols).set_f(fortran);
        let mut x = seed;
        Array2::from_shape_simple_fn(shape, || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    fn close(got: f32, want: f32) -> bool {
        (got - want).abs() <= 1e-4 * (1.0 + want.abs())
    }

    #[test]
    fn matches_f64_reference_for_edge_sizes_layouts_and_epilogues() {
        let sizes = [
            (1, 1, 1),
            (7, 5, 3),
            (6, 16, 8),
            (13, 33, 300),
            (97, 50, 257),
            (200, 130, 70),
            (64, 784, 128),
            (150, 300, 100),
            (37, 520, 300),
            // From PARALLEL_MACS on: split by rows (B shared), then by columns with a
            // partial strip (A shared when packed, in place when row-major).
            (200, 300, 150),
            (130, 400, 170),
            (40, 2100, 130),
            // Cut into six pieces each (a shorter last one), along the columns, then rows.
            (130, 400, 520),
            (520, 400, 130),
            // Under PARALLEL_MACS but over PARALLEL_ELEMS elements: split, with one
            // dimension tiny (W2's last layer, each way).
            (600, 1000, 10),
            (10, 600, 1000),
            (600, 10, 1000),
            (9, 0, 4),
        ];
        let (alpha, beta) = (0.5f32, -2.0f32);
        for &(m, k, n) in &sizes {
            for (fa, fb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = filled(m, k, 1, fa);
                let b = filled(k, n, 2, fb);
                let want = reference(&a, &b);
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 3.0).collect();
                // A fresh output, without and with a bias row added as C is stored.
                for with_bias in [false, true] {
                    let bias = with_bias.then_some(&bias[..]);
                    let fresh = gemm_new(&a.view(), &b.view(), Epilogue::bias(bias));
                    for ((i, j), &v) in fresh.indexed_iter() {
                        let w = want[(i, j)] + bias.map_or(0.0, |b| b[j]);
                        assert!(close(v, w), "new {m}x{k}x{n} bias {with_bias} ({i},{j})");
                    }
                }
                // Overwriting garbage, and α · A·B + β · C + bias over old values.
                let mut c = Array2::from_elem((m, n), f32::NAN);
                gemm(&a.view(), &b.view(), &mut c.view_mut(), Epilogue::write());
                for ((i, j), &v) in c.indexed_iter() {
                    assert!(close(v, want[(i, j)]), "{m}x{k}x{n} ({fa},{fb}) ({i},{j})");
                }
                let old = filled(m, n, 3, false);
                let mut c = old.clone();
                let e = Epilogue {
                    alpha,
                    beta,
                    bias: Some(&bias[..]),
                };
                gemm(&a.view(), &b.view(), &mut c.view_mut(), e);
                for ((i, j), &v) in c.indexed_iter() {
                    let w = alpha * want[(i, j)] + beta * old[(i, j)] + bias[j];
                    assert!(close(v, w), "epilogue {m}x{k}x{n} ({fa},{fb}) ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn writes_into_strided_output() {
        let a = filled(20, 30, 3, false);
        let b = filled(30, 40, 4, false);
        let mut big = Array2::<f32>::zeros((40, 20));
        let mut ct = big.view_mut().reversed_axes();
        gemm(&a.view(), &b.view(), &mut ct, Epilogue::write());
        let want = reference(&a, &b);
        for ((i, j), &w) in want.indexed_iter() {
            assert!(close(big[(j, i)], w));
        }
    }

    #[test]
    fn batches_with_broadcast_and_strided_operands_match_each_product() {
        // 2 × 3 products of 64 × 32 @ (64 × 32)ᵀ, A's rows strided as attention's heads
        // are, B broadcast over the first batch dimension: spread over the threads.
        let (m, k, n) = (64, 32, 64);
        let q = Array3::from_shape_fn((m, 6, k), |(i, h, p)| ((i * 7 + h * 3 + p) % 11) as f32);
        let a = q
            .view()
            .into_shape_with_order((m, 2, 3, k))
            .unwrap()
            .permuted_axes([1, 2, 0, 3]);
        let kt = filled(3 * n, k, 5, false);
        let b = kt
            .view()
            .into_shape_with_order((3, n, k))
            .unwrap()
            .permuted_axes([0, 2, 1])
            .insert_axis(Axis(0));
        let b = b.broadcast((2, 3, k, n)).unwrap();
        for (e, f64_too) in [(Epilogue::write(), true), (Epilogue::accumulate(), false)] {
            let mut c = ndarray::Array4::<f32>::ones((2, 3, m, n));
            gemm_batched(
                a.view().into_dyn(),
                b.view().into_dyn(),
                c.view_mut().into_dyn(),
                e,
            );
            let add = if e.beta == 1.0 { 1.0 } else { 0.0 };
            for (i, h) in [(0, 0), (0, 2), (1, 1), (1, 2)] {
                let ai = a.slice(ndarray::s![i, h, .., ..]).to_owned();
                let bi = b.slice(ndarray::s![i, h, .., ..]).to_owned();
                let want = reference(&ai, &bi);
                for ((r, col), &w) in want.indexed_iter() {
                    assert!(
                        close(c[(i, h, r, col)], w + add),
                        "item ({i},{h}) at ({r},{col})"
                    );
                }
            }
            if f64_too {
                let a64 = a.mapv(f64::from);
                let b64 = b.mapv(f64::from);
                let mut c64 = ndarray::Array4::<f64>::zeros((2, 3, m, n));
                let e64 = Epilogue::write();
                let (av, bv) = (a64.view().into_dyn(), b64.view().into_dyn());
                gemm_batched(av, bv, c64.view_mut().into_dyn(), e64);
                assert!(c64.iter().zip(&c).all(|(&x, &y)| close(y, x as f32)));
            }
        }
    }
}
