//! Optimizers, learning-rate schedulers and gradient clipping (PyTorch's `torch.optim` and
//! `torch.nn.utils.clip_grad_*`).

mod adagrad;
mod adam;
mod adamw;
mod optimizer;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use optimizer::{GroupRates, IntoParam, Optimizer, ParamGroup};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};
