//! Streaming data: [`IterableDataset`] (samples read in order, for data that does not fit a
//! map, as PyTorch's `IterableDataset`) and [`StreamLoader`], which batches it.
//!
//! Unlike PyTorch, where each worker process replays the whole stream unless the data set
//! shards it by hand (a classic source of duplicated samples), the stream is read by one
//! worker thread: samples are never duplicated, and the order is the stream's order.
//! Random order comes from a seeded shuffle buffer, filled on that thread. The worker, the
//! prefetching, `timeout` and the errors are the engine's, shared with `DataLoader` (see
//! NOTE [ One engine for map-style and iterable data ] in
//! [`data`](crate::data#note--one-engine-for-map-style-and-iterable-data-)).

use crate::data::collate::{Collate, DefaultCollate};
use crate::data::engine::{self, Activity, Job, Plan, TryIter, WorkerOptions, doing};
use crate::data::sampler::epoch_generator;
use crate::error::{Error, Result};
use crate::random::Generator;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The samples of one pass over a stream.
pub type Stream<T> = Box<dyn Iterator<Item = Result<T>> + Send>;

/// A data set read front to back: lines of a file too large to index, records from a socket,
/// samples generated on the fly.
pub trait IterableDataset: Send + Sync + 'static {
    /// One sample.
    type Item: Send + 'static;

    /// A fresh pass over the samples (called once per epoch).
    fn iter(&self) -> Stream<Self::Item>;
}

/// An [`IterableDataset`] whose passes come from a closure; see [`from_fn`].
pub struct FromFn<F>(F);

/// An [`IterableDataset`] from a closure that starts a pass, e.g.
/// `from_fn(|| Box::new((0..1000).map(Ok)))`.
pub fn from_fn<T, F>(start: F) -> FromFn<F>
where
    F: Fn() -> Stream<T> + Send + Sync + 'static,
{
    FromFn(start)
}

impl<T: Send + 'static, F> IterableDataset for FromFn<F>
where
    F: Fn() -> Stream<T> + Send + Sync + 'static,
{
    type Item = T;

    fn iter(&self) -> Stream<T> {
        (self.0)()
    }
}

/// Batches of an [`IterableDataset`], made on a worker thread ahead of the loop.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::data::{from_fn, StreamLoader};
///
/// let squares = from_fn(|| Box::new((0..10i64).map(|i| Ok(i * i))));
/// let loader = StreamLoader::builder(squares).batch_size(4).build()?;
/// let sizes: Vec<usize> = loader.iter().map(|b| b.shape()[0]).collect();
/// assert_eq!(sizes, vec![4, 4, 2]);
/// # Ok::<(), torchlet::Error>(())
/// ```
pub struct StreamLoader<S, C = DefaultCollate> {
    source: Arc<S>,
    collate: Arc<C>,
    batch_size: usize,
    drop_last: bool,
    shuffle_buffer: usize,
    workers: WorkerOptions,
    seed: u64,
    epoch: AtomicU64,
}

/// The options of a [`StreamLoader`].
pub struct StreamLoaderBuilder<S, C = DefaultCollate> {
    source: S,
    collate: C,
    batch_size: usize,
    drop_last: bool,
    shuffle_buffer: usize,
    workers: WorkerOptions,
    seed: Option<u64>,
}

/// The batches of one pass of a [`StreamLoader`], as `Result`s (the engine's [`TryIter`]).
pub type StreamIter<B> = TryIter<B>;

impl<S: IterableDataset> StreamLoader<S> {
    /// Starts a loader over `source`: `batch_size` 1, stream order, read on one worker thread
    /// with 2 batches prefetched.
    pub fn builder(source: S) -> StreamLoaderBuilder<S> {
        StreamLoaderBuilder {
            source,
            collate: DefaultCollate,
            batch_size: 1,
            drop_last: false,
            shuffle_buffer: 0,
            workers: WorkerOptions {
                num_workers: 1,
                ..WorkerOptions::default()
            },
            seed: None,
        }
    }
}

impl<S: IterableDataset, C> StreamLoaderBuilder<S, C> {
    /// Samples per batch (default 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Drop a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Shuffle within a buffer of this many samples (0, the default, keeps stream order):
    /// each sample out is a random pick among the next `size` of the stream.
    pub fn shuffle_buffer(mut self, size: usize) -> Self {
        self.shuffle_buffer = size;
        self
    }

    /// Batches made ahead of the loop (default 2): the engine's `prefetch_factor` for the one
    /// worker.
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.workers.prefetch_factor = Some(batches);
        self
    }

    /// 1 (the default) reads the stream on a worker thread; 0 reads it on the calling thread
    /// when a batch is asked for. More workers would each need a shard of the stream, which
    /// an [`IterableDataset`] does not describe, so more is an error.
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.workers.num_workers = num_workers;
        self
    }

    /// The longest wait for one batch (default: no limit); as [`DataLoader`]'s `timeout`.
    ///
    /// [`DataLoader`]: crate::data::DataLoader
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.workers.timeout = Some(timeout);
        self
    }

    /// The worker thread's stack size in bytes; as [`DataLoader`]'s `worker_stack_size`.
    ///
    /// [`DataLoader`]: crate::data::DataLoader
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.workers.stack_size = Some(bytes);
        self
    }

    /// Seeds the shuffle buffer; each epoch derives its own generator from (seed, epoch).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Replaces the default collation with a closure `|items: Vec<Item>| -> Result<Batch>`.
    pub fn collate_fn<C2: Collate<S::Item>>(self, collate_fn: C2) -> StreamLoaderBuilder<S, C2> {
        StreamLoaderBuilder {
            source: self.source,
            collate: collate_fn,
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            shuffle_buffer: self.shuffle_buffer,
            workers: self.workers,
            seed: self.seed,
        }
    }
}

impl<S: IterableDataset, C: Collate<S::Item>> StreamLoaderBuilder<S, C> {
    /// The loader.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming every bad option: `batch_size` or `prefetch` 0, `num_workers`
    /// above 1, and the worker options [`DataLoader`](crate::data::DataLoader) refuses.
    pub fn build(self) -> Result<StreamLoader<S, C>> {
        let mut problems = Vec::new();
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1, got 0".to_string());
        }
        if self.workers.prefetch_factor == Some(0) {
            problems.push("prefetch must be at least 1, got 0".to_string());
        }
        let workers = WorkerOptions {
            // `prefetch` is this loader's name for it, checked above.
            prefetch_factor: None,
            ..self.workers.clone()
        };
        workers.problems(
            1,
            "one thread reads the stream, so that no sample is read twice",
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "StreamLoader: {}",
                problems.join("; ")
            )));
        }
        Ok(StreamLoader {
            source: Arc::new(self.source),
            collate: Arc::new(self.collate),
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            shuffle_buffer: self.shuffle_buffer,
            workers: self.workers,
            seed: self.seed.unwrap_or_else(crate::random::entropy_seed),
            epoch: AtomicU64::new(0),
        })
    }
}

impl<S: IterableDataset, C: Collate<S::Item>> StreamLoader<S, C> {
    /// The batches of the next pass as `Result`s; the iterator ends after an error.
    pub fn try_iter(&self) -> StreamIter<C::Batch> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let mut job = Some(StreamJob {
            source: Arc::clone(&self.source),
            collate: Arc::clone(&self.collate),
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            shuffle_buffer: self.shuffle_buffer,
            generator: epoch_generator(self.seed, epoch),
            stream: None,
            buffer: Vec::with_capacity(self.shuffle_buffer + 1),
            position: 0,
            exhausted: false,
            done: false,
        });
        // At most one worker (checked at `build`), so the job is asked for once.
        engine::start("StreamLoader", Tickets, &self.workers, || {
            job.take().expect("StreamLoader has at most one worker")
        })
    }

    /// The batches of the next pass.
    ///
    /// # Panics
    ///
    /// The iterator panics with the error's message when a batch cannot be made; use
    /// [`try_iter`](Self::try_iter) to receive it as an `Err`.
    pub fn iter(&self) -> impl Iterator<Item = C::Batch> + use<S, C> {
        self.try_iter().panicking()
    }
}

/// The tasks of a pass: "the next batch", until the stream says there is none.
struct Tickets;

impl Plan for Tickets {
    type Task = ();

    fn task(&self, _position: usize) -> Option<()> {
        Some(())
    }

    fn describe(&self, position: usize) -> String {
        format!("batch {position} of the stream")
    }

    fn len(&self) -> Option<usize> {
        None
    }
}

/// The one reader of a pass: the stream, the shuffle buffer and the generator.
struct StreamJob<S: IterableDataset, C> {
    source: Arc<S>,
    collate: Arc<C>,
    batch_size: usize,
    drop_last: bool,
    shuffle_buffer: usize,
    generator: Generator,
    stream: Option<Stream<S::Item>>,
    buffer: Vec<S::Item>,
    /// Items read from the stream so far.
    position: usize,
    exhausted: bool,
    /// No batch left (the stream ended, or failed).
    done: bool,
}

impl<S: IterableDataset, C: Collate<S::Item>> StreamJob<S, C> {
    /// Reads until the shuffle buffer holds more than `shuffle_buffer` items or the stream ends.
    fn fill(&mut self) -> Result<()> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                doing(Activity::StreamStart);
                self.stream.insert(self.source.iter())
            }
        };
        while !self.exhausted && self.buffer.len() <= self.shuffle_buffer {
            doing(Activity::StreamItem(self.position));
            match stream.next() {
                Some(Ok(item)) => self.buffer.push(item),
                Some(Err(err)) => {
                    return Err(Error::Data(format!(
                        "stream item {} failed: {err}",
                        self.position
                    )));
                }
                None => self.exhausted = true,
            }
            self.position += 1;
        }
        Ok(())
    }
}

impl<S: IterableDataset, C: Collate<S::Item>> Job for StreamJob<S, C> {
    type Task = ();
    type Batch = C::Batch;

    fn run(&mut self, (): ()) -> Result<Option<C::Batch>> {
        if self.done {
            return Ok(None);
        }
        // Marked done up front: an error or a panic below leaves no later batch.
        self.done = true;
        let mut batch = Vec::with_capacity(self.batch_size);
        while batch.len() < self.batch_size {
            self.fill()?;
            if self.buffer.is_empty() {
                break;
            }
            let pick = self.generator.random_range(0..self.buffer.len());
            batch.push(self.buffer.swap_remove(pick));
        }
        if batch.is_empty() || (batch.len() < self.batch_size && self.drop_last) {
            return Ok(None);
        }
        self.done = false;
        doing(Activity::Collate);
        self.collate.collate(batch).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: i64) -> FromFn<impl Fn() -> Stream<i64> + Send + Sync + 'static> {
        from_fn(move || Box::new((0..n).map(Ok)))
    }

    fn as_vec(items: Vec<i64>) -> Result<Vec<i64>> {
        Ok(items)
    }

    #[test]
    fn batches_follow_the_stream_and_respect_drop_last() {
        let loader = StreamLoader::builder(numbers(7))
            .batch_size(3)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let got: Vec<Vec<i64>> = loader.iter().collect();
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        let loader = StreamLoader::builder(numbers(7))
            .batch_size(3)
            .drop_last(true)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        assert_eq!(loader.iter().count(), 2);
    }

    #[test]
    fn shuffle_buffer_is_seeded_and_reshuffles_each_epoch() {
        let build = || {
            StreamLoader::builder(numbers(50))
                .batch_size(50)
                .shuffle_buffer(10)
                .seed(5)
                .collate_fn(as_vec)
                .build()
                .unwrap()
        };
        let (a, b) = (build(), build());
        let first: Vec<i64> = a.iter().flatten().collect();
        assert_eq!(first, b.iter().flatten().collect::<Vec<_>>());
        assert_ne!(first, a.iter().flatten().collect::<Vec<_>>());
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(first, sorted);
    }

    #[test]
    fn a_panicking_stream_is_an_error_naming_the_item() {
        let source = from_fn(|| {
            Box::new((0..10i64).map(|i| {
                assert!(i != 4, "bad record");
                Ok(i)
            }))
        });
        let loader = StreamLoader::builder(source)
            .batch_size(2)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let results: Vec<Result<Vec<i64>>> = loader.try_iter().collect();
        assert_eq!(results.len(), 3);
        let err = results[2].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("worker 0 failed on batch 2 of the stream")
                && err.contains("stream item 4 panicked: bad record"),
            "{err}"
        );
    }

    #[test]
    fn dropping_mid_pass_stops_the_reader() {
        let loader = StreamLoader::builder(from_fn(|| Box::new((0..).map(Ok))))
            .batch_size(4)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let mut it = loader.try_iter();
        assert_eq!(it.next().unwrap().unwrap(), vec![0, 1, 2, 3]);
        drop(it);
        // Not joined (see NOTE [ Timeouts and abandoned workers ]): the reader exits after the
        // batch it is making.
        let start = std::time::Instant::now();
        while Arc::strong_count(&loader.source) > 1 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the reader still runs"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_stream_can_be_read_on_the_calling_thread() {
        let loader = StreamLoader::builder(numbers(7))
            .batch_size(3)
            .num_workers(0)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let got: Vec<Vec<i64>> = loader.iter().collect();
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    }

    #[test]
    fn a_stuck_stream_times_out() {
        let source = from_fn(|| {
            Box::new((0..10i64).map(|i| {
                if i == 5 {
                    std::thread::sleep(Duration::from_secs(3));
                }
                Ok(i)
            }))
        });
        let loader = StreamLoader::builder(source)
            .batch_size(2)
            .timeout(Duration::from_millis(200))
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let start = std::time::Instant::now();
        let results: Vec<Result<Vec<i64>>> = loader.try_iter().collect();
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(results.len(), 3);
        let err = results[2].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("batch 2 of the stream did not arrive"),
            "{err}"
        );
    }

    #[test]
    fn zero_sizes_are_errors_naming_them() {
        let err = StreamLoader::builder(numbers(1))
            .batch_size(0)
            .prefetch(0)
            .collate_fn(as_vec)
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("batch_size") && err.contains("prefetch"),
            "{err}"
        );
        let err = StreamLoader::builder(numbers(1))
            .num_workers(2)
            .collate_fn(as_vec)
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("num_workers must be at most 1, got 2"),
            "{err}"
        );
    }
}
