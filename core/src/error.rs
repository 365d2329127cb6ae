//! The error type for everything that touches the outside world or user configuration.
//!
//! Tensor math panics on misuse (like slice indexing does), naming the op and the shapes;
//! reading files, loading checkpoints and checking settings return `Result<_, Error>` with a
//! message that names the thing, the value and the way out.

use crate::dtype::DType;
use std::path::PathBuf;

/// What went wrong outside of tensor math: a file, a checkpoint, a setting, a data set.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file whose contents are not what its format promises.
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, where in the file, and what was expected.
        message: String,
    },
    /// A setting (DataLoader option, optimizer hyper-parameter, ...) that cannot be used.
    Config(String),
    /// A data set item that could not be produced.
    Data(String),
    /// A NaN or an infinity where a finite value is needed (`clip_grad_norm_with` with
    /// `error_if_nonfinite`).
    NonFinite(String),
    /// A distributed job that cannot go on: MPI could not start, or the ranks disagree
    /// (different models on different ranks).
    Distributed(String),
    /// A state dict that does not fit a module: every missing key, unexpected key, shape
    /// mismatch (`(key, shape in the state dict, shape in the module)`) and dtype mismatch
    /// (an integer tensor for a floating-point one or the other way round) at once;
    /// `matched` counts the keys that fit.
    StateDict {
        /// The class name of the module (or optimizer) being loaded.
        module: String,
        /// How many keys fit.
        matched: usize,
        /// Keys the module has and the state dict lacks.
        missing: Vec<String>,
        /// Keys the state dict has and the module lacks.
        unexpected: Vec<String>,
        /// `(key, shape in the state dict, shape in the module)` for each shape mismatch.
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// `(key, dtype in the state dict, dtype in the module)` (boxed: `Error` stays
        /// small, every `Result` carries it).
        wrong_dtype: Box<[(String, DType, DType)]>,
    },
}

// Written out rather than derived with `thiserror`, whose macro crate (and the second
// major version of `syn` it builds) cost more build time than these few lines.
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Config(message)
            | Error::Data(message)
            | Error::NonFinite(message)
            | Error::Distributed(message) => f.write_str(message),
            Error::StateDict {
                module,
                matched,
                missing,
                unexpected,
                mismatched,
                wrong_dtype,
            } => f.write_str(&state_dict_message(
                module,
                *matched,
                missing,
                unexpected,
                mismatched,
                wrong_dtype,
            )),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// PyTorch's wording: `Error(s) in loading state_dict for Linear:` and one line per kind.
fn state_dict_message(
    module: &str,
    matched: usize,
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
    wrong_dtype: &[(String, DType, DType)],
) -> String {
    let quoted = |keys: &[String]| {
        keys.iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("Error(s) in loading state_dict for {module}:");
    if !missing.is_empty() {
        out += &format!("\n\tMissing key(s) in state_dict: {}.", quoted(missing));
    }
    if !unexpected.is_empty() {
        out += &format!(
            "\n\tUnexpected key(s) in state_dict: {}.",
            quoted(unexpected)
        );
    }
    for (key, got, want) in mismatched {
        out += &format!(
            "\n\tsize mismatch for {key}: copying a param with shape {got:?} from checkpoint, \
             the shape in current model is {want:?}."
        );
    }
    for (key, got, want) in wrong_dtype {
        out += &format!(
            "\n\tdtype mismatch for {key}: copying a param of dtype {got} from checkpoint, the \
             dtype in current model is {want}."
        );
    }
    if matched == 0 && mismatched.is_empty() && wrong_dtype.is_empty() {
        out += "\n\tno key matches: was the checkpoint saved from another model, or with a \
                prefix such as `module.`?";
    }
    out
}

/// `Result` with torchlet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_errors_name_the_path_and_keep_their_source() {
        let err = Error::Io {
            path: PathBuf::from("data/train.idx"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(err.to_string(), "data/train.idx: no such file");
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("no such file")
        );
        let config = Error::Config("batch_size must be at least 1, got 0".into());
        assert_eq!(config.to_string(), "batch_size must be at least 1, got 0");
        assert!(config.source().is_none());
    }
}
