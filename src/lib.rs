//! torchlet: PyTorch's training stack rebuilt in Rust.
//!
//! A [`Tensor`] with reverse-mode autograd on ndarray, with PyTorch's names and semantics:
//!
//! ```
//! use torchlet::prelude::*;
//!
//! let w = Tensor::from_vec(vec![0.5f32, -1.0], &[2, 1]).requires_grad_(true);
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
//! let loss = x.matmul(&w).relu().sum();
//! loss.backward();
//! assert_eq!(w.grad().unwrap().to_vec::<f32>(), [0.0, 0.0]);
//! no_grad(|| w.sub_(&(&w.grad().unwrap() * 0.1)));
//! ```
//!
//! Users depend on this crate only; it re-exports `torchlet-core` at the same paths.
//! Coming from PyTorch? Start with the [`guide`].

#![warn(missing_docs)]

pub use torchlet_core::{
    DType, Element, Error, Result, StateDict, Tensor, get_num_threads, manual_seed, set_num_threads,
};
pub use torchlet_core::{
    autograd, checkpoint, data, dtype, error, memory, metrics, nn, ops, optim, parallel, progress,
    random, serialize, shape, state_dict, tensor,
};
pub use torchlet_macros::sequential;

pub mod guide;

/// Data-parallel training over MPI: [`distributed::DistributedDataParallel`], collectives,
/// the process group. Only with the cargo feature `distributed` (see the README).
#[cfg(feature = "distributed")]
pub use torchlet_core::distributed;

/// The names a training script needs: `use torchlet::prelude::*;`.
pub mod prelude {
    pub use torchlet_core::autograd::{NoGradGuard, no_grad};
    pub use torchlet_core::data::{DataLoader, Dataset, TensorDataset};
    pub use torchlet_core::nn::functional::{cross_entropy, mse_loss};
    pub use torchlet_core::nn::{
        AvgPool2d, BatchNorm1d, BatchNorm2d, Buffer, Conv2d, Dropout, Embedding, Flatten, Forward,
        GELU, Identity, Layer, LayerNorm, LeakyReLU, Linear, LogSoftmax, MaxPool2d, Module,
        Parameter, ReLU, Sequential, Sigmoid, Softmax, StateDict, Tanh,
    };
    pub use torchlet_core::nn::{CrossEntropyLoss, MseLoss};
    pub use torchlet_core::optim::{Adam, AdamW, LrScheduler, Optimizer, Sgd};
    pub use torchlet_core::{DType, Tensor, manual_seed};
    pub use torchlet_macros::sequential;
}

/// The README's code blocks run as doc tests, so the tour stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The examples on the pages of `#[derive(Module)]` and `sequential!`: written in
/// torchlet-macros, which cannot depend on this crate, they run here.
#[cfg(doctest)]
#[doc = include_str!("../macros/doc/derive_module.md")]
struct DeriveModuleDoctests;

/// See [`DeriveModuleDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../macros/doc/sequential.md")]
struct SequentialDoctests;
