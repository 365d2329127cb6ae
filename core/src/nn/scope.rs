//! [`ModuleScope`]: which module an op runs under, for anomaly detection's reports.

use crate::autograd::anomaly::{Frame, is_anomaly_enabled, with_frames};
use crate::nn::module::Module;
use std::marker::PhantomData;
use std::sync::Arc;

/// The scope of a module's `forward`, entered until dropped: ops run inside it are reported
/// under the module's path by anomaly detection. See NOTE [ Module scopes ] below.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, Linear, Module, ModuleScope};
/// use torchlet::Tensor;
///
/// #[derive(Module)]
/// struct Head {
///     fc: Linear,
/// }
///
/// impl Forward<&Tensor> for Head {
///     type Output = Tensor;
///     fn forward(&self, x: &Tensor) -> Tensor {
///         let _scope = ModuleScope::enter(self);
///         self.fc.forward(x)
///     }
/// }
/// # let y = Head { fc: Linear::new(2, 1) }.forward(&Tensor::zeros(&[1, 2]));
/// ```
///
/// # NOTE [ Module scopes ]
/// PyTorch knows a module's path only from its root (`named_modules()`); a layer does not
/// know its own name. torchlet finds it by identity while anomaly detection is on (see
/// NOTE [ Anomaly mode ] on
/// [`detect_anomaly`](crate::autograd::detect_anomaly#note--anomaly-mode-)); off, entering a
/// scope is one relaxed atomic load and nothing is recorded.
/// - Every built-in layer enters its own scope at the start of `forward`, and `Sequential`
///   enters its own and, around each layer, the layer's under its name (`3`), so a chain and
///   the layers in it need nothing from the user, and layers that do not enter a scope
///   themselves are still named inside a chain.
/// - Entering records the module's path and the paths of every module below it (from
///   [`Module::named_modules`], keyed by address and class name). A module entered later is
///   looked up there, innermost scope first: a `Linear` three derived structs below the
///   outermost scope is found as `encoder.block.fc` though the structs between entered none.
/// - A model of your own (`#[derive(Module)]` with a hand-written `forward`) is named by the
///   scope it runs in. Enter the outermost one once, around the step or at the start of its
///   `forward` (`let _scope = ModuleScope::enter(self);`), and every path below it is known;
///   a layer entered with no scope around it is reported by its class only, `(Linear)`.
/// - Identity is the address, the size and the class name: two modules alike in all three
///   can only be zero-sized (two `ReLU`s side by side in a struct), and the first is named.
///   `Sequential` names its layers itself, so there the right one is always named.
#[must_use = "the scope ends as soon as it is dropped"]
pub struct ModuleScope {
    /// The depth of this thread's scope stack to restore; `None` when nothing was entered.
    restore: Option<usize>,
    /// Scopes belong to the thread that entered them.
    _not_send: PhantomData<*const ()>,
}

impl ModuleScope {
    /// Enters `module`'s scope (does nothing while anomaly detection is off, or when
    /// `module` is the innermost scope already).
    #[inline]
    pub fn enter(module: &dyn Module) -> ModuleScope {
        if !is_anomaly_enabled() {
            return ModuleScope::none();
        }
        enter_found(module)
    }

    /// Enters the scope of `module`, a child of the innermost scope named `name`.
    #[inline]
    pub(crate) fn child(name: &str, module: &dyn Module) -> ModuleScope {
        if !is_anomaly_enabled() {
            return ModuleScope::none();
        }
        enter_named(name, module)
    }

    fn none() -> ModuleScope {
        ModuleScope {
            restore: None,
            _not_send: PhantomData,
        }
    }
}

impl Drop for ModuleScope {
    fn drop(&mut self) {
        if let Some(depth) = self.restore {
            with_frames(|frames| frames.truncate(depth));
        }
    }
}

/// A module's address, size and class name: a struct and its first field share the
/// address (a chain whose first layer is a chain even shares the class), never the size.
fn id_of(m: &dyn Module) -> (usize, usize, &'static str) {
    (
        m as *const dyn Module as *const () as usize,
        std::mem::size_of_val(m),
        m.class_name(),
    )
}

#[cold]
#[inline(never)]
fn enter_found(module: &dyn Module) -> ModuleScope {
    let id = id_of(module);
    let path = with_frames(|frames| {
        frames.iter().rev().find_map(|f| {
            f.below
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, rel)| join(&f.path, rel))
        })
    });
    push(module, path.unwrap_or_default())
}

#[cold]
#[inline(never)]
fn enter_named(name: &str, module: &dyn Module) -> ModuleScope {
    let parent = with_frames(|frames| frames.last().map(|f| f.path.clone()));
    push(module, join(&parent.unwrap_or_default(), name))
}

fn push(module: &dyn Module, path: String) -> ModuleScope {
    let id = id_of(module);
    if with_frames(|frames| frames.last().is_some_and(|f| f.id == id)) {
        return ModuleScope::none();
    }
    let below = module
        .named_modules()
        .into_iter()
        .skip(1)
        .map(|(rel, m)| (id_of(m), rel))
        .collect();
    let label: Arc<str> = if path.is_empty() {
        format!("({})", id.2).into()
    } else {
        format!("{path} ({})", id.2).into()
    };
    let depth = with_frames(|frames| {
        frames.push(Frame {
            id,
            label,
            path,
            below,
        });
        frames.len() - 1
    });
    ModuleScope {
        restore: Some(depth),
        _not_send: PhantomData,
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
