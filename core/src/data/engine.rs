//! The engine behind [`DataLoader`](crate::data::DataLoader) and
//! [`StreamLoader`](crate::data::StreamLoader): the worker options they share, the pool of
//! worker threads, and the iterator over one epoch's batches.
//!
//! Its design is in four notes in `data/mod.rs`, where rustdoc shows them: NOTE [ One engine
//! for map-style and iterable data ], NOTE [ Errors from worker threads ], NOTE [ Timeouts and
//! abandoned workers ] and NOTE [ Stack overflow in a worker ].

use crate::data::guard;
use crate::error::{Error, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most worker threads one loader may start. Workers are threads that share the machine's
/// cores with the training loop, so more than a few per core only adds memory (each holds
/// `prefetch_factor` batches and a stack); the bound turns a typo into an error at `build`.
pub const MAX_NUM_WORKERS: usize = 256;
/// The smallest `worker_stack_size`: room for the worker's own frames and a shallow `get`.
pub const MIN_WORKER_STACK_SIZE: usize = 64 * 1024;
/// The largest `worker_stack_size` (1 GiB, reserved address space per worker).
pub const MAX_WORKER_STACK_SIZE: usize = 1 << 30;
/// How often a waiting iterator looks for a worker that overflowed its stack.
const POLL: Duration = Duration::from_millis(20);
/// A worker's task slot when it is between tasks.
const IDLE: usize = usize::MAX;

/// What the code of a task is doing, so that a panic can name it.
/// See NOTE [ Errors from worker threads ].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Activity {
    Task,
    Get(usize),
    GetBatch,
    Collate,
    StreamStart,
    StreamItem(usize),
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Activity::Task => f.write_str("the batch"),
            Activity::Get(index) => write!(f, "dataset.get({index})"),
            Activity::GetBatch => f.write_str("dataset.get_batch"),
            Activity::Collate => f.write_str("collate"),
            Activity::StreamStart => f.write_str("starting the stream"),
            Activity::StreamItem(k) => write!(f, "stream item {k}"),
        }
    }
}

thread_local! {
    static DOING: Cell<Activity> = const { Cell::new(Activity::Task) };
}

/// Records what the current task is doing (one thread-local store).
pub(crate) fn doing(activity: Activity) {
    DOING.with(|d| d.set(activity));
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Does tasks; one per worker (or one on the calling thread).
/// See NOTE [ One engine for map-style and iterable data ].
pub(crate) trait Job: Send + 'static {
    type Task: Send + 'static;
    type Batch: Send + 'static;

    /// The batch of one task; `Ok(None)` when there is none (the stream has ended).
    fn run(&mut self, task: Self::Task) -> Result<Option<Self::Batch>>;
}

/// The tasks of one epoch, on the loader's thread.
pub(crate) trait Plan: Send + 'static {
    type Task;

    /// Task `position`, or `None` past the last one.
    fn task(&self, position: usize) -> Option<Self::Task>;

    /// `batch 4 (indices [16, 17, 18, 19])`, for messages.
    fn describe(&self, position: usize) -> String;

    /// The number of tasks, when it is known in advance.
    fn len(&self) -> Option<usize>;
}

/// Runs one task: the one `catch_unwind` of the loaders (NOTE [ Errors from worker threads ]).
fn run_task<J: Job>(job: &mut J, task: J::Task) -> Result<Option<J::Batch>> {
    doing(Activity::Task);
    catch_unwind(AssertUnwindSafe(|| job.run(task))).unwrap_or_else(|payload| {
        let activity = DOING.with(Cell::get);
        Err(Error::Data(format!(
            "{activity} panicked: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// The worker options both loaders share, checked together by [`problems`](Self::problems).
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerOptions {
    pub num_workers: usize,
    pub prefetch_factor: Option<usize>,
    pub timeout: Option<Duration>,
    pub stack_size: Option<usize>,
}

impl WorkerOptions {
    /// Every option out of range or set without workers, for the builder's one error.
    /// `max_workers` and `why` bound `num_workers` (with the reason, for the message).
    pub fn problems(&self, max_workers: usize, why: &str, out: &mut Vec<String>) {
        if self.num_workers > max_workers {
            out.push(format!(
                "num_workers must be at most {max_workers}, got {} ({why})",
                self.num_workers
            ));
        }
        if self.num_workers == 0 {
            if let Some(p) = self.prefetch_factor {
                out.push(format!(
                    "prefetch_factor({p}) needs num_workers > 0; set num_workers or drop it"
                ));
            }
            if self.timeout.is_some() {
                out.push("timeout needs num_workers > 0; set num_workers or drop it".into());
            }
            if self.stack_size.is_some() {
                out.push(
                    "worker_stack_size needs num_workers > 0; set num_workers or drop it".into(),
                );
            }
        }
        if self.prefetch_factor == Some(0) {
            out.push("prefetch_factor must be at least 1, got 0".to_string());
        }
        if self.timeout == Some(Duration::ZERO) {
            out.push(
                "timeout must be longer than zero; leave it unset to wait as long as a batch \
                 takes (PyTorch's timeout=0)"
                    .to_string(),
            );
        }
        if let Some(size) = self.stack_size
            && !(MIN_WORKER_STACK_SIZE..=MAX_WORKER_STACK_SIZE).contains(&size)
        {
            out.push(format!(
                "worker_stack_size must be between {MIN_WORKER_STACK_SIZE} (64 KiB) and \
                 {MAX_WORKER_STACK_SIZE} (1 GiB) bytes, got {size}"
            ));
        }
    }

    /// Tasks in flight at once: `prefetch_factor` (default 2) per worker.
    fn in_flight(&self) -> usize {
        self.prefetch_factor
            .unwrap_or(2)
            .saturating_mul(self.num_workers)
    }

    fn stack_size_text(&self) -> String {
        match self.stack_size {
            Some(size) => format!("worker_stack_size {size} bytes"),
            None => "the default stack size, 2 MiB unless RUST_MIN_STACK says otherwise".into(),
        }
    }
}

/// Starts an epoch: `plan`'s tasks done by `job()`s, on the calling thread or on workers.
pub(crate) fn start<P, J>(
    what: &'static str,
    plan: P,
    options: &WorkerOptions,
    mut job: impl FnMut() -> J,
) -> TryIter<J::Batch>
where
    P: Plan<Task = J::Task>,
    J: Job,
{
    let runner = if options.num_workers == 0 {
        Runner::Inline(job())
    } else {
        match Pool::spawn(what, options, job) {
            Ok(pool) => Runner::Pool(pool),
            Err(err) => Runner::Failed(Some(err)),
        }
    };
    TryIter {
        what,
        epoch: Box::new(Epoch {
            what,
            plan,
            next: 0,
            sent: 0,
            in_flight: options.in_flight(),
            timeout: options.timeout,
            runner,
        }),
    }
}

/// Where the batches of an epoch are made.
enum Runner<J: Job> {
    Inline(J),
    Pool(Pool<J>),
    /// The workers could not start; the error is the first item.
    Failed(Option<Error>),
    Done,
}

struct Epoch<P: Plan, J: Job<Task = P::Task>> {
    what: &'static str,
    plan: P,
    /// Position of the next batch to hand out.
    next: usize,
    /// Tasks given to the workers so far.
    sent: usize,
    in_flight: usize,
    timeout: Option<Duration>,
    runner: Runner<J>,
}

impl<P: Plan, J: Job<Task = P::Task>> Epoch<P, J> {
    fn step(&mut self) -> Option<Result<Option<J::Batch>>> {
        let position = self.next;
        match &mut self.runner {
            Runner::Done => None,
            Runner::Failed(err) => err.take().map(Err),
            Runner::Inline(job) => {
                let task = self.plan.task(position)?;
                Some(run_task(job, task).map_err(|err| {
                    Error::Data(format!(
                        "{}: {}: {err}",
                        self.what,
                        self.plan.describe(position)
                    ))
                }))
            }
            Runner::Pool(pool) => {
                while self.sent < position.saturating_add(self.in_flight) {
                    let Some(task) = self.plan.task(self.sent) else {
                        break;
                    };
                    pool.submit(self.sent, task);
                    self.sent += 1;
                }
                if position >= self.sent {
                    return None;
                }
                Some(pool.take(position, self.timeout, &self.plan))
            }
        }
    }

    /// Ends the epoch; joins the workers only when none can be busy.
    /// See NOTE [ Timeouts and abandoned workers ].
    fn end(&mut self, natural: bool) {
        if let Runner::Pool(pool) = &mut self.runner
            && natural
        {
            pool.join_if_idle(self.sent);
        }
        self.runner = Runner::Done;
    }
}

impl<P: Plan, J: Job<Task = P::Task>> Iterator for Epoch<P, J> {
    type Item = Result<J::Batch>;

    fn next(&mut self) -> Option<Result<J::Batch>> {
        let Some(outcome) = self.step() else {
            self.end(true);
            return None;
        };
        self.next += 1;
        match outcome {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.end(false);
                None
            }
            Err(err) => {
                // Nothing after a failed batch: the caller decides whether to start a new epoch.
                self.end(false);
                Some(Err(err))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match (&self.runner, self.plan.len()) {
            (Runner::Done, _) => (0, Some(0)),
            (_, Some(len)) => (0, Some(len.saturating_sub(self.next))),
            (_, None) => (0, None),
        }
    }
}

/// What a worker shares with the iterator.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The position of the task it is doing, or `IDLE`.
    task: AtomicUsize,
    /// Set by the stack-overflow guard; see NOTE [ Stack overflow in a worker ].
    pub(crate) overflowed: AtomicBool,
}

/// A worker's result for the task at `position`.
struct Done<B> {
    position: usize,
    worker: usize,
    result: Result<Option<B>>,
}

/// Worker threads; see NOTE [ One engine for map-style and iterable data ].
struct Pool<J: Job> {
    what: &'static str,
    tasks: Option<Sender<(usize, J::Task)>>,
    results: Receiver<Done<J::Batch>>,
    /// Results that arrived before their turn.
    waiting: HashMap<usize, Done<J::Batch>>,
    answered: usize,
    stop: Arc<AtomicBool>,
    workers: Vec<(Option<JoinHandle<()>>, Arc<Slot>)>,
    options: WorkerOptions,
}

impl<J: Job> Pool<J> {
    fn spawn(
        what: &'static str,
        options: &WorkerOptions,
        mut job: impl FnMut() -> J,
    ) -> Result<Self> {
        let (task_tx, task_rx) = crossbeam_channel::unbounded::<(usize, J::Task)>();
        let (result_tx, result_rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(options.num_workers);
        for id in 0..options.num_workers {
            let slot = Arc::new(Slot {
                task: AtomicUsize::new(IDLE),
                overflowed: AtomicBool::new(false),
            });
            let mut builder = std::thread::Builder::new().name(format!("torchlet-data-{id}"));
            if let Some(size) = options.stack_size {
                builder = builder.stack_size(size);
            }
            let (tasks, results) = (task_rx.clone(), result_tx.clone());
            let (stop, worker_slot, job) = (Arc::clone(&stop), Arc::clone(&slot), job());
            match builder.spawn(move || work(id, job, &tasks, &results, &stop, &worker_slot)) {
                Ok(handle) => workers.push((Some(handle), slot)),
                // With some workers running, go on with fewer; with none, say why.
                Err(err) if workers.is_empty() => {
                    return Err(Error::Config(format!(
                        "{what}: could not start a worker thread ({err}); lower num_workers or \
                         worker_stack_size"
                    )));
                }
                Err(_) => break,
            }
        }
        Ok(Pool {
            what,
            tasks: Some(task_tx),
            results: result_rx,
            waiting: HashMap::new(),
            answered: 0,
            stop,
            workers,
            options: options.clone(),
        })
    }

    fn submit(&mut self, position: usize, task: J::Task) {
        if let Some(tasks) = &self.tasks {
            // A send error means every worker is gone; `take` reports it.
            let _ = tasks.send((position, task));
        }
    }

    /// The result for task `position`, waiting for it at most `timeout`.
    fn take<P: Plan>(
        &mut self,
        position: usize,
        timeout: Option<Duration>,
        plan: &P,
    ) -> Result<Option<J::Batch>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(done) = self.waiting.remove(&position) {
                return done.result.map_err(|err| {
                    Error::Data(format!(
                        "{}: worker {} failed on {}: {err}",
                        self.what,
                        done.worker,
                        plan.describe(done.position)
                    ))
                });
            }
            if let Some(err) = self.overflowed(plan) {
                return Err(err);
            }
            let mut wait = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if guard::SUPPORTED {
                wait = wait.min(POLL);
            }
            let received = if wait == Duration::MAX {
                self.results
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                self.results.recv_timeout(wait)
            };
            match received {
                Ok(done) => {
                    self.answered += 1;
                    self.waiting.insert(done.position, done);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(self.timed_out(position, plan));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.overflowed(plan).unwrap_or_else(|| {
                        Error::Data(format!(
                            "{}: the worker threads stopped before {} arrived",
                            self.what,
                            plan.describe(position)
                        ))
                    }));
                }
            }
        }
    }

    /// The error for the first worker that overflowed its stack, if one did.
    fn overflowed<P: Plan>(&self, plan: &P) -> Option<Error> {
        let (id, slot) = self
            .workers
            .iter()
            .map(|(_, slot)| slot)
            .enumerate()
            .find(|(_, slot)| slot.overflowed.load(Ordering::SeqCst))?;
        let task = slot.task.load(Ordering::SeqCst);
        let on = if task == IDLE {
            "between batches".to_string()
        } else {
            format!("on {}", plan.describe(task))
        };
        Some(Error::Data(format!(
            "{}: worker {id} overflowed its stack ({}) {on}; its thread is stopped for good and \
             keeps what it held; raise worker_stack_size or look for deep recursion in the data \
             set",
            self.what,
            self.options.stack_size_text()
        )))
    }

    fn timed_out<P: Plan>(&self, position: usize, plan: &P) -> Error {
        let busy: Vec<(usize, usize)> = self
            .workers
            .iter()
            .enumerate()
            .map(|(id, (_, slot))| (id, slot.task.load(Ordering::SeqCst)))
            .filter(|&(_, task)| task != IDLE)
            .collect();
        let state = match busy.iter().find(|&&(_, task)| task == position) {
            Some((id, _)) => format!("worker {id} is still on it"),
            None if busy.is_empty() => "no worker has started it".to_string(),
            None => format!(
                "it waits behind busy workers ({})",
                busy.iter()
                    .map(|(id, task)| format!("worker {id} on batch {task}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Error::Data(format!(
            "{}: {} did not arrive within the timeout of {:?}: {state}. The workers are \
             abandoned, not waited for (a stuck one keeps its thread); raise `timeout` or look \
             for a stuck data set",
            self.what,
            plan.describe(position),
            self.options.timeout.unwrap_or_default()
        ))
    }

    /// Joins the workers when every task sent has been answered, so that none is busy.
    fn join_if_idle(&mut self, sent: usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks = None;
        if self.answered == sent {
            for (handle, _) in &mut self.workers {
                if let Some(handle) = handle.take() {
                    // `run_task` catches panics; a worker that still panicked has nothing to add.
                    let _ = handle.join();
                }
            }
        }
    }
}

impl<J: Job> Drop for Pool<J> {
    /// Stops the workers without waiting for them (NOTE [ Timeouts and abandoned workers ]).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks = None;
    }
}

/// A worker thread: tasks in, results out, until told to stop or disconnected.
fn work<J: Job>(
    id: usize,
    mut job: J,
    tasks: &Receiver<(usize, J::Task)>,
    results: &Sender<Done<J::Batch>>,
    stop: &AtomicBool,
    slot: &Arc<Slot>,
) {
    let _guard = guard::enter(&slot.overflowed);
    while let Ok((position, task)) = tasks.recv() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        slot.task.store(position, Ordering::SeqCst);
        let result = run_task(&mut job, task);
        slot.task.store(IDLE, Ordering::SeqCst);
        let done = Done {
            position,
            worker: id,
            result,
        };
        if results.send(done).is_err() {
            break;
        }
    }
}

/// The batches of one epoch (or one pass over a stream), as `Result`s: a batch that cannot be
/// made gives an `Err` in its place, and the iterator ends after it. Dropping it stops the
/// workers without waiting for them (NOTE [ Timeouts and abandoned workers ]).
pub struct TryIter<B> {
    what: &'static str,
    epoch: Box<dyn Iterator<Item = Result<B>> + Send>,
}

impl<B> TryIter<B> {
    /// The same batches, with a panic in place of an error.
    pub(crate) fn panicking(self) -> Iter<B> {
        Iter { inner: self }
    }
}

impl<B> Iterator for TryIter<B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Result<B>> {
        self.epoch.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.epoch.size_hint()
    }
}

impl<B> std::fmt::Debug for TryIter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TryIter")
            .field("loader", &self.what)
            .field("left", &self.size_hint().1)
            .finish()
    }
}

/// The batches of one epoch (what `for … in &loader` walks).
///
/// # Panics
///
/// `next` panics with the error's message when a batch cannot be made (see
/// [`DataLoader::try_iter`](crate::data::DataLoader::try_iter) to get it as a `Result`).
pub struct Iter<B> {
    inner: TryIter<B>,
}

impl<B> Iterator for Iter<B> {
    type Item = B;

    fn next(&mut self) -> Option<B> {
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

/// Exact for a map-style epoch, whose batches are known in advance; `StreamLoader::iter` hides
/// this impl, since a stream's length is not known.
impl<B> ExactSizeIterator for Iter<B> {}

impl<B> std::fmt::Debug for Iter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Iter").field(&self.inner).finish()
    }
}

#[cold]
#[inline(never)]
fn batch_failed(err: &Error) -> ! {
    panic!("{err} (use loader.try_iter() to handle this as a Result)")
}
