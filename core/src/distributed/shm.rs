//! Shared-memory segments for [`DistributedDataParallel`](super::DistributedDataParallel)'s
//! gradient sums when every rank of the job runs on this machine (NOTE [ Gradient reduction
//! through shared memory ] on the `distributed` module page).

use super::{is_initialized, mpi_lock};
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::ffi::c_void;
use std::ops::{Add, Range};
use std::sync::{Mutex, PoisonError};

/// One segment per rank in an MPI shared-memory window (`MPI_Win_allocate_shared`) over the
/// ranks of this node; every rank reads every segment directly.
pub(super) struct NodeSegments {
    win: ffi::MPI_Win,
    node: ffi::MPI_Comm,
    /// Each rank's segment, by rank.
    bases: Vec<*mut u8>,
    rank: usize,
}

// SAFETY: the window handle is only passed to MPI under the MPI lock, and the segments are
// plain memory whose use the reduction's protocol orders (`sync` between its phases).
unsafe impl Send for NodeSegments {}
// SAFETY: as for `Send`; shared references only read the handle and the addresses.
unsafe impl Sync for NodeSegments {}

/// Windows and node communicators live until the process group ends (freeing a window is
/// collective, which a `Drop` of one rank's model cannot promise).
struct Held {
    win: ffi::MPI_Win,
    node: SimpleCommunicator,
}

// SAFETY: the handles are only used by `free_all`, under the MPI lock.
unsafe impl Send for Held {}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

impl NodeSegments {
    /// Segments of `bytes` bytes for each rank. Collective over the world. `None` when the
    /// job has one rank, when its ranks are not all on this node, or when MPI cannot
    /// allocate the window on every rank (the caller then sums with `MPI_Iallreduce`).
    pub(super) fn new(bytes: usize) -> Option<NodeSegments> {
        let _lock = mpi_lock();
        let world = SimpleCommunicator::world();
        let node = world.split_shared(world.rank());
        if world.size() < 2 || node.size() != world.size() {
            return None;
        }
        let bytes = bytes.max(64);
        // Open MPI does not fail window creation collectively: a rank that cannot create the
        // backing file returns an error while the others wait in the call for ever. So the
        // ranks first agree that the file system MPI puts the segments on has room.
        let room = i32::from(has_room(SHM_DIR, bytes * node.size() as usize));
        if all_min(&node, room) == 0 {
            return None;
        }
        let mut base: *mut c_void = std::ptr::null_mut();
        // SAFETY: the null window is a valid value to be overwritten by the call.
        let mut win = unsafe { ffi::RSMPI_WIN_NULL };
        // SAFETY: `node` is a live communicator; with MPI_ERRORS_RETURN a failed allocation
        // returns a code instead of ending the job.
        unsafe { ffi::MPI_Comm_set_errhandler(node.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
        // SAFETY: a collective call over `node` allocating `bytes` for this rank; `base` and
        // `win` are writable outputs (`baseptr` is a `void **` passed as `void *`).
        let code = unsafe {
            ffi::MPI_Win_allocate_shared(
                bytes as ffi::MPI_Aint,
                1,
                ffi::RSMPI_INFO_NULL,
                node.as_raw(),
                (&raw mut base).cast(),
                &mut win,
            )
        };
        let mine = i32::from(code == 0);
        if all_min(&node, mine) == 0 {
            if mine == 1 {
                // Some rank could not allocate its segment and this one could: no common
                // path is left, and a rank that waits alone would hang the job.
                drop(_lock);
                super::abort(
                    "DistributedDataParallel: MPI could allocate the shared-memory window for \
                     the gradients on some ranks only; set DdpConfig::shared_memory = false",
                );
            }
            return None;
        }
        let bases = (0..node.size())
            .map(|q| {
                let (mut size, mut unit): (ffi::MPI_Aint, i32) = (0, 0);
                let mut ptr: *mut c_void = std::ptr::null_mut();
                // SAFETY: `win` is the live window just allocated and `q` one of its ranks;
                // the outputs are writable.
                unsafe {
                    ffi::MPI_Win_shared_query(win, q, &mut size, &mut unit, (&raw mut ptr).cast())
                };
                ptr.cast::<u8>()
            })
            .collect();
        // SAFETY: opens one passive access epoch on every segment for the window's life
        // (MPI's "unified" model: from then on `MPI_Win_sync` and a barrier order accesses).
        unsafe { ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as i32, win) };
        let rank = node.rank() as usize;
        let raw = node.as_raw();
        HELD.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Held { win, node });
        Some(NodeSegments {
            win,
            node: raw,
            bases,
            rank,
        })
    }

    /// The number of ranks (all on this node).
    fn ranks(&self) -> usize {
        self.bases.len()
    }

    /// Element `start` of the `T`s that begin `off` bytes into rank `q`'s segment.
    fn region<T>(&self, q: usize, off: usize, start: usize) -> *mut T {
        self.bases[q]
            .wrapping_add(off)
            .cast::<T>()
            .wrapping_add(start)
    }

    /// The chunk of `len` elements that rank `q` sums.
    fn chunk(&self, len: usize, q: usize) -> Range<usize> {
        let p = self.ranks();
        len * q / p..len * (q + 1) / p
    }

    /// Phase 1: `fill` writes this rank's `len` values at `off` in its segment. Between the
    /// `sync`s around it no other rank reads there.
    pub(super) fn write<T>(&self, off: usize, len: usize, fill: impl FnOnce(&mut [T])) {
        let start = self.region::<T>(self.rank, off, 0);
        // SAFETY: the caller's layout puts `len` aligned `T`s at `off` inside every segment
        // (`new` allocated the layout's bytes); this rank alone touches its segment in this
        // phase, and the borrow ends before the next `sync`.
        let values = unsafe { std::slice::from_raw_parts_mut(start, len) };
        fill(values)
    }

    /// Phase 2: sums this rank's chunk of the `buf.len()` values at `off` over all the
    /// segments, in rank order, into `buf` and into this rank's segment.
    pub(super) fn sum_chunk<T: Copy + Add<Output = T>>(&self, off: usize, buf: &mut [T]) {
        let mine = self.chunk(buf.len(), self.rank);
        let out = &mut buf[mine.clone()];
        for q in 0..self.ranks() {
            let start = self.region::<T>(q, off, mine.start);
            // SAFETY: inside rank q's segment (as in `write`); in this phase no rank writes
            // this chunk except this rank, which writes it below, after the last read.
            let src = unsafe { std::slice::from_raw_parts(start, mine.len()) };
            if q == 0 {
                out.copy_from_slice(src);
            } else {
                out.iter_mut().zip(src).for_each(|(o, &v)| *o = *o + v);
            }
        }
        let start = self.region::<T>(self.rank, off, mine.start);
        // SAFETY: this rank's chunk of its own segment, which the other ranks read only after
        // the next `sync`.
        let back = unsafe { std::slice::from_raw_parts_mut(start, mine.len()) };
        back.copy_from_slice(out);
    }

    /// Phase 3: copies the chunks the other ranks summed into `buf`.
    pub(super) fn gather<T: Copy>(&self, off: usize, buf: &mut [T]) {
        let len = buf.len();
        for q in (0..self.ranks()).filter(|&q| q != self.rank) {
            let theirs = self.chunk(len, q);
            let start = self.region::<T>(q, off, theirs.start);
            // SAFETY: inside rank q's segment; its chunk is final since the last `sync`, and
            // no rank writes its segment before the next one.
            let src = unsafe { std::slice::from_raw_parts(start, theirs.len()) };
            buf[theirs].copy_from_slice(src);
        }
    }

    /// Makes this rank's writes visible, waits until every rank has reached the same call,
    /// and makes theirs visible here. Collective.
    pub(super) fn sync(&self) {
        let _lock = mpi_lock();
        // SAFETY: a live window (inside its lock_all epoch) and its live communicator: both
        // are freed only as the process group ends.
        unsafe {
            ffi::MPI_Win_sync(self.win);
            ffi::MPI_Barrier(self.node);
            ffi::MPI_Win_sync(self.win);
        }
    }
}

/// The smallest of the ranks' `value`s. Collective over `node`; the MPI lock is held.
fn all_min(node: &SimpleCommunicator, value: i32) -> i32 {
    let mut min = 0i32;
    // SAFETY: one int in and one out, a live communicator.
    unsafe {
        ffi::MPI_Allreduce(
            (&raw const value).cast(),
            (&raw mut min).cast(),
            1,
            ffi::RSMPI_INT32_T,
            ffi::RSMPI_MIN,
            node.as_raw(),
        )
    };
    min
}

/// Where MPI libraries on Linux put shared-memory windows: Open MPI's default
/// `osc_sm_backing_directory`, and POSIX shared memory (MPICH).
const SHM_DIR: &str = "/dev/shm";

/// Whether the file system at `dir` has `bytes` free, with as much again to spare.
#[cfg(target_os = "linux")]
fn has_room(dir: &str, bytes: usize) -> bool {
    let Ok(path) = std::ffi::CString::new(dir) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and room for one statvfs, which the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let free = u128::from(st.f_bavail) * u128::from(st.f_frsize);
    free >= 2 * bytes as u128
}

/// Elsewhere the segments' place is not known: the all-reduce is used.
#[cfg(not(target_os = "linux"))]
fn has_room(_dir: &str, _bytes: usize) -> bool {
    false
}

/// Frees every window and node communicator, as the process group ends (every rank gets
/// here, in the same order of windows, since models are built collectively).
pub(super) fn free_all() {
    let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(PoisonError::into_inner));
    if !is_initialized() {
        return;
    }
    let _lock = mpi_lock();
    for Held { mut win, node } in held {
        // SAFETY: a live window inside its lock_all epoch, freed once, collectively.
        unsafe {
            ffi::MPI_Win_unlock_all(win);
            ffi::MPI_Win_free(&mut win);
        }
        drop(node);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{SHM_DIR, has_room};

    #[test]
    fn room_is_free_space_with_as_much_again_to_spare() {
        assert!(!has_room("/no/such/directory", 1));
        assert!(!has_room(SHM_DIR, usize::MAX / 4));
        if std::path::Path::new(SHM_DIR).is_dir() {
            assert!(has_room(SHM_DIR, 1));
        }
    }
}
