//! Data sets and loaders, as PyTorch's `torch.utils.data`: [`Dataset`], [`TensorDataset`],
//! [`Subset`], [`ConcatDataset`], [`random_split`], the streaming [`IterableDataset`], samplers,
//! collation and [`DataLoader`]; readers for MNIST ([`Mnist`]) and CSV ([`Csv`]).

pub mod collate;
pub mod idx;
pub mod dataloader;
pub mod dataset;
pub mod sampler;

pub use collate::{Collate, DefaultCollate, Stack};
pub use dataloader::{DataLoader, DataLoaderBuilder, Iter, TryIter};
pub use idx::IdxArray;
pub use dataset::{ConcatDataset, Dataset, Lengths, Subset, random_split};
pub use sampler::{
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler,
    WeightedRandomSampler, epoch_generator,
};
