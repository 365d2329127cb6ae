//! torchlet-core: the Tensor, autograd, layers, data, optimizers and serialization of torchlet.
//!
//! Users depend on the facade crate `torchlet`, which re-exports everything here.

pub mod error;

pub use error::{Error, Result};
