//! Neural-network building blocks: parameters, modules, layers.

mod parameter;

pub use parameter::{Buffer, Parameter};
