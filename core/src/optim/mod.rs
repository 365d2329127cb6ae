//! Optimizers, learning-rate schedulers and gradient clipping (PyTorch's `torch.optim` and
//! `torch.nn.utils.clip_grad_*`).

mod adagrad;
mod adam;
mod adamw;
mod clip_grad;
mod lambda_lr;
mod lr_scheduler;
mod one_cycle_lr;
mod optimizer;
mod reduce_lr_on_plateau;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use clip_grad::{clip_grad_norm_, clip_grad_norm_with, clip_grad_value_};
pub use lambda_lr::LambdaLr;
pub use lr_scheduler::{
    CosineAnnealingLr, ExponentialLr, LinearLr, LrScheduler, MultiStepLr, StepLr,
};
pub use one_cycle_lr::{AnnealStrategy, OneCycleLr, OneCycleLrConfig};
pub use optimizer::{GroupRates, IntoParam, Optimizer, ParamGroup};
pub use reduce_lr_on_plateau::{
    PlateauMode, ReduceLrOnPlateau, ReduceLrOnPlateauConfig, ThresholdMode,
};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};
