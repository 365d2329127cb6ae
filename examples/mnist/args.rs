//! The command line of the MNIST job: `--name value` or `--name=value`, read with lexopt
//! (a small, dependency-free parser: clap would double the examples' build time) so that
//! paths may be any OS string and `--resume=x` is refused rather than taken for `--resume`.

use lexopt::Arg::{Long, Short, Value};
use std::ffi::OsString;
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

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`).
///
/// # Errors
/// A message naming the option and the value at fault, and what would be accepted.
pub fn parse(args: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Command, String> {
    let mut parser = lexopt::Parser::from_args(args);
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
    while let Some(arg) = parser.next().map_err(message)? {
        let name = match &arg {
            Long(long) => format!("--{long}"),
            Short(short) => format!("-{short}"),
            Value(value) => {
                return Err(format!(
                    "unexpected argument `{}`; options start with `--`, see --help",
                    value.to_string_lossy()
                ));
            }
        };
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("resume") => resume = true,
            Long("detect-anomaly") => detect_anomaly = true,
            Long("model") => {
                model = choice(
                    &name,
                    value(&mut parser)?,
                    &[("mlp", ModelKind::Mlp), ("cnn", ModelKind::Cnn)],
                )?
            }
            Long("optimizer") => {
                let kinds = [
                    ("adam", OptimizerKind::Adam),
                    ("adamw", OptimizerKind::AdamW),
                    ("sgd", OptimizerKind::Sgd),
                ];
                optimizer = choice(&name, value(&mut parser)?, &kinds)?
            }
            Long("scheduler") => {
                let kinds = [
                    ("none", SchedulerKind::None),
                    ("cosine", SchedulerKind::Cosine),
                    ("step", SchedulerKind::Step),
                ];
                scheduler = choice(&name, value(&mut parser)?, &kinds)?
            }
            Long("epochs") => epochs = Some(positive(&name, value(&mut parser)?)?),
            Long("batch-size") => batch_size = positive(&name, value(&mut parser)?)?,
            Long("lr") => {
                lr = number(
                    &name,
                    value(&mut parser)?,
                    "a positive number such as 0.001",
                )?
            }
            Long("seed") => seed = number(&name, value(&mut parser)?, "a non-negative integer")?,
            Long("workers") => {
                workers = number(&name, value(&mut parser)?, "a non-negative integer")?
            }
            Long("data-dir") => data_dir = Some(PathBuf::from(value(&mut parser)?)),
            Long("checkpoint") => checkpoint = Some(PathBuf::from(value(&mut parser)?)),
            Long("out") => out = PathBuf::from(value(&mut parser)?),
            _ => {
                return Err(format!(
                    "unknown option `{name}`; see --help for the options"
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

/// The value of the option just read (`--name value` or `--name=value`).
fn value(parser: &mut lexopt::Parser) -> Result<OsString, String> {
    parser.value().map_err(message)
}

/// lexopt's errors in this parser's words: the option, the value, and the way out.
fn message(error: lexopt::Error) -> String {
    match error {
        lexopt::Error::MissingValue {
            option: Some(option),
        } => format!("{option} needs a value; see --help"),
        lexopt::Error::UnexpectedValue { option, value } => format!(
            "{option} takes no value, got `{}`; write `{option}` alone",
            value.to_string_lossy()
        ),
        lexopt::Error::UnexpectedOption(option) => {
            format!("unknown option `{option}`; see --help for the options")
        }
        other => format!("{other}; see --help"),
    }
}

/// A value that must be text (a number, a name); paths take any OS string instead.
fn text(name: &str, value: OsString) -> Result<String, String> {
    value.into_string().map_err(|value| {
        format!(
            "{name}: `{}` is not valid UTF-8; expected plain text",
            value.to_string_lossy()
        )
    })
}

fn choice<T: Copy>(name: &str, value: OsString, options: &[(&str, T)]) -> Result<T, String> {
    let value = text(name, value)?;
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

fn number<T: FromStr>(name: &str, value: OsString, expected: &str) -> Result<T, String> {
    let value = text(name, value)?;
    value
        .parse()
        .map_err(|_| format!("{name}: expected {expected}, got `{value}`"))
}

fn positive(name: &str, value: OsString) -> Result<usize, String> {
    match number(name, value, "a positive integer")? {
        0 => Err(format!("{name}: expected a positive integer, got `0`")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    //! Run by tests/mnist_args.rs, which includes this file.

    use super::*;

    fn train(args: &[&str]) -> Args {
        match parse(args) {
            Ok(Command::Train(args)) => *args,
            Ok(Command::Help) => panic!("{args:?}: help instead of a run"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args) {
            Err(e) => e,
            Ok(_) => panic!("{args:?} was accepted"),
        }
    }

    #[test]
    fn defaults_and_every_option_in_both_spellings() {
        let a = train(&[]);
        assert_eq!(
            (a.model, a.epochs, a.batch_size, a.lr),
            (ModelKind::Mlp, 10, 64, 1e-3)
        );
        assert_eq!(a.checkpoint, PathBuf::from("runs/mnist-mlp.safetensors"));
        assert!(!a.resume);
        let a = train(&[
            "--model=cnn",
            "--epochs",
            "2",
            "--batch-size=32",
            "--lr",
            "0.01",
            "--optimizer=sgd",
            "--scheduler",
            "cosine",
            "--data-dir=/data/mnist",
            "--checkpoint",
            "ck.safetensors",
            "--resume",
            "--seed=7",
            "--workers",
            "3",
            "--out=o",
        ]);
        assert_eq!(
            (a.model, a.epochs, a.batch_size, a.lr),
            (ModelKind::Cnn, 2, 32, 0.01)
        );
        assert_eq!(
            (a.optimizer, a.scheduler),
            (OptimizerKind::Sgd, SchedulerKind::Cosine)
        );
        assert_eq!(a.data_dir, Some(PathBuf::from("/data/mnist")));
        assert_eq!(a.checkpoint, PathBuf::from("ck.safetensors"));
        assert_eq!((a.resume, a.seed, a.workers), (true, 7, 3));
        assert_eq!(a.out, PathBuf::from("o"));
        assert!(matches!(parse(["-h"]), Ok(Command::Help)));
        assert!(matches!(
            parse(["--epochs", "2", "--help"]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn a_flag_given_a_value_is_refused() {
        assert_eq!(
            error(&["--resume=x"]),
            "--resume takes no value, got `x`; write `--resume` alone"
        );
    }

    #[test]
    fn mistakes_name_the_option_the_value_and_the_fix() {
        let cases: [(&[&str], &str); 8] = [
            (&["--epochs"], "--epochs needs a value; see --help"),
            (
                &["--epochs", "0"],
                "--epochs: expected a positive integer, got `0`",
            ),
            (
                &["--lr=fast"],
                "--lr: expected a positive number such as 0.001, got `fast`",
            ),
            (&["--lr", "-1"], "--lr must be a positive number, got -1"),
            (
                &["--model", "rnn"],
                "--model: unknown value `rnn`; expected one of mlp, cnn",
            ),
            (
                &["--frobnicate"],
                "unknown option `--frobnicate`; see --help for the options",
            ),
            (&["-x"], "unknown option `-x`; see --help for the options"),
            (
                &["cnn"],
                "unexpected argument `cnn`; options start with `--`, see --help",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(error(args), want, "{args:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_paths_or_clear_errors() {
        use std::os::unix::ffi::OsStringExt;
        let odd = || OsString::from_vec(b"runs-\xff".to_vec());
        let args = [OsString::from("--out"), odd()];
        let Ok(Command::Train(a)) = parse(args) else {
            panic!("a non-UTF-8 path is refused")
        };
        assert_eq!(a.out, PathBuf::from(odd()));
        let mut data_dir = OsString::from("--data-dir=");
        data_dir.push(odd());
        let Ok(Command::Train(a)) = parse([data_dir]) else {
            panic!("a non-UTF-8 `--data-dir=` is refused")
        };
        assert_eq!(a.data_dir, Some(PathBuf::from(odd())));
        let Err(e) = parse([OsString::from("--seed"), odd()]) else {
            panic!("a non-UTF-8 seed is accepted")
        };
        assert_eq!(
            e,
            "--seed: `runs-\u{fffd}` is not valid UTF-8; expected plain text"
        );
        assert!(parse([odd()]).is_err());
    }
}
