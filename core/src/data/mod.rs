//! Data sets and loaders, as PyTorch's `torch.utils.data`: [`Dataset`], [`TensorDataset`],
//! [`Subset`], [`ConcatDataset`], [`random_split`], [`DistributedSampler`], the streaming
//! [`IterableDataset`] and [`StreamLoader`], samplers, collation and [`DataLoader`]; readers
//! for MNIST ([`Mnist`], [`IdxArray`]) and CSV.
//!
//! Both loaders run on one engine (`engine.rs`): its worker pool, prefetching, timeout and
//! error reporting serve map-style and iterable data alike.

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
