//! Data-parallel training over MPI (feature `distributed`).
//!
//! Each test launches this test binary again under `mpirun -np N`, running only itself: the
//! copies find `TORCHLET_TEST_RANKS` set and do the rank's work, and the launching test
//! checks how the job ended. `timeout` bounds every job, so a test fails instead of hanging.
//! Ranks are not pinned to cores (`--bind-to none`): the test harness runs several jobs at
//! once, and two jobs pinned to the same cores would wait on each other.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use torchlet::checkpoint::TrainingCheckpoint;
use torchlet::data::{DataLoader, DistributedSampler, TensorDataset};
use torchlet::distributed::{self, DdpConfig, DistributedDataParallel, ReduceOp};
use torchlet::nn::Module;
use torchlet::optim::{AdamConfig, SgdConfig};
use torchlet::prelude::*;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// How a job launched by [`launch`] ended.
struct Job {
    success: bool,
    timed_out: bool,
    output: String,
    elapsed: Duration,
}

/// Under `mpirun`, runs `work` on this rank inside `distributed::run`; otherwise launches
/// this test on `np` ranks and returns how the job ended.
fn launch(np: usize, test: &str, work: impl FnOnce() -> torchlet::Result<()>) -> Option<Job> {
    if std::env::var_os("TORCHLET_TEST_RANKS").is_some() {
        distributed::run(work);
        return None;
    }
    let dir = std::env::temp_dir().join(format!("torchlet-ddp-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let out = Command::new("timeout")
        .args([
            "--kill-after=10",
            &JOB_TIMEOUT.as_secs().to_string(),
            "mpirun",
        ])
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
            "-np",
            &np.to_string(),
        ])
        .args(["-x", &format!("TORCHLET_TEST_RANKS={np}")])
        .args(["-x", &format!("TORCHLET_TEST_DIR={}", dir.display())])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .output()
        .expect("mpirun (Open MPI) must be installed to run the distributed tests");
    let _ = std::fs::remove_dir_all(&dir);
    Some(Job {
        success: out.status.success(),
        timed_out: out.status.code() == Some(124) || out.status.code() == Some(137),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        elapsed: start.elapsed(),
    })
}

/// Launches `test` on `np` ranks and requires every rank to succeed.
fn run_on(np: usize, test: &str, work: impl FnOnce() -> torchlet::Result<()>) {
    if let Some(job) = launch(np, test, work) {
        assert!(job.success, "job of {np} ranks failed:\n{}", job.output);
    }
}

fn test_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("TORCHLET_TEST_DIR").expect("set by the launcher"))
}

// ---- collectives ---------------------------------------------------------------------------

fn collectives_work() -> torchlet::Result<()> {
    let (r, p) = (distributed::rank() as f64, distributed::world_size() as f64);
    for dtype in [DType::F32, DType::F64, DType::I64] {
        let t = Tensor::full_dtype(&[2, 3], r + 1.0, dtype);
        distributed::all_reduce(&t, ReduceOp::Sum);
        assert_eq!(
            t.to_vec::<f64>(),
            vec![p * (p + 1.0) / 2.0; 6],
            "{dtype} sum"
        );
        let t = Tensor::full_dtype(&[4], r + 1.0, dtype);
        distributed::all_reduce(&t, ReduceOp::Max);
        assert_eq!(t.to_vec::<f64>(), vec![p; 4], "{dtype} max");
        let t = Tensor::full_dtype(&[3], 10.0 * r, dtype);
        distributed::broadcast(&t, 1);
        assert_eq!(t.to_vec::<f64>(), vec![10.0; 3], "{dtype} broadcast from 1");
        let parts = distributed::all_gather(&Tensor::full_dtype(&[2], r, dtype));
        let want: Vec<Vec<f64>> = (0..p as usize).map(|i| vec![i as f64; 2]).collect();
        let got: Vec<Vec<f64>> = parts.iter().map(|t| t.to_vec::<f64>()).collect();
        assert_eq!(got, want, "{dtype} all_gather");
    }
    let t = Tensor::from_vec(vec![r as f32, 2.0 * r as f32], &[2]);
    distributed::all_reduce(&t, ReduceOp::Avg);
    let mean = (p - 1.0) / 2.0;
    assert_eq!(t.to_vec::<f64>(), [mean, 2.0 * mean], "avg");
    // A non-contiguous tensor (a transpose) goes through a copy and keeps its layout.
    let m = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).t();
    distributed::all_reduce(&m, ReduceOp::Sum);
    assert_eq!(
        m.to_vec::<f64>(),
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0].map(|v| v * p)
    );
    // A parameter that requires grad is updated in place outside the graph.
    let w = Tensor::full(&[2], r).requires_grad_(true);
    let version = w.version();
    distributed::broadcast(&w, 0);
    assert_eq!(w.to_vec::<f32>(), [0.0, 0.0]);
    assert!(w.version() > version);
    distributed::barrier();
    Ok(())
}

#[test]
fn collectives_sum_max_avg_broadcast_and_gather_every_dtype() {
    run_on(
        2,
        "collectives_sum_max_avg_broadcast_and_gather_every_dtype",
        collectives_work,
    );
}

// ---- equivalence with one process ------------------------------------------------------------

const N: usize = 48;
const GLOBAL_BATCH: usize = 12;
const EPOCHS: u64 = 2;

/// The same 48 samples on every rank.
fn data() -> TensorDataset<(Tensor, Tensor)> {
    manual_seed(7);
    let x = Tensor::randn(&[N, 8]);
    let y = Tensor::randint(0, 4, &[N]);
    TensorDataset::new((x, y)).unwrap()
}

#[derive(Module)]
struct Net {
    hidden: Linear,
    out: Linear,
}

impl Forward<&Tensor> for Net {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        self.out.forward(&self.hidden.forward(x).tanh())
    }
}

fn net() -> Net {
    Net {
        hidden: Linear::new(8, 16),
        out: Linear::new(16, 4),
    }
}

/// Trains `model` for `epochs` over the data in batches of `batch` drawn by `sampler`,
/// returning the loss of every step, averaged over the ranks when `distributed` (the mean
/// over the global batch, as every rank has the same batch size).
fn train<M>(
    model: &M,
    opt: &mut dyn Optimizer,
    sampler: Arc<DistributedSampler>,
    batch: usize,
    epochs: std::ops::Range<u64>,
    distributed: bool,
) -> Vec<f64>
where
    M: for<'a> Forward<&'a Tensor, Output = Tensor>,
{
    let loader = DataLoader::builder(data())
        .batch_size(batch)
        .sampler(Arc::clone(&sampler))
        .num_workers(1)
        .build()
        .unwrap();
    let mut losses = Vec::new();
    for epoch in epochs {
        sampler.set_epoch(epoch);
        for (xb, yb) in &loader {
            let loss = cross_entropy(&model.forward(&xb), &yb);
            loss.backward();
            opt.step();
            opt.zero_grad();
            losses.push(loss.detach());
        }
    }
    losses
        .into_iter()
        .map(|l| {
            if distributed {
                distributed::all_reduce(&l, ReduceOp::Avg);
            }
            l.item()
        })
        .collect()
}

fn assert_close(got: &StateDict, want: &StateDict, what: &str) {
    for (key, w) in want.iter() {
        let g = got.get(key).unwrap().to_vec::<f64>();
        let w = w.to_vec::<f64>();
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(&w) {
            assert!(
                (a - b).abs() <= 1e-5 * scale.max(1e-3),
                "{what}: `{key}` differs from one process on the global batch: {a} vs {b} \
                 (rank {})",
                distributed::rank()
            );
        }
    }
}

/// Every rank holds bit-identical values.
fn assert_same_on_every_rank(sd: &StateDict) {
    for (key, t) in sd.iter() {
        let mine = t.to_vec::<f32>();
        for (r, theirs) in distributed::all_gather(t).iter().enumerate() {
            assert_eq!(theirs.to_vec::<f32>(), mine, "`{key}` on rank {r}");
        }
    }
}

fn equivalence_work() -> torchlet::Result<()> {
    // Both ways of summing: through shared memory (every rank is on this machine) and with
    // MPI's all-reduce.
    for shared_memory in [true, false] {
        equivalence_with(DdpConfig {
            shared_memory,
            ..Default::default()
        })?;
    }
    Ok(())
}

fn equivalence_with(config: DdpConfig) -> torchlet::Result<()> {
    let (rank, p) = (distributed::rank(), distributed::world_size());
    let local_batch = GLOBAL_BATCH / p;
    let shard = || Arc::new(DistributedSampler::new(N, p, rank).unwrap().seed(3));
    let whole = || Arc::new(DistributedSampler::new(N, 1, 0).unwrap().seed(3));

    // SGD with momentum on a sequential! model. Each rank starts from its own random
    // weights: DistributedDataParallel must replace them with rank 0's.
    let make = || sequential![Linear::new(8, 16), ReLU, Linear::new(16, 4)];
    manual_seed(100);
    let reference = make();
    manual_seed(100 + rank as u64);
    let ddp = DistributedDataParallel::with_config(make(), config.clone())?;
    assert_eq!(
        ddp.uses_shared_memory(),
        config.shared_memory,
        "every rank of the test's job runs on this machine"
    );
    assert_eq!(
        ddp.num_buckets(),
        1,
        "four small parameters fit one 25 MB bucket"
    );
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(ddp.named_parameters(), cfg)?;
    let losses = train(&ddp, &mut opt, shard(), local_batch, 0..EPOCHS, true);
    let mut ref_opt = Sgd::new(reference.named_parameters(), cfg)?;
    let ref_losses = train(
        &reference,
        &mut ref_opt,
        whole(),
        GLOBAL_BATCH,
        0..EPOCHS,
        false,
    );
    assert_eq!(losses.len(), (N / GLOBAL_BATCH) * EPOCHS as usize);
    for (a, b) in losses.iter().zip(&ref_losses) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");
    }
    assert_close(
        &ddp.state_dict(),
        &reference.state_dict(),
        "SGD with momentum",
    );
    assert_same_on_every_rank(&ddp.state_dict());

    // Adam on a derived module, with the state-dict keys of the plain model.
    manual_seed(200);
    let reference = net();
    manual_seed(200 + rank as u64);
    let ddp = DistributedDataParallel::with_config(net(), config)?;
    let keys: Vec<String> = ddp.state_dict().keys().cloned().collect();
    assert_eq!(
        keys,
        ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    );
    let cfg = AdamConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let mut opt = Adam::new(ddp.named_parameters(), cfg)?;
    train(&ddp, &mut opt, shard(), local_batch, 0..EPOCHS, true);
    let mut ref_opt = Adam::new(reference.named_parameters(), cfg)?;
    train(
        &reference,
        &mut ref_opt,
        whole(),
        GLOBAL_BATCH,
        0..EPOCHS,
        false,
    );
    assert_close(&ddp.state_dict(), &reference.state_dict(), "Adam");
    assert_same_on_every_rank(&ddp.state_dict());
    Ok(())
}

#[test]
fn two_ranks_end_where_one_process_on_the_global_batch_ends() {
    run_on(
        2,
        "two_ranks_end_where_one_process_on_the_global_batch_ends",
        equivalence_work,
    );
}

#[test]
fn three_ranks_end_where_one_process_on_the_global_batch_ends() {
    run_on(
        3,
        "three_ranks_end_where_one_process_on_the_global_batch_ends",
        equivalence_work,
    );
}

// ---- gradient accumulation -------------------------------------------------------------------

fn no_sync_work() -> torchlet::Result<()> {
    let (rank, p) = (distributed::rank(), distributed::world_size());
    manual_seed(5);
    let reference = Linear::new(8, 4);
    manual_seed(5);
    let ddp = DistributedDataParallel::new(Linear::new(8, 4))?;
    let (x, y) = data().tensors().clone();
    // Rank r's two micro-batches are samples [r*6, r*6+3) and [r*6+3, r*6+6) of the first 12.
    let micro = |i: usize| {
        let start = rank * 6 + i * 3;
        (x.narrow(0, start, 3), y.narrow(0, start, 3))
    };
    {
        let _no_sync = ddp.no_sync();
        let (xb, yb) = micro(0);
        cross_entropy(&ddp.forward(&xb), &yb).backward();
    }
    let local = ddp.module().weight.grad().unwrap();
    let theirs = distributed::all_gather(&local);
    assert_ne!(
        theirs[0].to_vec::<f32>(),
        theirs[1].to_vec::<f32>(),
        "no reduction under no_sync"
    );
    let (xb, yb) = micro(1);
    cross_entropy(&ddp.forward(&xb), &yb).backward();
    // Two micro-batch means summed on each rank, averaged over the ranks: the sum over the
    // 2p micro-batches / p, i.e. 2 × the gradient of the mean over all 6p samples.
    let full = cross_entropy(
        &reference.forward(&x.narrow(0, 0, 6 * p)),
        &y.narrow(0, 0, 6 * p),
    );
    (&full * 2.0).backward();
    for (got, want) in [
        (ddp.module().weight.grad(), reference.weight.grad()),
        (
            ddp.module().bias.as_ref().unwrap().grad(),
            reference.bias.as_ref().unwrap().grad(),
        ),
    ] {
        let (got, want) = (got.unwrap().to_vec::<f32>(), want.unwrap().to_vec::<f32>());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-2), "{a} vs {b}");
        }
    }
    Ok(())
}

#[test]
fn no_sync_accumulates_locally_and_the_next_backward_reduces_it_all() {
    run_on(
        2,
        "no_sync_accumulates_locally_and_the_next_backward_reduces_it_all",
        no_sync_work,
    );
}

// ---- overlapping the reduction with backward -------------------------------------------------

/// Three layers, the middle one used twice, and `extra` used on rank 0 only, so that one
/// parameter has no gradient on rank 1 (registered first, it is in the last bucket).
#[derive(Module)]
struct Branchy {
    extra: Linear,
    a: Linear,
    b: Linear,
    c: Linear,
}

impl Forward<&Tensor> for Branchy {
    type Output = Tensor;
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.a.forward(x).tanh();
        let h = self.b.forward(&self.b.forward(&h).tanh()).tanh();
        let out = self.c.forward(&h);
        if distributed::rank() == 0 {
            &out + &self.extra.forward(&h)
        } else {
            out
        }
    }
}

fn branchy() -> Branchy {
    manual_seed(11);
    Branchy {
        extra: Linear::new(16, 4),
        a: Linear::new(8, 16),
        b: Linear::new(16, 16),
        c: Linear::new(16, 4),
    }
}

fn grads(model: &impl Module) -> Vec<(String, Option<Vec<f32>>)> {
    model
        .named_parameters()
        .into_iter()
        .map(|(name, p)| (name, p.grad().map(|g| g.to_vec::<f32>())))
        .collect()
}

fn overlap_work() -> torchlet::Result<()> {
    let rank = distributed::rank();
    // A bucket per layer (a weight and its bias pass the smallest cap), so that all but the
    // last are launched while backward still runs.
    let config = DdpConfig {
        bucket_cap_mb: 1e-4,
        shared_memory: false,
        ..Default::default()
    };
    let overlapped = DistributedDataParallel::with_config(branchy(), config.clone())?;
    let after = DistributedDataParallel::with_config(branchy(), config.clone())?;
    // The same buckets summed through shared memory at the end of backward: with two ranks
    // both ways add the same two numbers, so the bits agree too.
    let shared = DistributedDataParallel::with_config(
        branchy(),
        DdpConfig {
            shared_memory: true,
            ..config
        },
    )?;
    assert!(shared.uses_shared_memory() && !overlapped.uses_shared_memory());
    assert_eq!(overlapped.num_buckets(), 4);
    let (x, y) = data().tensors().clone();
    let batch = |step: usize| {
        let start = (step * 2 + rank) * 6;
        (x.narrow(0, start, 6), y.narrow(0, start, 6))
    };
    for step in 0..3 {
        // Step 1 keeps step 0's gradients (they are views of the buckets' buffers) and
        // accumulates into them.
        if step != 1 {
            overlapped.zero_grad();
            after.zero_grad();
            shared.zero_grad();
        }
        let (xb, yb) = batch(step);
        cross_entropy(&overlapped.forward(&xb), &yb).backward();
        cross_entropy(&after.module().forward(&xb), &yb).backward();
        after.reduce_gradients();
        cross_entropy(&shared.forward(&xb), &yb).backward();
        let (got, want) = (grads(&overlapped), grads(&after));
        assert_eq!(got, want, "step {step} on rank {rank}");
        assert_eq!(
            grads(&shared),
            want,
            "shared memory, step {step} on rank {rank}"
        );
        assert!(got.iter().all(|(_, g)| g.is_some()), "{got:?}");
    }
    Ok(())
}

#[test]
fn overlapped_and_shared_memory_reductions_give_the_bits_of_reducing_after_backward() {
    run_on(
        2,
        "overlapped_and_shared_memory_reductions_give_the_bits_of_reducing_after_backward",
        overlap_work,
    );
}

// ---- models that differ -----------------------------------------------------------------------

fn mismatch_work() -> torchlet::Result<()> {
    let rank = distributed::rank();
    let model = sequential![Linear::new(4, 8), ReLU, Linear::new(8, 2 + rank)];
    let err = DistributedDataParallel::new(model)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("the model on rank(s) 1 differs from rank 0's"),
        "{err}"
    );
    if rank == 1 {
        assert!(
            err.contains("`2.weight float32 [3, 8]` here, but `2.weight float32 [2, 8]` on rank 0"),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn a_model_that_differs_between_ranks_is_refused_on_every_rank() {
    run_on(
        2,
        "a_model_that_differs_between_ranks_is_refused_on_every_rank",
        mismatch_work,
    );
}

// ---- a failing rank ---------------------------------------------------------------------------

/// Requires the job to have ended in failure, quickly, with `message` in its output.
fn assert_aborted(job: Option<Job>, message: &str) {
    let Some(job) = job else { return };
    assert!(
        !job.timed_out,
        "the job hung until the timeout:\n{}",
        job.output
    );
    assert!(!job.success, "the job should have failed:\n{}", job.output);
    assert!(
        job.output.contains(message),
        "no `{message}` in:\n{}",
        job.output
    );
    assert!(job.output.contains("MPI_Abort"), "{}", job.output);
    assert!(job.elapsed < JOB_TIMEOUT / 2, "took {:?}", job.elapsed);
}

#[test]
fn a_rank_that_panics_ends_the_job_with_its_message() {
    let job = launch(
        2,
        "a_rank_that_panics_ends_the_job_with_its_message",
        || {
            if distributed::rank() == 1 {
                panic!("rank one cannot go on");
            }
            // Rank 0 waits for a reduction rank 1 never joins.
            distributed::all_reduce(&Tensor::ones(&[4]), ReduceOp::Sum);
            Ok(())
        },
    );
    assert_aborted(job, "rank one cannot go on");
}

#[test]
fn a_rank_that_returns_an_error_ends_the_job_with_its_message() {
    let job = launch(
        2,
        "a_rank_that_returns_an_error_ends_the_job_with_its_message",
        || {
            if distributed::rank() == 1 {
                std::fs::read("/nonexistent/data.bin").map_err(|source| torchlet::Error::Io {
                    path: "/nonexistent/data.bin".into(),
                    source,
                })?;
            }
            distributed::barrier();
            Ok(())
        },
    );
    assert_aborted(job, "rank 1 of 2: error: /nonexistent/data.bin");
}

// ---- checkpoints --------------------------------------------------------------------------------

/// Trains epochs `epochs` of SGD with momentum from `start` (or a fresh model).
fn resume_run(start: Option<&std::path::Path>, epochs: std::ops::Range<u64>) -> StateDict {
    let (rank, p) = (distributed::rank(), distributed::world_size());
    manual_seed(11 + rank as u64);
    let mut model = net();
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(model.named_parameters(), cfg).unwrap();
    if let Some(path) = start {
        // Every rank loads the file rank 0 wrote.
        TrainingCheckpoint::load(path)
            .unwrap()
            .restore(&mut model, &mut opt, None)
            .unwrap();
    }
    let ddp = DistributedDataParallel::new(model).unwrap();
    let sampler = Arc::new(DistributedSampler::new(N, p, rank).unwrap().seed(9));
    train(
        &ddp,
        &mut opt,
        sampler,
        GLOBAL_BATCH / p,
        epochs.clone(),
        true,
    );
    if start.is_none() && epochs.end == 1 {
        if rank == 0 {
            TrainingCheckpoint::capture(&ddp, &opt, None, 1, 9)
                .save(test_dir().join("epoch1.safetensors"))
                .unwrap();
        }
        distributed::barrier();
    }
    ddp.state_dict()
}

fn resume_work() -> torchlet::Result<()> {
    let uninterrupted = resume_run(None, 0..2);
    resume_run(None, 0..1);
    let resumed = resume_run(Some(&test_dir().join("epoch1.safetensors")), 1..2);
    for (key, want) in uninterrupted.iter() {
        assert_eq!(
            resumed.get(key).unwrap().to_vec::<f32>(),
            want.to_vec::<f32>(),
            "{key}"
        );
    }
    Ok(())
}

#[test]
fn resuming_from_rank_0s_checkpoint_matches_an_uninterrupted_run() {
    run_on(
        2,
        "resuming_from_rank_0s_checkpoint_matches_an_uninterrupted_run",
        resume_work,
    );
}
