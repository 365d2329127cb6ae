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

#![warn(missing_docs)]

mod attr;
mod ctxt;
mod expand;
mod parse;
mod sequential;
mod validate;

use proc_macro::TokenStream;

// The examples use `torchlet::`, which this crate cannot depend on: they run as doctests of
// the facade crate, which includes the same file (`src/lib.rs` there).
#[cfg_attr(not(doctest), doc = include_str!("../doc/derive_module.md"))]
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}

// Doctests in the facade crate, as for `derive(Module)` above.
#[cfg_attr(not(doctest), doc = include_str!("../doc/sequential.md"))]
#[proc_macro]
pub fn sequential(input: TokenStream) -> TokenStream {
    sequential::expand(input.into()).into()
}
