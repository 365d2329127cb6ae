//! [`DistributedSampler`]: each rank's share of a data set, as PyTorch's
//! `torch.utils.data.distributed.DistributedSampler`.

use crate::data::sampler::{Sampler, epoch_generator};
use crate::error::{Error, Result};
use crate::random::Generator;
use rand::seq::SliceRandom;
use std::sync::atomic::{AtomicU64, Ordering};

/// The indices of one rank's share of a data set of `len` samples, a new shuffle each epoch.
/// See NOTE [ Distributed sampling ] below.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{DataLoader, DistributedSampler, Sampler, TensorDataset, epoch_generator};
/// use torchlet::Tensor;
/// use std::sync::Arc;
///
/// // Rank 1 of 3 over 10 samples: ceil(10 / 3) = 4 indices, the order padded to 12.
/// let sampler = Arc::new(DistributedSampler::new(10, 3, 1)?.shuffle(false));
/// assert_eq!(sampler.sample(&mut epoch_generator(0, 0)), [1, 4, 7, 0]);
///
/// let dataset = TensorDataset::new(Tensor::arange(10))?;
/// let loader = DataLoader::builder(dataset).batch_size(2).sampler(Arc::clone(&sampler)).build()?;
/// for epoch in 0..2 {
///     sampler.set_epoch(epoch);
///     assert_eq!(loader.iter().count(), 2);
/// }
/// # Ok::<(), torchlet::Error>(())
/// ```
///
/// # NOTE [ Distributed sampling ]
/// Every rank draws the same order of the whole data set, pads it by repeating its start
/// until it divides into `num_replicas` equal shares (or, with `drop_last`, cuts the tail
/// instead), and keeps every `num_replicas`-th index from position `rank`. The shares are
/// disjoint and together cover the order, so an epoch visits each index exactly once across
/// the ranks when the length divides evenly. The order must be the same on every rank, so it
/// derives from the sampler's own `seed` and the epoch given to
/// [`set_epoch`](DistributedSampler::set_epoch), never from the generator the loader hands
/// in: each rank's loader may have been built with another seed. As in PyTorch, call
/// `set_epoch(epoch)` before each epoch, or every epoch repeats the order of epoch 0.
///
/// Rank r's k-th batch of `b` samples is positions `(k·b + j)·num_replicas + r` of the order,
/// `j < b`, so the batches of all ranks at step k together are positions
/// `k·b·num_replicas .. (k+1)·b·num_replicas`: the k-th global batch of one process reading
/// the same order with batch size `b·num_replicas`.
#[derive(Debug)]
pub struct DistributedSampler {
    len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    epoch: AtomicU64,
}

impl DistributedSampler {
    /// Rank `rank`'s share of `0..len` among `num_replicas` ranks, with PyTorch's defaults:
    /// shuffled, seed 0, padded rather than dropping the tail. Pass `dataset.len()`,
    /// `distributed::world_size()` and `distributed::rank()`.
    ///
    /// # Errors
    /// [`Error::Config`] if `num_replicas` is 0 or `rank` is not below it.
    pub fn new(len: usize, num_replicas: usize, rank: usize) -> Result<Self> {
        if num_replicas == 0 {
            return Err(Error::Config(
                "DistributedSampler: num_replicas must be at least 1, got 0; pass the world size"
                    .into(),
            ));
        }
        if rank >= num_replicas {
            return Err(Error::Config(format!(
                "DistributedSampler: invalid rank {rank}, rank should be in the interval \
                 [0, {}]; pass this process's rank",
                num_replicas - 1
            )));
        }
        Ok(DistributedSampler {
            len,
            num_replicas,
            rank,
            shuffle: true,
            seed: 0,
            drop_last: false,
            epoch: AtomicU64::new(0),
        })
    }

    /// Shuffle each epoch (default `true`); without, the order is `0..len`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the shuffle (default 0). It must be the same on every rank.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Drop the tail of the order so that it divides evenly (default `false`: pad it by
    /// repeating indices from its start, so some samples are seen twice in an epoch).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the epoch the next order derives from (PyTorch's `set_epoch`); call it before
    /// each epoch with the same value on every rank.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The epoch set by [`set_epoch`](Self::set_epoch) (0 for a new sampler).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The number of ranks.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// This sampler's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Indices per rank and epoch: `ceil(len / num_replicas)`, or with `drop_last`
    /// `floor(len / num_replicas)` (PyTorch's `num_samples`).
    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.len / self.num_replicas
        } else {
            self.len.div_ceil(self.num_replicas)
        }
    }

    /// The whole order of the current epoch, padded or cut to `num_samples · num_replicas`.
    fn global_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            order.shuffle(&mut epoch_generator(self.seed, self.epoch()));
        }
        let total = self.num_samples() * self.num_replicas;
        if order.is_empty() {
            return order;
        }
        // Padding can exceed the length itself (more ranks than samples): cycle the order.
        let mut i = 0;
        while order.len() < total {
            order.push(order[i]);
            i += 1;
        }
        order.truncate(total);
        order
    }
}

impl Sampler for DistributedSampler {
    type Item = usize;

    fn len(&self) -> usize {
        self.num_samples()
    }

    /// This rank's share; `_generator` is not used (see NOTE [ Distributed sampling ]).
    fn sample(&self, _generator: &mut Generator) -> Vec<usize> {
        self.global_order()
            .into_iter()
            .skip(self.rank)
            .step_by(self.num_replicas)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(
        len: usize,
        replicas: usize,
        f: impl Fn(DistributedSampler) -> DistributedSampler,
    ) -> Vec<Vec<usize>> {
        (0..replicas)
            .map(|rank| {
                let s = f(DistributedSampler::new(len, replicas, rank).unwrap());
                let out = s.sample(&mut epoch_generator(99, 0));
                assert_eq!(out.len(), s.len());
                out
            })
            .collect()
    }

    #[test]
    fn an_even_split_visits_every_index_exactly_once() {
        for replicas in [1, 2, 3, 4, 6] {
            let parts = shares(24, replicas, |s| s.seed(5));
            let mut all = parts.concat();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..24).collect::<Vec<_>>(),
                "num_replicas = {replicas}"
            );
        }
    }

    #[test]
    fn without_shuffle_ranks_take_strided_positions() {
        let parts = shares(8, 2, |s| s.shuffle(false));
        assert_eq!(parts, [vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
    }

    #[test]
    fn an_uneven_split_pads_by_repeating_the_start() {
        // 10 over 4: 3 each, the order 0..10 padded with 0, 1 to 12 (PyTorch's example).
        let parts = shares(10, 4, |s| s.shuffle(false));
        assert_eq!(
            parts,
            [vec![0, 4, 8], vec![1, 5, 9], vec![2, 6, 0], vec![3, 7, 1]]
        );
    }

    #[test]
    fn padding_cycles_when_there_are_more_ranks_than_samples() {
        let parts = shares(2, 5, |s| s.shuffle(false));
        assert_eq!(parts, [vec![0], vec![1], vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn drop_last_cuts_the_tail_instead() {
        let parts = shares(10, 4, |s| s.shuffle(false).drop_last(true));
        assert_eq!(parts, [vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]);
        let shuffled = shares(10, 4, |s| s.drop_last(true));
        let mut all = shuffled.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8, "no index twice");
    }

    #[test]
    fn the_order_depends_on_seed_and_epoch_but_not_on_the_loader_generator() {
        let s = DistributedSampler::new(50, 2, 0).unwrap();
        let epoch0 = s.sample(&mut epoch_generator(1, 0));
        assert_eq!(epoch0, s.sample(&mut epoch_generator(2, 7)));
        s.set_epoch(1);
        let epoch1 = s.sample(&mut epoch_generator(1, 0));
        assert_ne!(epoch0, epoch1);
        s.set_epoch(0);
        assert_eq!(
            epoch0,
            s.sample(&mut epoch_generator(1, 0)),
            "set_epoch replays"
        );
        let other_seed = DistributedSampler::new(50, 2, 0).unwrap().seed(1);
        assert_ne!(epoch0, other_seed.sample(&mut epoch_generator(1, 0)));
    }

    #[test]
    fn each_epoch_is_a_new_partition_of_the_whole_set() {
        let samplers: Vec<_> = (0..3)
            .map(|r| DistributedSampler::new(30, 3, r).unwrap().seed(7))
            .collect();
        let mut seen = Vec::new();
        for epoch in 0..3 {
            let mut all = Vec::new();
            for s in &samplers {
                s.set_epoch(epoch);
                all.extend(s.sample(&mut epoch_generator(0, 0)));
            }
            seen.push(all.clone());
            all.sort_unstable();
            assert_eq!(all, (0..30).collect::<Vec<_>>(), "epoch {epoch}");
        }
        assert_ne!(seen[0], seen[1]);
    }

    #[test]
    fn bad_rank_or_world_size_is_refused() {
        let err = DistributedSampler::new(10, 2, 2).unwrap_err().to_string();
        assert!(
            err.contains("invalid rank 2") && err.contains("[0, 1]"),
            "{err}"
        );
        let err = DistributedSampler::new(10, 0, 0).unwrap_err().to_string();
        assert!(err.contains("num_replicas must be at least 1"), "{err}");
    }

    #[test]
    fn works_with_a_loader_and_any_number_of_workers() {
        use crate::data::{DataLoader, TensorDataset};
        use crate::tensor::Tensor;
        use std::sync::Arc;
        let batches = |workers: usize| {
            let sampler = Arc::new(DistributedSampler::new(20, 2, 1).unwrap().seed(3));
            let ds = TensorDataset::new(Tensor::arange(20)).unwrap();
            let loader = DataLoader::builder(ds)
                .batch_size(3)
                .sampler(Arc::clone(&sampler))
                .num_workers(workers)
                .build()
                .unwrap();
            (0..2)
                .map(|epoch| {
                    sampler.set_epoch(epoch);
                    loader.iter().map(|x| x.to_vec::<i64>()).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let reference = batches(0);
        assert_eq!(reference[0].len(), 4, "10 indices in batches of 3");
        let flat: Vec<i64> = reference[0].concat();
        let expected = DistributedSampler::new(20, 2, 1).unwrap().seed(3);
        let expected: Vec<i64> = expected
            .sample(&mut epoch_generator(0, 0))
            .into_iter()
            .map(|i| i as i64)
            .collect();
        assert_eq!(flat, expected);
        for workers in [1, 2, 3] {
            assert_eq!(batches(workers), reference, "num_workers = {workers}");
        }
    }
}
