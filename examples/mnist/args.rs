//! The command line of the MNIST job: `--name value` or `--name=value`, by hand rather than
//! with clap, so that building the examples stays quick.

use std::path::PathBuf;
use std::str::FromStr;

pub const HELP: &str = "\
Train a classifier on MNIST and report test accuracy after every epoch.

Usage: cargo run --release --example mnist -- [OPTIONS]

Options:
  --model mlp|cnn          784-128-10 MLP or a small CNN [default: mlp]
  --epochs N               [default: 10 for mlp, 5 for cnn]
  --batch-size N           [default: 64]
  --lr X                   learning rate [default: 0.001]
  --optimizer adam|adamw|sgd
                           sgd uses momentum 0.9 [default: adam]
  --scheduler none|cosine|step
                           learning-rate schedule over the epochs [default: none]
  --data-dir DIR           a directory with the full MNIST (train-images-idx3-ubyte[.gz], …)
                           [default: the 8000 + 2000 digits vendored in data/mnist-10k]
  --checkpoint PATH        training checkpoint, written after every epoch
                           [default: runs/mnist-<model>.safetensors]
  --resume                 continue from --checkpoint
  --seed N                 seed of the weights, the shuffling and dropout [default: 0]
  --workers N              DataLoader worker threads [default: 0]
  --out DIR                where metrics.csv and the plot go [default: runs]
  --detect-anomaly         stop at the first op that makes a NaN or an infinity, naming
                           the op, the shapes, the layer and the line (slower)
  -h, --help               print this help
";

/// The network to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Mlp,
    Cnn,
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

/// The learning-rate schedule, stepped once per epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    None,
    Cosine,
    Step,
}

/// The options after parsing, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Args {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub scheduler: SchedulerKind,
    pub data_dir: Option<PathBuf>,
    pub checkpoint: PathBuf,
    pub resume: bool,
    pub seed: u64,
    pub workers: usize,
    pub out: PathBuf,
    pub detect_anomaly: bool,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }
}

/// What the command line asked for: a run, or the help text.
pub enum Command {
    Train(Box<Args>),
    Help,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message naming the option and the value at fault, and what would be accepted.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut model = ModelKind::Mlp;
    let (mut epochs, mut checkpoint) = (None, None);
    let mut batch_size = 64;
    let mut lr: f64 = 1e-3;
    let mut optimizer = OptimizerKind::Adam;
    let mut scheduler = SchedulerKind::None;
    let mut data_dir = None;
    let mut resume = false;
    let mut detect_anomaly = false;
    let mut seed = 0;
    let mut workers = 0;
    let mut out = PathBuf::from("runs");
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value; see --help"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--resume" => resume = true,
            "--detect-anomaly" => detect_anomaly = true,
            "--model" => {
                model = choice(
                    &name,
                    &value()?,
                    &[("mlp", ModelKind::Mlp), ("cnn", ModelKind::Cnn)],
                )?
            }
            "--optimizer" => {
                let kinds = [
                    ("adam", OptimizerKind::Adam),
                    ("adamw", OptimizerKind::AdamW),
                    ("sgd", OptimizerKind::Sgd),
                ];
                optimizer = choice(&name, &value()?, &kinds)?
            }
            "--scheduler" => {
                let kinds = [
                    ("none", SchedulerKind::None),
                    ("cosine", SchedulerKind::Cosine),
                    ("step", SchedulerKind::Step),
                ];
                scheduler = choice(&name, &value()?, &kinds)?
            }
            "--epochs" => epochs = Some(positive(&name, &value()?)?),
            "--batch-size" => batch_size = positive(&name, &value()?)?,
            "--lr" => lr = number(&name, &value()?, "a positive number such as 0.001")?,
            "--seed" => seed = number(&name, &value()?, "a non-negative integer")?,
            "--workers" => workers = number(&name, &value()?, "a non-negative integer")?,
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--checkpoint" => checkpoint = Some(PathBuf::from(value()?)),
            "--out" => out = PathBuf::from(value()?),
            _ => {
                return Err(format!(
                    "unknown option `{arg}`; see --help for the options"
                ));
            }
        }
    }
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(format!("--lr must be a positive number, got {lr}"));
    }
    let default_epochs = match model {
        ModelKind::Mlp => 10,
        ModelKind::Cnn => 5,
    };
    let checkpoint =
        checkpoint.unwrap_or_else(|| out.join(format!("mnist-{}.safetensors", model.name())));
    Ok(Command::Train(Box::new(Args {
        model,
        epochs: epochs.unwrap_or(default_epochs),
        batch_size,
        lr,
        optimizer,
        scheduler,
        data_dir,
        checkpoint,
        resume,
        seed,
        workers,
        out,
        detect_anomaly,
    })))
}

fn choice<T: Copy>(name: &str, value: &str, options: &[(&str, T)]) -> Result<T, String> {
    options
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            format!(
                "{name}: unknown value `{value}`; expected one of {}",
                names.join(", ")
            )
        })
}

fn number<T: FromStr>(name: &str, value: &str, expected: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: expected {expected}, got `{value}`"))
}

fn positive(name: &str, value: &str) -> Result<usize, String> {
    match number(name, value, "a positive integer")? {
        0 => Err(format!("{name}: expected a positive integer, got `0`")),
        n => Ok(n),
    }
}
