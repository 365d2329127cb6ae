//! Reverse-mode automatic differentiation, define-by-run as in PyTorch.
//!
//! See NOTE [ Graph layout ] in `graph.rs` for how the graph is kept and freed, and NOTE
//! [ Post-accumulate-grad hooks ] in `hooks.rs` for the hooks a pass runs on leaves.

pub(crate) mod anomaly;
mod backward;
mod grad_mode;
mod gradcheck;
pub(crate) mod graph;
mod hooks;

pub use anomaly::{detect_anomaly, detect_anomaly_in, is_anomaly_enabled, set_detect_anomaly};
pub use backward::backward;
pub use grad_mode::{NoGradGuard, is_grad_enabled, no_grad, set_grad_enabled};
pub use gradcheck::{GradcheckError, GradcheckOptions, gradcheck, gradcheck_with};
pub use graph::Node;
pub use hooks::RemovableHandle;
