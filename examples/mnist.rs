//! The MNIST training job: an MLP or a small CNN trained with Adam (or AdamW, or SGD with
//! momentum), a progress bar with the running loss and samples/s, train loss and test
//! accuracy after every epoch, a training checkpoint after every epoch that `--resume`
//! continues from, and a metrics CSV and a loss/accuracy plot at the end.
//!
//! ```sh
//! cargo run --release --example mnist                    # MLP, 10 epochs
//! cargo run --release --example mnist -- --model cnn     # CNN, 5 epochs
//! cargo run --release --example mnist -- --help
//! ```

#[path = "mnist/args.rs"]
mod args;
#[path = "mnist/plot.rs"]
mod plot;

use args::{Args, Command, ModelKind, OptimizerKind, SchedulerKind};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use torchlet::checkpoint::{TrainingCheckpoint, seed_epoch};
use torchlet::data::{DataLoader, MNIST_MEAN, MNIST_STD, Mnist};
use torchlet::metrics::{Accuracy, Mean};
use torchlet::nn::functional::cross_entropy;
use torchlet::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, CosineAnnealingLr, LrScheduler, Optimizer, Sgd,
    SgdConfig, StepLr,
};
use torchlet::prelude::*;
use torchlet::progress::Progress;

type Error = Box<dyn std::error::Error>;

/// The measurements of one epoch, a row of the metrics CSV.
#[derive(Clone, Copy, Debug)]
struct Epoch {
    train_loss: f64,
    test_loss: f64,
    test_acc: f64,
    lr: f64,
    seconds: f64,
}

const COLUMNS: usize = 5;

impl Epoch {
    fn to_row(self) -> [f64; COLUMNS] {
        [
            self.train_loss,
            self.test_loss,
            self.test_acc,
            self.lr,
            self.seconds,
        ]
    }

    fn from_row(r: &[f64]) -> Epoch {
        Epoch {
            train_loss: r[0],
            test_loss: r[1],
            test_acc: r[2],
            lr: r[3],
            seconds: r[4],
        }
    }
}

fn main() -> ExitCode {
    match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", args::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Train(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mnist: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("mnist: {e}");
            ExitCode::from(2)
        }
    }
}

/// `784 → 128 → 10` or two conv-BN-ReLU-pool blocks and a linear classifier; keys as
/// PyTorch's `nn.Sequential` would name them.
fn build_model(kind: ModelKind) -> Box<dyn Layer> {
    match kind {
        ModelKind::Mlp => Box::new(sequential![
            Linear::new(784, 128),
            ReLU,
            Linear::new(128, 10)
        ]),
        ModelKind::Cnn => Box::new(sequential![
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
        ]),
    }
}

fn build_optimizer(args: &Args, model: &dyn Module) -> torchlet::Result<Box<dyn Optimizer>> {
    let params = model.named_parameters();
    let lr = args.lr;
    Ok(match args.optimizer {
        OptimizerKind::Adam => Box::new(Adam::new(
            params,
            AdamConfig {
                lr,
                ..Default::default()
            },
        )?),
        OptimizerKind::AdamW => Box::new(AdamW::new(
            params,
            AdamWConfig {
                lr,
                ..Default::default()
            },
        )?),
        OptimizerKind::Sgd => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr,
                momentum: 0.9,
                ..Default::default()
            },
        )?),
    })
}

fn build_scheduler(
    args: &Args,
    opt: &dyn Optimizer,
) -> torchlet::Result<Option<Box<dyn LrScheduler>>> {
    Ok(match args.scheduler {
        SchedulerKind::None => None,
        SchedulerKind::Cosine => Some(Box::new(CosineAnnealingLr::new(opt, args.epochs, 0.0)?)),
        SchedulerKind::Step => Some(Box::new(StepLr::new(opt, (args.epochs / 3).max(1), 0.1)?)),
    })
}

fn load_mnist(args: &Args, train: bool) -> torchlet::Result<Mnist> {
    let set = match &args.data_dir {
        Some(dir) => Mnist::from_dir(dir, train)?,
        None => Mnist::vendored(train)?,
    };
    Ok(set
        .normalize(MNIST_MEAN, MNIST_STD)
        .flatten(args.model == ModelKind::Mlp))
}

fn run(args: &Args) -> Result<(), Error> {
    let (train, test) = (load_mnist(args, true)?, load_mnist(args, false)?);
    let (n_train, n_test) = (train.len(), test.len());
    let train_dl = DataLoader::builder(train)
        .batch_size(args.batch_size)
        .shuffle(true)
        .seed(args.seed)
        .num_workers(args.workers)
        .build()?;
    let test_dl = DataLoader::builder(test).batch_size(1000).build()?;

    manual_seed(args.seed);
    let mut model = build_model(args.model);
    let mut opt = build_optimizer(args, &model)?;
    let mut sched = build_scheduler(args, &*opt)?;
    let mut history: Vec<Epoch> = Vec::new();
    let mut seed = args.seed;
    if args.resume {
        let sched = sched.as_mut().map(|s| s.as_mut() as &mut dyn LrScheduler);
        let ckpt = resume(args, &mut model, &mut *opt, sched)?;
        seed = ckpt.seed;
        history = ckpt.meta("history").map(read_history).unwrap_or_default();
        history.truncate(ckpt.epoch as usize);
    }
    println!(
        "{} ({} parameters), {} training and {} test digits, {:?} lr {}, batch size {}",
        args.model.name(),
        model.num_parameters(),
        n_train,
        n_test,
        args.optimizer,
        args.lr,
        args.batch_size
    );

    for epoch in history.len()..args.epochs {
        let start = Instant::now();
        seed_epoch(seed, epoch as u64);
        train_dl.set_epoch(epoch as u64);
        let lr = opt.lr();
        model.train();
        let mut bar = Progress::epoch(epoch, args.epochs, train_dl.len());
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (xb, yb) in train_dl.iter() {
            let loss = cross_entropy(&model.forward(&xb), &yb);
            loss.backward();
            opt.step();
            opt.zero_grad();
            let n = yb.numel();
            loss_sum += loss.item() * n as f64;
            seen += n;
            bar.batch(n, loss_sum / seen as f64);
        }
        bar.finish();
        if let Some(s) = sched.as_mut() {
            s.step();
        }
        model.eval();
        let (test_loss, test_acc) = evaluate(&model, &test_dl);
        let row = Epoch {
            train_loss: loss_sum / seen.max(1) as f64,
            test_loss,
            test_acc,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        };
        history.push(row);
        println!(
            "epoch {:>2}/{}: train loss {:.4}, test loss {:.4}, test accuracy {:.2}%, {:.1} s",
            epoch + 1,
            args.epochs,
            row.train_loss,
            row.test_loss,
            100.0 * row.test_acc,
            row.seconds
        );
        save_checkpoint(args, &model, &*opt, sched.as_deref(), seed, &history)?;
    }

    let total: f64 = history.iter().map(|e| e.seconds).sum();
    if let Some(last) = history.last() {
        println!(
            "test accuracy {:.2}% after {} epochs, {total:.1} s of training",
            100.0 * last.test_acc,
            history.len()
        );
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let csv = args.out.join(format!("metrics-{}.csv", args.model.name()));
    write_csv(&csv, &history)?;
    let png = args.out.join(format!("mnist-{}.png", args.model.name()));
    write_plot(&png, &history)?;
    println!(
        "wrote {}, {} and {}",
        args.checkpoint.display(),
        csv.display(),
        png.display()
    );
    Ok(())
}

/// Mean cross-entropy and accuracy over the test set, without building a graph.
fn evaluate(model: &dyn Layer, dl: &DataLoader<Mnist>) -> (f64, f64) {
    no_grad(|| {
        let (mut loss, mut acc) = (Mean::new(), Accuracy::new());
        for (xb, yb) in dl {
            let out = model.forward(&xb);
            loss.update_weighted(cross_entropy(&out, &yb).item(), yb.numel() as f64);
            acc.update(&out, &yb);
        }
        (loss.compute(), acc.compute())
    })
}

fn model_code(kind: ModelKind) -> i64 {
    match kind {
        ModelKind::Mlp => 0,
        ModelKind::Cnn => 1,
    }
}

fn save_checkpoint(
    args: &Args,
    model: &dyn Module,
    opt: &dyn Optimizer,
    sched: Option<&dyn LrScheduler>,
    seed: u64,
    history: &[Epoch],
) -> Result<(), Error> {
    if let Some(dir) = args
        .checkpoint
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let rows: Vec<f64> = history.iter().flat_map(|e| e.to_row()).collect();
    let ckpt = TrainingCheckpoint::capture(model, opt, sched, history.len() as u64, seed)
        .with_meta("model", Tensor::from_vec(vec![model_code(args.model)], &[]))
        .with_meta("history", Tensor::from_vec(rows, &[history.len(), COLUMNS]));
    ckpt.save(&args.checkpoint)?;
    Ok(())
}

fn resume(
    args: &Args,
    model: &mut dyn Module,
    opt: &mut dyn Optimizer,
    sched: Option<&mut dyn LrScheduler>,
) -> Result<TrainingCheckpoint, Error> {
    let path = &args.checkpoint;
    let ckpt = TrainingCheckpoint::load(path)?;
    let saved = ckpt.meta("model").map(|t| t.to_vec::<i64>());
    if saved.is_some_and(|m| m != [model_code(args.model)]) {
        let other = if args.model == ModelKind::Mlp {
            "cnn"
        } else {
            "mlp"
        };
        return Err(format!(
            "{}: the checkpoint holds a {other} model, not {}; pass --model {other} or another \
             --checkpoint",
            path.display(),
            args.model.name()
        )
        .into());
    }
    ckpt.restore(model, opt, sched)
        .map_err(|e| format!("{}: cannot resume: {e}", path.display()))?;
    if ckpt.seed != args.seed {
        println!("resuming with the checkpoint's seed {}", ckpt.seed);
    }
    println!("resumed from {} after epoch {}", path.display(), ckpt.epoch);
    Ok(ckpt)
}

fn read_history(t: &Tensor) -> Vec<Epoch> {
    t.to_vec::<f64>()
        .chunks_exact(COLUMNS)
        .map(Epoch::from_row)
        .collect()
}

fn write_csv(path: &Path, history: &[Epoch]) -> Result<(), Error> {
    let mut text = String::from("epoch,train_loss,test_loss,test_acc,lr,seconds\n");
    for (i, e) in history.iter().enumerate() {
        text += &format!(
            "{},{:.6},{:.6},{:.4},{},{:.3}\n",
            i + 1,
            e.train_loss,
            e.test_loss,
            e.test_acc,
            e.lr,
            e.seconds
        );
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn write_plot(path: &Path, history: &[Epoch]) -> Result<(), Error> {
    let column = |f: fn(&Epoch) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    let (train_loss, test_loss, test_acc) = (
        column(|e| e.train_loss),
        column(|e| e.test_loss),
        column(|e| e.test_acc),
    );
    let loss = plot::Panel {
        title: "cross-entropy loss",
        series: vec![
            plot::Series {
                name: "train",
                color: plot::BLUE,
                values: &train_loss,
            },
            plot::Series {
                name: "test",
                color: plot::ORANGE,
                values: &test_loss,
            },
        ],
        percent: false,
    };
    let acc = plot::Panel {
        title: "test accuracy",
        series: vec![plot::Series {
            name: "test",
            color: plot::GREEN,
            values: &test_acc,
        }],
        percent: true,
    };
    plot::write_png(path, &[loss, acc])?;
    Ok(())
}
