//! Neural-network building blocks: the [`Module`] trait and its derive, [`Forward`],
//! parameters and buffers, layers, [`Sequential`] and `sequential!`, initialisation.

mod activation;
mod batchnorm;
mod conv2d;
mod dropout;
mod embedding;
mod flatten;
mod forward;
pub mod functional;
pub mod init;
mod layernorm;
mod linear;
mod list;
mod loss;
mod module;
mod parameter;
mod pooling;
mod sequential;
mod size;
mod state_dict;

pub use activation::{GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh};
pub use batchnorm::{BatchNorm1d, BatchNorm2d};
pub use conv2d::Conv2d;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::{Flatten, Identity};
pub use forward::{Forward, Layer};
pub use functional::Reduction;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use loss::{BceWithLogitsLoss, CrossEntropyLoss, L1Loss, MseLoss, NllLoss, SmoothL1Loss};
pub use module::{Member, MemberMut, Module, fmt_module};
pub use parameter::{Buffer, Parameter};
pub use pooling::{AvgPool2d, MaxPool2d};
pub use sequential::{Layers, Sequential};
pub use size::Size2;
pub use state_dict::{IncompatibleKeys, StateDict};
pub use torchlet_macros::{Module, sequential};

mod summary;
pub use sequential::{MAX_LAYERS, probe};
pub use summary::{Summary, summary};
