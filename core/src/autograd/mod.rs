//! Reverse-mode automatic differentiation, define-by-run as in PyTorch.
//!
//! NOTE [ Graph layout ] says how the graph is kept and freed, and NOTE [ Anomaly mode ] what
//! [`detect_anomaly`] reports.
//!
//! NOTE [ Post-accumulate-grad hooks ] in `hooks.rs` says which hooks a pass runs on leaves.
//!
//! # NOTE [ Graph layout ]
//! Every tensor produced by a differentiable op while grad mode is on carries a `grad_fn`: an
//! `Arc<Node>` holding the op's backward closure and the input tensors that require grad
//! (the edges). Leaves (tensors made by the user, parameters) have no `grad_fn`; their
//! gradient accumulates into their `grad` slot. The backward closure captures what it needs
//! (saved inputs or outputs) as `Saved` values, which remember the version of the tensor
//! they came from. `backward` counts each node's consumers, then runs the nodes in
//! dependency order (each exactly once, after all its consumers), summing gradients that
//! reach a node along several paths. Unless the graph is retained, each node drops its
//! closure and edges as soon as it has run, freeing activations early; running it again
//! panics with PyTorch's message.
//!
//! # NOTE [ Anomaly mode ]
//! - Off, it costs one relaxed atomic load per recorded op and per layer call: nothing is
//!   captured, nothing is scanned.
//! - On, every op run with grad mode on scans its output; a non-finite value panics (as
//!   PyTorch raises a `RuntimeError`) at the op's caller, naming the op, its input and output
//!   shapes, which inputs already held non-finite values, the module path and the source
//!   line (`#[track_caller]` runs from the public ops down to the recording). Every recorded
//!   node keeps that context, and `backward` scans each gradient a node returns, reporting
//!   the first bad one with the context of the op that created the node, at the line that
//!   called `backward()`.
//! - A panic, not a `Result`: ops return tensors, and threading a `Result` through every op
//!   would change every model's code for a debugging mode. The message is the report; a
//!   caller that must keep running catches it with `std::panic::catch_unwind`.
//! - The module path comes from the scopes that modules enter in their `forward` (see
//!   [`ModuleScope`](crate::nn::ModuleScope) and its NOTE [ Module scopes ]).

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
