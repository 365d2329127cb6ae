//! Samplers: the order in which a loader visits a data set's indices, and how it groups them
//! into batches.
//!
//! # NOTE [ Seeded samplers ]
//! Unlike PyTorch, a sampler holds no random generator of its own. Each epoch, the
//! [`DataLoader`](crate::data::DataLoader) derives one generator from (seed, epoch) with
//! [`epoch_generator`] on its own thread and hands it to `sample`. The order of an epoch is then
//! a function of the seed and the epoch number alone: it does not depend on `num_workers`, on
//! how many epochs were cut short, or on a generator shared with model initialisation (the
//! PyTorch traps where worker processes copy one RNG state, or where a sampler's generator
//! advances differently when an epoch is abandoned).

use crate::error::{Error, Result};
use crate::random::Generator;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A source of indices (`Item = usize`) or of index batches (`Item = Vec<usize>`), as
/// PyTorch's `Sampler[int]` and `Sampler[List[int]]`. Implement it to write your own.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::random::Generator;
/// use torchlet::data::{epoch_generator, Sampler};
///
/// /// Every even index, then every odd one.
/// struct EvensFirst(usize);
/// impl Sampler for EvensFirst {
///     type Item = usize;
///     fn len(&self) -> usize { self.0 }
///     fn sample(&self, _generator: &mut Generator) -> Vec<usize> {
///         (0..self.0).step_by(2).chain((1..self.0).step_by(2)).collect()
///     }
/// }
/// assert_eq!(EvensFirst(5).sample(&mut epoch_generator(0, 0)), vec![0, 2, 4, 1, 3]);
/// ```
pub trait Sampler: Send + Sync {
    /// `usize` for a sampler of indices, `Vec<usize>` for a sampler of batches.
    type Item;

    /// The number of items one epoch yields.
    fn len(&self) -> usize;

    /// Whether an epoch yields nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items of one epoch. Random samplers draw only from `generator`
    /// (see NOTE [ Seeded samplers ]).
    fn sample(&self, generator: &mut Generator) -> Vec<Self::Item>;
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    type Item = S::Item;

    fn len(&self) -> usize {
        (**self).len()
    }

    fn sample(&self, generator: &mut Generator) -> Vec<Self::Item> {
        (**self).sample(generator)
    }
}

/// A sampler shared with the program, so that it can still reach it once the loader holds
/// it (e.g. to call [`DistributedSampler::set_epoch`](crate::data::DistributedSampler)).
impl<S: Sampler + ?Sized> Sampler for std::sync::Arc<S> {
    type Item = S::Item;

    fn len(&self) -> usize {
        (**self).len()
    }

    fn sample(&self, generator: &mut Generator) -> Vec<Self::Item> {
        (**self).sample(generator)
    }
}

/// The generator for epoch `epoch` of a run seeded with `seed`. See NOTE [ Seeded samplers ].
pub fn epoch_generator(seed: u64, epoch: u64) -> Generator {
    // splitmix64 of the pair, so that nearby (seed, epoch) pairs give unrelated streams.
    let mut z = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    Generator::seed_from_u64(z ^ (z >> 31))
}

/// `0, 1, …, len-1`, every epoch (PyTorch's `SequentialSampler`).
#[derive(Clone, Debug)]
pub struct SequentialSampler {
    len: usize,
}

impl SequentialSampler {
    /// Indices of a data set of `len` samples; pass `dataset.len()`.
    pub fn new(len: usize) -> Self {
        SequentialSampler { len }
    }
}

impl Sampler for SequentialSampler {
    type Item = usize;

    fn len(&self) -> usize {
        self.len
    }

    fn sample(&self, _generator: &mut Generator) -> Vec<usize> {
        (0..self.len).collect()
    }
}

/// Random indices of a data set of `len` samples (PyTorch's `RandomSampler`): a fresh
/// permutation each epoch, or with `replacement(true)` independent uniform draws.
///
/// `num_samples` defaults to `len`. Without replacement and with `num_samples > len`, the
/// epoch is several permutations back to back, cut to `num_samples`, as in PyTorch.
#[derive(Clone, Debug)]
pub struct RandomSampler {
    len: usize,
    replacement: bool,
    num_samples: Option<usize>,
}

impl RandomSampler {
    /// A permutation of `0..len` each epoch; pass `dataset.len()`.
    pub fn new(len: usize) -> Self {
        RandomSampler {
            len,
            replacement: false,
            num_samples: None,
        }
    }

    /// Draw with replacement (indices may repeat within an epoch).
    pub fn replacement(mut self, replacement: bool) -> Self {
        self.replacement = replacement;
        self
    }

    /// The number of indices per epoch (default: the data set's length).
    pub fn num_samples(mut self, num_samples: usize) -> Self {
        self.num_samples = Some(num_samples);
        self
    }
}

impl Sampler for RandomSampler {
    type Item = usize;

    /// `num_samples`, or 0 for an empty data set (there is nothing to draw from).
    fn len(&self) -> usize {
        if self.len == 0 {
            0
        } else {
            self.num_samples.unwrap_or(self.len)
        }
    }

    fn sample(&self, generator: &mut Generator) -> Vec<usize> {
        let n = self.len();
        if self.replacement {
            return (0..n)
                .map(|_| generator.random_range(0..self.len))
                .collect();
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut perm: Vec<usize> = (0..self.len).collect();
            perm.shuffle(generator);
            let take = (n - out.len()).min(perm.len());
            out.extend_from_slice(&perm[..take]);
        }
        out
    }
}

/// A fresh random order of the given indices each epoch (PyTorch's `SubsetRandomSampler`),
/// e.g. to draw a validation split from one data set.
#[derive(Clone, Debug)]
pub struct SubsetRandomSampler {
    indices: Vec<usize>,
}

impl SubsetRandomSampler {
    /// Permutations of `indices`.
    pub fn new(indices: Vec<usize>) -> Self {
        SubsetRandomSampler { indices }
    }
}

impl Sampler for SubsetRandomSampler {
    type Item = usize;

    fn len(&self) -> usize {
        self.indices.len()
    }

    fn sample(&self, generator: &mut Generator) -> Vec<usize> {
        let mut out = self.indices.clone();
        out.shuffle(generator);
        out
    }
}

/// `num_samples` indices drawn with probability proportional to `weights[i]` (PyTorch's
/// `WeightedRandomSampler`), e.g. to balance classes.
#[derive(Clone, Debug)]
pub struct WeightedRandomSampler {
    /// Running sums of the weights, for drawing with replacement by binary search.
    cumulative: Vec<f64>,
    weights: Vec<f64>,
    num_samples: usize,
    replacement: bool,
}

impl WeightedRandomSampler {
    /// One weight per data set index (they need not add up to 1).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a weight is negative or not finite, all weights are zero, or,
    /// without replacement, `num_samples` exceeds the number of non-zero weights.
    pub fn new(weights: Vec<f64>, num_samples: usize, replacement: bool) -> Result<Self> {
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(Error::Config(format!(
                "WeightedRandomSampler: weights[{i}] = {w}; weights must be finite and >= 0"
            )));
        }
        let nonzero = weights.iter().filter(|&&w| w > 0.0).count();
        if nonzero == 0 && num_samples > 0 {
            return Err(Error::Config(format!(
                "WeightedRandomSampler: all {} weights are zero; give some index a positive \
                 weight",
                weights.len()
            )));
        }
        if !replacement && num_samples > nonzero {
            return Err(Error::Config(format!(
                "WeightedRandomSampler: num_samples = {num_samples} without replacement, but \
                 only {nonzero} weights are positive; lower num_samples or set replacement"
            )));
        }
        let cumulative = weights
            .iter()
            .scan(0.0, |total, w| {
                *total += w;
                Some(*total)
            })
            .collect();
        Ok(WeightedRandomSampler {
            cumulative,
            weights,
            num_samples,
            replacement,
        })
    }
}

impl Sampler for WeightedRandomSampler {
    type Item = usize;

    fn len(&self) -> usize {
        self.num_samples
    }

    fn sample(&self, generator: &mut Generator) -> Vec<usize> {
        if self.replacement {
            let total = self.cumulative.last().copied().unwrap_or(0.0);
            let last = self.weights.len().saturating_sub(1);
            return (0..self.num_samples)
                .map(|_| {
                    let u = generator.random::<f64>() * total;
                    // The first index whose running sum exceeds u; `min` guards rounding at the top.
                    self.cumulative.partition_point(|&c| c <= u).min(last)
                })
                .collect();
        }
        // Without replacement: Efraimidis–Spirakis keys ln(u)/w; the largest `num_samples` keys
        // are distributed as successive draws proportional to the remaining weights, which is
        // what torch.multinomial(replacement=False) does.
        let mut keyed: Vec<(f64, usize)> = self
            .weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0.0)
            .map(|(i, w)| {
                let u: f64 = generator.random_range(f64::MIN_POSITIVE..1.0);
                (u.ln() / w, i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed
            .into_iter()
            .take(self.num_samples)
            .map(|(_, i)| i)
            .collect()
    }
}

/// Groups another sampler's indices into batches of `batch_size` (PyTorch's `BatchSampler`);
/// the last batch is smaller unless `drop_last`.
pub struct BatchSampler {
    sampler: Box<dyn Sampler<Item = usize>>,
    batch_size: usize,
    drop_last: bool,
}

impl BatchSampler {
    /// Batches of `batch_size` indices from `sampler`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `batch_size` is 0.
    pub fn new(
        sampler: impl Sampler<Item = usize> + 'static,
        batch_size: usize,
        drop_last: bool,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Config(
                "BatchSampler: batch_size must be at least 1, got 0".to_string(),
            ));
        }
        Ok(BatchSampler {
            sampler: Box::new(sampler),
            batch_size,
            drop_last,
        })
    }

    /// The number of indices per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether a last, smaller batch is dropped.
    pub fn drop_last(&self) -> bool {
        self.drop_last
    }
}

impl std::fmt::Debug for BatchSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSampler")
            .field("len", &self.sampler.len())
            .field("batch_size", &self.batch_size)
            .field("drop_last", &self.drop_last)
            .finish()
    }
}

impl Sampler for BatchSampler {
    type Item = Vec<usize>;

    fn len(&self) -> usize {
        let n = self.sampler.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn sample(&self, generator: &mut Generator) -> Vec<Vec<usize>> {
        let indices = self.sampler.sample(generator);
        let mut batches: Vec<Vec<usize>> = indices
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_(epoch: u64) -> Generator {
        epoch_generator(7, epoch)
    }

    #[test]
    fn sequential_sampler_counts_up() {
        assert_eq!(
            SequentialSampler::new(4).sample(&mut gen_(0)),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn random_sampler_permutes_and_depends_on_seed_and_epoch() {
        let s = RandomSampler::new(50);
        let a = s.sample(&mut gen_(0));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, s.sample(&mut gen_(0)));
        assert_ne!(a, s.sample(&mut gen_(1)));
        assert_ne!(a, s.sample(&mut epoch_generator(8, 0)));
    }

    #[test]
    fn random_sampler_num_samples_with_and_without_replacement() {
        let s = RandomSampler::new(3).num_samples(7);
        let v = s.sample(&mut gen_(0));
        assert_eq!(v.len(), 7);
        // Two whole permutations then one index: each of 0..3 appears 2 or 3 times.
        for i in 0..3 {
            let c = v.iter().filter(|&&x| x == i).count();
            assert!((2..=3).contains(&c), "{v:?}");
        }
        let r = RandomSampler::new(3).replacement(true).num_samples(100);
        let v = r.sample(&mut gen_(0));
        assert_eq!((r.len(), v.len()), (100, 100));
        assert!(v.iter().all(|&i| i < 3));
        assert_eq!(RandomSampler::new(0).replacement(true).len(), 0);
    }

    #[test]
    fn subset_random_sampler_permutes_its_indices() {
        let mut v = SubsetRandomSampler::new(vec![10, 20, 30]).sample(&mut gen_(0));
        v.sort_unstable();
        assert_eq!(v, vec![10, 20, 30]);
    }

    #[test]
    fn weighted_sampler_follows_the_weights() {
        let s = WeightedRandomSampler::new(vec![0.0, 1.0, 3.0], 4000, true).unwrap();
        let v = s.sample(&mut gen_(0));
        let count = |i| v.iter().filter(|&&x| x == i).count();
        assert_eq!(count(0), 0);
        // Expected 1000 and 3000; 5 standard deviations is about ±140.
        assert!((860..1140).contains(&count(1)), "{}", count(1));
        let s = WeightedRandomSampler::new(vec![1.0, 0.0, 2.0, 5.0], 3, false).unwrap();
        let mut v = s.sample(&mut gen_(0));
        v.sort_unstable();
        assert_eq!(v, vec![0, 2, 3]);
    }

    #[test]
    fn weighted_sampler_rejects_bad_weights() {
        let err = WeightedRandomSampler::new(vec![1.0, -1.0], 1, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights[1] = -1"), "{err}");
        assert!(WeightedRandomSampler::new(vec![0.0, 0.0], 1, true).is_err());
        let err = WeightedRandomSampler::new(vec![1.0, 0.0], 2, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_samples = 2"), "{err}");
    }

    #[test]
    fn batch_sampler_chunks_and_drops_last() {
        let b = BatchSampler::new(SequentialSampler::new(7), 3, false).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.sample(&mut gen_(0)),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
        let b = BatchSampler::new(SequentialSampler::new(7), 3, true).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.sample(&mut gen_(0)).len(), 2);
        let err = BatchSampler::new(SequentialSampler::new(7), 0, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch_size must be at least 1, got 0"),
            "{err}"
        );
    }
}
