//! Data-parallel training over MPI, as PyTorch's `torch.distributed`: a process group
//! ([`init`], [`rank`], [`world_size`]), tensor collectives ([`all_reduce`], [`broadcast`],
//! [`all_gather`], [`barrier`]) and [`DistributedDataParallel`]. Only with the cargo feature
//! `distributed`, which needs an MPI library (Open MPI, MPICH) and libclang where it is built.
//!
//! ```no_run
//! # use torchlet_core as torchlet;
//! use torchlet::distributed::{self, ReduceOp};
//! use torchlet::Tensor;
//!
//! // mpirun -np 2 target/release/examples/…
//! distributed::run(|| {
//!     let t = Tensor::full(&[3], distributed::rank() as f64);
//!     distributed::all_reduce(&t, ReduceOp::Sum);
//!     assert_eq!(t.to_vec::<f32>(), [1.0; 3]); // 0 + 1 with two ranks
//!     Ok(())
//! });
//! ```
//!
//! NOTE [ One process per rank ]
//! `mpirun -np N program` starts N copies of the program; each calls [`init`] once, which
//! joins the job's world communicator (MPI's `MPI_COMM_WORLD`, PyTorch's default process
//! group). A program started without `mpirun` is a job of one rank, so the same binary runs
//! alone. MPI is initialised with `MPI_THREAD_SERIALIZED`: two threads may call MPI but
//! never at the same time. The collectives are called from the training thread, except the
//! gradient reductions of [`DistributedDataParallel`] over MPI's all-reduce, which run on its
//! communication thread during backward (NOTE [ Gradient reduction ] below); every MPI call
//! goes through one lock, so they never overlap. The DataLoader's workers and the matrix-multiply threads
//! never call MPI.
//!
//! NOTE [ A failing rank ends the job ]
//! Collectives wait for every rank. A rank that panics or gives up with an error would leave
//! the others waiting for ever, so after [`init`] a panic on any thread of any rank prints its
//! message and then calls `MPI_Abort`, which makes `mpirun` stop every rank and exit with an
//! error. [`run`] does the same for an `Err` returned by the training function, and
//! [`abort`] is there for programs that handle their errors themselves. This holds for
//! panics that would otherwise be caught (a `Dataset::get` that panics inside a DataLoader
//! worker included): on one rank a caught panic is a skipped batch, in a job it is a rank
//! that stops matching the others' collectives.
//!
//! # NOTE [ Gradient reduction ]
//! At construction the parameters that require grad are grouped into buckets, in reverse
//! registration order as PyTorch does, since backward produces the last layers' gradients
//! first: the first bucket holds at most `first_bucket_cap_mb` (1 MiB, PyTorch's
//! `_DEFAULT_FIRST_BUCKET_BYTES`, so that the first reduction starts early), the others at
//! most `bucket_cap_mb` (25 MiB by default); one dtype per bucket. Each parameter gets a
//! post-accumulate-grad hook (NOTE [ Post-accumulate-grad hooks ] in `autograd/hooks.rs`),
//! and each training `forward` passes its output through an identity node with two
//! callbacks (NOTE [ Callbacks at the end of backward ] in `autograd/graph.rs`). One step
//! then goes:
//!
//! 1. Backward reaches the identity node before any parameter's gradient: the reducer is
//!    armed for this pass.
//! 2. A parameter's hook runs as soon as its gradient is final and marks it ready. When every
//!    parameter of the next bucket in order is ready, that bucket is launched: the gradients
//!    are copied into the bucket's flat buffer, divided by the world size on the way
//!    (PyTorch divides before the all-reduce too), with one "has a gradient" flag per
//!    parameter at the end, and the buffer goes to the reducer's communication thread,
//!    which sums it across ranks in place with a non-blocking `MPI_Iallreduce` (NOTE
//!    \[ MPI_IN_PLACE \] in `collectives.rs`). Backward meanwhile computes the earlier layers'
//!    gradients.
//! 3. At the end of the pass the buckets not launched yet are launched (a parameter that got
//!    no gradient in this pass has no hook call), and the training thread waits for every
//!    bucket. Each parameter's gradient then becomes a view of its part of the bucket's
//!    buffer (PyTorch's `gradient_as_bucket_view=True`): there is no copy back. One copy of
//!    the gradients per step in all, besides the reduction's own traffic.
//!
//! Buckets are launched strictly in bucket order on every rank, so every rank starts the
//! same collectives in the same order even when hooks run in another order (as in PyTorch,
//! whose reducer also launches buckets in order). A backward pass that does not go through
//! the identity node (a forward under `no_sync`, or `ddp.module().forward`) leaves the
//! reducer unarmed and the hooks do nothing. A gradient view in a bucket's buffer is copied
//! on write like any shared storage, and a buffer still shared with last step's gradients
//! (kept with `zero_grad` skipped) is replaced by a new one before the next flattening.
//!
//! Why a communication thread: with MPI over shared memory a non-blocking reduction makes
//! progress only inside MPI calls, and backward makes none while it multiplies matrices;
//! the thread polls the reduction every 50 µs, sleeping in between so as not to take the
//! core from the backward pass it overlaps with (busily for half a millisecond once the
//! training thread waits for it; see `sum_into` in `collectives.rs`). MPI
//! runs at `MPI_THREAD_SERIALIZED` and every MPI call takes one lock (NOTE [ One process
//! per rank ] in `mod.rs`).
//!
//! When every rank runs on this machine, the buckets are summed through shared memory
//! instead, at the end of backward (NOTE [ Gradient reduction through shared memory ]
//! below); the buckets, their flat buffers and the views are the same.
//!
//! Each bucket's "has a gradient" flags handle parameters without a gradient on some ranks
//! (unused in their forward): those ranks contribute zeros, every rank that has a gradient
//! anywhere ends with the average, so the optimizers see the same gradients everywhere; a
//! parameter unused on every rank keeps no gradient.
//!
//! # NOTE [ Gradient reduction through shared memory ]
//! When every rank of the job runs on this machine (MPI's `MPI_COMM_TYPE_SHARED` split of the
//! world is the whole world) and [`DdpConfig::shared_memory`] is on (the default),
//! [`DistributedDataParallel`]'s construction also allocates an MPI shared-memory window
//! (`MPI_Win_allocate_shared`): one segment per rank, as large as all its buckets, which
//! every rank reads directly. The buckets are then summed at the end of backward, on the
//! training thread, in three phases, each after a `sync` (`MPI_Win_sync`, `MPI_Barrier`,
//! `MPI_Win_sync` on the node's ranks):
//!
//! 1. each rank writes its gradients, divided by the world size, and the "has a gradient"
//!    flags into its own segment (after a sync, so that no rank still reads the last
//!    step's values there); this is the copy the all-reduce path makes into the bucket;
//! 2. each rank sums its p-th of every bucket over the p segments, in rank order, into the
//!    bucket's flat buffer and back into its own segment;
//! 3. each rank copies the chunks the other ranks summed into its flat buffer, and the
//!    gradients become views of it, as on the all-reduce path.
//!
//! Each chunk is summed by one rank, so every rank ends with the same bits; with two ranks
//! they are the bits of MPI's sum too (`a + b` either way). Why: on this project's 2-core
//! machine, two ranks of W2 at one thread each ran 7% faster this way than with the
//! overlapped `MPI_Iallreduce` (medians of 6 alternating runs). There, the all-reduce makes
//! progress only when the communication thread gets its core back from backward (a few
//! polls per bucket), moves the data through the kernel (CMA), and the gradients wait at
//! the end of backward anyway; here each rank reads the other's half once, with nothing to
//! wait for but the other rank. What it gives up: overlap with backward, and a second copy
//! of the gradients per rank. Across machines the all-reduce path is the only one.
//!
//! The windows stay until the [`ProcessGroup`] is dropped, which frees them: freeing is
//! collective, and a model dropped on one rank only must not leave the others waiting.
//! Open MPI does not fail a window's creation collectively (a rank that cannot create the
//! backing file returns an error while the others wait in the call for ever), so the ranks
//! first agree that `/dev/shm`, where Open MPI (by default) and MPICH put the segments, has
//! twice the room the segments need; if not, or on other systems, the all-reduce path is
//! used. A window MPI still fails to allocate on some ranks only ends the job with a
//! message naming `DdpConfig::shared_memory = false` (or, with Open MPI, hangs in the call:
//! that failure is MPI's; set `shared_memory` to `false` where `/dev/shm` is not where the
//! segments go, e.g. with `--mca osc_sm_backing_directory`).
//!
//! # NOTE [ Collectives work on the tensor's own buffer ]
//! MPI reads and writes the tensor's storage directly whenever it is contiguous: `broadcast`
//! and `all_gather_into_tensor` receive into it, `all_reduce` sends from it and receives
//! into a new buffer that then becomes the tensor's storage (a fresh buffer costs no more
//! than the copy that would replace it; only [`DistributedDataParallel`]'s bucket
//! reductions use `MPI_IN_PLACE`, see NOTE \[ MPI_IN_PLACE \] in `collectives.rs`). A
//! non-contiguous tensor goes through one contiguous copy. Like every in-place op the
//! tensor's version is bumped, and like an optimizer step the update is outside the graph:
//! collectives are not recorded for backward.

mod collectives;
mod ddp;
mod shm;

pub use crate::data::DistributedSampler;
pub use collectives::{
    ReduceOp, all_gather, all_gather_into_tensor, all_reduce, barrier, broadcast,
};
pub use ddp::{DdpConfig, DistributedDataParallel, NoSyncGuard};

use crate::error::{Error, Result};
use mpi::environment::{Threading, Universe};
use mpi::topology::{Communicator, SimpleCommunicator};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RANK: AtomicUsize = AtomicUsize::new(0);
static WORLD_SIZE: AtomicUsize = AtomicUsize::new(1);

/// The process group of this job: MPI stays initialised while it lives and is finalised
/// when it is dropped. Keep it for the whole program (`let _pg = distributed::init()?;`).
pub struct ProcessGroup {
    _universe: Universe,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", rank(), world_size())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        shm::free_all();
        ACTIVE.store(false, Ordering::SeqCst);
    }
}

/// Joins the job started by `mpirun` (PyTorch's `init_process_group`), and makes a panic on
/// any rank end the whole job (NOTE [ A failing rank ends the job ]). See NOTE [ One process
/// per rank ].
///
/// # Errors
/// [`Error::Distributed`] if MPI was already initialised in this process.
pub fn init() -> Result<ProcessGroup> {
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Serialized) else {
        return Err(Error::Distributed(
            "distributed::init: MPI is already initialised in this process; call init once \
             and keep the ProcessGroup it returns until the program ends"
                .into(),
        ));
    };
    let world = universe.world();
    RANK.store(world.rank() as usize, Ordering::SeqCst);
    WORLD_SIZE.store(world.size() as usize, Ordering::SeqCst);
    ACTIVE.store(true, Ordering::SeqCst);
    abort_on_panic();
    Ok(ProcessGroup {
        _universe: universe,
    })
}

/// Runs a rank's training function between [`init`] and the end of MPI; an `Err` from it (or
/// a panic) prints the message and aborts the whole job (NOTE [ A failing rank ends the
/// job ]). A program's `main` is typically `distributed::run(|| train(args))`.
pub fn run<T>(f: impl FnOnce() -> Result<T>) -> T {
    let pg = init().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let out = f().unwrap_or_else(|e| abort(&format!("error: {e}")));
    drop(pg);
    out
}

/// Prints `message` with this rank's number and ends every rank of the job (`MPI_Abort`).
pub fn abort(message: &str) -> ! {
    eprintln!(
        "torchlet::distributed: rank {} of {}: {message}; aborting the job (MPI_Abort)",
        rank(),
        world_size()
    );
    if ACTIVE.load(Ordering::SeqCst) {
        SimpleCommunicator::world().abort(1)
    }
    std::process::exit(1)
}

/// Whether [`init`] has run and its [`ProcessGroup`] is alive (PyTorch's `is_initialized`).
pub fn is_initialized() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// This process's rank, `0..world_size()` (PyTorch's `get_rank`); 0 before [`init`].
pub fn rank() -> usize {
    RANK.load(Ordering::SeqCst)
}

/// The number of ranks in the job (PyTorch's `get_world_size`); 1 before [`init`].
pub fn world_size() -> usize {
    WORLD_SIZE.load(Ordering::SeqCst)
}

/// Held around every MPI call, which `MPI_THREAD_SERIALIZED` requires of a process whose
/// threads call MPI (NOTE [ One process per rank ]).
static MPI_LOCK: Mutex<()> = Mutex::new(());

/// The world communicator, with the right to call MPI while it lives.
struct World {
    comm: SimpleCommunicator,
    _serialized: MutexGuard<'static, ()>,
}

impl std::ops::Deref for World {
    type Target = SimpleCommunicator;

    fn deref(&self) -> &SimpleCommunicator {
        &self.comm
    }
}

/// Takes the MPI lock (see [`World`]).
fn mpi_lock() -> MutexGuard<'static, ()> {
    MPI_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The world communicator for the collective `op`; MPI is this thread's until it is dropped.
///
/// # Panics
/// Before [`init`], or after its [`ProcessGroup`] was dropped.
#[track_caller]
fn world(op: &str) -> World {
    if !is_initialized() {
        not_initialized(op)
    }
    World {
        _serialized: mpi_lock(),
        comm: SimpleCommunicator::world(),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn not_initialized(op: &str) -> ! {
    panic!(
        "{op}: the process group is not initialised; call torchlet::distributed::init() (or \
         run) first and keep its ProcessGroup alive"
    )
}

/// Chains a hook that aborts the job after the usual panic message.
fn abort_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if is_initialized() {
            abort("panicked (message above)");
        }
    }));
}
