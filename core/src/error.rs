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
}

/// `Result` with torchlet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
