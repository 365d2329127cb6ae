//! The error type for everything that touches the outside world or user configuration.
//!
//! Tensor math panics on misuse (like slice indexing does), naming the op and the shapes;
//! reading files, loading checkpoints and checking settings return `Result<_, Error>` with a
//! message that names the thing, the value and the way out.

use std::path::PathBuf;

/// What went wrong outside of tensor math: a file, a checkpoint, a setting, a data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose contents are not what its format promises.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// A setting (DataLoader option, optimizer hyper-parameter, ...) that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A data set item that could not be produced.
    #[error("{0}")]
    Data(String),
    /// A state dict that does not fit a module: every missing key, unexpected key and
    /// shape mismatch (`(key, shape in the state dict, shape in the module)`) at once;
    /// `matched` counts the keys that fit.
    #[error("{}", state_dict_message(module, *matched, missing, unexpected, mismatched))]
    StateDict {
        module: String,
        matched: usize,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
}

/// PyTorch's wording: `Error(s) in loading state_dict for Linear:` and one line per kind.
fn state_dict_message(
    module: &str,
    matched: usize,
    missing: &[String],
    unexpected: &[String],
    mismatched: &[(String, Vec<usize>, Vec<usize>)],
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
    if matched == 0 && mismatched.is_empty() {
        out += "\n\tno key matches: was the checkpoint saved from another model, or with a \
                prefix such as `module.`?";
    }
    out
}

/// `Result` with torchlet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
