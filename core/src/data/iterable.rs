//! Streaming data: [`IterableDataset`] (samples read in order, for data that does not fit a
//! map, as PyTorch's `IterableDataset`) and [`StreamLoader`], which batches it.
//!
//! Unlike PyTorch, where each worker process replays the whole stream unless the data set
//! shards it by hand (a classic source of duplicated samples), the stream is read by one
//! background thread: samples are never duplicated, and the order is the stream's order.
//! Random order comes from a seeded shuffle buffer, filled on that thread.

use crate::data::collate::{Collate, DefaultCollate};
use crate::data::dataset::panic_message;
use crate::data::sampler::epoch_generator;
use crate::error::{Error, Result};
use crossbeam_channel::Receiver;
use rand::Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

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

/// Batches of an [`IterableDataset`], made on a background thread ahead of the loop.
///
/// ```
/// use torchlet_core::data::{from_fn, StreamLoader};
///
/// let squares = from_fn(|| Box::new((0..10i64).map(|i| Ok(i * i))));
/// let loader = StreamLoader::builder(squares).batch_size(4).build()?;
/// let sizes: Vec<usize> = loader.iter().map(|b| b.shape()[0]).collect();
/// assert_eq!(sizes, vec![4, 4, 2]);
/// # Ok::<(), torchlet_core::Error>(())
/// ```
pub struct StreamLoader<S, C = DefaultCollate> {
    source: Arc<S>,
    collate: Arc<C>,
    batch_size: usize,
    drop_last: bool,
    shuffle_buffer: usize,
    prefetch: usize,
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
    prefetch: usize,
    seed: Option<u64>,
}

impl<S: IterableDataset> StreamLoader<S> {
    /// Starts a loader over `source`: `batch_size` 1, stream order, 2 batches prefetched.
    pub fn builder(source: S) -> StreamLoaderBuilder<S> {
        StreamLoaderBuilder {
            source,
            collate: DefaultCollate,
            batch_size: 1,
            drop_last: false,
            shuffle_buffer: 0,
            prefetch: 2,
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

    /// Batches made ahead of the loop (default 2).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
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
            prefetch: self.prefetch,
            seed: self.seed,
        }
    }
}

impl<S: IterableDataset, C: Collate<S::Item>> StreamLoaderBuilder<S, C> {
    /// The loader.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `batch_size` or `prefetch` is 0, naming them.
    pub fn build(self) -> Result<StreamLoader<S, C>> {
        let mut problems = Vec::new();
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1, got 0");
        }
        if self.prefetch == 0 {
            problems.push("prefetch must be at least 1, got 0");
        }
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
            prefetch: self.prefetch,
            seed: self.seed.unwrap_or_else(crate::random::entropy_seed),
            epoch: AtomicU64::new(0),
        })
    }
}

impl<S: IterableDataset, C: Collate<S::Item>> StreamLoader<S, C> {
    /// The batches of the next pass as `Result`s; the iterator ends after an error.
    pub fn try_iter(&self) -> StreamIter<C::Batch> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(self.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let producer = Producer {
            source: Arc::clone(&self.source),
            collate: Arc::clone(&self.collate),
            batch_size: self.batch_size,
            drop_last: self.drop_last,
            shuffle_buffer: self.shuffle_buffer,
            generator_seed: (self.seed, epoch),
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name("torchlet-stream".to_string())
            .spawn(move || producer.run(&tx))
            .ok();
        StreamIter {
            batches: Some(rx),
            stop,
            handle,
            finished: false,
        }
    }

    /// The batches of the next pass.
    ///
    /// # Panics
    ///
    /// The iterator panics with the error's message when a batch cannot be made; use
    /// [`try_iter`](Self::try_iter) to receive it as an `Err`.
    pub fn iter(&self) -> impl Iterator<Item = C::Batch> + use<S, C> {
        self.try_iter().map(|batch| match batch {
            Ok(batch) => batch,
            Err(err) => panic!("StreamLoader: {err} (use loader.try_iter() to handle it)"),
        })
    }
}

/// What the background thread owns.
struct Producer<S, C> {
    source: Arc<S>,
    collate: Arc<C>,
    batch_size: usize,
    drop_last: bool,
    shuffle_buffer: usize,
    generator_seed: (u64, u64),
    stop: Arc<AtomicBool>,
}

impl<S: IterableDataset, C: Collate<S::Item>> Producer<S, C> {
    fn run(self, tx: &crossbeam_channel::Sender<Result<C::Batch>>) {
        let mut generator = epoch_generator(self.generator_seed.0, self.generator_seed.1);
        let mut stream = match catch_unwind(AssertUnwindSafe(|| self.source.iter())) {
            Ok(stream) => stream,
            Err(p) => {
                let _ = tx.send(Err(panicked("starting the stream", p.as_ref())));
                return;
            }
        };
        let mut buffer: Vec<S::Item> = Vec::with_capacity(self.shuffle_buffer);
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut position = 0usize;
        let mut exhausted = false;
        while !self.stop.load(Ordering::Relaxed) {
            // Next sample of the stream, through the shuffle buffer when there is one.
            while !exhausted && buffer.len() <= self.shuffle_buffer {
                match catch_unwind(AssertUnwindSafe(|| stream.next())) {
                    Ok(Some(Ok(item))) => buffer.push(item),
                    Ok(Some(Err(err))) => {
                        let message = format!("stream item {position} failed: {err}");
                        let _ = tx.send(Err(Error::Data(message)));
                        return;
                    }
                    Ok(None) => exhausted = true,
                    Err(p) => {
                        let what = format!("stream item {position}");
                        let _ = tx.send(Err(panicked(&what, p.as_ref())));
                        return;
                    }
                }
                position += 1;
            }
            let Some(pick) = (!buffer.is_empty()).then(|| generator.random_range(0..buffer.len()))
            else {
                break;
            };
            batch.push(buffer.swap_remove(pick));
            if batch.len() == self.batch_size && !self.send_batch(&mut batch, tx) {
                return;
            }
        }
        if !batch.is_empty() && !self.drop_last && !self.stop.load(Ordering::Relaxed) {
            self.send_batch(&mut batch, tx);
        }
    }

    /// Collates and sends `batch`, leaving it empty; false when the receiver is gone.
    fn send_batch(
        &self,
        batch: &mut Vec<S::Item>,
        tx: &crossbeam_channel::Sender<Result<C::Batch>>,
    ) -> bool {
        let items = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        let result = catch_unwind(AssertUnwindSafe(|| self.collate.collate(items)))
            .unwrap_or_else(|p| Err(panicked("collate", p.as_ref())));
        tx.send(result).is_ok()
    }
}

fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    Error::Data(format!("{what} panicked: {}", panic_message(payload)))
}

/// The batches of one pass of a [`StreamLoader`]. Dropping it stops and joins the background
/// thread.
pub struct StreamIter<B> {
    /// `None` once dropped, which makes the producer's next send fail and end it.
    batches: Option<Receiver<Result<B>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    finished: bool,
}

impl<B> Iterator for StreamIter<B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Result<B>> {
        if self.finished {
            return None;
        }
        // A disconnected channel is the end of the stream: the producer sends every batch,
        // and any error, before it exits.
        let result = self.batches.as_ref()?.recv().ok();
        self.finished = result.as_ref().is_none_or(|r| r.is_err());
        result
    }
}

impl<B> Drop for StreamIter<B> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnecting wakes a producer blocked on a full channel: its send fails and it
        // returns. One inside `stream.next()` returns after that sample.
        self.batches = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
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
        assert!(err.contains("stream item 4 panicked: bad record"), "{err}");
    }

    #[test]
    fn dropping_mid_pass_joins_the_producer() {
        let loader = StreamLoader::builder(from_fn(|| Box::new((0..).map(Ok))))
            .batch_size(4)
            .collate_fn(as_vec)
            .build()
            .unwrap();
        let mut it = loader.try_iter();
        assert_eq!(it.next().unwrap().unwrap(), vec![0, 1, 2, 3]);
        drop(it);
        assert_eq!(Arc::strong_count(&loader.source), 1);
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
    }
}
