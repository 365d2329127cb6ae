//! [`DataLoader`]: batches from a [`Dataset`], in sampler order, optionally fetched by worker
//! threads ahead of the training loop.
//!
//! NOTE [ Worker threads and ordered prefetch ]
//! The loader's own thread decides everything random: at the start of an epoch it draws the
//! whole list of index batches from the batch sampler with the generator for (seed, epoch)
//! (see NOTE [ Seeded samplers ] in `sampler.rs`). Workers only read and collate the index
//! batches they are given, so the batches of an epoch are the same for every `num_workers`.
//! The loader keeps at most `prefetch_factor * num_workers` batches in flight; results come
//! back tagged with their position and are handed out in that order, so a slow batch delays
//! the batches behind it but never reorders them, and memory stays bounded.
//!
//! NOTE [ Errors from worker threads ]
//! A panic or an error inside `Dataset::get` (or in collation) is caught where it happens and
//! sent back as an `Err` naming the index, in that batch's place. The training thread receives
//! it from `try_iter` (or as a panic with the same message from `iter`) instead of waiting for
//! a batch that will never come. If every worker is gone the channel disconnects and the wait
//! ends with an error too; `timeout` bounds the wait for one batch. Dropping an iterator tells
//! the workers to stop and joins them: they finish at most the sample they are reading.

use crate::data::collate::{Collate, DefaultCollate};
use crate::data::dataset::{Dataset, panic_message};
use crate::data::sampler::epoch_generator;
use crate::data::sampler::{BatchSampler, RandomSampler, Sampler, SequentialSampler};
use crate::error::{Error, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

type IndexSampler = Box<dyn Sampler<Item = usize>>;
type IndexBatchSampler = Box<dyn Sampler<Item = Vec<usize>>>;

/// Batches of a data set, as PyTorch's `torch.utils.data.DataLoader`.
///
/// ```
/// # use torchlet_core::data::{DataLoader, Dataset};
/// # struct Squares;
/// # impl Dataset for Squares {
/// #     type Item = (f32, i64);
/// #     fn len(&self) -> usize { 10 }
/// #     fn get(&self, i: usize) -> torchlet_core::Result<(f32, i64)> { Ok((i as f32, (i * i) as i64)) }
/// # }
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
/// # Ok::<(), torchlet_core::Error>(())
/// ```
///
/// Every call to [`iter`](Self::iter) (or `for … in &loader`) starts a new epoch with a new
/// order when shuffling; given a `seed`, the batches of epoch k are the same on every run and
/// for every `num_workers`. See NOTE [ Worker threads and ordered prefetch ].
pub struct DataLoader<D: Dataset, C = DefaultCollate> {
    dataset: Arc<D>,
    collate: Arc<C>,
    batch_sampler: IndexBatchSampler,
    num_workers: usize,
    prefetch_factor: usize,
    timeout: Option<Duration>,
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
    num_workers: usize,
    prefetch_factor: Option<usize>,
    timeout: Option<Duration>,
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
            num_workers: 0,
            prefetch_factor: None,
            timeout: None,
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

    /// Seeds every random choice of the loader (see NOTE [ Seeded samplers ]). Without it, a
    /// seed is drawn once when the loader is built.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Worker threads that fetch and collate batches ahead of the loop (default 0: fetch on the
    /// calling thread). Unlike PyTorch these are threads, not processes.
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }

    /// Batches in flight per worker (default 2). Only with `num_workers > 0`.
    pub fn prefetch_factor(mut self, prefetch_factor: usize) -> Self {
        self.prefetch_factor = Some(prefetch_factor);
        self
    }

    /// The longest wait for one batch from the workers before `try_iter` yields an error.
    /// Only with `num_workers > 0`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
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
            num_workers: self.num_workers,
            prefetch_factor: self.prefetch_factor,
            timeout: self.timeout,
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
        if self.num_workers == 0 {
            if let Some(p) = self.prefetch_factor {
                problems.push(format!(
                    "prefetch_factor({p}) needs num_workers > 0; set num_workers or drop it"
                ));
            }
            if self.timeout.is_some() {
                problems.push("timeout needs num_workers > 0; set num_workers or drop it".into());
            }
        }
        if self.prefetch_factor == Some(0) {
            problems.push("prefetch_factor must be at least 1, got 0".to_string());
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
    /// `shuffle`, `sampler` or `drop_last`, `prefetch_factor` or `timeout` without workers.
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
            num_workers: self.num_workers,
            prefetch_factor: self.prefetch_factor.unwrap_or(2),
            timeout: self.timeout,
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
    pub fn iter(&self) -> Iter<D, C> {
        Iter {
            inner: self.try_iter(),
        }
    }

    /// The batches of the next epoch as `Result`s: a failing `get` gives an `Err` naming the
    /// index in that batch's place, and the iterator ends after it.
    pub fn try_iter(&self) -> TryIter<D, C> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let batches = self
            .batch_sampler
            .sample(&mut epoch_generator(self.seed, epoch));
        let source = if self.num_workers == 0 {
            Source::Inline {
                dataset: Arc::clone(&self.dataset),
                collate: Arc::clone(&self.collate),
            }
        } else {
            Source::Workers(WorkerPool::spawn(
                &self.dataset,
                &self.collate,
                self.num_workers,
            ))
        };
        TryIter {
            batches,
            next: 0,
            sent: 0,
            in_flight: self.prefetch_factor * self.num_workers,
            timeout: self.timeout,
            finished: false,
            source,
        }
    }
}

impl<D: Dataset, C: Collate<D::Item>> std::fmt::Debug for DataLoader<D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("dataset_len", &self.dataset.len())
            .field("batches", &self.batch_sampler.len())
            .field("num_workers", &self.num_workers)
            .field("seed", &self.seed)
            .finish()
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> IntoIterator for &DataLoader<D, C> {
    type Item = C::Batch;
    type IntoIter = Iter<D, C>;

    fn into_iter(self) -> Iter<D, C> {
        self.iter()
    }
}

/// Reads one batch; errors and panics become an `Err` that names the indices.
/// See NOTE [ Errors from worker threads ].
fn fetch<D: Dataset, C: Collate<D::Item>>(
    dataset: &D,
    collate: &C,
    indices: &[usize],
) -> Result<C::Batch> {
    match catch_unwind(AssertUnwindSafe(|| collate.fetch(dataset, indices))) {
        Ok(result) => result,
        Err(payload) => Err(Error::Data(format!(
            "batch of indices {}: panicked: {}",
            describe(indices),
            panic_message(payload.as_ref())
        ))),
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

/// Where the batches of an epoch come from.
enum Source<D: Dataset, C: Collate<D::Item>> {
    Inline { dataset: Arc<D>, collate: Arc<C> },
    Workers(WorkerPool<C::Batch>),
}

/// The batches of one epoch, as `Result`s. Dropping it stops and joins the workers.
pub struct TryIter<D: Dataset, C: Collate<D::Item>> {
    batches: Vec<Vec<usize>>,
    /// Position of the next batch to hand out.
    next: usize,
    /// Number of batches given to the workers so far.
    sent: usize,
    in_flight: usize,
    timeout: Option<Duration>,
    finished: bool,
    source: Source<D, C>,
}

impl<D: Dataset + 'static, C: Collate<D::Item>> Iterator for TryIter<D, C> {
    type Item = Result<C::Batch>;

    fn next(&mut self) -> Option<Result<C::Batch>> {
        if self.finished || self.next >= self.batches.len() {
            self.finished = true;
            return None;
        }
        let result = match &mut self.source {
            Source::Inline { dataset, collate } => {
                fetch(dataset.as_ref(), collate.as_ref(), &self.batches[self.next])
            }
            Source::Workers(pool) => {
                while self.sent < self.batches.len() && self.sent < self.next + self.in_flight {
                    pool.submit(self.sent, self.batches[self.sent].clone());
                    self.sent += 1;
                }
                pool.take(self.next, self.timeout)
            }
        };
        self.next += 1;
        if result.is_err() {
            // Nothing after a failed batch: the caller decides whether to start a new epoch.
            self.finished = true;
            if let Source::Workers(pool) = &mut self.source {
                pool.shutdown();
            }
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.finished {
            0
        } else {
            self.batches.len() - self.next
        };
        (0, Some(left))
    }
}

/// The batches of one epoch (what `for … in &loader` walks).
///
/// # Panics
///
/// `next` panics with the error's message when a batch cannot be made (see
/// [`DataLoader::try_iter`] to get it as a `Result`).
pub struct Iter<D: Dataset, C: Collate<D::Item>> {
    inner: TryIter<D, C>,
}

impl<D: Dataset + 'static, C: Collate<D::Item>> Iterator for Iter<D, C> {
    type Item = C::Batch;

    fn next(&mut self) -> Option<C::Batch> {
        match self.inner.next()? {
            Ok(batch) => Some(batch),
            Err(err) => batch_failed(&err),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (_, high) = self.inner.size_hint();
        (high.unwrap_or(0), high)
    }
}

impl<D: Dataset + 'static, C: Collate<D::Item>> ExactSizeIterator for Iter<D, C> {}

#[cold]
#[inline(never)]
fn batch_failed(err: &Error) -> ! {
    panic!("DataLoader: {err} (use loader.try_iter() to handle this as a Result)")
}

/// Threads that fetch the batches they are sent; see NOTE [ Worker threads and ordered prefetch ].
struct WorkerPool<B> {
    tasks: Option<Sender<(usize, Vec<usize>)>>,
    results: Receiver<(usize, Result<B>)>,
    /// Results that arrived before their turn.
    waiting: HashMap<usize, Result<B>>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl<B: Send + 'static> WorkerPool<B> {
    fn spawn<D, C>(dataset: &Arc<D>, collate: &Arc<C>, num_workers: usize) -> Self
    where
        D: Dataset + 'static,
        C: Collate<D::Item, Batch = B>,
    {
        let (task_tx, task_rx) = crossbeam_channel::unbounded::<(usize, Vec<usize>)>();
        let (result_tx, result_rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(num_workers);
        for worker in 0..num_workers {
            let (dataset, collate) = (Arc::clone(dataset), Arc::clone(collate));
            let (tasks, results, stop) = (task_rx.clone(), result_tx.clone(), Arc::clone(&stop));
            let spawned = std::thread::Builder::new()
                .name(format!("torchlet-data-{worker}"))
                .spawn(move || {
                    while let Ok((position, indices)) = tasks.recv() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let batch = fetch(dataset.as_ref(), collate.as_ref(), &indices);
                        if results.send((position, batch)).is_err() {
                            break;
                        }
                    }
                });
            // A thread that cannot start leaves fewer workers; with none, `take` reports the
            // disconnected channel instead of waiting.
            if let Ok(handle) = spawned {
                handles.push(handle);
            }
        }
        WorkerPool {
            tasks: Some(task_tx),
            results: result_rx,
            waiting: HashMap::new(),
            stop,
            handles,
        }
    }

    fn submit(&mut self, position: usize, indices: Vec<usize>) {
        if let Some(tasks) = &self.tasks {
            // A send error means every worker is gone; `take` reports it.
            let _ = tasks.send((position, indices));
        }
    }

    /// The result for batch `position`, waiting for it if needed.
    fn take(&mut self, position: usize, timeout: Option<Duration>) -> Result<B> {
        loop {
            if let Some(result) = self.waiting.remove(&position) {
                return result;
            }
            let received = match timeout {
                Some(t) => self.results.recv_timeout(t),
                None => self
                    .results
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok((p, result)) => {
                    self.waiting.insert(p, result);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::Data(format!(
                        "DataLoader: batch {position} did not arrive within the timeout of \
                         {:?}; raise `timeout` or look for a stuck Dataset::get",
                        timeout.unwrap_or_default()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Data(format!(
                        "DataLoader: the worker threads stopped before batch {position} arrived"
                    )));
                }
            }
        }
    }

    /// Tells the workers to stop after their current sample and waits for them.
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks = None;
        for handle in self.handles.drain(..) {
            // Panics inside `get` are caught in `fetch`; a worker that still panicked has
            // nothing left to report.
            let _ = handle.join();
        }
    }
}

impl<B> Drop for WorkerPool<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sampler::WeightedRandomSampler;
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
                errors.contains("get(17) panicked") && errors.contains("sample 17 is corrupt"),
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
    fn dropping_a_loader_mid_epoch_stops_and_joins_its_workers() {
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
        // Every worker held a clone of the Arc: the count is back to ours alone once they joined.
        assert_eq!(Arc::strong_count(&dataset), 1);
        let after_drop = calls.load(Ordering::SeqCst);
        // At most 3 batches taken + 2 * 4 in flight, far from the 10 000 of a full epoch.
        assert!(after_drop <= 11 * 8, "{after_drop} samples read");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), after_drop);
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
        assert!(err.contains("batch 0 did not arrive"), "{err}");
    }
}
