//! [`DataLoader`]: batches from a [`Dataset`], in sampler order, optionally fetched by worker
//! threads ahead of the training loop.
//!
//! The loader's own thread decides everything random: at the start of an epoch it draws the
//! whole list of index batches from the batch sampler with the generator for (seed, epoch)
//! (see NOTE [ Seeded samplers ] in [`sampler`](crate::data::sampler#note--seeded-samplers-)).
//! Workers only read and collate the index
//! batches they are given, so the batches of an epoch are the same for every `num_workers`.
//! Workers, prefetching, timeouts and errors are the engine's, shared with `StreamLoader`:
//! see NOTE [ One engine for map-style and iterable data ] and the notes after it in
//! [`data`](crate::data#note--one-engine-for-map-style-and-iterable-data-).

use crate::data::collate::{Collate, DefaultCollate};
use crate::data::dataset::Dataset;
use crate::data::engine::{self, Job, Plan, WorkerOptions};
use crate::data::sampler::epoch_generator;
use crate::data::sampler::{BatchSampler, RandomSampler, Sampler, SequentialSampler};
use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::data::engine::{Iter, MAX_NUM_WORKERS, TryIter};

type IndexSampler = Box<dyn Sampler<Item = usize>>;
type IndexBatchSampler = Box<dyn Sampler<Item = Vec<usize>>>;

/// Batches of a data set, as PyTorch's `torch.utils.data.DataLoader`.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{DataLoader, Dataset};
///
/// /// Item `i` is `(i, i²)`.
/// struct Squares;
///
/// impl Dataset for Squares {
///     type Item = (f32, i64);
///     fn len(&self) -> usize {
///         10
///     }
///     fn get(&self, i: usize) -> torchlet::Result<(f32, i64)> {
///         Ok((i as f32, (i * i) as i64))
///     }
/// }
///
/// let loader = DataLoader::builder(Squares)
///     .batch_size(4)
///     .shuffle(true)
///     .seed(0)
///     .num_workers(2)
///     .build()?;
/// assert_eq!(loader.len(), 3); // 4 + 4 + 2
/// for (xb, yb) in &loader {
///     assert_eq!(xb.shape()[0], yb.shape()[0]);
/// }
/// # Ok::<(), torchlet::Error>(())
/// ```
///
/// Every call to [`iter`](Self::iter) (or `for … in &loader`) starts a new epoch with a new
/// order when shuffling; given a `seed`, the batches of epoch k are the same on every run and
/// for every `num_workers`. See NOTE [ One engine for map-style and iterable data ] in
/// [`data`](crate::data#note--one-engine-for-map-style-and-iterable-data-).
pub struct DataLoader<D: Dataset, C = DefaultCollate> {
    dataset: Arc<D>,
    collate: Arc<C>,
    batch_sampler: IndexBatchSampler,
    workers: WorkerOptions,
    seed: u64,
    epoch: AtomicU64,
}

/// The options of a [`DataLoader`]; [`build`](Self::build) checks them together.
pub struct DataLoaderBuilder<D: Dataset, C = DefaultCollate> {
    dataset: Arc<D>,
    collate: C,
    batch_size: Option<usize>,
    shuffle: Option<bool>,
    sampler: Option<IndexSampler>,
    batch_sampler: Option<IndexBatchSampler>,
    drop_last: Option<bool>,
    seed: Option<u64>,
    workers: WorkerOptions,
}

impl<D: Dataset> DataLoader<D> {
    /// Starts a loader over `dataset` (a data set, or an `Arc` of one to share it) with
    /// PyTorch's defaults: `batch_size` 1, no shuffling, `num_workers` 0, the default collation.
    pub fn builder(dataset: D) -> DataLoaderBuilder<D> {
        DataLoaderBuilder {
            dataset: Arc::new(dataset),
            collate: DefaultCollate,
            batch_size: None,
            shuffle: None,
            sampler: None,
            batch_sampler: None,
            drop_last: None,
            seed: None,
            workers: WorkerOptions::default(),
        }
    }
}

impl<D: Dataset, C> DataLoaderBuilder<D, C> {
    /// Samples per batch (default 1). Conflicts with `batch_sampler`.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// A new random order every epoch. Conflicts with `sampler` and `batch_sampler`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = Some(shuffle);
        self
    }

    /// The order of indices (e.g. a `WeightedRandomSampler`). Conflicts with `shuffle(true)`.
    pub fn sampler(mut self, sampler: impl Sampler<Item = usize> + 'static) -> Self {
        self.sampler = Some(Box::new(sampler));
        self
    }

    /// Whole index batches; conflicts with `batch_size`, `shuffle`, `sampler` and `drop_last`.
    pub fn batch_sampler(
        mut self,
        batch_sampler: impl Sampler<Item = Vec<usize>> + 'static,
    ) -> Self {
        self.batch_sampler = Some(Box::new(batch_sampler));
        self
    }

    /// Drop a last batch smaller than `batch_size` (default false).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = Some(drop_last);
        self
    }

    /// Seeds every random choice of the loader (see NOTE [ Seeded samplers ] in
    /// [`sampler`](crate::data::sampler#note--seeded-samplers-)). Without it, a seed is drawn
    /// once when the loader is built.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Worker threads that fetch and collate batches ahead of the loop (default 0: fetch on the
    /// calling thread), at most [`MAX_NUM_WORKERS`]. Unlike PyTorch these are threads, not
    /// processes; a panic or a stack overflow in one is reported as an `Err` naming it (see
    /// NOTE [ Stack overflow in a worker ] in [`data`](crate::data#note--stack-overflow-in-a-worker-)
    /// for what a thread allows).
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.workers.num_workers = num_workers;
        self
    }

    /// Batches in flight per worker (default 2). Only with `num_workers > 0`.
    pub fn prefetch_factor(mut self, prefetch_factor: usize) -> Self {
        self.workers.prefetch_factor = Some(prefetch_factor);
        self
    }

    /// The longest wait for one batch (default: no limit, as PyTorch's `timeout=0`). When it
    /// runs out, `try_iter` yields an error naming the batch and the worker on it, and the
    /// epoch ends; busy workers are abandoned, never waited for. Only with `num_workers > 0`.
    /// See NOTE [ Timeouts and abandoned workers ] in
    /// [`data`](crate::data#note--timeouts-and-abandoned-workers-).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.workers.timeout = Some(timeout);
        self
    }

    /// The stack size of each worker thread, in bytes (default: Rust's, 2 MiB unless
    /// `RUST_MIN_STACK` is set), between 64 KiB and 1 GiB. Raise it for a data set whose `get`
    /// recurses deeply. Only with `num_workers > 0`.
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.workers.stack_size = Some(bytes);
        self
    }

    /// Replaces the default collation, e.g. with a closure
    /// `|items: Vec<Item>| -> Result<Batch> { … }`.
    pub fn collate_fn<C2: Collate<D::Item>>(self, collate_fn: C2) -> DataLoaderBuilder<D, C2> {
        DataLoaderBuilder {
            dataset: self.dataset,
            collate: collate_fn,
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            sampler: self.sampler,
            batch_sampler: self.batch_sampler,
            drop_last: self.drop_last,
            seed: self.seed,
            workers: self.workers,
        }
    }

    /// Every option that does not fit with another, collected so that one error lists them all.
    fn conflicts(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.batch_size == Some(0) {
            problems.push("batch_size must be at least 1, got 0".to_string());
        }
        if self.sampler.is_some() && self.shuffle == Some(true) {
            problems.push(
                "`sampler` and `shuffle(true)` both set the order; drop `shuffle` (use \
                 RandomSampler for a random order)"
                    .to_string(),
            );
        }
        if self.batch_sampler.is_some() {
            let mut clash = Vec::new();
            if self.batch_size.is_some() {
                clash.push("`batch_size`");
            }
            if self.shuffle == Some(true) {
                clash.push("`shuffle`");
            }
            if self.sampler.is_some() {
                clash.push("`sampler`");
            }
            if self.drop_last == Some(true) {
                clash.push("`drop_last`");
            }
            if !clash.is_empty() {
                problems.push(format!(
                    "`batch_sampler` makes the batches, so it cannot be combined with {}; set \
                     them on the batch sampler instead",
                    clash.join(", ")
                ));
            }
        }
        self.workers.problems(
            MAX_NUM_WORKERS,
            "worker threads share the cores with the training loop; use at most a few per core",
            &mut problems,
        );
        let len = self.dataset.len();
        let default_sampler = self.sampler.is_none() && self.batch_sampler.is_none();
        if self.shuffle == Some(true) && default_sampler && len == 0 {
            // PyTorch's RandomSampler refuses an empty data set with this message.
            problems.push(
                "shuffle(true) draws a RandomSampler over the data set, which is empty: \
                 num_samples should be a positive integer value, but got num_samples=0; check \
                 the data set"
                    .to_string(),
            );
        }
        problems
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> DataLoaderBuilder<D, C> {
    /// The loader.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming every option that conflicts with another or is out of range:
    /// `batch_size` 0, `sampler` with `shuffle(true)`, `batch_sampler` with `batch_size`,
    /// `shuffle`, `sampler` or `drop_last`, `prefetch_factor`, `timeout` or
    /// `worker_stack_size` without workers, `num_workers` above [`MAX_NUM_WORKERS`], a zero
    /// `timeout` or `prefetch_factor`, a stack size outside 64 KiB..=1 GiB, and `shuffle(true)`
    /// over an empty data set (PyTorch's `RandomSampler` refuses it). Without shuffling, an
    /// empty data set gives a loader of zero batches, as in PyTorch.
    pub fn build(self) -> Result<DataLoader<D, C>> {
        let problems = self.conflicts();
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "DataLoader: {}",
                problems.join("; ")
            )));
        }
        let len = self.dataset.len();
        let batch_sampler: IndexBatchSampler = match self.batch_sampler {
            Some(b) => b,
            None => {
                let sampler: IndexSampler = match (self.sampler, self.shuffle) {
                    (Some(s), _) => s,
                    (None, Some(true)) => Box::new(RandomSampler::new(len)),
                    (None, _) => Box::new(SequentialSampler::new(len)),
                };
                Box::new(BatchSampler::new(
                    sampler,
                    self.batch_size.unwrap_or(1),
                    self.drop_last.unwrap_or(false),
                )?)
            }
        };
        Ok(DataLoader {
            dataset: self.dataset,
            collate: Arc::new(self.collate),
            batch_sampler,
            workers: self.workers,
            seed: self.seed.unwrap_or_else(crate::random::entropy_seed),
            epoch: AtomicU64::new(0),
        })
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> DataLoader<D, C> {
    /// The number of batches per epoch (PyTorch's `len(loader)`).
    pub fn len(&self) -> usize {
        self.batch_sampler.len()
    }

    /// Whether an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data set.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The seed every epoch's order derives from (given, or drawn at `build`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The epoch the next `iter` will run (0 for a new loader).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Makes the next `iter` run epoch `epoch`, e.g. to resume a run with the order it had.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// The batches of the next epoch.
    ///
    /// # Panics
    ///
    /// The returned iterator panics, with the message of the error, when a batch cannot be
    /// made; use [`try_iter`](Self::try_iter) to receive it as an `Err`.
    pub fn iter(&self) -> Iter<C::Batch> {
        self.try_iter().panicking()
    }

    /// The batches of the next epoch as `Result`s: a failing `get` gives an `Err` naming the
    /// index (and the worker) in that batch's place, and the iterator ends after it.
    pub fn try_iter(&self) -> TryIter<C::Batch> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let batches = self
            .batch_sampler
            .sample(&mut epoch_generator(self.seed, epoch));
        let job = MapJob {
            dataset: Arc::clone(&self.dataset),
            collate: Arc::clone(&self.collate),
        };
        engine::start("DataLoader", MapPlan { batches }, &self.workers, || {
            job.clone()
        })
    }
}

impl<D: Dataset, C: Collate<D::Item>> std::fmt::Debug for DataLoader<D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("dataset_len", &self.dataset.len())
            .field("batches", &self.batch_sampler.len())
            .field("num_workers", &self.workers.num_workers)
            .field("seed", &self.seed)
            .finish()
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> IntoIterator for &DataLoader<D, C> {
    type Item = C::Batch;
    type IntoIter = Iter<C::Batch>;

    fn into_iter(self) -> Iter<C::Batch> {
        self.iter()
    }
}

/// A map-style epoch: the index batches the sampler drew.
struct MapPlan {
    batches: Vec<Vec<usize>>,
}

impl Plan for MapPlan {
    type Task = Vec<usize>;

    fn task(&self, position: usize) -> Option<Vec<usize>> {
        self.batches.get(position).cloned()
    }

    fn describe(&self, position: usize) -> String {
        match self.batches.get(position) {
            Some(indices) => format!("batch {position} (indices {})", describe(indices)),
            None => format!("batch {position}"),
        }
    }

    fn len(&self) -> Option<usize> {
        Some(self.batches.len())
    }
}

/// `[3, 17, 5]`, or the first few and a count for a long batch.
fn describe(indices: &[usize]) -> String {
    if indices.len() <= 8 {
        format!("{indices:?}")
    } else {
        format!("{:?} and {} more", &indices[..8], indices.len() - 8)
    }
}

/// Reads and collates index batches (on a worker, or on the calling thread).
struct MapJob<D, C> {
    dataset: Arc<D>,
    collate: Arc<C>,
}

// Manual impl: the `Arc`s clone for every D and C, a derive would demand `D: Clone`.
impl<D, C> Clone for MapJob<D, C> {
    fn clone(&self) -> Self {
        MapJob {
            dataset: Arc::clone(&self.dataset),
            collate: Arc::clone(&self.collate),
        }
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> Job for MapJob<D, C> {
    type Task = Vec<usize>;
    type Batch = C::Batch;

    fn run(&mut self, indices: Vec<usize>) -> Result<Option<C::Batch>> {
        self.collate
            .fetch(self.dataset.as_ref(), &indices)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::engine::panic_message;
    use crate::data::sampler::WeightedRandomSampler;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// Item i is i; counts calls to `get` and panics at `panic_at`.
    struct Numbers {
        len: usize,
        panic_at: Option<usize>,
        calls: Arc<AtomicUsize>,
        delay: Duration,
    }

    fn numbers(len: usize) -> Numbers {
        Numbers {
            len,
            panic_at: None,
            calls: Arc::new(AtomicUsize::new(0)),
            delay: Duration::ZERO,
        }
    }

    impl Dataset for Numbers {
        type Item = i64;
        fn len(&self) -> usize {
            self.len
        }
        fn get(&self, index: usize) -> Result<i64> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            if Some(index) == self.panic_at {
                panic!("sample {index} is corrupt");
            }
            Ok(index as i64)
        }
    }

    /// Batches as plain vectors, so these tests need nothing from Tensor.
    fn as_vec(items: Vec<i64>) -> Result<Vec<i64>> {
        Ok(items)
    }

    fn epochs(workers: usize, n: usize) -> Vec<Vec<Vec<i64>>> {
        let loader = DataLoader::builder(numbers(103))
            .batch_size(10)
            .shuffle(true)
            .seed(42)
            .num_workers(workers)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        (0..n).map(|_| loader.iter().collect()).collect()
    }

    /// Runs `f` on a thread and fails the test if it takes longer than `secs`.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("the loader hung")
    }

    #[test]
    fn same_batches_for_every_num_workers() {
        let reference = epochs(0, 3);
        for workers in [1, 2, 4] {
            assert_eq!(epochs(workers, 3), reference, "num_workers = {workers}");
        }
    }

    #[test]
    fn every_epoch_reshuffles_and_covers_the_data() {
        let e = epochs(2, 2);
        assert_ne!(e[0], e[1]);
        for epoch in &e {
            assert_eq!(epoch.len(), 11);
            assert_eq!(epoch[10].len(), 3);
            let mut all: Vec<i64> = epoch.concat();
            all.sort_unstable();
            assert_eq!(all, (0..103).collect::<Vec<_>>());
        }
    }

    #[test]
    fn set_epoch_replays_an_epoch() {
        let loader = DataLoader::builder(numbers(20))
            .batch_size(4)
            .shuffle(true)
            .seed(3)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let first: Vec<_> = loader.iter().collect();
        loader.set_epoch(0);
        assert_eq!(loader.iter().collect::<Vec<_>>(), first);
        assert_eq!(loader.epoch(), 1);
    }

    #[test]
    fn len_counts_batches() {
        let build = |drop_last| {
            DataLoader::builder(numbers(10))
                .batch_size(3)
                .drop_last(drop_last)
                .collate_fn(as_vec)
                .build()
                .unwrap()
        };
        assert_eq!(build(false).len(), 4);
        assert_eq!(build(true).len(), 3);
        assert_eq!(build(true).iter().count(), 3);
        assert_eq!(build(false).iter().len(), 4);
    }

    #[test]
    fn without_shuffle_the_order_is_sequential() {
        let loader = DataLoader::builder(numbers(5))
            .batch_size(2)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let got: Vec<Vec<i64>> = loader.iter().collect();
        assert_eq!(got, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn a_sampler_and_a_batch_sampler_drive_the_order() {
        let weights = vec![0.0, 0.0, 1.0, 0.0];
        let loader = DataLoader::builder(numbers(4))
            .batch_size(3)
            .sampler(WeightedRandomSampler::new(weights, 6, true).unwrap())
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let got: Vec<Vec<i64>> = loader.iter().collect();
        assert_eq!(got, vec![vec![2, 2, 2], vec![2, 2, 2]]);
        let batches = BatchSampler::new(SequentialSampler::new(4), 4, false).unwrap();
        let loader = DataLoader::builder(numbers(4))
            .batch_sampler(batches)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        assert_eq!(loader.iter().collect::<Vec<_>>(), vec![vec![0, 1, 2, 3]]);
    }

    fn config_error<C: Collate<i64>>(b: DataLoaderBuilder<Numbers, C>) -> String {
        match b.build() {
            Ok(_) => panic!("expected a configuration error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn conflicting_options_are_errors_that_name_them() {
        let err = config_error(DataLoader::builder(numbers(4)).batch_size(0));
        assert!(
            err.contains("batch_size must be at least 1, got 0"),
            "{err}"
        );
        let err = config_error(
            DataLoader::builder(numbers(4))
                .sampler(SequentialSampler::new(4))
                .shuffle(true),
        );
        assert!(
            err.contains("`sampler`") && err.contains("`shuffle(true)`"),
            "{err}"
        );
        let batches = BatchSampler::new(SequentialSampler::new(4), 2, false).unwrap();
        let err = config_error(
            DataLoader::builder(numbers(4))
                .batch_sampler(batches)
                .batch_size(2)
                .drop_last(true),
        );
        assert!(
            err.contains("`batch_sampler`")
                && err.contains("`batch_size`")
                && err.contains("`drop_last`"),
            "{err}"
        );
        let err = config_error(DataLoader::builder(numbers(4)).prefetch_factor(4));
        assert!(
            err.contains("prefetch_factor(4) needs num_workers > 0"),
            "{err}"
        );
        let err = config_error(
            DataLoader::builder(numbers(4))
                .batch_size(0)
                .timeout(Duration::from_secs(1)),
        );
        assert!(
            err.contains("batch_size") && err.contains("timeout"),
            "{err}"
        );
    }

    #[test]
    fn a_panicking_get_is_an_error_naming_the_index() {
        for workers in [0, 1, 3] {
            let errors = within(20, move || {
                let mut data = numbers(50);
                data.panic_at = Some(17);
                let loader = DataLoader::builder(data)
                    .batch_size(4)
                    .num_workers(workers)
                    .collate_fn(as_vec)
                    .build()
                    .unwrap();
                let results: Vec<Result<Vec<i64>>> = loader.try_iter().collect();
                // Batches 0..=3 arrive, batch 4 (indices 16..20) is the error, then nothing.
                assert_eq!(results.len(), 5);
                assert!(results[..4].iter().all(|r| r.is_ok()));
                results[4].as_ref().unwrap_err().to_string()
            });
            assert!(
                errors.contains("batch 4 (indices [16, 17, 18, 19])")
                    && errors.contains("dataset.get(17) panicked: sample 17 is corrupt"),
                "num_workers = {workers}: {errors}"
            );
            // As PyTorch names the worker process that raised.
            assert_eq!(
                errors.contains("DataLoader: worker "),
                workers > 0,
                "num_workers = {workers}: {errors}"
            );
        }
    }

    #[test]
    fn for_loop_over_a_failing_loader_panics_with_the_index() {
        let message = within(20, || {
            let mut data = numbers(8);
            data.panic_at = Some(5);
            let loader = DataLoader::builder(data)
                .batch_size(2)
                .num_workers(2)
                .collate_fn(as_vec)
                .build()
                .unwrap();
            let caught = catch_unwind(AssertUnwindSafe(|| for _batch in &loader {}));
            panic_message(caught.unwrap_err().as_ref())
        });
        assert!(message.contains("get(5) panicked"), "{message}");
    }

    #[test]
    fn dropping_a_loader_mid_epoch_stops_its_workers_without_waiting_for_them() {
        let mut data = numbers(10_000);
        data.delay = Duration::from_millis(1);
        let calls = Arc::clone(&data.calls);
        let dataset = Arc::new(data);
        within(30, {
            let dataset = Arc::clone(&dataset);
            move || {
                let loader = DataLoader::builder(dataset)
                    .batch_size(8)
                    .num_workers(4)
                    .collate_fn(as_vec)
                    .build()
                    .unwrap();
                let mut it = loader.iter();
                for _ in 0..3 {
                    it.next();
                }
                drop(it);
                drop(loader);
            }
        });
        // The workers exit after the sample they were reading, dropping their clones of the Arc.
        let start = std::time::Instant::now();
        while Arc::strong_count(&dataset) > 1 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "workers still running"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let after_drop = calls.load(Ordering::SeqCst);
        // At most 3 batches taken + 2 * 4 in flight + the 4 being read, far from 10 000.
        assert!(after_drop <= 15 * 8, "{after_drop} samples read");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), after_drop);
    }

    #[test]
    fn a_finished_epoch_joins_its_workers() {
        let loader = DataLoader::builder(numbers(100))
            .batch_size(8)
            .num_workers(3)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        for _ in 0..3 {
            assert_eq!(loader.iter().count(), 13);
            // Each worker held a clone of the loader's Arc; joined, they hold none.
            assert_eq!(Arc::strong_count(&loader.dataset), 1);
        }
    }

    #[test]
    fn timeout_reports_a_stuck_batch() {
        let mut data = numbers(4);
        data.delay = Duration::from_millis(500);
        let loader = DataLoader::builder(data)
            .num_workers(1)
            .timeout(Duration::from_millis(20))
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let err = loader.try_iter().next().unwrap().unwrap_err().to_string();
        // The worker may not have started it yet on a loaded machine; usually it is on it.
        assert!(
            err.contains("batch 0 (indices [0]) did not arrive within the timeout of 20ms"),
            "{err}"
        );
    }
}
