//! [`DistributedDataParallel`]: one model replica per rank, gradients averaged across ranks
//! during each backward pass, as PyTorch's `torch.nn.parallel.DistributedDataParallel`.
//!
//! NOTE [ Gradient reduction ] is on the `distributed` module page.

use super::collectives::{MpiElement, all_gather_i64, broadcast, broadcast_bytes, sum_in_place};
use super::shm::NodeSegments;
use super::{rank, world, world_size};
use crate::autograd::graph::{self, EndCallback};
use crate::autograd::{RemovableHandle, is_grad_enabled};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::{Forward, Member, MemberMut, Module};
use crate::tensor::Tensor;
use ndarray::{ArcArray, Ix1, IxDyn, s};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc};

/// The options of [`DistributedDataParallel`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct DdpConfig {
    /// The largest bucket of gradients reduced in one call, in MiB as in PyTorch (default
    /// 25).
    pub bucket_cap_mb: f64,
    /// The largest first bucket (the last layers' gradients, reduced first), in MiB: small,
    /// so that communication starts early in backward (default 1, PyTorch's
    /// `dist._DEFAULT_FIRST_BUCKET_BYTES`; PyTorch uses `bucket_cap_mb` instead when that is
    /// given). The smaller of the two caps applies.
    pub first_bucket_cap_mb: f64,
    /// Broadcast rank 0's buffers (BatchNorm's running statistics) at the start of every
    /// training forward, so that all replicas keep rank 0's (default `true`).
    pub broadcast_buffers: bool,
    /// When every rank of the job runs on this machine, sum the gradients through an MPI
    /// shared-memory window rather than with `MPI_Iallreduce` (default `true`; NOTE
    /// [ Gradient reduction through shared memory ] [on the module page](crate::distributed#note--gradient-reduction-through-shared-memory-)).
    /// Not a PyTorch option. Ignored (MPI's all-reduce is used) when the ranks span several
    /// machines or MPI cannot allocate the window.
    pub shared_memory: bool,
}

impl Default for DdpConfig {
    fn default() -> Self {
        DdpConfig {
            bucket_cap_mb: 25.0,
            first_bucket_cap_mb: 1.0,
            broadcast_buffers: true,
            shared_memory: true,
        }
    }
}

/// A model trained data-parallel across the ranks of the job: each rank runs `forward` and
/// `backward` on its share of the batch, and the gradients are averaged across ranks while
/// backward runs (a bucket as soon as its gradients are final), so every rank's optimizer
/// takes the same step. See NOTE [ Gradient reduction ] [on the module page](crate::distributed#note--gradient-reduction-).
///
/// ```no_run
/// # extern crate torchlet_core as torchlet;
/// use torchlet::distributed::{self, DistributedDataParallel};
/// use torchlet::nn::{functional::cross_entropy, sequential, Forward, Linear, Module, ReLU};
/// use torchlet::optim::{Optimizer, Sgd, SgdConfig};
/// use torchlet::Tensor;
///
/// distributed::run(|| {
///     let model = DistributedDataParallel::new(sequential![Linear::new(4, 8), ReLU, Linear::new(8, 3)])?;
///     let mut opt = Sgd::new(model.named_parameters(), SgdConfig { lr: 0.1, ..Default::default() })?;
///     let (xb, yb) = (Tensor::randn(&[16, 4]), Tensor::randint(0, 3, &[16]));
///     cross_entropy(&model.forward(&xb), &yb).backward(); // gradients averaged here
///     opt.step();
///     opt.zero_grad();
///     Ok(())
/// });
/// ```
///
/// The wrapper is itself a [`Module`] whose members are the wrapped model's, under the same
/// names: `state_dict()` gives `0.weight`, not PyTorch's `module.0.weight`. Unlike PyTorch,
/// then, a checkpoint saved from the wrapper loads into the plain model and back without
/// renaming keys (the PyTorch idiom is to save `ddp.module.state_dict()`, which is what this
/// gives).
pub struct DistributedDataParallel<M> {
    module: M,
    reducer: Arc<Reducer>,
    _hooks: HookHandles,
    broadcast_buffers: bool,
    require_sync: AtomicBool,
}

impl<M: Module> DistributedDataParallel<M> {
    /// Wraps `module` with [`DdpConfig::default`]. Collective: every rank must call it.
    ///
    /// # Errors
    /// See [`with_config`](Self::with_config).
    pub fn new(module: M) -> Result<Self> {
        Self::with_config(module, DdpConfig::default())
    }

    /// Wraps `module`: checks that every rank built the same model (names, shapes and dtypes
    /// of parameters and buffers), then copies rank 0's parameters and buffers to every rank.
    /// Collective: every rank must call it.
    ///
    /// # Errors
    /// [`Error::Distributed`] on every rank if the models differ (naming the first
    /// difference from rank 0's on the ranks that have one), [`Error::Config`] if
    /// `bucket_cap_mb` or `first_bucket_cap_mb` is not positive.
    pub fn with_config(module: M, config: DdpConfig) -> Result<Self> {
        world("DistributedDataParallel::new");
        for (name, cap) in [
            ("bucket_cap_mb", config.bucket_cap_mb),
            ("first_bucket_cap_mb", config.first_bucket_cap_mb),
        ] {
            if cap.is_nan() || cap <= 0.0 {
                return Err(Error::Config(format!(
                    "DistributedDataParallel: {name} must be positive, got {cap}"
                )));
            }
        }
        check_same_model(&module)?;
        for (_, t) in module.state_dict().iter() {
            broadcast(t, 0);
        }
        let params: Vec<Tensor> = module
            .parameters()
            .iter()
            .filter(|p| p.requires_grad() && p.dtype().is_float())
            .map(|p| p.tensor().clone())
            .collect();
        let cap = (config.bucket_cap_mb * MIB as f64) as usize;
        let first_cap = (config.first_bucket_cap_mb * MIB as f64) as usize;
        let mut reducer = Reducer::new(params, first_cap.min(cap), cap);
        if config.shared_memory {
            reducer = reducer.with_node_segments();
        }
        let reducer = Arc::new(reducer);
        let hooks = HookHandles(reducer.register_hooks());
        Ok(DistributedDataParallel {
            module,
            reducer,
            _hooks: hooks,
            broadcast_buffers: config.broadcast_buffers,
            require_sync: AtomicBool::new(true),
        })
    }

    /// The wrapped model (PyTorch's `ddp.module`).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped model, mutably.
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.module
    }

    /// The wrapped model, unwrapped.
    pub fn into_inner(self) -> M {
        self.module
    }

    /// The number of buckets the gradients are reduced in (one `MPI_Allreduce` each).
    pub fn num_buckets(&self) -> usize {
        self.reducer.buckets.len()
    }

    /// Whether the gradients are summed through shared memory (every rank on this machine
    /// and [`DdpConfig::shared_memory`]) rather than by `MPI_Iallreduce` during backward.
    pub fn uses_shared_memory(&self) -> bool {
        self.reducer.node.is_some()
    }

    /// Turns gradient reduction off until the guard is dropped, for gradient accumulation
    /// (PyTorch's `with ddp.no_sync():`). Gradients of the backward passes of forwards run
    /// under the guard accumulate locally; the first backward of a forward run after it
    /// reduces everything accumulated.
    ///
    /// ```no_run
    /// # extern crate torchlet_core as torchlet;
    /// # use torchlet::distributed::{self, DistributedDataParallel};
    /// # use torchlet::nn::{Forward, Linear};
    /// # use torchlet::Tensor;
    /// # distributed::run(|| {
    /// # let model = DistributedDataParallel::new(Linear::new(4, 1))?;
    /// # let micro_batches = [Tensor::randn(&[8, 4]), Tensor::randn(&[8, 4])];
    /// {
    ///     let _no_sync = model.no_sync();
    ///     model.forward(&micro_batches[0]).sum().backward(); // local only
    /// }
    /// model.forward(&micro_batches[1]).sum().backward(); // reduces both micro-batches
    /// # Ok(()) });
    /// ```
    pub fn no_sync(&self) -> NoSyncGuard<'_> {
        let previous = self.require_sync.swap(false, Ordering::SeqCst);
        NoSyncGuard {
            flag: &self.require_sync,
            previous,
        }
    }

    /// Averages the parameters' gradients across ranks now, every bucket after the other,
    /// with the arithmetic of the overlapped reduction of a backward pass; for gradients
    /// computed without `forward` (e.g. by `backward` on the wrapped model). Collective.
    pub fn reduce_gradients(&self) {
        self.reducer.arm();
        self.reducer.finish();
    }
}

/// The parameters' hooks, removed with the wrapper.
struct HookHandles(Vec<RemovableHandle>);

impl Drop for HookHandles {
    fn drop(&mut self) {
        self.0.drain(..).for_each(RemovableHandle::remove);
    }
}

/// Restores gradient reduction when dropped; see [`DistributedDataParallel::no_sync`].
pub struct NoSyncGuard<'a> {
    flag: &'a AtomicBool,
    previous: bool,
}

impl Drop for NoSyncGuard<'_> {
    fn drop(&mut self) {
        self.flag.store(self.previous, Ordering::SeqCst);
    }
}

/// The wrapped model's forward. In training mode with grad enabled it first broadcasts
/// rank 0's buffers (unless `broadcast_buffers` is off) and, unless under
/// [`no_sync`](DistributedDataParallel::no_sync), makes the output's backward reduce the
/// gradients (NOTE [ Gradient reduction ] [on the module page](crate::distributed#note--gradient-reduction-)). A forward in eval mode or under `no_grad` is local to the rank (so
/// rank 0 alone may evaluate), and so is `ddp.module().forward(…)`.
impl<M, I> Forward<I> for DistributedDataParallel<M>
where
    M: Module + Forward<I, Output = Tensor>,
{
    type Output = Tensor;

    fn forward(&self, input: I) -> Tensor {
        let training = self.module.is_training() && is_grad_enabled();
        if training && self.broadcast_buffers {
            for (_, b) in self.module.named_buffers() {
                broadcast(&b, 0);
            }
        }
        let out = self.module.forward(input);
        if !training || !self.require_sync.load(Ordering::SeqCst) {
            return out;
        }
        self.reducer.pending.store(true, Ordering::SeqCst);
        let reducer = Arc::clone(&self.reducer);
        let on_reached: EndCallback = Arc::new(move || {
            if reducer.pending.swap(false, Ordering::SeqCst) {
                reducer.arm();
            }
        });
        let reducer = Arc::clone(&self.reducer);
        let at_end: EndCallback = Arc::new(move || {
            // Armed: this pass reached the node. Still pending: no gradient reached it, but
            // the other ranks may have launched buckets; both reduce every bucket.
            if reducer.is_armed() || reducer.pending.swap(false, Ordering::SeqCst) {
                reducer.arm();
                reducer.finish();
            }
        });
        graph::with_backward_callbacks("DistributedDataParallel", &out, Some(on_reached), at_end)
    }
}

/// The wrapped model's members under their own names (no `module.` prefix; see the type's
/// documentation).
impl<M: Module> Module for DistributedDataParallel<M> {
    fn class_name(&self) -> &'static str {
        "DistributedDataParallel"
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>)) {
        self.module.visit(f)
    }

    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>)) {
        self.module.visit_mut(f)
    }

    fn as_dyn(&self) -> &dyn Module {
        self
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        self
    }

    fn extra_repr(&self) -> String {
        self.module.extra_repr()
    }

    fn training_flag(&self) -> Option<bool> {
        self.module.training_flag()
    }

    fn set_training_flag(&mut self, training: bool) {
        self.module.set_training_flag(training)
    }
}

impl<M: Module> std::fmt::Display for DistributedDataParallel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::nn::fmt_module(self, f)
    }
}

/// One line per parameter and buffer: name, dtype, shape.
fn model_signature(module: &dyn Module) -> String {
    let mut out = String::new();
    for (name, t) in module.state_dict().iter() {
        out.push_str(&format!("{name} {} {:?}\n", t.dtype(), t.shape()));
    }
    out
}

/// Refuses, on every rank, a model that differs between ranks.
fn check_same_model(module: &dyn Module) -> Result<()> {
    let own = model_signature(module);
    let reference = String::from_utf8(broadcast_bytes(own.as_bytes())).unwrap_or_default();
    let differs = own != reference;
    let flags = all_gather_i64(differs as i64);
    if !flags.contains(&1) {
        return Ok(());
    }
    let ranks: Vec<String> = (0..world_size())
        .filter(|&r| flags[r] == 1)
        .map(|r| r.to_string())
        .collect();
    let here = if differs {
        format!(
            "; on rank {}: {}",
            rank(),
            first_difference(&own, &reference)
        )
    } else {
        String::new()
    };
    Err(Error::Distributed(format!(
        "DistributedDataParallel: the model on rank(s) {} differs from rank 0's{here}; build \
         the same model (same parameter and buffer names, shapes and dtypes) on every rank",
        ranks.join(", ")
    )))
}

fn first_difference(own: &str, reference: &str) -> String {
    let key = |line: &str| line.split(' ').next().unwrap_or("").to_string();
    let theirs: Vec<&str> = reference.lines().collect();
    for line in own.lines() {
        match theirs.iter().find(|t| key(t) == key(line)) {
            None => return format!("`{}` is not in rank 0's model", key(line)),
            Some(t) if *t != line => {
                return format!("`{line}` here, but `{t}` on rank 0");
            }
            Some(_) => {}
        }
    }
    match theirs
        .iter()
        .find(|t| !own.lines().any(|l| key(l) == key(t)))
    {
        Some(t) => format!("rank 0's `{}` is missing here", key(t)),
        None => "the same members in another order".to_string(),
    }
}

/// PyTorch's MB: `bucket_cap_mb` counts mebibytes.
const MIB: usize = 1 << 20;

/// The buckets, where the reduction of the current backward pass stands, and the thread
/// that runs the all-reduces. See NOTE [ Gradient reduction ] [on the module page](crate::distributed#note--gradient-reduction-).
struct Reducer {
    buckets: Vec<Bucket>,
    /// A synchronised forward ran whose backward has not reduced yet.
    pending: AtomicBool,
    pass: Mutex<Pass>,
    comm: Mutex<Option<CommThread>>,
    /// Whether the training thread is waiting for the communication thread.
    waiting: Arc<AtomicBool>,
    /// Shared-memory segments when every rank is on this node, and each bucket's offset
    /// (bytes) and length (elements) in them.
    node: Option<(NodeSegments, Vec<(usize, usize)>)>,
}

/// Parameters of one dtype whose gradients are reduced in one call.
struct Bucket {
    params: Vec<Tensor>,
}

/// The reduction of one backward pass.
struct Pass {
    armed: bool,
    /// Per bucket, which parameters' gradients are final, and how many.
    ready: Vec<Vec<bool>>,
    ready_count: Vec<usize>,
    /// The next bucket to launch; buckets go in order.
    next: usize,
    /// Buckets launched and not yet back from the communication thread.
    in_flight: usize,
    /// Each bucket's buffers, `None` while the communication thread has them.
    buffers: Vec<Option<FlatBuffers>>,
}

/// A bucket's flat buffer, reduced in place; the gradients end as views of it.
struct Flat<T> {
    buf: ArcArray<T, Ix1>,
}

enum FlatBuffers {
    F32(Flat<f32>),
    F64(Flat<f64>),
}

/// A bucket's index and buffers, on their way to the communication thread and back.
type Job = (usize, FlatBuffers);

/// The thread that sums launched buckets across ranks, in launch order.
struct CommThread {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommThread {
    fn spawn(waited_on: Arc<AtomicBool>) -> CommThread {
        let (jobs, todo) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("torchlet-ddp-comm".into())
            .spawn(move || {
                for (bucket, mut buffers) in todo {
                    match &mut buffers {
                        FlatBuffers::F32(f) => sum_flat(f, &waited_on),
                        FlatBuffers::F64(f) => sum_flat(f, &waited_on),
                    }
                    if finished.send((bucket, buffers)).is_err() {
                        break;
                    }
                }
            })
            .expect("DistributedDataParallel: cannot start the communication thread");
        CommThread {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for CommThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sum_flat<T: MpiElement>(f: &mut Flat<T>, waited_on: &AtomicBool) {
    let buf = f.buf.as_slice_mut().expect("a new 1-d array is contiguous");
    sum_in_place(buf, waited_on);
}

impl Reducer {
    /// Buckets in reverse registration order: the first at most `first_cap` bytes, the
    /// others at most `cap`, unless one parameter is larger (PyTorch closes a bucket once it
    /// reaches its cap).
    fn new(params: Vec<Tensor>, first_cap: usize, cap: usize) -> Reducer {
        let mut buckets: Vec<(DType, Vec<Tensor>, usize)> = Vec::new();
        for p in params.into_iter().rev() {
            let dtype = p.dtype();
            let bytes = p.numel() * dtype.size();
            let limit = |i: usize| if i == 0 { first_cap } else { cap };
            let open = buckets
                .iter_mut()
                .enumerate()
                .rev()
                .find(|(i, (d, _, size))| *d == dtype && *size < limit(*i));
            match open {
                Some((_, (_, ps, size))) => {
                    ps.push(p);
                    *size += bytes;
                }
                None => buckets.push((dtype, vec![p], bytes)),
            }
        }
        let buffers = buckets
            .iter()
            .map(|(dtype, _, _)| {
                Some(match dtype {
                    DType::F64 => FlatBuffers::F64(Flat::new()),
                    _ => FlatBuffers::F32(Flat::new()),
                })
            })
            .collect();
        let pass = Pass {
            armed: false,
            ready: buckets
                .iter()
                .map(|(_, ps, _)| vec![false; ps.len()])
                .collect(),
            ready_count: vec![0; buckets.len()],
            next: 0,
            in_flight: 0,
            buffers,
        };
        Reducer {
            buckets: buckets
                .into_iter()
                .map(|(_, params, _)| Bucket { params })
                .collect(),
            pending: AtomicBool::new(false),
            pass: Mutex::new(pass),
            comm: Mutex::new(None),
            waiting: Arc::new(AtomicBool::new(false)),
            node: None,
        }
    }

    /// Reduces through shared memory when every rank is on this node. Collective.
    fn with_node_segments(mut self) -> Reducer {
        let mut layout = Vec::new();
        let mut bytes = 0usize;
        for bucket in &self.buckets {
            let len = flat_len(&bucket.params);
            let size = bucket.params[0].dtype().size();
            layout.push((bytes, len));
            bytes = (bytes + len * size).next_multiple_of(64);
        }
        self.node = NodeSegments::new(bytes).map(|n| (n, layout));
        self
    }

    /// One post-accumulate-grad hook per parameter, marking it ready in armed passes.
    fn register_hooks(self: &Arc<Self>) -> Vec<RemovableHandle> {
        let mut handles = Vec::new();
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, p) in bucket.params.iter().enumerate() {
                let reducer: Weak<Reducer> = Arc::downgrade(self);
                handles.push(p.register_post_accumulate_grad_hook(move |_: &Tensor| {
                    if let Some(r) = reducer.upgrade() {
                        r.mark_ready(b, i);
                    }
                }));
            }
        }
        handles
    }

    fn pass(&self) -> MutexGuard<'_, Pass> {
        self.pass.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_armed(&self) -> bool {
        self.pass().armed
    }

    /// Starts a reduction: no parameter ready, no bucket launched. Does nothing if armed.
    fn arm(&self) {
        let mut pass = self.pass();
        if pass.armed {
            return;
        }
        pass.armed = true;
        pass.ready.iter_mut().for_each(|r| r.fill(false));
        pass.ready_count.fill(0);
        pass.next = 0;
    }

    /// Parameter `i` of bucket `b` has its final gradient: launches the buckets that are
    /// complete, in order.
    fn mark_ready(&self, b: usize, i: usize) {
        // Through shared memory every bucket is summed at the end of the pass.
        if self.node.is_some() {
            return;
        }
        let mut pass = self.pass();
        if !pass.armed || pass.ready[b][i] {
            return;
        }
        pass.ready[b][i] = true;
        pass.ready_count[b] += 1;
        while pass.next < self.buckets.len()
            && pass.ready_count[pass.next] == self.buckets[pass.next].params.len()
        {
            let next = pass.next;
            self.launch(&mut pass, next);
        }
    }

    /// Launches the buckets left, waits for all, and makes the gradients views of the
    /// results. Collective.
    fn finish(&self) {
        let mut pass = self.pass();
        if let Some((node, layout)) = &self.node {
            self.finish_on_node(&mut pass, node, layout);
            pass.armed = false;
            return;
        }
        while pass.next < self.buckets.len() {
            let next = pass.next;
            self.launch(&mut pass, next);
        }
        let comm = self.comm.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.store(true, Ordering::SeqCst);
        while pass.in_flight > 0 {
            let done = comm.as_ref().map(|c| c.done.recv());
            let Some(Ok((b, buffers))) = done else {
                comm_thread_died()
            };
            let params = &self.buckets[b].params;
            match &buffers {
                FlatBuffers::F32(f) => f.unflatten(params),
                FlatBuffers::F64(f) => f.unflatten(params),
            }
            pass.buffers[b] = Some(buffers);
            pass.in_flight -= 1;
        }
        self.waiting.store(false, Ordering::SeqCst);
        pass.armed = false;
    }

    /// Sums every bucket through the ranks' shared segments: each rank writes its gradients
    /// into its segment, sums one chunk of every bucket over all segments, and copies the
    /// other chunks from the ranks that summed them (NOTE [ Gradient reduction through shared
    /// memory ]). Collective.
    fn finish_on_node(&self, pass: &mut Pass, node: &NodeSegments, layout: &[(usize, usize)]) {
        let n = world_size() as f64;
        for phase in [NodePhase::Write, NodePhase::Sum, NodePhase::Gather] {
            node.sync();
            for ((bucket, buffers), &at) in self.buckets.iter().zip(&mut pass.buffers).zip(layout) {
                match buffers.as_mut().expect("no bucket is in flight") {
                    FlatBuffers::F32(f) => f.node_phase(phase, node, at, &bucket.params, n),
                    FlatBuffers::F64(f) => f.node_phase(phase, node, at, &bucket.params, n),
                }
            }
        }
    }

    /// Copies bucket `b`'s gradients into its send buffer and hands it to the
    /// communication thread.
    fn launch(&self, pass: &mut Pass, b: usize) {
        let mut buffers = pass.buffers[b]
            .take()
            .expect("a bucket is launched once per pass");
        let params = &self.buckets[b].params;
        let n = world_size() as f64;
        match &mut buffers {
            FlatBuffers::F32(f) => f.flatten(params, n),
            FlatBuffers::F64(f) => f.flatten(params, n),
        }
        let mut comm = self.comm.lock().unwrap_or_else(PoisonError::into_inner);
        let thread = comm.get_or_insert_with(|| CommThread::spawn(Arc::clone(&self.waiting)));
        let sent = thread.jobs.as_ref().map(|jobs| jobs.send((b, buffers)));
        if !matches!(sent, Some(Ok(()))) {
            comm_thread_died()
        }
        pass.in_flight += 1;
        pass.next = b + 1;
    }
}

#[cold]
#[inline(never)]
fn comm_thread_died() -> ! {
    panic!("DistributedDataParallel: the communication thread ended (message above)")
}

/// The phases of the sum through shared memory, each after a sync of the ranks.
#[derive(Clone, Copy)]
enum NodePhase {
    /// Gradients into this rank's segment.
    Write,
    /// This rank's chunk summed over the segments.
    Sum,
    /// The other chunks copied from the ranks that summed them.
    Gather,
}

/// The length of a bucket's flat buffer: every value of its parameters, then a flag each.
fn flat_len(params: &[Tensor]) -> usize {
    params.iter().map(Tensor::numel).sum::<usize>() + params.len()
}

/// Writes the gradients divided by `n` (zeros for parameters without one), then one
/// "has a gradient" flag per parameter.
fn write_flat<T: MpiElement>(buf: &mut [T], params: &[Tensor], n: f64) {
    let len = buf.len();
    let (values, flags) = buf.split_at_mut(len - params.len());
    let scale = T::from_f64(1.0 / n);
    let mut offset = 0;
    for (p, flag) in params.iter().zip(flags) {
        let dst = &mut values[offset..offset + p.numel()];
        offset += p.numel();
        let grad = p.grad();
        *flag = T::from_f64(grad.is_some() as u8 as f64);
        let Some(g) = grad else {
            dst.fill(T::default());
            continue;
        };
        let a = T::from_storage(&g.storage());
        match a.as_slice() {
            Some(s) => dst.iter_mut().zip(s).for_each(|(d, &v)| *d = v * scale),
            None => dst
                .iter_mut()
                .zip(a.iter())
                .for_each(|(d, &v)| *d = v * scale),
        }
    }
}

impl<T: MpiElement> Flat<T> {
    /// The buffer, `len` long and shared with no gradient.
    fn ensure(&mut self, len: usize) -> &mut [T] {
        if self.buf.len() != len || !self.buf.is_unique() {
            self.buf = ArcArray::from_elem(len, T::default());
        }
        self.buf
            .as_slice_mut()
            .expect("a new 1-d array is contiguous")
    }

    fn new() -> Self {
        Flat {
            buf: ArcArray::from_vec(Vec::new()),
        }
    }

    /// One phase of [`Reducer::finish_on_node`] for the bucket at `(offset, len)` in the
    /// segments.
    fn node_phase(
        &mut self,
        phase: NodePhase,
        node: &NodeSegments,
        (off, len): (usize, usize),
        params: &[Tensor],
        n: f64,
    ) {
        match phase {
            NodePhase::Write => node.write::<T>(off, len, |s| write_flat(s, params, n)),
            NodePhase::Sum => node.sum_chunk(off, self.ensure(len)),
            NodePhase::Gather => {
                node.gather(off, self.ensure(len));
                self.unflatten(params)
            }
        }
    }

    /// [`write_flat`] into a buffer that no gradient shares.
    fn flatten(&mut self, params: &[Tensor], n: f64) {
        write_flat(self.ensure(flat_len(params)), params, n);
    }

    /// Each parameter with a gradient on some rank gets the average as its gradient, a view
    /// of the buffer.
    fn unflatten(&self, params: &[Tensor]) {
        let all = self.buf.as_slice().expect("contiguous");
        let flags = &all[all.len() - params.len()..];
        let mut offset = 0;
        for (p, flag) in params.iter().zip(flags) {
            let (start, len) = (offset, p.numel());
            offset += len;
            if flag.to_f64() == 0.0 {
                continue;
            }
            let view = self
                .buf
                .clone()
                .slice_move(s![start..start + len])
                .into_shape_with_order(IxDyn(&p.shape()))
                .expect("a contiguous slice takes any shape of its length");
            p.set_grad(Some(Tensor::from_storage(T::into_storage(view))));
        }
    }
}
