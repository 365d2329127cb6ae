//! The [`Module`] trait: the registry of parameters, buffers and submodules that
//! `#[derive(Module)]` generates, and everything PyTorch's `nn.Module` offers on top of it.

use crate::autograd::no_grad;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::nn::parameter::{Buffer, Parameter};
use crate::state_dict::{IncompatibleKeys, StateDict, Stateful};
use std::fmt;

/// One member of a module, as [`Module::visit`] reports it.
pub enum Member<'a> {
    /// A parameter, registered under its name.
    Parameter(&'a Parameter),
    /// A buffer (running statistics and the like), registered under its name.
    Buffer(&'a Buffer),
    /// A submodule, whose members are named under its name.
    Module(&'a dyn Module),
}

/// One member of a module, as [`Module::visit_mut`] reports it.
pub enum MemberMut<'a> {
    /// A parameter, registered under its name.
    Parameter(&'a mut Parameter),
    /// A buffer (running statistics and the like), registered under its name.
    Buffer(&'a mut Buffer),
    /// A submodule, whose members are named under its name.
    Module(&'a mut dyn Module),
}

/// A neural-network module: a registry of parameters, buffers and submodules with
/// PyTorch's `nn.Module` methods. Write `#[derive(Module)]` rather than implementing the
/// required methods by hand.
///
/// ```
/// # extern crate torchlet_core as torchlet;
/// use torchlet::nn::{Forward, Linear, Module};
/// use torchlet::Tensor;
///
/// #[derive(Module)]
/// struct OurModule {
///     l1: Linear,
///     l2: Linear,
/// }
///
/// let model = OurModule { l1: Linear::new(784, 128), l2: Linear::new(128, 10) };
/// let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["l1.weight", "l1.bias", "l2.weight", "l2.bias"]);
/// assert_eq!(model.num_parameters(), 784 * 128 + 128 + 128 * 10 + 10);
/// let y = model.l2.forward(&model.l1.forward(&Tensor::zeros(&[2, 784])).relu());
/// assert_eq!(y.shape(), [2, 10]);
/// ```
///
/// # NOTE [ Registry order ]
/// A module reports its members in declaration order through [`Module::visit`]. Like
/// PyTorch, the walks list a module's own parameters, then its own buffers, then its
/// children (each recursively): `named_parameters()` and `state_dict()` of BatchNorm give
/// `weight, bias, running_mean, running_var, num_batches_tracked`, and a module's own
/// parameters come before its children's whatever the field order.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a torchlet module",
    label = "not a module",
    note = "derive `Module` for `{Self}`, or mark the field `#[module(skip)]`"
)]
pub trait Module {
    /// The class name PyTorch prints (`Linear`, `Sequential`).
    fn class_name(&self) -> &'static str;

    /// Calls `f` with each parameter, buffer and submodule and its name, in declaration
    /// order (see NOTE [ Registry order ] [above](Module#note--registry-order-)).
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&str, Member<'a>));

    /// [`visit`](Module::visit) with mutable access.
    fn visit_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, MemberMut<'a>));

    /// This module as a trait object.
    fn as_dyn(&self) -> &dyn Module;

    /// This module as a mutable trait object.
    fn as_dyn_mut(&mut self) -> &mut dyn Module;

    /// The text between the parentheses of the printed form (PyTorch's `extra_repr`).
    fn extra_repr(&self) -> String {
        String::new()
    }

    /// This module's own train/eval flag, for modules that keep one.
    fn training_flag(&self) -> Option<bool> {
        None
    }

    /// Sets this module's own flag (not its children's; see [`train`](Module::train)).
    fn set_training_flag(&mut self, _training: bool) {}

    // ---- walks ---------------------------------------------------------------------------

    /// The trainable parameters, in [`named_parameters`](Module::named_parameters) order
    /// (handles: an optimizer updating them updates the model).
    fn parameters(&self) -> Vec<Parameter> {
        parameters_of(self.as_dyn())
    }

    /// The parameters with their dotted names (`features.0.weight`), as PyTorch names them.
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        named_parameters_of(self.as_dyn())
    }

    /// The buffers (running statistics, counters).
    fn buffers(&self) -> Vec<Buffer> {
        self.as_dyn()
            .named_buffers()
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    }

    /// The buffers with their dotted names.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        named_buffers_of(self.as_dyn())
    }

    /// The direct submodules.
    fn children(&self) -> Vec<&dyn Module> {
        self.as_dyn()
            .named_children()
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    /// The direct submodules with their names.
    fn named_children(&self) -> Vec<(String, &dyn Module)> {
        named_children_of(self.as_dyn())
    }

    /// This module (named `""`) and every submodule below it, depth first.
    fn named_modules(&self) -> Vec<(String, &dyn Module)> {
        named_modules_of(self.as_dyn())
    }

    /// This module and every submodule below it.
    fn modules(&self) -> Vec<&dyn Module> {
        self.as_dyn()
            .named_modules()
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    /// The number of parameter elements (buffers are not counted, as in PyTorch); Hugging
    /// Face's `model.num_parameters()`.
    fn num_parameters(&self) -> usize {
        count_parameters(self.as_dyn(), false)
    }

    /// The number of parameter elements that require a gradient: Hugging Face's
    /// `model.num_parameters(only_trainable=True)`, PyTorch's
    /// `sum(p.numel() for p in model.parameters() if p.requires_grad)`.
    #[doc(alias = "only_trainable")]
    fn num_trainable_parameters(&self) -> usize {
        count_parameters(self.as_dyn(), true)
    }

    // ---- modes and gradients -------------------------------------------------------------

    /// Puts this module and every submodule in training mode (dropout drops, batch norm
    /// uses and updates batch statistics).
    fn train(&mut self) {
        set_training(self.as_dyn_mut(), true);
    }

    /// Puts this module and every submodule in evaluation mode.
    fn eval(&mut self) {
        set_training(self.as_dyn_mut(), false);
    }

    /// Whether the module is in training mode: its own flag, else that of the first
    /// submodule that keeps one.
    ///
    /// Unlike PyTorch, modules whose forward does not depend on the mode (ReLU, Identity,
    /// …) keep no flag; a tree made only of those always reports `true`.
    fn is_training(&self) -> bool {
        is_training_of(self.as_dyn())
    }

    /// Drops the gradient of every parameter (PyTorch's `zero_grad(set_to_none=True)`).
    fn zero_grad(&self) {
        zero_grad_of(self.as_dyn());
    }

    /// Sets `requires_grad` on every parameter: `requires_grad_(false)` freezes the module.
    fn requires_grad_(&self, requires_grad: bool) {
        requires_grad_of(self.as_dyn(), requires_grad);
    }

    /// Calls `f` on every submodule (children first) and then on this module, as
    /// PyTorch's `apply` does.
    fn apply(&mut self, f: &mut dyn FnMut(&mut dyn Module)) {
        apply_of(self.as_dyn_mut(), f);
    }

    /// Converts every floating-point parameter and buffer to `dtype` (PyTorch's
    /// `.double()` / `.float()`); i64 buffers such as `num_batches_tracked` stay as they are.
    ///
    /// # Panics
    /// If `dtype` is not a floating-point type.
    #[track_caller]
    fn to_dtype(&mut self, dtype: DType) {
        if !dtype.is_float() {
            to_dtype_error(dtype);
        }
        to_dtype_of(self.as_dyn_mut(), dtype);
    }

    // ---- state dict ----------------------------------------------------------------------

    /// The parameters and buffers under their dotted names, in PyTorch's order (handles:
    /// the tensors are shared with the module, not copied).
    fn state_dict(&self) -> StateDict {
        state_dict_of(self.as_dyn())
    }

    /// Copies the values of `state_dict` into this module's parameters and buffers.
    ///
    /// With `strict`, every key must match; without, missing and unexpected keys are
    /// returned instead of refused. Floating-point values are converted to each tensor's
    /// precision.
    ///
    /// # Errors
    /// [`Error::StateDict`] listing every missing key, unexpected key, shape mismatch and
    /// dtype-kind mismatch (an integer tensor for a float one, or the other way round) at
    /// once; a mismatch is an error even when not strict, and so is a state dict of which
    /// no key matches. Nothing is copied when an error is returned. Unlike PyTorch, which
    /// copies an integer tensor into a float parameter, torchlet refuses it, as
    /// `serialize::load_into` does: such an entry is not a saved value of that parameter.
    fn load_state_dict(
        &mut self,
        state_dict: &StateDict,
        strict: bool,
    ) -> Result<IncompatibleKeys> {
        load_state_dict_into(self.as_dyn(), state_dict, strict)
    }
}

/// What `serialize` saves and loads.
impl<M: Module + ?Sized> Stateful for M {
    fn save_state(&self) -> StateDict {
        self.state_dict()
    }

    fn load_state(&mut self, state: &StateDict, strict: bool) -> Result<IncompatibleKeys> {
        self.load_state_dict(state, strict)
    }
}

// NOTE [ Provided methods over `&dyn Module` ]
// Every provided method of `Module` is in each module type's vtable, so its body is compiled
// once per module type, in torchlet-core and again in every crate that defines or chains
// modules (each `sequential!` chain is a type). The bodies therefore live in the functions
// below, over `&dyn Module`, compiled once; the methods only forward to them.

/// See [`Module::parameters`].
fn parameters_of(m: &dyn Module) -> Vec<Parameter> {
    m.named_parameters().into_iter().map(|(_, p)| p).collect()
}

/// See [`Module::named_parameters`].
fn named_parameters_of(m: &dyn Module) -> Vec<(String, Parameter)> {
    let mut out = Vec::new();
    walk(m, "", &mut |prefix, m| {
        m.visit(&mut |name, member| {
            if let Member::Parameter(p) = member {
                out.push((join(prefix, name), p.clone()));
            }
        });
    });
    out
}

/// See [`Module::named_buffers`].
fn named_buffers_of(m: &dyn Module) -> Vec<(String, Buffer)> {
    let mut out = Vec::new();
    walk(m, "", &mut |prefix, m| {
        m.visit(&mut |name, member| {
            if let Member::Buffer(b) = member {
                out.push((join(prefix, name), b.clone()));
            }
        });
    });
    out
}

/// See [`Module::named_children`].
fn named_children_of(m: &dyn Module) -> Vec<(String, &dyn Module)> {
    let mut out = Vec::new();
    m.visit(&mut |name, member| {
        if let Member::Module(m) = member {
            out.push((name.to_string(), m));
        }
    });
    out
}

/// See [`Module::num_parameters`] and [`Module::num_trainable_parameters`].
fn count_parameters(m: &dyn Module, only_trainable: bool) -> usize {
    m.parameters()
        .iter()
        .filter(|p| !only_trainable || p.requires_grad())
        .map(|p| p.numel())
        .sum()
}

/// See [`Module::train`] and [`Module::eval`].
fn set_training(m: &mut dyn Module, training: bool) {
    m.apply(&mut |m| m.set_training_flag(training));
}

/// See [`Module::is_training`].
fn is_training_of(m: &dyn Module) -> bool {
    m.modules()
        .iter()
        .find_map(|m| m.training_flag())
        .unwrap_or(true)
}

/// See [`Module::zero_grad`].
fn zero_grad_of(m: &dyn Module) {
    for p in m.parameters() {
        p.zero_grad();
    }
}

/// See [`Module::requires_grad_`].
fn requires_grad_of(m: &dyn Module, requires_grad: bool) {
    for p in m.parameters() {
        p.set_requires_grad(requires_grad);
    }
}

/// See [`Module::apply`].
fn apply_of(m: &mut dyn Module, f: &mut dyn FnMut(&mut dyn Module)) {
    m.visit_mut(&mut |_, member| {
        if let MemberMut::Module(child) = member {
            child.apply(f);
        }
    });
    f(m);
}

#[cold]
#[track_caller]
fn to_dtype_error(dtype: DType) -> ! {
    panic!("to_dtype: modules hold floating-point parameters; got {dtype}");
}

/// See [`Module::to_dtype`].
fn to_dtype_of(m: &mut dyn Module, dtype: DType) {
    m.apply(&mut |m| {
        m.visit_mut(&mut |_, member| match member {
            MemberMut::Parameter(p) if p.dtype() != dtype => {
                let requires_grad = p.requires_grad();
                *p = Parameter::new(p.to_dtype(dtype));
                p.set_requires_grad(requires_grad);
            }
            MemberMut::Buffer(b) if b.dtype().is_float() && b.dtype() != dtype => {
                *b = Buffer::new(b.to_dtype(dtype));
            }
            _ => {}
        })
    });
}

/// See [`Module::state_dict`] (and NOTE [ Provided methods over `&dyn Module` ]).
fn state_dict_of(m: &dyn Module) -> StateDict {
    let mut out = StateDict::new();
    walk(m, "", &mut |prefix, m| {
        m.visit(&mut |name, member| {
            if let Member::Parameter(p) = member {
                out.insert(join(prefix, name), p.tensor().clone());
            }
        });
        m.visit(&mut |name, member| {
            if let Member::Buffer(b) = member {
                out.insert(join(prefix, name), b.tensor().clone());
            }
        });
    });
    out
}

/// See [`Module::load_state_dict`].
fn load_state_dict_into(
    module: &dyn Module,
    state_dict: &StateDict,
    strict: bool,
) -> Result<IncompatibleKeys> {
    let own = state_dict_of(module);
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut wrong_dtype = Vec::new();
    let mut pairs = Vec::new();
    for (key, target) in own.iter() {
        match state_dict.get(key) {
            None => missing.push(key.clone()),
            Some(src) if src.shape() != target.shape() => {
                mismatched.push((key.clone(), src.shape(), target.shape()))
            }
            // Floats convert to the module's precision; an integer tensor for a float one
            // (or the other way round) is another tensor, not a rounding of this one.
            Some(src) if src.dtype().is_float() != target.dtype().is_float() => {
                wrong_dtype.push((key.clone(), src.dtype(), target.dtype()))
            }
            Some(src) => pairs.push((target.clone(), src.clone())),
        }
    }
    let unexpected: Vec<String> = state_dict
        .keys()
        .filter(|k| own.get(k).is_none())
        .cloned()
        .collect();
    let nothing_matched =
        pairs.is_empty() && mismatched.is_empty() && wrong_dtype.is_empty() && !own.is_empty();
    if !mismatched.is_empty()
        || !wrong_dtype.is_empty()
        || nothing_matched
        || (strict && !(missing.is_empty() && unexpected.is_empty()))
    {
        return Err(Error::StateDict {
            module: module.class_name().to_string(),
            matched: pairs.len(),
            missing,
            unexpected,
            mismatched,
            wrong_dtype: wrong_dtype.into_boxed_slice(),
        });
    }
    no_grad(|| {
        for (target, src) in &pairs {
            target.copy_(src);
        }
    });
    Ok(IncompatibleKeys {
        missing_keys: missing,
        unexpected_keys: unexpected,
    })
}

/// See [`Module::named_modules`]; one copy for every module type.
fn named_modules_of(module: &dyn Module) -> Vec<(String, &dyn Module)> {
    let mut out = vec![(String::new(), module)];
    for (name, child) in module.named_children() {
        for (sub, m) in child.named_modules() {
            out.push((join(&name, &sub), m));
        }
    }
    out
}

/// Calls `f(prefix, module)` for `m` and then every submodule, depth first.
fn walk<'a>(m: &'a dyn Module, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
    f(prefix, m);
    m.visit(&mut |name, member| {
        if let Member::Module(child) = member {
            walk(child, &join(prefix, name), f);
        }
    });
}

fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

/// Writes `m` as PyTorch's `repr` does: `Name(extra)` for a leaf, and one indented
/// `(name): child` line per submodule otherwise. `#[derive(Module)]`'s `Display` calls it.
pub fn fmt_module(m: &dyn Module, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&repr(m))
}

/// The printed tree of a module behind a trait object.
impl fmt::Display for dyn Module + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_module(self, f)
    }
}

fn repr(m: &dyn Module) -> String {
    let extra = m.extra_repr();
    let extra_lines: Vec<&str> = if extra.is_empty() {
        Vec::new()
    } else {
        extra.split('\n').collect()
    };
    let children: Vec<(String, String)> = m
        .named_children()
        .into_iter()
        .map(|(name, c)| (name, repr(c)))
        .collect();
    let child_lines = if m.class_name() == "ModuleList" {
        grouped(children)
    } else {
        children
            .into_iter()
            .map(|(name, r)| format!("({name}): {}", indent(&r)))
            .collect()
    };
    let mut out = format!("{}(", m.class_name());
    if extra_lines.len() == 1 && child_lines.is_empty() {
        out.push_str(extra_lines[0]);
    } else if !(extra_lines.is_empty() && child_lines.is_empty()) {
        let lines: Vec<String> = extra_lines
            .iter()
            .map(|s| s.to_string())
            .chain(child_lines)
            .collect();
        out.push_str("\n  ");
        out.push_str(&lines.join("\n  "));
        out.push('\n');
    }
    out.push(')');
    out
}

/// PyTorch's `ModuleList` repr: runs of identical children print once as `(0-2): 3 x …`.
fn grouped(children: Vec<(String, String)>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < children.len() {
        let mut j = i + 1;
        while j < children.len() && children[j].1 == children[i].1 {
            j += 1;
        }
        let body = indent(&children[i].1);
        if j - i == 1 {
            lines.push(format!("({}): {body}", children[i].0));
        } else {
            let (first, last) = (&children[i].0, &children[j - 1].0);
            lines.push(format!("({first}-{last}): {} x {body}", j - i));
        }
        i = j;
    }
    lines
}

/// Indents every line but the first by two spaces (PyTorch's `_addindent`).
fn indent(s: &str) -> String {
    s.replace('\n', "\n  ")
}

/// Python's `repr` of a float (`1e-05`, `0.1`, `1.0`), for `extra_repr` texts.
pub(crate) fn py_float(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v:?}");
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-4..16).contains(&exp) {
        let s = format!("{v:e}");
        let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    format!("{v:?}")
}

/// Python's `True` / `False`.
pub(crate) fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.01), "0.01");
        assert_eq!(py_float(2.5e-7), "2.5e-07");
        assert_eq!(py_float(0.0001), "0.0001");
    }

    #[test]
    fn keys_are_dot_joined() {
        assert_eq!(join("", "weight"), "weight");
        assert_eq!(join("features.0", "weight"), "features.0.weight");
    }
}
