//! torchlet's macros: `#[derive(Module)]` and `sequential![..]`.
//!
//! Users depend on `torchlet` only and name these as `torchlet::nn::Module` (the derive lives
//! next to the trait, the way serde's `Serialize` does) and `torchlet::nn::sequential!`.
//! The generated code spells every path from `::torchlet`, which also resolves inside
//! torchlet-core through its `extern crate self as torchlet;`.
//!
//! Each macro runs parse → validate → expand. Errors are collected, combined and emitted as
//! `compile_error!` next to a fallback impl, so that a user sees our one message and not a
//! cascade of follow-up errors.

mod attr;
mod ctxt;
mod expand;
mod parse;
mod sequential;
mod validate;

use proc_macro::TokenStream;

/// Implements `torchlet::nn::Module` (and a PyTorch-style `Display`) for a struct.
///
/// Fields are registered in declaration order: `Parameter` → parameter, `Buffer` → buffer,
/// `Option<_>` of those → registered when present, any other type → submodule (checked to
/// implement `Module`); `#[module(skip)]` leaves a field out, `#[module(rename = "name")]`
/// changes its key, `#[module(training)]` marks the `bool` field that `train()`/`eval()` set.
/// On the struct, `#[module(extra_repr = "path")]` names a `fn(&Self) -> String` whose text
/// goes between the parentheses of the printed form, like PyTorch's `extra_repr`.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}

/// A typed chain of layers, each one's output feeding the next: `sequential![a, b, c]`, or
/// with names, `sequential![fc1 = a, act = b]`. Its children are named `0, 1, 2` (or by
/// label) as in PyTorch's `nn.Sequential`.
///
/// Up to 64 layers (`torchlet::nn::MAX_LAYERS`; nest chains for more). Each layer is checked
/// where it is written: something that is not a module (a closure) or a module without
/// `impl Forward` is reported at that layer, with the fix.
#[proc_macro]
pub fn sequential(input: TokenStream) -> TokenStream {
    sequential::expand(input.into()).into()
}
