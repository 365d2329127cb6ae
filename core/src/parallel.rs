//! How many threads torchlet's kernels use (PyTorch's `torch.get_num_threads` /
//! `torch.set_num_threads`).
//!
//! Large matrix products split across a pool of worker threads (see NOTE [ GEMM ] in
//! `ops/gemm.rs`); everything else runs on the calling thread. The pool has one thread per
//! core unless `RAYON_NUM_THREADS` or [`set_num_threads`] says otherwise.

use crate::error::{Error, Result};

/// The number of threads large kernels may use.
pub fn get_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Sets the number of threads large kernels may use. Call it before the first tensor op.
///
/// # Errors
/// If `n` is 0, or the pool was already started (by an earlier op or call) with another
/// size.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config(
            "set_num_threads: the thread count must be at least 1, got 0".into(),
        ));
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if get_num_threads() == n => Ok(()),
        Err(_) => Err(Error::Config(format!(
            "set_num_threads({n}): the thread pool already runs {} threads; call \
             set_num_threads before the first tensor op, or set RAYON_NUM_THREADS={n}",
            get_num_threads()
        ))),
    }
}
