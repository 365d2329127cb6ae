//! [`DistributedDataParallel`]: one model replica per rank, gradients averaged across ranks
//! after each backward pass, as PyTorch's `torch.nn.parallel.DistributedDataParallel`.
//!
//! NOTE [ Gradient reduction ]
//! At construction the parameters that require grad are grouped into buckets of at most
//! `bucket_cap_mb` (PyTorch's default, 25 MB; one dtype per bucket), in reverse registration
//! order as PyTorch does, since backward produces the last layers' gradients first. Each
//! training `forward` passes its output through an identity node whose end-of-backward
//! callback (NOTE [ Callbacks at the end of backward ] in `autograd/graph.rs`) reduces every
//! bucket: the gradients are copied into one flat buffer, summed across ranks with one
//! `MPI_Allreduce`, divided by the world size and copied back. A W2-sized model (1.9 M
//! parameters, 7.4 MB) is one call per step, not one per parameter.
//!
//! Communication does not overlap with the backward pass: the reduction starts when the last
//! gradient is final. PyTorch starts a bucket's reduction as soon as its gradients are ready,
//! with hooks on each parameter's gradient accumulation; torchlet's engine knows a leaf's
//! gradient is final only when the pass ends (a leaf used twice accumulates twice), and with
//! MPI over shared memory a non-blocking reduction progresses only inside MPI calls, so the
//! overlap would need a progress thread competing with the compute for the same cores. On one
//! machine the reduction of W2's gradients takes a few percent of a step (see the README's
//! scaling model for networks). The wait for the other ranks is polled rather than spun, so
//! that a rank waiting on a busy machine leaves its core to the rank it waits for (see
//! `sum_into` in `collectives.rs`: on this project's shared 2-core machine that took two
//! ranks of W2 from 1,447 to 1,656 samples/s, medians of three alternated runs).
//!
//! Each bucket also carries one "has a gradient" count per parameter. A parameter without a
//! gradient on some ranks (unused in their forward) contributes zeros there, and ends with
//! the average on every rank that has a gradient anywhere, so the optimizers see the same
//! gradients everywhere; a parameter unused on every rank keeps no gradient.

use super::collectives::{MpiElement, all_gather_i64, broadcast, broadcast_bytes, sum_into};
use super::{rank, world, world_size};
use crate::autograd::graph::{self, EndCallback};
use crate::autograd::is_grad_enabled;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::{Forward, Member, MemberMut, Module};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The options of [`DistributedDataParallel`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct DdpConfig {
    /// The largest bucket of gradients reduced in one call, in MB (10^6 bytes as in PyTorch;
    /// default 25).
    pub bucket_cap_mb: f64,
    /// Broadcast rank 0's buffers (BatchNorm's running statistics) at the start of every
    /// training forward, so that all replicas keep rank 0's (default `true`).
    pub broadcast_buffers: bool,
}

impl Default for DdpConfig {
    fn default() -> Self {
        DdpConfig {
            bucket_cap_mb: 25.0,
            broadcast_buffers: true,
        }
    }
}

/// A model trained data-parallel across the ranks of the job: each rank runs `forward` and
/// `backward` on its share of the batch, and the gradients are averaged across ranks at the
/// end of backward, so every rank's optimizer takes the same step. See NOTE [ Gradient
/// reduction ].
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
    /// `bucket_cap_mb` is not positive.
    pub fn with_config(module: M, config: DdpConfig) -> Result<Self> {
        world("DistributedDataParallel::new");
        if config.bucket_cap_mb.is_nan() || config.bucket_cap_mb <= 0.0 {
            return Err(Error::Config(format!(
                "DistributedDataParallel: bucket_cap_mb must be positive, got {}",
                config.bucket_cap_mb
            )));
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
        let cap = (config.bucket_cap_mb * 1e6) as usize;
        Ok(DistributedDataParallel {
            module,
            reducer: Arc::new(Reducer::new(params, cap)),
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

    /// Averages the parameters' gradients across ranks now, as the end of a backward pass
    /// does; for gradients computed without `forward` (e.g. by `backward` on the wrapped
    /// model). Collective.
    pub fn reduce_gradients(&self) {
        self.reducer.reduce();
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
/// [`no_sync`](DistributedDataParallel::no_sync), makes the output's backward end with the
/// gradient reduction. A forward in eval mode or under `no_grad` is local to the rank (so
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
        let at_end: EndCallback = Arc::new(move || {
            if reducer.pending.swap(false, Ordering::SeqCst) {
                reducer.reduce();
            }
        });
        graph::with_end_callback("DistributedDataParallel", &out, at_end)
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

/// The buckets of gradients and the flag that a forward's backward still has to reduce.
struct Reducer {
    buckets: Vec<Bucket>,
    pending: AtomicBool,
}

/// Parameters of one dtype whose gradients are reduced in one call, with its buffers.
struct Bucket {
    params: Vec<Tensor>,
    buffers: Mutex<FlatBuffers>,
}

/// The send and receive buffers of a bucket, kept between steps.
enum FlatBuffers {
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
}

impl Reducer {
    /// Buckets in reverse registration order, at most `cap` bytes each unless one parameter
    /// is larger (PyTorch closes a bucket once it reaches the cap).
    fn new(params: Vec<Tensor>, cap: usize) -> Reducer {
        let mut buckets: Vec<(DType, Vec<Tensor>, usize)> = Vec::new();
        for p in params.into_iter().rev() {
            let dtype = p.dtype();
            let bytes = p.numel() * dtype.size();
            let open = buckets
                .iter_mut()
                .rev()
                .find(|(d, _, size)| *d == dtype && *size < cap);
            match open {
                Some((_, ps, size)) => {
                    ps.push(p);
                    *size += bytes;
                }
                None => buckets.push((dtype, vec![p], bytes)),
            }
        }
        let buckets = buckets
            .into_iter()
            .map(|(dtype, params, _)| Bucket {
                params,
                buffers: Mutex::new(match dtype {
                    DType::F64 => FlatBuffers::F64(Vec::new(), Vec::new()),
                    _ => FlatBuffers::F32(Vec::new(), Vec::new()),
                }),
            })
            .collect();
        Reducer {
            buckets,
            pending: AtomicBool::new(false),
        }
    }

    fn reduce(&self) {
        let n = world_size() as f64;
        for bucket in &self.buckets {
            let mut buffers = bucket
                .buffers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match &mut *buffers {
                FlatBuffers::F32(send, recv) => reduce_bucket(&bucket.params, send, recv, n),
                FlatBuffers::F64(send, recv) => reduce_bucket(&bucket.params, send, recv, n),
            }
        }
    }
}

/// Flattens the gradients (and one has-a-gradient count per parameter), sums them across
/// ranks, and writes back the average. See NOTE [ Gradient reduction ].
fn reduce_bucket<T: MpiElement>(params: &[Tensor], send: &mut Vec<T>, recv: &mut Vec<T>, n: f64) {
    send.clear();
    let grads: Vec<Option<Tensor>> = params.iter().map(Tensor::grad).collect();
    for (p, g) in params.iter().zip(&grads) {
        match g {
            Some(g) => {
                let a = T::from_storage(&g.storage());
                match a.as_slice() {
                    Some(s) => send.extend_from_slice(s),
                    None => send.extend(a.iter().copied()),
                }
            }
            None => send.extend(std::iter::repeat_n(T::default(), p.numel())),
        }
    }
    send.extend(grads.iter().map(|g| T::from_f64(g.is_some() as u8 as f64)));
    recv.resize(send.len(), T::default());
    sum_into(send, recv);
    let counts = &recv[recv.len() - params.len()..];
    let scale = T::from_f64(1.0 / n);
    let mut offset = 0;
    for ((p, g), count) in params.iter().zip(grads).zip(counts) {
        let values = &recv[offset..offset + p.numel()];
        offset += p.numel();
        if count.to_f64() == 0.0 {
            continue;
        }
        let g = g.unwrap_or_else(|| {
            let g = Tensor::full_dtype(&p.shape(), 0.0, p.dtype());
            p.set_grad(Some(g.clone()));
            g
        });
        g.update_in_place(|s| {
            let a = T::array_mut(s).expect("a gradient has its parameter's dtype");
            let average = values.iter().map(|&v| v * scale);
            match a.as_slice_mut() {
                Some(dst) => dst.iter_mut().zip(average).for_each(|(d, v)| *d = v),
                None => a.iter_mut().zip(average).for_each(|(d, v)| *d = v),
            }
        });
    }
}
