//! The W1–W4 training benchmarks of DESIGN.md through torchlet's public API, written the
//! way a user writes the loop (DataLoader, a `sequential!` model, `Sgd` or `Adam`).
//!
//!     cargo run --release --example bench -- w1            # w1 | w2 | w3 | w4 | w5 | gemm
//!     cargo run --release --example bench -- w2 --threads 1
//!
//! W2 data-parallel over MPI (PyTorch's peer: `../shared/bench/torch_ddp_peer.py 2 1`):
//!
//!     cargo build --release --features distributed --example bench
//!     mpirun -np 2 target/release/examples/bench w2ddp --threads 1
//!
//! Prints one JSON line in the format of `../shared/bench/torch_peer.py`, so the two can be
//! compared side by side (`python3 benches/compare.py` runs both alternately).

#[cfg(feature = "distributed")]
#[path = "bench/w2ddp.rs"]
mod w2ddp;
#[path = "bench/w5.rs"]
mod w5;

use std::time::Instant;
use torchlet::data::Mnist;
use torchlet::metrics::Accuracy;
use torchlet::optim::{AdamConfig, SgdConfig};
use torchlet::prelude::*;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut workload = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--threads" => {
                let v = args
                    .get(i + 1)
                    .ok_or("--threads needs a value, e.g. --threads 2")?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("--threads: {v:?} is not a thread count"))?;
                torchlet::set_num_threads(n)?;
                i += 1;
            }
            w @ ("w1" | "w2" | "w3" | "w4" | "w5" | "gemm" | "w2ddp") => {
                workload = Some(w.to_string())
            }
            "-h" | "--help" => {
                println!("usage: bench <w1|w2|w3|w4|w5|gemm|w2ddp> [--threads N]");
                return Ok(());
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: bench <w1|w2|w3|w4|w5|gemm|w2ddp> [--threads N]"
                )
                .into());
            }
        }
        i += 1;
    }
    match workload.as_deref() {
        Some("w1") => mnist_workload("w1", 128, None, 0.1, 64, 5),
        Some("w2") => mnist_workload("w2", 1024, Some(1024), 0.05, 512, 3),
        Some("w3") => w3(),
        Some("w5") => {
            let (tokens_per_s, steps_per_s, secs, last, params, faults) = w5::run()?;
            assert_eq!(params, 421_440, "W5 parameter count");
            emit("w5", tokens_per_s, steps_per_s, None, secs, last, faults);
            Ok(())
        }
        Some("w4") => w4(),
        Some("gemm") => gemm(1024, 10),
        #[cfg(feature = "distributed")]
        Some("w2ddp") => {
            torchlet::distributed::run(w2ddp::run);
            Ok(())
        }
        #[cfg(not(feature = "distributed"))]
        Some("w2ddp") => Err(
            "w2ddp needs MPI: build with --features distributed and start it \
             with mpirun -np 2"
                .into(),
        ),
        _ => Err("name a workload: bench <w1|w2|w3|w4|w5|gemm> [--threads N]".into()),
    }
}

/// W1 (784-128-10, lr 0.1, batch 64, 5 epochs) and W2 (784-1024-1024-10, lr 0.05,
/// batch 512, 3 epochs): the training epochs are timed, shuffling and batching included.
fn mnist_workload(
    name: &str,
    h1: usize,
    h2: Option<usize>,
    lr: f64,
    batch: usize,
    epochs: usize,
) -> Res<()> {
    let train = Mnist::vendored(true)?.flatten(true).to_tensor_dataset()?;
    let test = Mnist::vendored(false)?.flatten(true);
    manual_seed(0);
    let loader = DataLoader::builder(train)
        .batch_size(batch)
        .shuffle(true)
        .seed(0)
        .build()?;
    match h2 {
        None => {
            let model = sequential![Linear::new(784, h1), ReLU, Linear::new(h1, 10)];
            let opt = sgd(&model, lr)?;
            train_and_report(name, model, opt, &loader, &test, epochs)
        }
        Some(h2) => {
            let model = sequential![
                Linear::new(784, h1),
                ReLU,
                Linear::new(h1, h2),
                ReLU,
                Linear::new(h2, 10)
            ];
            let opt = sgd(&model, lr)?;
            train_and_report(name, model, opt, &loader, &test, epochs)
        }
    }
}

fn sgd(model: &impl Module, lr: f64) -> Res<Sgd> {
    Ok(Sgd::new(
        model.named_parameters(),
        SgdConfig {
            lr,
            ..Default::default()
        },
    )?)
}

/// W4: the main job's CNN (`examples/mnist.rs --model cnn`): two blocks of conv 3×3
/// (padding 1) → BatchNorm2d → ReLU → max-pool 2, then Flatten and Linear(32·7·7, 10);
/// batch 64, Adam lr 1e-3, 2 epochs over the 8000 training digits, shuffled.
fn w4() -> Res<()> {
    let train = Mnist::vendored(true)?.to_tensor_dataset()?;
    let test = Mnist::vendored(false)?;
    manual_seed(0);
    let loader = DataLoader::builder(train)
        .batch_size(64)
        .shuffle(true)
        .seed(0)
        .build()?;
    let model = sequential![
        Conv2d::new(1, 16, 3).with_padding(1),
        BatchNorm2d::new(16),
        ReLU,
        MaxPool2d::new(2),
        Conv2d::new(16, 32, 3).with_padding(1),
        BatchNorm2d::new(32),
        ReLU,
        MaxPool2d::new(2),
        Flatten::new(),
        Linear::new(32 * 7 * 7, 10)
    ];
    let opt = Adam::new(
        model.named_parameters(),
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    train_and_report("w4", model, opt, &loader, &test, 2)
}

fn train_and_report<M>(
    name: &str,
    mut model: M,
    mut opt: impl Optimizer,
    loader: &DataLoader<TensorDataset<(Tensor, Tensor)>>,
    test: &Mnist,
    epochs: usize,
) -> Res<()>
where
    M: Module + for<'a> Forward<&'a Tensor, Output = Tensor>,
{
    model.train();
    let (mut steps, mut seen, mut last) = (0usize, 0usize, f64::NAN);
    let mut faults = FaultCounter::default();
    let start = Instant::now();
    for _ in 0..epochs {
        for (xb, yb) in loader {
            let loss = cross_entropy(&model.forward(&xb), &yb);
            opt.zero_grad();
            loss.backward();
            opt.step();
            steps += 1;
            seen += xb.shape()[0];
            last = loss.item();
            faults.step();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    faults.end();
    model.eval();
    // Evaluated 500 digits at a time: the whole test set at once would hold a CNN's
    // [2000, 16, 28, 28] activations (100 MB each) for no gain in speed.
    let (images, labels) = (test.images(), test.labels());
    let n = labels.numel();
    let mut acc = Accuracy::new();
    no_grad(|| {
        for i in (0..n).step_by(500) {
            let len = 500.min(n - i);
            acc.update(
                &model.forward(&images.narrow(0, i, len)),
                &labels.narrow(0, i, len),
            );
        }
    });
    let acc = acc.compute();
    emit(
        name,
        seen as f64 / secs,
        steps as f64 / secs,
        Some(acc),
        secs,
        last,
        faults.per_step(),
    );
    Ok(())
}

/// W3: 16-16-16-1, MSE, lr 0.01, batch 8, 20 000 steps over 128 fixed batches.
fn w3() -> Res<()> {
    const STEPS: usize = 20_000;
    const BATCH: usize = 8;
    const N: usize = 1024;
    let (x, y) = w3_data(N, 42);
    manual_seed(0);
    let batches: Vec<(Tensor, Tensor)> = (0..N / BATCH)
        .map(|i| {
            (
                x.narrow(0, i * BATCH, BATCH).contiguous_copy(),
                y.narrow(0, i * BATCH, BATCH).contiguous_copy(),
            )
        })
        .collect();
    let model = sequential![
        Linear::new(16, 16),
        ReLU,
        Linear::new(16, 16),
        ReLU,
        Linear::new(16, 1)
    ];
    let mut opt = Sgd::new(
        model.named_parameters(),
        SgdConfig {
            lr: 0.01,
            ..Default::default()
        },
    )?;
    let mut last = f64::NAN;
    let mut faults = FaultCounter::default();
    let start = Instant::now();
    for s in 0..STEPS {
        let (xb, yb) = &batches[s % batches.len()];
        let loss = mse_loss(&model.forward(xb), yb);
        opt.zero_grad();
        loss.backward();
        opt.step();
        if s + 1 == STEPS {
            last = loss.item();
        }
        faults.step();
    }
    let secs = start.elapsed().as_secs_f64();
    faults.end();
    emit(
        "w3",
        (STEPS * BATCH) as f64 / secs,
        STEPS as f64 / secs,
        None,
        secs,
        last,
        faults.per_step(),
    );
    Ok(())
}

/// A 1024³ f32 matmul through the Tensor API, as torch_peer.py's `gemm`: best and median
/// of `reps` timed products after one warm-up.
fn gemm(n: usize, reps: usize) -> Res<()> {
    manual_seed(1);
    let a = Tensor::rand(&[n, n]);
    let b = Tensor::rand(&[n, n]);
    std::hint::black_box(a.matmul(&b));
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(a.matmul(&b));
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let flop = 2.0 * (n * n * n) as f64;
    println!(
        "{{\"peer\":\"torchlet\",\"workload\":\"gemm{n}\",\"samples_per_s\":null,\"steps_per_s\":{:.2},\"test_acc\":null,\"threads\":{},\"gflops\":{:.2},\"gflops_median\":{:.2},\"peak_rss_mb\":{:.1}}}",
        1.0 / times[0],
        torchlet::get_num_threads(),
        flop / times[0] / 1e9,
        flop / times[reps / 2] / 1e9,
        peak_rss_mb()
    );
    Ok(())
}

/// The W3 data of torch_peer.py: SplitMix64, 12-uniform normals, y = 0.5·Σx[0..4] + 0.1·noise.
fn w3_data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut state = seed;
    let mut next_f32 = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut normal = || (0..12).fold(0f32, |acc, _| acc + next_f32()) - 6.0;
    let mut xs = Vec::with_capacity(n * 16);
    let mut ys = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f32> = (0..16).map(|_| normal()).collect();
        let sum4: f32 = row[..4].iter().sum();
        ys.push(0.5 * sum4 + 0.1 * normal());
        xs.extend(row);
    }
    (
        Tensor::from_vec(xs, &[n, 16]),
        Tensor::from_vec(ys, &[n, 1]),
    )
}

/// Peak resident memory in MB (VmHWM), or 0 where /proc is missing.
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Minor page faults (fresh pages the kernel zeroes and maps) per training step after the
/// first, from `/proc/self/stat`: how much new memory a step in the steady state touches.
#[derive(Default)]
struct FaultCounter {
    steps: usize,
    after_first: Option<u64>,
    last: u64,
}

impl FaultCounter {
    /// Counts a step; reads the kernel's counter after the first step only (one read of
    /// `/proc` a step would cost W3 a third of its speed).
    fn step(&mut self) {
        self.steps += 1;
        if self.after_first.is_none() {
            self.after_first = Some(minor_faults());
        }
    }

    /// Reads the counter once more, right after the last step.
    fn end(&mut self) {
        self.last = minor_faults();
    }

    fn per_step(&self) -> f64 {
        match self.after_first {
            Some(first) if self.steps > 1 => (self.last - first) as f64 / (self.steps - 1) as f64,
            _ => f64::NAN,
        }
    }
}

fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at the state, the
            // third field; minflt is the tenth.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn emit(
    workload: &str,
    samples_per_s: f64,
    steps_per_s: f64,
    test_acc: Option<f64>,
    secs: f64,
    final_loss: f64,
    faults_per_step: f64,
) {
    let acc = test_acc.map_or("null".to_string(), |a| format!("{a:.4}"));
    println!(
        "{{\"peer\":\"torchlet\",\"workload\":\"{workload}\",\"samples_per_s\":{samples_per_s:.1},\"steps_per_s\":{steps_per_s:.1},\"test_acc\":{acc},\"threads\":{},\"peak_rss_mb\":{:.1},\"train_secs\":{secs:.4},\"final_loss\":{final_loss:.5},\"page_faults_per_step\":{faults_per_step:.1}}}",
        torchlet::get_num_threads(),
        peak_rss_mb()
    );
}
