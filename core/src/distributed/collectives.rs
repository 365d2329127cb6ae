//! Tensor collectives over the world communicator, in place, as PyTorch's
//! `torch.distributed.all_reduce` and friends.
//!
//! NOTE [ Collectives work on the tensor's own buffer ] is on the `distributed` module page.

use super::{mpi_lock, world, world_size};
use crate::dtype::{DType, Element, Storage};
use crate::tensor::Tensor;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use ndarray::{ArcArray, IxDyn};
use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How [`all_reduce`] combines the ranks' values (PyTorch's `ReduceOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The mean over ranks (floating-point tensors only).
    Avg,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
    /// The product over ranks.
    Product,
}

impl ReduceOp {
    fn mpi(self) -> SystemOperation {
        match self {
            ReduceOp::Sum | ReduceOp::Avg => SystemOperation::sum(),
            ReduceOp::Max => SystemOperation::max(),
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Product => SystemOperation::product(),
        }
    }
}

/// An element type MPI can carry.
pub(super) trait MpiElement:
    Element + Equivalence + Default + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self>
{
}

impl MpiElement for f32 {}
impl MpiElement for f64 {}
impl MpiElement for i64 {}

/// Calls the generic `$f::<T>(array, args…)` with the tensor's data as a mutable array of
/// its own element type, and bumps the version.
macro_rules! dispatch_mut {
    ($tensor:expr, $f:ident($($arg:expr),*)) => {
        $tensor.update_in_place(|s| match s {
            Storage::F32(a) => $f(a, $($arg),*),
            Storage::F64(a) => $f(a, $($arg),*),
            Storage::I64(a) => $f(a, $($arg),*),
        })
    };
}

/// Combines `tensor` across all ranks with `op`; every rank ends with the result, in place
/// (PyTorch's `dist.all_reduce(tensor, op)`). See NOTE [ Collectives work on the tensor's
/// own buffer ] [on the module page](crate::distributed#note--collectives-work-on-the-tensors-own-buffer-).
///
/// # Panics
/// Before `init`, or for [`ReduceOp::Avg`] on an i64 tensor. Every rank must pass a tensor
/// of the same shape and dtype (MPI cannot check it: a mismatch is an MPI error that aborts
/// the job, or a wrong result).
#[track_caller]
pub fn all_reduce(tensor: &Tensor, op: ReduceOp) {
    let comm = world("all_reduce");
    if op == ReduceOp::Avg && !tensor.dtype().is_float() {
        avg_of_integers(tensor.dtype())
    }
    dispatch_mut!(tensor, reduce_array(&comm, op));
}

fn reduce_array<T: MpiElement>(
    a: &mut ArcArray<T, IxDyn>,
    comm: &SimpleCommunicator,
    op: ReduceOp,
) {
    let mut out = vec![T::default(); a.len()];
    match a.as_slice() {
        Some(send) => comm.all_reduce_into(send, &mut out[..], op.mpi()),
        None => {
            let send: Vec<T> = a.iter().copied().collect();
            comm.all_reduce_into(&send[..], &mut out[..], op.mpi())
        }
    }
    if op == ReduceOp::Avg {
        let n = comm.size() as f64;
        out.iter_mut()
            .for_each(|x| *x = T::from_f64(x.to_f64() / n));
    }
    *a = ArcArray::from_shape_vec(a.raw_dim(), out).expect("same length as the input");
}

#[cold]
#[inline(never)]
#[track_caller]
fn avg_of_integers(dtype: DType) -> ! {
    panic!("all_reduce: ReduceOp::Avg needs a floating-point tensor, got {dtype}; use Sum")
}

/// Sends `src`'s `tensor` to every rank, in place (PyTorch's `dist.broadcast(tensor, src)`).
///
/// # Panics
/// Before `init`, or if `src` is not a rank. Shapes and dtypes must agree across ranks.
#[track_caller]
pub fn broadcast(tensor: &Tensor, src: usize) {
    let comm = world("broadcast");
    if src >= world_size() {
        bad_rank("broadcast", src)
    }
    dispatch_mut!(tensor, broadcast_array(&comm, src));
}

fn broadcast_array<T: MpiElement>(
    a: &mut ArcArray<T, IxDyn>,
    comm: &SimpleCommunicator,
    src: usize,
) {
    let root = comm.process_at_rank(src as i32);
    match a.as_slice_mut() {
        Some(buf) => root.broadcast_into(buf),
        None => {
            let mut buf: Vec<T> = a.iter().copied().collect();
            root.broadcast_into(&mut buf[..]);
            a.iter_mut().zip(buf).for_each(|(x, v)| *x = v);
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn bad_rank(op: &str, src: usize) -> ! {
    panic!(
        "{op}: src rank {src} is not in the job of {} ranks; pass 0..{}",
        world_size(),
        world_size()
    )
}

/// Gathers every rank's `input` into `output` (shape `[world_size * input.shape()[0], …]`,
/// or any shape with `world_size` times the elements), rank by rank, in place (PyTorch's
/// `dist.all_gather_into_tensor(output, input)`). MPI writes straight into `output`.
///
/// # Panics
/// Before `init`, if `output` does not hold `world_size` times `input`'s elements, or if
/// the dtypes differ.
#[track_caller]
pub fn all_gather_into_tensor(output: &Tensor, input: &Tensor) {
    let comm = world("all_gather_into_tensor");
    if output.numel() != input.numel() * world_size() || output.dtype() != input.dtype() {
        gather_shape_error(
            &output.shape(),
            output.dtype(),
            &input.shape(),
            input.dtype(),
        )
    }
    let send = input.storage();
    dispatch_mut!(output, gather_array(&comm, &send));
}

fn gather_array<T: MpiElement>(
    a: &mut ArcArray<T, IxDyn>,
    comm: &SimpleCommunicator,
    send: &Storage,
) {
    let send = T::from_storage(send);
    let send = send.as_standard_layout();
    let send = send.as_slice().expect("a standard-layout array is a slice");
    match a.as_slice_mut() {
        Some(recv) => comm.all_gather_into(send, recv),
        None => {
            let mut recv = vec![T::default(); a.len()];
            comm.all_gather_into(send, &mut recv[..]);
            a.iter_mut().zip(recv).for_each(|(x, v)| *x = v);
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn gather_shape_error(out: &[usize], out_dtype: DType, input: &[usize], in_dtype: DType) -> ! {
    panic!(
        "all_gather: output {out:?} ({out_dtype}) must hold {} times input {input:?} \
         ({in_dtype}), of the same dtype",
        world_size()
    )
}

/// Every rank's `tensor`, in rank order (PyTorch's `dist.all_gather(tensor_list, tensor)`,
/// returning the list instead of filling one). One `MPI_Allgather` into a single buffer,
/// then one copy per rank into its own tensor.
///
/// # Panics
/// Before `init`.
#[track_caller]
pub fn all_gather(tensor: &Tensor) -> Vec<Tensor> {
    let p = world_size();
    let mut shape = tensor.shape();
    shape.insert(0, p);
    let all = Tensor::full_dtype(&shape, 0.0, tensor.dtype());
    all_gather_into_tensor(&all, tensor);
    (0..p).map(|r| all.select(0, r).contiguous_copy()).collect()
}

/// Waits until every rank has reached this call (PyTorch's `dist.barrier()`).
///
/// # Panics
/// Before `init`.
#[track_caller]
pub fn barrier() {
    world("barrier").barrier();
}

/// Sums `buf` over all ranks, in place, for the gradient buckets; called on
/// DistributedDataParallel's communication thread.
///
/// A blocking `MPI_Allreduce` spins while it waits for a late rank, and on a machine with
/// more runnable threads than cores that spinning takes the time slices that the late rank,
/// or this rank's own backward pass, needs. So the reduction is started non-blocking and
/// polled with a sleep of 50 µs between polls; busily, for half a millisecond, only once
/// `waited_on` says the training thread waits for it (ranks in step arrive within that).
/// The MPI lock is held for each call only, so the training thread may call MPI in between.
///
/// NOTE [ MPI_IN_PLACE ]
/// The `mpi` crate has no in-place all-reduce, and its bindings lack `MPI_IN_PLACE`: that is
/// a C macro casting an implementation-defined integer to a pointer (`(void *) 1` in Open
/// MPI's `mpi.h`, `(void *) -1` in MPICH's), which bindgen does not translate. So the value
/// is chosen by the library this process runs on ([`in_place`]), and the call goes through
/// `mpi::ffi`. Under any other MPI the buffer is copied to a send buffer first, which is
/// the copy MPI itself makes when the send and receive buffers differ.
pub(super) fn sum_in_place<T: MpiElement>(buf: &mut [T], waited_on: &AtomicBool) {
    let Some(in_place) = in_place() else {
        let send = buf.to_vec();
        mpi::request::scope(|scope| {
            let comm = world("DistributedDataParallel");
            let request =
                comm.immediate_all_reduce_into(scope, &send[..], buf, SystemOperation::sum());
            drop(comm);
            let mut request = Some(request);
            poll(waited_on, || match request.take().map(|r| r.test()) {
                Some(Err(pending)) => {
                    request = Some(pending);
                    false
                }
                _ => true,
            });
        });
        return;
    };
    let count = i32::try_from(buf.len()).expect("a bucket of fewer than 2^31 elements");
    let comm = world("DistributedDataParallel");
    // SAFETY: before `MPI_Iallreduce` returns, `request` only has to be writable; it is
    // initialised to the null request so that it is a valid value either way.
    let mut request = unsafe { mpi::ffi::RSMPI_REQUEST_NULL };
    // SAFETY: `in_place` is this MPI library's `MPI_IN_PLACE` (NOTE [ MPI_IN_PLACE ]), so MPI
    // reads and writes `count` elements of `buf`'s datatype at `buf`, which is exactly `buf`;
    // `buf` is borrowed mutably until this function returns, which is after the request has
    // completed (the loop below ends only then), so no one else touches the memory while MPI
    // may. The communicator, datatype and operation are live handles of the world, `T` and
    // MPI_SUM, and the MPI lock is held.
    let code = unsafe {
        mpi::ffi::MPI_Iallreduce(
            in_place,
            buf.as_mut_ptr().cast(),
            count,
            T::equivalent_datatype().as_raw(),
            SystemOperation::sum().as_raw(),
            comm.as_raw(),
            &mut request,
        )
    };
    drop(comm);
    assert_eq!(code, 0, "MPI_Iallreduce failed with error code {code}");
    poll(waited_on, || {
        let mut done = 0;
        let _lock = mpi_lock();
        let code =
            // SAFETY: `request` is the live request started above (MPI_Test sets it to the
            // null request once it completes, and the loop stops then); the status is
            // ignored, which MPI_STATUS_IGNORE (a constant of the library) says.
            unsafe { mpi::ffi::MPI_Test(&mut request, &mut done, mpi::ffi::RSMPI_STATUS_IGNORE) };
        assert_eq!(code, 0, "MPI_Test failed with error code {code}");
        done != 0
    });
}

/// Calls `done` (which takes the MPI lock) until it says the request completed; see
/// [`sum_in_place`] for when it sleeps.
fn poll(waited_on: &AtomicBool, mut done: impl FnMut() -> bool) {
    let mut busy_since = None;
    loop {
        if done() {
            return;
        }
        if waited_on.load(Ordering::SeqCst) {
            let since = *busy_since.get_or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_micros(500) {
                continue;
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// `MPI_IN_PLACE` of the MPI library this process runs on, if it is Open MPI or MPICH (NOTE
/// [ MPI_IN_PLACE ]).
fn in_place() -> Option<*const c_void> {
    static IN_PLACE: OnceLock<Option<usize>> = OnceLock::new();
    let value = *IN_PLACE.get_or_init(|| {
        let _lock = mpi_lock();
        let version = mpi::environment::library_version().ok()?;
        if version.starts_with("Open MPI") {
            Some(1)
        } else if version.starts_with("MPICH") {
            Some(usize::MAX)
        } else {
            None
        }
    });
    value.map(|v| v as *const c_void)
}

/// Broadcasts raw bytes from rank 0 (variable length: the length goes first).
pub(super) fn broadcast_bytes(bytes: &[u8]) -> Vec<u8> {
    let comm = world("broadcast");
    let root = comm.process_at_rank(0);
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    let mut buf = if comm.rank() == 0 {
        bytes.to_vec()
    } else {
        vec![0u8; len as usize]
    };
    root.broadcast_into(&mut buf[..]);
    buf
}

/// Every rank's `value`, in rank order.
pub(super) fn all_gather_i64(value: i64) -> Vec<i64> {
    let mut out = vec![0i64; world_size()];
    world("all_gather").all_gather_into(&value, &mut out[..]);
    out
}
