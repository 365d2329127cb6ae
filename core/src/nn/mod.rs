//! Neural-network building blocks: parameters, modules, layers.

pub mod functional;
mod loss;
mod parameter;

pub use functional::Reduction;
pub use loss::{BceWithLogitsLoss, CrossEntropyLoss, L1Loss, MseLoss, NllLoss, SmoothL1Loss};
pub use parameter::{Buffer, Parameter};
