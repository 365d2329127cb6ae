//! Data sets and loaders, as PyTorch's `torch.utils.data`: [`Dataset`], [`TensorDataset`],
//! [`Subset`], [`ConcatDataset`], [`random_split`], [`DistributedSampler`], the streaming
//! [`IterableDataset`] and [`StreamLoader`], samplers, collation and [`DataLoader`]; readers
//! for MNIST ([`Mnist`], [`IdxArray`]) and CSV.
//!
//! Both loaders run on one engine: its worker pool, prefetching, timeout and error reporting
//! serve map-style and iterable data alike, as the notes below explain.
//!
//! # NOTE [ One engine for map-style and iterable data ]
//! A loader turns *tasks* into batches. For a map-style data set a task is one batch of indices,
//! drawn by the sampler on the loader's thread (see NOTE [ Seeded samplers ] in [`sampler`]);
//! for an iterable data set it is a ticket for "the next batch of the stream", served by the one
//! worker that owns the stream. A `Job` does tasks; a `Plan` says which tasks an epoch has.
//! The engine runs the job on the calling thread (`num_workers(0)`) or on worker threads, keeps
//! at most `prefetch_factor * num_workers` tasks in flight, and hands results out in task order:
//! a slow batch delays the ones behind it but never reorders them, memory stays bounded, and the
//! batches of an epoch are the same for every `num_workers`.
//!
//! # NOTE [ Errors from worker threads ]
//! Every task runs inside the one `catch_unwind` of the loaders (`run_task`, below). The code it
//! calls records what it is doing (`doing(Activity::Get(17))`), so a panic becomes an `Err` that
//! says `dataset.get(17) panicked: <message>`; the engine adds the worker and the batch
//! (`DataLoader: worker 1 failed on batch 4 (indices [16, 17, 18, 19]): …`), as PyTorch names
//! the worker process that raised. The error takes that batch's place and the iterator ends
//! after it; `iter()` turns it into a panic with the same message. Built with `panic = "abort"`
//! nothing can be caught, as everywhere in Rust.
//!
//! # NOTE [ Timeouts and abandoned workers ]
//! With `timeout(t)`, no call to `next` waits longer than `t` (plus the scheduler's latency) for
//! a batch, whatever the workers do. When the wait runs out, when a batch fails, or when the
//! iterator is dropped before the end, the iterator sets the pool's stop flag, disconnects its
//! channels and returns at once: it never joins a worker that may be busy, so neither `next`
//! nor `drop` blocks on one. A worker exits after the sample it is reading (its next receive or
//! send fails). A worker stuck for good is abandoned: its thread, and what it holds (its clone
//! of the data set's `Arc`), stay until the process exits. Only at the natural end of an epoch,
//! when every task has been answered and each worker waits between tasks, are the workers joined.
//!
//! # NOTE [ Stack overflow in a worker ]
//! Rust turns a stack overflow on any thread into an abort of the whole process: the guard page
//! below the stack faults, and std's SIGSEGV handler prints "has overflowed its stack" and
//! aborts. On Linux the engine puts its own handler in front of std's (`guard.rs`): a fault in
//! the guard page of a *loader worker* marks that worker and parks its thread forever inside the
//! handler (on the thread's alternate signal stack); every other fault goes on to the handler
//! that was there before, unchanged. Parking is sound because a thread that never runs again is
//! a schedule the program must already tolerate: nothing is unwound, resumed or freed. The
//! waiting iterator sees the mark within `POLL` and returns an `Err` naming the worker, the
//! batch and the stack size (`worker_stack_size` raises it). What the parked thread held stays
//! held: its stacks, and any lock it had taken (in the data set, or inside the allocator, where
//! other threads would then wait on it; `timeout` bounds such a wait for the loader). An
//! `abort()` (a panic while panicking, an allocation failure, `std::process::abort`) still ends
//! the process: it asks for the whole process to end, and only worker processes could outlive
//! it, which would need every data set, closure and batch to cross a process boundary (PyTorch
//! forks and pickles them; Rust's `fork` is unsound in a threaded program). Other platforms get
//! no guard: an overflow there aborts as in any Rust program.

pub mod collate;
pub mod csv;
pub mod dataloader;
pub mod dataset;
mod distributed_sampler;
pub mod idx;
pub mod iterable;
pub mod mnist;
pub mod sampler;
pub mod stack;
pub mod tensor_dataset;

mod engine;
mod guard;

pub use collate::{Collate, DefaultCollate, Stack};
pub use csv::{CsvOptions, CsvTable};
pub use dataloader::MAX_NUM_WORKERS;
pub use dataloader::{DataLoader, DataLoaderBuilder, Iter, TryIter};
pub use dataset::{ConcatDataset, Dataset, Lengths, Subset, random_split};
pub use distributed_sampler::DistributedSampler;
pub use idx::{IdxArray, IdxOptions};
pub use iterable::{
    FromFn, IterableDataset, Stream, StreamIter, StreamLoader, StreamLoaderBuilder, from_fn,
};
pub use mnist::{MNIST_MEAN, MNIST_STD, Mnist};
pub use sampler::{
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
    WeightedRandomSampler, epoch_generator,
};
pub use tensor_dataset::{TensorDataset, TensorTuple};
