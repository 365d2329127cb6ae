//! torchlet-core: the Tensor, autograd, layers, data, optimizers and serialization of torchlet.
//!
//! Users depend on the facade crate `torchlet`, which re-exports everything here.

#![warn(missing_docs)]

extern crate self as torchlet;

pub mod autograd;
pub mod checkpoint;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod dtype;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod progress;
pub mod random;
pub mod serialize;
pub mod shape;
pub mod state_dict;
pub mod tensor;

mod display;

/// The dtype dispatch macros, at the crate root where every op reaches them.
pub(crate) use dtype::{dispatch_float, dispatch_float_tuple, dispatch_float2};

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use parallel::{get_num_threads, set_num_threads};
pub use random::manual_seed;
pub use state_dict::StateDict;
pub use tensor::Tensor;
