//! Neural-network building blocks: the [`Module`] trait and its derive, [`Forward`],
//! parameters and buffers, layers, [`Sequential`] and `sequential!`, initialisation.

mod activation;
mod adaptive_pool;
mod attention;
mod batchnorm;
mod conv1d;
mod conv2d;
mod conv_transpose;
mod dropout;
mod embedding;
mod flatten;
mod forward;
pub mod functional;
mod groupnorm;
pub mod init;
mod instancenorm;
mod layernorm;
mod linear;
mod list;
mod loss;
mod module;
mod parameter;
mod pooling;
mod rnn;
mod sequential;
mod size;
mod state_dict;
mod transformer;

pub use activation::{GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh};
pub use adaptive_pool::AdaptiveAvgPool2d;
pub use attention::{
    MultiheadAttention, NonDynamicallyQuantizableLinear, generate_square_subsequent_mask,
};
pub use batchnorm::{BatchNorm1d, BatchNorm2d};
pub use conv_transpose::ConvTranspose2d;
pub use conv1d::Conv1d;
pub use conv2d::Conv2d;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::{Flatten, Identity};
pub use forward::{Forward, Layer};
pub use functional::Reduction;
pub use groupnorm::GroupNorm;
pub use instancenorm::InstanceNorm2d;
pub use layernorm::LayerNorm;
pub use linear::Linear;
pub use loss::{
    BceLoss, BceWithLogitsLoss, CosineEmbeddingLoss, CrossEntropyLoss, HuberLoss, KlDivLoss,
    L1Loss, MseLoss, NllLoss, SmoothL1Loss,
};
pub use module::{Member, MemberMut, Module, fmt_module};
pub use parameter::{Buffer, Parameter};
pub use pooling::{AvgPool2d, MaxPool2d};
pub use rnn::{GRU, LSTM, RNN};
pub use sequential::{Layers, Sequential};
pub use size::Size2;
pub use state_dict::{IncompatibleKeys, StateDict};
pub use torchlet_macros::{Module, sequential};
pub use transformer::{
    Activation, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
};
