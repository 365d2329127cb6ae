//! Anomaly detection (PyTorch's `torch.autograd.detect_anomaly`), with more to say: the
//! first op whose forward output or backward gradient holds a NaN or an infinity stops the
//! program with the op's name, the shapes, the module it ran under and the line that
//! created it. How, and at what cost: NOTE [ Anomaly mode ] on [`detect_anomaly`].

use crate::dtype::Storage;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether anomaly detection is on (for every thread, as in PyTorch).
#[inline]
pub fn is_anomaly_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns anomaly detection on or off for the whole program; returns the previous setting.
/// See NOTE [ Anomaly mode ] on [`detect_anomaly`](detect_anomaly#note--anomaly-mode-) for
/// what it reports.
pub fn set_detect_anomaly(enabled: bool) -> bool {
    ENABLED.swap(enabled, Ordering::Relaxed)
}

/// Runs `f` with anomaly detection on, then restores the previous setting (PyTorch's
/// `with torch.autograd.detect_anomaly():`).
///
/// # Panics
/// At the first op whose forward output, or the first backward gradient, holds a NaN or an
/// infinity, with the op, the shapes, the module path and the line that created the op:
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, autograd::detect_anomaly};
/// let x = Tensor::from_vec(vec![1.0f32, 0.0], &[2]).requires_grad_(true);
/// let caught = std::panic::catch_unwind(|| detect_anomaly(|| x.log().sum()));
/// let message = caught.unwrap_err().downcast::<String>().unwrap();
/// assert!(message.starts_with("anomaly detected: `log` gave -inf in its output [2]"));
/// ```
///
/// # NOTE [ Anomaly mode ]
/// - Off, it costs one relaxed atomic load per recorded op and per layer call: nothing is
///   captured, nothing is scanned.
/// - On, every op run with grad mode on scans its output; a non-finite value panics (as
///   PyTorch raises a `RuntimeError`) at the op's caller, naming the op, its input and output
///   shapes, which inputs already held non-finite values, the module path and the source
///   line (`#[track_caller]` runs from the public ops down to the recording). Every recorded
///   node keeps that context, and `backward` scans each gradient a node returns, reporting
///   the first bad one with the context of the op that created the node, at the line that
///   called `backward()`.
/// - A panic, not a `Result`: ops return tensors, and threading a `Result` through every op
///   would change every model's code for a debugging mode. The message is the report; a
///   caller that must keep running catches it with `std::panic::catch_unwind`.
/// - The module path comes from the scopes that modules enter in their `forward` (see
///   [`ModuleScope`](crate::nn::ModuleScope) and its NOTE [ Module scopes ]).
pub fn detect_anomaly<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_detect_anomaly(self.0);
        }
    }
    let _restore = Restore(set_detect_anomaly(true));
    f()
}

/// [`detect_anomaly`] with `model` as the root of the module paths it reports: every
/// submodule of `model` is named by its path from there (`encoder.block.fc (Linear)`), with
/// no [`ModuleScope`](crate::nn::ModuleScope) written in the model's own `forward`.
///
/// # Panics
/// As [`detect_anomaly`].
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::{Tensor, autograd::detect_anomaly_in, nn::{Forward, Linear, Module}};
///
/// #[derive(Module)]
/// struct Net {
///     fc: Linear,
/// }
///
/// impl Forward<&Tensor> for Net {
///     type Output = Tensor;
///     fn forward(&self, x: &Tensor) -> Tensor {
///         self.fc.forward(x)
///     }
/// }
///
/// let net = Net { fc: Linear::new(2, 1) };
/// let x = Tensor::from_vec(vec![f32::NAN, 1.0], &[1, 2]);
/// let caught = std::panic::catch_unwind(|| detect_anomaly_in(&net, || net.forward(&x)));
/// let message = caught.unwrap_err().downcast::<String>().unwrap();
/// assert!(message.contains("in module fc (Linear)"), "{message}");
/// ```
pub fn detect_anomaly_in<R>(model: &dyn crate::nn::Module, f: impl FnOnce() -> R) -> R {
    detect_anomaly(|| {
        let _scope = crate::nn::ModuleScope::enter(model);
        f()
    })
}

/// Where a recorded op came from, kept by its node while anomaly detection is on.
pub(crate) struct OpContext {
    location: &'static Location<'static>,
    module: Option<Arc<str>>,
}

impl OpContext {
    fn describe(&self) -> String {
        match &self.module {
            Some(m) => format!("in module {m}, created at {}", self.location),
            None => format!("created at {}", self.location),
        }
    }
}

/// The first non-finite value of `s`, as Rust prints it (`NaN`, `inf`, `-inf`).
fn non_finite(s: &Storage) -> Option<String> {
    let first = match s {
        Storage::F32(a) => a.iter().find(|v| !v.is_finite()).map(|&v| f64::from(v)),
        Storage::F64(a) => a.iter().find(|v| !v.is_finite()).copied(),
        Storage::I64(_) => None,
    };
    first.map(|v| format!("{v}"))
}

/// Checks an op's output; called by the recording functions of `graph.rs` while anomaly
/// detection is on, and returns the context a recorded node keeps.
#[track_caller]
pub(crate) fn check_forward(name: &str, inputs: &[&Tensor], out: &Storage) -> OpContext {
    let context = OpContext {
        location: Location::caller(),
        module: current_module(),
    };
    if let Some(bad) = non_finite(out) {
        forward_anomaly(name, inputs, out, &bad, &context);
    }
    context
}

#[cold]
#[inline(never)]
#[track_caller]
fn forward_anomaly(name: &str, inputs: &[&Tensor], out: &Storage, bad: &str, c: &OpContext) -> ! {
    let shapes: Vec<String> = inputs.iter().map(|t| format!("{:?}", t.shape())).collect();
    let tainted: Vec<String> = inputs
        .iter()
        .enumerate()
        .filter(|(_, t)| non_finite(&t.storage()).is_some())
        .map(|(i, _)| i.to_string())
        .collect();
    let cause = if tainted.is_empty() {
        "its inputs are finite".to_string()
    } else {
        format!(
            "input {} already held non-finite values",
            tainted.join(", ")
        )
    };
    panic!(
        "anomaly detected: `{name}` gave {bad} in its output {:?} from inputs {}; {cause}; {}",
        out.shape(),
        shapes.join(", "),
        c.describe()
    )
}

/// Checks the gradients a node's backward returned for its inputs.
#[track_caller]
pub(crate) fn check_backward(name: &str, context: Option<&OpContext>, grads: &[Option<Tensor>]) {
    for (i, g) in grads.iter().enumerate() {
        let Some(g) = g else { continue };
        if let Some(bad) = non_finite(&g.storage()) {
            backward_anomaly(name, context, i, &g.shape(), &bad);
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn backward_anomaly(
    name: &str,
    context: Option<&OpContext>,
    input: usize,
    shape: &[usize],
    bad: &str,
) -> ! {
    let origin = context.map_or_else(
        || "(recorded before anomaly detection was turned on)".to_string(),
        OpContext::describe,
    );
    panic!(
        "anomaly detected: the backward of `{name}` gave {bad} in the gradient of its input \
         {input} {shape:?}; `{name}` was {origin}"
    )
}

// ---- module scopes --------------------------------------------------------------------------

/// One entered module: its path, and the paths of the modules below it by identity.
pub(crate) struct Frame {
    /// The module's address, size and class, what identifies it.
    pub(crate) id: (usize, usize, &'static str),
    /// `features.3 (BatchNorm2d)` or, for the outermost module, `Sequential`.
    pub(crate) label: Arc<str>,
    /// The dotted path from the outermost entered module (`""` for that module itself).
    pub(crate) path: String,
    /// Every module below this one: identity and path relative to this one.
    pub(crate) below: Vec<((usize, usize, &'static str), String)>,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// The label of the innermost entered module, if any.
fn current_module() -> Option<Arc<str>> {
    FRAMES.with(|f| f.borrow().last().map(|f| f.label.clone()))
}

/// Runs `f` on this thread's stack of entered modules.
pub(crate) fn with_frames<R>(f: impl FnOnce(&mut Vec<Frame>) -> R) -> R {
    FRAMES.with(|frames| f(&mut frames.borrow_mut()))
}
