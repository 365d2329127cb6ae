//! The MNIST job data-parallel over MPI: the MLP (or `--model cnn`) of `examples/mnist.rs`
//! wrapped in `DistributedDataParallel`, each rank training on its `DistributedSampler` share
//! of the vendored digits, metrics all-reduced for printing, a checkpoint written by rank 0
//! after every epoch and `--resume` loading it on every rank.
//!
//! ```sh
//! cargo build --release --features distributed --example ddp_mnist
//! mpirun -np 2 target/release/examples/ddp_mnist                  # MLP, 10 epochs
//! mpirun -np 2 target/release/examples/ddp_mnist --model cnn      # CNN, 5 epochs
//! ```
//!
//! `--batch-size` is the global batch: each of the p ranks takes batch-size / p samples a
//! step, so the run computes what one process would with that batch size.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use torchlet::checkpoint::{TrainingCheckpoint, seed_epoch};
use torchlet::data::{DistributedSampler, MNIST_MEAN, MNIST_STD, Mnist, Subset};
use torchlet::distributed::{self, DistributedDataParallel, ReduceOp};
use torchlet::optim::AdamConfig;
use torchlet::prelude::*;
use torchlet::{Error, Result};

const HELP: &str = "\
Train an MNIST classifier data-parallel over MPI; every rank prints nothing but rank 0.

Usage: mpirun -np N target/release/examples/ddp_mnist [OPTIONS]

Options:
  --model mlp|cnn      784-128-10 MLP or the small CNN of examples/mnist.rs [default: mlp]
  --epochs N           [default: 10 for mlp, 5 for cnn]
  --batch-size N       global batch, a multiple of N ranks [default: 64]
  --lr X               Adam's learning rate [default: 0.001]
  --seed N             seed of the weights and the shuffling [default: 0]
  --workers N          DataLoader worker threads per rank [default: 0]
  --threads N          compute threads per rank [default: 1]
  --checkpoint PATH    written by rank 0 after every epoch [default: runs/ddp-mnist-<model>.safetensors]
  --resume             every rank continues from --checkpoint
  -h, --help           print this help
";

struct Args {
    cnn: bool,
    epochs: Option<usize>,
    batch_size: usize,
    lr: f64,
    seed: u64,
    workers: usize,
    threads: usize,
    checkpoint: Option<PathBuf>,
    resume: bool,
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return print!("{HELP}"),
        Err(e) => {
            eprintln!("ddp_mnist: {e}");
            std::process::exit(2)
        }
    };
    distributed::run(|| train(&args));
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>> {
    let mut a = Args {
        cnn: false,
        epochs: None,
        batch_size: 64,
        lr: 1e-3,
        seed: 0,
        workers: 0,
        threads: 1,
        checkpoint: None,
        resume: false,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| Error::Config(format!("{name} needs a value; see --help")))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T> {
            v.parse()
                .map_err(|_| Error::Config(format!("{name}: {v:?} is not a number")))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--model" => {
                a.cnn = match value("--model")?.as_str() {
                    "mlp" => false,
                    "cnn" => true,
                    other => {
                        return Err(Error::Config(format!(
                            "--model: {other:?} is not a model; use mlp or cnn"
                        )));
                    }
                }
            }
            "--epochs" => a.epochs = Some(num("--epochs", value("--epochs")?)?),
            "--batch-size" => a.batch_size = num("--batch-size", value("--batch-size")?)?,
            "--lr" => a.lr = num("--lr", value("--lr")?)?,
            "--seed" => a.seed = num("--seed", value("--seed")?)?,
            "--workers" => a.workers = num("--workers", value("--workers")?)?,
            "--threads" => a.threads = num("--threads", value("--threads")?)?,
            "--checkpoint" => a.checkpoint = Some(value("--checkpoint")?.into()),
            "--resume" => a.resume = true,
            other => {
                return Err(Error::Config(format!(
                    "unknown option {other:?}; see --help"
                )));
            }
        }
    }
    Ok(Some(a))
}

/// The models of `examples/mnist.rs`, under the same state-dict keys.
fn build_model(cnn: bool) -> Box<dyn Layer> {
    if !cnn {
        return Box::new(sequential![
            Linear::new(784, 128),
            ReLU,
            Linear::new(128, 10)
        ]);
    }
    Box::new(sequential![
        features = sequential![
            Conv2d::new(1, 16, 3).with_padding(1),
            BatchNorm2d::new(16),
            ReLU,
            MaxPool2d::new(2),
            Conv2d::new(16, 32, 3).with_padding(1),
            BatchNorm2d::new(32),
            ReLU,
            MaxPool2d::new(2)
        ],
        flatten = Flatten::new(),
        classifier = Linear::new(32 * 7 * 7, 10)
    ])
}

fn train(args: &Args) -> Result<()> {
    let (rank, world) = (distributed::rank(), distributed::world_size());
    torchlet::set_num_threads(args.threads)?;
    if !args.batch_size.is_multiple_of(world) || args.batch_size == 0 {
        return Err(Error::Config(format!(
            "--batch-size {} does not split into {world} equal shares; pass a multiple of {world}",
            args.batch_size
        )));
    }
    let name = if args.cnn { "cnn" } else { "mlp" };
    let epochs = args.epochs.unwrap_or(if args.cnn { 5 } else { 10 });
    let checkpoint = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| format!("runs/ddp-mnist-{name}.safetensors").into());
    let load = |train| -> Result<Mnist> {
        Ok(Mnist::vendored(train)?
            .normalize(MNIST_MEAN, MNIST_STD)
            .flatten(!args.cnn))
    };
    let (train_set, test_set) = (load(true)?, load(false)?);
    let n_train = train_set.len();
    let sampler = Arc::new(DistributedSampler::new(n_train, world, rank)?.seed(args.seed));
    let train_dl = DataLoader::builder(train_set)
        .batch_size(args.batch_size / world)
        .sampler(Arc::clone(&sampler))
        .num_workers(args.workers)
        .build()?;
    // Each rank evaluates every world-th test digit, without padding, so the summed counts
    // are exact.
    let mine: Vec<usize> = (rank..test_set.len()).step_by(world).collect();
    let test_dl = DataLoader::builder(Subset::new(test_set, mine)?)
        .batch_size(1000)
        .build()?;

    manual_seed(args.seed);
    let mut model = build_model(args.cnn);
    let adam = AdamConfig {
        lr: args.lr,
        ..Default::default()
    };
    let mut opt = Adam::new(model.named_parameters(), adam)?;
    let mut first_epoch = 0;
    if args.resume {
        // Every rank reads the file rank 0 wrote (a shared file system across machines).
        let ckpt = TrainingCheckpoint::load(&checkpoint)?;
        ckpt.restore(&mut model, &mut opt, None)?;
        first_epoch = ckpt.epoch as usize;
    }
    let mut model = DistributedDataParallel::new(model)?;
    if rank == 0 {
        println!(
            "{name} ({} parameters) on {world} ranks × {} threads, {n_train} training digits, \
             global batch {} ({} per rank), Adam lr {}",
            model.num_parameters(),
            args.threads,
            args.batch_size,
            args.batch_size / world,
            args.lr
        );
        if first_epoch > 0 {
            println!(
                "resumed from {} after epoch {first_epoch}",
                checkpoint.display()
            );
        }
    }

    for epoch in first_epoch..epochs {
        let start = Instant::now();
        seed_epoch(args.seed, epoch as u64);
        sampler.set_epoch(epoch as u64);
        model.train();
        let (mut loss_sum, mut seen) = (0.0, 0.0);
        for (xb, yb) in &train_dl {
            let loss = cross_entropy(&model.forward(&xb), &yb);
            loss.backward();
            opt.step();
            opt.zero_grad();
            let n = yb.numel() as f64;
            loss_sum += loss.item() * n;
            seen += n;
        }
        model.eval();
        let (test_loss, correct, tested) = evaluate(model.module(), &test_dl);
        // Sums over the ranks: [train loss · n, n, test loss · n, correct, n].
        let m = Tensor::from_vec(vec![loss_sum, seen, test_loss, correct, tested], &[5]);
        distributed::all_reduce(&m, ReduceOp::Sum);
        let m = m.to_vec::<f64>();
        if rank == 0 {
            println!(
                "epoch {:>2}/{epochs}: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%, \
                 {:.1} s, {:.0} samples/s",
                epoch + 1,
                m[0] / m[1],
                m[2] / m[4],
                100.0 * m[3] / m[4],
                start.elapsed().as_secs_f64(),
                m[1] / start.elapsed().as_secs_f64()
            );
            save(&model, &opt, epoch + 1, args.seed, &checkpoint)?;
        }
        // No rank reads the checkpoint before it is complete.
        distributed::barrier();
    }
    Ok(())
}

/// Summed cross-entropy, correct predictions and count over this rank's test digits.
fn evaluate(model: &dyn Layer, dl: &DataLoader<Subset<Mnist>>) -> (f64, f64, f64) {
    no_grad(|| {
        let (mut loss, mut correct, mut n) = (0.0, 0.0, 0.0);
        for (xb, yb) in dl {
            let out = model.forward(&xb);
            let bs = yb.numel() as f64;
            loss += cross_entropy(&out, &yb).item() * bs;
            correct += out.argmax(1, false).eq(&yb).float().sum().item();
            n += bs;
        }
        (loss, correct, n)
    })
}

/// Rank 0's checkpoint: the plain model's keys (`0.weight`, …), so `examples/mnist.rs` and
/// PyTorch load it as they load a single-process one.
fn save(
    model: &dyn Module,
    opt: &dyn Optimizer,
    epochs_done: usize,
    seed: u64,
    path: &std::path::Path,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    TrainingCheckpoint::capture(model, opt, None, epochs_done as u64, seed).save(path)
}
