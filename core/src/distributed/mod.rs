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
//! gradient reductions of [`DistributedDataParallel`], which run on its communication thread
//! during backward (NOTE [ Gradient reduction ] in `ddp.rs`); every MPI call goes through
//! one lock, so they never overlap. The DataLoader's workers and the matrix-multiply threads
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

mod collectives;
mod ddp;

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
